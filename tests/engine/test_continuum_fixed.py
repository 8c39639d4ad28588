"""The ``continuum-fixed`` preset follows Continuum's released scheduler point by point.

Continuum's code: its vLLM v1 fork (Whrlicht/vllm-continuum, commits up to 3761e57). Each test
names the file and behaviour it mirrors.
"""

from __future__ import annotations

from engine_helpers import greedy, make_core, req, run_all
from tether.engine import EngineConfig
from tether.engine.clock import VirtualClock
from tether.engine.tool_predictor import EmpiricalPredictor
from tether.engine.ttl_policy import ContinuumFixed, PinQuestion

BS = 16


def core_of(tiny_model, blocks: int, **kw):
    clock = VirtualClock()
    return make_core(tiny_model, clock=clock, policy="continuum-fixed", num_kv_blocks=blocks,
                     max_num_batched_tokens=256, **kw), clock


def finished_turn(core, program: str, start: int, n_blocks: int, tool: str | None = "ls") -> None:
    """Run one turn of ``program`` (``n_blocks`` full blocks of prompt); end it in a tool call."""
    core.add_request(req(f"{program}/{start}", list(range(start, start + n_blocks * BS)), greedy(1),
                         program_id=program))
    run_all(core)
    if tool is not None:
        core.tool_hint(program, [tool])


def pinned(core) -> list[str]:
    return sorted(p.program_id for p in core.programs.pinned())


def test_preset_fields():
    cfg = EngineConfig(policy="continuum-fixed")
    assert (cfg.queue_policy, cfg.pin_policy, cfg.pins_yield_to, cfg.pin_pressure) == \
        ("continuum", "continuum-fixed", "idle", "preempt-first")
    assert cfg.starvation_s is None and cfg.starvation_turns is None and not cfg.admit_whole_prompt


def test_ttl_rule_pins_2s_for_new_tools_and_means_up_to_2s():
    """estimate_with_func.py ``set_up_pin``: a never-seen tool's mean is 0; ``mean > 2.0`` -> no pin,
    else 2.0 s. The mean is the tool's own, over all its observations (no fallback to other tools)."""
    p, rule = EmpiricalPredictor(), ContinuumFixed()
    q = PinQuestion("p", ["t"], 10, 100, 0, 0.9, 5.0, 0.0)
    assert rule.decide(q, p, now=0).ttl_s == 2.0
    p.observe("t", 2.0)
    assert rule.decide(q, p, now=0).ttl_s == 2.0  # exactly 2 s: still pinned
    p.observe("t", 2.5)
    assert rule.decide(q, p, now=0).ttl_s == 0.0
    for _ in range(5):
        p.observe("other", 0.1)  # other tools' durations do not lower t's mean
    assert rule.decide(q, p, now=0).ttl_s == 0.0


def test_no_starvation_rule(tiny_model):
    """request_queue.py ``ContinuumRequestQueue.peek_request``: pinned jobs first, then by the job's first
    arrival; no aging: a request that has waited for an hour still goes after an older job's turn."""
    core, clock = core_of(tiny_model, 64, max_num_seqs=1)
    finished_turn(core, "old", 3, 2)
    clock.advance(1)
    core.add_request(req("young1", [5, 6], greedy(1), program_id="young"))
    clock.advance(3600)
    core.add_request(req("old2", list(range(3, 3 + 2 * BS)) + [9], greedy(1), program_id="old"))
    order = sorted(core.scheduler.waiting, key=core.scheduler.policy.key)
    assert [s.request_id for s in order] == ["old2", "young1"]


def test_admission_short_of_blocks_stops_and_drops_one_pin_only_when_nothing_runs(tiny_model):
    """scheduler.py, the waiting loop: ``allocate_slots`` returning None always breaks (head of line);
    only when ``len(self.running) == 0`` is one pin freed, the latest-expiring one, and admission
    is retried on the next step."""
    core, clock = core_of(tiny_model, 8)
    finished_turn(core, "A", 3, 3)  # 3 full blocks pinned for 2 s
    clock.advance(0.5)
    finished_turn(core, "B", 60, 3)  # pinned later: expires later
    assert pinned(core) == ["A", "B"] and core.pool.num_free == 2
    core.add_request(req("C", list(range(20, 20 + 3 * BS)), greedy(1), program_id="C"))
    batch = core.scheduler.schedule()
    assert batch.seqs == [] and pinned(core) == ["A"]  # B's pin (latest expiry) freed; C waits a step
    batch = core.scheduler.schedule()
    assert [s.request_id for s in batch.seqs] == ["C"]


def test_admission_keeps_pins_while_something_runs(tiny_model):
    core, clock = core_of(tiny_model, 8)
    finished_turn(core, "A", 3, 3)
    finished_turn(core, "B", 60, 2)
    core.add_request(req("R", [7] * 8, greedy(40), program_id="R"))  # keeps running (one block)
    core.step()
    core.add_request(req("C", list(range(20, 20 + 3 * BS)), greedy(1), program_id="C"))
    for _ in range(3):
        core.step()
        assert pinned(core) == ["A", "B"] and "C" not in [s.request_id for s in core.scheduler.running]


def test_running_short_of_blocks_preempts_the_youngest_programs_non_last_turn_and_keeps_pins(tiny_model):
    """scheduler.py ``pop_running_request_based_on_last_step``: the victim is the request of the job with
    the latest first arrival that is not its last step (else the youngest job's); pins are kept while
    two or more requests run; preemption is by recompute."""
    core, clock = core_of(tiny_model, 9)
    finished_turn(core, "P", 60, 2)  # a pin of 2 blocks
    core.add_request(req("old", [5] * 15, greedy(60), program_id="old"))
    clock.advance(0.1)
    core.add_request(req("mid", [6] * 15, greedy(60), program_id="mid", is_last_turn=False))
    clock.advance(0.1)
    core.add_request(req("young", [7] * 15, greedy(60), program_id="young", is_last_turn=True))
    preempted = []
    core.add_listener(lambda ev: preempted.append(ev.request_id) if ev.kind == "preempted" else None)
    while not preempted:
        core.step()
    assert preempted[0] == "mid"  # the youngest program's turn is its last: the next youngest goes
    assert pinned(core) == ["P"]


def test_force_unpin_only_when_at_most_one_request_runs(tiny_model):
    """scheduler.py, the running loop: with ``len(self.running) <= 1`` the latest-expiring pin is freed
    (``is_unpin=True``) and the allocation retried, instead of preempting the request."""
    core, clock = core_of(tiny_model, 6)
    finished_turn(core, "P", 70, 3)
    core.add_request(req("solo", [5] * 15, greedy(60), program_id="solo"))
    while core.has_work():
        core.step()
        assert core.stats()["preemptions"] == 0
    assert pinned(core) == []


def test_pins_expire_after_the_ttl_only_when_no_turn_of_the_program_waits(tiny_model):
    """scheduler.py ``unpin_requests_regular``, every step: a pin goes once ``time >= end_time`` and the
    job has no request in the waiting queue."""
    core, clock = core_of(tiny_model, 8, max_num_seqs=1)
    finished_turn(core, "A", 3, 3)
    core.add_request(req("R", [7] * 8, greedy(40), program_id="R"))  # occupies the only seat
    core.step()
    core.add_request(req("A2", list(range(3, 3 + 3 * BS)) + [1], greedy(1), program_id="A"))
    clock.advance(5)  # past the 2 s TTL, but A's next turn waits
    core.step()
    assert pinned(core) == ["A"]
    run_all(core)
    assert core.stats()["pin_hits"] == 1
    finished_turn(core, "B", 60, 2)
    clock.advance(5)
    core.step() if core.has_work() else core.expire_pins()
    assert pinned(core) == []

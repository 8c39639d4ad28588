"""Tool-duration prediction, TTL rules, pins driven by tool hints, release under pressure,
program FCFS with pinned turns first and the starvation guard."""

from __future__ import annotations

from engine_helpers import greedy, make_core, req, run_all
from tether.engine.clock import VirtualClock
from tether.engine.tool_predictor import EmpiricalPredictor, prob_done_by
from tether.engine.ttl_policy import ContinuumFixed, CostBenefit, PinQuestion


def test_predictor_falls_back_from_key_to_all_tools_to_default():
    p = EmpiricalPredictor(min_samples=3, default_s=2.0)
    assert p.samples(["pytest"]) == [2.0]
    for d in (1.0, 3.0, 5.0):
        p.observe("ls", d)
    assert p.samples(["pytest"]) == [1.0, 3.0, 5.0]  # cold key: all tools
    for d in (10.0, 20.0, 30.0):
        p.observe("pytest", d)
    assert p.samples(["pytest"]) == [10.0, 20.0, 30.0]
    assert p.samples(["ls", "pytest"]) == [10.0, 20.0, 30.0]  # together: the slowest
    assert prob_done_by([1.0, 2.0, 3.0, 4.0], 2.5) == 0.5


def _q(**kw) -> PinQuestion:
    base = dict(program_id="p", tool_keys=["t"], pin_blocks=10, pool_blocks=100, pinned_blocks=0, pressure=0.9,
                refill_s=5.0, queue_s=0.0)
    return PinQuestion(**{**base, **kw})


def test_continuum_fixed_rule():
    p, rule = EmpiricalPredictor(), ContinuumFixed()
    assert rule.decide(_q(), p, now=0).ttl_s == 2.0  # never seen: pinned
    for _ in range(3):
        p.observe("t", 5.0)
    assert rule.decide(_q(), p, now=0).ttl_s == 0.0  # mean over 2 s: not pinned
    for _ in range(3):
        p.observe("u", 0.5)
    assert rule.decide(_q(tool_keys=["u"]), p, now=0).ttl_s == 2.0


def test_cost_benefit_ttl_covers_the_distribution_when_refill_is_dear_and_stops_when_it_is_cheap():
    p, rule = EmpiricalPredictor(), CostBenefit()
    for d in (1.0, 2.0, 3.0, 4.0, 60.0):
        p.observe("t", d)
    dear = rule.decide(_q(refill_s=5.0, pressure=0.9), p, now=0)
    assert 4.0 <= dear.ttl_s < 60.0 and dear.value > 0  # covers the common case, not the 60 s outlier
    cheap = rule.decide(_q(refill_s=0.01, pressure=1.0, pin_blocks=50), p, now=0)
    assert cheap.ttl_s == 0.0  # holding half the pool under full pressure costs more than a re-prefill
    roomy = rule.decide(_q(refill_s=5.0, pressure=0.0), p, now=0)
    assert roomy.ttl_s >= 60.0  # no pressure: memory is free, cover even the outlier
    assert rule.decide(_q(pin_blocks=60), p, now=0).ttl_s == 0.0  # over the cap on pinned memory


def test_tool_hint_pins_learns_durations_and_the_next_turn_takes_the_pin(tiny_model):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, pin_policy="cost-benefit", queue_policy="program-fcfs",
                     num_kv_blocks=40)
    hist = list(range(3, 51))
    core.add_request(req("t1", hist, greedy(4), program_id="prog"))
    run_all(core)
    core.tool_hint("prog", ["pytest"])
    assert core.stats()["active_pins"] == 1  # pinned for the predicted duration
    clock.advance(1.5)
    core.add_request(req("t2", hist + [9] * 5, greedy(2), program_id="prog"))
    assert core.pins.predictor.samples(["pytest"]) == [2.0]  # cold key, default; but the observation is in:
    assert list(core.pins.predictor.per_key["pytest"]) == [1.5]
    run_all(core)
    assert core.stats()["pin_hits"] == 1 and core.stats()["active_pins"] == 0
    core.check_no_leaks()


def test_pressure_releases_the_least_valuable_pin_first(tiny_model):
    core = make_core(tiny_model, num_kv_blocks=12)
    for name, start in (("a", 3), ("b", 40)):
        core.add_request(req(name, list(range(start, start + 33)), greedy(1), program_id=name))
        run_all(core)
    core.pins.pin("a", 100.0, value=5.0)
    core.pins.pin("b", 100.0, value=1.0)
    assert core.pins.release_least_valuable()
    assert [p.program_id for p in core.programs.pinned()] == ["a"]
    core.check_no_leaks()


def test_program_fcfs_runs_pinned_turns_first_and_starved_requests_before_all(tiny_model):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, queue_policy="program-fcfs", max_num_seqs=1, starvation_s=10.0, starvation_turns=None,
                     num_kv_blocks=64)
    core.add_request(req("old1", list(range(3, 40)), greedy(1), program_id="old"))
    run_all(core)
    core.pins.pin("old", 100.0)
    clock.advance(1)
    core.add_request(req("new1", [5, 6], greedy(1), program_id="new"))
    core.add_request(req("blocker", [7, 8], greedy(1), program_id="older"))
    core.programs.get("older").arrival = -5.0  # a program that started before "old"
    clock.advance(8)
    core.add_request(req("old2", list(range(3, 40)) + [4], greedy(1), program_id="old"))
    key = core.scheduler.policy.key
    assert [s.request_id for s in sorted(core.scheduler.waiting, key=key)] == ["old2", "blocker", "new1"]
    clock.advance(3)  # new1 and blocker have now waited 11 s > 10 s: they go before the pinned turn
    assert [s.request_id for s in sorted(core.scheduler.waiting, key=key)] == ["blocker", "new1", "old2"]

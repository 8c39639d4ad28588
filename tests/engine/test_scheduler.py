"""Token budget, chunked prefill, queue order, preemption and admission refusal."""

from __future__ import annotations

import pytest

from engine_helpers import greedy, make_core, req, run_all, tokens
from tether.engine import RequestRejected
from tether.engine.clock import VirtualClock


def test_budget_decodes_first_then_prefill_chunks(tiny_model):
    core = make_core(tiny_model, max_num_batched_tokens=16)
    core.add_request(req("a", [5] * 3, greedy(20)))
    core.step()  # a prefilled, first token out
    core.add_request(req("b", list(range(3, 53)), greedy(2)))
    batch = core.scheduler.schedule()
    assert [s.request_id for s in batch.seqs] == ["a", "b"]
    assert batch.num_new_tokens == [1, 15]  # the decode, then a 15-token chunk
    assert batch.num_tokens <= 16


def test_long_prompt_spans_several_steps(tiny_model):
    core = make_core(tiny_model, max_num_batched_tokens=10)
    core.add_request(req("a", list(range(3, 50)), greedy(1)))
    steps = 0
    while core.has_work():
        core.step()
        steps += 1
    assert steps == 5  # 47 tokens at 10 per step


def test_program_fcfs_puts_older_programs_first(tiny_model):
    clock = VirtualClock()
    for policy, expected in [("fcfs", ["new", "old"]), ("program-fcfs", ["old", "new"])]:
        core = make_core(tiny_model, clock=clock, queue_policy=policy, max_num_batched_tokens=64,
                         max_num_seqs=1)
        core.add_request(req("old1", [3, 4, 5], greedy(1), program_id="old"))
        run_all(core)
        clock.advance(1)
        core.add_request(req("new1", [6, 7], greedy(1), program_id="new"))
        clock.advance(1)
        core.add_request(req("old2", [3, 4, 5, 9], greedy(1), program_id="old"))
        order = []
        while core.has_work():
            order += [o.request_id[:-1] for o in core.step() if o.finished]
        assert order == expected, policy


def test_preemption_by_recompute_keeps_outputs_exact(tiny_model):
    # 6 blocks of 16 = 96 slots; three requests growing to 60 tokens each cannot all stay.
    prompts = {str(i): list(range(10 + i, 40 + i)) for i in range(3)}
    free = make_core(tiny_model, num_kv_blocks=64)
    tight = make_core(tiny_model, num_kv_blocks=6)
    for core in (free, tight):
        for rid, p in prompts.items():
            core.add_request(req(rid, p, greedy(30)))
    ref, got = run_all(free), run_all(tight)
    assert tight.stats()["preemptions"] > 0
    for rid in prompts:
        assert tokens(got[rid]) == tokens(ref[rid])
    tight.check_no_leaks()


def test_requests_that_can_never_fit_are_refused(tiny_model):
    core = make_core(tiny_model, num_kv_blocks=4)
    with pytest.raises(RequestRejected, match="KV blocks"):
        core.add_request(req("a", list(range(3, 60)), greedy(20)))
    with pytest.raises(RequestRejected, match="context of 512"):
        make_core(tiny_model, num_kv_blocks=100).add_request(req("b", [3] * 500, greedy(20)))
    with pytest.raises(RequestRejected, match="vocabulary"):
        core.add_request(req("c", [3, 999], greedy(2)))
    core.add_request(req("ok", [3, 4], greedy(3)))
    assert len(tokens(run_all(core)["ok"])) == 3

"""One bad request fails only itself: a step that raises is retried without the request that
causes it, and every other request finishes with the tokens it would have produced alone."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine_helpers import greedy, make_core, req, run_all, tokens
from tether.engine import SamplingParams

PROMPTS = {"a": list(range(3, 30)), "b": list(range(40, 47)), "bad": list(range(50, 90)), "c": [9, 8, 7, 6]}


def _alone(tiny_model, rid: str) -> list[int]:
    core = make_core(tiny_model)
    core.add_request(req(rid, PROMPTS[rid], greedy(12)))
    return tokens(run_all(core)[rid])


def test_a_fault_in_one_sequence_fails_only_that_request(tiny_model):
    core = make_core(tiny_model)
    real_execute = core.runner.execute
    calls = []

    def faulty(batch):
        calls.append([s.request_id for s in batch.seqs])
        if any(s.request_id == "bad" and s.num_output_tokens >= 3 for s in batch.seqs):
            raise RuntimeError("injected fault")
        return real_execute(batch)
    core.runner.execute = faulty
    for rid, ids in PROMPTS.items():
        core.add_request(req(rid, ids, greedy(12)))
    outs = run_all(core)
    assert outs["bad"][-1].finish_reason == "error" and "injected fault" in outs["bad"][-1].error
    assert len(tokens(outs["bad"])) == 3  # what it produced before the fault is kept
    for rid in ("a", "b", "c"):
        assert outs[rid][-1].finish_reason == "length"
        assert tokens(outs[rid]) == _alone(tiny_model, rid), rid
    assert any(len(c) > 1 and "bad" in c for c in calls)  # it was batched with the others
    assert core.stats()["running"] == 0
    core.check_no_leaks()


def test_a_step_that_always_fails_fails_every_request_in_it(tiny_model):
    core = make_core(tiny_model)

    def broken(batch):
        raise RuntimeError("device lost")
    core.runner.execute = broken
    for rid, ids in PROMPTS.items():
        core.add_request(req(rid, ids, greedy(4)))
    outs = run_all(core)
    assert all(o[-1].finish_reason == "error" and "device lost" in o[-1].error for o in outs.values())
    core.check_no_leaks()


def test_sampling_values_are_checked_at_admission():
    with pytest.raises(ValidationError, match="seed"):
        SamplingParams(seed=2**70)
    assert SamplingParams(seed=-(2**63)).seed == -(2**63)
    assert SamplingParams(temperature=1e-30).greedy  # would divide logits into inf

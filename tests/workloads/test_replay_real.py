"""A short real-mode replay on the default model: every turn's prompt is the trace's."""

from __future__ import annotations

import pytest

from small_trace import small_trace, turns_by_program
from tether.engine.policies import parse_policies
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings


@pytest.mark.timeout(600)
def test_real_replay_prompts_equal_the_trace():
    trace = small_trace(programs=2, turns=3, append=40, output=6, tool_s=0.2, gap_s=0.1)
    settings = ReplaySettings(kv_blocks=512, max_num_batched_tokens=256)
    [run] = run_policies(trace, parse_policies("baseline"), settings, "real")
    assert len(run.turns) == 6
    for t, r, prev, expected in turns_by_program(trace, run):
        assert r.prompt_tokens == expected and r.output_tokens == t.output_tokens
        if prev is not None:
            assert r.cached_tokens > 0  # the program's history stayed on its replica
            assert r.submitted_s - prev.submitted_s >= prev.tool_duration_s  # waited the tool out
    assert run.engine_stats["tool_hints"] == 4 and run.engine_stats["programs_ended"] == 2
    assert run.kv_samples and run.program_arrivals.keys() == {"p0", "p1"}


def test_replay_program_hints_only_real_tools():
    """A turn that called no tool sends no tool hint and waits nothing, and the program goes on."""
    import asyncio
    from types import SimpleNamespace

    from tether.workloads.replay_real import TurnPlan, replay_program
    from tether.workloads.trace import ToolCallRecord

    hints, prompts = [], []

    class FakeLLM:
        async def complete(self, request):
            prompts.append(len(request.prompt_token_ids))
            out = request.sampling.forced_output_ids
            m = SimpleNamespace(ttft=0.0, decode_time=0.0, prompt_tokens=len(request.prompt_token_ids),
                                prefix_hit_tokens=0, output_tokens=len(out), preemptions=0)
            return [SimpleNamespace(token_ids=list(out), metrics=m)]

        async def tool_hint(self, program_id, names):
            hints.append(names)

    ls = ToolCallRecord(name="ls", duration_s=0.0)
    plan = [TurnPlan([1, 2], [3], ls, 0.0), TurnPlan([4], [5], None, 0.0), TurnPlan([6], [7], None, 0.0)]
    services = SimpleNamespace(llm=FakeLLM(), program_id="p")
    records = asyncio.run(replay_program(services, plan, 0.0))
    assert len(records) == 3 and prompts == [2, 4, 6]
    assert hints == [["ls"]]

"""A short real-mode replay on the default model: every turn's prompt is the trace's."""

from __future__ import annotations

import pytest

from small_trace import small_trace
from tether.workloads.policies import get_policies
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings, TurnFeeder


@pytest.mark.timeout(600)
def test_real_replay_prompts_equal_the_trace():
    trace = small_trace(programs=2, turns=3, append=40, output=6, tool_s=0.2, gap_s=0.1)
    settings = ReplaySettings(kv_blocks=512, max_num_batched_tokens=256)
    [run] = run_policies(trace, get_policies("baseline"), settings, "real")
    feeder = TurnFeeder(trace)
    assert len(run.turns) == 6
    by_key = {(r.program_id, r.turn): r for r in run.turns}
    for pi, p in enumerate(trace.programs):
        for ti, t in enumerate(p.turns):
            r = by_key[(p.program_id, ti)]
            assert r.prompt_tokens == feeder.expected_prompt_tokens(pi, ti)
            assert r.output_tokens == t.output_tokens
            if ti:
                assert r.cached_tokens > 0  # the program's history stayed on its replica
                prev = by_key[(p.program_id, ti - 1)]
                assert r.submitted_s - prev.submitted_s >= p.turns[ti - 1].tool.duration_s  # waited the tool out
    assert run.engine_stats["tool_hints"] == 4 and run.engine_stats["programs_ended"] == 2
    assert run.kv_samples and run.program_arrivals.keys() == {"p0", "p1"}

"""Simulated replay: the real scheduler and KV manager on a virtual clock, deterministic."""

from __future__ import annotations

from small_trace import small_trace, turns_by_program
from tether.engine.latency_profile import LatencyProfile
from tether.engine.policies import parse_policies
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings

PROFILE = LatencyProfile(name="test", base_s=0.005, per_seq_s=1e-4, per_token_s=2e-4, per_attn_s=1e-8)


def _run(trace, **kw):
    settings = ReplaySettings(**{"kv_blocks": 4096, "max_num_batched_tokens": 256, **kw})
    return run_policies(trace, parse_policies("baseline"), settings, "sim", PROFILE)[0]


def test_same_inputs_give_identical_results():
    trace = small_trace(programs=6, turns=4)
    a, b = _run(trace), _run(trace)
    assert a.turns == b.turns and a.kv_samples == b.kv_samples
    assert len(a.turns) == 24


def test_turn_prompts_follow_the_trace_and_reuse_history():
    trace = small_trace(programs=3, turns=4)
    run = _run(trace)
    for t, r, prev, expected in turns_by_program(trace, run):
        assert r.prompt_tokens == expected and r.output_tokens == t.output_tokens
        if prev is not None:  # the history was served before: an LRU prefix cache with room keeps it
            assert r.cached_tokens >= (r.prompt_tokens - t.append_tokens) // 16 * 16 - 16
            # the turn starts exactly when the previous turn's tool is done
            assert abs(r.submitted_s - (prev.finished_s + prev.tool_duration_s)) < 1e-9


def test_memory_pressure_preempts_and_still_completes():
    trace = small_trace(programs=8, turns=3, append=120, output=30, gap_s=0.0)
    roomy, tight = _run(trace), _run(trace, kv_blocks=60)
    assert len(tight.turns) == len(roomy.turns) == 24
    assert tight.engine_stats["preemptions"] > 0 and tight.engine_stats["recomputed_tokens"] > 0
    assert max(s.used_blocks for s in tight.kv_samples) <= 60
    assert max(r.finished_s for r in tight.turns) > max(r.finished_s for r in roomy.turns)


def test_closed_loop_keeps_concurrency():
    trace = small_trace(programs=6, turns=2)
    run = _run(trace, concurrency=2)
    starts = sorted(run.program_arrivals.values())
    ends = sorted(max(r.finished_s for r in run.turns if r.program_id == p) for p in run.program_arrivals)
    # The third program starts exactly when the first one ends.
    assert starts[2] == ends[0] and starts[0] == starts[1] == 0.0


def _drop_tool(trace, turn: int):
    """The same trace, but every program's ``turn`` called no tool (a plain answer mid-program)."""
    programs = []
    for p in trace.programs:
        turns = list(p.turns)
        turns[turn] = turns[turn].model_copy(update={"tool": None})
        programs.append(p.model_copy(update={"turns": turns}))
    return trace.model_copy(update={"programs": programs})


def test_a_middle_turn_without_a_tool_does_not_end_the_program():
    trace = _drop_tool(small_trace(programs=3, turns=4), turn=1)
    run = _run(trace)
    assert len(run.turns) == 12
    for t, r, prev, expected in turns_by_program(trace, run):
        assert r.prompt_tokens == expected
        if r.turn == 2:  # nothing to wait for after turn 1: turn 2 follows at once
            assert prev.tool_name is None and prev.tool_duration_s == 0.0 and r.submitted_s == prev.finished_s
    assert run.engine_stats["tool_hints"] == 3 * 2 and run.engine_stats["programs_ended"] == 3

"""Token and time scaling of traces, and fitting a context limit."""

from __future__ import annotations

import pytest

from tether.workloads.scaling import fitting_scale, scale_trace
from tether.workloads.synth import synthesize
from tether.workloads.trace import Program, ToolCallRecord, Trace, TraceError, Turn


@pytest.fixture(scope="module")
def trace():
    return synthesize(40, seed=11, rate=1.0)


def _text_trace() -> Trace:
    turns = [Turn(append_messages=[{"role": "user", "content": "task"}], append_tokens=4, append_token_ids=[1, 2, 3, 4],
                  output_text="ok", output_tokens=2, output_token_ids=[5, 6],
                  tool=ToolCallRecord(name="ls", tool_class="view", duration_s=2.0)),
             Turn(append_tokens=3, output_tokens=1)]
    return Trace(programs=[Program(program_id="p", arrival_s=10.0, turns=turns)], meta={"seed": 1})


def test_token_scale_multiplies_counts_and_keeps_structure(trace):
    half = scale_trace(trace, token_scale=0.5)
    for p, q in zip(trace.programs, half.programs):
        assert len(p.turns) == len(q.turns)
        for t, u in zip(p.turns, q.turns):
            assert u.append_tokens == round(t.append_tokens * 0.5)
            assert u.output_tokens == max(1, round(t.output_tokens * 0.5))
            assert (u.tool is None) == (t.tool is None)
            assert u.tool is None or (u.tool.name, u.tool.duration_s) == (t.tool.name, t.tool.duration_s)
    assert half.meta["token_scale"] == 0.5 and half.meta["time_scale"] == 1.0
    tiny = scale_trace(trace, token_scale=1e-6)
    assert all(t.output_tokens == 1 and t.append_tokens == 0 for p in tiny.programs for t in p.turns)


def test_scaled_traces_drop_text_and_ids_but_scale_one_keeps_them():
    t = _text_trace()
    scaled = scale_trace(t, token_scale=0.5)
    first = scaled.programs[0].turns[0]
    assert (first.append_tokens, first.output_tokens) == (2, 1)
    assert first.append_messages is first.append_token_ids is first.output_text is first.output_token_ids is None
    same = scale_trace(t, time_scale=2.0)
    assert same.programs[0].turns[0].append_token_ids == [1, 2, 3, 4]
    assert same.programs[0].turns[0].output_text == "ok"


def test_time_scale_multiplies_durations_and_arrivals(trace):
    fast = scale_trace(trace, time_scale=0.1)
    for p, q in zip(trace.programs, fast.programs):
        assert q.arrival_s == pytest.approx(p.arrival_s * 0.1)
        for t, u in zip(p.turns, q.turns):
            assert u.tool is None or u.tool.duration_s == pytest.approx(t.tool.duration_s * 0.1)
            assert u.append_tokens == t.append_tokens
    again = scale_trace(fast, time_scale=0.5, token_scale=0.5)
    assert again.meta["time_scale"] == pytest.approx(0.05) and again.meta["token_scale"] == 0.5
    with pytest.raises(ValueError):
        scale_trace(trace, time_scale=-1)


def test_max_context_picks_the_largest_fitting_scale(trace):
    fitted = scale_trace(trace, max_context=4096, margin=32)
    s = fitted.meta["token_scale"]
    assert 0 < s < 1 and fitted.meta["max_context"] == 4096
    assert max(p.total_tokens for p in fitted.programs) <= 4096 - 32
    # a little more and some program overflows: the scale is the largest that fits
    bigger = scale_trace(trace, token_scale=s * 1.01)
    assert max(p.total_tokens for p in bigger.programs) > 4096 - 32
    # never raised above the scale asked for
    assert fitting_scale(trace, 0.001, 4096) == 0.001
    assert scale_trace(trace, token_scale=0.5, max_context=10**9).meta["token_scale"] == 0.5


def test_max_context_too_small_is_an_error(trace):
    with pytest.raises(TraceError, match="can't fit"):
        scale_trace(trace, max_context=40, margin=32)

"""Chunk arrivals in the trace schema: validation naming the field, old traces unchanged,
the ids each arrival carries, synthesis of both published shapes, and scaling."""

from __future__ import annotations

import json

import pytest

from tether.workloads.chunks import chunk_steps, rescale_chunks
from tether.workloads.scaling import scale_trace
from tether.workloads.synth import synthesize
from tether.workloads.synth_streamed import add_chunk_arrivals
from tether.workloads.tokenize import synthetic_token_ids
from tether.workloads.trace import Trace, TraceError, check_chunks

STREAMED_TURN = {"append_tokens": 30, "output_tokens": 2, "append_chunks": [
    {"time_s": 0.0, "op": "append", "tokens": 10},
    {"time_s": 0.5, "op": "replace", "tokens": 20, "keep_tokens": 4},
    {"time_s": 1.25, "op": "append", "tokens": 30}]}


def _write(tmp_path, turns: list[dict]):
    path = tmp_path / "t.jsonl"
    first = {"append_tokens": 5, "output_tokens": 1, "tool": {"name": "grep", "tool_class": "search", "duration_s": 1}}
    program = {"program_id": "p", "turns": [first, *turns]}
    path.write_text(json.dumps({"trace_meta": {"seed": 0}}) + "\n" + json.dumps(program) + "\n")
    return path


def test_a_streamed_turn_loads_and_saves_unchanged(tmp_path):
    trace = Trace.load(_write(tmp_path, [STREAMED_TURN]))
    assert trace.streamed_turns == 1
    chunks = trace.programs[0].turns[1].append_chunks
    assert [(c.op, c.tokens, c.keep_tokens) for c in chunks] == [("append", 10, None), ("replace", 20, 4),
                                                                 ("append", 30, None)]
    again = Trace.load(trace.save(tmp_path / "again.jsonl"))
    assert again.programs == trace.programs


def test_old_traces_load_unchanged(tmp_path):
    trace = synthesize(3, seed=2, rate=1.0)
    path = trace.save(tmp_path / "old.jsonl")
    assert "append_chunks" not in path.read_text()  # absent stays absent: files written before still read the same
    loaded = Trace.load(path)
    assert loaded.programs == trace.programs and loaded.streamed_turns == 0


@pytest.mark.parametrize("chunks, field", [
    ([{"time_s": -0.1, "op": "append", "tokens": 30}], "append_chunks.0.time_s"),
    ([{"time_s": 1e400, "op": "append", "tokens": 30}], "not JSON"),  # infinity is refused as JSON already
    ([{"time_s": 0.5, "op": "append", "tokens": 10}, {"time_s": 0.2, "op": "append", "tokens": 30}],
     "append_chunks.1.time_s"),
    ([{"time_s": 0, "op": "insert", "tokens": 30}], "append_chunks.0.op"),
    ([{"time_s": 0, "op": "append", "tokens": 10}, {"time_s": 1, "op": "replace", "tokens": 30}], "keep_tokens"),
    ([{"time_s": 0, "op": "append", "tokens": 10},
      {"time_s": 1, "op": "replace", "tokens": 30, "keep_tokens": 11}], "append_chunks.1.keep_tokens"),
    ([{"time_s": 0, "op": "append", "tokens": 10, "keep_tokens": 3},
      {"time_s": 1, "op": "append", "tokens": 30}], "keep_tokens"),
    ([{"time_s": 0, "op": "append", "tokens": 10}, {"time_s": 1, "op": "append", "tokens": 10},
      {"time_s": 2, "op": "append", "tokens": 30}], "append_chunks.1.tokens"),
    ([{"time_s": 0, "op": "append", "tokens": 10}, {"time_s": 1, "op": "append", "tokens": 29}],
     "append_chunks.1.tokens"),
    ([{"time_s": 0, "op": "append", "tokens": 0}], "append_chunks.0.tokens"),
    ([], "append_chunks"),
    ([{"time_s": 0, "op": "append", "tokens": 30, "size": 3}], "append_chunks.0.size"),
])
def test_bad_chunk_arrivals_are_refused_naming_the_field(tmp_path, chunks, field):
    turn = {"append_tokens": 30, "output_tokens": 1, "append_chunks": chunks}
    with pytest.raises(TraceError) as e:
        Trace.load(_write(tmp_path, [turn]))
    assert f"{tmp_path / 't.jsonl'}:2" in str(e.value) and field in str(e.value)


def test_last_arrival_must_leave_the_appended_tokens_and_times_be_finite():
    from pydantic import ValidationError
    from tether.workloads.trace import ChunkArrival
    with pytest.raises(ValueError, match="append_tokens=31"):
        check_chunks([ChunkArrival(time_s=0, op="append", tokens=30)], 31)
    with pytest.raises(ValidationError, match="time_s"):
        ChunkArrival(time_s=float("nan"), op="append", tokens=30)


def test_each_arrival_carries_ids_ending_in_the_turns_own():
    trace = synthetic_token_ids(Trace.model_validate({"programs": [{"program_id": "p", "turns": [STREAMED_TURN]}]}),
                                seed=3)
    turn = trace.programs[0].turns[0]
    steps = chunk_steps(turn, seed=3, program_id="p", turn_index=0)
    assert steps == chunk_steps(turn, seed=3, program_id="p", turn_index=0)  # deterministic
    assert steps != chunk_steps(turn, seed=4, program_id="p", turn_index=0)  # superseded ids follow the seed
    first, replace, last = steps
    assert [s.op for s in steps] == ["append", "replace", "append"] and [s.time_s for s in steps] == [0, 0.5, 1.25]
    assert replace.ids + last.ids == turn.append_token_ids  # the final streamed part is the turn's tokens
    assert len(first.ids) == 10 and first.ids[:4] == replace.ids[:4]
    assert first.ids[4] != replace.ids[4]  # the common prefix is exactly keep_tokens
    assert first.ids[4:] != turn.append_token_ids[4:10]  # what the replace revised is not the final content


@pytest.mark.parametrize("shape", ["append", "update"])
def test_synth_streamed_gives_valid_turns_of_the_published_shape(tmp_path, shape):
    base = synthesize(12, seed=1, rate=0.5)
    trace = add_chunk_arrivals(base, shape, seed=1)
    assert trace.meta["streamed"] == {"shape": shape, "seed": 1, "share": 1.0, "classes": ["search", "view"],
                                      "turns": trace.streamed_turns}
    loaded = Trace.load(trace.save(tmp_path / "s.jsonl"))  # every turn passes validation
    assert loaded.programs == trace.programs and loaded.streamed_turns > 5
    ops = set()
    for p in trace.programs:
        assert p.turns[0].append_chunks is None  # the task prompt never streams
        for prev, t in zip(p.turns, p.turns[1:]):
            assert (t.append_chunks is not None) == (prev.tool.tool_class in ("search", "view"))
            if t.append_chunks:
                assert 1 <= len(t.append_chunks) <= 32 and t.append_chunks[-1].time_s <= 3.0
                assert len(t.append_chunks) >= min(8, t.append_tokens)
                ops |= {c.op for c in t.append_chunks}
    assert ops == ({"append"} if shape == "append" else {"append", "replace"})
    assert add_chunk_arrivals(base, shape, seed=1).programs == trace.programs  # deterministic
    assert add_chunk_arrivals(base, shape, seed=1, share=0.0).streamed_turns == 0
    assert add_chunk_arrivals(base, shape, seed=1, classes=("test",)).streamed_turns > 0


def test_synth_streamed_refuses_unknown_shapes():
    with pytest.raises(ValueError, match="shape must be"):
        add_chunk_arrivals(synthesize(1), "crawl")


def test_scaling_keeps_chunk_arrivals_valid():
    trace = add_chunk_arrivals(synthesize(10, seed=4), "update", seed=4)
    for scale in (0.01, 0.1, 0.5):
        small = scale_trace(trace, token_scale=scale, time_scale=0.5)
        for p, q in zip(trace.programs, small.programs):
            for a, b in zip(p.turns, q.turns):
                if b.append_chunks is None:
                    assert a.append_chunks is None or b.append_tokens == 0
                    continue
                check_chunks(b.append_chunks, b.append_tokens)
                assert b.append_chunks[-1].time_s <= a.append_chunks[-1].time_s * 0.5 + 1e-12
    chunks = next(t.append_chunks for p in trace.programs for t in p.turns if t.append_chunks)
    assert rescale_chunks(chunks, 0) is None  # nothing appended at this scale: nothing streams


def test_docstring_examples():
    import doctest

    from tether.engine import chunk_arrivals
    from tether.workloads import chunks, synth_streamed
    for mod in (chunks, synth_streamed, chunk_arrivals):
        assert doctest.testmod(mod).failed == 0

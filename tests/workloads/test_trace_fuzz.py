"""Malformed trace files: every one is a ``TraceError`` naming the file (and line, field), never another
exception, and the CLI prints ``error: ...`` and exits 2.

Property-based (hypothesis, bounded and fast): random JSON, valid trajectories of every format with a
field replaced by a wrong type, a huge number or deep nesting, and raw text JSON parsers choke on.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tether.cli import main as cli_main
from tether.workloads.loaders import load_trajectories
from tether.workloads.trace import MAX_JSON_DEPTH, MAX_TURN_TOKENS, Trace, TraceError

# Fixed examples by default (fast, the same every run); TETHER_FUZZ_EXAMPLES=5000 searches further, at random.
_EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXAMPLES or 120, deadline=None, database=None, derandomize=not _EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- one valid file per format (the templates mutated below) --------------------------------------

OPENAI = [
    {"role": "system", "content": "You fix bugs."},
    {"role": "user", "content": [{"type": "text", "text": "Fix the test."}]},
    {"role": "assistant", "content": "Looking.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls -la\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "a.py"},
    {"role": "assistant", "content": "Done.", "usage": {"prompt_tokens": 40, "completion_tokens": 3}},
]
MINI = {"trajectory_format": "mini-swe-agent-1.1", "info": {"mini_version": "1.1"}, "messages": [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "task"},
    {"role": "assistant", "content": "```mswea_bash_command\nls\n```",
     "extra": {"actions": [{"command": "ls"}], "timestamp": 100.0,
               "response": {"usage": {"prompt_tokens": 20, "completion_tokens": 5}}}},
    {"role": "user", "content": "a.py", "extra": {"timestamp": 101.5, "returncode": 0}},
    {"role": "assistant", "content": "done", "extra": {"timestamp": 102.0}},
]}
SWE = {"trajectory": [
    {"response": "I will look.", "action": "ls -la", "observation": "a.py", "execution_time": 0.5,
     "thought": "look"},
    {"response": "submit", "action": "submit", "observation": "", "execution_time": 0.1},
], "history": [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "task"},
    {"role": "assistant", "content": "I will look.", "action": "ls -la",
     "tool_calls": [{"function": {"name": "bash", "arguments": {"command": "ls -la"}}}]},
    {"role": "user", "content": "a.py"},
]}
ROUND = {"session_id": "s1", "round_index": 0, "input_tokens_total": 100, "output_tokens": 10,
         "tools": [{"tool_name": "Bash", "emitted_at": "2025-01-01T00:00:00Z",
                    "result_at": "2025-01-01T00:00:02Z", "tool_wall_latency_ms": 2000}],
         "timing_events": [{"timestamp": "2025-01-01T00:00:00Z"}]}
ROUND2 = {"session_id": "s1", "round_index": 1, "input_tokens_total": 150, "output_tokens": 5}
TETHER_META = {"trace_meta": {"seed": 0}}
TETHER_PROGRAM = {"program_id": "p1", "arrival_s": 0.5, "source": "synth", "turns": [
    {"append_tokens": 20, "output_tokens": 5,
     "tool": {"name": "pytest", "tool_class": "test", "arguments": {"k": [1]}, "duration_s": 1.5}},
    {"append_tokens": 3, "append_token_ids": [1, 2, 3], "output_tokens": 2, "output_token_ids": [4, 5]},
]}
CSV_HEADER = "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms"
CSV_ROWS = ["s1,0,0,0,100,10,500", "s1,0,1,110,20,5,0"]

# (file name, documents): a .jsonl holds one document per line, other names one document
TEMPLATES: list[tuple[str, list[Any]]] = [
    ("conv.json", [OPENAI]),
    ("conv.jsonl", [{"instance_id": "x", "messages": OPENAI}]),
    ("run.traj.json", [MINI]),
    ("run.traj", [SWE]),
    ("rounds.jsonl", [ROUND, ROUND2]),
    ("trace.jsonl", [TETHER_META, TETHER_PROGRAM]),
]


def _write(name: str, docs: list[Any], folder: Path) -> Path:
    path = folder / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    else:
        path.write_text(json.dumps(docs[0]))
    return path


def _check(path: Path) -> Trace | None:
    """Load ``path``: a Trace within the documented bounds, or a TraceError naming the file; else fail."""
    try:
        trace = load_trajectories(path)
    except TraceError as e:
        assert str(path) in str(e), f"the error names no file: {e}"
        return None
    for p in trace.programs:
        for t in p.turns:
            assert 0 <= t.append_tokens <= MAX_TURN_TOKENS and 1 <= t.output_tokens <= MAX_TURN_TOKENS
            assert t.tool is None or math.isfinite(t.tool.duration_s)
    trace.save(path.parent / "roundtrip.jsonl")  # what a loader accepts, a trace file can hold
    assert len(Trace.load(path.parent / "roundtrip.jsonl").programs) == len(trace.programs)
    return trace


def test_templates_are_valid():
    with tempfile.TemporaryDirectory() as d:
        for name, docs in TEMPLATES:
            assert _check(_write(name, docs, Path(d))) is not None, name
        csv = Path(d) / "replay.csv"
        csv.write_text("\n".join([CSV_HEADER, *CSV_ROWS]) + "\n")
        assert _check(csv) is not None


# ---- strategies ---------------------------------------------------------------------------------

def _nested(depth: int, leaf: Any = 1) -> Any:
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


HUGE = st.sampled_from([-1, -(10**30), 0, MAX_TURN_TOKENS, MAX_TURN_TOKENS + 1, 10**12, 10**30, 2**63,
                        2**64 + 1, 10**300, 1e300, -1e300, 1e-300, 0.5])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), HUGE)
JSON = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                    max_leaves=20)
NASTY = st.one_of(JSON, HUGE, st.integers(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 40).map(_nested),
                  st.just("nope"), st.just([]), st.just({}), st.just([1, "x", None]))


def _paths(doc: Any) -> list[tuple]:
    """The path (keys and indexes) to every node, in document order; iterative (nesting may be deep)."""
    out, stack = [], [((), doc)]
    while stack:
        path, node = stack.pop()
        out.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        stack.extend(reversed([((*path, k), v) for k, v in items]))
    return out


def _replace(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@st.composite
def mutated(draw) -> tuple[str, list[Any]]:
    """A template with one to three nodes (a field, a list item, or the whole document) replaced."""
    name, docs = draw(st.sampled_from(TEMPLATES))
    docs = copy.deepcopy(docs)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(docs) - 1))
        path = draw(st.sampled_from(_paths(docs[i])))
        docs[i] = _replace(docs[i], path, copy.deepcopy(draw(NASTY)))  # a fresh copy: st.just shares one
    return name, docs


# ---- properties ---------------------------------------------------------------------------------

@FUZZ
@given(mutated())
@example(("rounds.jsonl", [{**ROUND, "round_index": None}, ROUND2]))  # found at random: None vs int in a sort
def test_a_mutated_trajectory_loads_within_bounds_or_is_a_trace_error(case):
    name, docs = case
    with tempfile.TemporaryDirectory() as d:
        _check(_write(name, docs, Path(d)))


@FUZZ
@given(st.sampled_from(["a.json", "a.traj", "a.traj.json", "a.jsonl"]), st.lists(JSON, min_size=1, max_size=3))
def test_random_json_is_a_trace_or_a_trace_error(name, docs):
    with tempfile.TemporaryDirectory() as d:
        _check(_write(name, docs, Path(d)))


RAW = st.sampled_from(["[" * 100_000, "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, "1" * 5000,
                       "NaN", "Infinity", "-Infinity", "1e999", '{"messages": NaN}', "\x00", "\ufeff{}", "",
                       "   ", '{"trace_meta": {}}\n5', '{"trace_meta": []}\n{}', '{"trace_meta": {}}\n"x"'])


@FUZZ
@given(st.sampled_from(["a.json", "a.traj", "a.traj.json", "a.jsonl", "a.csv"]),
       st.one_of(RAW, st.text(max_size=200)), st.binary(max_size=30))
def test_raw_text_and_bytes_are_a_trace_or_a_trace_error(name, text, junk):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(text)
        _check(path)
        path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)
        _check(path)


CSV_CELLS = st.one_of(st.sampled_from(["", "nan", "inf", "-inf", "1e999", "-5", "1e30", "10000001", "x", '"',
                                       "0x10", " 7 ", "1" * 5000]), st.integers().map(str),
                      st.floats().map(str), st.text(max_size=8))


@FUZZ
@given(st.lists(st.lists(CSV_CELLS, min_size=0, max_size=8), min_size=1, max_size=4))
def test_a_malformed_replay_csv_is_a_trace_or_a_trace_error(rows):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "replay.csv"
        path.write_text("\n".join([CSV_HEADER, *CSV_ROWS, *(",".join(r) for r in rows)]) + "\n")
        _check(path)


# ---- the cases of the report, each named --------------------------------------------------------

def _program(**turn) -> dict:
    return {"program_id": "p", "turns": [{"append_tokens": 5, "output_tokens": 3, **turn}]}


CASES = {
    "deep.json": ("[" * 100_000 + "]" * 100_000, "deep.json: not JSON (nested deeper than 100 levels)"),
    "deep.jsonl": ('{"trace_meta": {}}\n' + json.dumps(_nested(150)) + "\n",
                   "deep.jsonl:2: not JSON (nested deeper than 100 levels)"),
    "huge_output.jsonl": ('{"trace_meta": {}}\n' + json.dumps(_program(output_tokens=10**12)) + "\n",
                          "huge_output.jsonl:2: turns.0.output_tokens: Input should be less than or equal to "
                          "10000000"),
    "huge_append.jsonl": ('{"trace_meta": {}}\n' + json.dumps(_program(append_tokens=10**30)) + "\n",
                          "huge_append.jsonl:2: turns.0.append_tokens: Input should be less than or equal to "
                          "10000000"),
    "tool_calls.json": (json.dumps([{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "x", "tool_calls": "nope"},
                                    {"role": "tool", "content": "r"}, {"role": "assistant", "content": "ok"}]),
                        "tool_calls.json: messages.1.tool_calls: expected a list of tool calls, got str"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_reported_bad_file_is_a_trace_error_naming_file_and_field(name, tmp_path):
    text, message = CASES[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(TraceError) as e:
        load_trajectories(tmp_path / name)
    assert str(e.value).startswith(f"{tmp_path / name}") and message in str(e.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_cli_prints_an_error_and_exits_2(name, tmp_path, capsys):
    text, message = CASES[name]
    (tmp_path / name).write_text(text)
    assert cli_main(["trace", "convert", str(tmp_path / name), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert cli_main(["replay", str(tmp_path / name), "--kv-blocks", "64", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count(f"error: {tmp_path / name}") == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "r").exists()


def test_token_ids_out_of_range_are_a_trace_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"trace_meta": {}}\n' + json.dumps(_program(append_tokens=2, append_token_ids=[1, -1])) + "\n")
    with pytest.raises(TraceError, match=r"t.jsonl:2: turns.0.append_token_ids.1: Input should be greater"):
        load_trajectories(path)

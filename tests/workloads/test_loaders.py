"""Trajectory loaders on the real sample traces in tests/data/traces, the tokenizer path, and bad-file
errors."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tether.workloads.durations import CLASS_DURATIONS, classify_command, classify_tool, draw_duration, \
    mean_duration
from tether.workloads.loaders import detect_format, load_trajectories
from tether.workloads.synth import synthesize
from tether.workloads.tokenize import render_messages, synthetic_token_ids
from tether.workloads.trace import TraceError

REPO = Path(__file__).resolve().parents[2]
TRACES = REPO / "tests" / "data" / "traces"  # public samples, with their licenses and README
SWE_FC = "swe-agent_marshmallow-1867_function-calling.traj"
SWE_TEST = "swe-agent_test-repo-1c2844.traj"
MINI = "mini-swe-agent_github_issue.traj.json"
ROUNDS = "tracelab_round_trace.jsonl"
CSV = "tracelab_multi_session_large.csv"
ACTION = re.compile(r"```(?:mswea_bash_command|bash)\s*\n(.*?)\n```", re.DOTALL)

def _json(name):
    return json.loads((TRACES / name).read_text())


def _tools(program):
    return [t.tool for t in program.turns]


# ---- the sample files ----------------------------------------------------------------

def test_detects_every_sample_format():
    assert {n: detect_format(TRACES / n) for n in (SWE_FC, SWE_TEST, MINI, ROUNDS, CSV)} == {
        SWE_FC: "swe-agent", SWE_TEST: "swe-agent", MINI: "mini-swe-agent", ROUNDS: "tracelab-rounds",
        CSV: "tracelab-csv"}


def test_swe_agent_function_calling():
    raw = _json(SWE_FC)
    (p,) = load_trajectories(TRACES / SWE_FC).programs
    assert p.program_id == "swe-agent_marshmallow-1867_function-calling" and len(p.turns) == 11
    tools = _tools(p)
    assert tools[-1] is None  # the final submit ends the run
    assert [t.name for t in tools[:-1]] == ["create", "edit", "python", "ls", "find_file", "open", "edit",
                                           "edit", "python", "rm"]
    assert [t.tool_class for t in tools[:-1]] == ["edit", "edit", "shell", "view", "search", "view", "edit",
                                                 "edit", "shell", "edit"]
    assert [t.duration_s for t in tools[:-1]] == [s["execution_time"] for s in raw["trajectory"][:-1]]
    assert not any(t.duration_drawn for t in tools[:-1])
    hist = raw["history"]
    first = p.turns[0].append_messages
    assert [m["role"] for m in first] == ["system", "user"] and first[1]["content"] == hist[1]["content"]
    # later turns gain exactly the previous tool's output
    assert p.turns[1].append_messages == [{"role": "tool", "content": hist[3]["content"]}]
    assert p.turns[3].output_text.startswith(raw["trajectory"][3]["response"])
    assert '<tool_call>{"name": "bash", "arguments": {"command": "ls -F"}}</tool_call>' in p.turns[3].output_text
    assert all(t.append_tokens > 0 and t.output_tokens > 0 for t in p.turns)


def test_swe_agent_history_that_stops_before_the_last_step():
    raw = _json(SWE_TEST)
    (p,) = load_trajectories(TRACES / SWE_TEST).programs
    assert len(p.turns) == 5
    assert [(t.name, t.tool_class) for t in _tools(p)[:-1]] == [
        ("find_file", "search"), ("open", "view"), ("edit", "edit"), ("python3", "shell")]
    assert [t.duration_s for t in _tools(p)[:-1]] == [s["execution_time"] for s in raw["trajectory"][:-1]]
    # history has 4 assistant messages for 5 steps: the last turn reads the 4th tool's output
    assert p.turns[4].append_messages == [{"role": "tool", "content": raw["history"][9]["content"]}]


def test_mini_swe_agent_older_form_draws_durations():
    (p,) = load_trajectories(TRACES / MINI, seed=0).programs
    assert len(p.turns) == 10
    tools = _tools(p)
    assert tools[-1] is None
    assert [t.name for t in tools[:-1]] == ["cat", "ls", "ls", "cat", "sed", "cat", "python3", "python3", "cat"]
    assert [t.tool_class for t in tools[:-1]] == ["view", "view", "view", "view", "edit", "view", "shell",
                                                 "shell", "edit"]
    assert all(t.duration_drawn and 0 < t.duration_s <= 60 for t in tools[:-1])
    msgs = _json(MINI)
    assert p.turns[0].append_messages == [{"role": m["role"], "content": m["content"]} for m in msgs[:2]]
    assert p.turns[1].append_messages == [{"role": "user", "content": msgs[3]["content"]}]
    assert p.turns[0].output_text == msgs[2]["content"]
    # seeded: same seed, same draws; another seed, others
    again = load_trajectories(TRACES / MINI, seed=0).programs[0]
    other = load_trajectories(TRACES / MINI, seed=1).programs[0]
    assert [t.duration_s for t in _tools(again)[:-1]] == [t.duration_s for t in tools[:-1]]
    assert [t.duration_s for t in _tools(other)[:-1]] != [t.duration_s for t in tools[:-1]]


def _newer_mini(messages):
    """The older sample file rewritten in mini-swe-agent v2's shape: ``extra`` with timestamps and usage."""
    out, t, prompt, completion, k = [], 1.75e9, None, None, 0
    durations, gains, completions = [], [], []
    for i, m in enumerate(messages):
        m = dict(m)
        if m["role"] == "assistant":
            t += 3.0  # model time
            gain = 1500 if k == 0 else 40 + 7 * k
            prompt = gain if k == 0 else prompt + completion + gain
            completion = 60 + k
            gains.append(gain)
            completions.append(completion)
            actions = [{"command": c.strip()} for c in ACTION.findall(m["content"])]
            m["extra"] = {"actions": actions, "timestamp": t, "cost": 0.0,
                          "response": {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}}
            k += 1
        elif i > 1:
            d = 0.25 * i
            t += d
            durations.append(d)
            m["extra"] = {"timestamp": t, "returncode": 0, "raw_output": ""}
        out.append(m)
    out.append({"role": "exit", "content": "", "extra": {"exit_status": "Submitted", "submission": ""}})
    return {"info": {"mini_version": "2.0.0"}, "messages": out, "trajectory_format": "mini-swe-agent-1.1"}, \
        durations, gains, completions


def test_mini_swe_agent_newer_form_uses_timestamps_and_usage(tmp_path):
    data, durations, gains, completions = _newer_mini(_json(MINI))
    f = tmp_path / "newer.traj.json"
    f.write_text(json.dumps(data))
    assert detect_format(f) == "mini-swe-agent"
    trace = load_trajectories(f)
    (p,) = trace.programs
    assert trace.meta["mini_version"] == "2.0.0"
    tools = _tools(p)
    assert len(p.turns) == 10 and tools[-1] is None
    assert [t.duration_s for t in tools[:-1]] == pytest.approx(durations[:9])
    assert not any(t.duration_drawn for t in tools[:-1])
    assert [t.output_tokens for t in p.turns] == completions
    assert [t.append_tokens for t in p.turns] == gains
    assert [t.name for t in tools[:-1]][:3] == ["cat", "ls", "ls"]


def _to_openai(messages):
    """The mini-swe-agent conversation as OpenAI tool calling (SWE-smith style)."""
    out, call = [], 0
    for m in messages:
        if m["role"] == "assistant":
            cmds = ACTION.findall(m["content"])
            thought = ACTION.sub("", m["content"]).strip()
            msg = {"role": "assistant", "content": thought}
            if cmds:
                call += 1
                msg["tool_calls"] = [{"id": f"call_{call}", "type": "function", "function": {
                    "name": "bash", "arguments": json.dumps({"command": cmds[0].strip()})}}]
            out.append(msg)
        elif out and out[-1].get("tool_calls"):
            out.append({"role": "tool", "tool_call_id": out[-1]["tool_calls"][0]["id"], "content": m["content"]})
        else:
            out.append(dict(m))
    return out


@pytest.mark.parametrize("shape", ["list", "object", "jsonl"])
def test_openai_messages(tmp_path, shape):
    conv = _to_openai(_json(MINI))
    if shape == "list":
        f = tmp_path / "conv.json"
        f.write_text(json.dumps(conv))
    elif shape == "object":
        f = tmp_path / "conv.json"
        f.write_text(json.dumps({"instance_id": "x", "messages": conv}))
    else:
        f = tmp_path / "convs.jsonl"
        f.write_text("".join(json.dumps({"instance_id": f"task-{i}", "messages": conv}) + "\n" for i in range(2)))
    assert detect_format(f) == "openai-messages"
    trace = load_trajectories(f, seed=0)
    assert len(trace.programs) == (2 if shape == "jsonl" else 1)
    p = trace.programs[0]
    if shape == "jsonl":
        assert [q.program_id for q in trace.programs] == ["convs/task-0", "convs/task-1"]
    tools = _tools(p)
    assert len(p.turns) == 10 and tools[-1] is None
    assert [t.name for t in tools[:-1]] == ["cat", "ls", "ls", "cat", "sed", "cat", "python3", "python3", "cat"]
    assert all(t.duration_drawn and t.arguments["command"] for t in tools[:-1])
    assert [m["role"] for m in p.turns[0].append_messages] == ["system", "user"]
    assert [m["role"] for m in p.turns[1].append_messages] == ["tool"]
    assert '<tool_call>{"name": "bash"' in p.turns[0].output_text


def test_tracelab_round_trace():
    rows = [json.loads(x) for x in (TRACES / ROUNDS).read_text().splitlines() if x.strip()]
    trace = load_trajectories(TRACES / ROUNDS)
    assert [len(p.turns) for p in trace.programs] == [10, 9]
    claude = trace.programs[0]
    assert claude.program_id == rows[0]["session_id"] and claude.arrival_s == 0.0
    assert [t.name for t in _tools(claude)[:-1]] == ["WebSearch", "WebSearch", "Write", "Bash", "user",
                                                    "WebSearch", "WebFetch", "Write", "Bash"]
    assert _tools(claude)[-1] is None
    # two tools in round 0: the wait runs from the last call (WebSearch, emitted 31.647) to its result
    assert _tools(claude)[0].duration_s == pytest.approx(50.938 - 31.647)
    assert [c["name"] for c in _tools(claude)[0].arguments["calls"]] == ["Bash", "WebSearch"]
    # single-tool rounds: the recorded wall latency
    assert _tools(claude)[1].duration_s == pytest.approx(rows[1]["tools"][0]["tool_wall_latency_ms"] / 1000)
    # no tool, then a user message: the user's think time (05:42:23.420 -> 05:42:43.333)
    assert _tools(claude)[4].tool_class == "other" and _tools(claude)[4].duration_s == pytest.approx(19.913)
    assert not any(t.duration_drawn for t in _tools(claude)[:-1])
    # the replayed prompt of each round is the real one (it never shrank in this session)
    context = 0
    for turn, row in zip(claude.turns, rows):
        context += turn.append_tokens
        assert context == row["input_tokens_total"]
        assert turn.output_tokens == row["output_tokens"]
        context += turn.output_tokens
    assert set(trace.meta["session_start_utc"]) == {p.program_id for p in trace.programs}


def test_tracelab_replay_csv():
    with (TRACES / CSV).open() as f:
        rows = list(csv.DictReader(f))
    trace = load_trajectories(TRACES / CSV)
    assert len(trace.programs) == 48 and sum(len(p.turns) for p in trace.programs) == len(rows) == 303
    by_session = {}
    for r in rows:
        by_session.setdefault(r["session_id"], []).append(r)
    for p in trace.programs:
        rs = by_session[p.program_id.split("/")[-1]]
        assert p.arrival_s == pytest.approx(int(rs[0]["arrival_time"]) / 1000)
        context = 0
        for i, (t, r) in enumerate(zip(p.turns, rs)):
            assert context == int(r["prefix_len"])
            assert (t.append_tokens, t.output_tokens) == (int(r["input_len"]), int(r["output_len"]))
            context += t.append_tokens + t.output_tokens
            if i + 1 < len(rs):
                assert t.tool.duration_s == pytest.approx(int(r["tool_wait_after_ms"]) / 1000)
                assert not t.tool.duration_drawn
            else:
                assert t.tool is None
        assert all(t.append_messages is None and t.output_text is None for t in p.turns)


def test_folder_load_merges_every_format():
    trace = load_trajectories(TRACES)
    assert len(trace.programs) == 1 + 1 + 1 + 2 + 48
    assert trace.meta["formats"] == ["mini-swe-agent", "swe-agent", "tracelab-csv", "tracelab-rounds"]
    assert len({p.program_id for p in trace.programs}) == len(trace.programs)


def test_load_trajectories_doctest(monkeypatch):
    import doctest

    import tether.workloads.loaders as loaders
    monkeypatch.chdir(REPO)  # the example names its file from the repo root
    assert doctest.testmod(loaders).failed == 0


def test_tether_trace_loads_as_is(tmp_path):
    t = synthesize(3, seed=5, rate=1.0)
    f = t.save(tmp_path / "t.jsonl")
    assert detect_format(f) == "tether"
    back = load_trajectories(f)
    assert back.meta == t.meta and back.programs == t.programs


# ---- tokenizer -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from tether.engine.model_loader import ModelNotFoundError, resolve_model_path
    try:
        path = resolve_model_path("default")
    except ModelNotFoundError as e:
        pytest.skip(f"default model unavailable: {e}")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path))


def test_tokenized_load_has_ids_matching_text(tokenizer):
    trace = load_trajectories(TRACES, tokenizer=tokenizer)
    fc = next(p for p in trace.programs if p.program_id.startswith("swe-agent_marshmallow"))
    for t in fc.turns:
        assert len(t.append_token_ids) == t.append_tokens and len(t.output_token_ids) == t.output_tokens
        assert tokenizer.decode(t.append_token_ids) == render_messages(t.append_messages)
        assert tokenizer.decode(t.output_token_ids) == t.output_text
    # count-only turns stay count-only until synthetic ids fill them, deterministically
    csv_prog = next(p for p in trace.programs if p.source.startswith("tracelab-csv"))
    assert csv_prog.turns[0].append_token_ids is None
    a, b = synthetic_token_ids(trace, seed=7), synthetic_token_ids(trace, seed=7)
    c = synthetic_token_ids(trace, seed=8)
    q = next(p for p in a.programs if p.program_id == csv_prog.program_id)
    ids = q.turns[0].append_token_ids
    assert len(ids) == q.turns[0].append_tokens and all(1000 <= x < 40000 for x in ids)
    assert a.programs == b.programs and a.programs != c.programs
    # real ids are kept
    assert next(p for p in a.programs if p.program_id == fc.program_id) == fc


# ---- bad files -----------------------------------------------------------------------

def _write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_swe_agent_bad_fields_name_file_and_field(tmp_path):
    raw = _json(SWE_FC)
    neg = copy.deepcopy(raw)
    neg["trajectory"][2]["execution_time"] = -1.5
    f = _write(tmp_path, "neg.traj", json.dumps(neg))
    with pytest.raises(TraceError, match=r"neg\.traj: trajectory\.2\.execution_time: negative"):
        load_trajectories(f)
    missing = copy.deepcopy(raw)
    del missing["trajectory"][1]["response"], missing["trajectory"][1]["thought"]
    f = _write(tmp_path, "missing.traj", json.dumps(missing))
    with pytest.raises(TraceError, match=r"missing\.traj: trajectory\.1\.response: missing"):
        load_trajectories(f)


def test_tracelab_bad_rows_name_line_and_field(tmp_path):
    lines = (TRACES / ROUNDS).read_text().splitlines()
    row = json.loads(lines[2])
    row["tools"][0]["tool_wall_latency_ms"] = -5
    f = _write(tmp_path, "r.jsonl", "\n".join([lines[0], lines[1], json.dumps(row)]) + "\n")
    with pytest.raises(TraceError, match=r"r\.jsonl:3: tools\.0\.tool_wall_latency_ms"):
        load_trajectories(f)
    row = json.loads(lines[1])
    del row["output_tokens"]
    f = _write(tmp_path, "s.jsonl", "\n".join([lines[0], json.dumps(row)]) + "\n")
    with pytest.raises(TraceError, match=r"s\.jsonl:2: output_tokens: missing"):
        load_trajectories(f)


def test_csv_bad_rows_name_line_and_field(tmp_path):
    head = "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n"
    f = _write(tmp_path, "neg.csv", head + "0,1,0,0,10,5,20\n0,1,1,15,10,5,-3\n")
    with pytest.raises(TraceError, match=r"neg\.csv:3: tool_wait_after_ms: negative"):
        load_trajectories(f)
    f = _write(tmp_path, "cols.csv", "session_id,round_idx,input_len,tool_wait_after_ms\n0,0,1,0\n")
    with pytest.raises(TraceError, match=r"cols\.csv:1: missing column\(s\) output_len"):
        load_trajectories(f)


def test_csv_empty_cells_name_line_and_field(tmp_path):
    head = "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n"
    f = _write(tmp_path, "empty.csv", head + "0,,0,,10,5,20\n0,,1,,10,,0\n")
    with pytest.raises(TraceError, match=r"empty\.csv:3: output_len: not a number"):
        load_trajectories(f)
    # empty optional cells are fine
    f = _write(tmp_path, "opt.csv", head + "0,,0,,10,5,20\n0,,1,,10,5,0\n")
    assert len(load_trajectories(f).programs[0].turns) == 2


def test_chat_bad_files_name_file_line_and_field(tmp_path):
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
    f = _write(tmp_path, "c.jsonl", json.dumps({"messages": ok}) + "\n{not json\n")
    with pytest.raises(TraceError, match=r"c\.jsonl:2: not JSON"):
        load_trajectories(f)
    f = _write(tmp_path, "d.json", json.dumps([{"role": "user", "content": "hi"}, {"content": "x"}]))
    with pytest.raises(TraceError, match=r"d\.json: messages\.1\.role: missing"):
        load_trajectories(f)
    msgs = [{"role": "user", "content": "task"},
            {"role": "assistant", "content": "```mswea_bash_command\nls\n```", "extra": {"timestamp": 10.0}},
            {"role": "user", "content": "out", "extra": {"timestamp": 9.0}},
            {"role": "assistant", "content": "done"}]
    f = _write(tmp_path, "m.traj.json", json.dumps({"messages": msgs}))
    with pytest.raises(TraceError, match=r"m\.traj\.json: messages\.2\.extra\.timestamp: .*negative duration"):
        load_trajectories(f)


def test_unknown_formats_name_the_file(tmp_path):
    for name, text in [("notes.txt", "hello"), ("x.json", json.dumps({"foo": 1})),
                       ("y.jsonl", json.dumps(42) + "\n")]:
        f = _write(tmp_path, name, text)
        with pytest.raises(TraceError, match=rf"{re.escape(name)}: unknown trajectory format"):
            load_trajectories(f)
    with pytest.raises(TraceError, match="no such file"):
        load_trajectories(tmp_path / "missing.traj")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TraceError, match="no trajectory files"):
        load_trajectories(empty)


# ---- tool classes and drawn durations ------------------------------------------------

@pytest.mark.parametrize("command,cls", [
    ("cd /testbed && python -m pytest tests/test_x.py -x", "test"), ("pytest -q", "test"),
    ("grep -rn foo src | head", "search"), ("find . -name '*.py'", "search"), ("rg TODO", "search"),
    ("cat setup.py", "view"), ("ls -la", "view"), ("nl -ba f.py | sed -n '1,20p'", "view"),
    ("sed -i 's/a/b/' f.py", "edit"), ("cat <<'EOF' > f.py\nx = 1\nEOF", "edit"),
    ("python reproduce.py", "shell"), ("pip install -e .", "shell"),
    ("str_replace_editor view /a.py", "view"), ("str_replace_editor str_replace /a.py --old x", "edit"),
])
def test_classify_command(command, cls):
    assert classify_command(command) == cls


def test_classify_function_calls():
    assert classify_tool("str_replace_editor", arguments={"command": "create", "path": "a"}) == "edit"
    assert classify_tool("str_replace_editor", arguments={"command": "view", "path": "a"}) == "view"
    assert classify_tool("bash", arguments={"command": "python -m pytest"}) == "test"
    assert classify_tool("submit") == "other" and classify_tool("Grep") == "search"


@pytest.mark.parametrize("tool_class", sorted(CLASS_DURATIONS))
def test_drawn_durations_match_their_distribution(tool_class):
    rng = np.random.default_rng(0)
    draws = np.array([draw_duration(tool_class, rng) for _ in range(20000)])
    assert draws.min() > 0 and draws.max() <= 60.0
    assert draws.mean() == pytest.approx(mean_duration(tool_class), rel=0.1)
    assert np.median(draws) == pytest.approx(min(CLASS_DURATIONS[tool_class][0], 60.0), rel=0.1)

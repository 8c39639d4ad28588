"""SWE-smith trajectory rows (``messages`` as a JSON-encoded string, ``instance_id``, ``traj_id``, ``model``,
``resolved``), built here from the real sample traces in tests/data/traces in the dataset's three tool styles
(tool calls, ``<function=...>`` blocks, fenced commands), then converted and replayed as a user would."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tether import cli
from tether.workloads.durations import command_program
from tether.workloads.loaders import detect_format, load_trajectories
from tether.workloads.trace import Trace, TraceError

TRACES = Path(__file__).resolve().parents[2] / "tests" / "data" / "traces"
FC = "swe-agent_marshmallow-1867_function-calling.traj"  # SWE-agent history with function calls
MINI = "mini-swe-agent_github_issue.traj.json"  # fenced ```bash blocks
FENCE = re.compile(r"```(?:mswea_bash_command|bash)\s*\n(.*?)\n```", re.DOTALL)


def _calls(m: dict) -> list[dict]:
    calls = m.get("tool_calls") or []
    return ast.literal_eval(calls) if isinstance(calls, str) else calls


def _tool_style(history: list[dict]) -> list[dict]:
    """SWE-agent's history as OpenAI tool calling (the dataset's ``tool`` split)."""
    out = []
    for m in history:
        msg = {"role": m["role"], "content": m["content"]}
        if m["role"] == "assistant" and _calls(m):
            msg["tool_calls"] = _calls(m)
        out.append(msg)
    return out


def _xml_style(history: list[dict]) -> list[dict]:
    """The same run with ``<function=NAME><parameter=k>v</parameter></function>`` blocks (the ``xml`` split)."""
    out = []
    for m in history:
        content = m["content"]
        if m["role"] == "assistant" and _calls(m):
            fn = _calls(m)[0]["function"]
            params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in json.loads(fn["arguments"]).items())
            content = f"{content}\n\n<function={fn['name']}>\n{params}</function>"
        out.append({"role": "user" if m["role"] == "tool" else m["role"],
                    "content": content if m["role"] != "tool" else f"OBSERVATION:\n{content}"})
    return out


def _tool_name(m: dict) -> str | None:
    """A call's name as every loader gives it: a bash call by its command's program (``python``)."""
    if not _calls(m):
        return None
    fn = _calls(m)[0]["function"]
    return command_program(json.loads(fn["arguments"])["command"]) if fn["name"] == "bash" else fn["name"]


def _function_names(history: list[dict]) -> list[str | None]:
    names = [_tool_name(m) for m in history if m["role"] == "assistant"]
    return names[:-1] + [None]  # the last turn's call ends the run


def _rows() -> list[dict]:
    history = json.loads((TRACES / FC).read_text())["history"]
    mini = json.loads((TRACES / MINI).read_text())
    mini = mini["messages"] if isinstance(mini, dict) else mini
    base = {"instance_id": "marshmallow-code__marshmallow.9716fc62.pr_1867", "model": "gpt-4o", "patch": ""}
    return [
        {**base, "traj_id": "marshmallow.tool", "resolved": True, "messages": json.dumps(_tool_style(history))},
        {**base, "traj_id": "marshmallow.xml", "resolved": False, "messages": json.dumps(_xml_style(history))},
        {"instance_id": "github-issue", "traj_id": "issue.ticks", "model": "claude-3-7-sonnet", "resolved": True,
         "patch": "", "messages": mini},  # the dataset's first release stored messages as a list
    ]


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    f = tmp_path / "swe-smith.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return f


def test_swe_smith_rows_load_in_every_tool_style(rows_file: Path):
    assert detect_format(rows_file) == "swe-smith"
    trace = load_trajectories(rows_file, seed=3)
    tool, xml, ticks = trace.programs
    assert [p.program_id for p in trace.programs] == ["marshmallow.tool", "marshmallow.xml", "issue.ticks"]
    history = json.loads((TRACES / FC).read_text())["history"]
    expected = _function_names(history)
    assert len(expected) == 11 and [t.tool.name if t.tool else None for t in tool.turns] == expected
    assert [t.tool.name if t.tool else None for t in xml.turns] == expected  # same calls, other style
    assert tool.turns[0].tool.arguments == xml.turns[0].tool.arguments == {"filename": "reproduce.py"}
    # Fenced commands name the shell program, as the mini-swe-agent loader does for the same run.
    mini = load_trajectories(TRACES / MINI, seed=3).programs[0]
    assert [t.tool.name if t.tool else None for t in ticks.turns] == \
        [t.tool.name if t.tool else None for t in mini.turns]
    assert [t.output_tokens for t in ticks.turns] == [t.output_tokens for t in mini.turns]
    assert trace.meta["swe_smith"]["marshmallow.xml"] == {
        "instance_id": "marshmallow-code__marshmallow.9716fc62.pr_1867", "model": "gpt-4o", "resolved": False}
    assert all(p.source.startswith("swe-smith:") for p in trace.programs)


def test_durations_are_drawn_flagged_and_seeded(rows_file: Path):
    a, b, c = (load_trajectories(rows_file, seed=s) for s in (1, 1, 2))
    calls = [t.tool for p in a.programs for t in p.turns if t.tool]
    assert calls and all(c_.duration_drawn and c_.duration_s > 0 for c_ in calls)  # rows hold no timing
    durations = [[t.tool.duration_s for p in x.programs for t in p.turns if t.tool] for x in (a, b, c)]
    assert durations[0] == durations[1] != durations[2]


def test_convert_and_replay_from_the_cli(rows_file: Path, tmp_path: Path, capsys):
    out = tmp_path / "trace.jsonl"
    assert cli.main(["trace", "convert", str(rows_file), "--out", str(out)]) == 0
    trace = Trace.load(out)
    assert len(trace.programs) == 3 and all(t.tool.duration_drawn for p in trace.programs for t in p.turns if t.tool)
    res = tmp_path / "res"
    assert cli.main(["replay", str(out), "--mode", "sim", "--policies", "baseline,tether", "--kv-blocks", "4096",
                     "--out", str(res)]) == 0
    results = json.loads((res / "results.json").read_text())
    assert results["meta"]["trace"]["formats"] == ["swe-smith"]
    turns = sum(len(p.turns) for p in trace.programs)
    for policy in ("baseline", "tether"):  # every program and turn of the rows replayed
        assert results["policies"][policy]["programs"] == 3 and results["policies"][policy]["turns"] == turns


def test_bad_rows_name_the_line_and_field(tmp_path: Path):
    f = tmp_path / "bad.jsonl"
    rows = _rows()
    rows[1]["messages"] = rows[1]["messages"][:-5]  # a truncated JSON string
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TraceError, match=r"bad.jsonl:2: messages: not a JSON-encoded message list"):
        load_trajectories(f)
    rows = _rows()
    rows[0]["messages"] = json.dumps({"role": "user"})
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TraceError, match=r"bad.jsonl:1: messages: expected a list of messages"):
        load_trajectories(f)


def test_plain_chat_lines_are_not_taken_for_swe_smith(tmp_path: Path):
    f = tmp_path / "chats.jsonl"
    f.write_text(json.dumps({"instance_id": "x", "messages": _tool_style(json.loads((TRACES / FC).read_text())
                                                                         ["history"])}) + "\n")
    assert detect_format(f) == "openai-messages"  # a message list without traj_id: the generic chat format

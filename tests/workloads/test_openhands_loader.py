"""OpenHands event logs (tests/workloads/data/openhands, public samples from the OpenHands repository): each
loads with the turns, tools and observed durations read by hand from the file, unanswered actions get drawn
(flagged) durations, parallel calls of one response make one turn, bad logs name the event, and a sample
replays in sim mode."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from tether import cli
from tether.workloads.loaders import detect_format, load_trajectories
from tether.workloads.trace import TraceError

DATA = Path(__file__).resolve().parent / "data" / "openhands"
SAMPLES = ["basic.json", "basic_interactions.json", "basic_gui_mode.json", "wrong_initial_state.json",
           "multi_swe_bench_ponyc-4593.jsonl"]
RENAME = "wrong_initial_state.json"


def _tools(program) -> list[tuple[str, str] | None]:
    return [(t.tool.name, t.tool.tool_class) if t.tool else None for t in program.turns]


def _durations(program) -> list[float | None]:
    return [t.tool.duration_s if t.tool else None for t in program.turns]


def _write(tmp_path: Path, name: str, events) -> Path:
    f = tmp_path / name
    f.write_text(json.dumps(events))
    return f


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_loads_with_observed_durations(name: str):
    assert detect_format(DATA / name) == "openhands"
    (p,) = load_trajectories(DATA / name).programs
    assert p.arrival_s == 0 and p.source == f"openhands:{name}"
    assert p.turns[-1].tool is None  # finish, or a message handing back to the user
    # Every tool action in these files is answered by an observation: all durations observed.
    assert all(not t.tool.duration_drawn for t in p.turns if t.tool)


def test_rename_run_by_hand():
    """wrong_initial_state.json: read /workspace, run `mv`, read again, finish; four LLM calls."""
    trace = load_trajectories(DATA / RENAME)
    (p,) = trace.programs
    assert p.program_id == "wrong_initial_state"
    assert _tools(p) == [("read", "view"), ("mv", "edit"), ("read", "view"), None]
    # observation timestamp - action timestamp (events 2-1, 4-3, 6-5 of the file)
    assert _durations(p) == [0.035473, 0.648763, 0.020823, None]
    assert p.turns[1].tool.arguments == {"command": "mv /workspace/game_2048.py /workspace/2048.py"}
    assert p.turns[0].tool.arguments == {"command": "view", "path": "/workspace"}  # what the model called
    # counts from usage: completion_tokens; appended = prompt - previous prompt - previous completion
    assert [t.output_tokens for t in p.turns] == [95, 111, 85, 67]
    assert [t.append_tokens for t in p.turns] == [3475, 3616 - 3475 - 95, 3804 - 3616 - 111, 3933 - 3804 - 85]
    assert p.turns[0].append_messages == [{"role": "user", "content": "Please rename game_2048.py to 2048.py"}]
    assert [m["role"] for t in p.turns[1:] for m in t.append_messages] == ["tool"] * 3  # each answer, once
    assert p.turns[2].append_messages == [{"role": "tool", "content": ""}]  # mv prints nothing
    assert p.turns[1].output_text.startswith("Great, I found the file.") and \
        '"name": "execute_bash"' in p.turns[1].output_text
    assert trace.meta["openhands"] == {"wrong_initial_state": {"instance_id": None,
                                                               "model": "claude-3-5-sonnet-20241022"}}


def test_basic_edit_then_finish():
    (p,) = load_trajectories(DATA / "basic.json").programs
    assert _tools(p) == [("edit", "edit"), None]
    assert _durations(p) == [0.036897, None]  # 22:45:13.764487 -> 22:45:13.801384
    assert p.turns[0].tool.arguments["command"] == "create" and \
        p.turns[0].tool.arguments["path"] == "/workspace/game_2048.py"
    assert [t.output_tokens for t in p.turns] == [1135, 177] and p.turns[1].append_tokens == 4646 - 3486 - 1135


def test_gui_mode_skips_state_changes_and_times_a_long_run():
    (p,) = load_trajectories(DATA / "basic_gui_mode.json").programs
    assert _tools(p) == [("mkdir", "edit"), ("edit", "edit"), ("edit", "edit"), ("python3", "shell"), None]
    # `python3 -m http.server 8000` blocks until OpenHands gives up on it: 20:29:59.282034 -> 20:30:29.862264
    assert _durations(p) == [0.658357, 0.042276, 0.034103, 30.58023, None]
    assert p.turns[0].append_messages[0]["content"].startswith("I want to create a VueJS app")
    assert [len(t.append_messages) for t in p.turns] == [1, 1, 1, 1, 1]  # agent_state_changed/null carry nothing
    assert p.turns[-1].output_text.startswith("I've created a complete Vue.js todo")  # waits for the user


def test_chat_turns_end_without_tools():
    (p,) = load_trajectories(DATA / "basic_interactions.json").programs
    assert _tools(p) == [None, None, None]
    assert [t.append_messages[0]["content"] for t in p.turns] == \
        ["what's 1+1?", "No, I mean by Goldbach's conjecture!", "Finish please"]
    assert p.turns[0].output_text == "1 + 1 equals 2."
    assert p.turns[0].output_tokens == 4  # no usage recorded for messages: estimated from the text (15 chars)
    assert p.turns[2].output_tokens == 10  # finish has a model_response: usage.completion_tokens


def test_evaluation_row():
    trace = load_trajectories(DATA / "multi_swe_bench_ponyc-4593.jsonl")
    (p,) = trace.programs
    assert p.program_id == "ponylang__ponyc-4593" and len(p.turns) == 33
    assert [m["role"] for m in p.turns[0].append_messages] == ["system", "user", "user"]  # prompt, task, recall
    assert p.turns[0].append_tokens == 5549  # the first call's prompt_tokens
    tools = [t for t in _tools(p) if t]
    assert len(tools) == 32 and {c: sum(1 for _, k in tools if k == c) for c in ("view", "search", "edit")} == \
        {"view": 14, "search": 7, "edit": 11}
    assert p.turns[0].tool.name == "ls" and p.turns[0].tool.duration_s == 0.619144  # 16:45:43.619026 -> 44.238170
    # A call the model botched left an error observation with no cause (event 28): the next prompt reads it.
    assert p.turns[12].append_messages[1] == {
        "role": "user", "content": "Parameter 'command' is expected to be one of "
                                   "['view', 'create', 'str_replace', 'insert', 'undo_edit']."}
    assert trace.meta["openhands"]["ponylang__ponyc-4593"]["model"] == "meta-llama/llama-4-maverick"


def test_unanswered_actions_get_drawn_flagged_durations(tmp_path: Path):
    events = json.loads((DATA / RENAME).read_text())
    assert events[4]["cause"] == 5 and events[3]["action"] == "run"
    cut = _write(tmp_path, "cut.json", events[:4] + events[5:])  # the mv's answer lost (a runtime crash)
    a, b, c = (load_trajectories(cut, seed=s).programs[0] for s in (1, 1, 2))
    assert _tools(a) == [("read", "view"), ("mv", "edit"), ("read", "view"), None]
    assert [t.tool.duration_drawn if t.tool else None for t in a.turns] == [False, True, False, None]
    assert a.turns[0].tool.duration_s == 0.035473 and a.turns[1].tool.duration_s > 0
    assert a.turns[1].tool.duration_s == b.turns[1].tool.duration_s != c.turns[1].tool.duration_s  # seeded
    # Untimed events: every duration drawn.
    untimed = _write(tmp_path, "untimed.json", [{k: v for k, v in e.items() if k != "timestamp"} for e in events])
    (p,) = load_trajectories(untimed).programs
    assert all(t.tool.duration_drawn for t in p.turns if t.tool) and len(p.turns) == 4


def test_parallel_calls_of_one_response_are_one_turn(tmp_path: Path):
    events = json.loads((DATA / RENAME).read_text())
    # Make the final read (event 5) a second call of the mv's response (event 3), as a parallel call would be.
    events[5]["tool_call_metadata"]["model_response"] = copy.deepcopy(events[3]["tool_call_metadata"]
                                                                      ["model_response"])
    (p,) = load_trajectories(_write(tmp_path, "parallel.json", events)).programs
    assert len(p.turns) == 3
    tool = p.turns[1].tool
    # OpenHands runs them one after another: from the mv (23:16:56.951967) to the read's answer (23:16:59.824084).
    assert tool.duration_s == 2.872117 and not tool.duration_drawn
    assert tool.name == "mv"  # the longer call names the record
    assert [(c["name"], c["duration_s"]) for c in tool.arguments["calls"]] == [("mv", 0.648763), ("read", 0.020823)]
    assert [m["role"] for m in p.turns[2].append_messages] == ["tool", "tool"]  # both answers


@pytest.mark.parametrize("edit, message", [
    (lambda ev: ev[3].pop("id"), r"bad\.json: event 3: id: missing \(each OpenHands event needs an integer id"),
    (lambda ev: ev[3].pop("source"), r"bad\.json: event 3: source: missing"),
    (lambda ev: ev.__setitem__(2, "oops"), r"bad\.json: event 2: expected an object \(an OpenHands event\), got str"),
    (lambda ev: ev[4].__setitem__("action", "run"),
     r"bad\.json: event 4: needs exactly one of 'action' or 'observation', got both"),
    (lambda ev: ev[4].__setitem__("cause", "5"), r"bad\.json: event 4: cause: expected an integer event id"),
    (lambda ev: ev[4].__setitem__("timestamp", "yesterday"), r"bad\.json: event 4: timestamp: not an ISO time"),
    (lambda ev: ev[4].__setitem__("timestamp", "2025-01-27T23:16:50"),
     r"bad\.json: event 4: timestamp .* is before that of the action it answers \(event 3, .*negative duration"),
    (lambda ev: [e.__setitem__("source", "user") for e in ev], r"bad\.json: no agent action"),
])
def test_bad_logs_name_the_event_and_the_fix(tmp_path: Path, edit, message):
    events = json.loads((DATA / RENAME).read_text())
    edit(events)
    with pytest.raises(TraceError, match=message):
        load_trajectories(_write(tmp_path, "bad.json", events))


def test_bad_rows_name_the_line(tmp_path: Path):
    row = (DATA / "multi_swe_bench_ponyc-4593.jsonl").read_text().strip()
    f = tmp_path / "output.jsonl"
    f.write_text(row + "\n" + json.dumps({"instance_id": "x", "history": "lost"}) + "\n")
    with pytest.raises(TraceError, match=r"output\.jsonl:2: history: expected a list of OpenHands events .*got a str"):
        load_trajectories(f)
    f.write_text(row + "\n" + json.dumps({"instance_id": "x"}) + "\n")
    with pytest.raises(TraceError, match=r"output\.jsonl:2: history: missing; expected an OpenHands output row"):
        load_trajectories(f)
    bad = json.loads(row)
    del bad["history"][40]["id"]
    f.write_text(json.dumps(bad) + "\n")
    with pytest.raises(TraceError, match=r"output\.jsonl:1: event 40: id: missing"):
        load_trajectories(f)


def test_other_formats_are_not_taken_for_openhands():
    traces = DATA.parents[2] / "data" / "traces"
    assert detect_format(traces / "swe-agent_marshmallow-1867_function-calling.traj") == "swe-agent"
    assert detect_format(traces / "mini-swe-agent_github_issue.traj.json") == "mini-swe-agent"


def test_trajectory_api_shape(tmp_path: Path):
    events = json.loads((DATA / RENAME).read_text())
    f = _write(tmp_path, "trajectory-abc.json", {"trajectory": events})  # GET /trajectory's answer
    assert detect_format(f) == "openhands"
    assert _durations(load_trajectories(f).programs[0]) == [0.035473, 0.648763, 0.020823, None]


def test_replays_in_sim_mode(tmp_path: Path):
    res = tmp_path / "res"
    assert cli.main(["replay", str(DATA / RENAME), "--mode", "sim", "--policies", "baseline,tether",
                     "--kv-blocks", "4096", "--out", str(res)]) == 0
    results = json.loads((res / "results.json").read_text())
    assert results["meta"]["trace"]["formats"] == ["openhands"]
    for policy in ("baseline", "tether"):
        assert results["policies"][policy]["programs"] == 1 and results["policies"][policy]["turns"] == 4
    # The replay waits out the observed tool durations after each turn.
    for run in json.loads(gzip.decompress((res / "runs.json.gz").read_bytes()))["runs"]:
        assert run["turns"]["tool_name"] == ["read", "mv", "read", None]
        assert run["turns"]["tool_duration_s"] == [0.035473, 0.648763, 0.020823, 0.0]


def test_folder_of_logs_loads_every_run():
    trace = load_trajectories(DATA)  # README.md and LICENSE.openhands are not trajectory files
    assert trace.meta["formats"] == ["openhands"]
    assert sorted(p.program_id for p in trace.programs) == ["basic", "basic_gui_mode", "basic_interactions",
                                                             "ponylang__ponyc-4593", "wrong_initial_state"]

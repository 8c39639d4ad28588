"""OpenHands event logs -> programs.

An OpenHands run is a stream of events, each serialized as in ``openhands/events/serialization``.
Files: a JSON list of events (what ``save_trajectory_path`` writes), an object holding them in
``history`` (an evaluation ``output.jsonl`` row, with ``instance_id``) or ``trajectory`` (the
``/trajectory`` API), JSON lines of such rows, or a JSON list of rows::

    {"id": 5, "timestamp": "2025-01-27T23:16:56.951967", "source": "agent", "action": "run",
     "args": {"command": "mv game_2048.py 2048.py", "thought": ""},
     "tool_call_metadata": {"tool_call_id": "toolu_01", "model_response": {"id": "chatcmpl-3e5a",
         "choices": [{"message": {"content": "...", "tool_calls": [...]}}], "usage": {...}}}}
    {"id": 6, "timestamp": "2025-01-27T23:16:57.600730", "source": "agent", "observation": "run",
     "cause": 5, "content": "", "extras": {"exit_code": 0}}

Turns:

- one turn per LLM call: an agent action (bookkeeping such as ``system`` or ``recall`` is not
  one); consecutive agent actions with the same ``model_response.id`` are one call that made
  parallel tool calls;
- appended = the system prompt, user messages and observations since the previous call (an
  observation answering an agent's call as a ``tool`` message, others as ``user``); state
  changes and null observations carry nothing the model reads;
- output = the model's message and tool calls from ``model_response`` (else the action's
  message or thought); counts from ``usage`` where recorded (as for mini-swe-agent), else estimated;
- tool = the action: ``run`` is named and classed by its command (``pytest`` -> test), read ->
  view, edit -> edit, browse -> search, others -> other. ``message``, ``finish`` and ``reject``
  call no tool; the last turn's call ends the run. Parallel calls: the longest names the record,
  all are listed in ``arguments["calls"]``;
- duration = the answering observation's ``timestamp`` (its ``cause`` is the action's ``id``)
  minus the action's (parallel calls: first action to last answer), ``duration_drawn=False``;
  an action nothing answers, or untimed events, get a drawn duration, flagged ``duration_drawn``.

Program id: the row's ``instance_id``, else the file name; arrival 0.

    trace = load_trajectories("tests/workloads/data/openhands/wrong_initial_state.json")
    trace.programs[0].turns[1].tool.name, trace.programs[0].turns[1].tool.duration_s   # ('mv', 0.648763)
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..durations import classify_command, classify_tool, command_program, program_rng
from ..tokenize import estimate_tokens, message_text, render_messages
from ..trace import Program, ToolCallRecord, Trace, TraceError, Turn, iter_json_lines
from .formats import TRACE_FORMATS, FileContent, TraceFormat
from .openai_messages import ToolInfo, _append_from_usage, build_program, file_stem, make_turn, parse_arguments, \
    render_output, tool_record

LOG_KEYS = ("history", "trajectory")  # where an object keeps its events: output.jsonl rows, the /trajectory API
# Agent actions that are not an LLM call: the system prompt, memory recall, condenser and control events.
NOT_LLM = frozenset({"system", "recall", "change_agent_state", "condensation", "condensation_request", "null",
                     "pause", "resume", "stop"})
NO_TOOL = frozenset({"message", "finish", "reject"})  # they hand back to the user or end the run
SKIP_OBSERVATIONS = frozenset({"agent_state_changed", "null"})  # no text the model reads
KIND_CLASSES = {"read": "view", "edit": "edit", "write": "edit", "browse": "search", "browse_interactive": "search",
                "search": "search", "run_ipython": "shell"}  # run_ipython executes code, like a shell command
FIX = "each OpenHands event needs an integer id, a source and one of action/observation"


def load_openhands(path: Path, logs: list[tuple[str, dict | None, Any]], seed: int = 0) -> Trace:
    """Programs from OpenHands logs; ``logs`` are (where, row or None, events), ``where`` naming file and line."""
    programs, info = [], {}
    for i, (where, row, events) in enumerate(logs):
        name = row.get("instance_id") if row else None
        pid = str(name) if name is not None else file_stem(path) if len(logs) == 1 else f"{file_stem(path)}/{i}"
        program, model = _program(events, pid, f"openhands:{path.name}", program_rng(seed, pid), where)
        programs.append(program)
        info[pid] = {"instance_id": name, "model": model}
    return Trace(programs=programs, meta={"openhands": info})


def _program(events: Any, pid: str, source: str, rng: np.random.Generator, where: str) -> tuple[Program, str | None]:
    """One program from a run's events, and the model its first recorded response names."""
    if not isinstance(events, list):
        raise TraceError(f"{where}: expected a list of OpenHands events, got {type(events).__name__}")
    for i, e in enumerate(events):
        _check_event(e, f"{where}: event {i}")
    llm_ids = {e["id"] for e in events if _is_llm(e)}
    calls: list[list[int]] = []  # event indices of each LLM call's actions
    appended: list[list[dict]] = []
    pending: list[dict] = []
    for i, e in enumerate(events):
        if _is_llm(e):
            rid = _response_id(e)
            if calls and rid is not None and rid == _response_id(events[calls[-1][-1]]):
                calls[-1].append(i)  # a parallel call of the same response
            else:
                calls.append([i])
                appended.append(pending)
                pending = []
        else:
            msg = _prompt_message(e, llm_ids)
            if msg is not None:
                pending.append(msg)
    if not calls:
        raise TraceError(f"{where}: no agent action, so no LLM call to replay (agent actions have source 'agent')")
    answers: dict[int, int] = {}  # action id -> index of the first observation naming it as cause
    for i, e in enumerate(events):
        if "observation" in e and isinstance(e.get("cause"), int):
            answers.setdefault(e["cause"], i)

    turns: list[Turn] = []
    prev_prompt = prev_completion = None
    model = None
    for k, group in enumerate(calls):
        actions = [events[i] for i in group]
        at = f"{where}: event {group[0]}"
        response = _model_response(actions[0])
        model = model or (response or {}).get("model")
        output_text = _output_text(actions, response)
        prompt, completion = _usage(response)
        append_tokens = _append_from_usage(prompt, prev_prompt, prev_completion, first=k == 0)
        if append_tokens is None:
            append_tokens = estimate_tokens(render_messages(appended[k]))
        output_tokens = completion if completion else estimate_tokens(output_text, 1)
        prev_prompt, prev_completion = prompt, completion
        tool = _tool(events, group, answers, rng, at, where) if k + 1 < len(calls) else None
        turns.append(make_turn(appended[k], append_tokens, output_text, output_tokens, tool, at))
    return build_program(pid, source, turns, where), model


def _tool(events: list[dict], group: list[int], answers: dict[int, int], rng: np.random.Generator, at: str,
          where: str) -> ToolCallRecord | None:
    """The record of a call's tools, timed by their answers; None when the call ran no tool."""
    used = [i for i in group if events[i]["action"] not in NO_TOOL]
    if not used:
        return None
    infos = [_tool_info(events[i]) for i in used]
    spans = [_span(events, i, answers, where) for i in used]
    if len(used) == 1:
        (name, cls, args), (duration, _) = infos[0], spans[0]
        return tool_record(name, cls, args, duration, rng, at)
    # Parallel calls run one after another: the model waits from the first call to the last answer.
    timed = all(d is not None for d, _ in spans)
    duration = (max(end for _, end in spans) - _time(events[used[0]], where)).total_seconds() if timed else None
    lead = max(range(len(used)), key=lambda j: spans[j][0]) if timed else 0
    calls = [{"name": n, "arguments": a, "duration_s": d} for (n, _, a), (d, _) in zip(infos, spans)]
    return tool_record(infos[lead][0], infos[lead][1], {"calls": calls}, duration, rng, at)


def _span(events: list[dict], i: int, answers: dict[int, int], where: str) -> tuple[float | None, datetime | None]:
    """(seconds from action ``i`` to its answer, the answer's time); (None, None) if unanswered or untimed."""
    j = answers.get(events[i]["id"])
    start = _time(events[i], f"{where}: event {i}")
    end = _time(events[j], f"{where}: event {j}") if j is not None else None
    if start is None or end is None:
        return None, None
    if end < start:
        raise TraceError(f"{where}: event {j}: timestamp {events[j]['timestamp']} is before that of the action it "
                         f"answers (event {i}, {events[i]['timestamp']}): negative duration; fix either timestamp")
    return (end - start).total_seconds(), end


def _tool_info(e: dict) -> ToolInfo:
    kind, args = e["action"], e.get("args") or {}
    if kind == "run":  # a shell command: named and classed by its program, as the other loaders do
        command = str(args.get("command") or "")
        return command_program(command) or "bash", classify_command(command), {"command": command}
    arguments = _call_arguments(e)
    if kind == "call_tool_mcp":
        name = str(args.get("name") or "mcp")
        return name, classify_tool(name, arguments=arguments), arguments
    return kind, KIND_CLASSES.get(kind, "other"), arguments


def _call_arguments(e: dict) -> Any:
    """The arguments the model wrote for this action's call, else the action's own (less its thought)."""
    tid = (e.get("tool_call_metadata") or {}).get("tool_call_id")
    for call in (_response_message(_model_response(e)) or {}).get("tool_calls") or []:
        if tid is not None and isinstance(call, dict) and call.get("id") == tid and \
                isinstance(call.get("function"), dict):
            return parse_arguments(call["function"].get("arguments"))
    return {k: v for k, v in (e.get("args") or {}).items() if k != "thought"}


def _output_text(actions: list[dict], response: dict | None) -> str:
    msg = _response_message(response)
    if msg is not None:
        return render_output(msg.get("content"), msg.get("tool_calls"))
    # No recorded response (plain agent messages, older logs): the actions are what the model wrote.
    args = actions[0].get("args") or {}
    text = args.get("content") if actions[0]["action"] == "message" else args.get("thought")
    calls = [{"name": (a.get("tool_call_metadata") or {}).get("function_name") or a["action"],
              "arguments": {k: v for k, v in (a.get("args") or {}).items() if k != "thought"}}
             for a in actions if a["action"] != "message"]
    return render_output(text if isinstance(text, str) else None, calls)


def _prompt_message(e: dict, llm_ids: set[int]) -> dict[str, str] | None:
    """What an event adds to the next prompt, as a message; None for events the model doesn't read."""
    args = e.get("args") or {}
    if "action" in e:
        if e["action"] == "system":
            return {"role": "system", "content": message_text(args.get("content", e.get("message")))}
        if e.get("source") == "user" and e["action"] == "message":
            return {"role": "user", "content": message_text(args.get("content", e.get("message")))}
        if e.get("source") == "user" and e["action"] == "run":  # a command the user typed in the terminal
            return {"role": "user", "content": message_text(args.get("command"))}
        return None
    if e["observation"] in SKIP_OBSERVATIONS:
        return None
    role = "tool" if e.get("cause") in llm_ids else "user"
    return {"role": role, "content": message_text(e.get("content", e.get("message")))}


def _is_llm(e: dict) -> bool:
    return "action" in e and e.get("source") == "agent" and e["action"] not in NOT_LLM


def _model_response(e: dict) -> dict | None:
    r = (e.get("tool_call_metadata") or {}).get("model_response")
    return r if isinstance(r, dict) else None


def _response_id(e: dict) -> str | None:
    rid = (_model_response(e) or {}).get("id")
    return rid if isinstance(rid, str) and rid else None


def _response_message(response: dict | None) -> dict | None:
    choices = (response or {}).get("choices")
    msg = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) \
        else None
    return msg if isinstance(msg, dict) else None


def _usage(response: dict | None) -> tuple[int | None, int | None]:
    """(prompt_tokens, completion_tokens) of a recorded response; None where unknown."""
    u = (response or {}).get("usage")
    u = u if isinstance(u, dict) else {}
    p, c = _count(u.get("prompt_tokens")), _count(u.get("completion_tokens"))
    return p, (c if c else None)  # a zero completion still cost one token: estimate it instead


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _time(e: dict, where: str) -> datetime | None:
    """An event's time. Kept as a datetime so that differences are exact to the microsecond OpenHands
    writes; naive ISO times (local time without an offset) read as UTC, so a daylight-saving change
    doesn't shift them."""
    v = e.get("timestamp")
    if v is None:
        return None
    try:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return datetime.fromtimestamp(v, tz=timezone.utc)
        t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise TraceError(f"{where}: timestamp: not an ISO time ({v!r}); write e.g. "
                         f"'2025-01-27T22:45:13.764487'"[:300]) from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _check_event(e: Any, where: str) -> None:
    if not isinstance(e, dict):
        raise TraceError(f"{where}: expected an object (an OpenHands event), got {type(e).__name__}")
    kinds = [k for k in ("action", "observation") if k in e]
    if len(kinds) != 1:
        got = "both" if kinds else "neither"
        raise TraceError(f"{where}: needs exactly one of 'action' or 'observation', got {got} ({FIX})")
    if not isinstance(e[kinds[0]], str):
        raise TraceError(f"{where}: {kinds[0]}: expected its kind as a string (e.g. 'run'), got {e[kinds[0]]!r}"[:300])
    if e.get("id") is None:
        raise TraceError(f"{where}: id: missing ({FIX}; an observation names the action it answers by id in cause)")
    for key in ("id", "cause"):
        v = e.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise TraceError(f"{where}: {key}: expected an integer event id, got {v!r}"[:300])
    if "action" in e and not isinstance(e.get("source"), str):
        raise TraceError(f"{where}: source: missing ({FIX}; 'agent' marks the LLM's actions, 'user' the user's)")
    for key in ("args", "tool_call_metadata", "extras"):
        if e.get(key) is not None and not isinstance(e[key], dict):
            raise TraceError(f"{where}: {key}: expected an object, got {type(e[key]).__name__}")
    _time(e, where)


def is_event(e: Any) -> bool:
    """Whether a JSON value looks like an OpenHands event (not a chat message, not a SWE-agent step)."""
    return isinstance(e, dict) and "role" not in e and ("id" in e or "source" in e) and \
        isinstance(e.get("action"), str) != isinstance(e.get("observation"), str)


def _log_key(obj: Any) -> str | None:
    return next((k for k in LOG_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), list)
                 and any(is_event(e) for e in obj[k])), None)


def _logs(path: Path, content: FileContent) -> list[tuple[str, dict | None, Any]]:
    """(where, row or None, events) for each run in the file."""
    if path.name.lower().endswith(".jsonl"):
        rows = [(f"{path}:{n}", row) for n, row in iter_json_lines(path)]
    else:
        data = content.json
        if isinstance(data, list) and any(is_event(e) for e in data):
            return [(str(path), None, data)]
        rows = [(f"{path}: [{i}]", r) for i, r in enumerate(data)] if isinstance(data, list) else [(str(path), data)]
    out = []
    for where, row in rows:
        key = _log_key(row)
        if key is None and isinstance(row, dict) and "history" in row:
            got = type(row["history"]).__name__
            raise TraceError(f"{where}: history: expected a list of OpenHands events (objects with id, source and "
                             f"action or observation), got {'none' if got == 'list' else 'a ' + got}")
        if key is None:
            raise TraceError(f"{where}: history: missing; expected an OpenHands output row with a 'history' "
                             f"list of events")
        out.append((where, row, row[key]))
    if not out:
        raise TraceError(f"{path}: no OpenHands runs")
    return out


def _detect(path: Path, content: FileContent) -> bool:
    if path.name.lower().endswith(".jsonl"):
        return _log_key(content.first_row) is not None
    data = content.json
    if isinstance(data, list):
        return any(is_event(e) for e in data) or bool(data) and _log_key(data[0]) is not None
    return _log_key(data) is not None


# Registered before SWE-agent: both read objects with a ``trajectory`` list; ``is_event`` tells
# OpenHands events (one of action/observation) from SWE-agent steps (both) and chat messages (role).
TRACE_FORMATS.register("openhands", TraceFormat(
    suffixes=(".json", ".jsonl"), description="an OpenHands event log (.json) or output rows (.jsonl)",
    detect=_detect, load=lambda path, content, seed: load_openhands(path, _logs(path, content), seed)))

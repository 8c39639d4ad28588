"""SWE-agent ``.traj`` files -> one program each.

A ``.traj`` is JSON with ``trajectory`` (one step per LLM call: ``response``,
``action``, ``observation``, ``execution_time``, maybe ``thought`` and ``query``)
and ``history`` (the chat messages the agent kept). One turn per step:

- output = the step's ``response``, plus the tool calls of the matching history
  message rendered as ``<tool_call>`` blocks (function-calling runs keep the call
  out of ``response``);
- appended = the messages the prompt gained since the previous LLM call. Taken
  from ``history`` when its assistant messages line up one-to-one with the steps
  (turn 0: everything before the first assistant message - system prompt,
  demonstrations, task; turn k: the messages between assistant k-1 and k, i.e.
  the previous tool's observation); else from each step's ``query`` (the
  messages after its last assistant message); else the previous step's
  ``observation`` as one user message (turn 0 then has nothing);
- tool = the history message's function call (``str_replace_editor``,
  ``submit``, or for ``bash`` the command's program), else the action's first
  word; duration = ``execution_time``. The last step's action (usually
  ``submit``) ends the run: the last turn has no tool.

    path = Path("marshmallow-1867.traj")
    trace = load_swe_agent(path, read_json(path), seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..durations import classify_command, command_program, program_rng
from ..tokenize import estimate_tokens, message_text, render_messages
from ..trace import Trace, TraceError
from .formats import TRACE_FORMATS, TraceFormat
from .openai_messages import PROMPT_ROLES, build_program, check_tool_calls, file_stem, make_turn, render_output, \
    tool_from_call, tool_record


def load_swe_agent(path: Path, data: Any, seed: int = 0) -> Trace:
    """One program from a SWE-agent trajectory (``data``: the file's parsed JSON); errors name the file
    and the field."""
    steps = data.get("trajectory") if isinstance(data, dict) else None
    if not isinstance(steps, list) or not steps:
        raise TraceError(f"{path}: trajectory: missing or empty")
    for i, s in enumerate(steps):
        if not isinstance(s, dict):
            raise TraceError(f"{path}: trajectory.{i}: expected an object")
    history = data.get("history") if isinstance(data.get("history"), list) else []
    for j, m in enumerate(history):
        if isinstance(m, dict) and m.get("role") == "assistant":
            check_tool_calls(m.get("tool_calls"), f"{path}: history.{j}.tool_calls")
    assistants = [m for m in history if isinstance(m, dict) and m.get("role") == "assistant"]
    aligned = _aligned(assistants, steps)
    appended = (_from_history(history, steps) if aligned else None) or _from_queries(steps) or \
        _from_observations(steps)

    pid = file_stem(path)
    rng = program_rng(seed, pid)
    turns = []
    for i, step in enumerate(steps):
        where = f"{path}: trajectory.{i}"
        response = step.get("response", step.get("thought"))
        if not isinstance(response, str):
            raise TraceError(f"{where}.response: missing")
        calls = assistants[i].get("tool_calls") if aligned and i < len(assistants) else None
        calls = calls if isinstance(calls, list) else None
        output_text = render_output(response, calls)
        tool = None
        if i + 1 < len(steps):
            name, tool_class, arguments = _tool(step, calls, where)
            tool = tool_record(name, tool_class, arguments, _execution_time(step, where), rng, where)
        msgs = appended[i]
        turns.append(make_turn(msgs, estimate_tokens(render_messages(msgs)), output_text,
                           estimate_tokens(output_text, 1), tool, where))
    return Trace(programs=[build_program(pid, f"swe-agent:{path.name}", turns, str(path))], meta={})


def is_swe_agent(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("trajectory"), list)


def _tool(step: dict[str, Any], calls: list | None, where: str) -> tuple[str, str, Any]:
    if calls and isinstance(calls[0], dict):
        return tool_from_call(calls[0])
    action = step.get("action")
    if not isinstance(action, str) or not action.strip():
        raise TraceError(f"{where}.action: missing (a step before the last must call a tool)")
    return command_program(action) or "action", classify_command(action), {"command": action}


def _execution_time(step: dict[str, Any], where: str) -> float | None:
    t = step.get("execution_time")
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TraceError(f"{where}.execution_time: expected seconds, got {t!r}")
    if t < 0:
        raise TraceError(f"{where}.execution_time: negative duration ({t})")
    return float(t)


def _prompt_message(m: dict[str, Any]) -> dict[str, str]:
    return {"role": m["role"], "content": message_text(m.get("content"))}


def _aligned(assistants: list[dict], steps: list[dict]) -> bool:
    # History may stop before the last step (the shared test-repo file lacks its submit);
    # where both record the action, they must agree, else history holds other calls
    # (requeries after format errors) and can't be used.
    if not assistants or len(assistants) > len(steps):
        return False
    return all(a.get("action") is None or s.get("action") is None or a["action"] == s["action"]
               for a, s in zip(assistants, steps))


def _from_history(history: list, steps: list[dict]) -> list[list[dict]]:
    out, block = [], []
    for m in history:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            continue
        if m["role"] == "assistant":
            out.append(block)
            block = []
        elif m["role"] in PROMPT_ROLES:
            block.append(_prompt_message(m))
    if len(out) < len(steps):  # the messages after the last recorded call feed the next step
        out.append(block)
    return out + _from_observations(steps)[len(out):]


def _from_queries(steps: list[dict]) -> list[list[dict]] | None:
    # Newer SWE-agent stores the exact messages of each LLM call in `query`.
    out = []
    for s in steps:
        q = s.get("query")
        if not isinstance(q, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in q):
            return None
        last = max((j for j, m in enumerate(q) if m["role"] == "assistant"), default=-1)
        out.append([_prompt_message(m) for m in q[last + 1:] if m["role"] in PROMPT_ROLES])
    return out


def _from_observations(steps: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = [[]]
    for s in steps[:-1]:
        out.append([{"role": "user", "content": message_text(s.get("observation"))}])
    return out


TRACE_FORMATS.register("swe-agent", TraceFormat(
    suffixes=(".traj", ".json"), description="a SWE-agent .traj",
    detect=lambda path, content: is_swe_agent(content.json),
    load=lambda path, content, seed: load_swe_agent(path, content.json, seed)))

"""OpenAI-style chat conversations (the SWE-smith / SWE-Gym form) -> programs.

A conversation is a list of messages ``{"role": "system"|"user"|"assistant"|"tool", ...}``
where assistant messages may carry ``tool_calls`` and ``tool`` messages answer
them. Files: a JSON list of messages, a JSON object with ``messages``, a JSON
list of such conversations, or JSON lines with one conversation per line (a
list or an object with ``messages``; ``instance_id``/``id`` names it).

Turns, for this and every chat-shaped format (mini-swe-agent builds on it):

- one turn per assistant message;
- appended = the non-assistant messages since the previous assistant message
  (turn 0: system + task; later turns: the tool output and any new user or
  system message), kept as ``{"role", "content"}``;
- output = the assistant's content, plus each tool call rendered as
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` (tether's format), since
  the model generated those tokens too;
- tool = the first tool call: its function name, or for a shell tool (``bash``
  with a ``command`` argument) the command's program; none on the last turn or
  when the message called nothing;
- duration = from timestamps when the dialect has them, else drawn (seeded).

    trace = load_openai_messages(Path("swe-gym.jsonl"), None, seed=0)    # .json: pass read_json(path)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from tether.runtime.chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

from ..durations import classify_command, classify_tool, command_program, draw_duration, program_rng, \
    shell_command_of
from ..tokenize import estimate_tokens, message_text, render_messages
from ..trace import Program, ToolCallRecord, Trace, TraceError, Turn, describe_validation_error, iter_json_lines, \
    parse_json
from .formats import TRACE_FORMATS, FileContent, TraceFormat

PROMPT_ROLES = ("system", "developer", "user", "tool", "function")  # what the next LLM call reads

# (name, tool_class, arguments) of the call a turn made
ToolInfo = tuple[str, str, Any]
ToolOf = Callable[[dict[str, Any]], ToolInfo | None]
# (messages, assistant index, index of the next assistant or len) -> seconds or None
TimingOf = Callable[[list[dict[str, Any]], int, int], float | None]
# message -> (prompt_tokens, completion_tokens), each None when unknown
UsageOf = Callable[[dict[str, Any]], tuple[int | None, int | None]]


def load_openai_messages(path: Path, data: Any, seed: int = 0) -> Trace:
    """Programs from an OpenAI-style conversation file; durations drawn.

    ``data``: the parsed JSON of a ``.json`` file; None for ``.jsonl``, which is read line by line.
    """
    convs = _conversations(path, data)
    many = len(convs) > 1
    programs = []
    for i, (where, name, messages) in enumerate(convs):
        pid = f"{file_stem(path)}/{name if name is not None else i}" if many else file_stem(path)
        programs.append(conversation_to_program(messages, program_id=pid, source=f"openai-messages:{path.name}",
                                                rng=program_rng(seed, pid), where=where))
    return Trace(programs=programs, meta={})


def conversation_to_program(messages: Any, *, program_id: str, source: str, rng: np.random.Generator,
                            where: str, tool_of: ToolOf | None = None, timing_of: TimingOf | None = None,
                            usage_of: UsageOf | None = None) -> Program:
    """One program from a message list (see the module docstring for how turns are cut).

    ``where`` prefixes errors (``"file"`` or ``"file:line"``); the hooks let a dialect say
    how it names tools, times them and reports usage.
    """
    tool_of = tool_of or openai_tool
    _check_messages(messages, where)
    asst = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not asst:
        raise TraceError(f"{where}: messages: no assistant message, so no LLM call to replay")
    turns, prev_prompt, prev_completion = [], None, None
    for k, a in enumerate(asst):
        start = asst[k - 1] + 1 if k else 0
        end = asst[k + 1] if k + 1 < len(asst) else len(messages)
        appended = [{"role": m["role"], "content": message_text(m.get("content"))}
                    for m in messages[start:a] if m["role"] in PROMPT_ROLES]
        msg = messages[a]
        output_text = render_output(msg.get("content"), msg.get("tool_calls"))
        prompt, completion = usage_of(msg) if usage_of else (None, None)
        append_tokens = _append_from_usage(prompt, prev_prompt, prev_completion, first=k == 0)
        if append_tokens is None:
            append_tokens = estimate_tokens(render_messages(appended))
        output_tokens = completion if completion and completion > 0 else estimate_tokens(output_text, 1)
        prev_prompt, prev_completion = prompt, completion
        tool = None
        info = tool_of(msg) if k + 1 < len(asst) else None  # the last turn's call ends the run
        if info is not None:
            try:
                duration = timing_of(messages, a, end) if timing_of else None
            except ValueError as e:
                raise TraceError(f"{where}: {e}") from None
            name, tool_class, arguments = info
            tool = tool_record(name, tool_class, arguments, duration, rng, f"{where}: messages.{a}")
        turns.append(make_turn(appended, append_tokens, output_text, output_tokens, tool, f"{where}: messages.{a}"))
    return build_program(program_id, source, turns, where)


def openai_tool(msg: dict[str, Any]) -> ToolInfo | None:
    """(name, class, arguments) of an assistant message's first tool call, or None."""
    calls = msg.get("tool_calls") or []
    return tool_from_call(calls[0]) if calls and isinstance(calls[0], dict) else None


def tool_from_call(call: dict[str, Any]) -> ToolInfo:
    """Name a function call: a shell tool by its command's program, others by function name."""
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    fname = str(fn.get("name") or "tool")
    args = parse_arguments(fn.get("arguments"))
    command = shell_command_of(fname, args)
    if command:
        return command_program(command) or fname, classify_command(command), args
    return fname, classify_tool(fname, arguments=args), args


def parse_arguments(args: Any) -> Any:
    """OpenAI sends arguments as a JSON string; decode it, keep it raw if it isn't JSON (or nests
    too deeply, see ``parse_json``)."""
    if isinstance(args, str):
        try:
            return parse_json(args) if args.strip() else {}
        except ValueError:
            return args
    return args


def render_output(content: Any, tool_calls: Any) -> str:
    """The assistant's text plus its tool calls as ``<tool_call>{json}</tool_call>`` blocks."""
    parts = [message_text(content)] if message_text(content) else []
    for call in tool_calls or []:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") if isinstance(call.get("function"), dict) else call
        body = {"name": fn.get("name"), "arguments": parse_arguments(fn.get("arguments")) or {}}
        parts.append(TOOL_CALL_OPEN + json.dumps(body, ensure_ascii=False) + TOOL_CALL_CLOSE)
    return "\n".join(parts)


def build_program(program_id: str, source: str, turns: list[Turn], where: str, arrival_s: float = 0.0) -> Program:
    """A validated Program; schema problems become a TraceError naming ``where`` and the field."""
    try:
        return Program(program_id=program_id, arrival_s=arrival_s, source=source, turns=turns)
    except ValidationError as e:
        raise TraceError(f"{where}: {describe_validation_error(e)}") from None


def file_stem(path: Path) -> str:
    """File name without the trajectory suffixes: ``a.traj.json`` -> ``a``."""
    name = path.name
    for suffix in (".traj.json", ".traj", ".jsonl", ".json", ".csv"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def tool_record(name: str, tool_class: str, arguments: Any, duration: float | None,
                rng: np.random.Generator | None, where: str) -> ToolCallRecord:
    """A ToolCallRecord; a missing ``duration`` is drawn for the class and flagged ``duration_drawn``."""
    drawn = duration is None
    if drawn:
        duration = draw_duration(tool_class, rng)
    try:
        return ToolCallRecord(name=name or "tool", tool_class=tool_class, arguments=arguments,
                              duration_s=duration, duration_drawn=drawn)
    except ValidationError as e:
        raise TraceError(f"{where}.tool: {describe_validation_error(e)}") from None


def make_turn(appended: list[dict] | None, append_tokens: int, output_text: str | None, output_tokens: int,
              tool: ToolCallRecord | None, where: str) -> Turn:
    """A validated Turn; schema problems become a TraceError naming ``where`` and the field."""
    try:
        return Turn(append_messages=appended, append_tokens=append_tokens, output_text=output_text,
                    output_tokens=output_tokens, tool=tool)
    except ValidationError as e:
        raise TraceError(f"{where}: {describe_validation_error(e)}") from None


def _append_from_usage(prompt: int | None, prev_prompt: int | None, prev_completion: int | None,
                       first: bool) -> int | None:
    # What the prompt gained = this prompt minus the previous prompt and answer. A negative
    # gain (reasoning tokens the provider dropped from history) means usage can't say.
    if prompt is None:
        return None
    if first:
        return prompt
    if prev_prompt is None:
        return None
    gain = prompt - prev_prompt - (prev_completion or 0)
    return gain if gain >= 0 else None


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list):
        raise TraceError(f"{where}: messages: expected a list of messages, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TraceError(f"{where}: messages.{i}: expected an object, got {type(m).__name__}")
        if not isinstance(m.get("role"), str):
            raise TraceError(f"{where}: messages.{i}.role: missing")
        check_content(m.get("content"), f"{where}: messages.{i}.content")
        check_tool_calls(m.get("tool_calls"), f"{where}: messages.{i}.tool_calls")


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def check_content(content: Any, where: str) -> None:
    """A message's content: a string, null, or a list of parts (strings or objects)."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise TraceError(f"{where}: expected a string, null or a list of parts, got {_type(content)}")
    for j, part in enumerate(content):
        if not isinstance(part, (str, dict)):
            raise TraceError(f"{where}.{j}: expected a string or an object, got {_type(part)}")


def check_tool_calls(calls: Any, where: str) -> None:
    """An assistant's ``tool_calls``: null or a list of ``{"function": {"name": str, "arguments": str|object}}``
    (or the flat ``{"name", "arguments"}``); TraceError naming ``where`` and the field otherwise."""
    if calls is None:
        return
    if not isinstance(calls, list):
        raise TraceError(f"{where}: expected a list of tool calls, got {_type(calls)} ({str(calls)[:40]!r})")
    for j, call in enumerate(calls):
        if not isinstance(call, dict):
            raise TraceError(f"{where}.{j}: expected an object, got {_type(call)}")
        fn, field = (call["function"], f"{where}.{j}.function") if "function" in call else (call, f"{where}.{j}")
        if not isinstance(fn, dict):
            raise TraceError(f"{field}: expected an object, got {_type(fn)}")
        name = fn.get("name")
        if name is not None and not isinstance(name, str):  # a missing name is read as "tool"
            raise TraceError(f"{field}.name: expected the tool's name, got {_type(name)}")
        args = fn.get("arguments")
        if args is not None and not isinstance(args, (str, dict, list)):
            raise TraceError(f"{field}.arguments: expected a JSON string or an object, got {_type(args)}")


def _conversations(path: Path, data: Any) -> list[tuple[str, str | None, Any]]:
    """(where, name, messages) for each conversation in the file."""
    if path.suffix == ".jsonl":
        rows = list(iter_json_lines(path))
        if rows and isinstance(rows[0][1], dict) and "role" in rows[0][1]:  # one message per line
            return [(str(path), None, [obj for _, obj in rows])]
        return [_conversation(f"{path}:{n}", obj, n) for n, obj in rows]
    if isinstance(data, list) and data and all(isinstance(c, (list, dict)) and not _is_message(c) for c in data):
        return [_conversation(f"{path}: [{i}]", c, i) for i, c in enumerate(data)]
    return [_conversation(str(path), data, None)]


def _conversation(where: str, obj: Any, index: int | None) -> tuple[str, str | None, Any]:
    if isinstance(obj, dict):
        if "messages" not in obj:
            raise TraceError(f"{where}: messages: missing")
        name = obj.get("instance_id", obj.get("id", index))
        return where, None if name is None else str(name), obj["messages"]
    return where, None if index is None else str(index), obj


def _is_message(obj: Any) -> bool:
    return isinstance(obj, dict) and "role" in obj


def has_messages(data: Any) -> bool:
    """Whether parsed JSON holds chat messages: ``{"messages": [...]}``, a message list (any element
    with a role; the loader names a malformed one), or a list of conversations."""
    if isinstance(data, dict):
        return isinstance(data.get("messages"), list)
    if not isinstance(data, list) or not data:
        return False
    return any(isinstance(x, dict) and "role" in x for x in data) or all(
        isinstance(x, list) or (isinstance(x, dict) and "messages" in x) for x in data)


def _detect(path: Path, content: FileContent) -> bool:
    if path.name.lower().endswith(".jsonl"):  # one conversation (or one message) per line
        return isinstance(content.first_row, (list, dict))
    return has_messages(content.json)


# The generic chat shape: tried after the formats that refine it (mini-swe-agent) or share its
# suffixes (tether and TraceLab JSON lines).
TRACE_FORMATS.register("openai-messages", TraceFormat(
    suffixes=(".traj", ".json", ".jsonl"), description="an OpenAI-style message list (.json/.jsonl)",
    detect=_detect, fallback=True,
    load=lambda path, content, seed: load_openai_messages(
        path, None if path.name.lower().endswith(".jsonl") else content.json, seed)))

"""SWE-smith trajectories (the ``SWE-bench/SWE-smith-trajectories`` dataset) -> programs.

Each row is one SWE-agent run on a SWE-smith task instance::

    {"messages": "[{\"role\": \"system\", ...}, ...]",   # a JSON-encoded string (older rows: a list)
     "instance_id": "pandas-dev__pandas.95280573.pr_53652", "traj_id": "...", "model": "claude-3-7-sonnet",
     "resolved": true, "patch": "..."}

Files: JSON lines with one row per line (what ``datasets``' ``to_json`` writes), or a ``.json``
list of rows. The messages are an OpenAI-style chat (turns are cut as in ``openai_messages``)
in one of the dataset's three tool styles:

- ``tool``: assistant ``tool_calls``, answered by ``tool`` messages;
- ``xml``: the assistant writes ``<function=bash><parameter=command>ls</parameter></function>``,
  the observation comes back as a user message;
- ``ticks``: the assistant writes one fenced ```` ``` ```` block with the command.

The rows hold no timing: every tool duration is drawn for its class (seeded by ``seed`` and the
trajectory id) and flagged ``duration_drawn``. The program id is ``traj_id`` (an instance has many
trajectories); ``instance_id``, ``model`` and ``resolved`` go to ``trace.meta["swe_smith"][program_id]``.

    trace = load_trajectories("swe-smith.jsonl", seed=0)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..durations import program_rng
from ..trace import Trace, TraceError, iter_json_lines, parse_json
from .formats import TRACE_FORMATS, FileContent, TraceFormat
from .mini_swe_agent import _shell
from .openai_messages import ToolInfo, conversation_to_program, file_stem, openai_tool, tool_from_call

ROW_KEYS = ("traj_id", "instance_id")  # with ``messages``: what tells a SWE-smith row from a plain chat
FUNCTION_RE = re.compile(r"<function=([\w.-]+)>(.*?)(?:</function>|$)", re.DOTALL)
PARAMETER_RE = re.compile(r"<parameter=([\w.-]+)>\n?(.*?)\n?</parameter>", re.DOTALL)
TICKS_RE = re.compile(r"```[\w-]*\s*\n(.*?)\n```", re.DOTALL)


def load_swe_smith(path: Path, rows: list[tuple[str, Any]], seed: int = 0) -> Trace:
    """Programs from SWE-smith rows; ``rows`` are (where, row) pairs, ``where`` naming file and line."""
    programs, info = [], {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise TraceError(f"{where}: expected a JSON object (a SWE-smith row), got {type(row).__name__}")
        messages = row_messages(row, where)
        pid = str(row.get("traj_id") or row.get("instance_id") or f"{file_stem(path)}/{len(programs)}")
        programs.append(conversation_to_program(messages, program_id=pid, source=f"swe-smith:{path.name}",
                                                rng=program_rng(seed, pid), where=where, tool_of=swe_smith_tool))
        info[pid] = {k: row.get(k) for k in ("instance_id", "model", "resolved")}
    if not programs:
        raise TraceError(f"{path}: no SWE-smith rows")
    return Trace(programs=programs, meta={"swe_smith": info})


def row_messages(row: dict[str, Any], where: str) -> list[Any]:
    """A row's messages: decoded from the JSON string the dataset stores (or taken as a list)."""
    if "messages" not in row:
        raise TraceError(f"{where}: messages: missing")
    messages = row["messages"]
    if isinstance(messages, str):
        try:
            messages = parse_json(messages)
        except ValueError as e:
            raise TraceError(f"{where}: messages: not a JSON-encoded message list ({e})") from None
    if not isinstance(messages, list):
        raise TraceError(f"{where}: messages: expected a list of messages (or a JSON string of one), "
                         f"got {type(messages).__name__}")
    return messages


def swe_smith_tool(msg: dict[str, Any]) -> ToolInfo | None:
    """The call an assistant message made: a tool call, an ``<function=...>`` block, or one fenced block."""
    if msg.get("tool_calls"):
        return openai_tool(msg)
    content = msg.get("content")
    text = content if isinstance(content, str) else ""
    m = FUNCTION_RE.search(text)
    if m:
        args = {k: v for k, v in PARAMETER_RE.findall(m.group(2))}
        return tool_from_call({"name": m.group(1), "arguments": args})
    blocks = TICKS_RE.findall(text)
    return _shell(blocks[-1].strip()) if blocks and blocks[-1].strip() else None


def is_swe_smith_row(row: Any) -> bool:
    return isinstance(row, dict) and "messages" in row and any(k in row for k in ROW_KEYS) and \
        ("traj_id" in row or isinstance(row["messages"], str))


def _rows(path: Path, content: FileContent) -> list[tuple[str, Any]]:
    if path.name.lower().endswith(".jsonl"):
        return [(f"{path}:{n}", row) for n, row in iter_json_lines(path)]
    data = content.json
    rows = data if isinstance(data, list) else [data]
    return [(f"{path}: [{i}]", row) for i, row in enumerate(rows)]


def _detect(path: Path, content: FileContent) -> bool:
    if path.name.lower().endswith(".jsonl"):
        return is_swe_smith_row(content.first_row)
    data = content.json
    return is_swe_smith_row(data[0] if isinstance(data, list) and data else data)


TRACE_FORMATS.register("swe-smith", TraceFormat(
    suffixes=(".jsonl", ".json"), description="SWE-smith trajectory rows (.jsonl/.json)",
    detect=_detect, load=lambda path, content, seed: load_swe_smith(path, _rows(path, content), seed)))

"""TraceLab traces -> programs: round traces (JSON lines) and replay CSVs. Token counts only.

Round traces: one row per LLM round of a Claude Code / Codex session; rows are
grouped into one program per ``session_id``, ordered by ``round_index``.

- appended: what the replayed context must gain to reach the round's real prompt,
  ``max(0, input_tokens_total - context so far)`` (context so far = earlier appended +
  output). Not ``newly_append_tokens``: that is the provider's cache miss
  (``input - prefix_tokens``), which jumps when the cache is cold and would grow the
  replayed context far past the real one. When a real prompt shrinks (history
  compaction) the replay keeps its context and the next rounds catch up.
- output: ``output_tokens`` (at least 1).
- tool: with tool calls, the call that finished last names the record (it decided the
  wait); duration = last result - last call emitted (the model's end of output), or the
  longest ``tool_wall_latency_ms`` when timestamps are missing; every call is listed in
  ``arguments["calls"]``. A round without tools that is followed by a new user message
  gets a ``user`` record (class ``other``) whose duration is the time until that message.
  The last round has no tool.
- arrival: 0 for every session. The sessions come from different users and months
  apart; their start times are kept in ``meta["session_start_utc"]``.

Replay CSVs (``session_id,arrival_time,round_idx,prefix_len,input_len,output_len,
tool_wait_after_ms``): appended = ``input_len`` (plus any part of ``prefix_len`` the
replayed context lacks), output = ``output_len`` (at least 1), a ``tool`` record of
class ``other`` lasting ``tool_wait_after_ms`` after every round but the last,
arrival = ``arrival_time`` in milliseconds (TraceLab's runner reads it as
``arrival_time_ms``).

    trace = load_tracelab_rounds(Path("tracelab_round_trace.jsonl"))
    trace = load_tracelab_csv(Path("tracelab_multi_session_large.csv"))
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..durations import classify_tool, program_rng
from ..trace import MAX_TURN_TOKENS, Trace, TraceError, Turn, iter_json_lines
from .formats import TRACE_FORMATS, TraceFormat
from .openai_messages import build_program, file_stem, make_turn, tool_record

CSV_REQUIRED = ("session_id", "round_idx", "input_len", "output_len", "tool_wait_after_ms")
CSV_OPTIONAL = ("prefix_len", "arrival_time")
ROUND_MARKERS = ("input_tokens_total", "newly_append_tokens", "round_index")


def is_round_row(obj: Any) -> bool:
    """Whether a parsed JSON line looks like a TraceLab round."""
    return isinstance(obj, dict) and "session_id" in obj and any(k in obj for k in ROUND_MARKERS)


def load_tracelab_rounds(path: Path, seed: int = 0) -> Trace:
    """One program per session of a TraceLab round trace (JSON lines)."""
    sessions: dict[str, list[tuple[int, dict]]] = {}
    for lineno, row in iter_json_lines(path):
        _check_round(row, f"{path}:{lineno}")
        sessions.setdefault(str(row["session_id"]), []).append((lineno, row))
    if not sessions:
        raise TraceError(f"{path}: no rounds")
    programs, starts = [], {}
    for sid, rows in sessions.items():
        rows.sort(key=lambda r: r[1].get("round_index") or 0)  # stable: file order breaks ties
        rng = program_rng(seed, sid)
        turns, context = [], 0
        for i, (lineno, row) in enumerate(rows):
            where = f"{path}:{lineno}"
            total = row.get("input_tokens_total")
            if total is None:
                total = row["prefix_tokens"] + row["newly_append_tokens"]
            append = max(0, total - context)
            output = max(1, row["output_tokens"])
            context += append + output
            tool = _round_tool(row, rows[i + 1], rng, where, path) if i + 1 < len(rows) else None
            turns.append(make_turn(None, append, None, output, tool, where))
        start = _first_time(rows[0][1], f"{path}:{rows[0][0]}")
        if start is not None:
            starts[sid] = datetime.fromtimestamp(start, tz=timezone.utc).isoformat()
        programs.append(build_program(sid, f"tracelab-rounds:{path.name}", turns, str(path)))
    return Trace(programs=programs, meta={"session_start_utc": starts} if starts else {})


def load_tracelab_csv(path: Path, seed: int = 0) -> Trace:
    """One program per session of a TraceLab replay CSV; real tool waits, arrival in ms."""
    lineno = 1
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)} "
                                 f"(a replay CSV has {','.join(CSV_REQUIRED)}, optional prefix_len, arrival_time)")
            sessions: dict[str, list[tuple[int, dict[str, float]]]] = {}
            for row in reader:
                lineno = reader.line_num
                where = f"{path}:{lineno}"
                values = {k: _number(row, k, where) for k in CSV_REQUIRED[1:]}  # an empty cell is an error
                values.update({k: _number(row, k, where) for k in CSV_OPTIONAL if row.get(k) not in (None, "")})
                sessions.setdefault(str(row["session_id"]), []).append((lineno, values))
    except UnicodeDecodeError:
        raise TraceError(f"{path}:{lineno + 1}: not UTF-8 text") from None
    except csv.Error as e:
        raise TraceError(f"{path}:{lineno + 1}: not CSV ({e})") from None
    if not sessions:
        raise TraceError(f"{path}: no rows")
    stem = file_stem(path)
    programs = []
    for sid, rows in sessions.items():
        rows.sort(key=lambda r: r[1]["round_idx"])
        turns: list[Turn] = []
        context = 0
        for i, (lineno, v) in enumerate(rows):
            where = f"{path}:{lineno}"
            append = int(v["input_len"]) + max(0, int(v.get("prefix_len", 0)) - context)
            output = max(1, int(v["output_len"]))
            context += append + output
            tool = None
            if i + 1 < len(rows):
                tool = tool_record("tool", "other", None, v["tool_wait_after_ms"] / 1000.0, None, where)
            turns.append(make_turn(None, append, None, output, tool, where))
        arrival = min((v["arrival_time"] for _, v in rows if "arrival_time" in v), default=0.0) / 1000.0
        programs.append(build_program(f"{stem}/{sid}", f"tracelab-csv:{path.name}", turns, str(path), arrival))
    return Trace(programs=programs, meta={})


def _round_tool(row: dict, nxt: tuple[int, dict], rng: np.random.Generator, where: str, path: Path):
    tools = row.get("tools") or []
    if not tools:
        # No tool: the session waited for its user. Time it from this round's last event
        # to the next round's first; draw it when the events lack timestamps.
        end, start = _last_time(row, where), _first_time(nxt[1], f"{path}:{nxt[0]}")
        wait = max(0.0, start - end) if end is not None and start is not None else None
        return tool_record("user", "other", {"wait": "user_message"}, wait, rng, where)
    calls = []
    for j, t in enumerate(tools):
        emitted = _time(t.get("emitted_at"), f"{where}: tools.{j}.emitted_at")
        latency = t.get("tool_wall_latency_ms")
        result = _time(t.get("result_at"), f"{where}: tools.{j}.result_at")
        if result is None and emitted is not None and latency is not None:
            result = emitted + latency / 1000.0
        calls.append((str(t.get("tool_name") or "tool"), emitted, result, latency))
    if all(c[1] is not None and c[2] is not None for c in calls):
        last = max(calls, key=lambda c: c[2])
        duration = max(0.0, last[2] - max(c[1] for c in calls))
    elif all(c[3] is not None for c in calls):
        last = max(calls, key=lambda c: c[3])
        duration = last[3] / 1000.0
    else:
        last, duration = calls[0], None
    arguments = {"calls": [{"name": c[0], "wall_latency_ms": c[3]} for c in calls]}
    return tool_record(last[0], classify_tool(last[0]), arguments, duration, rng, where)


def _check_round(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise TraceError(f"{where}: expected a JSON object per line")
    if "session_id" not in row:
        raise TraceError(f"{where}: session_id: missing")
    need = ["output_tokens"] + (["input_tokens_total"] if "input_tokens_total" in row or
                                 "newly_append_tokens" not in row else ["prefix_tokens", "newly_append_tokens"])
    for key in need:
        v = row.get(key)
        if v is None:
            raise TraceError(f"{where}: {key}: missing")
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TURN_TOKENS:
            raise TraceError(f"{where}: {key}: expected a token count in [0, {MAX_TURN_TOKENS}], got {v!r}"[:300])
    ri = row.get("round_index")
    if ri is not None and (isinstance(ri, bool) or not isinstance(ri, (int, float))):
        raise TraceError(f"{where}: round_index: expected a number, got {ri!r}"[:200])
    events = row.get("timing_events")
    if events is not None and not isinstance(events, list):
        raise TraceError(f"{where}: timing_events: expected a list, got {type(events).__name__}")
    tools = row.get("tools") or []
    if not isinstance(tools, list):
        raise TraceError(f"{where}: tools: expected a list")
    for j, t in enumerate(tools):
        if not isinstance(t, dict):
            raise TraceError(f"{where}: tools.{j}: expected an object")
        lat = t.get("tool_wall_latency_ms")
        if lat is not None and (isinstance(lat, bool) or not isinstance(lat, (int, float)) or lat < 0):
            raise TraceError(f"{where}: tools.{j}.tool_wall_latency_ms: expected milliseconds >= 0, got {lat!r}")


def _number(row: dict, key: str, where: str) -> float:
    raw = row.get(key)
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {key}: not a number ({raw!r})"[:300]) from None
    if not math.isfinite(v):
        raise TraceError(f"{where}: {key}: not a finite number ({raw})"[:300])
    if v < 0:
        raise TraceError(f"{where}: {key}: negative ({raw})")
    return v


def _events(row: dict, where: str) -> list[float]:
    out = []
    for j, e in enumerate(row.get("timing_events") or []):
        t = _time(e.get("timestamp"), f"{where}: timing_events.{j}.timestamp") if isinstance(e, dict) else None
        if t is not None:
            out.append(t)
    return out


def _first_time(row: dict, where: str) -> float | None:
    ts = _events(row, where)
    return min(ts) if ts else None


def _last_time(row: dict, where: str) -> float | None:
    ts = _events(row, where)
    return max(ts) if ts else None


def _time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        raise TraceError(f"{where}: not an ISO timestamp ({value!r})"[:300]) from None


TRACE_FORMATS.register("tracelab-rounds", TraceFormat(
    suffixes=(".jsonl",), description="a TraceLab round trace (.jsonl)",
    detect=lambda path, content: is_round_row(content.first_row),
    load=lambda path, content, seed: load_tracelab_rounds(path, seed)))

TRACE_FORMATS.register("tracelab-csv", TraceFormat(
    suffixes=(".csv",), description="a TraceLab replay CSV",
    detect=lambda path, content: True,  # its columns are checked on load, naming the missing ones
    load=lambda path, content, seed: load_tracelab_csv(path, seed)))

"""Load agent trajectories of any supported format into a tether Trace.

    trace = load_trajectories("runs/")                          # a folder: every trajectory file in it
    trace = load_trajectories("x.traj", tokenizer=tok, seed=1)  # with real token ids

Formats, told apart by extension and content (``detect_format``):

=================  ==========================================================
tether             ``.jsonl`` whose first line is ``{"trace_meta": ...}`` (``Trace.load``)
swe-agent          ``.traj`` / ``.json`` with ``trajectory`` (and ``history``)
mini-swe-agent     ``.traj.json`` / ``.json``: messages with a fenced bash block or ``extra``
openai-messages    ``.json`` / ``.jsonl``: chat messages with ``tool_calls`` / ``tool``
tracelab-rounds    ``.jsonl``, one LLM round per line (``session_id``, ``input_tokens_total``, ...)
tracelab-csv       ``.csv`` with ``session_id,round_idx,input_len,output_len,tool_wait_after_ms``
=================  ==========================================================

Without a tokenizer, counts of text turns are estimates (about 4 characters a
token, or the provider's ``usage`` where recorded); with one, ``tokenize_trace``
sets ids and exact counts. Missing tool durations are drawn, seeded by
(``seed``, program id), and flagged ``duration_drawn``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tokenize import tokenize_trace
from ..trace import Trace, TraceError, iter_json_lines, read_json
from .mini_swe_agent import is_mini_swe_agent, load_mini_swe_agent
from .openai_messages import load_openai_messages
from .swe_agent import is_swe_agent, load_swe_agent
from .tracelab import is_round_row, load_tracelab_csv, load_tracelab_rounds

SUFFIXES = (".traj", ".json", ".jsonl", ".csv")  # a folder load reads these and skips the rest

__all__ = ["load_trajectories", "detect_format", "TraceError"]


def load_trajectories(path: str | Path, tokenizer: Any = None, seed: int = 0) -> Trace:
    """A Trace from one trajectory file or every trajectory file under a folder.

    Folder loads read ``.traj``, ``.json``, ``.jsonl`` and ``.csv`` files (sorted, recursive)
    and merge their programs; a repeated program id gets a ``~2``, ``~3`` suffix.

    >>> import os; folder = os.environ.get("TETHER_TRACES", "../shared/data/traces")
    >>> t = load_trajectories(f"{folder}/swe-agent_test-repo-1c2844.traj")  # doctest: +SKIP
    >>> len(t.programs[0].turns), t.programs[0].turns[0].tool.name          # doctest: +SKIP
    (5, 'find_file')
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _candidate(p))
        if not files:
            raise TraceError(f"{path}: no trajectory files ({', '.join(SUFFIXES)}) in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise TraceError(f"{path}: no such file or folder")
    parts = [(f, *_load(f, seed)) for f in files]
    if path.is_file() and parts[0][1] == "tether":
        trace = parts[0][2]  # already a tether trace: keep its meta (seed, scales) as saved
    else:
        trace = _merge(parts, seed)
    return tokenize_trace(trace, tokenizer) if tokenizer is not None else trace


def _load(path: Path, seed: int) -> tuple[str, Trace]:
    fmt, data = _detect(path)
    if fmt == "tether":
        return fmt, Trace.load(path)
    if fmt == "swe-agent":
        return fmt, load_swe_agent(path, data, seed)
    if fmt == "mini-swe-agent":
        return fmt, load_mini_swe_agent(path, data, seed)
    if fmt == "openai-messages":
        return fmt, load_openai_messages(path, data, seed)
    if fmt == "tracelab-rounds":
        return fmt, load_tracelab_rounds(path, seed)
    return fmt, load_tracelab_csv(path, seed)


def detect_format(path: str | Path) -> str:
    """The format name of a file: tether, swe-agent, mini-swe-agent, openai-messages, tracelab-rounds
    or tracelab-csv; TraceError naming the file when it is none of them."""
    return _detect(Path(path))[0]


def _detect(path: Path) -> tuple[str, Any]:
    name = path.name.lower()
    if name.endswith(".csv"):
        return "tracelab-csv", None
    if name.endswith(".jsonl"):
        row = next(iter_json_lines(path), None)
        if row is None:
            raise TraceError(f"{path}: empty file")
        first = row[1]
        if isinstance(first, dict) and "trace_meta" in first:
            return "tether", None
        if is_round_row(first):
            return "tracelab-rounds", None
        if isinstance(first, (list, dict)):
            return "openai-messages", None
        raise _unknown(path, "a JSON line that is neither a trace header, a TraceLab round nor a conversation")
    if name.endswith((".traj", ".json")):
        try:
            data = read_json(path)
        except UnicodeDecodeError:
            raise _unknown(path, "not text") from None
        if is_swe_agent(data):
            return "swe-agent", data
        if _has_messages(data):
            return ("mini-swe-agent" if is_mini_swe_agent(data) else "openai-messages"), data
        raise _unknown(path, "JSON without 'trajectory' or chat 'messages'")
    raise _unknown(path, f"extension {path.suffix or '(none)'!r}")


def _unknown(path: Path, why: str) -> TraceError:
    return TraceError(f"{path}: unknown trajectory format ({why}); expected a SWE-agent .traj, a mini-swe-agent "
                      "or OpenAI-style message list (.json/.jsonl), a TraceLab round trace (.jsonl) or replay "
                      "CSV, or a tether trace (.jsonl)")


def _has_messages(data: Any) -> bool:
    if isinstance(data, dict):
        return isinstance(data.get("messages"), list)
    # a message list (any element with a role; the loader names a malformed one), or a
    # list of conversations (lists or {"messages": [...]})
    if not isinstance(data, list) or not data:
        return False
    return any(isinstance(x, dict) and "role" in x for x in data) or all(
        isinstance(x, list) or (isinstance(x, dict) and "messages" in x) for x in data)


def _candidate(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower().endswith(SUFFIXES)


def _merge(parts: list[tuple[Path, str, Trace]], seed: int) -> Trace:
    programs, seen, extra = [], {}, {}
    for _, _, t in parts:
        for p in t.programs:
            n = seen.get(p.program_id, 0) + 1
            seen[p.program_id] = n
            programs.append(p if n == 1 else p.model_copy(update={"program_id": f"{p.program_id}~{n}"}))
        for k, v in t.meta.items():  # per-file details, e.g. TraceLab session start times
            extra[k] = {**extra.get(k, {}), **v} if isinstance(v, dict) and isinstance(extra.get(k), dict) else v
    meta = {**extra, "sources": [str(f) for f, _, _ in parts], "formats": sorted({fmt for _, fmt, _ in parts}),
            "load_seed": seed}
    return Trace(programs=programs, meta=meta)

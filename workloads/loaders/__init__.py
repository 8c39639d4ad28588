"""Load agent trajectories of any supported format into a tether Trace.

    trace = load_trajectories("runs/")                          # a folder: every trajectory file in it
    trace = load_trajectories("x.traj", tokenizer=tok, seed=1)  # with real token ids

Formats, told apart by extension and content (``detect_format``); each is a ``TraceFormat``
registered in ``TRACE_FORMATS`` by its module (see ``formats.py`` to add one):

=================  ==========================================================
tether             ``.jsonl`` whose first line is ``{"trace_meta": ...}`` (``Trace.load``)
swe-agent          ``.traj`` / ``.json`` with ``trajectory`` (and ``history``)
mini-swe-agent     ``.traj.json`` / ``.json``: messages with a fenced bash block or ``extra``
openai-messages    ``.json`` / ``.jsonl``: chat messages with ``tool_calls`` / ``tool``
tracelab-rounds    ``.jsonl``, one LLM round per line (``session_id``, ``input_tokens_total``, ...)
tracelab-csv       ``.csv`` with ``session_id,round_idx,input_len,output_len,tool_wait_after_ms``
swe-smith          ``.jsonl`` / ``.json`` rows: ``messages`` (a JSON string), ``traj_id``, ``instance_id``
openhands          ``.json`` list of OpenHands events (``id``, ``source``, ``action``/``observation``),
                   or ``.jsonl`` / ``.json`` rows keeping them in ``history``
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
from ..trace import Trace, TraceError
# Each module registers its formats in TRACE_FORMATS on import; detection tries them in this order
# (fallback formats, i.e. plain OpenAI messages, last).
# openhands goes before swe_agent: both take objects with a `trajectory` list (see openhands.py).
from . import tether_trace, openhands, swe_agent, mini_swe_agent, tracelab, swe_smith, openai_messages  # noqa: F401
from .formats import TRACE_FORMATS, FileContent, TraceFormat, detect, suffixes

__all__ = ["load_trajectories", "detect_format", "TraceError", "TRACE_FORMATS", "TraceFormat", "FileContent"]


def load_trajectories(path: str | Path, tokenizer: Any = None, seed: int = 0) -> Trace:
    """A Trace from one trajectory file or every trajectory file under a folder.

    Folder loads read the files whose names end with a registered format's suffix (``.traj``,
    ``.json``, ``.jsonl``, ``.csv``; sorted, recursive) and merge their programs; a repeated
    program id gets a ``~2``, ``~3`` suffix.

    >>> t = load_trajectories("tests/data/traces/swe-agent_test-repo-1c2844.traj")  # from the repo root
    >>> len(t.programs[0].turns), t.programs[0].turns[0].tool.name
    (5, 'find_file')
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _candidate(p))
        if not files:
            raise TraceError(f"{path}: no trajectory files ({', '.join(suffixes())}) in this folder")
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
    name, content = detect(path)
    return name, TRACE_FORMATS.get(name).load(path, content, seed)


def detect_format(path: str | Path) -> str:
    """The name of a file's format (see ``TRACE_FORMATS``: tether, swe-agent, mini-swe-agent,
    openai-messages, tracelab-rounds, tracelab-csv, swe-smith, openhands, and any registered since); TraceError naming
    the file when it is none of them."""
    return detect(Path(path))[0]


def _candidate(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower().endswith(suffixes())


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

"""tether's own trace files (``Trace.save``): JSON lines led by a ``{"trace_meta": ...}`` header."""

from __future__ import annotations

from pathlib import Path

from ..trace import Trace
from .formats import TRACE_FORMATS, FileContent, TraceFormat


def is_tether_trace(path: Path, content: FileContent) -> bool:
    return isinstance(content.first_row, dict) and "trace_meta" in content.first_row


TRACE_FORMATS.register("tether", TraceFormat(
    suffixes=(".jsonl",), description="a tether trace (.jsonl)", detect=is_tether_trace,
    load=lambda path, content, seed: Trace.load(path)))

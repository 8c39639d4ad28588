"""``tether trace export --chrome OUT.json``: a run in Chrome's trace event format, for Perfetto.

One process per program (its lane), one thread per row; spans are complete ("X") events, KV
events instant ("i") events, the KV pool a counter ("C") track, and KV reuse flow arrows
("s"/"f"). Open the file at https://ui.perfetto.dev or chrome://tracing. Example::

    write_chrome(read_run(run_dir), Path("trace.json"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.runtime.tracing.store import SpanRecord
from tether.runtime.tracing.view import build_view

POOL_PID = 0


def chrome_events(records: list[SpanRecord]) -> list[dict[str, Any]]:
    """The Chrome trace events of one run (timestamps in microseconds from its start)."""
    view = build_view(records)
    us = lambda ms: round(ms * 1000.0, 3)  # noqa: E731
    out: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": POOL_PID, "args": {"name": "KV pool"}}]
    for i, lane in enumerate(view.lanes):
        out.append({"ph": "M", "name": "process_name", "pid": i + 1, "args": {"name": lane["label"]}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": i + 1, "args": {"sort_index": i + 1}})
    for s in view.spans:
        out.append({"ph": "X", "name": s.name, "cat": s.kind, "pid": s.lane + 1, "tid": s.row, "ts": us(s.s),
                    "dur": us(max(0.0, s.e - s.s)), "args": s.attrs})
    for m in view.markers:
        s = view.spans[m["span"]]
        out.append({"ph": "i", "s": "t", "name": m["name"], "cat": "kv", "pid": s.lane + 1, "tid": s.row,
                    "ts": us(m["t"]), "args": next((e["attrs"] for e in s.events
                                                     if e["name"] == m["name"] and e["t"] == m["t"]), {})})
    for t, used, pinned, cached_free, total, host in view.counter:
        out.append({"ph": "C", "name": "KV blocks", "pid": POOL_PID, "ts": us(t),
                    "args": {"used": used, "pinned": pinned, "cached_free": cached_free, "host": host}})
    for p in view.pool_events:
        out.append({"ph": "i", "s": "p", "name": "tether.kv.eviction", "cat": "kv", "pid": POOL_PID, "tid": 0,
                    "ts": us(p["t"]), "args": {"blocks": p["blocks"], "host_swap_out_blocks": p["host"]}})
    for n, a in enumerate(view.arrows):
        src, dst = view.spans[a["from"]], view.spans[a["to"]]
        out.append({"ph": "s", "id": n, "name": "kv reuse", "cat": "kv", "pid": src.lane + 1, "tid": src.row,
                    "ts": us(src.e)})
        out.append({"ph": "f", "bp": "e", "id": n, "name": "kv reuse", "cat": "kv", "pid": dst.lane + 1,
                    "tid": dst.row, "ts": us(a["t"])})
    return out


def write_chrome(records: list[SpanRecord], out: Path) -> int:
    """Write ``{"traceEvents": [...]}`` to ``out``; returns the number of events."""
    events = chrome_events(records)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}, separators=(",", ":")))
    return len(events)

"""A run's spans arranged for drawing: lanes per program, rows, markers, the pool counter, arrows.

Both the UI (``ui_server.py``, as JSON) and the Chrome export (``chrome.py``) draw from this.
Times are milliseconds from the run's first span. Example::

    view = build_view(read_run(run_dir))
    print(len(view.lanes), len(view.spans), len(view.markers))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tether.runtime.tracing.store import SpanRecord

# span name prefix -> kind (what colour and row it gets)
_KINDS = [("invoke_agent", "agent"), ("chat", "chat"), ("execute_tool", "tool"), ("tether.tool.run", "toolrun"),
          ("tether.engine.queue", "queue"), ("tether.engine.prefill", "prefill"), ("tether.engine.decode", "decode"),
          ("tether.engine.request", "request"), ("tether.kv.pin", "pin")]
POOL = "tether.kv.pool"
OTHER_LANE = "(no program)"


def kind_of(s: SpanRecord) -> str:
    if s.attributes.get("tether.span.kind") == "program":
        return "program"
    for prefix, kind in _KINDS:
        if s.name == prefix or s.name.startswith(prefix + " "):
            return kind
    return "other"


@dataclass
class ViewSpan:
    i: int
    id: str
    parent: int | None
    lane: int
    row: int
    kind: str
    name: str
    s: float  # start, ms
    e: float  # end, ms
    attrs: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)  # {"t", "name", "attrs"}
    error: bool = False


@dataclass
class View:
    run: str
    t0_ns: int
    duration_ms: float
    lanes: list[dict[str, Any]] = field(default_factory=list)      # {"label", "rows", "program"}
    spans: list[ViewSpan] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)    # {"span", "t", "name"}: KV events
    counter: list[list[float]] = field(default_factory=list)       # [t, used, pinned, cached_free, total, host]
    pool_events: list[dict[str, Any]] = field(default_factory=list)  # evictions: {"t", "blocks", "host"}
    arrows: list[dict[str, Any]] = field(default_factory=list)     # reuse: {"from", "to", "t"}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["spans"] = [asdict(s) for s in self.spans]
        return d


def _lane_key(s: SpanRecord, by_id: dict[str, SpanRecord]) -> str:
    root = s
    seen = 0
    while root.parent_id and root.parent_id in by_id and seen < 64:
        root, seen = by_id[root.parent_id], seen + 1
    return str(root.attributes.get("tether.program.id") or s.attributes.get("tether.program.id") or OTHER_LANE)


def build_view(records: list[SpanRecord], run: str = "") -> View:
    """Arrange ``records`` (one run, from ``store.read_run``) into lanes and rows."""
    pool = [r for r in records if r.name == POOL]
    spans = [r for r in records if r.name != POOL]
    if not records:
        return View(run, 0, 0.0)
    t0 = min(r.start_ns for r in records)
    ms = lambda ns: (ns - t0) / 1e6  # noqa: E731
    view = View(run, t0, ms(max(r.end_ns for r in records)))
    by_id = {r.span_id: r for r in spans}
    depth: dict[str, int] = {}

    def depth_of(r: SpanRecord) -> int:
        d, cur = 0, r
        while cur.parent_id in by_id and d < 64:
            d, cur = d + 1, by_id[cur.parent_id]
        return d
    for r in spans:
        depth[r.span_id] = depth_of(r)
    spans.sort(key=lambda r: (r.start_ns, depth[r.span_id], r.end_ns))  # a parent before the children it starts with
    lane_of: dict[str, int] = {}
    keys = sorted({_lane_key(r, by_id) for r in spans}, key=lambda k: (k == OTHER_LANE, k))
    first = {}
    for r in spans:
        first.setdefault(_lane_key(r, by_id), r.start_ns)
    keys.sort(key=lambda k: (k == OTHER_LANE, first.get(k, 0), k))  # programs in order of arrival
    for k in keys:
        lane_of[k] = len(view.lanes)
        view.lanes.append({"label": k, "rows": 1, "program": None if k == OTHER_LANE else k})
    index = {r.span_id: i for i, r in enumerate(spans)}
    # rows: a child sits below its parent; overlapping spans at one depth take separate rows
    row_ends: dict[int, list[float]] = {}
    rows: list[int] = [0] * len(spans)
    for i, r in enumerate(spans):
        lane = lane_of[_lane_key(r, by_id)]
        p = index.get(r.parent_id) if r.parent_id else None
        row = rows[p] + 1 if p is not None and p < i else 0
        ends = row_ends.setdefault(lane, [])
        while row < len(ends) and ends[row] > r.start_ns:
            row += 1
        if row >= len(ends):
            ends.extend([0.0] * (row + 1 - len(ends)))
        ends[row] = r.end_ns
        rows[i] = row
        view.lanes[lane]["rows"] = max(view.lanes[lane]["rows"], row + 1)
        view.spans.append(ViewSpan(i, r.span_id, p, lane, row, kind_of(r), r.name, ms(r.start_ns), ms(r.end_ns),
                                   r.attributes, [{"t": ms(e["time_ns"]), "name": e["name"], "attrs": e["attributes"]}
                                                  for e in r.events], r.status == 2))
        for e in r.events:
            if e["name"].startswith("tether.kv.") or e["name"] == "tether.engine.preempted":
                view.markers.append({"span": i, "t": ms(e["time_ns"]), "name": e["name"]})
                src = e["attributes"].get("tether.kv.reuse.source_span_id")
                if e["name"] == "tether.kv.reuse" and src in index:
                    view.arrows.append({"from": index[src], "to": i, "t": ms(e["time_ns"])})
    for r in pool:
        for e in r.events:
            a = e["attributes"]
            if e["name"] == "tether.kv.occupancy":
                view.counter.append([ms(e["time_ns"]), a.get("tether.kv.used_blocks", 0),
                                     a.get("tether.kv.pinned_blocks", 0), a.get("tether.kv.cached_free_blocks", 0),
                                     a.get("tether.kv.total_blocks", 0), a.get("tether.kv.host_blocks", 0)])
            elif e["name"] == "tether.kv.eviction":
                view.pool_events.append({"t": ms(e["time_ns"]), "blocks": a.get("tether.kv.blocks", 0),
                                         "host": a.get("tether.kv.host_swap_out_blocks", 0)})
    view.counter.sort()
    view.pool_events.sort(key=lambda p: p["t"])
    return view

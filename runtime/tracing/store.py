"""The local trace store: OTLP JSON lines, one file per process, one folder per run.

Each line is an OTLP ``ExportTraceServiceRequest`` in the protobuf JSON mapping (hex ids,
integers as strings, enums as numbers), as the OpenTelemetry Collector's file exporter
writes, so other tools can read the files. ``read_run`` flattens a run back into spans::

    spans = read_run(Path("~/.cache/tether/traces/20261203-120000-demo").expanduser())
    print(spans[0].name, spans[0].attributes)
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

SUFFIX = ".otlp.jsonl"


# ---- writing ------------------------------------------------------------------------------
def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attrs(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in (attributes or {}).items()]


def _span_json(s: Any) -> dict[str, Any]:
    ctx = s.get_span_context()
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}", "name": s.name,
        "kind": int(s.kind.value) + 1,  # the API's INTERNAL is 0; OTLP's SPAN_KIND_INTERNAL is 1
        "startTimeUnixNano": str(s.start_time), "endTimeUnixNano": str(s.end_time),
        "attributes": _attrs(s.attributes),
        "status": {"code": int(s.status.status_code.value)} | ({"message": s.status.description}
                                                                if s.status.description else {}),
    }
    if s.parent is not None:
        out["parentSpanId"] = f"{s.parent.span_id:016x}"
    if s.events:
        out["events"] = [{"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attrs(e.attributes)}
                         for e in s.events]
    if s.links:
        out["links"] = [{"traceId": f"{ln.context.trace_id:032x}", "spanId": f"{ln.context.span_id:016x}",
                         "attributes": _attrs(ln.attributes)} for ln in s.links]
    return out


def encode(spans: Sequence[Any]) -> dict[str, Any]:
    """SDK ``ReadableSpan``s as one OTLP ``ExportTraceServiceRequest`` (JSON mapping)."""
    by_resource: dict[int, tuple[Any, list]] = {}
    for s in spans:
        by_resource.setdefault(id(s.resource), (s.resource, []))[1].append(s)
    out = []
    for resource, group in by_resource.values():
        scope = group[0].instrumentation_scope
        out.append({"resource": {"attributes": _attrs(resource.attributes)},
                    "scopeSpans": [{"scope": {"name": scope.name if scope else "tether",
                                              "version": (scope.version if scope else None) or ""},
                                    "schemaUrl": (scope.schema_url if scope else "") or "",
                                    "spans": [_span_json(s) for s in group]}]})
    return {"resourceSpans": out}


class FileSpanExporter(SpanExporter):
    """Appends each export as one OTLP JSON line to ``path`` (flushed at once)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        line = json.dumps(encode(spans), separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(line + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# ---- reading ------------------------------------------------------------------------------
@dataclass
class SpanRecord:
    """One span read back from the store; times in nanoseconds since the epoch."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # {"name", "time_ns", "attributes"}
    resource: dict[str, Any] = field(default_factory=dict)
    status: int = 0


def _decode_value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_decode_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _decode_attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _decode_value(a.get("value", {})) for a in items or []}


def read_file(path: Path) -> list[SpanRecord]:
    """Every span of one OTLP JSON lines file; a torn last line (a process killed mid-write) is skipped."""
    out: list[SpanRecord] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            for rs in msg.get("resourceSpans", []):
                res = _decode_attrs(rs.get("resource", {}).get("attributes"))
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        out.append(SpanRecord(
                            s["traceId"], s["spanId"], s.get("parentSpanId") or None, s["name"],
                            int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"]), _decode_attrs(s.get("attributes")),
                            [{"name": e["name"], "time_ns": int(e["timeUnixNano"]),
                              "attributes": _decode_attrs(e.get("attributes"))} for e in s.get("events", [])],
                            res, int(s.get("status", {}).get("code", 0))))
    return out


def read_run(run_dir: Path) -> list[SpanRecord]:
    """Every span of one run folder, sorted by start time."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no trace run at {run_dir}")
    spans = [s for p in sorted(run_dir.glob(f"*{SUFFIX}")) for s in read_file(p)]
    spans.sort(key=lambda s: (s.start_ns, s.end_ns))
    return spans


def list_runs(root: Path) -> list[Path]:
    """The run folders under ``root``, newest first; ``root`` itself when it holds span files."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    if any(root.glob(f"*{SUFFIX}")):
        return [root]
    runs = [p for p in root.iterdir() if p.is_dir() and any(p.glob(f"*{SUFFIX}"))]
    return sorted(runs, key=lambda p: p.name, reverse=True)

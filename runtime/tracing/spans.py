"""The tracer of this process, and the span helpers the runtime and the SDK call.

Tracing is per process: the driver calls ``enable`` (it also exports the settings through the
environment, which the actors of an embedded Ray cluster inherit), and every actor calls
``from_env`` when it starts. When tracing is off, ``span`` yields None and costs one check.

Spans follow the OpenTelemetry GenAI semantic conventions at ``SEMCONV_VERSION`` (status
"development"); what they do not cover is named ``tether.*``. Example::

    from tether.runtime import tracing
    run_dir = tracing.enable()                      # ~/.cache/tether/traces/<run>/
    with tracing.span("execute_tool add", {"gen_ai.tool.name": "add"}) as s:
        ...
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SEMCONV_VERSION = "1.44.0"  # opentelemetry-semantic-conventions 0.66b2; gen_ai.* is "development" there
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
DEFAULT_ROOT = Path.home() / ".cache" / "tether" / "traces"
ENV_RUN_DIR, ENV_OTLP, ENV_CONTENT = "TETHER_TRACE_RUN_DIR", "TETHER_OTLP_ENDPOINT", "TETHER_TRACE_CONTENT"

MAX_EVENTS = 1024  # per span (the SDK's default is 128); the KV pool's windows close before this
_propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class TraceSettings:
    """Where this process's spans go. ``run_dir``: one run's folder in the local store."""

    run_dir: Path
    otlp_endpoint: str | None = None
    capture_content: bool = False  # message contents on chat spans: only when the user opts in
    service: str = "tether"


class _State:
    settings: TraceSettings | None = None
    provider: Any = None
    tracer: Any = None


_state = _State()


def new_run_dir(root: str | Path | None = None, kind: str = "run") -> Path:
    """A fresh run folder under ``root`` (default ``~/.cache/tether/traces``), named by time and kind."""
    base = Path(root).expanduser() if root else DEFAULT_ROOT
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{stamp}-{kind}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{kind}-{n}"
    path.mkdir(parents=True)
    return path


def enable(trace_dir: str | Path | None = None, *, kind: str = "run", otlp_endpoint: str | None = None,
           capture_content: bool = False, service: str = "tether.driver", run_dir: str | Path | None = None,
           export_env: bool = True, batch: bool = False) -> Path:
    """Trace this process (and, through the environment, Ray actors started after this); returns the run folder.

    ``trace_dir`` is the store's root (default ``~/.cache/tether/traces``); each call opens a new run
    folder ``<root>/<time>-<kind>`` unless ``run_dir`` names one. ``otlp_endpoint`` also sends spans
    over OTLP/HTTP (e.g. ``http://127.0.0.1:4318/v1/traces`` for Phoenix or Jaeger). ``batch``: write
    spans in batches (fewer, bigger lines; for a process that calls ``shutdown`` before it ends).
    """
    if otlp_endpoint is not None and not otlp_endpoint.startswith(("http://", "https://")):
        raise ValueError(f"--otlp-endpoint must be an http(s) URL such as http://127.0.0.1:4318/v1/traces, "
                         f"got {otlp_endpoint!r}")
    path = Path(run_dir) if run_dir else new_run_dir(trace_dir, kind)
    path.mkdir(parents=True, exist_ok=True)
    settings = TraceSettings(path, otlp_endpoint, capture_content, service)
    if export_env:
        os.environ[ENV_RUN_DIR] = str(path)
        os.environ[ENV_CONTENT] = "1" if capture_content else "0"
        if otlp_endpoint:
            os.environ[ENV_OTLP] = otlp_endpoint
        else:
            os.environ.pop(ENV_OTLP, None)
    _configure(settings, batch)
    return path


def from_env(service: str) -> bool:
    """Start tracing in this process if the environment says so (actors call this); True when on."""
    run_dir = os.environ.get(ENV_RUN_DIR)
    if not run_dir:
        return enabled()
    if _state.settings is None or _state.settings.run_dir != Path(run_dir):
        _configure(TraceSettings(Path(run_dir), os.environ.get(ENV_OTLP) or None,
                                 os.environ.get(ENV_CONTENT) == "1", service))
    return True


def _configure(settings: TraceSettings, batch: bool = False) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from tether.runtime.tracing.store import FileSpanExporter

    shutdown()
    resource = Resource.create({"service.name": settings.service, "process.pid": os.getpid(),
                                "tether.run": settings.run_dir.name})
    provider = TracerProvider(resource=resource, span_limits=SpanLimits(max_events=MAX_EVENTS))
    # Written at each span's end: an actor killed by the runtime loses nothing it finished.
    name = f"{settings.service}-{os.getpid()}.otlp.jsonl"
    exporter = FileSpanExporter(settings.run_dir / name)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048)
                                if batch else SimpleSpanProcessor(exporter))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    _state.settings, _state.provider = settings, provider
    _state.tracer = provider.get_tracer("tether", "0.1.0", schema_url=SCHEMA_URL)


def shutdown() -> None:
    """Flush and stop this process's tracer (tracing is off afterwards)."""
    if _state.provider is not None:
        _state.provider.shutdown()
    _state.settings = _state.provider = _state.tracer = None


def disable() -> None:
    """``shutdown``, and stop handing the settings to actors started later (the environment)."""
    shutdown()
    for key in (ENV_RUN_DIR, ENV_OTLP, ENV_CONTENT):
        os.environ.pop(key, None)


def enabled() -> bool:
    return _state.tracer is not None


def tracer():
    """This process's OpenTelemetry tracer, or None when tracing is off."""
    return _state.tracer


def settings() -> TraceSettings | None:
    return _state.settings


def capture_content() -> bool:
    return _state.settings is not None and _state.settings.capture_content


@contextmanager
def span(name: str, attributes: dict[str, Any] | None = None, kind: Any = None) -> Iterator[Any]:
    """A span around the block, current inside it (so child spans and ``current_traceparent`` see it).

    Yields None when tracing is off. An exception marks the span as an error and propagates."""
    t = _state.tracer
    if t is None:
        yield None
        return
    with t.start_as_current_span(name, kind=kind or otel_trace.SpanKind.INTERNAL,
                                 attributes=_clean(attributes or {})) as s:
        yield s


def set_attributes(s: Any, attributes: dict[str, Any]) -> None:
    """Set the attributes whose value is not None (no-op for a None span)."""
    if s is not None:
        s.set_attributes(_clean(attributes))


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to carry in an actor call; None when off or no span."""
    if _state.tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def parent_context(traceparent: str | None):
    """The OpenTelemetry context a ``traceparent`` names (None: the current context)."""
    if not traceparent:
        return otel_context.get_current()
    return _propagator.extract({"traceparent": traceparent})


@contextmanager
def remote_parent(traceparent: str | None) -> Iterator[None]:
    """Make the caller's span (from its ``traceparent``) the parent of spans started in the block."""
    if _state.tracer is None or not traceparent:
        yield
        return
    token = otel_context.attach(parent_context(traceparent))
    try:
        yield
    finally:
        otel_context.detach(token)


def where_note() -> str | None:
    """Closing lines for a command that traced: where the run's spans are and how to open them."""
    s = _state.settings
    if s is None:
        return None
    return (f"trace: {s.run_dir}\n"
            f"  open it:   tether ui --trace-dir {s.run_dir}   (then http://127.0.0.1:8321/ui/)\n"
            f"  Perfetto:  tether trace export --chrome trace.json --trace-dir {s.run_dir}")

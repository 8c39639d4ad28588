"""Tracing: OpenTelemetry spans (GenAI conventions + ``tether.*``), a local OTLP-JSON store, the UI.

Off unless ``enable`` is called (or ``TETHER_TRACE_DIR`` is set in an actor's environment);
when off, every helper is a no-op and the engine has no listener. See docs/tracing.md.
"""

from tether.runtime.tracing.spans import (SEMCONV_VERSION, TraceSettings, current_traceparent, disable, enable, enabled,
                                          from_env, remote_parent, shutdown, span, tracer)

__all__ = ["SEMCONV_VERSION", "TraceSettings", "current_traceparent", "disable", "enable", "enabled", "from_env",
           "remote_parent", "shutdown", "span", "tracer"]

"""Engine events -> spans: each request's queue / prefill / decode, pins, and the KV pool.

``EngineSpans`` is an ``EventBus`` listener (the engine imports nothing of tracing); it is only
registered when tracing is on, so an engine without it pays nothing. Spans are children of the
caller's ``chat`` span (its ``traceparent``, or the context current when the request is queued);
times come from the engine's clock, so a simulation's spans lie on its virtual clock.

- ``tether.engine.queue`` / ``prefill`` / ``decode``: one request's phases (a preempted request
  queues and prefills again: ``tether.engine.recompute``). KV events of the request are events
  on the phase open at the time: ``tether.kv.prefix_hit``, ``tether.kv.pin_hit``,
  ``tether.kv.host_swap_in``, ``tether.kv.reuse`` (with the producer's span id, for arrows).
- ``tether.kv.pin``: a program's pin, from ``pin`` to its hit, expiry or release (events).
- ``tether.kv.pool``: windows of the pool's occupancy (``tether.kv.occupancy`` events),
  evictions and host-tier copies, one trace per engine.

Example::

    engine.add_listener(EngineSpans(engine.core, tracing.tracer()))
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from tether.engine.events import EngineEvent

POOL_WINDOW_S = 10.0      # a pool span covers at most this long (engine clock) ...
POOL_WINDOW_EVENTS = 1000  # ... or this many events (spans.MAX_EVENTS are kept per span)
SAMPLE_EVERY_S = 0.1      # occupancy samples, at most one per this long unless usage jumps
_PRODUCERS = 50_000       # requests (programs) whose span ids (contexts) are kept: reuse arrows, pins


@dataclass
class _Req:
    rid: str
    parent: Any            # the OpenTelemetry context the phases hang under
    program_id: str | None
    arrival: float
    phase: str = "queue"
    span: Any = None
    wrapper: Any = None    # a tether.engine.request span, when the request came with no caller span
    recompute: bool = False
    decode_at_step: bool = False
    prompt_tokens: int = 0
    chunks: int = 0
    events: list = field(default_factory=list)


class EngineSpans:
    """Turns one engine core's ``EngineEvent``s into spans (see the module doc)."""

    def __init__(self, core: Any, tracer: Any, epoch_offset_s: float | None = None,
                 attributes: dict[str, Any] | None = None, sample_every_s: float = SAMPLE_EVERY_S):
        self.core = core
        self.tracer = tracer
        # engine seconds -> Unix seconds: a real clock is monotonic; a virtual one starts at 0
        self.offset = time.time() - core.clock.now() if epoch_offset_s is None else epoch_offset_s
        self.attributes = dict(attributes or {})
        self.sample_every_s = sample_every_s
        self.parents: dict[str, Any] = {}       # request id -> context, set by the caller before it queues
        self.reqs: dict[str, _Req] = {}
        self.program_parent: OrderedDict[str, Any] = OrderedDict()  # a program's last chat: its pins hang there
        self.pins: dict[str, Any] = {}
        self.producers: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._pool_span: Any = None
        self._pool_start = 0.0
        self._pool_events = 0
        self._evicted = 0
        self._last_sample = -1e18
        self._last_used = -1
        self._host_hit = self._kv_counter("host_hit_tokens")
        self._host_stored = self._kv_counter("host_stored_blocks")

    # ---- plumbing -----------------------------------------------------------------------
    def ns(self, t: float) -> int:
        return int((t + self.offset) * 1e9)

    def expect(self, request_id: str, parent: Any) -> None:
        """The request ``request_id`` will be queued on behalf of the span in context ``parent``."""
        self.parents[request_id] = parent

    def _kv_counter(self, name: str) -> int:
        return self.core.kv.counters.get(name, 0)

    def _start(self, name: str, parent: Any, t: float, attrs: dict[str, Any]) -> Any:
        return self.tracer.start_span(name, context=parent, start_time=self.ns(t),
                                      attributes={**self.attributes, **{k: v for k, v in attrs.items()
                                                                        if v is not None}})

    def __call__(self, ev: EngineEvent) -> None:
        handler = getattr(self, "_on_" + ev.kind, None)
        if handler is not None:
            handler(ev)

    # ---- one request ---------------------------------------------------------------------
    def _on_queued(self, ev: EngineEvent) -> None:
        parent = self.parents.pop(ev.request_id, None) or otel_context.get_current()
        r = _Req(ev.request_id, parent, ev.program_id, ev.time, prompt_tokens=ev.data.get("prompt_tokens", 0))
        if not otel_trace.get_current_span(parent).get_span_context().is_valid:  # no caller span: a root of its own
            r.wrapper = self._start("tether.engine.request", parent, ev.time,
                                    {"tether.request.id": ev.request_id, "tether.program.id": ev.program_id})
            r.parent = otel_trace.set_span_in_context(r.wrapper)
        if ev.program_id is not None:
            self.program_parent[ev.program_id] = parent
            self.program_parent.move_to_end(ev.program_id)
            if len(self.program_parent) > _PRODUCERS:  # bounded: a server sees programs without end
                self.program_parent.popitem(last=False)
        self.reqs[ev.request_id] = r
        r.span = self._phase_span("queue", r, ev)

    def _phase_span(self, phase: str, r: _Req, ev: EngineEvent) -> Any:
        r.phase = phase
        return self._start(f"tether.engine.{phase}", r.parent, ev.time, {
            "tether.request.id": r.rid, "tether.program.id": r.program_id,
            "tether.engine.recompute": r.recompute or None})

    def _switch(self, r: _Req, phase: str, ev: EngineEvent, t: float | None = None) -> None:
        self._end_phase(r, ev.time if t is None else t)
        r.span = self._phase_span(phase, r, ev)

    def _end_phase(self, r: _Req, t: float, attrs: dict[str, Any] | None = None) -> None:
        if r.span is None:
            return
        if r.phase == "prefill":
            r.span.set_attribute("tether.engine.prefill_chunks", r.chunks)
            r.span.set_attribute("tether.engine.prompt_tokens", r.prompt_tokens)
        for k, v in (attrs or {}).items():
            r.span.set_attribute(k, v)
        r.span.end(end_time=self.ns(t))
        r.span = None

    def _event(self, ev: EngineEvent, name: str, attrs: dict[str, Any]) -> None:
        r = self.reqs.get(ev.request_id)
        if r is not None and r.span is not None:
            r.span.add_event(name, {k: v for k, v in attrs.items() if v is not None}, timestamp=self.ns(ev.time))

    def _on_scheduled(self, ev: EngineEvent) -> None:
        r = self.reqs.get(ev.request_id)
        if r is not None and r.phase == "queue":
            self._switch(r, "prefill", ev)
            r.span.set_attribute("tether.engine.queue_s", ev.time - r.arrival)
            self.producers[ev.request_id] = self._ids(r.span)
            if len(self.producers) > _PRODUCERS:
                self.producers.popitem(last=False)

    def _on_prefill_chunk(self, ev: EngineEvent) -> None:
        r = self.reqs.get(ev.request_id)
        if r is None:
            return
        if r.phase == "queue":  # back after a preemption: recompute
            r.recompute = True
            self._switch(r, "prefill", ev)
        r.chunks += 1
        seq = self.core.seqs.get(ev.request_id)
        if r.recompute and seq is not None and ev.data.get("computed", 0) + ev.data.get("tokens", 0) >= seq.num_tokens:
            r.decode_at_step = True  # the recompute ends with this step; decoding resumes after it

    def _on_first_token(self, ev: EngineEvent) -> None:
        r = self.reqs.get(ev.request_id)
        if r is not None and r.phase == "prefill":
            self._end_phase(r, ev.time, {"gen_ai.response.time_to_first_chunk": ev.time - r.arrival,
                                         "tether.engine.ttft_s": ev.time - r.arrival})
            r.span = self._phase_span("decode", r, ev)

    def _on_preempted(self, ev: EngineEvent) -> None:
        r = self.reqs.get(ev.request_id)
        if r is not None:
            self._event(ev, "tether.engine.preempted", {})
            r.recompute = True
            self._switch(r, "queue", ev)

    def _on_finished(self, ev: EngineEvent) -> None:
        r = self.reqs.pop(ev.request_id, None)
        if r is None:
            return
        self._end_phase(r, ev.time, {"gen_ai.response.finish_reasons": [ev.data.get("reason") or ""],
                                     "gen_ai.usage.output_tokens": ev.data.get("output_tokens", 0)})
        if r.wrapper is not None:
            r.wrapper.end(end_time=self.ns(ev.time))

    # ---- KV happenings ---------------------------------------------------------------------
    def _on_prefix_hit(self, ev: EngineEvent) -> None:
        host_hit = self._kv_counter("host_hit_tokens")
        host_tokens, self._host_hit = host_hit - self._host_hit, host_hit
        self._event(ev, "tether.kv.prefix_hit", {"tether.kv.tokens": ev.data.get("tokens", 0)})
        if host_tokens > 0:
            self._event(ev, "tether.kv.host_swap_in", {"tether.kv.tokens": host_tokens})

    def _on_pin_hit(self, ev: EngineEvent) -> None:
        tokens = ev.data.get("tokens", 0)
        self._event(ev, "tether.kv.pin_hit", {"tether.kv.tokens": tokens})
        self._end_pin(ev.program_id, ev.time, "tether.kv.pin_hit", {"tether.kv.tokens": tokens,
                                                                    "tether.request.id": ev.request_id})

    def _on_reuse(self, ev: EngineEvent) -> None:
        d = ev.data
        src = self.producers.get(d.get("source_request_id") or "")
        self._event(ev, "tether.kv.reuse", {
            "tether.kv.segment": d.get("segment"), "tether.kv.reuse.source_request_id": d.get("source_request_id"),
            "tether.kv.reuse.source_program_id": d.get("source_program_id"),
            "tether.kv.reuse.placed": d.get("placed"), "tether.kv.reuse.recomputed": d.get("recomputed"),
            "tether.kv.reuse.position": d.get("position"),
            "tether.kv.reuse.source_trace_id": src[0] if src else None,
            "tether.kv.reuse.source_span_id": src[1] if src else None})

    def _on_pin(self, ev: EngineEvent) -> None:
        pid = ev.program_id
        self._end_pin(pid, ev.time, "tether.kv.pin_release", {"tether.kv.reason": "replaced"})
        parent = self.program_parent.get(pid) or otel_context.get_current()
        s = self._start("tether.kv.pin", parent, ev.time, {
            "tether.program.id": pid, "tether.kv.tokens": ev.data.get("tokens"),
            "tether.kv.ttl_s": ev.data.get("ttl_s")})
        s.add_event("tether.kv.pin", {"tether.kv.tokens": ev.data.get("tokens", 0),
                                      "tether.kv.ttl_s": float(ev.data.get("ttl_s", 0.0))}, timestamp=self.ns(ev.time))
        self.pins[pid] = s

    def _on_expiry(self, ev: EngineEvent) -> None:
        self._end_pin(ev.program_id, ev.time, "tether.kv.pin_expiry", {"tether.kv.tokens": ev.data.get("tokens")})

    def _on_release(self, ev: EngineEvent) -> None:
        self._end_pin(ev.program_id, ev.time, "tether.kv.pin_release", {"tether.kv.tokens": ev.data.get("tokens"),
                                                                        "tether.kv.reason": ev.data.get("reason")})

    def _end_pin(self, program_id: str | None, t: float, name: str, attrs: dict[str, Any]) -> None:
        s = self.pins.pop(program_id, None)
        if s is None:
            return
        s.add_event(name, {k: v for k, v in attrs.items() if v is not None}, timestamp=self.ns(t))
        s.set_attribute("tether.kv.pin.outcome", name.rsplit(".", 1)[-1])
        s.end(end_time=self.ns(t))

    def _on_eviction(self, ev: EngineEvent) -> None:
        self._evicted += 1  # summed into one event per step

    # ---- the pool ----------------------------------------------------------------------------
    def _on_step(self, ev: EngineEvent) -> None:
        for r in self.reqs.values():
            if r.decode_at_step and r.phase == "prefill":
                r.decode_at_step = False
                self._end_phase(r, ev.time)
                r.span = self._phase_span("decode", r, ev)
        t = ev.time
        pool = self._pool(t)
        stored = self._kv_counter("host_stored_blocks")
        if self._evicted:  # one event per step: how many blocks left the device, and how many went to the host
            pool.add_event("tether.kv.eviction", {"tether.kv.blocks": self._evicted,
                                                  "tether.kv.host_swap_out_blocks": stored - self._host_stored},
                           timestamp=self.ns(t))
            self._pool_events += 1
            self._evicted = 0
        self._host_stored = stored
        p = self.core.pool
        jump = abs(p.num_used - self._last_used) >= max(1, p.num_blocks // 50)
        if t - self._last_sample >= self.sample_every_s or jump:
            self._last_sample, self._last_used = t, p.num_used
            host = len(self.core.kv.host) if self.core.kv.host is not None else 0
            pool.add_event("tether.kv.occupancy", {
                "tether.kv.used_blocks": p.num_used, "tether.kv.pinned_blocks": self.core.pins.pinned_blocks,
                "tether.kv.cached_free_blocks": p.num_cached_free, "tether.kv.total_blocks": p.num_blocks,
                "tether.kv.host_blocks": host}, timestamp=self.ns(t))
            self._pool_events += 1

    def _pool(self, t: float) -> Any:
        if self._pool_span is not None and (t - self._pool_start >= POOL_WINDOW_S
                                            or self._pool_events >= POOL_WINDOW_EVENTS):
            self._pool_span.end(end_time=self.ns(t))
            self._pool_span = None
        if self._pool_span is None:
            self._pool_span = self._start("tether.kv.pool", otel_context.Context(), t,
                                          {"tether.kv.total_blocks": self.core.pool.num_blocks})
            self._pool_start, self._pool_events = t, 0
        return self._pool_span

    def close(self) -> None:
        """End what is still open (the last pool window, pins): call when the engine stops."""
        t = self.core.clock.now()
        if self._pool_span is not None:
            self._pool_span.end(end_time=self.ns(t))
            self._pool_span = None
        for pid in list(self.pins):
            self._end_pin(pid, t, "tether.kv.pin_release", {"tether.kv.reason": "trace closed"})

    @staticmethod
    def _ids(span: Any) -> tuple[str, str]:
        c = span.get_span_context()
        return f"{c.trace_id:032x}", f"{c.span_id:016x}"


def attach(core: Any, tracer: Any = None, **kwargs: Any) -> EngineSpans | None:
    """Register ``EngineSpans`` on ``core`` when tracing is on in this process; None when off."""
    from tether.runtime.tracing.spans import tracer as current
    t = tracer or current()
    if t is None:
        return None
    listener = EngineSpans(core, t, **kwargs)
    core.add_listener(listener)
    return listener

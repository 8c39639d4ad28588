"""Spans for a simulated replay, on its virtual clock: the same shapes a real run writes.

Per program ``invoke_agent {program}``, per turn ``chat {model}`` (with the engine's queue /
prefill / decode under it, from ``EngineSpans``), per tool wait ``execute_tool {tool}``, plus
pins and the KV pool. Virtual second 0 is the wall time the replay started. Example::

    spans = SimSpans.open(core, "tether", trace_dir)      # None when trace_dir is None
    spans.turn_arrived("p1", 0, "p1/0", 0.0)
    ... core.step() ...
    spans.turn_finished("p1", out, tool="pytest", wait_s=3.0, last=False)
    spans.close()
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opentelemetry import trace as otel_trace

from tether.runtime.tracing import spans
from tether.runtime.tracing.engine_spans import EngineSpans


class SimSpans:
    """Writes one simulated run's spans into its own run folder of the store."""

    def __init__(self, core: Any, policy: str, run_dir: Path, model: str = "sim"):
        self.core = core
        self.run_dir = run_dir
        self.model = model
        self.tracer = spans.tracer()
        self.epoch = time.time() - core.clock.now()
        # a simulated run lasts hours of virtual time: one occupancy sample a second is plenty
        self.engine = EngineSpans(core, self.tracer, self.epoch, {"tether.policy": policy}, sample_every_s=1.0)
        core.add_listener(self.engine)
        self.programs: dict[str, Any] = {}
        self.chats: dict[str, Any] = {}  # request id -> open chat span

    @classmethod
    def open(cls, core: Any, policy: str, trace_dir: str | Path | None, mode: str = "sim") -> "SimSpans | None":
        """Start a run folder ``<trace_dir>/<time>-replay-<mode>-<policy>``; None when ``trace_dir`` is None."""
        if trace_dir is None:
            return None
        run_dir = spans.enable(trace_dir, kind=f"replay-{mode}-{policy}", service="tether.replay", export_env=False,
                               batch=True)
        return cls(core, policy, run_dir)

    def _ns(self, t: float) -> int:
        return int((t + self.epoch) * 1e9)

    def turn_arrived(self, program_id: str, turn: int, request_id: str, t: float, tool: str | None = None) -> None:
        """Turn ``turn`` of the program reaches the engine at virtual time ``t`` (request ``request_id``)."""
        prog = self.programs.get(program_id)
        if prog is None:
            prog = self.programs[program_id] = self.tracer.start_span(
                f"invoke_agent {program_id}", start_time=self._ns(t), context=None, attributes={
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "replay",
                    "gen_ai.agent.id": program_id, "tether.program.id": program_id, "tether.span.kind": "program"})
        ctx = otel_trace.set_span_in_context(prog)
        chat = self.tracer.start_span(f"chat {self.model}", context=ctx, start_time=self._ns(t), attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "tether", "gen_ai.request.model": self.model,
            "gen_ai.agent.name": "replay", "tether.program.id": program_id, "tether.turn": turn,
            "tether.request.id": request_id})
        self.chats[request_id] = chat
        self.engine.expect(request_id, otel_trace.set_span_in_context(chat))

    def turn_finished(self, program_id: str, out: Any, tool: str | None, wait_s: float, last: bool,
                      tool_key: str | None = None) -> None:
        """The turn's final output ``out``; then its tool runs for ``wait_s`` (virtual), or the program ends."""
        chat = self.chats.pop(out.request_id, None)
        m = out.metrics
        if chat is not None:
            chat.set_attributes({k: v for k, v in {
                "gen_ai.response.finish_reasons": [out.finish_reason or ""],
                "gen_ai.usage.input_tokens": m.prompt_tokens, "gen_ai.usage.output_tokens": m.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": m.prefix_hit_tokens,
                "tether.usage.reused_tokens": getattr(m, "reused_tokens", None), "tether.engine.ttft_s": m.ttft,
                "tether.tool_calls": 1 if tool else 0}.items() if v is not None})
            chat.end(end_time=self._ns(m.finished_time))
        prog = self.programs.get(program_id)
        if prog is None:
            return
        if tool is not None and not last:
            ctx = otel_trace.set_span_in_context(prog)
            attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                     "gen_ai.tool.call.id": f"{out.request_id}/tool", "gen_ai.tool.type": "function",
                     "tether.program.id": program_id, "tether.tool.key": tool_key, "gen_ai.agent.name": "replay"}
            s = self.tracer.start_span(f"execute_tool {tool}", context=ctx, start_time=self._ns(m.finished_time),
                                       attributes={k: v for k, v in attrs.items() if v is not None})
            s.end(end_time=self._ns(m.finished_time + wait_s))
        if last:
            self.programs.pop(program_id).end(end_time=self._ns(m.finished_time))

    def close(self) -> Path:
        """End what is open (at the clock's time) and flush the run; returns its folder."""
        t = self.core.clock.now()
        for s in self.chats.values():
            s.end(end_time=self._ns(t))
        for s in self.programs.values():
            s.end(end_time=self._ns(t))
        self.engine.close()
        spans.shutdown()
        return self.run_dir

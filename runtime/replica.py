"""``EngineReplica``: a Ray actor wrapping one engine (one per GPU on a cluster).

The runtime creates replicas with ``max_restarts``: when one dies, Ray starts a new
one (a fresh engine: the old one's KV is gone) and the router sends it new programs
once it answers ``ping`` with a new ``incarnation``.
"""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

import ray

from tether.engine import Engine, EngineConfig, Request, RequestOutput, RequestRejected
from tether.engine.stream_api import PromptStream
from tether.runtime import tracing
from tether.runtime.client import LocalClient
from tether.runtime.tracing.engine_spans import attach


class EngineReplicaImpl(LocalClient):
    """The actor's body: the in-process client, plus what only a remote caller needs."""

    def __init__(self, config: EngineConfig):
        if config.device == "cpu":
            # Ray starts an actor that asks for no CPUs with OMP_NUM_THREADS=1, so torch would run the
            # model on one core; the replica is the node's compute, so it gets every core it may use
            # ($TETHER_CPU_THREADS overrides: on a machine shared with other work, 1 avoids threads
            # spinning at barriers while their partner waits for a core).
            import os

            import torch
            torch.set_num_threads(int(os.environ.get("TETHER_CPU_THREADS") or len(os.sched_getaffinity(0))))
        super().__init__(Engine(config))
        self.incarnation = uuid.uuid4().hex  # a new one each time Ray (re)starts the actor
        tracing.from_env("tether.replica")
        self._spans = attach(self.engine.core)  # None when tracing is off: the engine gets no listener
        self._open: dict[str, PromptStream] = {}  # streamed prompts driven by a RemoteStream, by request id

    def _traced(self, request: Request, trace: str | None) -> None:
        """The caller's span (W3C ``traceparent`` in the call) becomes the parent of the request's spans."""
        if self._spans is not None and trace:
            self._spans.expect(request.request_id, tracing.spans.parent_context(trace))

    async def ready(self) -> dict[str, Any]:
        return {"model": self.engine.config.model, "model_path": str(self.engine.model_path),
                "policy": self.engine.config.policy, "kv_blocks": self.engine.stats().get("kv_blocks_total"),
                "max_model_len": self.engine.core.max_model_len,
                "incarnation": self.incarnation}

    async def ping(self) -> str:
        """The health check: this instance's ``incarnation`` (a new one after a restart)."""
        return self.incarnation

    async def generate_stream(self, request: Request, trace: str | None = None) -> AsyncIterator[RequestOutput]:
        """Stream outputs back to the caller (a Ray streaming generator); ``trace``: the caller's traceparent."""
        self._traced(request, trace)
        async for out in self.engine.generate(request):
            yield out

    async def generate_full(self, request: Request, trace: str | None = None) -> list[RequestOutput]:
        """All outputs in one reply: one round trip for callers that do not stream."""
        self._traced(request, trace)
        return [out async for out in self.engine.generate(request)]


    # ---- streamed prompts (runtime/remote_stream.py drives these) --------------------------------
    async def stream_open(self, request: Request, trace: str | None = None) -> None:
        """``Engine.open(request)``, kept here until its outputs end or ``stream_close``."""
        self._traced(request, trace)
        if request.request_id in self._open:
            raise RequestRejected(f"request_id {request.request_id!r} is already in flight; use a unique id")
        self._open[request.request_id] = self.engine.open(request)

    def _stream(self, request_id: str) -> PromptStream:
        stream = self._open.get(request_id)
        if stream is None:
            raise RequestRejected(f"no open streamed prompt {request_id!r} on this replica "
                                  "(finished, closed or never opened)")
        return stream

    async def stream_append(self, request_id: str, chunk: str | list[int]) -> None:
        await self._stream(request_id).append(chunk)

    async def stream_replace(self, request_id: str, new: str | list[int]) -> int:
        return await self._stream(request_id).replace(new)

    async def stream_seal(self, request_id: str) -> None:
        await self._stream(request_id).seal()  # answers once applied: a failure reaches the caller

    async def stream_progress(self, request_id: str) -> dict[str, int | None]:
        return await self._stream(request_id).progress()

    async def stream_outputs(self, request_id: str) -> AsyncIterator[RequestOutput]:
        """The stream's outputs (a Ray streaming generator); it is forgotten once they end."""
        stream = self._stream(request_id)
        try:
            async for out in stream:
                yield out
        finally:
            self._open.pop(request_id, None)

    async def stream_close(self, request_id: str) -> None:
        """Abort it (if still running) and free its blocks; a no-op for one already gone."""
        stream = self._open.pop(request_id, None)
        if stream is not None:
            await stream.aclose()


# Async actor: many requests in flight, all driven by the engine's own step loop.
EngineReplica = ray.remote(max_concurrency=10_000)(EngineReplicaImpl)

"""``EngineReplica``: a Ray actor wrapping one engine (one per GPU on a cluster).

The runtime creates replicas with ``max_restarts``: when one dies, Ray starts a new
one (a fresh engine: the old one's KV is gone) and the router sends it new programs
once it answers ``ping`` with a new ``incarnation``.
"""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

import ray

from tether.engine import Engine, EngineConfig, Request, RequestOutput
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


# Async actor: many requests in flight, all driven by the engine's own step loop.
EngineReplica = ray.remote(max_concurrency=10_000)(EngineReplicaImpl)

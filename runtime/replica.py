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
from tether.runtime.client import LocalClient


class EngineReplicaImpl(LocalClient):
    """The actor's body: the in-process client, plus what only a remote caller needs."""

    def __init__(self, config: EngineConfig):
        super().__init__(Engine(config))
        self.incarnation = uuid.uuid4().hex  # a new one each time Ray (re)starts the actor

    async def ready(self) -> dict[str, Any]:
        return {"model": self.engine.config.model, "model_path": str(self.engine.model_path),
                "policy": self.engine.config.policy, "kv_blocks": self.engine.stats().get("kv_blocks_total"),
                "max_model_len": self.engine.core.max_model_len,
                "incarnation": self.incarnation}

    async def ping(self) -> str:
        """The health check: this instance's ``incarnation`` (a new one after a restart)."""
        return self.incarnation

    async def generate_stream(self, request: Request) -> AsyncIterator[RequestOutput]:
        """Stream outputs back to the caller (a Ray streaming generator)."""
        async for out in self.engine.generate(request):
            yield out

    async def generate_full(self, request: Request) -> list[RequestOutput]:
        """All outputs in one reply: one round trip for callers that do not stream."""
        return [out async for out in self.engine.generate(request)]


# Async actor: many requests in flight, all driven by the engine's own step loop.
EngineReplica = ray.remote(max_concurrency=10_000)(EngineReplicaImpl)

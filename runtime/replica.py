"""``EngineReplica``: a Ray actor wrapping one engine (one per GPU on a cluster)."""

from __future__ import annotations

from typing import Any, AsyncIterator

import ray

from tether.engine import Engine, EngineConfig, Request, RequestOutput
from tether.runtime.client import LocalClient


class EngineReplicaImpl(LocalClient):
    """The actor's body: the in-process client, plus what only a remote caller needs."""

    def __init__(self, config: EngineConfig):
        super().__init__(Engine(config))

    async def ready(self) -> dict[str, Any]:
        return {"model": self.engine.config.model, "model_path": str(self.engine.model_path),
                "policy": self.engine.config.policy, "kv_blocks": self.engine.stats().get("kv_blocks_total")}

    async def generate_stream(self, request: Request) -> AsyncIterator[RequestOutput]:
        """Stream outputs back to the caller (a Ray streaming generator)."""
        async for out in self.engine.generate(request):
            yield out

    async def generate_full(self, request: Request) -> list[RequestOutput]:
        """All outputs in one reply: one round trip for callers that do not stream."""
        return [out async for out in self.engine.generate(request)]


# Async actor: many requests in flight, all driven by the engine's own step loop.
EngineReplica = ray.remote(max_concurrency=10_000)(EngineReplicaImpl)

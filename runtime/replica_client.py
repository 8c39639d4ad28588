"""``ReplicaClient``: the ``LLMClient`` that reaches engine replicas through Ray."""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

import ray
from ray.exceptions import RayActorError

from tether.engine import EngineError, Request, RequestOutput
from tether.runtime.client import LLMClient


SUMMED_STATS = ("requests", "finished", "prompt_tokens", "generated_tokens", "prefix_hit_tokens", "running",
                "waiting", "kv_blocks_used", "kv_blocks_total", "preemptions", "tool_hints", "programs_ended")


def merge_stats(per_replica: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum counters over replicas; TTFT p50 is the first live replica's (they serve alike)."""
    total: dict[str, Any] = {"replicas": per_replica}
    for key in SUMMED_STATS:
        total[key] = sum(p.get(key, 0) or 0 for p in per_replica)
    live = [p for p in per_replica if not p.get("dead")]
    total["ttft_p50"] = live[0].get("ttft_p50") if live else None
    return total


class ReplicaDied(EngineError):
    """The engine replica serving this call died."""


class ReplicaClient(LLMClient):
    """Routes each program's calls to its replica (asking the router once per program).

    Example::

        client = ReplicaClient(replicas, router, tokenizer, "default")
        out = await client.complete(Request(messages=[...], program_id="p1"))
    """

    def __init__(self, replicas: list, router, tokenizer: Any, model_name: str):
        self.replicas = replicas
        self.router = router
        self.tokenizer = tokenizer
        self.model_name = model_name
        self._route: dict[str, int] = {}

    async def _replica(self, program_id: str | None) -> tuple[int, Any]:
        key = program_id or f"anon-{uuid.uuid4().hex}"
        idx = self._route.get(key)
        if idx is None:
            idx = await self.router.route.remote(key)
            if program_id is not None:
                self._route[key] = idx
            else:
                await self.router.done.remote(key)
        return idx, self.replicas[idx]

    async def _died(self, idx: int, e: Exception) -> ReplicaDied:
        await self.router.mark_dead.remote(idx)
        return ReplicaDied(f"engine replica {idx} died: {type(e).__name__}")

    async def generate(self, request: Request) -> AsyncIterator[RequestOutput]:
        idx, replica = await self._replica(request.program_id)
        finished = False
        try:
            gen = replica.generate_stream.options(num_returns="streaming").remote(request)
            async for ref in gen:
                out = await ref
                finished = out.finished
                yield out
        except RayActorError as e:
            raise await self._died(idx, e) from None
        finally:
            if not finished:  # the caller stopped early or was cancelled: free the engine's blocks
                try:
                    replica.abort.remote(request.request_id)
                except RayActorError:
                    pass

    async def complete(self, request: Request) -> list[RequestOutput]:
        """All outputs of one request in a single actor round trip (no streaming)."""
        idx, replica = await self._replica(request.program_id)
        ref = replica.generate_full.remote(request)
        try:
            return await ref
        except RayActorError as e:
            raise await self._died(idx, e) from None
        except BaseException:
            ray.cancel(ref)
            replica.abort.remote(request.request_id)
            raise

    async def abort(self, request_id: str) -> None:
        for r in self.replicas:
            r.abort.remote(request_id)

    async def stats(self) -> dict[str, Any]:
        per = []
        for i, r in enumerate(self.replicas):
            try:
                per.append(await r.stats.remote())
            except RayActorError:
                per.append({"dead": True, "replica": i})
        return merge_stats(per)

    async def tool_hint(self, program_id: str, tool_names: list[str]) -> None:
        _, replica = await self._replica(program_id)
        replica.tool_hint.remote(program_id, tool_names)

    async def end_program(self, program_id: str) -> None:
        idx = self._route.pop(program_id, None)
        if idx is not None:
            try:
                await self.replicas[idx].end_program.remote(program_id)
            except RayActorError:
                pass
        await self.router.done.remote(program_id)

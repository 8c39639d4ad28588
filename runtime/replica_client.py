"""``ReplicaClient``: the ``LLMClient`` that reaches engine replicas through Ray."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import ray
from ray.exceptions import RayActorError

from tether.engine import EngineError, Request, RequestOutput
from tether.runtime.client import LLMClient
from tether.runtime.remote_stream import RemoteStream
from tether.runtime.tracing import current_traceparent


def _traced(*args: Any) -> tuple:
    """The call's arguments, plus the caller's W3C ``traceparent`` when tracing is on (it parents the engine's spans)."""
    tp = current_traceparent()
    return args if tp is None else (*args, tp)


STATS_TIMEOUT_S = 10.0  # a replica that does not answer a stats call in this long counts as dead for it


def merge_stats(per_replica: list[dict[str, Any]], replica_restarts: int = 0) -> dict[str, Any]:
    """Sum every numeric stat over the live replicas; ``prefix_hit_rate`` and ``reuse_rate`` are
    recomputed from the sums, ``reuse`` (the rule) is the first live replica's,
    and TTFT figures (``ttft_*``) are the first live replica's (they serve alike).

    A dead replica's entry is ``{"dead": True, "replica": i}``; ``replicas_dead`` counts them and
    ``replica_restarts`` is the router's count of restarts (``RouterImpl.status``).
    """
    total: dict[str, Any] = {"replicas": per_replica}
    live = [p for p in per_replica if not p.get("dead")]
    for p in live:
        for key, v in p.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not key.startswith("ttft_"):
                total[key] = total.get(key, 0) + v
    q = total.get("prefix_query_tokens", 0)
    total["prefix_hit_rate"] = total.get("prefix_hit_tokens", 0) / q if q else 0.0
    rq = total.get("reuse_query_tokens", 0)
    total["reuse_rate"] = total.get("reuse_placed_tokens", 0) / rq if rq else 0.0
    if live and "reuse" in live[0]:  # the rule is the config's: the same on every replica
        total["reuse"] = live[0]["reuse"]
    for key in ("ttft_mean", "ttft_p50"):
        total[key] = live[0].get(key) if live else None
    total["replicas_dead"] = len(per_replica) - len(live)
    total["replica_restarts"] = replica_restarts
    return total


def _dead(i: int) -> dict[str, Any]:
    return {"dead": True, "replica": i}


def replica_stats(replicas: list, router: Any, timeout_s: float = STATS_TIMEOUT_S) -> dict[str, Any]:
    """``merge_stats`` of every replica, from synchronous code (the driver): replicas the router
    knows are down, and those that fail or do not answer within ``timeout_s``, count as dead."""
    status = ray.get(router.status.remote(), timeout=timeout_s)
    dead = set(status["dead"])
    refs = {i: r.stats.remote() for i, r in enumerate(replicas) if i not in dead}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    done = set(ready)
    per = []
    for i in range(len(replicas)):
        ref = refs.get(i)
        try:
            per.append(ray.get(ref) if ref is not None and ref in done else _dead(i))
        except RayActorError:
            per.append(_dead(i))
    return merge_stats(per, status["replica_restarts"])


class ReplicaDied(EngineError):
    """The engine replica serving this call died."""


class ReplicaClient(LLMClient):
    """Routes each program's calls to its replica (asking the router once per program).

    Example::

        client = ReplicaClient(replicas, router, tokenizer, "default", policy="tether")
        out = await client.complete(Request(messages=[...], program_id="p1"))

    ``policy`` is the replicas' policy preset (``EngineReplica.ready()["policy"]``), for reporting.
    """

    def __init__(self, replicas: list, router, tokenizer: Any, model_name: str, policy: str | None = None):
        self.replicas = replicas
        self.router = router
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.policy = policy
        self.max_model_len: int | None = None  # the replicas' context, when known: the server checks prompts
        self._route: dict[str, int] = {}
        self._lost: set[str] = set()  # programs whose replica died under them (their KV went with it)

    async def _replica(self, program_id: str) -> tuple[int, Any]:
        idx = self._route.get(program_id)
        if idx is None:
            # One replica: nothing to choose, so no round trip to the router (it still watches health).
            idx = 0 if len(self.replicas) == 1 else await self.router.route.remote(program_id)
            self._route[program_id] = idx
        return idx, self.replicas[idx]

    async def _acquire(self, program_id: str | None) -> tuple[int, Any, str | None]:
        """The replica for one request, and the router key to release when it ends (``None``: nothing
        to release). A request of no program counts in the router's load until it ends."""
        if program_id is not None:
            return *await self._replica(program_id), None
        if len(self.replicas) == 1:
            return 0, self.replicas[0], None
        key = f"anon-{uuid.uuid4().hex}"
        idx = await self.router.route.remote(key)
        return idx, self.replicas[idx], key

    @asynccontextmanager
    async def _routed(self, program_id: str | None) -> AsyncIterator[tuple[int, Any]]:
        """``_acquire`` for the length of a ``with`` block."""
        idx, replica, key = await self._acquire(program_id)
        try:
            yield idx, replica
        finally:
            if key is not None:
                self.router.done.remote(key)

    async def _died(self, idx: int, e: Exception, program_id: str | None) -> ReplicaDied:
        if program_id is not None:
            self._lost.add(program_id)
        await self.router.mark_dead.remote(idx)
        return ReplicaDied(f"engine replica {idx} died: {type(e).__name__}; this request was lost with it "
                           f"(new programs go to the other replicas while it restarts)")

    async def generate(self, request: Request) -> AsyncIterator[RequestOutput]:
        async with self._routed(request.program_id) as (idx, replica):
            finished = False
            try:
                gen = replica.generate_stream.options(num_returns="streaming").remote(*_traced(request))
                async for ref in gen:
                    out = await ref
                    finished = out.finished
                    yield out
            except RayActorError as e:
                finished = True  # nothing left to abort: the engine that ran it is gone
                raise await self._died(idx, e, request.program_id) from None
            finally:
                if not finished:  # the caller stopped early or was cancelled: free the engine's blocks
                    try:
                        replica.abort.remote(request.request_id)
                    except RayActorError:
                        pass

    async def complete(self, request: Request) -> list[RequestOutput]:
        """All outputs of one request in a single actor round trip (no streaming)."""
        async with self._routed(request.program_id) as (idx, replica):
            ref = replica.generate_full.remote(*_traced(request))
            try:
                return await ref
            except RayActorError as e:
                raise await self._died(idx, e, request.program_id) from None
            except BaseException:
                ray.cancel(ref)
                replica.abort.remote(request.request_id)
                raise

    async def open(self, request: Request) -> RemoteStream:
        """A streamed prompt on the program's replica (see ``runtime/remote_stream.py``).

        Example::

            stream = await client.open(Request(messages=[{"role": "user", "content": ""}], program_id="p1"))
            await stream.append("retrieved text ...")
            stream.seal()
            outs = [o async for o in stream]
        """
        idx, replica, key = await self._acquire(request.program_id)

        async def died(e: Exception) -> ReplicaDied:
            return await self._died(idx, e, request.program_id)

        release = None if key is None else (lambda: self.router.done.remote(key))  # when the stream ends
        return await RemoteStream.start(replica, request, _traced(), died, release)

    async def abort(self, request_id: str) -> None:
        for r in self.replicas:
            r.abort.remote(request_id)

    async def stats(self) -> dict[str, Any]:
        """``merge_stats`` over the replicas, with the router's ``replica_restarts``. A replica the router
        knows is down (restarting) is not asked: a call to it would wait for the restart."""
        status = await self.router.status.remote()
        dead = set(status["dead"])

        async def get(ref: Any) -> Any:
            return await ref

        async def one(i: int, replica: Any) -> dict[str, Any]:
            if i in dead:
                return _dead(i)
            try:
                return await asyncio.wait_for(get(replica.stats.remote()), STATS_TIMEOUT_S)
            except (RayActorError, asyncio.TimeoutError):
                return _dead(i)
        per = list(await asyncio.gather(*(one(i, r) for i, r in enumerate(self.replicas))))
        return merge_stats(per, status["replica_restarts"])

    async def tool_hint(self, program_id: str, tool_keys: list[str]) -> None:
        _, replica = await self._replica(program_id)
        replica.tool_hint.remote(program_id, tool_keys)

    async def end_program(self, program_id: str) -> None:
        idx = self._route.pop(program_id, None)
        if program_id in self._lost:  # its engine is gone: nothing to release (a call would wait for the restart)
            self._lost.discard(program_id)
        elif idx is not None:
            try:
                await self.replicas[idx].end_program.remote(program_id)
            except RayActorError:
                pass
        if len(self.replicas) > 1:
            self.router.done.remote(program_id)  # no need to wait: the router's count catches up on its own

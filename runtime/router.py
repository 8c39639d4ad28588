"""The router: all turns of a program go to one replica (its KV lives there);
a new program goes to the live replica with the fewest live programs.

It also watches the replicas (``watch``): a replica that died is left out of new
programs' routing while Ray restarts it (``EngineReplica`` actors have
``max_restarts``), and routed to again once it answers; each restart it sees is
counted in ``status()["replica_restarts"]``. A replica out of restarts stays out.

    router = Router.remote(2)
    router.watch.remote(replicas, [r["incarnation"] for r in ray.get([x.ready.remote() for x in replicas])])
    ray.get(router.status.remote())   # {"dead": [], "replica_restarts": 0, "load": [0, 0]}
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import RayActorError


class RouterImpl:
    def __init__(self, num_replicas: int):
        if num_replicas < 1:
            raise ValueError("the router needs at least one replica")
        self.assignment: dict[str, int] = {}
        self.load = [0] * num_replicas
        self.dead: set[int] = set()  # down now: restarting, or gone for good
        self.restarts = 0
        self.incarnation: list[str | None] = [None] * num_replicas
        self._watchers: list[asyncio.Task] = []

    def route(self, program_id: str) -> int:
        """The replica index for ``program_id`` (sticky once chosen)."""
        idx = self.assignment.get(program_id)
        if idx is None:
            live = [i for i in range(len(self.load)) if i not in self.dead] or list(range(len(self.load)))
            idx = min(live, key=lambda i: (self.load[i], i))
            self.assignment[program_id] = idx
            self.load[idx] += 1
        return idx

    def done(self, program_id: str) -> None:
        idx = self.assignment.pop(program_id, None)
        if idx is not None:
            self.load[idx] -= 1

    def mark_dead(self, idx: int) -> None:
        """New programs avoid a replica that has died (until the watcher sees it answer again)."""
        self.dead.add(idx)

    def seen_alive(self, idx: int, incarnation: str) -> None:
        """The replica answered a ping as ``incarnation``: a new one means Ray restarted it."""
        prev = self.incarnation[idx]
        if prev is not None and incarnation != prev:
            self.restarts += 1
        self.incarnation[idx] = incarnation
        self.dead.discard(idx)

    def status(self) -> dict[str, Any]:
        """``dead``: replica indexes down now (restarting, or out of restarts); ``replica_restarts``:
        restarts seen so far; ``load``: live programs per replica."""
        return {"dead": sorted(self.dead), "replica_restarts": self.restarts, "load": list(self.load)}

    # ---- health (on the actor's event loop) ----------------------------------------------------
    async def watch(self, replicas: list, incarnations: list[str | None] | None = None,
                    interval_s: float = 0.5) -> None:
        """Start pinging every replica every ``interval_s`` (returns at once).

        ``incarnations``: each replica's ``ready()["incarnation"]`` at start, so a restart before
        the first ping still counts.
        """
        for t in self._watchers:
            t.cancel()
        for i, inc in enumerate(incarnations or []):
            if inc is not None:
                self.incarnation[i] = inc
        self._watchers = [asyncio.ensure_future(self._watch_one(i, r, interval_s)) for i, r in enumerate(replicas)]

    async def _watch_one(self, idx: int, replica: Any, interval_s: float) -> None:
        # No timeout on the ping: Ray queues a call to a restarting actor until it is back (the
        # answer then comes from the new incarnation) and fails it at once when the actor is gone
        # for good (then it keeps failing, cheaply, and the replica stays out).
        while True:
            try:
                self.seen_alive(idx, await replica.ping.remote())
            except RayActorError:  # ActorUnavailableError: restarting; ActorDiedError: out of restarts
                self.dead.add(idx)
            await asyncio.sleep(interval_s)


Router = ray.remote(RouterImpl)

"""The router: all turns of a program go to one replica (its KV lives there);
a new program goes to the replica with the fewest live programs."""

from __future__ import annotations

import ray


class RouterImpl:
    def __init__(self, num_replicas: int):
        if num_replicas < 1:
            raise ValueError("the router needs at least one replica")
        self.assignment: dict[str, int] = {}
        self.load = [0] * num_replicas
        self.dead: set[int] = set()

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
        """New programs avoid a replica that has died."""
        self.dead.add(idx)


Router = ray.remote(RouterImpl)

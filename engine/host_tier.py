"""The host-memory tier: blocks evicted from the device pool that are likely needed again
(a program waiting on its tool) are copied here, and copied back when the program
returns, when that beats recomputing them. On a CPU-only machine it is a second
pool with the same logic."""

from __future__ import annotations

from collections import OrderedDict


class HostTier:
    """Content hash -> host block id, least recently stored evicted first.

    Example::

        tier = HostTier(num_blocks=4096)
        host_block = tier.put(block_hash)     # the runner copies device -> host_block
    """

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError("a host tier needs at least one block")
        self.num_blocks = num_blocks
        self._lru: OrderedDict[int, int] = OrderedDict()
        self._free = list(range(num_blocks - 1, -1, -1))
        self.stored_blocks = 0
        self.dropped_blocks = 0

    def lookup(self, block_hash: int) -> int | None:
        return self._lru.get(block_hash)

    def put(self, block_hash: int) -> int:
        """A host block for ``block_hash`` (reusing the oldest entry when full)."""
        if block_hash in self._lru:
            self._lru.move_to_end(block_hash)
            return self._lru[block_hash]
        if self._free:
            bid = self._free.pop()
        else:
            _, bid = self._lru.popitem(last=False)
            self.dropped_blocks += 1
        self._lru[block_hash] = bid
        self.stored_blocks += 1
        return bid

    def __len__(self) -> int:
        return len(self._lru)

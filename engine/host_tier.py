"""The host-memory tier: blocks evicted from the device pool that are likely needed again
(a program waiting on its tool) are copied here, and copied back when the program
returns, when that beats recomputing them. On a CPU-only machine it is a second
pool with the same logic."""

from __future__ import annotations

from collections import OrderedDict


class HostTier:
    """Content hash -> host block id, least recently stored evicted first.

    The caller holds a host block while a copy to or from it is queued for the next
    step: ``put`` does not reuse it until ``release_holds`` (the runner copies all
    swap-outs before all swap-ins, so a reused block would hand over other KV).

    Example::

        tier = HostTier(num_blocks=4096)
        host_block = tier.put(block_hash)     # the runner copies device -> host_block
        tier.hold(host_block)                 # until the step has taken its copies
        tier.release_holds()
    """

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError("a host tier needs at least one block")
        self.num_blocks = num_blocks
        self._lru: OrderedDict[int, int] = OrderedDict()
        self._free = list(range(num_blocks - 1, -1, -1))
        self._held: set[int] = set()  # host blocks with a copy queued for the next step
        self.dropped_blocks = 0

    def lookup(self, block_hash: int) -> int | None:
        return self._lru.get(block_hash)

    def put(self, block_hash: int) -> int | None:
        """A host block for ``block_hash``; when full, the oldest entry that is not held is
        reused. None if every block is held: nothing can be stored now."""
        bid = self._lru.get(block_hash)
        if bid is not None:
            self._lru.move_to_end(block_hash)
        else:
            bid = self._take_block()
            if bid is None:
                return None
            self._lru[block_hash] = bid
        return bid

    def _take_block(self) -> int | None:
        if self._free:
            return self._free.pop()
        # Held entries are only this step's copies: the scan from the oldest ends quickly.
        old = next((h for h, b in self._lru.items() if b not in self._held), None)
        if old is None:
            return None
        self.dropped_blocks += 1
        return self._lru.pop(old)

    def hold(self, host_block: int) -> None:
        """A copy to or from ``host_block`` is queued: don't reuse it until ``release_holds``."""
        self._held.add(host_block)

    def release_holds(self) -> None:
        """The queued copies were taken by a step: every block may be reused again."""
        self._held.clear()

    def __len__(self) -> int:
        return len(self._lru)

"""Physical KV blocks: reference counts, the prefix-cache hash map, free and evictable sets."""

from __future__ import annotations

from collections import deque
from typing import Callable

from tether.engine.eviction import EvictionPolicy


class NoFreeBlocks(RuntimeError):
    pass


class BlockPool:
    """Owns block ids ``0..num_blocks-1``.

    A block is in exactly one state: referenced (ref_count > 0), free and
    unhashed (``_free``), or free but still cached under its content hash
    (in the eviction policy, reusable by a later prefix hit until evicted).
    """

    def __init__(self, num_blocks: int, block_size: int, eviction: EvictionPolicy,
                 on_evict: Callable[[int, int], None] | None = None):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_count = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # content hash -> block id
        self._free: deque[int] = deque(range(num_blocks))
        self.eviction = eviction
        self.on_evict = on_evict  # (block_id, hash) -> None
        self.evicted_blocks = 0

    @property
    def num_free(self) -> int:
        """Blocks an allocation can take now (free plus evictable)."""
        return len(self._free) + len(self.eviction)

    @property
    def num_cached_free(self) -> int:
        return len(self.eviction)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise NoFreeBlocks(f"need {n} blocks, {self.num_free} free")
        out = []
        for _ in range(n):
            if self._free:
                bid = self._free.popleft()
            else:
                bid = self.eviction.pop()
                h = self.block_hash[bid]
                self.block_hash[bid] = None
                if self.cached.get(h) == bid:
                    del self.cached[h]
                self.evicted_blocks += 1
                if self.on_evict is not None:
                    self.on_evict(bid, h)
            self.ref_count[bid] = 1
            out.append(bid)
        return out

    def touch(self, block_ids: list[int]) -> None:
        """Take one more reference on each (cached or already referenced) block."""
        for bid in block_ids:
            if self.ref_count[bid] == 0:
                self.eviction.remove(bid)
            self.ref_count[bid] += 1

    def free(self, block_ids: list[int]) -> None:
        """Drop one reference on each; tail first, so LRU evicts a suffix before its prefix."""
        for bid in reversed(block_ids):
            rc = self.ref_count[bid] - 1
            if rc < 0:
                raise AssertionError(f"block {bid} freed more often than referenced")
            self.ref_count[bid] = rc
            if rc == 0:
                if self.block_hash[bid] is not None:
                    self.eviction.add(bid)
                else:
                    self._free.append(bid)

    def register(self, block_id: int, block_hash: int) -> None:
        """Mark a full, computed block as holding the content named by ``block_hash``."""
        if self.block_hash[block_id] is not None:
            return
        if block_hash in self.cached:
            return  # an identical block is cached already; this copy stays private
        self.block_hash[block_id] = block_hash
        self.cached[block_hash] = block_id

    def lookup(self, block_hash: int) -> int | None:
        return self.cached.get(block_hash)

    def check_consistency(self, expected_refs: dict[int, int]) -> None:
        """Assert every block is in exactly one state and refs equal ``expected_refs``."""
        free = set(self._free)
        assert len(free) == len(self._free), "a block is free twice"
        for bid in range(self.num_blocks):
            rc = self.ref_count[bid]
            assert rc == expected_refs.get(bid, 0), f"block {bid}: ref {rc} != {expected_refs.get(bid, 0)}"
            in_evict = bid in self.eviction
            if rc > 0:
                assert bid not in free and not in_evict, f"referenced block {bid} is also free"
            else:
                assert (bid in free) != in_evict, f"free block {bid} must be free xor evictable"
                if in_evict:
                    assert self.block_hash[bid] is not None and self.cached.get(self.block_hash[bid]) == bid
        for h, bid in self.cached.items():
            assert self.block_hash[bid] == h

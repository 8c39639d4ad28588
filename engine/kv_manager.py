"""The KV cache manager: prefix hits (device and host tier), slot allocation, freeing.

The scheduler's contract with it, in the shape vLLM v1 uses:
``find_cached_prefix`` (device blocks, then host blocks that continue them),
``allocate_slots`` (blocks for n more tokens, or None: it never evicts what is
referenced), ``cache_blocks`` (register computed full blocks under their
hash), ``free``. It returns block ids; it never writes a sequence. Pins hold
blocks through ``hold_cached`` / ``release``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.engine.block_pool import BlockPool
from tether.engine.clock import Clock
from tether.engine.events import EventBus
from tether.engine.host_tier import HostTier
from tether.engine.sequence import Sequence


@dataclass
class PrefixHit:
    """The cached prefix of a prompt: device blocks, then host blocks to copy back after them."""

    device: list[int] = field(default_factory=list)
    host: list[int] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return len(self.device) + len(self.host)


class KVCacheManager:
    """``host_mode``: which evicted blocks the host tier keeps: ``programs`` (those named by
    ``keep_on_host``, i.e. programs in a tool call) or ``all`` (an offload tier under LRU)."""

    def __init__(self, pool: BlockPool, clock: Clock, events: EventBus, enable_prefix_caching: bool = True,
                 host: HostTier | None = None, host_mode: str = "programs"):
        self.pool = pool
        self.block_size = pool.block_size
        self.clock = clock
        self.events = events
        self.enable_prefix_caching = enable_prefix_caching
        self.host = host
        self.host_mode = host_mode
        pool.on_evict = self._on_evict
        self._host_wanted: dict[int, int] = {}  # hash -> how many programs want it kept
        self._num_cached: dict[str, int] = {}    # request id -> leading blocks registered in the cache
        self._swap_out: list[tuple[int, int]] = []  # (device block, host block), copied before the step
        self._swap_in: list[tuple[int, int]] = []   # (host block, device block), copied before the step
        self.counters = {"prefix_hit_tokens": 0, "prefix_query_tokens": 0, "host_stored_blocks": 0,
                         "host_hit_tokens": 0}

    # ---- the contract ------------------------------------------------------------
    def find_cached_prefix(self, seq: Sequence) -> PrefixHit:
        """Cached blocks holding a prefix of ``seq``; never all of it, one token is left to compute."""
        if not self.enable_prefix_caching:
            return PrefixHit()
        hashes = seq.block_hashes(self.block_size)[:(seq.num_tokens - 1) // self.block_size]
        device = self.cached_prefix(hashes)
        host = []
        if self.host is not None:
            for h in hashes[len(device):]:
                hb = self.host.lookup(h)
                if hb is None:
                    break
                host.append(hb)
        return PrefixHit(device, host)

    def allocate_slots(self, seq: Sequence, num_new_tokens: int, hit: PrefixHit | None = None,
                       reserve: int = 0) -> list[int] | None:
        """Blocks to append to ``seq.block_table`` so ``num_new_tokens`` more tokens fit, leaving
        ``reserve`` blocks free; None (and nothing changed) when they don't fit.

        With ``hit`` (admission; ``seq`` holds no blocks), the returned blocks start with the
        hit: its device blocks, then fresh blocks the host copies are loaded into.
        """
        admitting = hit is not None
        hit = hit or PrefixHit()
        have = hit.num_blocks if admitting else len(seq.block_table)
        computed = hit.num_blocks * self.block_size if admitting else seq.num_computed_tokens
        fresh = max(0, -(-(computed + num_new_tokens) // self.block_size) - have) + len(hit.host)
        touched = sum(1 for b in hit.device if self.pool.ref_count[b] == 0)  # evictable hits stop being free
        if fresh + reserve > self.pool.num_free - touched:
            return None
        # Hold the host blocks to copy back first: the allocation below may evict device
        # blocks to the host, and must not reuse these before the step copies them.
        for hb in hit.host:
            self.host.hold(hb)
        self.pool.touch(hit.device)
        new = self.pool.allocate(fresh)
        hashes = seq.block_hashes(self.block_size)
        for i, (hb, bid) in enumerate(zip(hit.host, new)):  # filled from the host before the step runs
            self.pool.register(bid, hashes[len(hit.device) + i])
            self._swap_in.append((hb, bid))
        if admitting:
            self._count_hit(seq, hit)
        return hit.device + new

    def cache_blocks(self, seq: Sequence) -> None:
        """Register the blocks that became full and computed, so later requests can hit them."""
        if not self.enable_prefix_caching:
            return
        hashes = seq.block_hashes(self.block_size)
        full = min(seq.num_computed_tokens // self.block_size, len(hashes))
        start = self._num_cached.get(seq.request_id, 0)
        for i in range(start, full):
            self.pool.register(seq.block_table[i], hashes[i])
        self._num_cached[seq.request_id] = max(start, full)

    def free(self, seq: Sequence) -> list[int]:
        """Drop ``seq``'s block references; returns the hashes of its cached full blocks."""
        n = self._num_cached.pop(seq.request_id, 0)
        self.pool.free(seq.block_table)
        return seq.block_hashes(self.block_size)[:n] if self.enable_prefix_caching else []

    def is_private(self, block_id: int) -> bool:
        """Held by one sequence and not in the prefix cache: safe to write again."""
        return self.pool.ref_count[block_id] == 1 and self.pool.block_hash[block_id] is None

    def rollback(self, seq: Sequence, keep_blocks: int) -> None:
        """Drop ``seq``'s blocks past its first ``keep_blocks`` (a streamed prompt was revised).

        The caller truncates ``seq.block_table``; only full kept blocks stay registered for it."""
        self.pool.free(seq.block_table[keep_blocks:])
        if seq.request_id in self._num_cached:
            self._num_cached[seq.request_id] = min(self._num_cached[seq.request_id], keep_blocks)

    # ---- pins: references held outside any sequence --------------------------------
    def cached_prefix(self, hashes: list[int]) -> list[int]:
        """Device blocks caching the leading ``hashes``, up to the first one not cached."""
        hit = []
        for h in hashes:
            bid = self.pool.lookup(h)
            if bid is None:
                break
            hit.append(bid)
        return hit

    def hold_cached(self, hashes: list[int]) -> list[int]:
        """Take a reference on the cached prefix of ``hashes``; returns the blocks held."""
        blocks = self.cached_prefix(hashes)
        self.pool.touch(blocks)
        return blocks

    def release(self, block_ids: list[int]) -> None:
        self.pool.free(block_ids)

    # ---- the host tier -----------------------------------------------------------
    def keep_on_host(self, hashes: list[int]) -> None:
        """If these blocks are evicted from the device, keep a copy on the host tier."""
        for h in hashes:
            self._host_wanted[h] = self._host_wanted.get(h, 0) + 1

    def unkeep_on_host(self, hashes: list[int]) -> None:
        for h in hashes:
            n = self._host_wanted.get(h, 0) - 1
            if n > 0:
                self._host_wanted[h] = n
            else:
                self._host_wanted.pop(h, None)

    def _on_evict(self, block_id: int, block_hash: int | None) -> None:
        self.events.emit("eviction", self.clock.now(), block_id=block_id, tokens=self.block_size)
        if self.host is None or block_hash is None or self.host.lookup(block_hash) is not None:
            return
        if self.host_mode != "all" and block_hash not in self._host_wanted:
            return
        hb = self.host.put(block_hash)
        if hb is None:  # every host block has a copy queued this step: this KV is dropped
            return
        self.host.hold(hb)
        self._swap_out.append((block_id, hb))
        self.counters["host_stored_blocks"] += 1

    def take_swaps(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The copies to run before the next step; their host blocks may be reused after."""
        out, into = self._swap_out, self._swap_in
        self._swap_out, self._swap_in = [], []
        if self.host is not None:
            self.host.release_holds()
        return out, into

    def _count_hit(self, seq: Sequence, hit: PrefixHit) -> None:
        tokens = hit.num_blocks * self.block_size
        self.counters["prefix_hit_tokens"] += tokens
        self.counters["prefix_query_tokens"] += seq.num_tokens
        self.counters["host_hit_tokens"] += len(hit.host) * self.block_size
        if tokens:
            self.events.emit("prefix_hit", self.clock.now(), seq.request_id, seq.program_id, tokens=tokens)

"""Block tables, prefix hits and pins on top of the block pool.

Full blocks are named by a hash chained on the previous block's hash, the
block's token ids and an extra key, so equal prefixes share blocks across
requests. A pin keeps the blocks of a program's last finished request
referenced across a tool call (Continuum), until its TTL expires, the
program's next request takes them as its prefix, or it is released.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.engine.block_pool import BlockPool
from tether.engine.clock import Clock
from tether.engine.events import EventBus
from tether.engine.host_tier import HostTier
from tether.engine.sequence import Sequence


def hash_block(parent: int | None, token_ids: tuple[int, ...], extra_key: object = None) -> int:
    return hash((parent, token_ids, extra_key))


@dataclass
class Pin:
    program_id: str
    block_ids: list[int]
    created: float
    expires_at: float
    value: float = 0.0  # expected benefit; the least valuable pin goes first under pressure

    @property
    def num_blocks(self) -> int:
        return len(self.block_ids)


class KVCacheManager:
    def __init__(self, pool: BlockPool, clock: Clock, events: EventBus, enable_prefix_caching: bool = True,
                 host: HostTier | None = None):
        self.pool = pool
        self.block_size = pool.block_size
        self.clock = clock
        self.events = events
        self.enable_prefix_caching = enable_prefix_caching
        self.pins: dict[str, Pin] = {}
        self.host = host
        self._host_wanted: dict[int, int] = {}          # hash -> how many programs want it kept
        self._host_programs: dict[str, list[int]] = {}  # program -> the hashes it wants kept
        self.swap_out: list[tuple[int, int]] = []       # (device block, host block), copied before the step
        self.swap_in: list[tuple[int, int]] = []        # (host block, device block), copied before the step
        # program id -> hashes of the full blocks of its last finished request. Hashes, not
        # block ids: the cached copy of a block may be another program's (equal prefixes).
        self._last_finished: dict[str, list[int]] = {}
        self.counters = {"prefix_hit_tokens": 0, "prefix_query_tokens": 0, "pins": 0, "pin_hits": 0,
                         "pin_hit_tokens": 0, "pins_expired": 0, "pins_released": 0,
                         "pins_released_under_pressure": 0,
                         "host_stored_blocks": 0, "host_hit_tokens": 0}

    # ---- hashing and prefix hits -------------------------------------------------
    def update_block_hashes(self, seq: Sequence) -> None:
        bs = self.block_size
        hashes = seq.block_hashes
        while (len(hashes) + 1) * bs <= seq.num_tokens:
            i = len(hashes)
            parent = hashes[-1] if hashes else None
            hashes.append(hash_block(parent, tuple(seq.token_ids[i * bs:(i + 1) * bs])))

    def find_prefix_hit(self, seq: Sequence) -> list[int]:
        """Cached blocks holding a prefix of ``seq``; never all of it, one token is left to compute."""
        if not self.enable_prefix_caching:
            return []
        self.update_block_hashes(seq)
        max_blocks = (seq.num_tokens - 1) // self.block_size
        return self._cached_prefix(seq.block_hashes[:max_blocks])

    def _cached_prefix(self, hashes: list[int]) -> list[int]:
        """Device blocks caching the leading ``hashes``, up to the first one not cached."""
        hit = []
        for h in hashes:
            bid = self.pool.lookup(h)
            if bid is None:
                break
            hit.append(bid)
        return hit

    def find_host_hit(self, seq: Sequence, start: int) -> list[int]:
        """Host blocks that continue a device prefix hit of ``start`` blocks."""
        if self.host is None or not self.enable_prefix_caching:
            return []
        max_blocks = (seq.num_tokens - 1) // self.block_size
        hit = []
        for h in seq.block_hashes[start:max_blocks]:
            hb = self.host.lookup(h)
            if hb is None:
                break
            hit.append(hb)
        return hit

    # ---- the host tier -----------------------------------------------------------
    def want_on_host(self, program_id: str) -> None:
        """The program is away (a tool call): if its blocks are evicted, keep them on the host."""
        if self.host is None or program_id in self._host_programs:
            return
        hashes = list(self._last_finished.get(program_id, []))
        self._host_programs[program_id] = hashes
        for h in hashes:
            self._host_wanted[h] = self._host_wanted.get(h, 0) + 1

    def unwant_on_host(self, program_id: str) -> None:
        for h in self._host_programs.pop(program_id, []):
            n = self._host_wanted[h] - 1
            if n:
                self._host_wanted[h] = n
            else:
                del self._host_wanted[h]

    def on_device_evict(self, block_id: int, block_hash: int | None) -> None:
        if self.host is not None and block_hash in self._host_wanted and self.host.lookup(block_hash) is None:
            hb = self.host.put(block_hash)
            if hb is None:  # every host block has a copy queued this step: this KV is dropped
                return
            self.host.hold(hb)
            self.swap_out.append((block_id, hb))
            self.counters["host_stored_blocks"] += 1

    def take_swaps(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The copies to run before the next step; their host blocks may be reused after."""
        out, into = self.swap_out, self.swap_in
        self.swap_out, self.swap_in = [], []
        if self.host is not None:
            self.host.release_holds()
        return out, into

    # ---- allocation --------------------------------------------------------------
    def blocks_needed(self, seq: Sequence, num_new_tokens: int, num_prefix_blocks: int = 0) -> int:
        total = num_prefix_blocks * self.block_size if num_prefix_blocks else seq.num_computed_tokens
        need = -(-(total + num_new_tokens) // self.block_size)
        have = num_prefix_blocks if num_prefix_blocks else len(seq.block_table)
        return max(0, need - have)

    def num_free_after_touch(self, prefix: list[int]) -> int:
        """Free blocks left once ``prefix`` is referenced (evictable hits stop being free)."""
        return self.pool.num_free - sum(1 for b in prefix if self.pool.ref_count[b] == 0)

    def admit(self, seq: Sequence, prefix: list[int], num_new_tokens: int, reserve: int = 0,
              host_hit: list[int] = (), release_pins: bool = False) -> bool:
        """Start ``seq`` on its prefix hit (device blocks, then host blocks copied back) plus room
        for ``num_new_tokens``, leaving ``reserve`` blocks free; False if it doesn't fit.

        With ``release_pins``, pins are ended (least valuable first) until it fits or none is
        left; the count of blocks needed lives only here.
        """
        hit_blocks = len(prefix) + len(host_hit)
        need = self.blocks_needed(seq, num_new_tokens, hit_blocks) + len(host_hit)
        while need + reserve > self.num_free_after_touch(prefix):
            if not (release_pins and self.pins):
                return False
            self._release_least_valuable()
        # Hold the host blocks to copy back first: the allocations below may evict device
        # blocks to the host, and must not reuse these before the step copies them.
        for hb in host_hit:
            self.host.hold(hb)
        self.pool.touch(prefix)
        seq.block_table = list(prefix)
        if host_hit:  # fresh device blocks, filled from the host before the step runs
            fresh = self.pool.allocate(len(host_hit))
            for i, (hb, bid) in enumerate(zip(host_hit, fresh)):
                self.pool.register(bid, seq.block_hashes[len(prefix) + i])
                self.swap_in.append((hb, bid))
            seq.block_table += fresh
            self.counters["host_hit_tokens"] += len(host_hit) * self.block_size
        seq.num_hashed_blocks = hit_blocks
        seq.num_computed_tokens = hit_blocks * self.block_size
        seq.block_table += self.pool.allocate(need - len(host_hit))
        hit_tokens = seq.num_computed_tokens
        self.counters["prefix_hit_tokens"] += hit_tokens
        self.counters["prefix_query_tokens"] += seq.num_tokens
        if hit_tokens:
            self.events.emit("prefix_hit", self.clock.now(), seq.request_id, seq.program_id, tokens=hit_tokens)
        return True

    def grow(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for ``num_new_tokens`` more tokens of a running sequence."""
        need = self.blocks_needed(seq, num_new_tokens)
        if need > self.pool.num_free:
            return False
        seq.block_table += self.pool.allocate(need)
        return True

    def commit_computed(self, seq: Sequence) -> None:
        """Register the blocks that became full and computed, so later requests can hit them."""
        if not self.enable_prefix_caching:
            return
        self.update_block_hashes(seq)
        full = min(seq.num_computed_tokens // self.block_size, len(seq.block_hashes))
        for i in range(seq.num_hashed_blocks, full):
            self.pool.register(seq.block_table[i], seq.block_hashes[i])
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references; a finished program turn is remembered for ``pin``."""
        if seq.is_finished and seq.program_id is not None and self.enable_prefix_caching:
            self._last_finished[seq.program_id] = seq.block_hashes[:seq.num_hashed_blocks]
        self.pool.free(seq.block_table)
        seq.block_table = []
        seq.num_hashed_blocks = 0
        seq.num_computed_tokens = 0

    # ---- pins --------------------------------------------------------------------
    def pin(self, program_id: str, ttl_s: float, value: float | None = None) -> int:
        """Hold the program's last finished KV for ``ttl_s`` seconds; returns pinned tokens.

        Only the still-cached prefix of those blocks can be pinned (evicted ones
        are gone). A new pin replaces the program's previous one.
        """
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        self.release(program_id, reason=None)
        blocks = self._cached_prefix(self._last_finished.get(program_id, []))
        if not blocks or ttl_s == 0:
            return 0
        self.pool.touch(blocks)
        now = self.clock.now()
        # Without a value, the pin that would live longest is the first to go (Continuum's rule).
        self.pins[program_id] = Pin(program_id, blocks, now, now + ttl_s,
                                    -(now + ttl_s) if value is None else value)
        self.counters["pins"] += 1
        tokens = len(blocks) * self.block_size
        self.events.emit("pin", now, None, program_id, tokens=tokens, ttl_s=ttl_s)
        return tokens

    def release(self, program_id: str, reason: str | None = "release") -> bool:
        """End the program's pin, if any; its blocks go back to the eviction order."""
        pin = self.pins.pop(program_id, None)
        if pin is None:
            return False
        self.pool.free(pin.block_ids)
        if reason is not None:
            key = {"expiry": "pins_expired", "pressure": "pins_released_under_pressure"}.get(reason, "pins_released")
            self.counters[key] += 1
            self.events.emit("expiry" if reason == "expiry" else "release", self.clock.now(), None,
                             program_id, tokens=pin.num_blocks * self.block_size, reason=reason)
        return True

    def take_pin(self, seq: Sequence) -> None:
        """The program's next request is admitted and holds its own references: end the pin."""
        pin = self.pins.get(seq.program_id) if seq.program_id is not None else None
        if pin is None:
            return
        used = len(set(pin.block_ids) & set(seq.block_table))
        self.counters["pin_hits"] += 1 if used else 0
        self.counters["pin_hit_tokens"] += used * self.block_size
        self.events.emit("pin_hit", self.clock.now(), seq.request_id, seq.program_id,
                         tokens=used * self.block_size)
        self.release(seq.program_id, reason=None)

    def pinnable_blocks(self, program_id: str) -> int:
        """Blocks ``pin`` would hold now for the program's last finished request."""
        return len(self._cached_prefix(self._last_finished.get(program_id, [])))

    def forget_program(self, program_id: str) -> None:
        self.release(program_id)
        self.unwant_on_host(program_id)
        self._last_finished.pop(program_id, None)

    def expire_pins(self) -> list[str]:
        now = self.clock.now()
        expired = [p for p, pin in self.pins.items() if pin.expires_at <= now]
        for p in expired:
            self.release(p, reason="expiry")
        return expired

    def release_pins_for(self, num_blocks: int) -> bool:
        """Under memory pressure, end pins (least valuable first) until ``num_blocks`` are free."""
        while self.pool.num_free < num_blocks and self.pins:
            self._release_least_valuable()
        return self.pool.num_free >= num_blocks

    def _release_least_valuable(self) -> None:
        victim = min(self.pins.values(), key=lambda p: p.value)
        self.release(victim.program_id, reason="pressure")

    @property
    def pinned_blocks(self) -> int:
        return sum(p.num_blocks for p in self.pins.values())

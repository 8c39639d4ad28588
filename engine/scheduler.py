"""Continuous batching with a per-step token budget and chunked prefill.

Each step: running decodes first, then running prefill chunks, then new
admissions from the waiting queue in policy order, until the token budget or
the sequence limit is reached. When blocks run out, pins are released first,
then the lowest-priority running request is preempted by recompute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.engine.clock import Clock
from tether.engine.events import EventBus
from tether.engine.kv_manager import KVCacheManager
from tether.engine.queue_policy import QueuePolicy
from tether.engine.sequence import Sequence, SeqStatus


@dataclass
class ScheduledBatch:
    """What one step computes: for each sequence, its next ``num_new_tokens`` tokens."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    swap_out: list[tuple[int, int]] = field(default_factory=list)  # (device, host) blocks, before the step
    swap_in: list[tuple[int, int]] = field(default_factory=list)   # (host, device) blocks, before the step

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __len__(self) -> int:
        return len(self.seqs)


class Scheduler:
    def __init__(self, kv: KVCacheManager, policy: QueuePolicy, clock: Clock, events: EventBus,
                 max_num_batched_tokens: int, max_num_seqs: int, pins_yield_to: str = "any",
                 admit_whole_prompt: bool = False):
        self.kv = kv
        self.policy = policy
        self.clock = clock
        self.events = events
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.pins_yield_to = pins_yield_to
        self.admit_whole_prompt = admit_whole_prompt
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # ---- queue membership -------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.policy.on_arrival(seq)
        self.waiting.append(seq)
        self.events.emit("queued", self.clock.now(), seq.request_id, seq.program_id,
                         prompt_tokens=seq.num_prompt_tokens, turn=seq.turn)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Take ``seq`` out of the queues and free its blocks."""
        if seq.status == SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status == SeqStatus.WAITING:
            self.waiting.remove(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        self.kv.free(seq)
        self.policy.on_finish(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- one step ---------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        self.kv.expire_pins()
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        key = self.policy.key
        self.running.sort(key=key)
        # Decodes first (one token each, latency-critical), then prefill chunks.
        order = [s for s in self.running if not s.is_prefilling] + [s for s in self.running if s.is_prefilling]
        for seq in order:
            if budget == 0:
                break
            if seq.status != SeqStatus.RUNNING:  # preempted earlier in this loop
                continue
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not self._make_room(seq, n, batch):
                continue
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        if not batch.preempted:
            budget = self._admit(batch, budget)
        batch.swap_out, batch.swap_in = self.kv.take_swaps()
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.first_scheduled_time = self.clock.now()
                self.events.emit("scheduled", self.clock.now(), seq.request_id, seq.program_id)
            if seq.is_prefilling or seq.num_computed_tokens + n < seq.num_tokens:
                self.events.emit("prefill_chunk", self.clock.now(), seq.request_id, seq.program_id,
                                 tokens=n, computed=seq.num_computed_tokens)
        return batch

    def _make_room(self, seq: Sequence, n: int, batch: ScheduledBatch) -> bool:
        """Grow ``seq`` by ``n`` tokens, releasing pins, then preempting from the lowest priority."""
        while not self.kv.grow(seq, n):
            if self.kv.release_pins_for(self.kv.blocks_needed(seq, n)):
                continue
            victim = self.running[-1]  # running is sorted: the tail has the lowest priority
            self._preempt(victim, batch)
            if victim is seq:
                return False
        return True

    def _pins_yield(self, seq: Sequence) -> bool:
        """May a waiting request's admission end other programs' pins?"""
        if self.pins_yield_to == "any" or not self.running:
            return True
        return self.policy.starved(seq)

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        if seq in batch.seqs:  # already given tokens this step: take them back
            i = batch.seqs.index(seq)
            batch.seqs.pop(i)
            batch.num_new_tokens.pop(i)
        self.running.remove(seq)
        self.kv.free(seq)  # its full blocks stay cached: recompute may hit them
        seq.status = SeqStatus.WAITING
        seq.metrics.preemptions += 1
        self.num_preemptions += 1
        self.waiting.append(seq)
        batch.preempted.append(seq)
        self.events.emit("preempted", self.clock.now(), seq.request_id, seq.program_id)

    def _admit(self, batch: ScheduledBatch, budget: int) -> int:
        self.waiting.sort(key=self.policy.key)
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            prefix = self.kv.find_prefix_hit(seq)
            host_hit = self.kv.find_host_hit(seq, len(prefix))
            hit_tokens = (len(prefix) + len(host_hit)) * self.kv.block_size
            n = min(seq.num_tokens - hit_tokens, budget)
            reserve = 0
            if self.admit_whole_prompt and not self.policy.starved(seq):  # room for the later chunks too
                reserve = -(-(seq.num_tokens - hit_tokens - n) // self.kv.block_size)
            # The policy says whether pins may yield to this request; the manager counts blocks.
            if not self.kv.admit(seq, prefix, n, reserve, host_hit, release_pins=self._pins_yield(seq)):
                break  # head-of-line waits for blocks; running requests will free some
            self.kv.take_pin(seq)
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.prefix_hit_tokens = seq.num_computed_tokens
            self.waiting.pop(0)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        return budget

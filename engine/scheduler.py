"""Continuous batching with a per-step token budget and chunked prefill.

Each step: running decodes first, then running prefill chunks, then new
admissions from the waiting queue in policy order, until the token budget or
the sequence limit is reached. When blocks run out, pins end or running
requests are preempted by recompute, in the order the config's policy says.
``update_from_output`` is the one place a step's results are applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.engine.clock import Clock
from tether.engine.events import EventBus
from tether.engine.kv_manager import KVCacheManager, PrefixHit
from tether.engine.pins import PinController
from tether.engine.queue_policy import QueuePolicy
from tether.engine.sampler import SampleResult
from tether.engine.sequence import Sequence, SeqStatus
from tether.engine.streaming import is_idle_open, park_idle, unpark


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
    """``pins_yield_to``: who may end pins to be admitted (``any``, ``starved``, or ``idle``: one pin
    per step, only while nothing runs). ``pin_pressure``: a running request short of blocks ends
    pins first (``release-first``) or preempts first and ends a pin only when at most one request
    runs (``preempt-first``)."""

    def __init__(self, kv: KVCacheManager, pins: PinController, policy: QueuePolicy, clock: Clock,
                 events: EventBus, config, reuse=None):
        self.kv = kv
        self.reuse = reuse  # KVReuse: places known segments' KV at admission
        self.pins = pins
        self.policy = policy
        self.clock = clock
        self.events = events
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.max_num_seqs = config.max_num_seqs
        self.pins_yield_to = config.pins_yield_to
        self.pin_pressure = config.pin_pressure
        self.admit_whole_prompt = config.admit_whole_prompt
        # An open prompt is prefilled once this many of its tokens wait: a CPU step has a high fixed
        # cost, so prefilling every small chunk on arrival falls behind the arrivals.
        self.open_min_chunk = config.stream_min_chunk
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.counters = {"steps": 0, "computed_tokens": 0, "recomputed_tokens": 0, "generated_tokens": 0,
                         "preemptions": 0, "idle_parked_host": 0, "idle_parked_recompute": 0}

    # ---- queue membership -------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.policy.on_arrival(seq)
        self.waiting.append(seq)
        self.events.emit("queued", self.clock.now(), seq.request_id, seq.program_id,
                         prompt_tokens=seq.num_prompt_tokens, turn=seq.turn)

    def finish(self, seq: Sequence, reason: str) -> list[int]:
        """Take ``seq`` out of the queues and free its blocks; returns its cached block hashes."""
        if seq.status == SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status == SeqStatus.WAITING:
            self.waiting.remove(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        seq.metrics.finished_time = self.clock.now()
        hashes = self._free(seq)
        unpark(seq, self.kv)
        self.policy.on_finish(seq)
        return hashes

    def has_work(self) -> bool:
        """Anything to compute now (an open prompt waiting for its next chunk is not)."""
        m = self.open_min_chunk
        return any(not is_idle_open(s, m) for s in self.running) or any(not self._idle_waiting(s) for s in self.waiting)

    def _idle_waiting(self, seq: Sequence) -> bool:
        """A waiting open prompt that ``_admit`` skips: less than a minimum chunk past its cached
        prefix. (An open prompt whose cache hit leaves only its held-back token is one: counting
        it as work would make a step loop spin on empty steps, and a virtual clock never advance.)"""
        if not seq.prompt_open:
            return False
        hit = self.kv.find_cached_prefix(seq).num_blocks * self.kv.block_size
        n = min(seq.num_tokens - hit - 1, self.max_num_batched_tokens)
        return n <= 0 or n < min(self.open_min_chunk, self.max_num_batched_tokens)

    def expire_pins(self) -> None:
        """End pins past their TTL whose program has no turn waiting (Continuum's rule)."""
        if self.pins.programs.pinned():
            self.pins.expire({s.program_id for s in self.waiting if s.program_id is not None})

    # ---- one step ---------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        self.counters["steps"] += 1
        self.expire_pins()
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        self.running.sort(key=self.policy.key)
        # Decodes first (one token each, latency-critical), then prefill chunks.
        order = [s for s in self.running if not s.is_prefilling] + [s for s in self.running if s.is_prefilling]
        for seq in order:
            if budget == 0:
                break
            if seq.status != SeqStatus.RUNNING:  # preempted earlier in this loop
                continue
            # An open prompt holds its newest token back: computing it would sample.
            n = min(seq.num_tokens - seq.num_computed_tokens - seq.prompt_open, budget)
            if n <= 0 or (seq.prompt_open and n < min(self.open_min_chunk, budget)):
                continue
            if not self._make_room(seq, n, batch):
                continue
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        if not batch.preempted:
            budget = self._admit(batch, budget)
        batch.swap_out, batch.swap_in = self.kv.take_swaps()
        now = self.clock.now()
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.first_scheduled_time = now
                self.events.emit("scheduled", now, seq.request_id, seq.program_id)
            if seq.is_prefilling or seq.num_computed_tokens + n < seq.num_tokens:
                self.events.emit("prefill_chunk", now, seq.request_id, seq.program_id,
                                 tokens=n, computed=seq.num_computed_tokens)
        return batch

    def update_from_output(self, batch: ScheduledBatch, results: list[SampleResult | None]
                           ) -> list[tuple[Sequence, SampleResult]]:
        """Apply a step's results: computed tokens, newly full blocks, sampled tokens.
        Returns the sequences that gained a token, with it."""
        sampled = []
        for seq, n, res in zip(batch.seqs, batch.num_new_tokens, results):
            start = seq.num_computed_tokens
            # Tokens below the high-water mark had KV before a preemption dropped it.
            self.counters["recomputed_tokens"] += max(0, min(start + n, seq.high_water) - start)
            seq.high_water = max(seq.high_water, start + n)
            seq.num_computed_tokens += n
            self.counters["computed_tokens"] += n
            self.kv.cache_blocks(seq)
            if res is not None:
                seq.token_ids.append(res.token_id)
                self.counters["generated_tokens"] += 1
                if seq.metrics.first_token_time is None:
                    seq.metrics.first_token_time = self.clock.now()
                    self.events.emit("first_token", seq.metrics.first_token_time, seq.request_id, seq.program_id)
                sampled.append((seq, res))
        return sampled

    # ---- blocks -------------------------------------------------------------------
    def _grow(self, seq: Sequence, n: int) -> bool:
        blocks = self.kv.allocate_slots(seq, n)
        if blocks is not None:
            seq.block_table += blocks
        return blocks is not None

    def _make_room(self, seq: Sequence, n: int, batch: ScheduledBatch) -> bool:
        """Grow ``seq`` by ``n`` tokens, ending pins and preempting as ``pin_pressure`` says."""
        while not self._grow(seq, n):
            if self.pin_pressure == "release-first" or len(self.running) <= 1:
                if self.pins.release_least_valuable():
                    continue
            victim = self._victim()
            self._preempt(victim, batch)
            if victim is seq:
                return False
        return True

    def _victim(self) -> Sequence:
        """Whom to preempt: an idle open prompt first (it waits on its client, not on us), the
        lowest-ranked of them; else the policy's choice."""
        idle = [s for s in self.running if is_idle_open(s, self.open_min_chunk)]
        if idle:
            self._park(idle[-1])
        return idle[-1] if idle else self.policy.victim(self.running)

    def _park(self, seq: Sequence) -> None:
        """Recompute or host tier for a preempted idle partial prompt (cost model: streaming.py)."""
        self.counters["idle_parked_" + park_idle(seq, self.kv, self.pins.cost)] += 1

    def _preempt_idle_open(self, batch: ScheduledBatch) -> bool:
        """Preempt the lowest-ranked open prompt that waits for its next chunk; False if none."""
        idle = [s for s in sorted(self.running, key=self.policy.key) if is_idle_open(s, self.open_min_chunk)]
        if idle:
            self._park(idle[-1])
            self._preempt(idle[-1], batch)
        return bool(idle)

    def _may_end_pins(self, seq: Sequence) -> bool:
        """May a waiting request's admission end other programs' pins?"""
        if self.pins_yield_to == "idle":
            return not self.running
        return self.pins_yield_to == "any" or not self.running or self.policy.starved(seq)

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        if seq in batch.seqs:  # already given tokens this step: take them back
            i = batch.seqs.index(seq)
            batch.seqs.pop(i)
            batch.num_new_tokens.pop(i)
        self.running.remove(seq)
        self._free(seq)  # its full blocks stay cached: recompute may hit them
        seq.status = SeqStatus.WAITING
        seq.metrics.preemptions += 1
        self.counters["preemptions"] += 1
        self.waiting.append(seq)
        batch.preempted.append(seq)
        self.events.emit("preempted", self.clock.now(), seq.request_id, seq.program_id)

    def _free(self, seq: Sequence) -> list[int]:
        hashes = self.kv.free(seq)
        seq.block_table = []
        seq.placements = []  # planned again at the next admission
        seq.num_computed_tokens = 0
        return hashes

    def _admit(self, batch: ScheduledBatch, budget: int) -> int:
        self.waiting.sort(key=self.policy.key)
        i = 0
        while i < len(self.waiting) and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[i]
            hit = self.kv.find_cached_prefix(seq)
            hit_tokens = hit.num_blocks * self.kv.block_size
            n = min(seq.num_tokens - hit_tokens - seq.prompt_open, budget)
            if n <= 0 or (seq.prompt_open and n < min(self.open_min_chunk, budget)):  # waits for more chunks
                i += 1
                continue
            reserve = 0
            if self.admit_whole_prompt and not self.policy.starved(seq):  # room for the later chunks too
                reserve = -(-(seq.num_tokens - hit_tokens - n) // self.kv.block_size)
            blocks = self._allocate_admission(seq, n, hit, reserve)
            while blocks is None and not seq.prompt_open and self._preempt_idle_open(batch):
                blocks = self._allocate_admission(seq, n, hit, reserve)  # Stream2LLM: idle partial prompts yield
            if blocks is None:
                break  # head-of-line waits for blocks; running requests will free some
            seq.block_table = blocks
            seq.num_computed_tokens = hit_tokens
            unpark(seq, self.kv)  # its host copies, if any, were found by the prefix lookup
            if self.reuse is not None:
                self.reuse.plan(seq, hit_tokens)
            self.pins.admitted(seq)
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.prefix_hit_tokens = hit_tokens
            self.waiting.pop(i)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        return budget

    def _allocate_admission(self, seq: Sequence, n: int, hit: PrefixHit, reserve: int) -> list[int] | None:
        blocks = self.kv.allocate_slots(seq, n, hit, reserve)
        while blocks is None and self._may_end_pins(seq) and self.pins.release_least_valuable():
            if self.pins_yield_to == "idle":
                break  # Continuum frees one pin and retries admission on the next step
            blocks = self.kv.allocate_slots(seq, n, hit, reserve)
        return blocks

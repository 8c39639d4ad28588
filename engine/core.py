"""The synchronous engine core: token ids in, token ids out, one ``step()`` at a time.

``Engine`` (engine.py) is the front end: chat templates, detokenization, stop
strings, asyncio. The replay harness drives the core directly on a virtual
clock with a simulated runner. The core wires the parts and runs each
program's lifecycle through the program table and the pin controller.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tether.engine.block_pool import BlockPool
from tether.engine.clock import Clock, RealClock
from tether.engine.config import EngineConfig
from tether.engine.eviction import EVICTION_POLICIES
from tether.engine.events import EventBus, Listener
from tether.engine.fault_isolation import execute_isolating
from tether.engine.host_tier import HostTier
from tether.engine.kv_manager import KVCacheManager
from tether.engine.pins import PinController
from tether.engine.program_table import ProgramTable
from tether.engine.queue_policy import QUEUE_POLICIES
from tether.engine.request import Request, RequestOutput, RequestRejected, check_request
from tether.engine.reuse import KVReuse
from tether.engine.runner import Runner
from tether.engine.scheduler import Scheduler
from tether.engine.sequence import Sequence, stop_reason
from tether.engine.stats import collect_stats
from tether.engine import streaming
from tether.engine.tool_predictor import EmpiricalPredictor
from tether.engine.ttl_policy import TTL_RULES


class EngineCore:
    """Admission, scheduling, running and output assembly for one replica.

    Thread-safe: every public method takes the core's lock, so an asyncio
    front end may call ``add_request`` while ``step`` runs in a worker thread.
    """

    def __init__(self, config: EngineConfig, runner: Runner, num_blocks: int, max_model_len: int,
                 vocab_size: int, eos_token_ids: tuple[int, ...] = (), clock: Clock | None = None):
        self.config = config
        self.runner = runner
        self.clock = clock or RealClock()
        self.events = EventBus()
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_ids = set(eos_token_ids)
        self.pool = BlockPool(num_blocks, config.block_size, EVICTION_POLICIES.get(config.eviction_policy)())
        host_blocks = config.host_blocks(num_blocks)
        self.kv = KVCacheManager(self.pool, self.clock, self.events, config.enable_prefix_caching,
                                 HostTier(host_blocks) if host_blocks else None, config.host_tier)
        self.programs = ProgramTable(config.max_programs)
        self._next_program_expiry = 0.0
        self._next_open_expiry = 0.0
        self.pins = PinController(self.programs, self.kv, TTL_RULES.get(config.pin_policy).from_config(config),
                                  EmpiricalPredictor(), self.clock, self.events, runner)
        policy = QUEUE_POLICIES.get(config.queue_policy).from_config(config, self.clock, self.programs)
        self.reuse = KVReuse(config, runner, self.clock, self.events)
        self.scheduler = Scheduler(self.kv, self.pins, policy, self.clock, self.events, config,
                                   self.reuse if self.reuse.enabled else None)
        self.seqs: dict[str, Sequence] = {}
        self.lock = threading.RLock()
        self.counters = {"requests": 0, "finished": 0, "aborted": 0, "prompt_tokens": 0, "programs_ended": 0,
                         "programs_expired": 0, "invalidated_tokens": 0, "open_prompts_expired": 0,
                         "step_busy_s": 0.0}
        self.finished_metrics: list = []

    def add_listener(self, listener: Listener) -> None:
        """Receive every ``EngineEvent`` (queued, scheduled, first_token, pin, eviction, ...)."""
        self.events.add(listener)

    # ---- requests ----------------------------------------------------------------
    def add_request(self, request: Request, arrival_time: float | None = None) -> Sequence:
        """Validate and queue ``request`` (token ids); raises ``RequestRejected`` when it can never run.

        ``arrival_time`` (default: now) lets a simulation deliver a turn at its true time."""
        ids = check_request(request, self.vocab_size, self.max_model_len, self.pool)
        with self.lock:
            if request.request_id in self.seqs:
                raise RequestRejected(f"request_id {request.request_id!r} is already in flight; use a unique id")
            now = self.clock.now() if arrival_time is None else arrival_time
            seq = Sequence(request.request_id, ids, request.sampling, now, request.program_id,
                           request.is_last_turn, request.turn, request.segment_spans, request.kv_reuse)
            if request.program_id is not None:
                prog, call = self.programs.turn_arrived(request.program_id, now)
                self.pins.turn_arrived(prog, call, now)
            self.seqs[seq.request_id] = seq
            self.scheduler.add(seq)
            self.counters["requests"] += 1
            self.counters["prompt_tokens"] += len(ids)
        return seq

    def abort(self, request_id: str, reason: str = "abort") -> RequestOutput | None:
        """Stop a request now and free its blocks; returns its final output, None if unknown.

        ``reason="stop"`` is the front end ending a request at a stop string."""
        with self.lock:
            seq = self.seqs.get(request_id)
            if seq is None or seq.is_finished:
                return None
            self.counters["aborted"] += reason == "abort"
            return self._finish(seq, reason)

    # ---- open (streamed) prompts: engine/streaming.py ------------------------------
    def open_request(self, request: Request, arrival_time: float | None = None) -> Sequence:
        """Queue ``request`` with its prompt still open: chunks are prefilled as they come, and
        nothing is sampled until ``seal_prompt``. Cross-agent KV reuse is off for it (the prompt
        it would place segments in keeps changing)."""
        with self.lock:
            seq = self.add_request(request.model_copy(update={"kv_reuse": False, "segment_spans": None}),
                                   arrival_time)
            seq.prompt_open = True
            seq.kv_reuse = False
            return seq

    def append_prompt(self, request_id: str, token_ids: list[int], now: float | None = None) -> None:
        """Add ``token_ids`` to an open prompt."""
        with self.lock:
            seq = self._open_seq(request_id)
            self._check_prompt(seq, seq.token_ids + list(token_ids))
            streaming.append_prompt(seq, list(token_ids), self._now(now))
            self.counters["prompt_tokens"] += len(token_ids)

    def replace_prompt(self, request_id: str, token_ids: list[int], now: float | None = None) -> int:
        """Make an open prompt ``token_ids``, keeping the KV of the common prefix; returns the
        computed tokens rolled back."""
        with self.lock:
            seq = self._open_seq(request_id)
            self._check_prompt(seq, list(token_ids))
            before = seq.num_tokens
            lost = streaming.set_prompt(seq, list(token_ids), self.kv, self._now(now))
            self.counters["prompt_tokens"] += seq.num_tokens - before
            self.counters["invalidated_tokens"] += lost
            return lost

    def seal_prompt(self, request_id: str, now: float | None = None) -> None:
        """The prompt is complete: its first token is sampled once its last token is computed."""
        with self.lock:
            streaming.seal_prompt(self._open_seq(request_id), self._now(now))

    def _now(self, now: float | None) -> float:
        return self.clock.now() if now is None else now

    def expire_open_prompts(self) -> list[RequestOutput]:
        """Abort open prompts untouched for ``stream_idle_timeout_s``: a caller that vanished
        mid-stream (a killed client or actor) must not hold KV blocks forever. Returns their outputs."""
        with self.lock:
            now = self.clock.now()
            if now < self._next_open_expiry:
                return []
            self._next_open_expiry = now + 1.0  # a scan a second at most
            idle = [s for s in self.seqs.values() if s.prompt_open and now - (
                s.metrics.last_chunk_time or s.arrival_time) > self.config.stream_idle_timeout_s]
            outs = []
            for seq in idle:
                self.counters["open_prompts_expired"] += 1
                outs.append(self._finish(seq, "abort", error=f"streamed prompt idle for more than "
                                         f"{self.config.stream_idle_timeout_s:g} s (no append, replace or seal)"))
            return outs

    def has_open_prompts(self) -> bool:
        return any(s.prompt_open for s in self.seqs.values())

    def _open_seq(self, request_id: str) -> Sequence:
        seq = self.seqs.get(request_id)
        if seq is None:
            raise RequestRejected(f"no request {request_id!r} in flight (finished, aborted or never opened)")
        if not seq.prompt_open:
            raise RequestRejected(f"request {request_id!r} is sealed (or was not opened as a streamed prompt); "
                                  "its prompt can no longer change")
        return seq

    def _check_prompt(self, seq: Sequence, ids: list[int]) -> None:
        if not ids:
            raise RequestRejected("the prompt would be empty; give at least one token")
        check_request(Request(request_id=seq.request_id, prompt_token_ids=ids, sampling=seq.sampling),
                      self.vocab_size, self.max_model_len, self.pool)

    # ---- programs ----------------------------------------------------------------
    def tool_hint(self, program_id: str, tool_keys: list[str]) -> int:
        """The program's last turn ended in calls to tools with these keys (``tool_key.tool_key``).

        Returns the tokens the TTL rule pinned (0: none)."""
        with self.lock:
            queue = sum(s.num_tokens - s.num_computed_tokens for s in self.scheduler.waiting)
            tokens = self.pins.tool_call(program_id, list(tool_keys), queue)
            self._expire_programs()  # a hint may bring a new program id: keep the table bounded
            return tokens

    def end_program(self, program_id: str) -> None:
        """The program is over: release its pin and host-tier claims and forget it."""
        with self.lock:
            self._end_program(program_id, "programs_ended")

    def _end_program(self, program_id: str, counter: str) -> None:
        prog = self.programs.end(program_id)
        if prog is not None:
            self.pins.program_ended(prog)
            self.counters[counter] += 1

    # ---- stepping --------------------------------------------------------------
    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def expire_pins(self) -> None:
        """End pins whose TTL has passed, and forget programs idle too long (call when idle)."""
        with self.lock:
            self.scheduler.expire_pins()
            self._expire_programs()

    def _expire_programs(self) -> None:
        now = self.clock.now()
        if now < self._next_program_expiry and len(self.programs) <= self.programs.max_programs:
            return
        self._next_program_expiry = now + 1.0  # a scan a second at most
        idle = self.config.program_idle_s or max(600.0, 10 * self.programs.longest_tool_s)
        for prog in self.programs.expire(now, idle):
            self._end_program(prog.program_id, "programs_expired")

    def step(self) -> list[RequestOutput]:
        """Schedule and run one batch; returns the outputs it produced."""
        with self.lock:
            # Busy time on the engine's clock (virtual in a simulated replay): what a sim-vs-real
            # comparison splits a run's time into, next to the idle gaps between steps.
            started = self.clock.now()
            try:
                return self._step()
            finally:
                self.counters["step_busy_s"] += self.clock.now() - started

    def _step(self) -> list[RequestOutput]:
        """One step: schedule, swap host-tier blocks, run the batch, apply the results."""
        self._expire_programs()
        expired = self.expire_open_prompts()
        batch = self.scheduler.schedule()
        try:
            if batch.swap_out or batch.swap_in:
                self.runner.swap(batch.swap_out, batch.swap_in)
        except Exception as e:  # blocks the step reads were not loaded: fail what is in flight
            return expired + self._fail_all(f"engine step failed: {type(e).__name__}: {e}")
        if not batch.seqs:
            return expired
        t0 = time.perf_counter()
        ran, results, failed = execute_isolating(self.runner, batch)
        if self.events.active:
            self.events.emit("step", self.clock.now(), new_tokens=list(ran.num_new_tokens),
                             context=[s.num_computed_tokens + n for s, n in zip(ran.seqs, ran.num_new_tokens)],
                             duration_s=time.perf_counter() - t0)
        outputs = expired + [self._finish(seq, "error", error=f"this request failed the engine step: "
                                          f"{type(e).__name__}: {e}") for seq, e in failed]
        sampled = self.scheduler.update_from_output(ran, results)
        if self.reuse.enabled:
            self.reuse.after_step(ran.seqs)
        for seq, res in sampled:
            lps = [res.logprobs] if res.logprobs is not None else None
            reason = stop_reason(seq, res.token_id, self.eos_token_ids)
            if reason is not None:
                outputs.append(self._finish(seq, reason, [res.token_id], lps))
            else:
                outputs.append(RequestOutput(seq.request_id, [res.token_id], "", logprobs=lps))
        return outputs

    def _finish(self, seq: Sequence, reason: str, new_ids: list[int] | None = None, logprobs=None,
                error: str | None = None) -> RequestOutput:
        if reason != "error" and self.reuse.enabled:
            self.reuse.capture(seq)
        hashes = self.scheduler.finish(seq, reason)
        self.runner.forget(seq.request_id)
        self.seqs.pop(seq.request_id, None)
        m = seq.metrics
        m.output_tokens = seq.num_output_tokens
        self.counters["finished"] += 1
        self.finished_metrics.append(m)
        if len(self.finished_metrics) > 10000:
            del self.finished_metrics[:5000]
        if seq.program_id is not None:
            service = m.finished_time - (m.first_scheduled_time or m.finished_time)
            self.programs.turn_finished(seq.program_id, hashes, service, m.finished_time)
            if seq.is_last_turn:
                self.end_program(seq.program_id)
        self.events.emit("finished", m.finished_time, seq.request_id, seq.program_id, reason=reason,
                         output_tokens=m.output_tokens)
        return RequestOutput(seq.request_id, new_ids or [], "", True, reason, logprobs, m, error)

    def _fail_all(self, error: str) -> list[RequestOutput]:
        return [self._finish(seq, "error", error=error)
                for seq in list(self.scheduler.running) + list(self.scheduler.waiting)]

    # ---- introspection ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and gauges: tokens, prefix hits, evictions, pins, programs, KV usage, TTFT."""
        with self.lock:
            return collect_stats(self)

    def check_no_leaks(self) -> None:
        """Assert block accounting is consistent: refs equal table and pin holdings."""
        with self.lock:
            refs: dict[int, int] = {}
            for seq in self.scheduler.waiting:
                assert not seq.block_table, f"waiting {seq} holds blocks"
            for b in [b for s in self.scheduler.running for b in s.block_table] + self.pins.block_refs():
                refs[b] = refs.get(b, 0) + 1
            self.pool.check_consistency(refs)


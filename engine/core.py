"""The synchronous engine core: admission, one ``step()`` at a time, outputs.

``Engine`` (engine.py) drives it from asyncio; the replay harness drives it
directly on a virtual clock with a simulated runner.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from tether.engine.block_pool import BlockPool
from tether.engine.clock import Clock, RealClock
from tether.engine.config import EngineConfig
from tether.engine.detokenizer import Detokenizer
from tether.engine.eviction import EVICTION_POLICIES
from tether.engine.events import EventBus, Listener
from tether.engine.host_tier import HostTier
from tether.engine.kv_manager import KVCacheManager
from tether.engine.queue_policy import QUEUE_POLICIES
from tether.engine.request import Request, RequestOutput
from tether.engine.runner import Runner
from tether.engine.sampler import SampleResult
from tether.engine.scheduler import Scheduler
from tether.engine.sequence import Sequence, SeqStatus
from tether.engine.tool_predictor import EmpiricalPredictor
from tether.engine.ttl_policy import TTL_POLICIES, CostBenefit, PinQuestion


class RequestRejected(ValueError):
    """The request can never be served as given; the message says what to change."""


class EngineCore:
    """Admission, scheduling, running and output assembly for one replica.

    Thread-safe: every public method takes the core's lock, so an asyncio
    front end may call ``add_request`` while ``step`` runs in a worker thread.
    """

    def __init__(self, config: EngineConfig, runner: Runner, num_blocks: int, max_model_len: int,
                 vocab_size: int, tokenizer: Any = None, eos_token_ids: tuple[int, ...] = (),
                 clock: Clock | None = None):
        self.config = config
        self.runner = runner
        self.clock = clock or RealClock()
        self.events = EventBus()
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)
        self.pool = BlockPool(num_blocks, config.block_size, EVICTION_POLICIES[config.eviction_policy](),
                              on_evict=self._on_evict)
        host = HostTier(config.host_kv_blocks) if config.host_kv_blocks else None
        self.kv = KVCacheManager(self.pool, self.clock, self.events, config.enable_prefix_caching, host)
        policy = QUEUE_POLICIES[config.queue_policy]()
        self._service_ema: float | None = None  # recent turn service time: first scheduled -> finished
        policy.bind(self.clock.now, lambda program_id: program_id in self.kv.pins, self.starvation_bound)
        self.scheduler = Scheduler(self.kv, policy, self.clock, self.events, config.max_num_batched_tokens,
                                   config.max_num_seqs, config.pins_yield_to, config.admit_whole_prompt)
        self.predictor = EmpiricalPredictor()
        self.ttl_policy = (CostBenefit(config.max_pin_share) if config.pin_policy == CostBenefit.name
                           else TTL_POLICIES[config.pin_policy]())
        self._tool_started: dict[str, tuple[list[str], float]] = {}  # program -> (tool keys, when)
        self.seqs: dict[str, Sequence] = {}
        self.detok = Detokenizer(tokenizer)
        self.lock = threading.RLock()
        self.counters = {"requests": 0, "finished": 0, "aborted": 0, "prompt_tokens": 0,
                         "generated_tokens": 0, "computed_tokens": 0, "steps": 0, "recomputed_tokens": 0, "tool_hints": 0,
                         "programs_ended": 0}
        self.finished_metrics: list = []
        self.last_tools: dict[str, list[str]] = {}  # program id -> tools its last turn called

    def add_listener(self, listener: Listener) -> None:
        """Receive every ``EngineEvent`` (queued, scheduled, first_token, pin, eviction, ...)."""
        self.events.add(listener)

    def _on_evict(self, block_id: int, block_hash: int | None) -> None:
        self.kv.on_device_evict(block_id, block_hash)
        self.events.emit("eviction", self.clock.now(), block_id=block_id, tokens=self.pool.block_size)

    # ---- admission -------------------------------------------------------------
    def prompt_ids(self, request: Request) -> list[int]:
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        if self.tokenizer is None:
            raise RequestRejected("messages need a tokenizer; this engine has none, pass prompt_token_ids")
        text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def add_request(self, request: Request) -> Sequence:
        """Validate and queue ``request``; raises ``RequestRejected`` when it can never run."""
        ids = self.prompt_ids(request)
        sp = request.sampling
        rid = request.request_id
        if not ids:
            raise RequestRejected("the prompt is empty; give at least one token")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise RequestRejected(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        if sp.forced_output_ids is not None and any(not 0 <= t < self.vocab_size for t in sp.forced_output_ids):
            raise RequestRejected(f"forced_output_ids: token ids must lie in [0, {self.vocab_size})")
        total = len(ids) + sp.max_tokens
        if total > self.max_model_len:
            raise RequestRejected(
                f"prompt ({len(ids)} tokens) + max_tokens ({sp.max_tokens}) = {total} exceeds the model's "
                f"context of {self.max_model_len} tokens; shorten the prompt or lower max_tokens")
        blocks = -(-total // self.pool.block_size)
        if blocks > self.pool.num_blocks:
            raise RequestRejected(
                f"prompt + max_tokens needs {blocks} KV blocks but the pool has {self.pool.num_blocks}; "
                "lower max_tokens or give the engine more KV memory (num_kv_blocks / kv_cache_memory_gb)")
        with self.lock:
            if rid in self.seqs:
                raise RequestRejected(f"request_id {rid!r} is already in flight; use a unique id")
            seq = Sequence(rid, ids, sp, self.clock.now(), request.program_id, request.is_last_turn,
                           request.turn)
            started = self._tool_started.pop(request.program_id, None) if request.program_id else None
            if request.program_id is not None:
                self.kv.unwant_on_host(request.program_id)
            if started is not None:  # the program is back: its tool call took this long
                for key in started[0]:
                    self.predictor.observe(key, seq.arrival_time - started[1])
            self.seqs[rid] = seq
            self.scheduler.add(seq)
            self.counters["requests"] += 1
            self.counters["prompt_tokens"] += len(ids)
        return seq

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its blocks; returns its final output, None if unknown."""
        with self.lock:
            seq = self.seqs.get(request_id)
            if seq is None or seq.is_finished:
                return None
            self.counters["aborted"] += 1
            return self._finish(seq, "abort")

    # ---- programs and pins -----------------------------------------------------
    def pin(self, program_id: str, ttl_s: float) -> int:
        """Keep the program's last finished KV for ``ttl_s`` seconds; returns pinned tokens."""
        with self.lock:
            return self.kv.pin(program_id, ttl_s)

    def release(self, program_id: str) -> bool:
        """End the program's pin now (it remains in the LRU cache)."""
        with self.lock:
            return self.kv.release(program_id)

    def end_program(self, program_id: str) -> None:
        """The program is over: release its pin and forget its arrival and last turn."""
        with self.lock:
            self._forget_program(program_id)
            self.counters["programs_ended"] += 1

    def _forget_program(self, program_id: str) -> None:
        self.kv.forget_program(program_id)
        self.scheduler.policy.forget_program(program_id)
        self.last_tools.pop(program_id, None)
        self._tool_started.pop(program_id, None)

    def tool_hint(self, program_id: str, tool_names: list[str]) -> int:
        """The program's last turn ended in calls to ``tool_names`` (input for TTL policies).

        Returns the tokens the TTL policy pinned (0: none)."""
        with self.lock:
            now = self.clock.now()
            self.last_tools[program_id] = list(tool_names)
            self._tool_started[program_id] = (list(tool_names), now)
            self.counters["tool_hints"] += 1
            self.events.emit("tool_call", now, None, program_id, tools=list(tool_names))
            self.kv.want_on_host(program_id)
            blocks = self.kv.pinnable_blocks(program_id)
            if blocks == 0:
                return 0
            decision = self.ttl_policy.decide(self._pin_question(program_id, list(tool_names), blocks),
                                              self.predictor, now)
            return self.kv.pin(program_id, decision.ttl_s, decision.value) if decision.ttl_s > 0 else 0

    def starvation_bound(self) -> float:
        """How long a request may wait for its first token before it goes first (and may end pins)."""
        if self.config.starvation_turns is not None and self._service_ema is not None:
            return max(1.0, self.config.starvation_turns * self._service_ema)
        return self.config.starvation_s

    def _pin_question(self, program_id: str, keys: list[str], blocks: int) -> PinQuestion:
        pool = self.pool
        tokens = blocks * pool.block_size
        waiting = sum(s.num_tokens - s.num_computed_tokens for s in self.scheduler.waiting)
        refill = self.runner.prefill_time_s(tokens)
        if self.kv.host is not None and blocks <= self.kv.host.num_blocks:  # a copy back may beat recompute
            refill = min(refill, self.runner.copy_time_s(blocks))
        return PinQuestion(program_id, keys, blocks, pool.num_blocks, self.kv.pinned_blocks,
                           pressure=pool.num_used / pool.num_blocks, refill_s=refill,
                           queue_s=self.runner.prefill_time_s(waiting) if waiting else 0.0)

    def expire_pins(self) -> None:
        with self.lock:
            self.kv.expire_pins()

    # ---- stepping --------------------------------------------------------------
    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[RequestOutput]:
        """Schedule and run one batch; returns the outputs it produced."""
        with self.lock:
            batch = self.scheduler.schedule()
            self.counters["steps"] += 1
            try:
                if batch.swap_out or batch.swap_in:
                    self.runner.swap(batch.swap_out, batch.swap_in)
                if not batch.seqs:
                    return []
                results = self.runner.execute(batch)
            except Exception as e:  # a failed forward: fail what is in flight, keep serving
                return self._fail_all(f"engine step failed: {type(e).__name__}: {e}")
            outputs = []
            for seq, n, res in zip(batch.seqs, batch.num_new_tokens, results):
                start = seq.num_computed_tokens
                # Tokens below the high-water mark had KV before a preemption dropped it.
                self.counters["recomputed_tokens"] += max(0, min(start + n, seq.high_water) - start)
                seq.high_water = max(seq.high_water, start + n)
                seq.num_computed_tokens += n
                self.counters["computed_tokens"] += n
                self.kv.commit_computed(seq)
                if res is not None:
                    outputs.append(self._append_token(seq, res))
            return outputs

    def _append_token(self, seq: Sequence, res: SampleResult) -> RequestOutput:
        now = self.clock.now()
        seq.token_ids.append(res.token_id)
        self.counters["generated_tokens"] += 1
        if seq.metrics.first_token_time is None:
            seq.metrics.first_token_time = now
            self.events.emit("first_token", now, seq.request_id, seq.program_id)
        sp = seq.sampling
        reason = None
        if sp.forced_output_ids is not None:
            if seq.num_output_tokens >= len(sp.forced_output_ids):
                reason = "length"
        elif (res.token_id in self.eos_token_ids and not sp.ignore_eos) or res.token_id in sp.stop_token_ids:
            reason = "stop"
        # add_request admits only prompt + max_tokens <= max_model_len, so this also bounds the context.
        if reason is None and seq.num_output_tokens >= sp.max_tokens:
            reason = "length"
        skip = reason == "stop"  # the eos / stop token is not part of the text
        delta, hit_stop = self.detok.update(seq, final=reason is not None, skip_last=skip)
        if hit_stop and sp.forced_output_ids is None:
            reason = "stop"
        lps = [res.logprobs] if res.logprobs is not None else None
        if reason is not None:
            out = self._finish(seq, reason, text=delta, new_ids=[res.token_id], logprobs=lps)
            return out
        return RequestOutput(seq.request_id, [res.token_id], delta, logprobs=lps)

    def _finish(self, seq: Sequence, reason: str, text: str = "", new_ids: list[int] | None = None,
                logprobs=None, error: str | None = None) -> RequestOutput:
        self.scheduler.finish(seq, reason)
        self.runner.forget(seq.request_id)
        self.seqs.pop(seq.request_id, None)
        m = seq.metrics
        m.finished_time = self.clock.now()
        m.output_tokens = seq.num_output_tokens
        if reason in ("stop", "length") and m.first_scheduled_time is not None:
            service = m.finished_time - m.first_scheduled_time
            self._service_ema = service if self._service_ema is None else 0.9 * self._service_ema + 0.1 * service
        self.counters["finished"] += 1
        self.finished_metrics.append(m)
        if len(self.finished_metrics) > 10000:
            del self.finished_metrics[:5000]
        if seq.is_last_turn and seq.program_id is not None:
            self._forget_program(seq.program_id)
        self.events.emit("finished", m.finished_time, seq.request_id, seq.program_id, reason=reason,
                         output_tokens=m.output_tokens)
        return RequestOutput(seq.request_id, new_ids or [], text, True, reason, logprobs, m, error)

    def _fail_all(self, error: str) -> list[RequestOutput]:
        outs = []
        for seq in list(self.scheduler.running) + list(self.scheduler.waiting):
            outs.append(self._finish(seq, "error", error=error))
        return outs

    # ---- introspection ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and gauges: tokens, prefix hits, evictions, pins, KV usage, TTFT."""
        with self.lock:
            c = dict(self.counters)
            c.update(self.kv.counters)
            q = c["prefix_query_tokens"]
            ttfts = sorted(m.ttft for m in self.finished_metrics if m.ttft is not None)
            c.update(
                prefix_hit_rate=c["prefix_hit_tokens"] / q if q else 0.0,
                evicted_tokens=self.pool.evicted_blocks * self.pool.block_size,
                preemptions=self.scheduler.num_preemptions,
                running=len(self.scheduler.running), waiting=len(self.scheduler.waiting),
                kv_blocks_total=self.pool.num_blocks, kv_blocks_used=self.pool.num_used,
                kv_blocks_cached_free=self.pool.num_cached_free, pinned_blocks=self.kv.pinned_blocks,
                host_blocks=len(self.kv.host) if self.kv.host is not None else 0,
                active_pins=len(self.kv.pins),
                ttft_mean=sum(ttfts) / len(ttfts) if ttfts else None,
                ttft_p50=ttfts[len(ttfts) // 2] if ttfts else None)
            return c

    def check_no_leaks(self) -> None:
        """Assert block accounting is consistent: refs equal table and pin holdings."""
        with self.lock:
            refs: dict[int, int] = {}
            for seq in self.scheduler.running:
                for b in seq.block_table:
                    refs[b] = refs.get(b, 0) + 1
            for seq in self.scheduler.waiting:
                assert not seq.block_table, f"waiting {seq} holds blocks"
            for pin in self.kv.pins.values():
                for b in pin.block_ids:
                    refs[b] = refs.get(b, 0) + 1
            self.pool.check_consistency(refs)


def kv_block_bytes(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

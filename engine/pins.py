"""The pin controller: tool hint -> predicted duration -> TTL -> pin -> expiry (Continuum).

When a program's turn ends in tool calls, the TTL rule weighs the predicted
tool duration against the memory the program's KV holds and decides how long
to pin it. A pin ends when the program's next turn is admitted (a pin hit),
when its TTL has passed and no turn of the program is waiting, when the
scheduler needs the blocks (least valuable first), or when the program ends.
Pins live in the program table; only this controller sets them.
"""

from __future__ import annotations

from tether.engine.clock import Clock
from tether.engine.events import EventBus
from tether.engine.kv_manager import KVCacheManager
from tether.engine.program_table import Pin, Program, ProgramTable, ToolCall
from tether.engine.sequence import Sequence
from tether.engine.tool_predictor import ToolDurationPredictor
from tether.engine.ttl_policy import PinQuestion, TTLPolicy


class PinController:
    """``cost`` estimates what losing KV costs: ``prefill_time_s(tokens)``, ``copy_time_s(blocks)``
    (the runner's measured speeds).

    Example::

        pins.tool_call("p1", ["pytest"], queue_tokens=0)   # -> tokens pinned (0: the rule said no)
        pins.expire(waiting_programs=set())
    """

    def __init__(self, programs: ProgramTable, kv: KVCacheManager, rule: TTLPolicy,
                 predictor: ToolDurationPredictor, clock: Clock, events: EventBus, cost):
        self.programs = programs
        self.kv = kv
        self.rule = rule
        self.predictor = predictor
        self.clock = clock
        self.events = events
        self.cost = cost
        self.counters = {"tool_hints": 0, "pins": 0, "pin_hits": 0, "pin_hit_tokens": 0, "pins_expired": 0,
                         "pins_released": 0, "pins_released_under_pressure": 0}

    # ---- the program lifecycle -------------------------------------------------------
    def tool_call(self, program_id: str, keys: list[str], queue_tokens: int) -> int:
        """The program's turn ended in calls to tools ``keys``: maybe pin; returns tokens pinned."""
        now = self.clock.now()
        prog = self.programs.tool_started(program_id, keys, now)
        self.counters["tool_hints"] += 1
        self.events.emit("tool_call", now, None, program_id, tools=list(keys))
        if self.kv.host is not None and not prog.host_hashes:  # if evicted meanwhile, keep it on the host
            prog.host_hashes = list(prog.last_turn_hashes)
            self.kv.keep_on_host(prog.host_hashes)
        blocks = len(self.kv.cached_prefix(prog.last_turn_hashes))
        if blocks == 0:
            return 0
        decision = self.rule.decide(self._question(prog, keys, blocks, queue_tokens), self.predictor, now)
        return self.pin(program_id, decision.ttl_s, decision.value) if decision.ttl_s > 0 else 0

    def turn_arrived(self, prog: Program, call: ToolCall | None, now: float) -> None:
        """The program is back: learn how long its tool call took; its blocks need no host copy now."""
        if call is not None:
            for key in call.keys:
                self.predictor.observe(key, now - call.started)
        self._unkeep_host(prog)

    def admitted(self, seq: Sequence) -> None:
        """The program's next turn holds its own references now: the pin has done its work."""
        prog = self.programs.get(seq.program_id)
        if prog is None or prog.pin is None:
            return
        used = len(set(prog.pin.block_ids) & set(seq.block_table))
        self.counters["pin_hits"] += 1 if used else 0
        self.counters["pin_hit_tokens"] += used * self.kv.block_size
        self.events.emit("pin_hit", self.clock.now(), seq.request_id, seq.program_id,
                         tokens=used * self.kv.block_size)
        self._end(prog, reason=None)

    def program_ended(self, prog: Program) -> None:
        self._end(prog, reason="release")
        self._unkeep_host(prog)

    # ---- pins ------------------------------------------------------------------------
    def pin(self, program_id: str, ttl_s: float, value: float | None = None) -> int:
        """Hold the program's last turn's still-cached blocks for ``ttl_s``; returns pinned tokens.

        A new pin replaces the program's previous one. Without a value, the pin that would
        live longest ends first under pressure (Continuum's rule).
        """
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        prog = self.programs.get(program_id)
        if prog is None:
            return 0
        self._end(prog, reason=None)
        if ttl_s == 0:
            return 0
        blocks = self.kv.hold_cached(prog.last_turn_hashes)
        if not blocks:
            return 0
        now = self.clock.now()
        self.programs.set_pin(prog, Pin(blocks, now, now + ttl_s, -(now + ttl_s) if value is None else value))
        self.counters["pins"] += 1
        tokens = len(blocks) * self.kv.block_size
        self.events.emit("pin", now, None, program_id, tokens=tokens, ttl_s=ttl_s)
        return tokens

    def release(self, program_id: str, reason: str = "release") -> bool:
        """End the program's pin now (its blocks stay in the prefix cache); False if none."""
        prog = self.programs.get(program_id)
        return prog is not None and self._end(prog, reason)

    def release_least_valuable(self) -> bool:
        """Under memory pressure: end the pin with the least value; False if there is none."""
        pinned = self.programs.pinned()
        if not pinned:
            return False
        return self._end(min(pinned, key=lambda p: p.pin.value), reason="pressure")

    def expire(self, waiting_programs: set[str]) -> None:
        """End pins whose TTL has passed, unless a turn of the program is waiting for them."""
        now = self.clock.now()
        for prog in self.programs.pinned():
            if prog.pin.expires_at <= now and prog.program_id not in waiting_programs:
                self._end(prog, reason="expiry")

    @property
    def pinned_blocks(self) -> int:
        return sum(p.pin.num_blocks for p in self.programs.pinned())

    def block_refs(self) -> list[int]:
        """Every block reference pins hold (for the leak check)."""
        return [b for p in self.programs.pinned() for b in p.pin.block_ids]

    # ---- internals -------------------------------------------------------------------
    def _end(self, prog: Program, reason: str | None) -> bool:
        pin = prog.pin
        if pin is None:
            return False
        self.programs.set_pin(prog, None)
        self.kv.release(pin.block_ids)
        if reason is not None:
            key = {"expiry": "pins_expired", "pressure": "pins_released_under_pressure"}.get(reason, "pins_released")
            self.counters[key] += 1
            self.events.emit("expiry" if reason == "expiry" else "release", self.clock.now(), None,
                             prog.program_id, tokens=pin.num_blocks * self.kv.block_size, reason=reason)
        return True

    def _unkeep_host(self, prog: Program) -> None:
        if prog.host_hashes:
            self.kv.unkeep_on_host(prog.host_hashes)
            prog.host_hashes = []

    def _question(self, prog: Program, keys: list[str], blocks: int, queue_tokens: int) -> PinQuestion:
        pool = self.kv.pool
        refill = self.cost.prefill_time_s(blocks * pool.block_size)
        if self.kv.host is not None and blocks <= self.kv.host.num_blocks:  # a copy back may beat recompute
            refill = min(refill, self.cost.copy_time_s(blocks))
        return PinQuestion(prog.program_id, list(keys), blocks, pool.num_blocks, self.pinned_blocks,
                           pressure=pool.num_used / pool.num_blocks, refill_s=refill,
                           queue_s=self.cost.prefill_time_s(queue_tokens) if queue_tokens else 0.0)

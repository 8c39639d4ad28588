"""Order of waiting requests (and of preemption victims): a small policy interface."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from typing import Callable

from tether.engine.sequence import Sequence


class QueuePolicy(ABC):
    """``key(seq)``: smaller runs first and is preempted last."""

    def __init__(self):
        self._seq_no = itertools.count()
        self._order: dict[str, int] = {}
        self.now: Callable[[], float] = lambda: 0.0
        self.is_pinned: Callable[[str | None], bool] = lambda program_id: False
        self.starvation_bound: Callable[[], float] = lambda: 60.0

    def bind(self, now: Callable[[], float], is_pinned: Callable[[str | None], bool],
             starvation_bound: Callable[[], float]) -> None:
        """Give the policy the engine's clock, which programs hold pins, and the starvation bound."""
        self.now, self.is_pinned, self.starvation_bound = now, is_pinned, starvation_bound

    def starved(self, seq: Sequence) -> bool:
        """A request that has waited for its first token longer than the bound."""
        return seq.num_output_tokens == 0 and self.now() - seq.arrival_time > self.starvation_bound()

    def on_arrival(self, seq: Sequence) -> None:
        self._order[seq.request_id] = next(self._seq_no)

    def on_finish(self, seq: Sequence) -> None:
        self._order.pop(seq.request_id, None)

    def forget_program(self, program_id: str) -> None:
        """The program has ended."""

    @abstractmethod
    def key(self, seq: Sequence) -> tuple: ...


class RequestFCFS(QueuePolicy):
    """First come, first served by request arrival: what a vLLM user gets."""

    def key(self, seq: Sequence) -> tuple:
        return (seq.arrival_time, self._order.get(seq.request_id, 0))


class ProgramFCFS(QueuePolicy):
    """A request inherits its program's first arrival time, so a program's later
    turns are not queued behind programs that started after it (Continuum); the
    next turn of a program whose KV is pinned goes first. A request that has
    waited longer than the starvation bound goes before all of these, so neither
    rule can hold a first token back without limit."""

    def __init__(self):
        super().__init__()
        self.program_arrival: dict[str, float] = {}

    def on_arrival(self, seq: Sequence) -> None:
        super().on_arrival(seq)
        if seq.program_id is not None:
            seq.priority_time = self.program_arrival.setdefault(seq.program_id, seq.arrival_time)

    def forget_program(self, program_id: str) -> None:
        self.program_arrival.pop(program_id, None)

    def key(self, seq: Sequence) -> tuple:
        return (not self.starved(seq), not self.is_pinned(seq.program_id), seq.priority_time, seq.arrival_time,
                self._order.get(seq.request_id, 0))


QUEUE_POLICIES = {"fcfs": RequestFCFS, "program-fcfs": ProgramFCFS}

"""Order of waiting requests (and choice of preemption victims): queue policies, registered by
name (``EngineConfig(queue_policy=name)``).

A policy sees the engine's clock and the program table. It also owns the
starvation bound: a request that has waited longer than it for its first token
goes first (and, under tether's preset, may end pins). The bound is fixed
(``starvation_s``), or a number of recent turn service times (``starvation_turns``),
so it scales with the engine's speed; with neither there is no starvation rule.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod

from tether.engine.clock import Clock
from tether.engine.program_table import ProgramTable
from tether.engine.registry import Registry
from tether.engine.sequence import Sequence


class QueuePolicy(ABC):
    """``key(seq)``: smaller runs first; ``victim(running)``: whom to preempt when blocks run out."""

    def __init__(self, clock: Clock, programs: ProgramTable, starvation_s: float | None = None,
                 starvation_turns: float | None = None):
        self.clock = clock
        self.programs = programs
        self.starvation_s = starvation_s
        self.starvation_turns = starvation_turns
        self._service_ema: float | None = None  # recent turn service time: first scheduled -> finished
        self._seq_no = itertools.count()
        self._order: dict[str, int] = {}

    @classmethod
    def from_config(cls, config, clock: Clock, programs: ProgramTable) -> "QueuePolicy":
        return cls(clock, programs, config.starvation_s, config.starvation_turns)

    def starvation_bound(self) -> float | None:
        """How long a request may wait for its first token before it goes first; None: no bound."""
        if self.starvation_turns is not None and self._service_ema is not None:
            return max(1.0, self.starvation_turns * self._service_ema)
        return self.starvation_s

    def starved(self, seq: Sequence) -> bool:
        """Waited longer than the bound for its first token."""
        bound = self.starvation_bound()
        return bound is not None and seq.num_output_tokens == 0 and self.clock.now() - seq.arrival_time > bound

    def on_arrival(self, seq: Sequence) -> None:
        self._order[seq.request_id] = next(self._seq_no)

    def on_finish(self, seq: Sequence) -> None:
        self._order.pop(seq.request_id, None)
        m = seq.metrics
        if seq.finish_reason in ("stop", "length") and m.first_scheduled_time is not None:
            service = m.finished_time - m.first_scheduled_time
            self._service_ema = service if self._service_ema is None else 0.9 * self._service_ema + 0.1 * service

    def victim(self, running: list[Sequence]) -> Sequence:
        """``running`` is sorted by ``key``: by default the tail, the lowest priority, is preempted."""
        return running[-1]

    @abstractmethod
    def key(self, seq: Sequence) -> tuple: ...


QUEUE_POLICIES: Registry[type[QueuePolicy]] = Registry("queue policy")


@QUEUE_POLICIES.register("fcfs")
class RequestFCFS(QueuePolicy):
    """First come, first served by request arrival: what a vLLM user gets."""

    def key(self, seq: Sequence) -> tuple:
        return (seq.arrival_time, self._order.get(seq.request_id, 0))


@QUEUE_POLICIES.register("program-fcfs")
class ProgramFCFS(QueuePolicy):
    """A request inherits its program's first arrival time, so a program's later turns are not
    queued behind programs that started after it (Continuum); the next turn of a program whose
    KV is pinned goes first. A starved request goes before all of these, so neither rule can hold
    a first token back without limit.
    """

    def key(self, seq: Sequence) -> tuple:
        arrival = self.programs.arrival(seq.program_id)
        return (not self.starved(seq), not self.programs.is_pinned(seq.program_id),
                seq.arrival_time if arrival is None else arrival, seq.arrival_time,
                self._order.get(seq.request_id, 0))


@QUEUE_POLICIES.register("continuum")
class ContinuumQueue(ProgramFCFS):
    """Continuum's released queue (``vllm/v1/core/sched/request_queue.py``,
    ``ContinuumRequestQueue.peek_request``): pinned jobs first, then by the job's first arrival;
    no starvation rule (its preset sets none). Preemption (``scheduler.py``,
    ``pop_running_request_based_on_last_step``) takes the request of the youngest job (latest
    first arrival) that is not its job's last step, else the youngest job's request.
    """

    def victim(self, running: list[Sequence]) -> Sequence:
        not_last = [s for s in running if not s.is_last_turn]
        # max() keeps the first of equals: Continuum scans the running list with a strict ">".
        return max(not_last or running, key=lambda s: self.programs.arrival(s.program_id) or s.arrival_time)


def _last_chunk_time(seq: Sequence) -> float:
    t = seq.metrics.last_chunk_time
    return seq.arrival_time if t is None else t


@QUEUE_POLICIES.register("lcas")
class LastChunkArrivalFirst(QueuePolicy):
    """Stream2LLM's LCAS for streamed prompts: requests whose last chunk has arrived (sealed, or
    never streamed) go before open ones, each group by the time of its latest chunk, earliest
    first; so a completed prompt's first token is not queued behind contexts still arriving.
    The victim is the tail: the open prompt whose data came last."""

    def key(self, seq: Sequence) -> tuple:
        return (seq.prompt_open, _last_chunk_time(seq), self._order.get(seq.request_id, 0))


@QUEUE_POLICIES.register("mcps")
class MostComputedFirst(QueuePolicy):
    """Stream2LLM's MCPS: the request with the most tokens computed goes first (it is closest to
    its first token, and preempting it would waste the most work); ties by arrival. The victim
    is the request with the least computed."""

    def key(self, seq: Sequence) -> tuple:
        return (-seq.num_computed_tokens, seq.arrival_time, self._order.get(seq.request_id, 0))

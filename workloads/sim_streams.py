"""Streamed turns in a simulated replay: chunk arrivals on the virtual clock.

A turn with ``append_chunks`` starts when its previous tool returns. Streamed, it is
opened then (``EngineCore.open_request``) with the history plus the chunks arrived so far,
each later chunk is applied at its time (``append_prompt`` / ``replace_prompt``) and the
prompt is sealed at the last one. Wait-for-all (``stream=False``), the whole prompt is
queued at the last chunk's arrival. Chunk times are scaled by ``time_scale`` like tool
durations. Each arrival is an event on the replay's heap, handed back here when due.

    streams = SimStreams(core, settings)
    last = streams.start(rid, request, history, steps, start, push)  # push(time, i): schedule arrival i
    streams.arrive(rid, i, now)                                       # the i-th arrival is due
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tether.engine import Request
from tether.engine.core import EngineCore
from tether.workloads.chunks import ChunkStep
from tether.workloads.replay_common import ReplaySettings

WHOLE = -1  # the arrival index of wait-for-all's one submission


@dataclass
class _Stream:
    request: Request          # the final prompt: history + the turn's appended tokens
    history: list[int]
    steps: list[ChunkStep]
    content: list[int] = field(default_factory=list)  # streamed part so far, until opened
    opened: bool = False


class SimStreams:
    """The streamed turns whose prompt is not complete yet."""

    def __init__(self, core: EngineCore, settings: ReplaySettings):
        self.core, self.settings = core, settings
        self._open: dict[str, _Stream] = {}

    def start(self, rid: str, request: Request, history: list[int], steps: list[ChunkStep], start: float,
              push: Callable[[float, int], None]) -> float:
        """The turn ``rid`` (final prompt in ``request``) starts at ``start``; its later arrivals are
        scheduled with ``push(time, arrival index)``. Returns its last chunk's time."""
        times = [start + s.time_s * self.settings.time_scale for s in steps]
        s = _Stream(request, history, steps)
        self._open[rid] = s
        if not self.settings.stream:
            push(times[-1], WHOLE)
            return times[-1]
        due = sum(t <= start for t in times)
        for i in range(due):  # arrived with the turn's start
            s.content = _fold(s.content, steps[i])
        self._try_open(s, start)
        if due == len(steps):
            self._seal(rid, start)
        for i in range(due, len(steps)):
            push(times[i], i)
        return times[-1]

    def arrive(self, rid: str, i: int, now: float) -> None:
        """Arrival ``i`` of turn ``rid`` is due (``WHOLE``: wait-for-all sends the final prompt)."""
        s = self._open[rid]
        if i == WHOLE:
            self.core.add_request(s.request, arrival_time=now)
            del self._open[rid]
            return
        step = s.steps[i]
        if not s.opened:
            s.content = _fold(s.content, step)
            self._try_open(s, now)
        elif step.op == "append":
            self.core.append_prompt(rid, step.ids, now)
        else:
            self.core.replace_prompt(rid, s.history + step.ids, now)
        if i == len(s.steps) - 1:
            self._seal(rid, now)

    def _try_open(self, s: _Stream, now: float) -> None:
        prompt = s.history + s.content
        if prompt:  # a first turn opens only once something has arrived (the engine takes no empty prompt)
            self.core.open_request(s.request.model_copy(update={"prompt_token_ids": prompt}), arrival_time=now)
            s.opened = True

    def _seal(self, rid: str, now: float) -> None:
        self.core.seal_prompt(rid, now)
        del self._open[rid]


def _fold(content: list[int], step: ChunkStep) -> list[int]:
    return content + step.ids if step.op == "append" else list(step.ids)

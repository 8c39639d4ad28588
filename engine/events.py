"""Engine events, for tracing and replay: one listener hook receives them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class EngineEvent:
    """``kind``: queued, scheduled, prefill_chunk, first_token, finished, prefix_hit, preempted,
    tool_call, pin, pin_hit, expiry, release, eviction, or step (``new_tokens``, ``context`` and
    ``duration_s`` of one runner call)."""

    kind: str
    time: float
    request_id: str | None = None
    program_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[EngineEvent], None]


class EventBus:
    """Calls every registered listener; a no-op when none is registered."""

    def __init__(self):
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def active(self) -> bool:
        """Someone listens: worth building an event's data."""
        return bool(self._listeners)

    def emit(self, kind: str, time: float, request_id: str | None = None,
             program_id: str | None = None, **data: Any) -> None:
        if not self._listeners:
            return
        ev = EngineEvent(kind, time, request_id, program_id, data)
        for fn in self._listeners:
            fn(ev)

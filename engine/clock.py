"""The engine reads time only through a clock, so replay can run it on virtual time."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod


class Clock(ABC):
    @abstractmethod
    def now(self) -> float:
        """Seconds, monotonic."""


class RealClock(Clock):
    def now(self) -> float:
        return time.monotonic()


class VirtualClock(Clock):
    """Time that moves only when told to (deterministic simulation)."""

    def __init__(self, start: float = 0.0):
        self._t = start

    def now(self) -> float:
        return self._t

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError("a clock cannot go back")
        self._t += dt

    def set(self, t: float) -> None:
        self.advance(t - self._t)

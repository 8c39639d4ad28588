"""How long will a program's tool call take? Learned online from observed durations.

A tool key is what ``tool_key.tool_key`` gives: the tool's name, or for shell
tools the command's program (e.g. ``pytest``). Each key keeps its recent durations (an empirical distribution);
a key with few samples falls back to all tools' durations, then to a default.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections import deque


class ToolDurationPredictor(ABC):
    @abstractmethod
    def observe(self, key: str, duration_s: float) -> None: ...

    @abstractmethod
    def samples(self, keys: list[str]) -> list[float]:
        """Sorted durations that describe how long a call to ``keys`` (run together) takes."""

    def mean(self, keys: list[str]) -> float:
        s = self.samples(keys)
        return sum(s) / len(s)

    def seen(self, key: str) -> bool:
        return False

    def own_mean(self, key: str) -> float | None:
        """Mean of ``key``'s own observations (None if never seen): no fallback to other tools."""
        return None


class EmpiricalPredictor(ToolDurationPredictor):
    """Recent observations per key; cold keys borrow all tools' distribution, then a default.

    Example::

        pred = EmpiricalPredictor()
        pred.observe("pytest", 12.0)
        pred.samples(["pytest"])   # -> all tools' samples until pytest has min_samples
    """

    def __init__(self, window: int = 256, min_samples: int = 3, default_s: float = 2.0):
        self.window = window
        self.min_samples = min_samples
        self.default_s = default_s
        self.per_key: dict[str, deque[float]] = {}
        self.all: deque[float] = deque(maxlen=window * 4)

    def observe(self, key: str, duration_s: float) -> None:
        if duration_s < 0:
            return
        self.per_key.setdefault(key, deque(maxlen=self.window)).append(duration_s)
        self.all.append(duration_s)

    def seen(self, key: str) -> bool:
        return key in self.per_key

    def own_mean(self, key: str) -> float | None:
        own = self.per_key.get(key)
        return sum(own) / len(own) if own else None

    def _key_samples(self, key: str) -> list[float]:
        own = self.per_key.get(key)
        if own is not None and len(own) >= self.min_samples:
            return sorted(own)
        if len(self.all) >= self.min_samples:
            return sorted(self.all)
        return [self.default_s]

    def samples(self, keys: list[str]) -> list[float]:
        if not keys:
            return [self.default_s]
        if len(keys) == 1:
            return self._key_samples(keys[0])
        # Calls run together: the program waits for the slowest; take the slowest key's distribution.
        dists = [self._key_samples(k) for k in keys]
        return max(dists, key=lambda d: d[len(d) // 2])


def prob_done_by(samples: list[float], t: float) -> float:
    """Empirical P(duration <= t) for sorted ``samples``."""
    return bisect.bisect_right(samples, t) / len(samples)

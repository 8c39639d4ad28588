"""Which unreferenced cached block to evict first: eviction policies, registered by name
(``EngineConfig(eviction_policy=name)``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict

from tether.engine.registry import Registry


class EvictionPolicy(ABC):
    """Holds the ids of cached blocks nobody references; ``pop`` picks a victim."""

    @abstractmethod
    def add(self, block_id: int) -> None: ...

    @abstractmethod
    def remove(self, block_id: int) -> None: ...

    @abstractmethod
    def pop(self) -> int: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, block_id: int) -> bool: ...


class LRUEviction(EvictionPolicy):
    """Least recently freed first (vLLM's and SGLang's baseline).

    Blocks of one sequence are freed tail first, so a prefix outlives its suffix.
    """

    def __init__(self):
        self._order: OrderedDict[int, None] = OrderedDict()

    def add(self, block_id: int) -> None:
        self._order[block_id] = None

    def remove(self, block_id: int) -> None:
        del self._order[block_id]

    def pop(self) -> int:
        return self._order.popitem(last=False)[0]

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, block_id: int) -> bool:
        return block_id in self._order


EVICTION_POLICIES: Registry[type[EvictionPolicy]] = Registry("eviction policy")
EVICTION_POLICIES.register("lru", LRUEviction)

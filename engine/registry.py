"""Named registries for the pluggable parts (queue policies, TTL rules, eviction policies,
model architectures, trace formats, policy presets).

Adding a part is one class in one file plus a registration; configs name it.

Example::

    TTL_RULES = Registry[type]("TTL rule")

    @TTL_RULES.register("never")
    class Never: ...

    TTL_RULES.get("never")   # -> Never; an unknown name lists the known ones
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> part. ``register`` is a decorator or a plain call; names are unique."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Register ``item`` under ``name`` (or decorate it); ``replace`` allows re-registering."""
        def add(obj: T) -> T:
            if name in self._items and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj
        return add if item is None else add(item)

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._items) or 'none'}") from None

    def check(self, name: str) -> str:
        """``name`` if registered, else ValueError listing the known names (for config validators)."""
        self.get(name)
        return name

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

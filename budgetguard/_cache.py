"""The one bounded-cache facility: named, size-capped memo tables for values derived from repeating keys.

Counters, scope sets, windows and digests repeat across calls, so the code derives them once and keeps them;
every such table is a :class:`Bounded` (or a function under :func:`memo`) with a name, so that none grows
without bound and all of them can be listed (:func:`caches`) and emptied (:func:`clear_caches`) in one place.

A full table forgets its oldest entries (insertion order, a sixteenth of the table at a time), so a
process that sees more keys than the bound keeps working at the same speed and never drops its whole
working set at once.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["Bounded", "caches", "clear_caches", "memo"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
F = TypeVar("F", bound=Callable[..., Any])

_registry: dict[str, Bounded[Any, Any] | Any] = {}
_lock = threading.Lock()


class Bounded(dict[K, V], Generic[K, V]):
    """A dict capped at ``limit`` entries. Read it as a dict; write through :meth:`put`, which forgets the
    oldest entries once the table is full. On a hot path, look up through its ``get`` bound once
    (``find = table.get``; ``find(key)``): CPython specializes the call of a bound C method, but not a
    method call on a dict subclass (``table.get(key)``: about 170 instructions more a lookup).

    Tables owned by one object (a guard, a store) pass ``shared=False``: they are not listed by name,
    since several live at once, and go with their owner."""

    __slots__ = ("_batch", "_lock", "limit", "name")

    def __init__(self, name: str, limit: int, *, shared: bool = True) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"a bounded cache holds at least one entry, got limit={limit}")
        self.name = name
        self.limit = limit
        self._batch = max(1, limit // 16)
        self._lock = threading.Lock()  # (writes only: a read is one dict lookup, atomic as it is)
        if shared:
            _register(name, self)

    def put(self, key: K, value: V) -> V:
        """Keep ``value`` under ``key`` and return it; the oldest entries go when the table is full."""
        with self._lock:
            if len(self) >= self.limit and key not in self:
                # A sixteenth of the table at a time (one entry in a table of 31 or fewer): a deleted entry
                # leaves a hole that iterating from the start scans until the dict is resized, so
                # forgetting one entry per put would scan ever more of them (31 us a put in a full table of
                # 65,536).
                for old in list(itertools.islice(self, self._batch)):
                    del self[old]
            self[key] = value
        return value

    def clear(self) -> None:
        with self._lock:  # (not while a put evicts)
            super().clear()

    def __repr__(self) -> str:
        return f"<Bounded {self.name!r}: {len(self)}/{self.limit}>"


def memo(name: str, limit: int) -> Callable[[F], F]:
    """Memoize a pure function of hashable arguments under ``name``, keeping at most ``limit`` results
    (``functools.lru_cache`` underneath: the C implementation, least recently used goes first)."""

    def decorate(fn: F) -> F:
        cached = functools.lru_cache(maxsize=limit)(fn)
        _register(name, cached)
        return cached  # type: ignore[return-value]

    return decorate


def _register(name: str, table: Any) -> None:
    with _lock:  # a reloaded module's table replaces its old self under the same name
        _registry[name] = table


def caches() -> dict[str, int]:
    """Every named cache and how many entries it holds now."""
    with _lock:
        tables = dict(_registry)
    return {
        name: len(table) if isinstance(table, Bounded) else table.cache_info().currsize
        for name, table in sorted(tables.items())
    }


def clear_caches() -> None:
    """Empty every named cache (they refill as keys come back); for tests and long-lived processes that
    want their memory back."""
    with _lock:
        tables = list(_registry.values())
    for table in tables:
        if isinstance(table, Bounded):
            table.clear()
        else:
            table.cache_clear()

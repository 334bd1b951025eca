"""The stored form of a reservation's holds and of a refusal: JSON text (the SQLite and Redis stores) or a
flat tuple of atomic values (the memory store: a tuple of str, int and None is no work for the garbage
collector, which untracks it)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .._budgets import Period, Scope, Unit
from .._cache import Bounded
from ._types import CounterSpec, HeldCounter, Refusal

__all__ = [
    "decode_held",
    "decode_refusal",
    "encode_held",
    "encode_refusal",
    "held_fields",
    "pack_held",
    "pack_refusal",
    "unpack_held",
    "unpack_refusal",
]

_HELD_WIDTH = 6
"""A hold's fields in a packed tuple (``pack_held``)."""


def held_fields(counter: CounterSpec, window_start: int, window_end: int | None) -> list[Any]:
    """A stored hold's fields up to its amount and limit (the layout ``decode_held`` reads)."""
    c = counter
    return [c.scope.kind, c.scope.id, c.unit.value, c.period.value, c.tz, c.limit, window_start, window_end]


_compact = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps(value, separators=(",", ":"))`` without building an encoder per call."""


_prefixes: Bounded[tuple[str, int, int], str] = Bounded("ledger.held_prefixes", 4096)
"""A counter's ``held_fields`` in one window as JSON, without its closing bracket, by (``limit_field``,
code limit, window start): a reservation's holds repeat them, only the amounts change."""


def encode_held(held: Iterable[HeldCounter]) -> str:
    """``[[*held_fields, amount, limit], ...]`` as compact JSON (``_compact`` writes the same)."""
    find = _prefixes.get
    parts = []
    for h in held:
        c = h.counter
        key = (c.limit_field, c.limit, h.window_start)
        prefix = find(key)
        if prefix is None:
            prefix = _prefixes.put(key, _compact(held_fields(c, h.window_start, h.window_end))[:-1])
        parts.append(f"{prefix},{int(h.amount)},{int(h.limit)}]")
    return f"[{','.join(parts)}]"


def decode_held(text: str) -> tuple[HeldCounter, ...]:
    return tuple(
        HeldCounter(
            counter=CounterSpec(Scope(kind, ident), Unit(unit), Period(period), default, tz),
            window_start=start,
            window_end=end,
            amount=amount,
            limit=limit,
        )
        for kind, ident, unit, period, tz, default, start, end, amount, limit in json.loads(text)
    )


def pack_held(held: Sequence[HeldCounter]) -> tuple[Any, ...]:
    """A reservation's holds, flat in one tuple of atomic values: per hold its counter's ``limit_field``
    (its identity) and code limit, its window, amount and limit."""
    if len(held) == 1:  # (the common case, without a generator)
        h = held[0]
        c = h.counter
        return (c.limit_field, c.limit, h.window_start, h.window_end, h.amount, h.limit)
    out: list[Any] = []
    for h in held:
        c = h.counter
        out += (c.limit_field, c.limit, h.window_start, h.window_end, h.amount, h.limit)
    return tuple(out)


def unpack_held(packed: tuple[Any, ...]) -> tuple[HeldCounter, ...]:
    out = []
    for i in range(0, len(packed), _HELD_WIDTH):
        field, default, start, end, amount, limit = packed[i : i + _HELD_WIDTH]
        kind, ident, unit, period, tz = json.loads(field)  # (CounterSpec.limit_field's layout)
        spec = CounterSpec(Scope(kind, ident), Unit(unit), Period(period), default, tz)
        out.append(HeldCounter(spec, start, end, amount, limit))
    return tuple(out)


def pack_refusal(refusal: Refusal) -> tuple[Any, ...]:
    """``encode_refusal``'s fields, flat in one tuple of atomic values."""
    c = refusal.counter
    assert c is not None, "a stored refusal names its counter"
    r = refusal
    return (r.index, r.limit, r.spent, r.held, r.requested, r.window_end,
            c.scope.kind, c.scope.id, c.unit.value, c.period.value, c.tz, c.limit)  # fmt: skip


def unpack_refusal(packed: tuple[Any, ...]) -> Refusal:
    index, limit_now, spent, held, requested, window_end, kind, ident, unit, period, tz, limit = packed
    spec = CounterSpec(Scope(kind, ident), Unit(unit), Period(period), limit, tz)
    return Refusal(index, limit_now, spent, held, requested, window_end, spec)


def decode_refusal(text: str) -> Refusal:
    index, limit_now, spent, held, requested, window_end, counter = json.loads(text)
    kind, ident, unit, period, tz, limit = counter
    spec = CounterSpec(Scope(kind, ident), Unit(unit), Period(period), limit, tz)
    return Refusal(index, limit_now, spent, held, requested, window_end, spec)


def encode_refusal(refusal: Refusal) -> str:
    c = refusal.counter
    assert c is not None, "a stored refusal names its counter"
    counter = [c.scope.kind, c.scope.id, c.unit.value, c.period.value, c.tz, c.limit]
    return json.dumps(
        [
            refusal.index,
            refusal.limit,
            refusal.spent,
            refusal.held,
            refusal.requested,
            refusal.window_end,
            counter,
        ]
    )

"""The stored form of a reservation's holds and of a refusal (JSON), shared by the SQLite and Redis stores."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .._budgets import Period, Scope, Unit
from ._types import CounterSpec, HeldCounter, Refusal

__all__ = ["decode_held", "decode_refusal", "encode_held", "encode_refusal", "held_fields"]


def held_fields(counter: CounterSpec, window_start: int, window_end: int | None) -> list[Any]:
    """A stored hold's fields up to its amount and limit (the layout ``decode_held`` reads)."""
    c = counter
    return [c.scope.kind, c.scope.id, c.unit.value, c.period.value, c.tz, c.limit, window_start, window_end]


def encode_held(held: Iterable[HeldCounter]) -> str:
    return json.dumps(
        [[*held_fields(h.counter, h.window_start, h.window_end), h.amount, h.limit] for h in held],
        separators=(",", ":"),
    )


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

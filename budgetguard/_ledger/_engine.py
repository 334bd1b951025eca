"""The ledger contract in plain Python, over a small transactional storage interface.

The memory and SQLite stores run these functions inside one lock / one ``BEGIN IMMEDIATE``
transaction. The Redis store runs the same steps in Lua (``lua/*.lua``); the shared test suite holds
all of them to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from .._budgets import Unit, Window
from .._money import INT64_MAX
from ._base import scope_labels
from ._types import (
    UNIT_TEXT,
    UNITS,
    CounterSpec,
    CounterStatus,
    HeldCounter,
    Hold,
    Outcome,
    Refusal,
    Reservation,
    ReservationError,
)

Meta = dict[str, Any]

__all__ = ["Engine", "Tx", "counter_key"]

RECORD_RETENTION_MS = 86_400_000
"""Resolved reservations are remembered this long after their lease, for idempotent repeats."""
COUNTER_RETENTION_MS = 86_400_000
"""Counters of a finished window are kept this long after it ends, then dropped."""


_windows: dict[tuple[str, str], Window] = {}


def window_cached(counter: CounterSpec, now: int) -> Window:
    """The counter's window at ``now``; calendar maths only when ``now`` leaves the last one.

    Reusing a window that contains ``now`` is exact because a (period, tz)'s windows partition time
    (``window_for``): the window holding an instant is the only one, whenever it was computed."""
    key = (counter.period, counter.tz)  # (a StrEnum hashes as its text, in C)
    window = _windows.get(key)
    if window is None or now < window.start or (window.end is not None and now >= window.end):
        window = _windows[key] = counter.window(now)
    return window


def counter_key(counter: CounterSpec, window_start: int) -> str:
    return f"{counter.limit_field}@{window_start}"


def counter_expiry(window_end: int | None) -> int | None:
    """When a counter of the window ending at ``window_end`` is dropped; ``None``: never (a total)."""
    return None if window_end is None else window_end + COUNTER_RETENTION_MS


class Tx(Protocol):
    """One atomic transaction on a store's state."""

    def counter(self, key: str) -> tuple[int, int]: ...
    def put_counter(self, key: str, spent: int, held: int, expires_at: int | None, label: str) -> None: ...
    def add_lease(self, key: str, res_id: str, expires_at: int, amount: int) -> None: ...
    def pop_expired(self, key: str, now: int) -> list[tuple[str, int]]: ...
    def pop_lease(self, key: str, res_id: str) -> int | None: ...
    def record(self, res_id: str) -> dict[str, Any] | None: ...
    def put_record(self, res_id: str, record: dict[str, Any], expires_at: int) -> None: ...
    def limit(self, field: str) -> int | None: ...
    def put_limit(self, field: str, value: int | None) -> None: ...
    def journal(
        self,
        ts: int,
        event: str,
        res_id: str,
        scopes: Sequence[str],
        amounts: dict[str, int],
        data: dict[str, Any],
    ) -> None: ...


class WindowMismatch(Exception):
    """The store's clock is outside a window the caller computed: recompute with ``now``."""

    def __init__(self, now: int) -> None:
        self.now = now


class Engine:
    def __init__(self, record_retention_ms: int = RECORD_RETENTION_MS) -> None:
        self.record_retention_ms = record_retention_ms

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _reclaim(tx: Tx, key: str, counter: CounterSpec, now: int, expires_at: int | None) -> None:
        """Drop the holds of expired leases on one counter (a crashed worker leaks nothing)."""
        expired = tx.pop_expired(key, now)
        if not expired:
            return
        spent, held = tx.counter(key)
        label = counter.label
        for res_id, amount in expired:
            held -= amount
            tx.journal(now, "expired", res_id, [label], {counter.unit.value: amount}, {})
        tx.put_counter(key, spent, held, expires_at, label)

    # -- operations ----------------------------------------------------------------------------

    def reserve(
        self,
        tx: Tx,
        now: int,
        res_id: str,
        holds: Sequence[Hold],
        lease_ms: int,
        meta: dict[str, Any],
        enforce: bool = True,
    ) -> Reservation | Refusal:
        record = tx.record(res_id)
        if record is not None:
            return self._repeat_reserve(res_id, record)
        windows = [window_cached(h.counter, now) for h in holds]
        keys = [counter_key(h.counter, w.start) for h, w in zip(holds, windows, strict=True)]
        labels = [h.counter.label for h in holds]
        held_counters: list[HeldCounter] = []
        for i, (hold, window, key) in enumerate(zip(holds, windows, keys, strict=True)):
            self._reclaim(tx, key, hold.counter, now, counter_expiry(window.end))
            override = tx.limit(hold.counter.limit_field)
            limit = hold.counter.limit if override is None else override
            spent, held = tx.counter(key)
            if enforce and spent + held + hold.amount > limit:
                refusal = Refusal(i, limit, spent, held, hold.amount, window.end, hold.counter)
                tx.put_record(
                    res_id,
                    {"state": "refused", "refusal": refusal},
                    now + self.record_retention_ms,
                )
                tx.journal(
                    now,
                    "refused",
                    res_id,
                    [labels[i]],
                    {hold.counter.unit.value: hold.amount},
                    meta,
                )
                return refusal
            held_counters.append(HeldCounter(hold.counter, window.start, window.end, hold.amount, limit))
        expires = now + lease_ms
        for hold, window, key, label in zip(holds, windows, keys, labels, strict=True):
            spent, held = tx.counter(key)
            tx.put_counter(key, spent, held + hold.amount, counter_expiry(window.end), label)
            tx.add_lease(key, res_id, expires, hold.amount)
        return self.held(tx, res_id, tuple(held_counters), now, expires, meta)

    def held(
        self, tx: Tx, res_id: str, held: tuple[HeldCounter, ...], now: int, expires: int, meta: Meta
    ) -> Reservation:
        """Store an admitted reservation's record (its holds are on the counters already)."""
        record = {"state": "held", "created": now, "expires": expires, "held": held, "meta": meta}
        tx.put_record(res_id, record, expires + self.record_retention_ms)
        return Reservation(res_id, held, now, expires)

    @staticmethod
    def _repeat_reserve(res_id: str, record: dict[str, Any]) -> Reservation | Refusal:
        if record["state"] == "refused":
            refusal: Refusal = record["refusal"]
            return refusal
        return Reservation(res_id, record["held"], record["created"], record["expires"], duplicate=True)

    def resolve(
        self,
        tx: Tx,
        now: int,
        res_id: str,
        actual: Mapping[Unit, int] | None,
        meta: dict[str, Any],
    ) -> Outcome:
        """Commit (``actual`` given) or release (``actual`` None) a reservation, once."""
        record = tx.record(res_id)
        if record is None:
            raise ReservationError(
                f"unknown reservation {res_id!r}: never reserved here, or resolved more than a day ago"
            )
        if record["state"] == "refused":
            raise ReservationError(f"reservation {res_id!r} was refused; it holds nothing to resolve")
        if record["state"] in ("committed", "released"):
            return _outcome(res_id, record["outcome"], duplicate=True)
        held_counters: tuple[HeldCounter, ...] = record["held"]
        if actual is not None:
            missing = {h.counter.unit for h in held_counters} - set(actual)
            if missing:
                raise ValueError(f"actual has no amount for {sorted(u.value for u in missing)}")
        keys = [counter_key(h.counter, h.window_start) for h in held_counters]
        for h, key in zip(held_counters, keys, strict=True):  # validate before the first write
            spent, _ = tx.counter(key)
            if actual is not None and spent + actual[h.counter.unit] > INT64_MAX:
                raise ValueError(f"committing {actual[h.counter.unit]} would overflow {h.counter.scope}")
        expired = False
        overrun = False
        after: list[int] = []
        for h, key in zip(held_counters, keys, strict=True):
            label = h.counter.label
            ttl = counter_expiry(h.window_end)  # a late commit may find its counter dropped: keep a TTL
            self._reclaim(tx, key, h.counter, now, ttl)
            amount = tx.pop_lease(key, res_id)
            spent, held = tx.counter(key)
            if amount is None:
                expired = True
            else:
                held -= amount
            charge = 0 if actual is None else actual[h.counter.unit]
            overrun = overrun or charge > h.amount
            tx.put_counter(key, spent + charge, held, ttl, label)
            after.append(spent + charge)
        return self.resolved(tx, now, res_id, record, actual, meta, overrun, expired, tuple(after))

    def resolved(
        self,
        tx: Tx,
        now: int,
        res_id: str,
        record: Mapping[str, Any],
        actual: Mapping[Unit, int] | None,
        meta: Meta,
        overrun: bool,
        expired: bool,
        after: tuple[int, ...],
    ) -> Outcome:
        """Store a resolution (the counters are updated already), journal it, and say how it went."""
        held_counters: tuple[HeldCounter, ...] = record["held"]
        state: Literal["committed", "released"] = "released" if actual is None else "committed"
        charged = (
            {}
            if actual is None
            else dict(zip(map(UNIT_TEXT.__getitem__, actual), actual.values(), strict=True))
        )
        # the counters' spent totals too: a repeat (a retry after a lost reply) reports them, and so
        # fires the thresholds this resolution crossed
        outcome = {"state": state, "charged": charged, "overrun": overrun, "expired": expired, "spent": after}
        # a held record's fields, without its meta (journaled below: repeats are answered without it)
        stored = {"state": state, "created": record["created"], "expires": record["expires"],
                  "held": record["held"], "outcome": outcome}  # fmt: skip
        tx.put_record(res_id, stored, max(now, record["expires"]) + self.record_retention_ms)
        data = {**record.get("meta", {}), **meta}
        if overrun:
            data["overrun"] = True
        if expired:
            data["expired"] = True
        if actual is None:
            charged_or_held = {UNIT_TEXT[h.counter.unit]: h.amount for h in held_counters}
        else:
            charged_or_held = charged
        tx.journal(now, state, res_id, scope_labels(held_counters), charged_or_held, data)
        return Outcome(res_id, state, {} if actual is None else actual, overrun, expired, False, after)

    def status(self, tx: Tx, now: int, counters: Sequence[CounterSpec]) -> list[CounterStatus]:
        result = []
        for counter in counters:
            window = window_cached(counter, now)
            key = counter_key(counter, window.start)
            self._reclaim(tx, key, counter, now, counter_expiry(window.end))
            override = tx.limit(counter.limit_field)
            spent, held = tx.counter(key)
            result.append(
                CounterStatus(
                    counter=counter,
                    window_start=window.start,
                    window_end=window.end,
                    limit=counter.limit if override is None else override,
                    spent=spent,
                    held=held,
                    overridden=override is not None,
                )
            )
        return result


def _outcome(res_id: str, stored: Mapping[str, Any], *, duplicate: bool = False) -> Outcome:
    return Outcome(
        res_id,
        stored["state"],
        {UNITS[k]: v for k, v in stored["charged"].items()},
        stored["overrun"],
        stored["expired"],
        duplicate,
        tuple(stored.get("spent", ())),  # (records written before it was kept have none)
    )

"""Stores that run the Python engine in this process: ``memory://`` and ``sqlite:///path``.

Both implement ``_atomic()``; everything else (validation, the contract, the async twin) is here
once. Their clock is this machine's clock (``time.time_ns``), which every process on it shares.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

from ._admin import (
    Adjustment,
    LimitRaise,
    adjust,
    check_adjust,
    check_raise,
    check_reset,
    check_set_limits,
    raise_limit,
    set_limits,
)
from ._base import OPERATIONS, AsyncLedger, JournalQuery, Ledger, ReservationRef, Store, check_namespace
from ._engine import Engine, Tx, end_raise, live_limit
from ._facts import call_scopes
from ._meta import expand
from ._types import (
    Amounts,
    CounterSpec,
    CounterStatus,
    JournalEntry,
    Outcome,
    Refusal,
    Reservation,
    check_actual,
    check_amount,
    check_meta,
    check_reservation_id,
    check_reserve,
    to_datetime,
)

Meta = dict[str, Any]
R = TypeVar("R")

__all__ = ["AsyncLocalLedger", "LocalLedger", "call_lists", "journal_entry", "wall_clock_ms"]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _put_limit(tx: Tx, now: int, field: str, value: int | None) -> None:
    tx.put_limit(field, value)
    end_raise(tx, field)  # (a limit set outright ends a temporary raise)


def _get_limit(tx: Tx, now: int, field: str) -> int | None:
    override = tx.limit(field)
    return None if override is None else live_limit(tx, now, field, override)


def _res_id(ref: ReservationRef) -> str:
    if type(ref) is Reservation:  # made by a store, or a repeat of one: looked up as is (an id no store
        return ref.id  # made is unknown to the local stores, which only look ids up: never injected)
    return check_reservation_id(ref.id if isinstance(ref, Reservation) else ref)


class LocalLedger(Store, Ledger):
    """Shared implementation of the in-process stores."""

    def __init__(self, *, namespace: str, url: str, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.namespace = check_namespace(namespace)
        self.url = url
        self._clock = clock
        self._engine = Engine()

    @abstractmethod
    def _atomic(self, op: Callable[..., R], *args: Any) -> R:
        """``op(tx, now, *args)`` in one exclusive, atomic transaction (all of its writes land, or
        none), ``now`` read from the store's clock inside it."""

    @abstractmethod
    def _journal(
        self, since: int | None, until: int | None, scope: str | None, limit: int | None
    ) -> Iterator[JournalEntry]: ...

    @abstractmethod
    def _complete_since_ms(self) -> int | None:
        """``journal_complete_since`` in ms since the epoch."""

    # The operations, behind the public methods ``Store`` makes from ``Ledger``'s declarations.

    def _reserve(self, *args: Any) -> Reservation:
        checked, lease_ms, res_id, meta, enforce = check_reserve(*args)
        data = check_meta(meta)
        fresh = args[2] is None  # (an id drawn by check_reserve)
        result = self._atomic(self._engine.reserve, res_id, checked, lease_ms, data, enforce, fresh)
        if isinstance(result, Refusal):
            raise result.error(checked)
        return result

    def _commit(
        self, reservation: ReservationRef, actual: Amounts, meta: Mapping[str, Any] | None
    ) -> Outcome:
        res_id = _res_id(reservation)
        parsed = check_actual(actual, reservation.held if isinstance(reservation, Reservation) else ())
        return self._atomic(self._engine.resolve, res_id, parsed, check_meta(meta))

    def _release(self, reservation: ReservationRef, meta: Mapping[str, Any] | None) -> Outcome:
        res_id = _res_id(reservation)
        return self._atomic(self._engine.resolve, res_id, None, check_meta(meta))

    def _status(self, counters: Iterable[CounterSpec]) -> list[CounterStatus]:
        return self._atomic(self._engine.status, list(counters))

    def _set_limit(self, counter: CounterSpec, limit: int) -> None:
        check_amount(limit, "limit")
        self._atomic(_put_limit, counter.limit_field, limit)

    def _get_limit(self, counter: CounterSpec) -> int | None:
        return self._atomic(_get_limit, counter.limit_field)

    def _clear_limit(self, counter: CounterSpec) -> None:
        self._atomic(_put_limit, counter.limit_field, None)

    def _adjust(self, *args: Any) -> Adjustment:
        counter, amount, op_id, data = check_adjust(*args)
        return self._atomic(adjust, self._engine.slot, counter, amount, op_id, data)

    def _reset(self, *args: Any) -> Adjustment:
        return self._atomic(adjust, self._engine.slot, *check_reset(*args))

    def _raise_limit(self, *args: Any) -> LimitRaise:
        return self._atomic(raise_limit, *check_raise(*args))

    def _set_limits(self, *args: Any) -> None:
        self._atomic(set_limits, *check_set_limits(*args))

    def _history(self, *query: Any) -> list[JournalEntry]:
        parsed = JournalQuery.parse(*query)
        out: list[JournalEntry] = []
        parsed.take(self._journal(parsed.since, parsed.until, parsed.scope, None), out)
        return out

    def stream_history(
        self, *, since: datetime | None = None, until: datetime | None = None, chunk: int = 5_000
    ) -> Iterator[JournalEntry]:
        """``Ledger.stream_history``, through the store's own cursor over its journal."""
        query = JournalQuery.parse(since, until, None, None, None, None)
        return self._journal(query.since, query.until, None, None)

    def _journal_complete_since(self) -> datetime | None:
        ms = self._complete_since_ms()
        return None if ms is None else to_datetime(ms)


def journal_entry(ts: int, event: str, res_id: str, scopes: str, amounts: str, data: str) -> JournalEntry:
    labels, parsed = tuple(json.loads(scopes)), json.loads(amounts)
    return JournalEntry(
        ts=ts,
        event=event,  # type: ignore[arg-type]
        reservation_id=res_id,
        scopes=labels,
        amounts=parsed,
        data=expand(json.loads(data), labels, parsed),  # (the guard's compact form: _meta)
    )


def call_lists(rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    """The lists of call scopes (JSON) of journal rows (``journal_entry``'s columns), read from their data,
    one by one: a CSV export's columns for rows whose report columns were not read (``r_scopes`` may lack
    some)."""
    for row in rows:
        entry = journal_entry(*row)
        yield json.dumps(call_scopes(entry.data, entry.scopes))


class AsyncLocalLedger(Store, AsyncLedger):
    """The async twin of a local store: each operation runs in a worker thread (SQLite blocks on
    file locks; the memory store's lock is held for microseconds)."""

    def __init__(self, sync: LocalLedger, *, in_thread: bool) -> None:
        self.sync = sync
        self.namespace = sync.namespace
        self.url = sync.url
        self.in_thread = in_thread
        """Operations run in a worker thread (else inline: nothing in them awaits, so a cancellation
        cannot cut one short)."""

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        # an iterable argument (holds, counters, events) is read here, not in the worker thread
        args = tuple(list(a) if isinstance(a, Iterable) and not isinstance(a, tuple | str | Mapping) else a
                     for a in args)  # fmt: skip
        if self.in_thread:
            import asyncio  # (here, not at import: loaded already, since this runs on its loop)

            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def aclose(self) -> None:
        await self._run(self.sync.close)

    def sync_twin(self) -> Ledger:
        return self.sync  # shared, not closed by the caller


def _in_thread(name: str) -> Callable[..., Any]:
    def operation(self: AsyncLocalLedger, *args: Any) -> Any:
        return self._run(getattr(self.sync, name), *args)

    operation.__name__ = name
    return operation


for _name in OPERATIONS:  # each runs the sync store's, in a worker thread (or inline)
    setattr(AsyncLocalLedger, f"_{_name}", _in_thread(f"_{_name}"))

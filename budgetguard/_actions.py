"""The I/O a call flow asks its driver for: store writes and reads, the call, a sleep, a token count.

A flow (``_flow``, ``_job``, a stream's settlement) is a generator that yields these actions and receives
their results; the drivers (``_drivers``) perform them, synchronously or on an event loop. An action
knows how to send itself to a store (a ``Ledger``, an ``AsyncLedger`` or a job's hold, see ``Store``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, final

from ._budgets import Unit
from ._calibration import JournalRead
from ._ledger import CounterSpec, Hold, Reservation

__all__ = ["Action", "Draw", "Flow", "NotSent", "Store"]


class Store(Protocol):
    """What an action is sent to: a ``Ledger``, an ``AsyncLedger`` (whose methods return awaitables) or a
    job's hold (``Job``, in memory)."""

    def reserve(self, holds: Any, *, lease: float, meta: Any, enforce: bool) -> Any: ...

    def commit(self, reservation: Any, actual: Any, *, meta: Any) -> Any: ...

    def release(self, reservation: Any, *, meta: Any) -> Any: ...

    def status(self, counters: Any) -> Any: ...


# -- actions (built per call and never changed: slotted, not frozen, which is cheaper) --


@final
@dataclass(slots=True)
class Reserve:
    holds: tuple[Hold, ...]
    meta: Mapping[str, Any]
    enforce: bool = True
    lease: float | None = None
    """Seconds; the guard's ``lease`` when ``None``."""
    job: Store | None = None
    """The job whose hold this draws on, else the store's counters."""

    def send(self, store: Store, lease: float) -> Any:
        """Send it: the store's reply (a ``Ledger``, a ``Job``) or an awaitable of it (an ``AsyncLedger``)."""
        lease = lease if self.lease is None else self.lease
        return store.reserve(self.holds, lease=lease, meta=self.meta, enforce=self.enforce)


@final
@dataclass(slots=True)
class Resolve:
    reservation: Reservation
    actual: Mapping[Unit, int] | None
    meta: Mapping[str, Any]

    @property
    def job(self) -> Store | None:
        """The job a draw on a job's hold settles on."""
        reservation = self.reservation
        return reservation.job if isinstance(reservation, Draw) else None

    def send(self, store: Store, lease: float) -> Any:
        if self.actual is None:
            return store.release(self.reservation, meta=self.meta)
        return store.commit(self.reservation, self.actual, meta=self.meta)


@final
@dataclass(slots=True)
class Call:
    model: str | None


@final
@dataclass(slots=True)
class Sleep:
    seconds: float


@final
@dataclass(slots=True)
class Status:
    counters: tuple[CounterSpec, ...]
    job: Store | None = None

    def send(self, store: Store, lease: float) -> Any:
        return store.status(self.counters)


@final
@dataclass(slots=True)
class Count:
    """Ask the provider's token counting endpoint (``Estimator.count_request``) for the input tokens."""

    request: Mapping[str, Any]


Action = Reserve | Resolve | Call | Sleep | Status | Count | JournalRead


Flow = Generator[Action, Any, Any]


@dataclass(frozen=True, slots=True)
class Draw(Reservation):
    """A reservation on a job's hold (never sent to the store)."""

    job: Store | None = None
    model: str | None = None


class NotSent(Exception):
    """The reason an attempt is released without its call (never charged: nothing reached the API)."""

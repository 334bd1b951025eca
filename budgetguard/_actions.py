"""The I/O a call flow asks its driver for: store writes and reads, the call, a sleep, a token count.

A flow (``_flow``, ``_job``, a stream's settlement) is a generator that yields these actions and receives
their results; the drivers (``_drivers``) perform them, synchronously or on an event loop. An action
knows how to send itself to a store (a ``Ledger``, an ``AsyncLedger`` or a job's hold, see ``Store``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, final

from ._budgets import Unit
from ._calibration import JournalRead
from ._estimate import Estimate
from ._ledger import CounterSpec, Hold, Reservation

__all__ = ["Action", "Draw", "Flow", "NotSent", "OpenJob", "Store", "current_job", "open_jobs"]


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
    id: str | None = None
    """The reservation's id (a late charge's, derived from the reservation it stands for); else random."""

    def send(self, store: Store, lease: float) -> Any:
        """Send it: the store's reply (a ``Ledger``, a ``Job``) or an awaitable of it (an ``AsyncLedger``)."""
        lease = lease if self.lease is None else self.lease
        if self.id is not None:  # a late charge: to a Ledger or an AsyncLedger (never a job's hold)
            ledger: Any = store
            return ledger.reserve(self.holds, lease=lease, meta=self.meta, enforce=self.enforce, id=self.id)
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


class OpenJob(Store, Protocol):
    """A job open in this context (``_job.Job``): the calls inside draw on its hold, a store of its own."""

    guard: object
    parent: OpenJob | None

    def draw_holds(
        self, counters: Iterable[CounterSpec], est: Estimate, usd: int | None
    ) -> tuple[Hold, ...]: ...


open_jobs: contextvars.ContextVar[Any] = contextvars.ContextVar("budgetguard_job", default=None)
"""The innermost job open in this context (``Job`` sets it as it starts and resets it as it ends)."""


def current_job(guard: object) -> OpenJob | None:
    """The open job of ``guard`` in this context, if any."""
    job: OpenJob | None = open_jobs.get()
    while job is not None and job.guard is not guard:  # a job of another guard: look outwards
        job = job.parent
    return job

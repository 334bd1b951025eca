"""The I/O a call flow asks its driver for: store writes and reads, the call, a sleep, a token count.

A flow (``_flow``, ``_job``, a stream's settlement) is a generator that yields these actions and receives
their results; the drivers (``_drivers``) perform them, synchronously or on an event loop. An action
knows how to send itself to a store (a ``Ledger``, an ``AsyncLedger`` or a job's hold, see ``Store``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, final

from ._budgets import Unit
from ._calibration import JournalRead
from ._estimate import Estimate
from ._ledger import CounterSpec, Hold, Reservation
from ._ledger._types import Enforce

__all__ = [
    "LATE", "Action", "Draw", "Flow", "Late", "NotSent", "OpenJob", "Store",
    "current_job", "late_id", "open_jobs",
]  # fmt: skip

LATE = "late: the store no longer knew the reservation (its record outlived its retention); charged anyway"
"""The reason of the ``overrun`` event of a late charge (see ``Late``)."""


class Store(Protocol):
    """What an action is sent to: a ``Ledger``, an ``AsyncLedger`` (whose methods return awaitables) or a
    job's hold (``Job``, in memory)."""

    def reserve(self, holds: Any, *, lease: float, meta: Any, enforce: Enforce) -> Any: ...

    def commit(self, reservation: Any, actual: Any, *, meta: Any) -> Any: ...

    def release(self, reservation: Any, *, meta: Any) -> Any: ...

    def status(self, counters: Any) -> Any: ...


# -- actions (built per call and never changed: slotted, not frozen, which is cheaper) --


@final
@dataclass(slots=True)
class Reserve:
    holds: tuple[Hold, ...]
    meta: Mapping[str, Any]
    enforce: Enforce = True
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
    reserved: Mapping[str, Any] | None = None
    """The reservation's journal data, for a late charge to journal again (see ``late``)."""

    @property
    def job(self) -> Store | None:
        """The job a draw on a job's hold settles on."""
        reservation = self.reservation
        return reservation.job if isinstance(reservation, Draw) else None

    def send(self, store: Store, lease: float) -> Any:
        if self.actual is None:
            return store.release(self.reservation, meta=self.meta)
        return store.commit(self.reservation, self.actual, meta=self.meta)

    def late(self) -> Late | None:
        """What stands for this commit once the store no longer knows its reservation (a
        ``ReservationError``): a late charge. None for a release (nothing left to do) and for a draw on a
        job's hold (in memory: it forgets nothing)."""
        if self.actual is None or self.reserved is None or isinstance(self.reservation, Draw):
            return None
        return Late(self.reservation, self.actual, self.meta, self.reserved)


@final
@dataclass(slots=True)
class Late:
    """A late charge: ``actual`` charged for a reservation the store forgot (a call that outlived its lease
    and its record's retention, ``RECORD_RETENTION_MS``: its hold was reclaimed when the lease ended). The
    money is spent, so it is charged under a reservation of its own, holding 0 on the same counters and
    unenforced, committed at once, both journaled with ``late``. Its id derives from the original's, so a
    repeat (a retried settlement) charges once. One action: a cancellation cannot cut it in two.
    Replies ``(late reservation, outcome)``."""

    reservation: Reservation
    actual: Mapping[Unit, int]
    meta: Mapping[str, Any]
    reserved: Mapping[str, Any]
    job = None  # (to a Ledger or an AsyncLedger, never a job's hold)

    def send(self, store: Store, lease: float) -> Any:
        flags = {"late": True, "late_of": self.reservation.id}
        holds = tuple(Hold(h.counter, 0) for h in self.reservation.held)
        ledger: Any = store
        res_id = late_id(self.reservation.id)
        made = ledger.reserve(holds, lease=lease, meta={**self.reserved, **flags}, enforce=False, id=res_id)
        meta = {**self.meta, **flags}
        if isinstance(made, Reservation):  # a Ledger; an AsyncLedger replies an awaitable
            return made, ledger.commit(made, self.actual, meta=meta)
        return self._commit_after(ledger, made, meta)

    async def _commit_after(self, ledger: Any, made: Awaitable[Reservation], meta: Mapping[str, Any]) -> Any:
        late = await made
        return late, await ledger.commit(late, self.actual, meta=meta)


def late_id(res_id: str) -> str:
    """A late charge's reservation id: the original's with ``.late`` (a digest when that is too long)."""
    if len(res_id) <= 123:
        return f"{res_id}.late"
    import hashlib

    return f"{hashlib.sha256(res_id.encode()).hexdigest()}.late"


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


Action = Reserve | Resolve | Late | Call | Sleep | Status | Count | JournalRead


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

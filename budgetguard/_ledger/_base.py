"""The ledger interface every store implements (``Ledger``, ``AsyncLedger``), the ``Store`` mixin that
makes a store's public methods from it, and ``JournalQuery``, a history call's filters."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._budgets import Scope
from .._errors import ConfigurationError
from ._twins import abstract_async, forward, forward_async, optional_async
from ._types import (
    Amounts,
    CounterSpec,
    CounterStatus,
    Enforce,
    Hold,
    JournalEntry,
    Outcome,
    Reservation,
    scope_labels,
    to_datetime,
)

if TYPE_CHECKING:
    from ._admin import Adjustment, LimitRaise

__all__ = [
    "OPERATIONS",
    "AsyncLedger",
    "JournalQuery",
    "Ledger",
    "ReservationRef",
    "Store",
    "check_namespace",
    "check_setting",
    "scope_labels",
]

ReservationRef = Reservation | str
DEFAULT_LEASE = 120.0
DEFAULT_NAMESPACE = "default"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_namespace(namespace: object) -> str:
    """A namespace is 1-64 characters of A-Z a-z 0-9 _ . - (it names Redis keys and SQLite tables)."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ConfigurationError(
            f"namespace {namespace!r} must be 1-64 characters of A-Z a-z 0-9 _ . -, e.g. team-a"
        )
    return namespace


def check_setting(value: object, what: str) -> int:
    """A store setting that counts something (``journal_maxlen``, ``journal_retention_days``): a whole
    number, at least 1 (a URL gives it as text)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} must be a whole number, at least 1, got {value!r}")
    return value


class Ledger(ABC):
    """The atomic store behind every budget (see DESIGN: "The ledger contract").

    * ``reserve`` admits a reservation only if, for every counter, ``spent + held + amount <= limit``
      (all counters or none), else raises ``BudgetExceededError`` naming the first failing scope.
      ``enforce=False`` holds without the check (metering: count, never refuse); ``enforce="shadow"``
      checks by the same rule but admits anyway, and returns the refusal it would have been as
      ``Reservation.shadowed`` (journaled ``shadow_refused``); a counter whose ``CounterSpec.shadow``
      is set is checked so in any case.
    * ``commit`` charges the actual amounts (more than held is charged and flagged as an overrun),
      ``release`` drops the hold. Each reservation resolves once; repeats return the first outcome.
    * Leases expire on the store's clock; expired holds are reclaimed by the next operation on the
      counter; a commit after expiry still charges the actual amount, once.
    """

    namespace: str
    url: str

    @abstractmethod
    def reserve(
        self,
        holds: Iterable[Hold],
        *,
        lease: float = DEFAULT_LEASE,
        id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        enforce: Enforce = True,
    ) -> Reservation: ...

    @abstractmethod
    def commit(
        self,
        reservation: ReservationRef,
        actual: Amounts,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> Outcome: ...

    @abstractmethod
    def release(self, reservation: ReservationRef, *, meta: Mapping[str, Any] | None = None) -> Outcome: ...

    @abstractmethod
    def status(self, counters: Iterable[CounterSpec]) -> list[CounterStatus]: ...

    @abstractmethod
    def set_limit(self, counter: CounterSpec, limit: int) -> None:
        """Override ``counter``'s limit at run time (stored in the ledger; wins over code)."""

    @abstractmethod
    def get_limit(self, counter: CounterSpec) -> int | None:
        """The run-time override of ``counter``'s limit, or ``None``."""

    @abstractmethod
    def clear_limit(self, counter: CounterSpec) -> None: ...

    # Administration (``_admin``): each change is atomic and journaled with ``actor`` and ``reason``.

    def adjust(
        self, counter: CounterSpec, amount: int, *, actor: str, reason: str, id: str | None = None
    ) -> Adjustment:
        """Change ``counter``'s spent in its current window by ``amount`` (signed: negative credits or
        refunds, positive charges), never below 0 (a credit past spent takes it to 0); holds stay.
        A rolling counter's window is the trailing one a check counts: a charge lands in the bucket
        holding now, a credit comes off the buckets newest first. Journaled ``adjusted``. Once per
        ``id``, as ``reserve``: a repeat returns the first result."""
        raise NotImplementedError(f"{type(self).__name__} has no administration")

    def reset(self, counter: CounterSpec, *, actor: str, reason: str, id: str | None = None) -> Adjustment:
        """Take ``counter``'s spent in its current window (a rolling counter's: every bucket a check
        counts) to 0 (holds stay), journaled ``reset`` with the amount removed. Once per ``id``, as
        ``adjust``."""
        raise NotImplementedError(f"{type(self).__name__} has no administration")

    def raise_limit(
        self, counter: CounterSpec, extra: int, *, until: datetime | timedelta, actor: str, reason: str
    ) -> LimitRaise:
        """Raise ``counter``'s limit (its run-time limit, else the one in code) by ``extra`` until
        ``until`` (an aware datetime, or a ``timedelta`` from now on the store's clock), when it goes
        back by itself, with no job. A raise in force is replaced; ``set_limit`` and ``clear_limit`` end
        it. Journaled ``limit_raised``."""
        raise NotImplementedError(f"{type(self).__name__} has no administration")

    def set_limits(
        self, limits: Mapping[CounterSpec, int | None], *, actor: str, reason: str, plan: str | None = None
    ) -> None:
        """Set several counters' run-time limits at once (``None`` clears one), ending their raises: all
        or none. Journaled ``limits_set`` (with ``plan``, the plan they come from, if given)."""
        raise NotImplementedError(f"{type(self).__name__} has no administration")

    @abstractmethod
    def history(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        scope: Scope | str | None = None,
        model: str | None = None,
        events: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[JournalEntry]:
        """Journal entries, oldest first, filtered by time range, scope, model and event."""

    @abstractmethod
    def journal_complete_since(self) -> datetime | None:
        """Since when the journal is complete: ``None`` if it has never dropped an entry, else an
        instant such that every entry from it on is kept and some entry before it was dropped (the
        journal is bounded: ``journal_maxlen`` entries on memory and Redis, ``journal_retention_days``
        on SQLite). ``history`` before it is incomplete; reports say so."""

    def stream_history(
        self, *, since: datetime | None = None, until: datetime | None = None, chunk: int = 5_000
    ) -> Iterator[JournalEntry]:
        """The journal's entries from ``since`` to ``until``, oldest first, read ``chunk`` at a time: a
        range of any length streams through in bounded memory (reports, exports). This reads pages of
        ``history``, each from the newest time read so far, and skips what it holds up to the last
        entry already given (an entry's time may lag its place in the journal: never the time alone);
        a store that can keep a cursor open reads through it instead."""
        start = (
            since if since is None or since.tzinfo else since.astimezone()
        )  # (as ``timestamp()`` reads it)
        last: tuple[int, str, str] | None = None  # the last entry given
        while True:
            page = self.history(since=start, until=until, limit=chunk)
            keys = [(e.ts, e.reservation_id, e.event) for e in page]
            if last is not None and last in keys:
                fresh = page[keys.index(last) + 1 :]
            elif last is not None and len(page) >= chunk:
                chunk *= 2  # the last entry given lies further on: read a longer page
                continue
            else:
                fresh = page  # (the first page, or the last entry given was trimmed meanwhile)
            yield from fresh
            if len(page) < chunk:
                return
            if not fresh:  # a page of entries given already: read a longer one
                chunk *= 2
                continue
            last, newest = keys[-1], to_datetime(page[-1].ts - 1)  # (a ms early: an id may lag its time too)
            start = newest if start is None else max(start, newest)

    def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release connections and files."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLedger(ABC):
    """The async twin of ``Ledger``: the same contract, awaitable (each method is made from
    ``Ledger``'s declaration: the same arguments, defaults and documentation)."""

    namespace: str
    url: str

    reserve = abstract_async(Ledger.reserve)
    commit = abstract_async(Ledger.commit)
    release = abstract_async(Ledger.release)
    status = abstract_async(Ledger.status)
    set_limit = abstract_async(Ledger.set_limit)
    get_limit = abstract_async(Ledger.get_limit)
    clear_limit = abstract_async(Ledger.clear_limit)
    adjust = optional_async(Ledger.adjust)
    reset = optional_async(Ledger.reset)
    raise_limit = optional_async(Ledger.raise_limit)
    set_limits = optional_async(Ledger.set_limits)
    history = abstract_async(Ledger.history)
    journal_complete_since = abstract_async(Ledger.journal_complete_since)

    async def aclose(self) -> None:  # noqa: B027
        """Release connections and files."""

    def sync_twin(self) -> Ledger | None:
        """A sync store on the same data, for settling where no event loop runs (``Guard.close()``, exit):
        a new store the caller closes after use, or, for a store that wraps a sync one, that one itself
        (shared: not to be closed). ``None`` (the default) when there is none."""
        return None

    async def __aenter__(self) -> AsyncLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


OPERATIONS = ("reserve", "commit", "release", "status", "set_limit", "get_limit", "clear_limit", "adjust",
              "reset", "raise_limit", "set_limits", "history", "journal_complete_since")  # fmt: skip
"""The ledger's operations: every store has them, sync or async."""


class Store:
    """Mixed into a store (a ``Ledger`` or an ``AsyncLedger``): its public operations are made from
    ``Ledger``'s declarations (``_twins``), sync or async to match, and pass their arguments, in
    declaration order, to the store's ``_<operation>`` (which an async store's returns awaitable)."""

    reserve: Any
    commit: Any
    release: Any
    status: Any
    set_limit: Any
    get_limit: Any
    clear_limit: Any
    adjust: Any
    reset: Any
    raise_limit: Any
    set_limits: Any
    history: Any
    journal_complete_since: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        make = forward if Ledger in mro else forward_async if AsyncLedger in mro else None
        if make is None:
            return  # a shared base of sync and async stores: their own classes get the methods
        for name in OPERATIONS:
            owner = next(c for c in mro if name in c.__dict__)
            if owner is Ledger or owner is AsyncLedger:  # declared, not implemented yet
                setattr(cls, name, make(getattr(Ledger, name)))


@dataclass(frozen=True, slots=True)
class JournalQuery:
    """A ``history`` call's filters, read once for every store: times in ms since the epoch, the scope
    as the journal names it."""

    since: int | None
    until: int | None
    scope: str | None
    model: str | None
    events: frozenset[str] | None
    limit: int | None

    @classmethod
    def parse(cls, *query: Any) -> JournalQuery:
        """From ``Ledger.history``'s arguments, in declaration order."""
        since, until, scope, model, events, limit = query
        return cls(
            None if since is None else int(since.timestamp() * 1000),
            None if until is None else int(until.timestamp() * 1000),
            None if scope is None else str(Scope.parse(scope)),
            model,
            None if events is None else frozenset(events),
            limit,
        )

    def take(self, entries: Iterable[JournalEntry], out: list[JournalEntry]) -> bool:
        """Add the ``entries`` that match to ``out``; True once it holds ``limit`` of them."""
        for entry in entries:
            if (
                (self.scope is None or self.scope in entry.scopes)
                and (self.model is None or entry.model == self.model)
                and (self.events is None or entry.event in self.events)
            ):
                out.append(entry)
                if self.limit is not None and len(out) >= self.limit:
                    return True
        return False

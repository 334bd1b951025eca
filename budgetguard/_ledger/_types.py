"""The ledger contract's value types and input validation, shared by every store."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .._budgets import ROLLING, Period, Scope, Unit, Window, rolling_span, window_for
from .._errors import BudgetExceededError, BudgetGuardError, ConfigurationError
from .._frozen import fast_init
from .._money import INT64_MAX, to_usd

__all__ = [
    "Amounts",
    "CounterSpec",
    "CounterStatus",
    "Enforce",
    "HeldCounter",
    "Hold",
    "JournalEntry",
    "Outcome",
    "Refusal",
    "Reservation",
    "ReservationError",
]

UNITS: dict[object, Unit] = {**{u.value: u for u in Unit}, **{u: u for u in Unit}}
"""Unit by name or by itself: a dict lookup is much cheaper than ``Unit(key)`` on the hot path."""
UNIT_TEXT: dict[Unit, str] = {u: u.value for u in Unit}
"""A unit's name (a lookup here is cheaper than the enum's ``.value`` property)."""

Amounts = Mapping[Unit, int] | Mapping[str, int]
"""Amounts per unit, keyed by ``Unit`` or its name (``{"usd": 1500, "tokens": 420}``)."""

_RES_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ReservationError(BudgetGuardError, LookupError):
    """A commit or release named a reservation the ledger does not hold (unknown, or refused)."""


def check_amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int (nano-USD, tokens or requests), got {value!r}")
    if not 0 <= value <= INT64_MAX:
        raise ValueError(f"{what} must be between 0 and 2**63-1, got {value}")
    return value


def unresolvable(res_id: str, refused: bool = False) -> ReservationError:
    """The error of a commit or release that has nothing to resolve (every store's words)."""
    if refused:
        return ReservationError(f"reservation {res_id!r} was refused; it holds nothing to resolve")
    return ReservationError(
        f"unknown reservation {res_id!r}: never reserved here, or resolved longer ago than it is remembered"
    )


def check_reservation_id(value: object) -> str:
    if not isinstance(value, str) or not _RES_ID.fullmatch(value):
        raise ValueError(
            f"reservation id {value!r} must be 1-128 characters of A-Z a-z 0-9 _ . : -; "
            "leave it out to get a random one"
        )
    return value


@functools.lru_cache(maxsize=256, typed=True)  # callers repeat their lease; typed: True is not 1
def check_lease(seconds: object) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"lease must be a number of seconds, got {seconds!r}")
    lease_ms = round(seconds * 1000)
    if not 0 < lease_ms <= 30 * 86_400_000:
        raise ValueError(f"lease must be more than 0 and at most 30 days, got {seconds!r} s")
    return lease_ms


def new_reservation_id() -> str:
    return os.urandom(12).hex()  # secrets.token_hex(12), without its two call layers


def to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One counter: a scope's running total in one unit over one period."""

    scope: Scope
    unit: Unit
    period: Period
    limit: int
    """The limit set in code; a limit stored in the ledger (``set_limit``) wins over it."""
    tz: str = "UTC"
    """An IANA zone for a calendar window, or ``ROLLING`` for a rolling one."""
    shadow: bool = field(default=False, compare=False)
    """Checked in shadow: a reservation past its limit is admitted and the refusal it would have been
    is recorded (``Reservation.shadowed``, a ``shadow_refused`` journal entry). Not part of the
    counter's identity: a budget moved from shadow to enforcing keeps its spend."""
    limit_field: str = field(init=False, repr=False, compare=False)
    """The counter's identity as text: the key of its run-time limit (JSON: injective for any id)."""
    label: str = field(init=False, repr=False, compare=False)
    """``str(scope)``, as the journal names it."""

    def __post_init__(self) -> None:
        check_amount(self.limit, "limit")
        identity = [self.scope.kind, self.scope.id, self.unit.value, self.period.value, self.tz]
        object.__setattr__(self, "limit_field", json.dumps(identity))
        object.__setattr__(self, "label", str(self.scope))

    @property
    def rolling(self) -> bool:
        """A rolling window (``tz`` is ``ROLLING``): counted per bucket (see ``_budgets.ROLLING``)."""
        return self.tz == ROLLING

    def window(self, now_ms: int) -> Window:
        """The window at ``now_ms``; a rolling counter's bucket."""
        return window_for(self.period, self.tz, now_ms)


@dataclass(frozen=True, slots=True)
class Hold:
    """Ask to hold ``amount`` on a counter."""

    counter: CounterSpec
    amount: int

    def __post_init__(self) -> None:
        check_amount(self.amount, "hold amount")


_last_checked: tuple[Hold, ...] = ()


def check_holds(holds: Iterable[Hold]) -> tuple[Hold, ...]:
    global _last_checked
    if holds is _last_checked:  # a tuple of frozen holds: what was valid still is (callers reuse them)
        return holds
    holds = tuple(holds)
    if not holds:
        raise ValueError("a reservation needs at least one hold")
    seen = set()
    for hold in holds:
        if not isinstance(hold, Hold):
            raise TypeError(f"holds must be Hold objects, got {hold!r}")
        key = hold.counter.limit_field
        if key in seen:
            raise ConfigurationError(
                f"two holds on the same counter ({hold.counter.scope} {hold.counter.unit.value} per "
                f"{hold.counter.period.value}); merge the budgets (an exact-scope budget replaces the "
                "kind's budget)"
            )
        seen.add(key)
    _last_checked = holds
    return holds


Enforce = bool | Literal["shadow"]
"""How a reservation is checked: ``True`` (refuse past a limit), ``False`` (hold without checking:
metering) or ``"shadow"`` (check, record the refusal it would have been, admit anyway)."""


def check_reserve(
    holds: Iterable[Hold], lease: float, id: str | None, meta: Mapping[str, Any] | None, enforce: Enforce
) -> tuple[tuple[Hold, ...], int, str, Mapping[str, Any] | None, Enforce]:
    """``Ledger.reserve``'s arguments, in declaration order, checked (every store, before any I/O): the
    holds, the lease in ms and the reservation id (a new one when none is given); meta and enforce as
    given (each store checks meta as it stores it)."""
    if enforce is not True and enforce is not False and enforce != "shadow":
        raise ValueError(f"enforce must be True, False or 'shadow', got {enforce!r}")
    checked = check_holds(holds)
    lease_ms = check_lease(lease)
    if lease_ms > _SHORTEST_SPAN:
        check_rolling_lease(checked, lease_ms)
    return checked, lease_ms, new_reservation_id() if id is None else check_reservation_id(id), meta, enforce


_SHORTEST_SPAN = rolling_span(Period.MINUTE)


def check_rolling_lease(holds: Iterable[Hold], lease_ms: int) -> None:
    """Refuse a lease longer than a rolling counter's window (``rolling_span``): its hold stays in the
    bucket of its reservation, and a check stops counting that bucket once it is a window old, so a
    longer lease would leave a live hold uncounted and admit spend past the limit."""
    for hold in holds:
        counter = hold.counter
        if counter.tz == ROLLING and lease_ms > (span := rolling_span(counter.period)):
            raise ConfigurationError(
                f"a lease of {lease_ms / 1000:g} s is longer than the rolling {counter.period.value} of "
                f"{counter.label} ({span / 1000:g} s): a hold is counted in a rolling window only that "
                f"long after its reservation. Pass lease= at most {span / 1000:g} s (Guard(lease=...), "
                "guard.reserve(lease=...)), or use a calendar window for longer calls and jobs"
            )


@fast_init
@dataclass(frozen=True, slots=True)
class HeldCounter:
    """What a reservation holds on one counter, in the window the store's clock put it in."""

    counter: CounterSpec
    window_start: int
    window_end: int | None
    amount: int
    limit: int


def scope_labels(held: Sequence[HeldCounter]) -> tuple[str, ...]:
    """The distinct scopes of a reservation's counters, in order."""
    if len(held) == 1:
        return (held[0].counter.label,)
    return tuple(dict.fromkeys(h.counter.label for h in held))


@fast_init
@dataclass(frozen=True, slots=True)
class Reservation:
    """An admitted reservation: pass it to ``commit`` or ``release``."""

    id: str
    held: tuple[HeldCounter, ...]
    created_at: int
    expires_at: int
    """Lease end, epoch milliseconds on the store's clock."""
    duplicate: bool = False
    """True when this reserve call repeated an earlier one with the same id."""
    shadowed: Refusal | None = None
    """The refusal this reservation would have been, admitted in shadow (``enforce="shadow"``, or a
    counter checked in shadow): the first counter past its limit, as a refusal names it. ``None`` when
    it fit, and on a repeat (the journal has it once)."""

    @property
    def units(self) -> frozenset[Unit]:
        return frozenset(h.counter.unit for h in self.held)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused (stored so a repeated id gets the same answer)."""

    index: int
    limit: int
    spent: int
    held: int
    requested: int
    window_end: int | None
    counter: CounterSpec | None = None
    """The refused counter, as the first call named it (a repeat with other holds reports it too)."""

    def error(self, holds: Sequence[Hold]) -> BudgetExceededError:
        spec = self.counter if self.counter is not None else holds[self.index].counter

        def out(x: int) -> Any:
            return to_usd(x) if spec.unit is Unit.USD else x

        return BudgetExceededError(
            scope=str(spec.scope),
            unit=spec.unit.value,
            period=spec.period.value,
            limit=out(self.limit),
            spent=out(self.spent),
            held=out(self.held),
            requested=out(self.requested),
            resets_at=None if self.window_end is None else to_datetime(self.window_end),
        )


@fast_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """How a reservation was resolved."""

    id: str
    state: Literal["committed", "released"]
    charged: Mapping[Unit, int] = field(default_factory=dict)
    overrun: bool = False
    """The actual amount was above the hold on some counter (charged anyway: the money is gone)."""
    expired: bool = False
    """The lease had expired (and the hold was reclaimed) before this resolution."""
    duplicate: bool = False
    """This call repeated an earlier resolution and changed nothing."""
    spent: tuple[int, ...] = ()
    """Each held counter's spent right after this commit, in reservation order; a repeat returns the
    first resolution's (a retry after a lost reply must still fire the thresholds its commit crossed).
    With the reservation's limits, this is what threshold alerts are computed from."""


@dataclass(frozen=True, slots=True)
class CounterStatus:
    counter: CounterSpec
    window_start: int
    window_end: int | None
    limit: int
    spent: int
    held: int
    overridden: bool
    """The limit comes from the ledger (``set_limit``), not from code."""

    @property
    def remaining(self) -> int:
        return max(self.limit - self.spent - self.held, 0)

    @property
    def resets_at(self) -> datetime | None:
        return None if self.window_end is None else to_datetime(self.window_end)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One line of the ledger's history: a refusal, commit, release or expiry, a refusal in shadow
    (``shadow_refused``: the reservation was admitted), or an administrative change (``adjusted``,
    ``reset``, ``limit_raised``, ``limits_set``: its data says who and why)."""

    ts: int
    event: Literal[
        "refused", "shadow_refused", "committed", "released", "expired",
        "adjusted", "reset", "limit_raised", "limits_set",
    ]  # fmt: skip
    reservation_id: str
    scopes: tuple[str, ...]
    amounts: Mapping[str, int]
    """Per unit: the actual amount charged (commit), or the amount refused / released / expired; the
    signed change of spent (adjusted, reset: negative for a credit), the extra limit (limit_raised)."""
    data: Mapping[str, Any]
    """What the caller attached: model, usage, estimated amounts, attempt, overrun flag..."""

    @property
    def time(self) -> datetime:
        return to_datetime(self.ts)

    @property
    def model(self) -> str | None:
        value = self.data.get("model")
        return value if isinstance(value, str) else None

    @property
    def variant(self) -> Mapping[str, str] | None:
        """The price variant charged (``{"service_tier": "flex"}``, ``{"processing": "batch"}``), or
        ``None`` for the standard price: the one the response reported, else the one requested."""
        value = self.data.get("variant")
        return value if isinstance(value, Mapping) else None


class CheckedAmounts(dict[Unit, int]):
    """Amounts budgetguard computed itself: one non-negative int64 per ``Unit``, every unit present,
    never changed once passed. Stores take them without checking (see ``check_actual``)."""


def check_actual(actual: Amounts, held: Iterable[Unit | HeldCounter]) -> Mapping[Unit, int]:
    """Validate a commit's actual amounts: one non-negative int64 per unit the reservation holds
    (``held``: its units, or its held counters)."""
    if type(actual) is CheckedAmounts:
        return actual
    parsed: dict[Unit, int] = {}
    for key, value in actual.items():
        unit = UNITS.get(key)
        if unit is None:
            raise ValueError(f"unknown unit {key!r} in actual; use usd, tokens or requests")
        if type(value) is not int or not 0 <= value <= INT64_MAX:  # the common case without a call
            check_amount(value, f"actual {unit.value}")
        parsed[unit] = value
    if len(parsed) == len(UNIT_TEXT):
        return parsed  # every unit: none missing
    missing = set()
    for h in held:
        unit = h if isinstance(h, Unit) else h.counter.unit
        if unit not in parsed:
            missing.add(unit.value)
    if missing:
        raise ValueError(
            f"actual has no amount for {', '.join(sorted(missing))}, which the reservation holds"
        )
    return parsed


class JournalData(dict[str, Any]):
    """Journal data built by budgetguard itself from plain JSON values (str keys; str, int, bool, None,
    tuples and dicts of those), never changed once passed: stores take it without copying or checking."""


def check_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Journal data attached to a reservation: a JSON-serializable mapping (every store keeps it)."""
    if type(meta) is JournalData:
        return meta
    if not meta:
        return {}
    data = dict(meta)
    if _plain_json(data, 4):
        return data
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"journal data must be JSON-serializable: {exc}") from exc
    return data


_SCALARS = (str, int, bool, float, type(None))


def _plain_json(value: object, depth: int) -> bool:
    """True when ``value`` is made of plain dicts (str keys), lists, str, int, float, bool and None
    only: what ``json.dumps`` surely takes, checked without encoding (False: let ``json.dumps`` say)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth == 0:
        return False
    if kind is dict:
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str or (type(v) not in _SCALARS and not _plain_json(v, depth - 1)):
                return False
        return True
    if kind is list or kind is tuple:
        for v in value:  # type: ignore[attr-defined]  # noqa: SIM110
            if type(v) not in _SCALARS and not _plain_json(v, depth - 1):
                return False
        return True
    return False

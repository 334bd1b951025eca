"""Scopes, budgets and their time windows.

A scope is a kind and an id: ``global``, ``user:alice``, ``feature:search``, ``team:7``. Ids are user
data and may hold any character (``:``, ``{``, ``*``, newlines, 10 kB of unicode); stores never put an
id into key syntax unescaped. A budget is a limit on a scope kind (every ``user:*``) or on one exact
scope, in USD, tokens or requests, per calendar period (UTC unless a time zone is given), per rolling
period (the trailing minute, hour, day or week: ``ROLLING``) or in total.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from ._cache import memo
from ._errors import ConfigurationError
from ._money import INT64_MAX, Money, format_usd, to_nano

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = [
    "ROLLING",
    "Budget",
    "Period",
    "Scope",
    "Unit",
    "Window",
    "rolling_bucket",
    "rolling_span",
    "window_for",
]

_KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_ID_BYTES = 64 * 1024


class Unit(StrEnum):
    USD = "usd"
    """Amounts are integer nano-USD."""
    TOKENS = "tokens"
    REQUESTS = "requests"

    def show(self, amount: int) -> str:
        return format_usd(amount) if self is Unit.USD else f"{amount} {self.value}"


class Period(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """``Scope("user", "alice")``, ``Scope("global")``; ``Scope.parse("user:alice")``."""

    kind: str
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND.fullmatch(self.kind):
            raise ConfigurationError(
                f"scope kind {self.kind!r} must be 1-32 lowercase letters, digits, '_' or '-', "
                "starting with a letter (e.g. 'user', 'feature', 'team')"
            )
        if self.kind == "global":
            if self.id is not None:
                raise ConfigurationError("the global scope has no id: use Scope('global')")
            return
        if self.id is None:
            raise ConfigurationError(
                f"scope {self.kind!r} needs an id, e.g. Scope({self.kind!r}, 'alice') or '{self.kind}:alice'"
            )
        if not isinstance(self.id, str):
            raise ConfigurationError(f"scope id must be a string, got {type(self.id).__name__}")
        if not self.id:
            raise ConfigurationError(f"the {self.kind} scope id is empty; pass the real id")
        try:
            size = len(self.id.encode("utf-8"))
        except UnicodeEncodeError:
            raise ConfigurationError(
                "scope id holds a lone surrogate and cannot be stored; decode the id properly"
            ) from None
        if size > MAX_ID_BYTES:
            raise ConfigurationError(f"scope id is longer than {MAX_ID_BYTES} bytes; pass a shorter key")

    @classmethod
    def parse(cls, text: str | Scope) -> Scope:
        """``"user:alice"`` -> ``Scope("user", "alice")``; everything after the first ``:`` is the id."""
        if isinstance(text, Scope):
            return text
        if not isinstance(text, str):
            raise ConfigurationError(f"a scope is a string like 'user:alice', got {text!r}")
        kind, sep, ident = text.partition(":")
        if not sep:
            return cls(kind)
        return cls(kind, ident)

    def __str__(self) -> str:
        return self.kind if self.id is None else f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit for a scope kind (``"user"``: each user) or an exact scope (``"user:alice"``).

    ``Budget("user", usd="5", per="day")``, ``Budget("global", tokens=2_000_000, per="hour")``,
    ``Budget("feature:search", requests=1000, per="minute", tz="Europe/Paris")``.
    ``mode="shadow"``: checked, never refusing: a call past it goes on and the refusal it would have
    been is recorded (a new limit tried on live traffic while the others enforce).
    ``rolling=True``: the trailing minute, hour, day or week instead of the calendar one (``tz`` is
    then ``ROLLING``): ``Budget("user", usd="5", per="day", rolling=True)`` is $5 over any 24 hours.
    """

    target: str
    limit: int
    unit: Unit
    period: Period
    tz: str
    mode: str

    def __init__(
        self,
        scope: str,
        *,
        usd: Money | None = None,
        tokens: int | None = None,
        requests: int | None = None,
        per: Period | str = Period.DAY,
        tz: str = "UTC",
        mode: Literal["enforce", "shadow"] = "enforce",
        rolling: bool = False,
    ) -> None:
        given = [
            (u, v)
            for u, v in ((Unit.USD, usd), (Unit.TOKENS, tokens), (Unit.REQUESTS, requests))
            if v is not None
        ]
        if len(given) != 1:
            raise ConfigurationError("a Budget takes exactly one of usd=, tokens= or requests=")
        unit, value = given[0]
        if unit is Unit.USD:
            limit = to_nano(value, what="budget usd")
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
                raise ConfigurationError(f"{unit.value} budget must be a non-negative int, got {value!r}")
            limit = value
        parsed = Scope.parse(scope) if ":" in scope else Scope(scope) if scope == "global" else None
        if parsed is None:  # a kind: validate it
            Scope(scope, "x")
        try:
            period = Period(per)
        except ValueError:
            raise ConfigurationError(
                f"unknown period {per!r}; use one of {', '.join(p.value for p in Period)}"
            ) from None
        if rolling is True:
            if period not in _LENGTH:
                raise ConfigurationError(
                    f"a rolling window is a minute, hour, day or week (the last 24 h: per='day', "
                    f"rolling=True), not {period.value!r}"
                )
            if tz != "UTC":
                raise ConfigurationError("a rolling window has no time zone: leave tz= out")
            tz = ROLLING
        elif rolling is not False:
            raise ConfigurationError(f"rolling= is True or False, got {rolling!r}")
        elif tz != ROLLING:
            _zone(tz)
        if mode not in ("enforce", "shadow"):
            raise ConfigurationError(f"a Budget's mode is 'enforce' or 'shadow', got {mode!r}")
        object.__setattr__(self, "target", scope)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "period", period)
        object.__setattr__(self, "tz", tz)
        object.__setattr__(self, "mode", mode)

    @property
    def rolling(self) -> bool:
        return self.tz == ROLLING

    def applies_to(self, scope: Scope) -> bool:
        if ":" in self.target or self.target == "global":
            return str(scope) == self.target
        return scope.kind == self.target

    def __repr__(self) -> str:
        amount = self.unit.show(self.limit)
        shown = ", rolling=True" if self.rolling else ""
        shown += "" if self.mode == "enforce" else f", mode={self.mode!r}"
        return f"Budget({self.target!r}, {self.unit.value}={amount!r}, per={self.period.value!r}{shown})"


@memo("budgets.zones", 64)
def _zone(tz: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # (at the first zone, not at import)

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown time zone {tz!r}; use an IANA name like 'Europe/Paris'") from None


@dataclass(frozen=True, slots=True)
class Window:
    """A period's window, as epoch milliseconds: ``start <= t < end`` (``end`` None: never resets)."""

    start: int
    end: int | None

    def contains(self, now_ms: int) -> bool:
        return self.start <= now_ms and (self.end is None or now_ms < self.end)

    @property
    def resets_at(self) -> datetime | None:
        return None if self.end is None else _EPOCH + timedelta(milliseconds=self.end)


def window_for(period: Period, tz: str, now_ms: int) -> Window:
    """The window of ``period`` in time zone ``tz`` that contains ``now_ms``.

    The windows of a (period, tz) partition the time line: every instant lies in exactly one, and the
    window computed at any instant of it is that same window, so every process agrees on it. All the
    arithmetic is on UTC milliseconds (aware-datetime arithmetic is wall-clock arithmetic: across a DST
    change it lands on the wrong side). A minute or hour is the local wall-clock minute or hour at the
    offset in force: a change of offset ends one window and starts the next, so at a fall-back the
    repeated hour is two windows and no window outlasts its period (one may be shorter, e.g. in
    Australia/Lord_Howe's 30-minute shifts). A day, ISO week or month runs from the first instant of
    its local date (midnight, or the change where a DST gap skips midnight) to the first instant of the
    next one, so a day may last 23 or 25 hours.
    """
    if period is Period.TOTAL:
        return Window(0, None)
    if tz == ROLLING:
        step = rolling_bucket(period)
        start = now_ms // step * step
        return Window(start, start + step)
    zone = _zone(tz)
    if period is Period.MINUTE:
        return _clock_window(zone, 60_000, now_ms)
    if period is Period.HOUR:
        return _clock_window(zone, 3_600_000, now_ms)
    return _calendar_window(zone, period, now_ms)


ROLLING = "rolling"
"""The ``tz`` of a rolling window (``Budget(..., rolling=True)``): not a zone, since the trailing 24
hours are the same everywhere. Its counters are kept per bucket (``rolling_bucket``): ``window_for``
gives the bucket holding an instant, and a check counts that bucket and the ``ROLLING_BUCKETS`` before
it, which cover the whole trailing window (and at most one bucket more: conservative, never less)."""

ROLLING_BUCKETS = 24
"""A rolling window's buckets: a minute in 2.5 s buckets, an hour in 2.5 min, a day in hours, a week
in 7 h."""

_LENGTH = {Period.MINUTE: 60_000, Period.HOUR: 3_600_000, Period.DAY: 86_400_000, Period.WEEK: 604_800_000}


def rolling_bucket(period: Period) -> int:
    """The length in ms of a rolling window's bucket (the window is ``ROLLING_BUCKETS`` of them)."""
    return _LENGTH[period] // ROLLING_BUCKETS


def rolling_span(period: Period) -> int:
    """The length in ms of a rolling window (``ROLLING_BUCKETS`` buckets), and so the longest lease a
    hold on it may have: a hold stays in the bucket of its reservation, which a check counts for at
    least this long after the reservation (at most a bucket more), so a live hold is never left out."""
    return rolling_bucket(period) * ROLLING_BUCKETS


def _offset(zone: ZoneInfo, ms: int) -> int:
    """The zone's UTC offset at the instant ``ms``, in ms (tzdata changes offsets on whole seconds)."""
    return datetime.fromtimestamp(ms // 1000, zone).utcoffset() // _MS  # type: ignore[operator]


def _change(zone: ZoneInfo, before: int, after: int) -> int:
    """The first instant in ``(before, after]`` whose offset differs from the one at ``before``.

    Called only when the offsets at ``before`` and ``after`` differ, across at most a few hours, in
    which tzdata has one change: a bisection of ~22 steps, instead of a scan.
    """
    old = _offset(zone, before)
    while after - before > 1:
        mid = (before + after) // 2
        if _offset(zone, mid) == old:
            before = mid
        else:
            after = mid
    return after


def _clock_window(zone: ZoneInfo, step: int, now: int) -> Window:
    """The local minute or hour (``step`` ms) at the offset in force at ``now``, cut at offset changes."""
    offset = _offset(zone, now)
    start = (now + offset) // step * step - offset
    end = start + step
    if _offset(zone, start) != offset:  # the offset changed since the wall-clock floor: start there
        start = _change(zone, start, now)
    if _offset(zone, end - 1) != offset:  # it changes before the next floor: end there
        end = _change(zone, now, end - 1)
    return Window(start, end)


def _calendar_window(zone: ZoneInfo, period: Period, now: int) -> Window:
    """From the first instant of the local day, ISO week or month holding ``now`` to that of the next."""
    day = datetime.fromtimestamp(now // 1000, zone).date()
    if period is Period.DAY:
        first = day
    elif period is Period.WEEK:  # ISO weeks start on Monday
        first = day - timedelta(days=day.weekday())
    else:
        first = day.replace(day=1)
    start = _first_instant(zone, first)
    while True:  # once, unless a fall-back takes the clock back across midnight
        if period is Period.DAY:
            nxt = first + timedelta(days=1)
        elif period is Period.WEEK:
            nxt = first + timedelta(days=7)
        else:
            nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        end = _first_instant(zone, nxt)
        if now < end:
            return Window(start, end)
        first, start = nxt, end


def _first_instant(zone: ZoneInfo, day: date) -> int:
    """The first instant of the local date ``day``: its midnight, or the change if a DST gap skips it."""
    midnight = datetime(day.year, day.month, day.day)
    wall = (midnight - _NAIVE_EPOCH) // _MS
    before = zone.utcoffset(midnight) // _MS  # type: ignore[operator]  # fold=0: the offset before a change
    after = zone.utcoffset(midnight.replace(fold=1)) // _MS  # type: ignore[operator]
    if before >= after:  # no change, or midnight repeated by a fall-back: its first occurrence
        return wall - before
    return _change(zone, wall - after, wall - before)  # midnight skipped: the day starts at the change


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)

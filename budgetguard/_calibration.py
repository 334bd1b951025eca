"""Self-calibration: how far calls' actual cost fell below the reserved worst case, and ``Learned``.

Every committed call's journal entry carries its worst-case estimate (``estimated_usd``), what it was
charged, its model and the decorated function (``function``). ``ratio(entry)`` is actual / estimate;
reports show its distribution per model or function (``Ratios``: median, p95, max, by nearest rank).

``with_budget(..., hold=Learned(percentile=99, min_calls=50))`` holds, instead of the worst case, that
percentile of the ratio (learned for the call's model and function from the journal, fleet-wide) times
the worst case: never more than the worst case, the worst case itself until ``min_calls`` calls are
known. Every call is still charged exactly at commit, and one that costs more than its hold is charged
anyway and flagged as an overrun: a limit can then be passed by at most one call's overrun per caller
racing for its last dollars. The ratios are cached per guard and refreshed from the journal's new
entries only (``JournalRead``), every ``refresh_calls`` calls or ``refresh_seconds`` seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ._cache import Bounded
from ._errors import ConfigurationError, LedgerError
from ._ledger import JournalEntry
from ._ledger._facts import estimate_and_cost
from ._ledger._types import to_datetime

__all__ = ["Calibration", "JournalRead", "Learned", "Ratios", "held_usd", "learned_ratio", "ratio"]


def ratio(entry: JournalEntry) -> Fraction | None:
    """actual / estimate of a committed call (``None``: not a call with an estimate)."""
    pair = estimate_and_cost(entry)
    return None if pair is None else Fraction(pair[1], pair[0])


def nearest_rank(ordered: Sequence[Fraction], percentile: Fraction) -> Fraction:
    """The ``percentile`` (0-100] of sorted values by the nearest-rank method: an observed value."""
    rank = max(math.ceil(percentile * len(ordered) / 100), 1)
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Ratios:
    """The distribution of actual / estimate: ``median``, ``p95`` and ``max`` (nearest rank, exact)."""

    count: int
    median: Fraction
    p95: Fraction
    max: Fraction

    @classmethod
    def of(cls, ratios: Iterable[Fraction]) -> Ratios | None:
        ordered = sorted(ratios)
        if not ordered:
            return None
        return cls(len(ordered), *(nearest_rank(ordered, Fraction(p)) for p in (50, 95, 100)))

    def as_dict(self) -> dict[str, str]:
        return {name: shown(getattr(self, name)) for name in ("median", "p95", "max")}


def shown(value: Fraction) -> str:
    """A ratio as text, three decimals, rounded up (a reader sizing a hold from it stays above it)."""
    return f"{Decimal(math.ceil(value * 1000)) / 1000:.3f}"


@dataclass(frozen=True, slots=True)
class Learned:
    """Hold a learned percentile of actual / estimate times the worst case (see the module docstring).

    ``percentile``: 0-100 (99: one call in a hundred overruns its hold). ``min_calls``: calls known for
    the model and function before the learned ratio is used. ``window``: the most recent calls learned
    from. ``refresh_calls`` / ``refresh_seconds``: how often the journal's new entries are read.
    ``first_read_seconds``: how far back a process's first read goes (an hour: never the whole journal
    inside a guarded call); older calls are not learned from.
    """

    percentile: Decimal | int | str = 99
    min_calls: int = 50
    window: int = 1000
    refresh_calls: int = 100
    refresh_seconds: float = 60.0
    first_read_seconds: float = 3600.0

    def __post_init__(self) -> None:
        try:
            share = Decimal(str(self.percentile))
        except ArithmeticError:
            share = Decimal(-1)
        if not 0 < share <= 100:
            raise ConfigurationError(f"Learned(percentile=...) is in (0, 100], got {self.percentile!r}")
        for name in ("min_calls", "window", "refresh_calls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"Learned({name}=...) takes a positive int, got {value!r}")
        for name in ("refresh_seconds", "first_read_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"Learned({name}=...) takes a positive number of seconds")

    def hold(self, worst: int, learned: Fraction | None) -> int:
        """The USD held for a call whose worst case is ``worst``: the learned ratio times it, rounded up,
        at least 1 nano-USD (a counter at its limit still refuses) and never above the worst case."""
        if learned is None or worst <= 0:
            return worst
        return min(worst, max(math.ceil(worst * learned), 1))


@dataclass(slots=True)
class _Learning:
    """What one guard knows of one (model, function): the recent ratios and when it last read."""

    ratios: deque[Fraction]
    since: int | None = None
    """The journal's timestamp (ms) to read from next; ``None``: never read."""
    seen: set[str] = field(default_factory=set)
    """The reservation ids read at ``since`` (the next read starts there again)."""
    calls: int = 0
    refreshed: float = 0.0
    reading: bool = False
    ratio: Fraction | None = None


class Calibration:
    """A guard's cache of learned ratios, per policy, model and function (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: Bounded[tuple[Learned, str, str | None], _Learning] = Bounded(
            "calibration.learned", 4096, shared=False
        )  # (a forgotten key is learned again: its first read covers the journal's last hour)

    def due(self, policy: Learned, model: str, function: str | None) -> tuple[_Learning, bool]:
        """The state for this key, and whether this call reads the journal's new entries (it then
        must call ``update``)."""
        key = (policy, model, function)
        with self._lock:
            state = self._known.get(key)
            if state is None:
                state = self._known.put(key, _Learning(deque(maxlen=policy.window)))
            state.calls += 1
            stale = (
                state.since is None
                or state.calls >= policy.refresh_calls
                or time.monotonic() - state.refreshed >= policy.refresh_seconds
            )
            if not stale or state.reading:
                return state, False
            state.reading = True
            return state, True

    def update(
        self, state: _Learning, policy: Learned, function: str | None, entries: list[JournalEntry] | None
    ) -> None:
        """Take the entries read since ``state.since`` (``None``: the read failed; try again later)."""
        with self._lock:
            state.reading, state.calls, state.refreshed = False, 0, time.monotonic()
            if entries is None:
                return
            for entry in entries:
                if state.since is not None and (
                    entry.ts < state.since or (entry.ts == state.since and entry.reservation_id in state.seen)
                ):
                    continue  # read before (a read starts at the last entry's millisecond, or before it)
                if entry.data.get("function") != function:
                    continue
                found = ratio(entry)
                if found is not None:
                    state.ratios.append(found)
            if entries:
                last = entries[-1].ts
                at_last = {e.reservation_id for e in entries if e.ts == last}
                state.seen = at_last | state.seen if last == state.since else at_last
                state.since = last
            elif state.since is None:
                state.since = 0
            ordered = sorted(state.ratios)
            enough = len(ordered) >= policy.min_calls
            state.ratio = nearest_rank(ordered, Fraction(str(policy.percentile))) if enough else None


@dataclass(slots=True)
class JournalRead:
    """A flow's action: the store's committed journal entries of ``model`` from ``since`` (ms)."""

    model: str
    since: int | None
    first_read_seconds: float
    job: None = None

    def send(self, store: Any, lease: float) -> Any:
        """The entries since the last read; on the first, those of the last ``first_read_seconds``."""
        if self.since:
            since = to_datetime(self.since)
        else:
            since = datetime.now(UTC) - timedelta(seconds=self.first_read_seconds)
        return store.history(since=since, model=self.model, events=("committed",))


def learned_ratio(
    calibration: Calibration, policy: Learned, model: str, function: str | None
) -> Generator[JournalRead, Any, Fraction | None]:
    """The learned ratio for a call (``None``: not enough calls known), as a sub-flow that reads the
    journal's new entries when the cache is stale. A failed read keeps what was learned (or nothing:
    the worst case): the call is never refused for it."""
    state, read = calibration.due(policy, model, function)
    if read:
        entries: list[JournalEntry] | None
        try:
            entries = yield JournalRead(model, state.since, policy.first_read_seconds)
        except LedgerError:
            entries = None
        except BaseException:
            calibration.update(state, policy, function, None)
            raise
        calibration.update(state, policy, function, entries)
    return state.ratio


def held_usd(policy: Learned | None, learned: Fraction | None, worst: int) -> int:
    """The USD a call whose worst case is ``worst`` holds under ``policy`` (``None``: the worst case)."""
    return worst if policy is None else policy.hold(worst, learned)

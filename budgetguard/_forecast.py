"""Forecasts: a budget's burn rate in its current window, and when at that rate it runs out.

The rate is what the window has spent so far over the time it has run (a straight line through its
start: no history needed, the same number in every process that reads the counter). What is left (the
limit less spent and held) runs out at ``now + left / rate``, unless that falls after the window resets:
then the budget lasts the window. A budget without a reset (``total``) has no window start to measure
from: no forecast.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from ._budgets import Period, window_for
from ._ledger._types import to_datetime

__all__ = ["Forecast", "counter_forecast", "forecast"]

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Forecast:
    per_hour: int
    """The burn rate: the budget's unit (nano-USD, tokens, requests) per hour, rounded down."""
    runs_out_at: datetime | None
    """When what is left runs out at that rate; None when it lasts the window (or nothing is spent)."""
    resets_at: datetime
    """When the window ends."""

    @property
    def lasts(self) -> bool:
        return self.runs_out_at is None

    @property
    def until(self) -> datetime:
        """When the budget stops serving: it runs out, or the window resets first (what the metric
        hooks show: one finite time, earlier than the reset when it will not last)."""
        return self.resets_at if self.runs_out_at is None else self.runs_out_at


def forecast(
    spent: int, held: int, limit: int, window_start: int, window_end: int | None, now_ms: int
) -> Forecast | None:
    """The forecast of a counter (amounts in its unit; times in UTC milliseconds) at ``now_ms``; None
    for a budget whose window has no start to measure a rate from (``total``)."""
    if window_end is None:
        return None
    elapsed, resets, left = now_ms - window_start, to_datetime(window_end), limit - spent - held
    if left <= 0 and (spent <= 0 or elapsed <= 0):  # nothing left (a limit of 0, or all held): now
        return Forecast(0, to_datetime(now_ms), resets)
    if spent <= 0 or elapsed <= 0:  # nothing spent yet
        return Forecast(0, None, resets)
    rate = Fraction(spent, elapsed)  # per millisecond
    out = now_ms + max(int(left / rate), 0)
    return Forecast(int(rate * HOUR_MS), None if out >= window_end else to_datetime(out), resets)


def counter_forecast(counter: Mapping[str, Any], now_ms: int | None = None) -> Forecast | None:
    """The forecast of one of a ``committed`` event's ``counters`` (``spent``, ``limit``, and the window
    the store counted that spent in: ``window_start``, ``window_end``) at ``now_ms`` (default: now), as
    the metric hooks keep it. A counter without its window (made by hand) takes the window of
    ``period`` and ``tz`` at ``now_ms``; a window that has ended by ``now_ms`` is not this one's, so
    nothing is forecast from it."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start, end = counter.get("window_start"), counter.get("window_end")
    if start is None:
        window = window_for(Period(counter["period"]), counter.get("tz", "UTC"), now_ms)
        start, end = window.start, window.end
    elif end is not None and end <= now_ms:
        return None
    return forecast(counter["spent"], 0, counter["limit"], start, end, now_ms)

"""Forecasts: a window's burn rate so far, and when at that rate what is left runs out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from budgetguard._budgets import Period, window_for
from budgetguard._forecast import Forecast, counter_forecast, forecast

HOUR = 3_600_000
START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
END = START + 24 * HOUR


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_what_is_left_runs_out_at_the_rate_so_far() -> None:
    # 60 spent in 12 hours: 5 an hour; 40 left runs out 8 hours later
    assert forecast(60, 0, 100, START, END, START + 12 * HOUR) == Forecast(5, at(START + 20 * HOUR), at(END))
    # what calls in flight hold is not left: 20 left, 4 hours
    assert forecast(60, 20, 100, START, END, START + 12 * HOUR) == Forecast(5, at(START + 16 * HOUR), at(END))
    assert forecast(60, 20, 100, START, END, START + 12 * HOUR).until == at(START + 16 * HOUR)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spent", "held", "now", "expected"),
    [
        (50, 0, START + 12 * HOUR, Forecast(4, None, at(END))),  # exactly at the reset: lasts the window
        (10, 0, START + 12 * HOUR, Forecast(0, None, at(END))),  # under 1 an hour, rounded down; lasts
        (0, 0, START + 12 * HOUR, Forecast(0, None, at(END))),  # nothing spent
        (100, 0, START + HOUR, Forecast(100, at(START + HOUR), at(END))),  # used up: now
        (90, 30, START + HOUR, Forecast(90, at(START + HOUR), at(END))),  # held past the limit: now
        (0, 100, START + HOUR, Forecast(0, at(START + HOUR), at(END))),  # all held, nothing spent: now
    ],
)
def test_lasting_and_used_up(spent: int, held: int, now: int, expected: Forecast) -> None:
    found = forecast(spent, held, 100, START, END, now)
    assert found == expected and found.until == (expected.runs_out_at or at(END))


def test_a_budget_that_never_resets_has_no_forecast() -> None:
    total = window_for(Period.TOTAL, "UTC", START)
    assert forecast(60, 0, 100, total.start, total.end, START) is None


def test_an_events_counter_is_forecast_in_its_own_time_zone() -> None:
    now = START + 12 * HOUR  # noon UTC: 04:00 in Los Angeles, its day 4 hours old
    counter = {"period": "day", "tz": "America/Los_Angeles", "spent": 40, "limit": 100}
    la = window_for(Period.DAY, "America/Los_Angeles", now)
    assert la.start == START + 8 * HOUR
    la_end = at(la.end or 0)
    assert counter_forecast(counter, now) == Forecast(10, at(now + 6 * HOUR), la_end)  # 60 left, 10 an hour
    assert counter_forecast({**counter, "tz": "UTC"}, now) == Forecast(3, None, at(END))  # 40 in 12 h: lasts


def test_a_limit_of_zero_has_run_out_already() -> None:
    assert forecast(0, 0, 0, START, END, START + HOUR) == Forecast(0, at(START + HOUR), at(END))


def test_an_events_counter_is_forecast_in_the_window_the_store_counted_it_in() -> None:
    # the store's clock put the spend in the day that started at START; this host's clock is 2 s into
    # the next day: the forecast is not made of yesterday's spend over today's two seconds
    counter = {
        "period": "day",
        "tz": "UTC",
        "spent": 40,
        "limit": 100,
        "window_start": START,
        "window_end": END,
    }
    assert counter_forecast(counter, END + 2_000) is None
    # within the window, the stored bounds are the ones used (the host's clock lags the store's)
    just_before = START - 2_000
    assert counter_forecast(counter, START + 12 * HOUR) == Forecast(3, None, at(END))
    assert counter_forecast(counter, just_before) == forecast(40, 0, 100, START, END, just_before)

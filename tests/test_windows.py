"""Time windows: half-open intervals of UTC instants that partition the time line, across DST changes.

Each (period, tz) cuts time into windows: every instant lies in exactly one, the window computed at any
instant of it is the same one (so every process agrees), and the next one starts where it ends.
"""

from __future__ import annotations

import struct
import zoneinfo
from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetguard import BudgetExceededError
from budgetguard._budgets import Period, Scope, Unit, Window, window_for
from budgetguard._ledger import Hold, Ledger, MemoryLedger, SQLiteLedger, _expiry
from budgetguard._ledger._expiry import window_at as window_cached
from budgetguard._ledger._types import CounterSpec

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
STEP = {Period.MINUTE: MIN, Period.HOUR: HOUR}
PERIODS = [Period.MINUTE, Period.HOUR, Period.DAY, Period.WEEK, Period.MONTH]
ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


def ms(text: str) -> int:
    """A UTC instant, ``"2024-10-27T01:30"``, as epoch ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def win(start: str, end: str) -> Window:
    return Window(ms(start), ms(end))


def offset(tz: str, t: int) -> timedelta:
    return datetime.fromtimestamp(t / 1000, ZoneInfo(tz)).utcoffset() or timedelta()


def local(tz: str, t: int) -> datetime:
    return datetime.fromtimestamp(t / 1000, ZoneInfo(tz))


def wall_ms(tz: str, t: int) -> int:
    """The local wall clock at ``t``, as ms since a naive 1970-01-01."""
    return (local(tz, t).replace(tzinfo=None) - datetime(1970, 1, 1)) // timedelta(milliseconds=1)


# -- the two reproduced cases -------------------------------------------------------------


def test_paris_fall_back_minute_window_ends_after_it_starts() -> None:
    # was [01:30, 00:31): `start + timedelta(minutes=1)` on an aware datetime dropped fold=1
    assert window_for(Period.MINUTE, "Europe/Paris", ms("2024-10-27T01:30")) == win(
        "2024-10-27T01:30", "2024-10-27T01:31"
    )


def test_paris_fall_back_hour_is_two_windows_that_every_process_agrees_on() -> None:
    # was [00:00, 02:00) at 00:30 and [01:00, 02:00) at 01:30: two processes, two full hourly limits
    before = window_for(Period.HOUR, "Europe/Paris", ms("2024-10-27T00:30"))
    after = window_for(Period.HOUR, "Europe/Paris", ms("2024-10-27T01:30"))
    assert before == win("2024-10-27T00:00", "2024-10-27T01:00")  # 02:xx CEST
    assert after == win("2024-10-27T01:00", "2024-10-27T02:00")  # 02:xx CET
    assert not before.contains(ms("2024-10-27T01:30"))


def test_a_cached_window_is_the_window_a_fresh_process_computes() -> None:
    """``window_cached`` reuses a window while ``now`` is inside it: right only if windows partition time."""
    spec = CounterSpec(Scope("global"), Unit.USD, Period.HOUR, 10, "Europe/Paris")
    early, late = ms("2024-10-27T00:30"), ms("2024-10-27T01:30")
    window_cached(spec, early)  # a long-running process computed it before the change
    assert window_cached(spec, late) == window_for(Period.HOUR, "Europe/Paris", late)
    assert window_cached(spec, early) == window_for(Period.HOUR, "Europe/Paris", early)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_two_processes_across_the_paris_fall_back_admit_one_hourly_limit(store: str, tmp_path: Path) -> None:
    """Process A computed its hour at 00:30 UTC and B first at 01:30: in 01:00-02:00 UTC they share one
    limit (was two: A kept [00:00, 02:00) on counter @00:00, B used [01:00, 02:00) on counter @01:00)."""
    now = [ms("2024-10-27T00:30")]
    spec = CounterSpec(Scope("global"), Unit.USD, Period.HOUR, 100, "Europe/Paris")

    def process() -> Ledger:  # a new process: its own window caches, the same store
        _expiry._windows.clear()
        shared._engine._slots.clear()  # (each counter's window, per store)
        if store == "memory":
            return shared
        return SQLiteLedger(tmp_path / "ledger.db", clock=lambda: now[0])

    shared = MemoryLedger(clock=lambda: now[0])
    a = process()
    a.status([spec])  # A computes (and caches) its hour at 00:30
    now[0] = ms("2024-10-27T01:30")
    a.commit(a.reserve([Hold(spec, 100)]), {"usd": 100})
    b = process()
    with pytest.raises(BudgetExceededError) as refused:
        b.reserve([Hold(spec, 1)])
    assert refused.value.resets_at == datetime(2024, 10, 27, 2, tzinfo=UTC)
    now[0] = ms("2024-10-27T02:00")
    b.commit(b.reserve([Hold(spec, 100)]), {"usd": 100})  # the next hour, 03:00 CET, has its own limit
    for ledger in {a, b}:
        ledger.close()


# -- explicit windows at the 2024 DST changes -------------------------------------------------------

EXPECTED = [
    # Europe/Paris, spring forward 2024-03-31 01:00 UTC (02:00 CET -> 03:00 CEST): a 23-hour day
    ("Europe/Paris", Period.MINUTE, "2024-03-31T00:59:30", "2024-03-31T00:59", "2024-03-31T01:00"),
    ("Europe/Paris", Period.MINUTE, "2024-03-31T01:00", "2024-03-31T01:00", "2024-03-31T01:01"),
    ("Europe/Paris", Period.HOUR, "2024-03-31T00:30", "2024-03-31T00:00", "2024-03-31T01:00"),
    ("Europe/Paris", Period.HOUR, "2024-03-31T01:30", "2024-03-31T01:00", "2024-03-31T02:00"),
    ("Europe/Paris", Period.DAY, "2024-03-31T12:00", "2024-03-30T23:00", "2024-03-31T22:00"),
    ("Europe/Paris", Period.WEEK, "2024-03-31T12:00", "2024-03-24T23:00", "2024-03-31T22:00"),
    ("Europe/Paris", Period.MONTH, "2024-03-31T12:00", "2024-02-29T23:00", "2024-03-31T22:00"),
    # Europe/Paris, fall back 2024-10-27 01:00 UTC (03:00 CEST -> 02:00 CET): a 25-hour day
    ("Europe/Paris", Period.MINUTE, "2024-10-27T00:59:59.999", "2024-10-27T00:59", "2024-10-27T01:00"),
    ("Europe/Paris", Period.MINUTE, "2024-10-27T01:30", "2024-10-27T01:30", "2024-10-27T01:31"),
    ("Europe/Paris", Period.HOUR, "2024-10-27T00:30", "2024-10-27T00:00", "2024-10-27T01:00"),
    ("Europe/Paris", Period.HOUR, "2024-10-27T01:00", "2024-10-27T01:00", "2024-10-27T02:00"),
    ("Europe/Paris", Period.DAY, "2024-10-27T01:30", "2024-10-26T22:00", "2024-10-27T23:00"),
    ("Europe/Paris", Period.WEEK, "2024-10-27T01:30", "2024-10-20T22:00", "2024-10-27T23:00"),
    ("Europe/Paris", Period.MONTH, "2024-10-27T01:30", "2024-09-30T22:00", "2024-10-31T23:00"),
    # America/New_York, spring forward 2024-03-10 07:00 UTC (02:00 EST -> 03:00 EDT)
    ("America/New_York", Period.MINUTE, "2024-03-10T07:00:00.001", "2024-03-10T07:00", "2024-03-10T07:01"),
    ("America/New_York", Period.HOUR, "2024-03-10T06:30", "2024-03-10T06:00", "2024-03-10T07:00"),
    ("America/New_York", Period.HOUR, "2024-03-10T07:30", "2024-03-10T07:00", "2024-03-10T08:00"),
    ("America/New_York", Period.DAY, "2024-03-10T07:30", "2024-03-10T05:00", "2024-03-11T04:00"),
    ("America/New_York", Period.WEEK, "2024-03-10T07:30", "2024-03-04T05:00", "2024-03-11T04:00"),
    ("America/New_York", Period.MONTH, "2024-03-10T07:30", "2024-03-01T05:00", "2024-04-01T04:00"),
    # America/New_York, fall back 2024-11-03 06:00 UTC (02:00 EDT -> 01:00 EST): 01:xx twice
    ("America/New_York", Period.MINUTE, "2024-11-03T06:30", "2024-11-03T06:30", "2024-11-03T06:31"),
    ("America/New_York", Period.HOUR, "2024-11-03T05:30", "2024-11-03T05:00", "2024-11-03T06:00"),
    ("America/New_York", Period.HOUR, "2024-11-03T06:30", "2024-11-03T06:00", "2024-11-03T07:00"),
    ("America/New_York", Period.DAY, "2024-11-03T06:30", "2024-11-03T04:00", "2024-11-04T05:00"),
    ("America/New_York", Period.WEEK, "2024-11-03T06:30", "2024-10-28T04:00", "2024-11-04T05:00"),
    ("America/New_York", Period.MONTH, "2024-11-03T06:30", "2024-11-01T04:00", "2024-12-01T05:00"),
    # Australia/Lord_Howe, 30-minute shifts: back 2024-04-06 15:00 UTC (02:00 +11 -> 01:30 +10:30)
    ("Australia/Lord_Howe", Period.MINUTE, "2024-04-06T15:00:30", "2024-04-06T15:00", "2024-04-06T15:01"),
    ("Australia/Lord_Howe", Period.HOUR, "2024-04-06T14:30", "2024-04-06T14:00", "2024-04-06T15:00"),
    ("Australia/Lord_Howe", Period.HOUR, "2024-04-06T15:10", "2024-04-06T15:00", "2024-04-06T15:30"),
    ("Australia/Lord_Howe", Period.HOUR, "2024-04-06T15:40", "2024-04-06T15:30", "2024-04-06T16:30"),
    ("Australia/Lord_Howe", Period.DAY, "2024-04-06T15:10", "2024-04-06T13:00", "2024-04-07T13:30"),
    ("Australia/Lord_Howe", Period.MONTH, "2024-04-06T15:10", "2024-03-31T13:00", "2024-04-30T13:30"),
    # ... and forward 2024-10-05 15:30 UTC (02:00 +10:30 -> 02:30 +11)
    ("Australia/Lord_Howe", Period.HOUR, "2024-10-05T15:10", "2024-10-05T14:30", "2024-10-05T15:30"),
    ("Australia/Lord_Howe", Period.HOUR, "2024-10-05T15:40", "2024-10-05T15:30", "2024-10-05T16:00"),
    ("Australia/Lord_Howe", Period.HOUR, "2024-10-05T16:10", "2024-10-05T16:00", "2024-10-05T17:00"),
    ("Australia/Lord_Howe", Period.DAY, "2024-10-05T15:40", "2024-10-05T13:30", "2024-10-06T13:00"),
    # Asia/Kolkata (+05:30) and Asia/Kathmandu (+05:45): hours on the half and three-quarter hour
    ("Asia/Kolkata", Period.MINUTE, "2024-06-01T12:00:59", "2024-06-01T12:00", "2024-06-01T12:01"),
    ("Asia/Kolkata", Period.HOUR, "2024-06-01T12:00", "2024-06-01T11:30", "2024-06-01T12:30"),
    ("Asia/Kolkata", Period.DAY, "2024-06-01T12:00", "2024-05-31T18:30", "2024-06-01T18:30"),
    ("Asia/Kathmandu", Period.HOUR, "2024-06-01T12:00", "2024-06-01T11:15", "2024-06-01T12:15"),
    # 29 February, month ends and the year's end, in UTC and in a zone
    ("UTC", Period.DAY, "2024-02-29T12:00", "2024-02-29T00:00", "2024-03-01T00:00"),
    ("UTC", Period.MONTH, "2024-02-29T23:59:59.999", "2024-02-01T00:00", "2024-03-01T00:00"),
    ("UTC", Period.WEEK, "2024-02-29T12:00", "2024-02-26T00:00", "2024-03-04T00:00"),
    ("Europe/Paris", Period.DAY, "2024-02-29T12:00", "2024-02-28T23:00", "2024-02-29T23:00"),
    ("Europe/Paris", Period.MONTH, "2024-02-29T22:59:59.999", "2024-01-31T23:00", "2024-02-29T23:00"),
    ("Europe/Paris", Period.MONTH, "2024-02-29T23:00", "2024-02-29T23:00", "2024-03-31T22:00"),
    ("UTC", Period.MONTH, "2024-01-31T23:59:59.999", "2024-01-01T00:00", "2024-02-01T00:00"),
    ("UTC", Period.MONTH, "2024-04-30T23:59:59.999", "2024-04-01T00:00", "2024-05-01T00:00"),
    ("America/New_York", Period.MONTH, "2024-05-01T03:59:59.999", "2024-04-01T04:00", "2024-05-01T04:00"),
    ("UTC", Period.MINUTE, "2024-12-31T23:59:59.999", "2024-12-31T23:59", "2025-01-01T00:00"),
    ("UTC", Period.HOUR, "2024-12-31T23:59:59.999", "2024-12-31T23:00", "2025-01-01T00:00"),
    ("UTC", Period.DAY, "2024-12-31T23:59:59.999", "2024-12-31T00:00", "2025-01-01T00:00"),
    ("UTC", Period.WEEK, "2024-12-31T23:59:59.999", "2024-12-30T00:00", "2025-01-06T00:00"),
    ("UTC", Period.MONTH, "2024-12-31T23:59:59.999", "2024-12-01T00:00", "2025-01-01T00:00"),
    ("UTC", Period.MONTH, "2025-01-01T00:00", "2025-01-01T00:00", "2025-02-01T00:00"),
    ("Europe/Paris", Period.DAY, "2024-12-31T22:59:59.999", "2024-12-30T23:00", "2024-12-31T23:00"),
    ("Europe/Paris", Period.DAY, "2024-12-31T23:00", "2024-12-31T23:00", "2025-01-01T23:00"),
    ("Europe/Paris", Period.WEEK, "2024-12-31T23:00", "2024-12-29T23:00", "2025-01-05T23:00"),
    ("Europe/Paris", Period.MONTH, "2024-12-31T23:00", "2024-12-31T23:00", "2025-01-31T23:00"),
    # midnight skipped (America/Havana 2024-03-10 00:00 -> 01:00): the day starts at the change
    ("America/Havana", Period.DAY, "2024-03-10T12:00", "2024-03-10T05:00", "2024-03-11T04:00"),
    # midnight repeated (America/Havana 2024-11-03 01:00 -> 00:00): the day starts at the first one
    ("America/Havana", Period.DAY, "2024-11-03T12:00", "2024-11-03T04:00", "2024-11-04T05:00"),
    # a skipped day (Pacific/Apia jumped from 2011-12-29 to 2011-12-31): no empty window between
    ("Pacific/Apia", Period.DAY, "2011-12-30T09:59:59.999", "2011-12-29T10:00", "2011-12-30T10:00"),
    ("Pacific/Apia", Period.DAY, "2011-12-30T10:00", "2011-12-30T10:00", "2011-12-31T10:00"),
]


@pytest.mark.parametrize(("tz", "period", "at", "start", "end"), EXPECTED)
def test_window(tz: str, period: Period, at: str, start: str, end: str) -> None:
    assert window_for(period, tz, ms(at)) == win(start, end)


def test_total_never_resets() -> None:
    assert window_for(Period.TOTAL, "Europe/Paris", ms("2024-10-27T01:30")) == Window(0, None)


# -- properties ---------------------------------------------------------------------------------


def check(period: Period, tz: str, w: Window) -> None:
    """One window: non-empty, the same seen from its first and last instants, shaped as its period."""
    assert w.end is not None and w.start < w.end, w
    assert window_for(period, tz, w.start) == w
    assert window_for(period, tz, w.end - 1) == w
    length = w.end - w.start
    if period in STEP:
        step = STEP[period]
        assert length <= step, w
        changed_at_start = offset(tz, w.start - 1) != offset(tz, w.start)
        assert wall_ms(tz, w.start) % step == 0 or changed_at_start, w  # a wall-clock floor, or a change
        if length < step:  # shorter only where the offset changes
            assert changed_at_start or offset(tz, w.end - 1) != offset(tz, w.end), w
    else:
        first, last = local(tz, w.start), local(tz, w.end - 1)
        assert local(tz, w.start - 1).date() < first.date(), w  # it starts a new local date
        if period is Period.DAY:
            assert first.date() == last.date()
            assert abs(length - DAY) <= HOUR
        elif period is Period.WEEK:
            assert first.weekday() == 0 and last.weekday() == 6 and last.date() - first.date() == timedelta(6)
            assert abs(length - 7 * DAY) <= HOUR
        else:
            assert first.day == 1 and (last + timedelta(days=1)).day == 1 and first.month == last.month
            assert abs(length - (last.day * DAY)) <= HOUR


def walk(period: Period, tz: str, first: int, last: int) -> list[Window]:
    """The windows from the one holding ``first`` to the one holding ``last``, each one checked."""
    w = window_for(period, tz, first)
    assert w.contains(first)
    found = []
    while True:
        check(period, tz, w)
        found.append(w)
        if w.end is None or w.end > last:
            return found
        nxt = window_for(period, tz, w.end)
        assert nxt.start == w.end, (w, nxt)  # the next window starts where this one ends: no gap, no overlap
        w = nxt


def assert_samples(period: Period, tz: str, windows: list[Window], first: int, last: int, step: int) -> None:
    """Every sampled instant's window is the walked window that holds it (the phase varies per sample)."""
    starts = [w.start for w in windows]
    for k in range((last - first) // step):
        t = first + k * step + (k * 7919) % step
        w = window_for(period, tz, t)
        assert w == windows[bisect_right(starts, t) - 1] and w.contains(t), (tz, period, t)


CHANGES = [  # 48 hours around each (UTC), sampled every minute, in every zone
    "2024-03-31",  # Paris spring forward
    "2024-10-27",  # Paris fall back
    "2024-03-10",  # New York spring forward
    "2024-11-03",  # New York fall back
    "2024-04-06",  # Lord Howe back 30 minutes
    "2024-10-05",  # Lord Howe forward 30 minutes
]
BOUNDARIES = ["2024-02-29", "2024-01-31", "2024-04-30", "2024-12-31"]  # in UTC and two zones
CASES = [(day, tz) for day in CHANGES for tz in ZONES] + [
    (day, tz) for day in BOUNDARIES for tz in ("UTC", "Europe/Paris", "America/New_York")
]


@pytest.mark.parametrize(("day", "tz"), CASES)
def test_windows_partition_the_days_around_changes_and_boundaries(day: str, tz: str) -> None:
    first, last = ms(day) - DAY, ms(day) + DAY
    for period in PERIODS:
        windows = walk(period, tz, first, last)
        assert windows[0].start <= first and windows[-1].end is not None and windows[-1].end > last
        assert_samples(period, tz, windows, first, last, MIN)


@pytest.mark.parametrize("tz", [*ZONES, "Asia/Kathmandu", "America/Havana", "UTC"])
def test_a_year_of_windows_partitions_time(tz: str) -> None:
    first, last = ms("2024-01-01T00:00"), ms("2025-01-01T00:00")
    walked = {}
    for period in (Period.HOUR, Period.DAY, Period.WEEK, Period.MONTH):
        walked[period] = walk(period, tz, first, last)
        assert_samples(period, tz, walked[period], first, last, HOUR)
    assert len(walked[Period.MONTH]) == 13  # Dec 2023 or Jan 2025 (local) spills over an edge
    # an hour is cut short only by a change that is not on a whole hour: Lord Howe's two 30-minute shifts
    short = [w for w in walked[Period.HOUR][1:-1] if w.end is not None and w.end - w.start < HOUR]
    assert len(short) == (2 if tz == "Australia/Lord_Howe" else 0)
    for t in range(first, last, HOUR + 7919):
        w = window_for(Period.MINUTE, tz, t)
        assert w.contains(t)
        check(Period.MINUTE, tz, w)


@pytest.mark.parametrize("tz", ZONES)
def test_each_local_day_of_2024_is_one_window(tz: str) -> None:
    days = walk(Period.DAY, tz, ms("2024-01-01T12:00"), ms("2024-12-31T12:00"))
    assert [local(tz, w.start).date() for w in days] == [
        date(2024, 1, 1) + timedelta(days=i) for i in range(366)
    ]
    lengths = sorted({w.end - w.start for w in days if w.end is not None})
    changes = {"Europe/Paris": HOUR, "America/New_York": HOUR, "Australia/Lord_Howe": HOUR // 2}
    if tz in changes:
        assert lengths == [DAY - changes[tz], DAY, DAY + changes[tz]]
    else:
        assert lengths == [DAY]


WILD_ZONES = [
    *ZONES,
    "UTC",
    "Asia/Kathmandu",
    "America/Havana",  # DST changes at midnight
    "America/Santiago",  # changes at 24:00
    "Pacific/Apia",  # skipped 2011-12-30
    "Pacific/Chatham",  # +12:45 / +13:45
    "Antarctica/Troll",  # a two-hour DST shift
    "America/St_Johns",  # -03:30 / -02:30
    "Europe/Dublin",  # negative DST in tzdata
]


@cache
def changes(tz: str, year: int) -> list[int]:
    """The instants (ms) at which ``tz`` changes its offset in ``year``: a daily scan, then a bisection."""
    found = []
    t, end = ms(f"{year}-01-01T00:00"), ms(f"{year + 1}-01-01T00:00")
    while t < end:
        lo, hi = t, t + DAY
        if offset(tz, lo) != offset(tz, hi):
            while hi - lo > 1000:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(tz, mid) == offset(tz, lo) else (lo, mid)
            found.append(hi)
        t += DAY
    return found


def assert_one_window(tz: str, period: Period, t: int) -> None:
    w = window_for(period, tz, t)
    assert w.contains(t)
    assert w.end is not None and w.start < w.end
    assert window_for(period, tz, w.start) == w == window_for(period, tz, w.end - 1)
    assert window_for(period, tz, w.end).start == w.end
    assert window_for(period, tz, w.start - 1).end == w.start
    if period in STEP:
        assert w.end - w.start <= STEP[period]


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(WILD_ZONES),
    period=st.sampled_from(PERIODS),
    t=st.integers(min_value=ms("1971-01-01T00:00"), max_value=ms("2037-12-31T00:00")),
)
def test_any_instant_lies_in_one_window(tz: str, period: Period, t: int) -> None:
    assert_one_window(tz, period, t)


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(WILD_ZONES),
    period=st.sampled_from(PERIODS),
    year=st.integers(min_value=1971, max_value=2037),
    which=st.integers(min_value=0),
    delta=st.one_of(st.integers(-2, 2), st.integers(-2 * HOUR, 2 * HOUR), st.integers(-2 * DAY, 2 * DAY)),
)
def test_any_instant_near_an_offset_change_lies_in_one_window(
    tz: str, period: Period, year: int, which: int, delta: int
) -> None:
    near = changes(tz, year)
    if near:
        assert_one_window(tz, period, near[which % len(near)] + delta)


# -- a zone whose changes straddle midnight (no zone in tzdata does, yet; the rules must not care) ---


def tzif(changes: list[tuple[str, int]], types: list[tuple[int, int, str]]) -> bytes:
    """A version-1 TZif file: ``changes`` as (UTC instant, type index), ``types`` as (offset s, dst, name)."""
    names, where = b"", []
    for _, _, name in types:
        where.append(len(names))
        names += name.encode() + b"\0"
    head = b"TZif\0" + b"\0" * 15 + struct.pack(">6l", 0, 0, 0, len(changes), len(types), len(names))
    body = b"".join(struct.pack(">l", ms(t) // 1000) for t, _ in changes) + bytes(i for _, i in changes)
    body += b"".join(struct.pack(">lBB", o, d, i) for (o, d, _), i in zip(types, where, strict=True))
    return head + body + names


@pytest.fixture
def straddling(tmp_path: Path) -> Iterator[str]:
    """``Test/Straddling``, +00:00 or +01:00: forward at 23:30 (Sat 23:30 -> Sun 00:30, midnight skipped)
    on 2024-03-30, back at 00:30 (Sun 00:30 -> Sat 23:30: the date goes back) on 2024-10-27."""
    (tmp_path / "Test").mkdir()
    (tmp_path / "Test" / "Straddling").write_bytes(
        tzif([("2024-03-30T23:30", 1), ("2024-10-26T23:30", 0)], [(0, 0, "XST"), (3600, 1, "XDT")])
    )
    zoneinfo.reset_tzpath(to=[str(tmp_path), *zoneinfo.TZPATH])
    try:
        yield "Test/Straddling"
    finally:
        zoneinfo.reset_tzpath()


def test_a_gap_that_skips_midnight_starts_the_day_at_the_change(straddling: str) -> None:
    sat, sun = (window_for(Period.DAY, straddling, ms(t)) for t in ("2024-03-30T12:00", "2024-03-30T23:30"))
    assert sat == win("2024-03-30T00:00", "2024-03-30T23:30")  # 23h30
    assert sun == win("2024-03-30T23:30", "2024-03-31T23:00")  # from 00:30 XDT, the day's first instant
    assert window_for(Period.HOUR, straddling, ms("2024-03-30T23:45")) == win(
        "2024-03-30T23:30", "2024-03-31T00:00"
    )  # 00:30-01:00 XDT: the hour 00:xx starts at the change


def test_a_fall_back_across_midnight_keeps_the_second_saturday_in_sunday(straddling: str) -> None:
    # 23:00-23:30 UTC is Sun 00:00-00:30 XDT, then the clock reads Sat 23:30 again until 00:00 UTC:
    # Sunday has begun, so the second Saturday half hour belongs to it (a day is not two pieces)
    sunday = win("2024-10-26T23:00", "2024-10-28T00:00")
    assert window_for(Period.DAY, straddling, ms("2024-10-26T23:45")) == sunday
    assert window_for(Period.DAY, straddling, ms("2024-10-26T22:59:59.999")).end == sunday.start
    assert window_for(Period.WEEK, straddling, ms("2024-10-26T23:45")).start == ms("2024-10-20T23:00")
    assert window_for(Period.HOUR, straddling, ms("2024-10-26T23:10")) == win(
        "2024-10-26T23:00", "2024-10-26T23:30"
    )
    assert window_for(Period.HOUR, straddling, ms("2024-10-26T23:45")) == win(
        "2024-10-26T23:30", "2024-10-27T00:00"
    )
    for period in PERIODS:
        walk(period, straddling, ms("2024-10-25T00:00"), ms("2024-10-29T00:00"))
        walk(period, straddling, ms("2024-03-29T00:00"), ms("2024-04-02T00:00"))

"""Rolling windows (``Budget(..., rolling=True)``: ``tz=ROLLING``) on every store: a check counts the
bucket holding now and the earlier ones covering the trailing window; holds and commits stay in the
bucket they were reserved in, across a boundary, so a lease may not outlive the window (a live hold is
counted until it is resolved or its lease ends)."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetguard import BudgetExceededError, ConfigurationError
from budgetguard._budgets import ROLLING, ROLLING_BUCKETS, Period, Scope, Unit, rolling_bucket
from budgetguard._ledger import CounterSpec, Hold, Ledger, open_ledger
from budgetguard._ledger._memory import MemoryLedger
from budgetguard._ledger._redis import RedisLedger
from budgetguard._ledger._sqlite import SQLiteLedger


def rolling(limit: int, period: Period = Period.MINUTE, scope: str = "user:alice") -> CounterSpec:
    return CounterSpec(Scope.parse(scope), Unit.USD, period, limit, ROLLING)


def spent_held(ledger: Ledger, spec: CounterSpec) -> tuple[int, int]:
    [status] = ledger.status([spec])
    return status.spent, status.held


def _next_bucket(step: int) -> None:
    """Sleep into the next bucket of ``step`` ms (and a little past its start)."""
    now = time.time() * 1000
    time.sleep(((now // step + 1) * step - now + 50) / 1000)


def test_a_hold_committed_in_the_next_bucket_stays_in_its_own(ledger: Ledger) -> None:
    spec = rolling(1000)  # the last minute, in 2.5 s buckets
    step = rolling_bucket(Period.MINUTE)
    _next_bucket(step)  # (a whole bucket ahead: the reservation below is surely in this one)
    first = ledger.reserve([Hold(spec, 700)], lease=60)
    [held] = first.held
    assert held.window_end is not None and held.window_end - held.window_start == step
    _next_bucket(step)
    out = ledger.commit(first, {"usd": 650})
    assert out.spent == (650,)  # its bucket's spent
    [status] = ledger.status([spec])
    assert (status.spent, status.held) == (650, 0)  # counted from the earlier bucket
    assert status.window_end is not None
    assert status.window_end - status.window_start == (ROLLING_BUCKETS + 1) * step
    with pytest.raises(BudgetExceededError) as info:  # a calendar minute might have reset: this does not
        ledger.reserve([Hold(spec, 351)], lease=60)
    assert info.value.period == "minute" and info.value.spent * 10**9 == 650
    second = ledger.reserve([Hold(spec, 350)], lease=60)  # exactly at the limit, over two buckets
    assert second.held[0].window_start > held.window_start
    ledger.release(second)
    assert spent_held(ledger, spec) == (650, 0)


def test_a_lease_longer_than_the_rolling_window_is_refused(ledger: Ledger) -> None:
    """A hold stays in its reservation's bucket, counted a window long: a longer lease could outlive
    it, so it is refused before anything is written (the default 120 s against a rolling minute)."""
    minute, hour = rolling(1000), rolling(1000, Period.HOUR, "feature:x")
    for lease in (120, 60.001):
        with pytest.raises(ConfigurationError, match=r"rolling minute of user:alice \(60 s\)") as info:
            ledger.reserve([Hold(hour, 1), Hold(minute, 1)], lease=lease)
        assert "lease= at most 60 s" in str(info.value)
    with pytest.raises(ConfigurationError, match="rolling hour of feature:x"):
        ledger.reserve([Hold(hour, 1)], lease=3600.001)
    assert spent_held(ledger, minute) == (0, 0) and spent_held(ledger, hour) == (0, 0)
    assert [e.event for e in ledger.history()] == []
    ledger.release(ledger.reserve([Hold(hour, 1), Hold(minute, 1)], lease=60))
    ledger.release(ledger.reserve([Hold(hour, 1)], lease=3600))
    calendar = CounterSpec(Scope.parse("user:alice"), Unit.USD, Period.MINUTE, 1000)
    ledger.release(ledger.reserve([Hold(calendar, 1)], lease=120))  # a calendar window: any lease


def test_rolling_and_calendar_counters_are_apart(ledger: Ledger) -> None:
    calendar = CounterSpec(Scope.parse("user:alice"), Unit.USD, Period.DAY, 1000)
    trailing = rolling(1000, Period.DAY)
    assert calendar.limit_field != trailing.limit_field
    ledger.commit(ledger.reserve([Hold(calendar, 900), Hold(trailing, 100)]), {"usd": 100})
    assert spent_held(ledger, calendar) == (100, 0) and spent_held(ledger, trailing) == (100, 0)
    ledger.set_limit(trailing, 150)  # a run-time limit applies to the whole trailing window
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(calendar, 1), Hold(trailing, 51)])
    assert info.value.limit * 10**9 == 150


# -- the trailing window over time: a clock the test moves (memory, SQLite) ---------------------------


@pytest.fixture(params=["memory", "sqlite"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Ledger, list[int]]]:
    now = [1_700_000_000_000]
    clock = lambda: now[0]  # noqa: E731
    store: Ledger = (
        MemoryLedger(clock=clock)
        if request.param == "memory"
        else SQLiteLedger(tmp_path / "l.db", clock=clock)
    )
    with store:
        yield store, now


def test_spend_leaves_the_window_after_its_length(clocked: tuple[Ledger, list[int]]) -> None:
    ledger, now = clocked
    spec = rolling(1000, Period.HOUR)
    step = rolling_bucket(Period.HOUR)
    now[0] = now[0] // step * step  # at a bucket's start
    ledger.commit(ledger.reserve([Hold(spec, 1000)]), {"usd": 1000})
    now[0] += 3_600_000 - 1  # the spend is 1 ms short of an hour old: still in the window
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 1)])
    now[0] += step  # a bucket less 1 ms later: still counted (at most one bucket longer than the hour)
    assert spent_held(ledger, spec) == (1000, 0)
    now[0] += 1  # an hour and a bucket: out
    assert spent_held(ledger, spec) == (0, 0)
    ledger.reserve([Hold(spec, 1000)])


def test_never_more_than_the_limit_in_any_trailing_window(clocked: tuple[Ledger, list[int]]) -> None:
    """Random reservations at random instants: what was admitted in any hour never passes the limit,
    and every refusal had a reason (counted spend and holds, at most one bucket longer than an hour)."""
    ledger, now = clocked
    spec = rolling(10_000, Period.HOUR)
    rng = random.Random(19)
    admitted: list[tuple[int, int]] = []  # (instant, amount charged)
    for _ in range(300):
        now[0] += rng.randrange(0, 120_000)
        amount = rng.randrange(1, 3000)
        try:
            res = ledger.reserve([Hold(spec, amount)])
        except BudgetExceededError:
            in_hour = sum(a for t, a in admitted if t > now[0] - 3_600_000 - rolling_bucket(Period.HOUR))
            assert in_hour + amount > 10_000  # refused only past the limit (its bucket included)
            continue
        charged = rng.randrange(0, amount + 1)
        ledger.commit(res, {"usd": charged})
        admitted.append((now[0], charged))
        assert sum(a for t, a in admitted if t > now[0] - 3_600_000) <= 10_000
    assert len(admitted) > 50  # (the run admitted many, and refused some)


def test_an_expired_hold_in_an_earlier_bucket_is_reclaimed(clocked: tuple[Ledger, list[int]]) -> None:
    ledger, now = clocked
    spec = rolling(1000, Period.HOUR)
    ledger.reserve([Hold(spec, 900)], lease=60)  # crashed: never resolved
    now[0] += 10 * rolling_bucket(Period.HOUR)
    assert spent_held(ledger, spec) == (0, 0)  # its lease ended: reclaimed where it was held
    ledger.reserve([Hold(spec, 1000)])
    assert [e.event for e in ledger.history()] == ["expired"]


def test_a_live_hold_is_counted_until_its_lease_ends(clocked: tuple[Ledger, list[int]]) -> None:
    """The reviewer's case: a hold still in flight a window after its reservation. Reserved at the last
    instant of a bucket with the longest lease the window allows, it is counted to its lease's end."""
    ledger, now = clocked
    spec = rolling(1000)
    step = rolling_bucket(Period.MINUTE)
    now[0] = (now[0] // step + 1) * step - 1  # the last ms of a bucket: it leaves the window soonest
    first = ledger.reserve([Hold(spec, 1000)], lease=60)  # a long call, in flight
    now[0] = first.expires_at - 1  # a window later, its lease not over
    assert spent_held(ledger, spec) == (0, 1000)
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(spec, 1)], lease=60)
    assert info.value.held * 10**9 == 1000
    now[0] += 1  # its lease ends: reclaimed, the room is free again
    assert spent_held(ledger, spec) == (0, 0)
    ledger.reserve([Hold(spec, 1000)], lease=60)


# -- Redis: earlier buckets written on the server, read by its script ---------------------------------


@pytest.fixture(params=["redis", "cluster"])
def redis_store(request: pytest.FixtureRequest) -> Iterator[RedisLedger]:
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    with open_ledger(f"{url}?namespace=t{secrets.token_hex(6)}") as store:
        assert isinstance(store, RedisLedger)
        yield store  # (a fresh namespace: its keys expire with their counters)


def test_redis_counts_exactly_the_buckets_of_the_window(redis_store: RedisLedger) -> None:
    ledger = redis_store
    spec = rolling(1000, Period.DAY)
    step = rolling_bucket(Period.DAY)
    current = time.time_ns() // 1_000_000 // step * step
    for k, spent in ((ROLLING_BUCKETS, 600), (ROLLING_BUCKETS + 1, 400)):  # the oldest counted, one older
        key, _ = ledger._flows.keys.counter(spec, current - k * step)
        ledger.client.hset(key, mapping={"spent": spent, "held": 0})
    assert spent_held(ledger, spec) == (600, 0)
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(spec, 401)])
    assert info.value.spent * 10**9 == 600
    res = ledger.reserve([Hold(spec, 400)], enforce="shadow")
    assert res.shadowed is None
    would = ledger.reserve([Hold(spec, 1)], enforce="shadow").shadowed
    assert would is not None and (would.spent, would.held) == (600, 400)

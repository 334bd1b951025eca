"""Shadow checks (``enforce="shadow"``, ``CounterSpec.shadow``) and a burst limit beside a daily one,
run against every store: the would-be refusal is decided by the rule a refusal follows, journaled,
and the reservation is admitted and accounted exactly."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from budgetguard import BudgetExceededError
from budgetguard._budgets import Period
from budgetguard._ledger import AsyncLedger, Hold, Ledger

from .helpers import counter


def spent_held(ledger: Ledger, spec) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    [status] = ledger.status([spec])
    return status.spent, status.held


def test_shadow_admits_and_names_the_refusal_it_would_have_been(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    fits = ledger.reserve([Hold(spec, 600)], enforce="shadow")
    assert fits.shadowed is None  # within the limit: nothing to record
    over = ledger.reserve([Hold(spec, 500)], enforce="shadow", meta={"model": "m"})
    assert over.shadowed is not None
    would = over.shadowed.error([Hold(spec, 500)])
    assert (would.scope, would.limit, would.spent, would.held, would.requested) == (
        "user:alice", Decimal("0.000001"), Decimal(0), Decimal("0.0000006"), Decimal("0.0000005"),
    )  # fmt: skip
    assert spent_held(ledger, spec) == (0, 1100)  # held past the limit: shadow never refuses
    ledger.commit(over, {"usd": 450})
    ledger.commit(fits, {"usd": 600})
    assert spent_held(ledger, spec) == (1050, 0)  # the accounting is exact
    entries = ledger.history(events=["shadow_refused"])
    assert [(e.reservation_id, e.scopes, dict(e.amounts), e.model) for e in entries] == [
        (over.id, ("user:alice",), {"usd": 500}, "m")
    ]
    assert not ledger.history(events=["refused"])
    with pytest.raises(BudgetExceededError):  # an enforcing call sees what shadow calls spent
        ledger.reserve([Hold(spec, 1)])


def test_shadow_names_the_first_failing_counter_as_a_refusal_does(ledger: Ledger) -> None:
    user = counter("user:alice", limit=1000)
    feature = counter("feature:search", limit=500)
    team = counter("team:a", limit=10)
    holds = [Hold(user, 600), Hold(feature, 600), Hold(team, 600)]
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve(holds)
    res = ledger.reserve(holds, enforce="shadow")
    assert res.shadowed is not None
    assert res.shadowed.index == 1
    assert res.shadowed.error(holds).scope == refused.value.scope == "feature:search"
    assert [spent_held(ledger, s) for s in (user, feature, team)] == [(0, 600), (0, 600), (0, 600)]
    [entry] = ledger.history(events=["shadow_refused"])
    assert entry.scopes == ("feature:search",)


def test_a_counter_in_shadow_beside_enforced_ones(ledger: Ledger) -> None:
    """A new, tighter limit tried in shadow while the old one enforces."""
    old = counter("user:alice", limit=1000, period=Period.DAY)
    new = dataclasses.replace(counter("user:alice", limit=100, period=Period.HOUR), shadow=True)
    first = ledger.reserve([Hold(old, 150), Hold(new, 150)])
    assert first.shadowed is not None and first.shadowed.index == 1
    ledger.commit(first, {"usd": 150})
    with pytest.raises(BudgetExceededError) as info:  # the enforced counter still refuses
        ledger.reserve([Hold(old, 900), Hold(new, 900)])
    assert info.value.scope == "user:alice" and info.value.period == "day"
    assert spent_held(ledger, old) == (150, 0) and spent_held(ledger, new) == (150, 0)
    assert [e.event for e in ledger.history()] == ["shadow_refused", "committed", "refused"]
    # the shadow flag is not part of the counter's identity: enforcing it later keeps its spend
    enforced = dataclasses.replace(new, shadow=False)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(enforced, 1)])


def test_shadow_sees_run_time_limits(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    ledger.set_limit(spec, 100)
    res = ledger.reserve([Hold(spec, 200)], enforce="shadow")
    assert res.shadowed is not None and res.shadowed.limit == 100
    ledger.release(res)
    assert spent_held(ledger, spec) == (0, 0)


def test_a_repeated_shadow_reserve_returns_the_reservation_and_journals_once(ledger: Ledger) -> None:
    spec = counter(limit=10)
    res = ledger.reserve([Hold(spec, 50)], enforce="shadow", id="shadow-1")
    again = ledger.reserve([Hold(spec, 50)], enforce="shadow", id="shadow-1")
    assert res.shadowed is not None and again.duplicate and again.shadowed is None
    assert spent_held(ledger, spec) == (0, 50)
    assert len(ledger.history(events=["shadow_refused"])) == 1


def test_enforce_takes_three_values(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="enforce must be True, False or 'shadow'"):
        ledger.reserve([Hold(counter(), 1)], enforce="warn")  # type: ignore[arg-type]


async def test_async_shadow(async_ledger: AsyncLedger) -> None:
    spec = counter(limit=100)
    res = await async_ledger.reserve([Hold(spec, 300)], enforce="shadow")
    assert res.shadowed is not None and res.shadowed.requested == 300
    await async_ledger.commit(res, {"usd": 250})
    [status] = await async_ledger.status([spec])
    assert (status.spent, status.held) == (250, 0)
    [entry] = await async_ledger.history(events=["shadow_refused"])
    assert entry.reservation_id == res.id


def test_a_burst_limit_and_a_daily_limit_in_one_reservation(ledger: Ledger) -> None:
    """``Budget("user", usd="1", per="minute")`` beside ``Budget("user", usd="20", per="day")``: two
    counters of one scope, held atomically; either one refuses, naming its period."""
    burst = counter("user:alice", limit=1_000, period=Period.MINUTE)
    daily = counter("user:alice", limit=1_500, period=Period.DAY)
    first = ledger.reserve([Hold(burst, 800), Hold(daily, 800)])
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(burst, 300), Hold(daily, 300)])
    assert (info.value.period, info.value.limit) == ("minute", Decimal("0.000001"))
    ledger.commit(first, {"usd": 800})
    assert spent_held(ledger, burst) == (800, 0) and spent_held(ledger, daily) == (800, 0)
    # with room in the burst counter (its limit raised in code), the daily one refuses
    later = dataclasses.replace(burst, limit=10_000)
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(later, 800), Hold(daily, 800)])
    assert info.value.period == "day"
    assert spent_held(ledger, daily) == (800, 0)  # all or nothing: nothing held on either
    assert spent_held(ledger, burst) == (800, 0)

"""The ledger contract (DESIGN: "The ledger contract"), run against every store."""

from __future__ import annotations

import inspect
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from budgetguard import BudgetExceededError
from budgetguard._budgets import Period, Scope, Unit, window_for
from budgetguard._ledger import AsyncLedger, Hold, Ledger, ReservationError
from budgetguard._ledger._base import OPERATIONS
from budgetguard._money import INT64_MAX

from .helpers import counter


def spent_held(ledger: Ledger, spec) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    [status] = ledger.status([spec])
    return status.spent, status.held


def test_admits_up_to_the_limit_and_refuses_past_it(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    first = ledger.reserve([Hold(spec, 600)])
    second = ledger.reserve([Hold(spec, 400)])  # exactly at the limit
    assert first.id != second.id
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(spec, 1)])
    err = info.value
    assert err.scope == "user:alice"
    assert err.unit == "usd"
    assert err.period == "day"
    assert (err.limit, err.spent, err.held, err.requested) == (
        Decimal("0.000001"),
        Decimal(0),
        Decimal("0.000001"),
        Decimal("0.000000001"),
    )
    assert err.resets_at == window_for(Period.DAY, "UTC", int(time.time() * 1000)).resets_at
    assert "raise the limit" in str(err)
    assert spent_held(ledger, spec) == (0, 1000)


def test_metering_holds_without_refusing(ledger: Ledger) -> None:
    spec = counter(limit=100)
    ledger.set_limit(spec, 50)  # even a run-time limit does not stop metering
    res = ledger.reserve([Hold(spec, 80)], enforce=False)
    ledger.commit(res, {"usd": 120})
    assert spent_held(ledger, spec) == (120, 0)
    with pytest.raises(BudgetExceededError):  # enforcing calls still see the spend
        ledger.reserve([Hold(spec, 1)])


def test_all_or_nothing_across_scopes(ledger: Ledger) -> None:
    user = counter("user:alice", limit=1000)
    feature = counter("feature:search", limit=500)
    glob = counter("global", limit=10_000, unit=Unit.TOKENS, period=Period.MONTH)
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(user, 600), Hold(feature, 600), Hold(glob, 10)])
    assert info.value.scope == "feature:search"  # the first failing scope is named
    assert info.value.requested == Decimal("0.0000006")
    for spec in (user, feature, glob):
        assert spent_held(ledger, spec) == (0, 0)  # nothing was held anywhere
    ledger.reserve([Hold(user, 600), Hold(feature, 500), Hold(glob, 10)])
    assert [spent_held(ledger, s) for s in (user, feature, glob)] == [(0, 600), (0, 500), (0, 10)]


def test_commit_below_and_above_the_hold(ledger: Ledger) -> None:
    spec = counter(limit=10_000)
    low = ledger.reserve([Hold(spec, 1000)])
    high = ledger.reserve([Hold(spec, 1000)])
    out_low = ledger.commit(low, {"usd": 250})
    assert (out_low.state, out_low.charged, out_low.overrun) == ("committed", {Unit.USD: 250}, False)
    out_high = ledger.commit(high, {Unit.USD: 1700})
    assert out_high.overrun  # charged anyway: the money is gone
    assert spent_held(ledger, spec) == (1950, 0)
    assert (out_low.spent, out_high.spent) == ((250,), (1950,))  # spent right after each commit


def test_a_repeated_commit_reports_the_first_commits_totals(ledger: Ledger) -> None:
    """A commit retried after a lost reply gets the first commit's outcome, spent totals included (the
    guard fires the thresholds that commit crossed from them), and changes nothing."""
    spec, other = counter(limit=10_000), counter("user:bob", limit=5_000, unit=Unit.TOKENS)
    first = ledger.reserve([Hold(spec, 1000), Hold(other, 100)])
    second = ledger.reserve([Hold(spec, 1000)])
    done = ledger.commit(first, {"usd": 400, "tokens": 30})
    ledger.commit(second, {"usd": 700})
    repeat = ledger.commit(first, {"usd": 999, "tokens": 999})
    assert (done.spent, done.duplicate) == ((400, 30), False)
    # the totals right after the first commit, not the counters' current ones
    assert (repeat.spent, repeat.charged, repeat.duplicate) == (
        (400, 30),
        {Unit.USD: 400, Unit.TOKENS: 30},
        True,
    )
    assert ledger.commit(first.id, {"usd": 1, "tokens": 1}).spent == (400, 30)  # by id too
    assert ledger.commit(second, {"usd": 700}).spent == (1100,)
    assert spent_held(ledger, spec) == (1100, 0)


def test_release_drops_the_hold(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    res = ledger.reserve([Hold(spec, 900)])
    out = ledger.release(res)
    assert (out.state, out.charged, out.duplicate) == ("released", {}, False)
    assert spent_held(ledger, spec) == (0, 0)
    ledger.reserve([Hold(spec, 1000)])


def test_every_call_is_idempotent_by_id(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    first = ledger.reserve([Hold(spec, 300)], id="call-1")
    again = ledger.reserve([Hold(spec, 300)], id="call-1")
    assert again.duplicate and not first.duplicate
    assert (again.id, again.expires_at, again.held) == (first.id, first.expires_at, first.held)
    assert spent_held(ledger, spec) == (0, 300)  # held once
    done = ledger.commit(first, {"usd": 200})
    repeat = ledger.commit(first, {"usd": 999})
    assert repeat.duplicate and repeat.charged == done.charged == {Unit.USD: 200}
    after = ledger.release("call-1")
    assert after.duplicate and after.state == "committed"
    assert spent_held(ledger, spec) == (200, 0)


def test_a_refused_id_stays_refused(ledger: Ledger) -> None:
    spec = counter(limit=100)
    blocker = ledger.reserve([Hold(spec, 100)])
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 50)], id="late")
    ledger.release(blocker)  # budget free again...
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(spec, 50)], id="late")  # ...but the same id gets the same answer
    assert info.value.held == Decimal("0.0000001")
    with pytest.raises(ReservationError):
        ledger.commit("late", {"usd": 1})
    ledger.reserve([Hold(spec, 50)], id="late-2")  # a new attempt needs a new id


def test_commit_by_id_string(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    ledger.reserve([Hold(spec, 500), Hold(counter("global", limit=10**6), 500)], id="by-id")
    out = ledger.commit("by-id", {"usd": 123})
    assert out.charged == {Unit.USD: 123}
    assert spent_held(ledger, spec) == (123, 0)


def test_unknown_reservation(ledger: Ledger) -> None:
    with pytest.raises(ReservationError, match="unknown reservation"):
        ledger.commit("never-reserved", {"usd": 1})
    with pytest.raises(ReservationError):
        ledger.release("never-reserved")


def test_commit_needs_every_held_unit(ledger: Ledger) -> None:
    usd, tokens = counter(limit=1000), counter("global", limit=1000, unit=Unit.TOKENS)
    res = ledger.reserve([Hold(usd, 10), Hold(tokens, 10)])
    with pytest.raises(ValueError, match="tokens"):
        ledger.commit(res, {"usd": 5})
    assert spent_held(ledger, usd) == (0, 10)  # nothing written
    ledger.commit(res, {"usd": 5, "tokens": 7, "requests": 1})
    assert spent_held(ledger, tokens) == (7, 0)


def test_expired_leases_stop_holding_budget(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    crashed = ledger.reserve([Hold(spec, 800)], lease=1.0)  # long enough for the next call, however slow
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 800)])
    time.sleep(1.15)
    assert spent_held(ledger, spec) == (0, 0)  # reclaimed by the next operation on the counter
    expired = [e for e in ledger.history(events=["expired"]) if e.reservation_id == crashed.id]
    assert len(expired) == 1
    assert expired[0].amounts == {"usd": 800}
    ledger.reserve([Hold(spec, 800)])


def test_commit_after_expiry_charges_once(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    slow = ledger.reserve([Hold(spec, 500)], lease=0.25)
    time.sleep(0.4)
    other = ledger.reserve([Hold(spec, 300)])  # reclaims the expired hold
    out = ledger.commit(slow, {"usd": 450})
    assert out.expired and not out.overrun
    assert spent_held(ledger, spec) == (450, 300)
    assert ledger.commit(slow, {"usd": 450}).duplicate
    ledger.commit(other, {"usd": 300})
    assert spent_held(ledger, spec) == (750, 0)


def test_release_after_expiry_changes_nothing(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    res = ledger.reserve([Hold(spec, 500)], lease=0.2)
    time.sleep(0.3)
    out = ledger.release(res)
    assert out.expired
    assert spent_held(ledger, spec) == (0, 0)


@pytest.mark.parametrize("period", list(Period))
def test_status_reports_each_period_window(ledger: Ledger, period: Period) -> None:
    spec = counter(limit=5000, period=period, tz="America/New_York")
    res = ledger.reserve([Hold(spec, 100)])
    ledger.commit(res, {"usd": 40})
    [status] = ledger.status([spec])
    now = int(time.time() * 1000)
    window = window_for(period, "America/New_York", now)
    assert (status.window_start, status.window_end) == (window.start, window.end)
    assert (status.limit, status.spent, status.held, status.remaining) == (5000, 40, 0, 4960)
    if period is Period.TOTAL:
        assert status.resets_at is None
    else:
        assert status.resets_at is not None and status.resets_at > datetime.now(UTC)


def test_tokens_and_requests_budgets(ledger: Ledger) -> None:
    tokens = counter("user:bob", limit=10_000, unit=Unit.TOKENS, period=Period.HOUR)
    requests = counter("user:bob", limit=2, unit=Unit.REQUESTS, period=Period.MINUTE)
    for _ in range(2):
        res = ledger.reserve([Hold(tokens, 1000), Hold(requests, 1)])
        ledger.commit(res, {"tokens": 900, "requests": 1})
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve([Hold(tokens, 1000), Hold(requests, 1)])
    assert (info.value.unit, info.value.limit, info.value.spent) == ("requests", 2, 2)
    assert spent_held(ledger, tokens) == (1800, 0)


def test_run_time_limits_override_code(ledger: Ledger, ledger_factory) -> None:  # type: ignore[no-untyped-def]
    spec = counter("user:carol", limit=100)
    assert ledger.get_limit(spec) is None
    ledger.set_limit(spec, 1000)
    other_client = ledger_factory()
    assert other_client.get_limit(spec) == 1000
    res = other_client.reserve([Hold(spec, 900)])
    assert res.held[0].limit == 1000
    [status] = other_client.status([spec])
    assert status.overridden and status.limit == 1000
    ledger.clear_limit(spec)
    assert ledger.get_limit(spec) is None
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 1)])  # back to the code limit: 900 held > 100
    # an override is per exact scope: another user keeps the code limit
    assert ledger.status([counter("user:dave", limit=100)])[0].limit == 100


def test_history_filters(ledger: Ledger) -> None:
    a, b = counter("user:a", limit=10_000), counter("user:b", limit=10)
    start = datetime.now(UTC) - timedelta(seconds=1)
    r1 = ledger.reserve([Hold(a, 100)], meta={"model": "gpt-4o", "attempt": 1})
    ledger.commit(r1, {"usd": 90}, meta={"usage": {"input_tokens": 10}})
    r2 = ledger.reserve([Hold(a, 100)], meta={"model": "claude-sonnet-4-5"})
    ledger.release(r2)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(b, 100)], meta={"model": "gpt-4o"})
    entries = ledger.history(since=start)
    assert [e.event for e in entries] == ["committed", "released", "refused"]
    committed = entries[0]
    assert committed.reservation_id == r1.id
    assert committed.scopes == ("user:a",)
    assert committed.amounts == {"usd": 90}
    assert committed.data["model"] == "gpt-4o"
    assert committed.data["attempt"] == 1
    assert committed.data["usage"] == {"input_tokens": 10}
    assert [e.event for e in ledger.history(model="gpt-4o")] == ["committed", "refused"]
    assert [e.event for e in ledger.history(scope="user:b")] == ["refused"]
    assert [e.event for e in ledger.history(events=["released"])] == ["released"]
    assert ledger.history(until=start) == []
    assert len(ledger.history(limit=2)) == 2


HOSTILE_IDS = [
    "a:b",
    "a",
    "a:b:c",
    "{x}",
    "{ns}",
    "*",
    "?",
    "[a-z]",
    "line\nbreak",
    "nul\x00byte",
    "tab\tsep",
    '"quoted"',
    "]@",
    "x" * 10_000,
    "ünïcödé-日本語-🙂",
    "user:alice",
    " ",
    "\\",
    "a@1",
]


def test_hostile_scope_ids_never_collide(ledger: Ledger) -> None:
    specs = [counter(f"user:{ident}", limit=10**6) for ident in HOSTILE_IDS]
    specs += [counter("team:a:b", limit=10**6), counter("user", limit=10**6) if False else counter("global")]
    for i, spec in enumerate(specs):
        ledger.commit(ledger.reserve([Hold(spec, i + 1)]), {"usd": i + 1})
    statuses = ledger.status(specs)
    assert [s.spent for s in statuses] == [i + 1 for i in range(len(specs))]
    assert {e.scopes[0] for e in ledger.history(events=["committed"])} == {str(s.scope) for s in specs}


@pytest.mark.parametrize(
    ("amount", "error"),
    [(-1, ValueError), (1.5, TypeError), (True, TypeError), (2**63, ValueError), ("10", TypeError)],
)
def test_bad_amounts_are_refused_before_any_write(ledger: Ledger, amount: object, error: type) -> None:
    spec = counter(limit=1000)
    with pytest.raises(error):
        ledger.reserve([Hold(spec, amount)])  # type: ignore[arg-type]
    res = ledger.reserve([Hold(spec, 10)])
    with pytest.raises(error):
        ledger.commit(res, {"usd": amount})  # type: ignore[dict-item]
    assert spent_held(ledger, spec) == (0, 10)
    assert ledger.history(events=["committed"]) == []


@pytest.mark.parametrize("lease", [0, -1, 0.0001, 10**9])
def test_bad_leases(ledger: Ledger, lease: float) -> None:
    with pytest.raises(ValueError, match="lease"):
        ledger.reserve([Hold(counter(), 1)], lease=lease)


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 200, "semi;colon", "{tag}"])
def test_bad_reservation_ids(ledger: Ledger, bad_id: str) -> None:
    with pytest.raises(ValueError, match="reservation id"):
        ledger.reserve([Hold(counter(), 1)], id=bad_id)


def test_int64_edges_are_exact(ledger: Ledger) -> None:
    # Lua numbers are doubles: 2**53 + 1 is not representable. The stores must still be exact.
    big = 2**53 + 1
    spec = counter("user:big", limit=big)
    ledger.reserve([Hold(spec, big - 1)])
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 2)])
    ledger.reserve([Hold(spec, 1)])
    assert spent_held(ledger, spec) == (0, big)
    top = counter("user:top", limit=INT64_MAX)
    res = ledger.reserve([Hold(top, INT64_MAX)])
    ledger.commit(res, {"usd": INT64_MAX})
    assert spent_held(ledger, top) == (INT64_MAX, 0)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(top, 1)])
    res0 = ledger.reserve([Hold(top, 0)])
    with pytest.raises(ValueError, match="overflow"):
        ledger.commit(res0, {"usd": 1})  # would pass 2**63 - 1: refused, nothing written
    assert spent_held(ledger, top) == (INT64_MAX, 0)


def test_two_holds_on_one_counter_are_refused(ledger: Ledger) -> None:
    spec = counter()
    with pytest.raises(Exception, match="same counter"):
        ledger.reserve([Hold(spec, 1), Hold(spec, 2)])


def test_scope_validation() -> None:
    for bad in ["", "User:x", "user:", "1x:y", "global:x"]:
        with pytest.raises(ValueError):
            Scope.parse(bad)
    assert Scope.parse("user:a:b") == Scope("user", "a:b")


async def test_async_twin(async_ledger: AsyncLedger) -> None:
    spec = counter(limit=1000)
    res = await async_ledger.reserve([Hold(spec, 700)], meta={"model": "gpt-4o"})
    with pytest.raises(BudgetExceededError):
        await async_ledger.reserve([Hold(spec, 301)])
    out = await async_ledger.commit(res, {"usd": 650})
    assert out.charged == {Unit.USD: 650}
    assert (await async_ledger.commit(res.id, {"usd": 1})).duplicate
    [status] = await async_ledger.status([spec])
    assert (status.spent, status.held) == (650, 0)
    await async_ledger.set_limit(spec, 5000)
    assert await async_ledger.get_limit(spec) == 5000
    second = await async_ledger.reserve([Hold(spec, 4000)])
    assert (await async_ledger.release(second)).state == "released"
    await async_ledger.clear_limit(spec)
    assert await async_ledger.get_limit(spec) is None
    events = [e.event for e in await async_ledger.history()]
    assert events == ["refused", "committed", "released"]


async def test_async_twin_takes_the_sync_declarations(async_ledger: AsyncLedger) -> None:
    """Every store's methods, sync and async, are made from ``Ledger``'s declarations: the same
    arguments and defaults, keyword-only where declared so, and the same answers."""
    for name in OPERATIONS:
        declared = inspect.signature(getattr(Ledger, name))
        assert inspect.signature(getattr(type(async_ledger), name)) == declared
        assert inspect.iscoroutinefunction(getattr(async_ledger, name))
    spec = counter(limit=1000)
    res = await async_ledger.reserve([Hold(spec, 10)], lease=60, id="twin-1", enforce=False)
    assert (res.id, res.expires_at - res.created_at) == ("twin-1", 60_000)
    with pytest.raises(TypeError):
        await async_ledger.reserve([Hold(spec, 10)], 60)  # type: ignore[misc]  # lease is keyword-only
    with pytest.raises(TypeError):
        await async_ledger.reserve([Hold(spec, 10)], leese=60)  # type: ignore[call-arg]
    await async_ledger.release(res, meta={"why": "test"})
    (entry,) = await async_ledger.history(scope="user:alice", events=["released"], limit=5)
    assert entry.data == {"why": "test"}
    assert await async_ledger.history(model="none") == []
    assert await async_ledger.journal_complete_since() is None


def test_sync_stores_take_the_declarations(ledger: Ledger) -> None:
    for name in OPERATIONS:
        assert inspect.signature(getattr(type(ledger), name)) == inspect.signature(getattr(Ledger, name))
    with pytest.raises(TypeError):
        ledger.history(scop="user:alice")  # type: ignore[call-arg]

"""Administration (``adjust``, ``reset``, ``raise_limit``, ``set_limits``), run against every store: each
change is atomic, journaled with who and why, and the others' admission sees it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from budgetguard import BudgetExceededError
from budgetguard._budgets import Unit
from budgetguard._ledger import AsyncLedger, Hold, Ledger
from budgetguard._money import INT64_MAX

from .helpers import counter

WHO = {"actor": "ops-alice", "reason": "ticket 42"}


def spent_held(ledger: Ledger, spec) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    [status] = ledger.status([spec])
    return status.spent, status.held


def charged(ledger: Ledger, spec, amount: int) -> None:  # type: ignore[no-untyped-def]
    ledger.commit(ledger.reserve([Hold(spec, amount)]), {spec.unit: amount})


def test_a_credit_lowers_spent_and_admits_again(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    charged(ledger, spec, 900)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 200)])
    done = ledger.adjust(spec, -300, **WHO)
    assert (done.change, done.spent, done.requested, done.duplicate) == (-300, 600, -300, False)
    assert spent_held(ledger, spec) == (600, 0)
    ledger.reserve([Hold(spec, 400)])  # admitted: 600 + 400 <= 1000
    entry = ledger.history(events=["adjusted"])[-1]
    assert (entry.reservation_id, entry.scopes, dict(entry.amounts)) == (
        done.id,
        ("user:alice",),
        {"usd": -300},
    )
    assert dict(entry.data) == {"actor": "ops-alice", "reason": "ticket 42", "per": "day"}


def test_a_credit_past_spent_stops_at_zero(ledger: Ledger) -> None:
    spec = counter(limit=1000, unit=Unit.TOKENS)
    charged(ledger, spec, 250)
    done = ledger.adjust(spec, -400, **WHO)
    assert (done.change, done.spent, done.requested) == (-250, 0, -400)
    assert spent_held(ledger, spec) == (0, 0)
    (entry,) = ledger.history(events=["adjusted"])
    assert dict(entry.amounts) == {"tokens": -250}
    assert entry.data["requested"] == -400  # what was asked, beside what was done


def test_a_charge_adds_to_spent_past_the_limit(ledger: Ledger) -> None:
    spec = counter(limit=100)
    done = ledger.adjust(spec, 150, **WHO)  # an amount billed elsewhere: charged, as an overrun is
    assert (done.change, done.spent) == (150, 150)
    assert spent_held(ledger, spec) == (150, 0)
    with pytest.raises(ValueError, match="overflow"):
        ledger.adjust(spec, INT64_MAX, **WHO)
    assert spent_held(ledger, spec) == (150, 0)


def test_an_adjustment_happens_once_per_id(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    charged(ledger, spec, 500)
    first = ledger.adjust(spec, -200, id="refund-7", **WHO)
    again = ledger.adjust(spec, -200, id="refund-7", **WHO)  # a retry after a lost reply
    assert (again.id, again.change, again.spent, again.duplicate) == ("refund-7", -200, 300, True)
    assert not first.duplicate
    assert spent_held(ledger, spec) == (300, 0)
    assert len(ledger.history(events=["adjusted"])) == 1


def test_reset_takes_spent_to_zero_and_keeps_holds(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    charged(ledger, spec, 700)
    live = ledger.reserve([Hold(spec, 100)])
    done = ledger.reset(spec, **WHO)
    assert (done.change, done.spent, done.requested) == (-700, 0, None)
    assert spent_held(ledger, spec) == (0, 100)
    ledger.commit(live, {"usd": 80})  # the hold resolves as before
    assert spent_held(ledger, spec) == (80, 0)
    (entry,) = ledger.history(events=["reset"])
    assert (dict(entry.amounts), entry.data["actor"]) == ({"usd": -700}, "ops-alice")


def test_admin_changes_need_who_and_why(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    for bad in ({"actor": "", "reason": "x"}, {"actor": "me", "reason": "  "}, {"actor": "me", "reason": 3}):
        with pytest.raises(ValueError, match=r"actor|reason"):
            ledger.adjust(spec, -1, **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"actor|reason"):
            ledger.raise_limit(spec, 5, until=timedelta(hours=1), **bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ledger.adjust(spec, 1.5, **WHO)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="id"):
        ledger.adjust(spec, 1, id="no spaces", **WHO)
    assert ledger.history() == []


def test_a_raise_admits_more_until_it_ends_by_itself(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    charged(ledger, spec, 1000)
    raised = ledger.raise_limit(spec, 500, until=timedelta(milliseconds=300), **WHO)
    assert (raised.limit, raised.extra, raised.base) == (1500, 500, None)
    assert raised.until > datetime.now(UTC) - timedelta(seconds=5)
    [status] = ledger.status([spec])
    assert (status.limit, status.overridden) == (1500, True)
    assert ledger.get_limit(spec) == 1500
    ledger.release(ledger.reserve([Hold(spec, 500)]))  # admitted under the raise
    (entry,) = ledger.history(events=["limit_raised"])
    assert (dict(entry.amounts), entry.data["limit"], entry.data["until"]) == (
        {"usd": 500},
        1500,
        raised.until_ms,
    )
    time.sleep(0.4)  # past the raise's end on the store's clock: no job ran
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 1)])
    assert ledger.get_limit(spec) is None  # the limit in code again
    [status] = ledger.status([spec])
    assert (status.limit, status.overridden) == (1000, False)


def test_a_raise_goes_back_to_the_run_time_limit_it_raised(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    ledger.set_limit(spec, 2000)
    first = ledger.raise_limit(spec, 500, until=timedelta(hours=1), **WHO)
    second = ledger.raise_limit(spec, 300, until=timedelta(milliseconds=300), **WHO)  # replaces it
    assert (first.limit, first.base, second.limit, second.base) == (2500, 2000, 2300, 2000)
    assert ledger.get_limit(spec) == 2300
    time.sleep(0.4)
    assert ledger.get_limit(spec) == 2000
    assert ledger.status([spec])[0].limit == 2000


def test_set_limit_ends_a_raise(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    ledger.raise_limit(spec, 500, until=timedelta(milliseconds=300), **WHO)
    ledger.set_limit(spec, 700)  # set outright: the raise is over
    time.sleep(0.4)
    assert ledger.get_limit(spec) == 700
    ledger.raise_limit(spec, 100, until=timedelta(hours=1), **WHO)
    ledger.clear_limit(spec)
    assert ledger.get_limit(spec) is None
    assert ledger.status([spec])[0].limit == 1000


def test_a_raise_refuses_bad_times_and_sizes(ledger: Ledger) -> None:
    spec = counter(limit=1000)
    with pytest.raises(ValueError, match="not in the future"):
        ledger.raise_limit(spec, 5, until=datetime.now(UTC) - timedelta(minutes=1), **WHO)
    with pytest.raises(ValueError, match="not in the future"):
        ledger.raise_limit(spec, 5, until=datetime(1969, 7, 20, tzinfo=UTC), **WHO)
    with pytest.raises(ValueError, match="aware"):
        ledger.raise_limit(spec, 5, until=datetime.now() + timedelta(hours=1), **WHO)
    with pytest.raises(ValueError, match="2\\*\\*63-1"):
        ledger.raise_limit(counter(limit=INT64_MAX), 1, until=timedelta(hours=1), **WHO)
    with pytest.raises(ValueError):
        ledger.raise_limit(spec, -5, until=timedelta(hours=1), **WHO)
    assert ledger.get_limit(spec) is None
    assert ledger.history() == []


def test_set_limits_writes_all_or_none_and_journals_the_plan(ledger: Ledger) -> None:
    usd, requests = counter(limit=1000), counter(limit=10, unit=Unit.REQUESTS)
    other = counter("user:bob", limit=5)
    ledger.set_limit(other, 7)
    ledger.raise_limit(usd, 1, until=timedelta(milliseconds=300), **WHO)
    ledger.set_limits({usd: 5000, requests: 100, other: None}, plan="pro", **WHO)
    assert (ledger.get_limit(usd), ledger.get_limit(requests), ledger.get_limit(other)) == (5000, 100, None)
    time.sleep(0.4)
    assert ledger.get_limit(usd) == 5000  # the raise was ended, not restored over the plan's limit
    (entry,) = ledger.history(events=["limits_set"])
    assert entry.scopes == ("user:alice", "user:bob")
    assert entry.data["plan"] == "pro"
    assert [list(x) for x in entry.data["limits"]] == [
        ["user:alice", "usd", "day", "UTC", 5000],
        ["user:alice", "requests", "day", "UTC", 100],
        ["user:bob", "usd", "day", "UTC", None],
    ]
    with pytest.raises(ValueError):
        ledger.set_limits({usd: 1, requests: -1}, **WHO)
    assert ledger.get_limit(usd) == 5000  # nothing written


def test_reports_count_calls_and_leave_admin_lines_to_the_export(ledger: Ledger) -> None:
    """A report sums what calls cost; an adjustment is its own line in the history and exports, never
    a call, and never breaks them."""
    from budgetguard._export import export_text
    from budgetguard._report import summarize

    spec = counter(limit=1000)
    charged(ledger, spec, 600)
    ledger.adjust(spec, -100, **WHO)
    ledger.reset(spec, **WHO)
    ledger.raise_limit(spec, 10, until=timedelta(hours=1), **WHO)
    ledger.set_limits({spec: 900}, **WHO)
    summary = summarize(ledger, "user", since=datetime.now(UTC) - timedelta(hours=1))
    assert summary.total.cost_nano == 600  # the calls' cost
    assert summary.total.calls == 1
    text = "".join(export_text(ledger, since=datetime.now(UTC) - timedelta(hours=1), fmt="jsonl"))
    events = [line.split('"event": "')[1].split('"')[0] for line in text.splitlines()]
    assert events == ["committed", "adjusted", "reset", "limit_raised", "limits_set"]
    assert '"actor": "ops-alice"' in text


async def test_the_async_stores_administer_too(async_ledger: AsyncLedger) -> None:
    spec = counter(limit=1000)
    res = await async_ledger.reserve([Hold(spec, 400)])
    await async_ledger.commit(res, {"usd": 400})
    assert (await async_ledger.adjust(spec, -150, id="a-1", **WHO)).spent == 250
    assert (await async_ledger.reset(spec, **WHO)).change == -250
    raised = await async_ledger.raise_limit(spec, 100, until=timedelta(hours=1), **WHO)
    assert raised.limit == 1100
    await async_ledger.set_limits({spec: 50}, **WHO)
    assert await async_ledger.get_limit(spec) == 50
    events = [e.event for e in await async_ledger.history()]
    assert events == ["committed", "adjusted", "reset", "limit_raised", "limits_set"]


PLANS_FILE = """
[[budgets]]
scope = "user"
usd = "0.000001"
per = "day"

[[budgets]]
scope = "user"
requests = 2
per = "minute"

[[plans.pro]]
scope = "user"
usd = "0.000005"
per = "day"

[[plans.team]]
scope = "user"
usd = "0.000003"
per = "day"

[[plans.team]]
scope = "user"
requests = 100
per = "minute"
"""


def test_a_scope_moves_between_plans_and_admission_follows(ledger: Ledger, tmp_path: Path) -> None:
    from budgetguard import load_plans
    from budgetguard._budgets import Scope
    from budgetguard._core import GuardCore

    path = tmp_path / "budgets.toml"
    path.write_text(PLANS_FILE)
    plans = load_plans(path)
    core = GuardCore(ledger, budgets=plans.budgets)
    alice = Scope("user", "alice")
    usd, requests = core.counters_for([alice])

    def admitted(amount: int) -> bool:
        try:
            ledger.release(ledger.reserve([Hold(usd, amount), Hold(requests, 1)]))
        except BudgetExceededError:
            return False
        return True

    assert not admitted(2000)  # the budget in code: 1000 nano-USD a day
    assert plans.current(ledger, alice) == []
    plans.assign(ledger, alice, "team", **WHO)
    assert plans.current(ledger, "user:alice") == ["team"]
    assert admitted(3000) and not admitted(3001)
    assert ledger.get_limit(requests) == 100
    plans.assign(ledger, alice, "pro", **WHO)  # team's requests limit goes back to the one in code
    assert plans.current(ledger, alice) == ["pro"]
    assert admitted(5000) and ledger.get_limit(requests) is None
    plans.assign(ledger, alice, None, **WHO)
    assert plans.current(ledger, alice) == [] and not admitted(2000)
    assert ledger.get_limit(Hold(usd, 0).counter) is None
    names = [e.data["plan"] for e in ledger.history(events=["limits_set"])]
    assert names == ["team", "pro", "(none)"]
    assert ledger.status([usd])[0].limit == 1000


def test_adjustments_race_with_reservations_and_each_id_applies_once(
    ledger: Ledger, ledger_factory: Callable[[], Ledger]
) -> None:
    """Threads on their own clients: credits and charges interleave with reserves, and the same id sent
    by many at once (retries racing) changes spent once."""
    spec = counter("user:race", limit=10_000)
    charged(ledger, spec, 1_000)
    clients = [ledger_factory() for _ in range(16)]
    start = threading.Barrier(16, timeout=60)

    def work(i: int) -> bool:
        client = clients[i]
        start.wait()
        client.adjust(spec, -10 if i % 2 else 30, id=f"own-{i}", **WHO)  # 8 credits of 10, 8 charges of 30
        res = client.reserve([Hold(spec, 5)])
        client.commit(res, {"usd": 5})
        return not client.adjust(spec, -100, id="same", **WHO).duplicate

    with ThreadPoolExecutor(16) as pool:
        applied = list(pool.map(work, range(16)))
    assert applied.count(True) == 1
    assert spent_held(ledger, spec) == (1_000 - 80 + 240 + 16 * 5 - 100, 0)
    assert len(ledger.history(events=["adjusted"])) == 17

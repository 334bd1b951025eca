"""Administration (``adjust``, ``reset``, ``raise_limit``, ``set_limits``), run against every store: each
change is atomic, journaled with who and why, and the others' admission sees it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from budgetguard import BudgetExceededError
from budgetguard._budgets import ROLLING, ROLLING_BUCKETS, Period, Unit, rolling_bucket
from budgetguard._ledger import AsyncLedger, CounterSpec, Hold, Ledger, open_ledger
from budgetguard._ledger._engine import Slot
from budgetguard._ledger._expiry import window_at
from budgetguard._ledger._memory import MemoryLedger
from budgetguard._ledger._postgres import PostgresLedger
from budgetguard._ledger._postgres_tx import PgTx
from budgetguard._ledger._redis import RedisLedger
from budgetguard._ledger._sqlite import SQLiteLedger
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


def test_an_id_given_again_for_another_change_is_refused(ledger: Ledger) -> None:
    alice, bob = counter(limit=1000), counter("user:bob", limit=1000)
    charged(ledger, alice, 500)
    ledger.adjust(alice, -100, id="ticket-77", **WHO)
    for other in (
        lambda: ledger.adjust(bob, 300, id="ticket-77", **WHO),  # another counter
        lambda: ledger.adjust(alice, 100, id="ticket-77", **WHO),  # another direction
        lambda: ledger.adjust(alice, -200, id="ticket-77", **WHO),  # another amount
        lambda: ledger.reset(alice, id="ticket-77", **WHO),
    ):
        with pytest.raises(ValueError, match="'ticket-77' was used for a different change"):
            other()
    assert (spent_held(ledger, alice), spent_held(ledger, bob)) == ((400, 0), (0, 0))
    assert ledger.adjust(alice, -100, id="ticket-77", **WHO).duplicate  # the same change: a repeat
    assert len(ledger.history(events=["adjusted", "reset"])) == 1


def test_an_adjustment_id_is_remembered_while_its_window_is() -> None:
    now = [1_796_000_000_000]  # 2026-11-30 (UTC): the month window ends a day later
    ledger = MemoryLedger(clock=lambda: now[0])
    spec = counter(limit=10**6, period=Period.MONTH)
    charged(ledger, spec, 5000)
    ledger.adjust(spec, -1000, id="refund-1234", **WHO)
    now[0] += 20 * 3_600_000  # hours later (records of reservations are long gone)
    for _ in range(1100):  # traffic meanwhile: the store prunes expired records every 1,024 operations
        ledger.status([spec])
    assert ledger.adjust(spec, -1000, id="refund-1234", **WHO).duplicate
    assert spent_held(ledger, spec) == (4000, 0)


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


# -- a rolling counter: the window administered is the trailing one a check counts -------------------


class Buckets:
    """A rolling counter's earlier buckets on one store: spend put there and read back, on a clock the
    test moves (memory, SQLite) or as keys written on the Redis server (rows on the PostgreSQL one,
    through its own transaction: both run on the server's clock)."""

    def __init__(self, ledger: Ledger, clock: list[int] | None) -> None:
        self.ledger, self.clock = ledger, clock

    def _current(self, spec: CounterSpec) -> int:
        now = self.clock[0] if self.clock is not None else time.time_ns() // 1_000_000
        return now // rolling_bucket(spec.period) * rolling_bucket(spec.period)

    def _pg_bucket(self, spec: CounterSpec, ago: int) -> tuple[PgTx, Slot]:
        assert isinstance(self.ledger, PostgresLedger)
        start = self._current(spec) - ago * rolling_bucket(spec.period)
        return PgTx(self._cur, self.ledger.namespace, start), Slot(spec, window_at(spec, start), prior=False)

    def _pg(self, spec: CounterSpec, ago: int, amount: int | None) -> int:
        """Put ``amount`` (unless None) in the PostgreSQL bucket ``ago`` buckets old; its spent."""
        assert isinstance(self.ledger, PostgresLedger)
        with self.ledger._pool.connection() as conn, conn.transaction(), conn.cursor() as self._cur:
            tx, slot = self._pg_bucket(spec, ago)
            if amount is not None:
                tx.put_counter(slot.key, amount, 0, slot.expires, slot.label)
            return tx.counter(slot, tx.now)[0]

    def spend(self, spec: CounterSpec, ago: int, amount: int) -> None:
        """Charge ``amount`` in the bucket ``ago`` buckets before the one holding now."""
        if isinstance(self.ledger, PostgresLedger):
            self._pg(spec, ago, amount)
            return
        if self.clock is None:
            assert isinstance(self.ledger, RedisLedger)
            key, _ = self.ledger._flows.keys.counter(
                spec, self._current(spec) - ago * rolling_bucket(spec.period)
            )
            self.ledger.client.hset(key, mapping={"spent": amount, "held": 0})
            return
        back = ago * rolling_bucket(spec.period)
        self.clock[0] -= back
        charged(self.ledger, spec, amount)
        self.clock[0] += back

    def spent_from(self, spec: CounterSpec, ago: int) -> int:
        """The spent of the buckets ``ago`` or more buckets old (the window as a check then counted it,
        where nothing is older)."""
        if isinstance(self.ledger, PostgresLedger):
            return sum(self._pg(spec, k, None) for k in range(ago, ROLLING_BUCKETS + 1))
        if self.clock is None:
            assert isinstance(self.ledger, RedisLedger)
            step, current = rolling_bucket(spec.period), self._current(spec)
            keys = [
                self.ledger._flows.keys.counter(spec, current - k * step)[0]
                for k in range(ago, ROLLING_BUCKETS + 1)
            ]
            return sum(int(self.ledger.client.hget(key, "spent") or 0) for key in keys)
        back = ago * rolling_bucket(spec.period)
        self.clock[0] -= back
        try:
            return spent_held(self.ledger, spec)[0]
        finally:
            self.clock[0] += back


@pytest.fixture
def rolling_store(store_url: str) -> Iterator[tuple[Ledger, Buckets]]:
    clock = [1_700_000_000_000 // 3_600_000 * 3_600_000 + 600_000]  # 10 minutes into an hour bucket
    store: Ledger
    if store_url.startswith("memory://"):
        store = MemoryLedger(clock=lambda: clock[0])
    elif store_url.startswith("sqlite:///"):
        store = SQLiteLedger(store_url.removeprefix("sqlite:///"), clock=lambda: clock[0])
    else:
        store = open_ledger(store_url)
    with store:
        yield store, Buckets(store, None if isinstance(store, RedisLedger | PostgresLedger) else clock)


def rolling_day(limit: int) -> CounterSpec:
    return counter(limit=limit, tz=ROLLING)  # the last 24 hours, in 1 h buckets


def test_reset_of_a_rolling_counter_frees_its_whole_window(rolling_store: tuple[Ledger, Buckets]) -> None:
    ledger, buckets = rolling_store
    spec = rolling_day(1000)
    buckets.spend(spec, 3, 600)
    charged(ledger, spec, 300)  # in the bucket holding now
    live = ledger.reserve([Hold(spec, 50)])
    assert spent_held(ledger, spec) == (900, 50)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 51)])
    done = ledger.reset(spec, **WHO)
    assert (done.change, done.spent, done.requested) == (-900, 0, None)
    assert spent_held(ledger, spec) == (0, 50)  # holds stay
    assert buckets.spent_from(spec, 1) == 0  # the earlier bucket too
    ledger.release(live)
    ledger.release(ledger.reserve([Hold(spec, 1000)]))  # the whole limit is free again
    (entry,) = ledger.history(events=["reset"])
    assert dict(entry.amounts) == {"usd": -900}  # all it removed
    again = ledger.reset(spec, id=done.id, **WHO)
    assert (again.change, again.spent, again.duplicate) == (-900, 0, True)


def test_a_credit_on_a_rolling_counter_takes_from_the_newest_buckets_first(
    rolling_store: tuple[Ledger, Buckets],
) -> None:
    ledger, buckets = rolling_store
    spec = rolling_day(1000)
    buckets.spend(spec, 5, 200)
    buckets.spend(spec, 2, 400)
    charged(ledger, spec, 300)
    done = ledger.adjust(spec, -500, **WHO)  # more than the current bucket's 300
    assert (done.change, done.spent, done.requested) == (-500, 400, -500)
    assert done.spent == spent_held(ledger, spec)[0]  # the window's spent, as status says
    assert (buckets.spent_from(spec, 1), buckets.spent_from(spec, 3)) == (400, 200)  # newest first
    ledger.release(ledger.reserve([Hold(spec, 600)]))  # 400 + 600 <= 1000
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(spec, 601)])
    done = ledger.adjust(spec, -1000, **WHO)  # past the window's spend: to 0, never below in a bucket
    assert (done.change, done.spent) == (-400, 0)
    assert buckets.spent_from(spec, 1) == 0
    done = ledger.adjust(spec, 250, **WHO)  # a charge lands in the bucket holding now
    assert (done.change, done.spent) == (250, 250) and buckets.spent_from(spec, 1) == 0
    assert spent_held(ledger, spec) == (250, 0)
    assert [dict(e.amounts) for e in ledger.history(events=["adjusted"])] == [
        {"usd": -500},
        {"usd": -400},
        {"usd": 250},
    ]


def test_a_charge_on_a_rolling_counter_is_kept_while_the_window_counts_it(
    rolling_store: tuple[Ledger, Buckets],
) -> None:
    ledger, buckets = rolling_store
    spec = counter(limit=1000, period=Period.WEEK, tz=ROLLING)  # the last 7 days, in 7 h buckets
    ledger.adjust(spec, 100, **WHO)  # the bucket's first write: kept as long as a reservation keeps it
    if isinstance(ledger, PostgresLedger):
        with ledger._pool.connection() as conn:
            sql = "SELECT max(expires_at) FROM budgetguard_counters WHERE ns = %s"
            [(expires,)] = conn.execute(sql, (ledger.namespace,)).fetchall()
        assert expires > buckets._current(spec) + ROLLING_BUCKETS * rolling_bucket(Period.WEEK)
    elif buckets.clock is None:
        assert isinstance(ledger, RedisLedger)
        key, _ = ledger._flows.keys.counter(spec, buckets._current(spec))
        assert ledger.client.pttl(key) > ROLLING_BUCKETS * rolling_bucket(Period.WEEK)  # 7 days and more
    else:
        buckets.clock[0] += ROLLING_BUCKETS * rolling_bucket(Period.WEEK)  # the oldest bucket counted
        assert spent_held(ledger, spec) == (100, 0)


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
    with pytest.raises(ValueError, match="more than a year away"):  # an --until typo (2206 for 2026)
        ledger.raise_limit(spec, 5, until=datetime.now(UTC) + timedelta(days=400), **WHO)
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

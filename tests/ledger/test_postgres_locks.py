"""The PostgreSQL store's locks for the operations main added (administration, run-time limits,
rolling counters' earlier buckets): each race forced into the interleaving that once went wrong, on
the tests' real PostgreSQL server."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from budgetguard._budgets import ROLLING
from budgetguard._ledger import Hold
from budgetguard._ledger._postgres import PostgresLedger
from budgetguard._ledger._postgres_tx import PgTx
from tests import postgres_server
from tests.postgres_server import with_options

from .helpers import counter

WHO = {"actor": "ops", "reason": "a test"}


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresLedger]:
    ns = "locks" + secrets.token_hex(4)
    with PostgresLedger(with_options(postgres_url), namespace=ns) as ledger:
        yield ledger
    postgres_server.delete_namespace(postgres_url, ns)


class Gate:
    """Pause the first thread at a point until the second one reached it too (no lock kept them
    apart: the race) or waits for an advisory lock on the server (the lock serializes them)."""

    def __init__(self, store: PostgresLedger) -> None:
        self.store = store
        self.first = threading.Event()
        self.second = threading.Event()

    def at_point(self) -> None:
        if self.first.is_set():
            self.second.set()
            return
        self.first.set()
        while not (self.second.is_set() or self._waiting()):
            time.sleep(0.01)

    def _waiting(self) -> bool:
        with self.store._pool.connection() as conn:
            sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return bool(conn.execute(sql).fetchone()[0])

    def race(self, first: Callable[[], Any], second: Callable[[], Any]) -> list[Any]:
        out: list[Any] = [None, None]

        def run(i: int, call: Callable[[], Any]) -> None:
            out[i] = call()

        a = threading.Thread(target=run, args=(0, first))
        a.start()
        assert self.first.wait(30)
        b = threading.Thread(target=run, args=(1, second))
        b.start()
        a.join(60)
        b.join(60)
        return out


def test_one_adjustment_id_run_twice_at_once_applies_once(
    store: PostgresLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = counter("user:refund", 10_000)
    store.commit(store.reserve([Hold(spec, 1000)]), {"usd": 1000})
    gate = Gate(store)
    read = PgTx.record

    def record(self: PgTx, res_id: str) -> Any:
        found = read(self, res_id)
        if res_id.startswith("@"):  # (the adjustment's record: read, not yet written)
            gate.at_point()
        return found

    monkeypatch.setattr(PgTx, "record", record)
    out = gate.race(
        lambda: store.adjust(spec, 300, id="refund-42", **WHO),
        lambda: store.adjust(spec, 300, id="refund-42", **WHO),
    )
    assert sorted(a.duplicate for a in out) == [False, True]
    assert store.status([spec])[0].spent == 1300


def test_a_raise_and_the_restore_of_an_ended_one_run_one_after_the_other(
    store: PostgresLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = counter("user:plan", 1000)
    store.set_limit(spec, 5000)
    ended = store.raise_limit(spec, 50, until=timedelta(milliseconds=100), **WHO)
    while time.time() * 1000 < ended.until_ms + 50:  # (the raise ends on the server's clock)
        time.sleep(0.05)
    gate = Gate(store)
    read = PgTx.limit

    def limit(self: PgTx, field: str) -> Any:
        found = read(self, field)
        if threading.current_thread().name != "MainThread" and field == spec.limit_field:
            gate.at_point()  # (a raise read the limit; a restore of the ended raise would follow)
        return found

    monkeypatch.setattr(PgTx, "limit", limit)
    raised, _ = gate.race(
        lambda: store.raise_limit(spec, 100, until=timedelta(hours=1), **WHO),
        lambda: store.get_limit(spec),
    )
    monkeypatch.undo()
    assert (raised.limit, raised.base) == (5100, 5000)  # on the limit the ended raise left
    assert store.get_limit(spec) == 5100
    store.clear_limit(spec)
    assert store.get_limit(spec) is None  # (no raise left over either)


def test_reservations_on_rolling_counters_in_crossing_orders_never_deadlock(store: PostgresLedger) -> None:
    specs = [counter(f"user:{name}", 10**12, tz=ROLLING) for name in ("a", "b", "c")]
    errors: list[BaseException] = []

    def worker(order: list[int]) -> None:
        try:
            for _ in range(25):
                holds = [Hold(specs[i], 1) for i in order]
                store.commit(store.reserve(holds), {"usd": 1})
                store.status([specs[i] for i in reversed(order)])
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    orders = [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]]
    threads = [threading.Thread(target=worker, args=(o,)) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert store.rerun == 0  # (a deadlock the server broke would have run an operation again)
    assert [s.spent for s in store.status(specs)] == [100, 100, 100]

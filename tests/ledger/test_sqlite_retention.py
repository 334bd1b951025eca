"""A long-running SQLite file stays bounded: past windows' counters, their lease rows, resolved
reservations and old journal entries are pruned (issue 13, item 9)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from budgetguard._budgets import Period, Unit
from budgetguard._ledger import Hold, SQLiteLedger, open_ledger
from budgetguard._ledger._expiry import COUNTER_RETENTION_MS, RECORD_RETENTION_MS

from .helpers import counter

PRUNE_EVERY = 512  # operations between two prunes (SQLite's _Transaction)
MINUTE = 60_000


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        (n,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    db.close()
    return int(n)


def test_lease_rows_of_past_windows_are_pruned(tmp_path: Path) -> None:
    """Abandoned reservations (a crashed worker) on per-minute counters: each window's lease is never
    reclaimed by a later operation (they are on the next window's counter), so it goes with its counter."""
    now = [1_800_000_000_000]
    path = tmp_path / "ledger.db"
    store = SQLiteLedger(path, clock=lambda: now[0])
    per_minute = counter("user:a", limit=10**12, period=Period.MINUTE)
    windows = 3 * (COUNTER_RETENTION_MS // MINUTE)  # three days of minutes
    for _ in range(windows):
        now[0] += MINUTE
        store.reserve([Hold(per_minute, 1)], lease=30)  # never committed nor released
    kept = COUNTER_RETENTION_MS // MINUTE + PRUNE_EVERY + 1  # a day of windows, and those since a prune
    assert _count(path, "counters") <= kept
    assert _count(path, "leases") <= kept  # was one per window: 4,320
    assert _count(path, "reservations") <= (RECORD_RETENTION_MS + 30_000) // MINUTE + PRUNE_EVERY + 1
    # the live window still holds its reservation
    [status] = store.status([per_minute])
    assert status.held == 1
    store.close()


def test_pruning_keeps_the_live_windows(tmp_path: Path) -> None:
    now = [1_800_000_000_000]
    path = tmp_path / "ledger.db"
    store = SQLiteLedger(path, clock=lambda: now[0])
    daily = counter("user:a", limit=10**12, period=Period.DAY)
    total = counter("user:a", limit=10**12, unit=Unit.TOKENS, period=Period.TOTAL)
    live = store.reserve([Hold(daily, 7), Hold(total, 7)], lease=3600)
    for _ in range(2 * PRUNE_EVERY):
        store.release(store.reserve([Hold(daily, 1), Hold(total, 1)]))
    assert _count(path, "leases") == 2  # the live reservation's, on both counters
    assert store.commit(live, {Unit.USD: 5, Unit.TOKENS: 5}).state == "committed"
    assert [(s.spent, s.held) for s in store.status([daily, total])] == [(5, 0), (5, 0)]
    store.close()


def test_a_stream_left_open_does_not_lock_this_threads_writes(tmp_path: Path) -> None:
    """A report read halfway keeps its cursor open: on the connection this thread writes through, its
    read transaction made the next write fail at once ("database is locked") once another connection
    had written."""
    store = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    spec = counter("user:a", limit=10**12)
    for _ in range(3000):
        store.commit(store.reserve([Hold(spec, 1)]), {Unit.USD: 1})
    stream = store.stream_history(chunk=100)
    assert next(stream).event == "committed"

    def elsewhere() -> None:
        store.commit(store.reserve([Hold(spec, 1)]), {Unit.USD: 1})

    writer = threading.Thread(target=elsewhere)
    writer.start()
    writer.join()
    store.commit(store.reserve([Hold(spec, 1)]), {Unit.USD: 1})  # this thread, the stream still open
    assert store.status([spec])[0].spent == 3002
    assert sum(1 for _ in stream) == 2999  # the rest of its snapshot: the journal as it began
    store.close()

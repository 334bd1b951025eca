"""The in-process stores drop a counter after its window (plus retention), even one a late commit wrote
again after it was dropped (the Redis counterpart is in test_redis_retention.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from budgetguard._budgets import Period
from budgetguard._ledger import Hold, MemoryLedger, SQLiteLedger
from budgetguard._ledger._expiry import COUNTER_RETENTION_MS
from budgetguard._ledger._local import LocalLedger

from .helpers import counter

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = START + 1_000

    def __call__(self) -> int:
        return self.now


def _expiries(store: LocalLedger, *, prune: bool) -> list[int | None]:
    """When each counter the store keeps is dropped (after pruning what is due, with ``prune``)."""
    if isinstance(store, MemoryLedger):
        if prune:
            store._prune(store._clock())
        return [c.expires_at for c in store._counters.values()]
    assert isinstance(store, SQLiteLedger)
    db = store._db()
    if prune:
        store._prune(db)
    return [row[0] for row in db.execute("SELECT expires_at FROM counters")]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_late_commit_writes_its_counter_with_an_expiry(kind: str, tmp_path: Path) -> None:
    clock = Clock()
    store: LocalLedger = (
        MemoryLedger(clock=clock) if kind == "memory" else SQLiteLedger(tmp_path / "l.db", clock=clock)
    )
    minute = counter("user:late", limit=10**6, period=Period.MINUTE)
    res = store.reserve([Hold(minute, 50)], lease=COUNTER_RETENTION_MS / 1000 + 600)  # a very long call
    [held] = res.held
    assert held.window_end == START + 60_000
    clock.now = held.window_end + COUNTER_RETENTION_MS + 1  # the window's counter is dropped
    assert _expiries(store, prune=True) == []
    out = store.commit(res, {"usd": 40})  # its record lives on (until its lease ends + RECORD_RETENTION_MS)
    assert (out.expired, out.spent) == (True, (40,))
    assert _expiries(store, prune=False) == [
        held.window_end + COUNTER_RETENTION_MS
    ]  # not None: kept for good
    assert _expiries(store, prune=True) == []  # dropped again: it is past its expiry already
    store.close()

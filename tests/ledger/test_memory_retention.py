"""The memory store stays bounded: it keeps the newest resolved reservations, never a live one."""

from __future__ import annotations

import pytest

from budgetguard._budgets import Unit
from budgetguard._ledger import Hold, MemoryLedger, ReservationError

from .helpers import counter


def test_resolved_records_beyond_max_records_are_forgotten_oldest_first() -> None:
    store = MemoryLedger(max_records=100)
    spec = counter("user:a", limit=10**12)
    live = [store.reserve([Hold(spec, 1)], id=f"live-{i}", lease=600) for i in range(5)]
    for i in range(3000):  # pruning runs every 1,024 operations
        store.commit(store.reserve([Hold(spec, 2)], id=f"r-{i}"), {Unit.USD: 1})
    assert len(store._records) <= 100 + 1024 + len(live)
    assert len(store._record_expiry) == len(store._records)  # one expiry entry per record, still
    # the newest are still answered as repeats; the oldest are unknown now
    assert store.commit("r-2999", {Unit.USD: 1}).duplicate
    with pytest.raises(ReservationError, match="unknown reservation"):
        store.commit("r-0", {Unit.USD: 1})
    # live holds are never forgotten: they commit, and nothing stays held
    for res in live:
        assert not store.commit(res, {Unit.USD: 1}).duplicate
    (status,) = store.status([spec])
    assert (status.spent, status.held) == (3000 + 5, 0)


def test_the_default_bound_is_far_above_a_test_run() -> None:
    store = MemoryLedger()
    spec = counter("user:a", limit=10**12)
    for i in range(2100):
        store.commit(store.reserve([Hold(spec, 2)], id=f"r-{i}"), {Unit.USD: 1})
    assert store.commit("r-0", {Unit.USD: 1}).duplicate  # a day's retention, up to 100,000 records

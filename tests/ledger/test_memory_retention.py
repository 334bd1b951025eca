"""The memory store stays bounded: it keeps the newest resolved reservations, never a live one."""

from __future__ import annotations

import enum
import gc

import pytest

from budgetguard._budgets import Unit
from budgetguard._errors import BudgetExceededError
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


def test_what_the_store_keeps_by_the_thousand_is_not_tracked_by_the_gc() -> None:
    """Resolved and refused records and journal entries are tuples of atomic values, which a collection
    untracks (a full collection at the store's cap does not walk them); repeats still answer from them."""
    store = MemoryLedger()
    spec = counter("user:a", limit=10**6)
    other = counter("team:t", limit=10**6)
    meta = {"model": "m", "tags": ["a", "b"], "nested": {"k": (1, 2)}}
    for i in range(50):
        store.commit(store.reserve([Hold(spec, 2), Hold(other, 3)], id=f"r-{i}", meta=meta), {Unit.USD: 1})
    store.release(store.reserve([Hold(spec, 1)], id="gone"))
    with pytest.raises(BudgetExceededError):
        store.reserve([Hold(spec, 10**7)], id="refused")
    held = store.reserve([Hold(spec, 1)], id="held", lease=600)
    gc.collect()  # a tuple is untracked once its elements are: a second pass finishes nested ones
    gc.collect()
    kept = [r for k, r in store._records.items() if k != "held"]
    assert len(kept) == 52
    assert not any(gc.is_tracked(r) for r in kept)
    assert not any(gc.is_tracked(e) for e in store._entries)
    # read back as they were
    assert store.commit("r-7", {Unit.USD: 1}).duplicate
    assert (
        store.reserve([Hold(spec, 2), Hold(other, 3)], id="r-7").held
        == store.reserve([Hold(spec, 2), Hold(other, 3)], id="r-8").held
    )
    with pytest.raises(BudgetExceededError):
        store.reserve([Hold(spec, 10**7)], id="refused")
    entry = store.history()[0]
    assert entry.data == {**meta, "nested": {"k": (1, 2)}}
    assert entry.amounts == {"usd": 1}
    assert store.commit(held, {Unit.USD: 1}).state == "committed"


def test_journal_data_pickle_cannot_take_is_kept_and_the_commit_is_whole() -> None:
    """Meta that JSON takes but pickle does not (members of classes defined in a function): the commit
    charges once, its entry is journaled and reads back equal; nothing raises after the counters moved."""

    def local_values() -> tuple[enum.IntEnum, str]:
        class Tier(enum.IntEnum):
            GOLD = 3

        class Tag(str):
            pass

        return Tier.GOLD, Tag("x")

    tier, tag = local_values()
    store = MemoryLedger()
    spec = counter("user:a", limit=1000)
    reservation = store.reserve([Hold(spec, 10)], meta={"tier": tier, "tag": tag})
    assert store.commit(reservation, {Unit.USD: 5}, meta={"tag": tag}).state == "committed"
    assert store.commit(reservation, {Unit.USD: 5}).duplicate
    assert (store.status([spec])[0].spent, store.status([spec])[0].held) == (5, 0)
    (committed,) = store.history()
    assert committed.event == "committed"
    assert committed.data["tier"] == 3 and committed.data["tag"] == "x"
    committed.data["tag"] = "changed"  # a reader's copy
    assert store.history()[-1].data["tag"] == "x"

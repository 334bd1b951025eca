"""The SQLite store's shortcuts (``admit``: one guarded UPDATE per counter; ``settle_all``: a commit
without the engine's reads) hand every unusual case to the engine's general path, and what they
write reads back as the general path's would. The memory store (no shortcuts) runs the same cases."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from budgetguard._errors import BudgetExceededError
from budgetguard._ledger import Hold, Ledger, MemoryLedger, SQLiteLedger

from .helpers import counter

START = 1_800_000_000_000


@pytest.fixture(params=["sqlite", "memory"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Ledger, list[int]]]:
    now = [START]
    clock: Callable[[], int] = lambda: now[0]  # noqa: E731
    store: Ledger = (
        SQLiteLedger(tmp_path / "ledger.db", clock=clock)
        if request.param == "sqlite"
        else MemoryLedger(clock=clock)
    )
    yield store, now
    store.close()


def test_a_commit_beside_an_expired_lease_reclaims_it_first(clocked: tuple[Ledger, list[int]]) -> None:
    """Another reservation's lease on the counter has run out: the commit reclaims it (journaled
    ``expired``) and is itself within its lease (not flagged expired)."""
    store, now = clocked
    spec = counter(limit=1_000)
    store.commit(store.reserve([Hold(spec, 1)]), {"usd": 1})  # the counter's row exists
    crashed = store.reserve([Hold(spec, 300)], lease=1)
    alive = store.reserve([Hold(spec, 200)], lease=600)
    now[0] += 2_000
    out = store.commit(alive, {"usd": 150})
    assert out.state == "committed" and not out.expired and out.spent == (151,)
    events = [(e.event, e.reservation_id, e.amounts) for e in store.history()][-2:]
    assert events == [("expired", crashed.id, {"usd": 300}), ("committed", alive.id, {"usd": 150})]
    [status] = store.status([spec])
    assert (status.spent, status.held) == (151, 0)


def test_a_refusal_on_a_later_counter_gives_back_the_earlier_holds(
    clocked: tuple[Ledger, list[int]],
) -> None:
    store, _ = clocked
    user, team = counter("user:a", limit=1_000), counter("team:t", limit=100)
    store.commit(store.reserve([Hold(user, 1), Hold(team, 1)]), {"usd": 1})  # both rows exist
    with pytest.raises(BudgetExceededError) as refused:
        store.reserve([Hold(user, 50), Hold(team, 100)])
    assert str(refused.value.scope) == "team:t"
    assert [(s.spent, s.held) for s in store.status([user, team])] == [(1, 0), (1, 0)]
    admitted = store.reserve([Hold(user, 50), Hold(team, 99)])
    assert [(s.spent, s.held) for s in store.status([user, team])] == [(1, 50), (1, 99)]
    assert store.release(admitted).state == "released"


def test_an_override_is_the_limit_a_reservation_holds_under(clocked: tuple[Ledger, list[int]]) -> None:
    store, _ = clocked
    spec = counter(limit=1_000)
    store.commit(store.reserve([Hold(spec, 1)]), {"usd": 1})
    store.set_limit(spec, 10)
    with pytest.raises(BudgetExceededError):
        store.reserve([Hold(spec, 10)])  # fits the code limit, not the override
    assert store.reserve([Hold(spec, 9)]).held[0].limit == 10
    store.clear_limit(spec)
    assert store.reserve([Hold(spec, 9)]).held[0].limit == 1_000


def test_records_and_journal_are_the_json_json_dumps_writes(tmp_path: Path) -> None:
    """The SQLite store spells its JSON out; what it writes is what ``json.dumps`` writes (older
    versions and the reports read the same text)."""
    path = tmp_path / "ledger.db"
    store = SQLiteLedger(path)
    spec, other = counter('user:a\u00e9"x', limit=10**9), counter("feature:f", limit=10**9)
    meta = {"model": "gpt-4o", "n": 2}
    for holds in ([Hold(spec, 5)], [Hold(spec, 5), Hold(other, 7)]):
        held = store.reserve(holds, meta=meta)
        store.commit(held, {"usd": 6})
        store.release(store.reserve(holds))
    store.reserve([Hold(spec, 1), Hold(other, 2)], meta=meta, lease=600)  # (a held record, spelled out too)
    store.close()
    with sqlite3.connect(path) as db:
        records = [r for (r,) in db.execute("SELECT record FROM reservations")]
        journal = db.execute("SELECT scopes, amounts, data FROM journal").fetchall()
    db.close()
    assert len(records) == 5 and len(journal) == 4
    for text in records:
        assert text == json.dumps(json.loads(text))
    for scopes, amounts, data in journal:
        assert scopes == json.dumps(json.loads(scopes))
        assert amounts == json.dumps(json.loads(amounts))
        assert data == json.dumps(json.loads(data), sort_keys=True)

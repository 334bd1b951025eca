"""Stores whose journal dropped its oldest entries, for the coverage tests.

How each store drops entries: memory keeps the newest ``journal_maxlen`` (a deque), Redis about the
newest ``journal_maxlen`` (``XADD MAXLEN ~``, in whole stream nodes of 100), SQLite the last
``journal_retention_days`` days (pruned every 512 operations; its clock is injected here), PostgreSQL
too (its clock is the server's: the entries are made older here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from budgetguard._budgets import Unit
from budgetguard._ledger import Hold, JournalEntry, Ledger, SQLiteLedger, open_ledger
from budgetguard._ledger._local import wall_clock_ms
from tests.postgres_server import age

from .helpers import counter

SPEC = counter("user:alice", limit=10**15)
DAY = 86_400_000
PRUNE_EVERY = 512  # operations between two prunes of an SQLite ledger


@dataclass
class Trimmed:
    store: Ledger
    url: str
    written: dict[str, JournalEntry] = field(default_factory=dict)
    """Every entry the journal ever showed, by reservation id, oldest first."""

    def fill(self, n: int, store: Ledger | None = None) -> None:
        fill(store or self.store, n, self.written)


def fill(store: Ledger, n: int, seen: dict[str, JournalEntry] | None = None) -> None:
    """``n`` commits (one journal entry each); ``seen`` collects the journal after each of them."""
    for _ in range(n):
        store.commit(store.reserve([Hold(SPEC, 10)], meta={"model": "gpt-4o-mini"}), {Unit.USD: 7})
        if seen is not None:
            for entry in store.history():
                seen.setdefault(entry.reservation_id, entry)


@contextlib.contextmanager
def trimmed_store(store_url: str, tmp_path: Path) -> Iterator[Trimmed]:
    """A store of ``store_url``'s kind whose journal dropped its oldest entries."""
    if store_url.startswith("memory://"):
        with open_ledger("memory://?journal_maxlen=5") as store:
            trimmed = Trimmed(store, "memory://?journal_maxlen=5")
            trimmed.fill(20)
            yield trimmed
    elif store_url.startswith("sqlite://"):
        path = tmp_path / "ledger.db"
        with SQLiteLedger(path, clock=lambda: wall_clock_ms() - 3 * DAY) as old, \
                SQLiteLedger(path, journal_retention_days=1) as store:  # fmt: skip
            trimmed = Trimmed(store, store.url)
            trimmed.fill(10, old)  # three days ago
            trimmed.fill(PRUNE_EVERY // 2)  # 512 operations: one prune, which drops the old entries
            yield trimmed
    elif store_url.startswith("postgresql://"):
        url = f"{store_url}&journal_retention_days=1"
        with open_ledger(url) as store:
            trimmed = Trimmed(store, url)
            fill(store, 10)
            age(url, store.namespace, 3 * DAY)  # (the server's clock cannot be set: the entries are aged)
            trimmed.fill(PRUNE_EVERY // 2 - 10)  # 512 operations: one prune, which drops the old entries
            yield trimmed
    else:
        url = f"{store_url}&journal_maxlen=5"
        with open_ledger(url) as store:
            trimmed = Trimmed(store, url)
            trimmed.fill(150)
            yield trimmed

"""The journal is bounded on every store; ``journal_complete_since`` says since when it is complete, and
the report API says when an asked range starts before that (issue 13, item 9). The command line's
warnings are in test_report_coverage.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from budgetguard._ledger import AsyncLedger, Ledger, MemoryLedger, SQLiteLedger, open_async_ledger
from budgetguard._ledger._local import AsyncLocalLedger
from budgetguard._report import read_journal, report

from .trimming import DAY, PRUNE_EVERY, Trimmed, fill, trimmed_store


@pytest.fixture
def trimmed(store_url: str, tmp_path: Path) -> Iterator[Trimmed]:
    with trimmed_store(store_url, tmp_path) as found:
        yield found


async def _async_complete_since(store_url: str, store: Ledger) -> datetime | None:
    """What the async twin of ``store`` says (memory: the same store, wrapped)."""
    if isinstance(store, MemoryLedger):
        return await AsyncLocalLedger(store, in_thread=False).journal_complete_since()
    twin: AsyncLedger = open_async_ledger(store.url if isinstance(store, SQLiteLedger) else store_url)
    try:
        return await twin.journal_complete_since()
    finally:
        await twin.aclose()


async def test_a_journal_that_never_dropped_an_entry_is_complete(store_url: str, ledger: Ledger) -> None:
    assert ledger.journal_complete_since() is None
    fill(ledger, 3)
    assert ledger.journal_complete_since() is None
    assert await _async_complete_since(store_url, ledger) is None


async def test_complete_since_bounds_what_the_journal_dropped(store_url: str, trimmed: Trimmed) -> None:
    store, written = trimmed.store, list(trimmed.written.values())
    since = store.journal_complete_since()
    assert since is not None
    kept = store.history()
    assert 0 < len(kept) < len(written)
    assert kept == written[-len(kept) :]  # the oldest went, nothing else
    dropped = written[: -len(kept)]
    assert all(entry.time < since for entry in dropped)  # every entry from it on is kept
    assert since <= kept[0].time + timedelta(milliseconds=1)  # and it is no later than the oldest kept
    assert await _async_complete_since(store_url, store) == since


def test_sqlite_is_complete_since_its_retention_cutoff(tmp_path: Path) -> None:
    now = [1_800_000_000_000]
    path = tmp_path / "ledger.db"
    with SQLiteLedger(path, clock=lambda: now[0], journal_retention_days=2) as store:
        fill(store, 3)
        now[0] += 2 * DAY + 1
        fill(store, PRUNE_EVERY // 2)
        cutoff = now[0] - 2 * DAY
        assert store.journal_complete_since() == datetime.fromtimestamp(cutoff / 1000, UTC)
        assert len(store.history()) == PRUNE_EVERY // 2
    with SQLiteLedger(path, namespace="other") as other:  # a namespace has its own journal
        assert other.journal_complete_since() is None


def test_the_report_api_says_when_the_range_is_not_covered(trimmed: Trimmed) -> None:
    store = trimmed.store
    since = store.journal_complete_since()
    assert since is not None
    week = read_journal(store, since=datetime.now(UTC) - timedelta(days=7))
    assert week.incomplete and week.complete_since == since
    warning = week.warning("report")
    assert warning is not None and "the journal covers only from" in warning
    assert "spend before that is not in this report" in warning
    shown = datetime.strptime(warning.split("from ")[1].split(";")[0], "%Y-%m-%d %H:%M:%S UTC")
    assert since <= shown.replace(tzinfo=UTC) < since + timedelta(seconds=1)  # (rounded up)
    rows, total = report(week.entries, "user")
    assert total.calls == len(store.history()) and [r.key for r in rows] == ["alice"]
    covered = read_journal(store, since=since)
    assert not covered.incomplete and covered.warning() is None
    assert read_journal(store, since=None).incomplete  # all of it: not all there
    naive = read_journal(store, since=since.replace(tzinfo=None))  # (a time without a zone is UTC)
    assert not naive.incomplete and naive.entries == covered.entries


def test_the_report_api_has_no_warning_when_nothing_was_dropped(ledger: Ledger) -> None:
    fill(ledger, 3)
    journal = read_journal(ledger, since=None)
    assert journal.complete_since is None and not journal.incomplete and journal.warning() is None
    assert len(journal.entries) == 3

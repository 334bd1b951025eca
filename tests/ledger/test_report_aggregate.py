"""Reports aggregated in the store (SQLite: ``GROUP BY`` over the journal's report columns) or streamed
(memory, Redis: ``Ledger.stream_history`` in chunks) give exactly the numbers of the plain Python
report over the whole list of entries, on every store (issue 17)."""

from __future__ import annotations

import csv
import io
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from budgetguard._budgets import Unit
from budgetguard._calibration import Ratios
from budgetguard._cli import cli
from budgetguard._errors import BudgetExceededError
from budgetguard._export import EXPORT_FIELDS, export_row
from budgetguard._ledger import JournalEntry, Ledger, SQLiteLedger, open_ledger
from budgetguard._ledger._postgres import PostgresLedger
from budgetguard._ledger._types import to_datetime
from budgetguard._report import RatioSample, read_journal, report, summarize
from tests import postgres_server
from tests.postgres_server import with_options

from .helpers import counter, hold

ODD_USER = 'o\'brien "x" :colon, ünï'
ODD_FEATURE = "a:b c'd"
GROUPINGS = ("user", "feature", "team", "scope", "model", "function", "day", "global", "nothing")


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh store that aggregates reports in SQL."""
    if request.param == "sqlite":
        with SQLiteLedger(tmp_path / "ledger.db") as store:
            yield store
        return
    url = request.getfixturevalue("postgres_url")
    ns = "r" + secrets.token_hex(6)
    with open_ledger(with_options(url, namespace=ns)) as store:
        yield store
    postgres_server.delete_namespace(url, ns)


def test_postgres_reads_entries_with_a_nul_in_python(postgres_url: str) -> None:
    """A model or scope holding a NUL (which a PostgreSQL text cannot) is journaled all the same, and
    the report reads those entries in Python, with the same numbers."""
    ns = "r" + secrets.token_hex(6)
    with open_ledger(with_options(postgres_url, namespace=ns)) as store:
        spec = counter("user:nul\0id", 10**12, Unit.USD)
        for model in ("gpt\0x", "gpt-4o"):
            meta = {"model": model, "estimated_usd": "0.000002", "scopes": ["global", "user:nul\0id"]}
            store.commit(store.reserve([hold(spec, 2000)], meta=meta), {"usd": 1000})
        assert store.aggregate_journal(None, None, None, "model") is None
        assert store.aggregate_journal(None, None, "user:nul\0id", "model") is None
        for by in ("model", "user", "scope"):
            _same(store, by, since=None)
            _same(store, by, since=None, scope="user:nul\0id")
        assert {e.model for e in store.history()} == {"gpt\0x", "gpt-4o"}
    postgres_server.delete_namespace(postgres_url, ns)


def _write(ledger: Ledger) -> None:
    """A journal of commits (several units, estimates with tied and odd ratios, a job line of 3 calls,
    a call without a USD budget), refusals, releases and calls on scopes with odd characters."""
    users = ["alice", "bob", ODD_USER, "user:nested"]
    for i in range(24):
        user = users[i % len(users)]
        scopes = ["global", f"user:{user}", f"feature:{ODD_FEATURE if i % 3 == 0 else 'search'}"]
        if i % 5 == 0:
            scopes.append("team")  # a scope without a colon
        units = [Unit.USD, Unit.TOKENS] if i % 4 else [Unit.USD, Unit.TOKENS, Unit.REQUESTS]
        if i % 7 == 6:
            units = [Unit.TOKENS]  # no USD budget: the cost is in the data
        holds = [hold(counter(f"user:{user}", 10**12, unit), 500 + i) for unit in units]
        estimate = (1000, 1500, 2000, 3000)[i % 4]
        meta = {"model": ("gpt-4o", "claude", "")[i % 3], "scopes": scopes, "attempt": 1,
                "estimated_usd": f"0.00000{estimate}" if i % 6 else "not-a-number"}  # fmt: skip
        if i % 4:
            meta["function"] = f"app.{'chat' if i % 2 else 'search'}"
        reservation = ledger.reserve(holds, meta=meta)
        if i % 8 == 3:
            ledger.release(reservation, meta={"reason": "cancelled"})
            continue
        cost = estimate // 2 if i % 2 else estimate  # ratios 1/2 and 1: many ties
        actual = {unit.value: cost if unit is Unit.USD else 100 + i for unit in units}
        usage = {"input_tokens": 40 + i, "output_tokens": 7 + i, "cache_read_tokens": i}
        commit_meta = {"usage": usage, "cost_nano": cost}
        if i % 9 == 0:
            commit_meta["calls"] = 3  # a job's line
        ledger.commit(reservation, actual, meta=commit_meta)
        time.sleep(0.002)  # (distinct milliseconds: the time-range edges below)
    tight = counter("user:alice", 10, Unit.USD)
    for i in range(3):
        with pytest.raises(BudgetExceededError):
            ledger.reserve(
                [hold(tight, 11 + i)], meta={"model": "gpt-4o", "scopes": ["user:alice", "global"]}
            )


def _same(ledger: Ledger, by: str, **window: object) -> None:
    entries = read_journal(ledger, **window).entries  # type: ignore[arg-type]
    rows, total = report(entries, by)
    summary = summarize(ledger, by, **window)  # type: ignore[arg-type]
    assert [r.as_dict() for r in summary.rows] == [r.as_dict() for r in rows], by
    assert summary.total.as_dict() == total.as_dict(), by


def test_the_store_aggregate_equals_the_python_report(ledger: Ledger) -> None:
    _write(ledger)
    entries = ledger.history()
    events = {e.event for e in entries}
    assert {"committed", "refused", "released"} <= events
    if isinstance(ledger, SQLiteLedger | PostgresLedger):  # (in SQL, not read in Python)
        assert ledger.aggregate_journal(None, None, None, "user") is not None
        for scope in (f"user:{ODD_USER}", "global", f"feature:{ODD_FEATURE}", "user:nobody"):
            assert ledger.aggregate_journal(None, None, scope, "model") is not None
    for by in GROUPINGS:
        _same(ledger, by, since=None)
    _, total = report(entries, "user")
    assert total.refused == 3 and total.calls > 20 and total.calibration is not None
    for scope in (f"user:{ODD_USER}", "global", f"feature:{ODD_FEATURE}", "user:nobody"):
        for by in ("user", "model", "scope"):
            _same(ledger, by, since=None, scope=scope)
    # time-range edges: since includes the entry at its millisecond, until excludes it
    times = sorted({e.ts for e in entries})
    for since, until in (
        (times[3], times[-4]),
        (times[0], times[1]),
        (times[5], times[5]),
        (times[-1], None),
    ):
        for by in ("user", "day", "model"):
            _same(ledger, by, since=to_datetime(since), until=None if until is None else to_datetime(until))
    assert summarize(ledger, "user", since=to_datetime(times[-1]) + timedelta(days=1)).rows == []


def test_streamed_history_pages_through_the_whole_range(ledger: Ledger) -> None:
    _write(ledger)
    everything = ledger.history()
    streamed = list(ledger.stream_history())
    paged = list(Ledger.stream_history(ledger, chunk=2))  # the public paging of ``history``, in pairs
    assert streamed == everything and paged == everything
    middle = to_datetime(everything[len(everything) // 2].ts)
    assert list(Ledger.stream_history(ledger, since=middle, chunk=3)) == ledger.history(since=middle)


def test_export_is_written_row_by_row_as_before(store_url: str, tmp_path: Path) -> None:
    with open_ledger(store_url) as ledger:  # (an SQLite file must exist for a read command)
        empty = CliRunner().invoke(cli, ["--url", store_url, "export", "--format", "jsonl"])
        assert empty.exit_code == 0 and empty.stdout == "\n"
        nothing = CliRunner().invoke(cli, ["--url", store_url, "export"])
        header = ",".join(EXPORT_FIELDS[:3] + EXPORT_FIELDS[4:]) + "\n"  # (no call: no scope column)
        assert nothing.exit_code == 0 and nothing.stdout == header
        _write(ledger)
        rows = [export_row(e) for e in ledger.history()]
    if store_url == "memory://":
        return  # (each memory:// URL is a new store: the command line sees none of this)
    as_csv = CliRunner().invoke(cli, ["--url", store_url, "export", "--since", "1d"])
    assert as_csv.exit_code == 0 and as_csv.stdout == _export_csv(rows)
    as_jsonl = CliRunner().invoke(cli, ["--url", store_url, "export", "--since", "1d", "--format", "jsonl"])
    assert as_jsonl.stdout == "".join(json.dumps(r) + "\n" for r in rows)
    out = tmp_path / "export.csv"
    to_file = CliRunner().invoke(cli, ["--url", store_url, "export", "--since", "1d", "-o", str(out)])
    assert to_file.exit_code == 0 and out.read_text() == _export_csv(rows)


def _export_csv(rows: list[dict[str, object]]) -> str:
    """The CSV export of ``rows`` (``export_row``'s): a column per scope kind of ``_write``'s calls,
    each cell the call's id of that kind (the label for ``team``, which has none)."""
    names = ["scope_global", "scope_user", "scope_feature", "scope_team"]
    out = io.StringIO()
    writer = csv.DictWriter(out, [*EXPORT_FIELDS[:3], *names, *EXPORT_FIELDS[4:]], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {}
        for label in row["scopes"]:  # type: ignore[attr-defined]
            kind, colon, ident = label.partition(":")
            cells[f"scope_{kind}"] = ident if colon else label
        shown = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items() if k != "scopes"}
        writer.writerow({**shown, **cells})
    return out.getvalue()


# -- SQLite: the report columns, their migration, and what only Python reads --------------------------

_OLD_JOURNAL = """
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, event TEXT NOT NULL,
    res_id TEXT NOT NULL, scopes TEXT NOT NULL, amounts TEXT NOT NULL, data TEXT NOT NULL
) STRICT;
CREATE INDEX journal_by_time ON journal (ts);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
INSERT INTO meta VALUES ('schema', 1);
"""
_OLD_INSERT = "INSERT INTO journal (ts, event, res_id, scopes, amounts, data) VALUES (?, ?, ?, ?, ?, ?)"


def _old_rows(source: Ledger) -> list[tuple[object, ...]]:
    return [(e.ts, e.event, e.reservation_id, json.dumps(list(e.scopes)), json.dumps(dict(e.amounts)),
             json.dumps(dict(e.data), sort_keys=True)) for e in source.history()]  # fmt: skip


def test_a_journal_made_before_the_report_columns_is_migrated(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "source.db") as source:
        _write(source)
        rows = _old_rows(source)
        expected = {by: report(source.history(), by) for by in GROUPINGS}
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD_JOURNAL)
    db.executemany(_OLD_INSERT, rows[:-5])
    db.commit()
    unfilled = "SELECT count(*) FROM journal WHERE r_calls IS NULL"
    with SQLiteLedger(path) as store:  # the migration: the columns added (filled by the first report)
        columns = {r[1] for r in store._db().execute("PRAGMA table_info(journal)")}
        assert {"r_calls", "r_cost", "r_estimate", "r_scopes"} <= columns
        assert store._db().execute(unfilled).fetchone()[0] == len(rows) - 5
        db.executemany(_OLD_INSERT, rows[-5:])  # an older process still writes: rows without the columns
        db.commit()
        assert store._db().execute(unfilled).fetchone()[0] == len(rows)
        for by in GROUPINGS:
            found = summarize(store, by, since=None)
            want_rows, want_total = expected[by]
            assert [r.as_dict() for r in found.rows] == [r.as_dict() for r in want_rows], by
            assert found.total.as_dict() == want_total.as_dict()
            assert found.total.distribution is not None  # (aggregated in SQL, not streamed)
        assert store._db().execute(unfilled).fetchone()[0] == 0
    db.close()
    with SQLiteLedger(path) as again:  # opened again: nothing to migrate
        assert again.history() == SQLiteLedger(tmp_path / "source.db").history()


def test_entries_sql_cannot_read_are_reported_in_python(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "ledger.db") as store:
        _write(store)
        assert store.aggregate_journal(None, None, None, "user") is not None
        c = counter("user:carol", 2**62, Unit.USD)
        big = store.reserve([hold(c, 2**54)], meta={"estimated_usd": "30000000"})  # 2**54 nano > 2**53
        store.commit(big, {"usd": 2**54 + 1})
        # past 2**53 a float no longer holds the amounts, but the store hands them over as ints: in SQL
        assert store.aggregate_journal(None, None, None, "user") is not None
        _same(store, "user", since=None)
        _same(store, "model", since=None)
        assert summarize(store, "user", since=None).total.distribution is not None
        odd = store.reserve([hold(c, 1)], meta={"usage": {"input_tokens": "many"}})  # a usage no report reads
        store.release(odd)
        assert store._db().execute("SELECT count(*) FROM journal WHERE r_calls = -1").fetchone()[0] == 1
        assert store.aggregate_journal(None, None, None, "user") is not None  # (a release: not reported)
        odd = store.reserve([hold(c, 1)], meta={"usage": {"input_tokens": "many"}})
        store.commit(odd, {"usd": 1})
        assert store._db().execute("SELECT count(*) FROM journal WHERE r_calls = -1").fetchone()[0] == 2
        assert store.aggregate_journal(None, None, None, "user") is None
        since = to_datetime(store.history()[-1].ts + 1)
        assert store.aggregate_journal(store.history()[-1].ts + 1, None, None, "user") is not None
        assert summarize(store, "user", since=since).rows == []


def test_the_ratio_distribution_orders_equal_floats_exactly() -> None:
    big = 2**60
    pairs = [(big + 2, big), (1, 1), (big + 1, big), (3, 4), (big + 3, big)]  # four ratios are the float 1.0
    sample = RatioSample()
    for actual, estimate in pairs:
        sample.add(actual, estimate)
    assert sample.ratios() == Ratios.of(Fraction(a, e) for a, e in pairs)
    assert sample.ratios() == Ratios(
        5, Fraction(big + 1, big), Fraction(big + 3, big), Fraction(big + 3, big)
    )
    assert list(sample) == [Fraction(a, e) for a, e in pairs]
    huge = RatioSample()
    huge.add(2**70, 3)  # beyond int64: kept as plain ints
    huge.add(1, 2)
    assert huge.ratios() == Ratios.of([Fraction(2**70, 3), Fraction(1, 2)])


def test_an_entry_is_one_journal_entry_either_way(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "ledger.db") as store:
        _write(store)
        listed = store.history()
        assert all(isinstance(e, JournalEntry) for e in listed)
        assert list(store.stream_history(chunk=1)) == listed


def test_the_store_distribution_is_exact_at_ties_and_bucket_edges(sql_store: Ledger) -> None:
    """Ratios exactly on k / 64 (the edges of an earlier histogram), just off them, tied floats of distinct
    exact ratios (near 2**52), equal ratios of different amounts, and a key whose ranks fall in one
    bucket: the store's distributions equal the Python report's."""
    edge = 2**52
    pairs = [(k, 64) for k in range(0, 130, 7)]  # on the edges (and 0, and above 1)
    pairs += [(64 * k - 1, 64 * 64) for k in range(1, 8)] + [(64 * k + 1, 64 * 64) for k in range(1, 8)]
    pairs += [(edge + i, edge + i + 1) for i in range(48)]  # floats equal, exact ratios not
    pairs += [(edge - 1, edge), (edge, edge + 1), (1, 2), (2, 4), (500, 1000), (3, 3), (9, 3)]
    store = sql_store
    c = counter("user:carol", 2**62, Unit.USD)
    for i, (actual, estimate) in enumerate(pairs * 2):
        estimated = str(Decimal(estimate) / 10**9)
        user = ("carol", "dave", "erin")[i % 3] if i < len(pairs) else "frank"
        meta = {
            "estimated_usd": estimated,
            "model": ("a", "b")[i % 2],
            "scopes": [f"user:{user}", "global"],
        }
        reservation = store.reserve([hold(c, estimate)], meta=meta)
        store.commit(reservation, {"usd": actual})
    assert store.aggregate_journal(None, None, None, "user") is not None  # (in SQL)
    for by in ("user", "model", "scope", "day", "global"):
        _same(store, by, since=None)
    found = summarize(store, "user", since=None)
    assert found.total.distribution == Ratios.of(Fraction(a, e) for a, e in pairs * 2)


def test_counts_beyond_int64_are_stored_and_reported_as_python_adds_them(sql_store: Ledger) -> None:
    """A journal entry whose counts no SQL integer holds (a corrupt usage, a huge ``calls``) is written
    all the same (the commit is not rolled back), and the report adds it exactly."""
    ledger = sql_store
    spec = counter("user:a", limit=10**12)
    for meta in ({"calls": 2**63}, {"usage": {"input_tokens": 2**63}}, {"calls": 2**62}, {"calls": 2**62}):
        ledger.commit(ledger.reserve([hold(spec, 1)]), {Unit.USD: 1}, meta=meta)
    assert ledger.status([spec])[0].spent == 4
    for by in ("scope", "user", "model"):
        _same(ledger, by, since=None)
    ledger.close()


def test_routed_shadow_and_admin_entries_are_summed_as_python_reads_them(ledger: Ledger) -> None:
    """Refusals routed to a fallback, shadow refusals and administration entries (not calls): each
    store's SQL agrees with the Python report (PostgreSQL once failed on SQLite's ``json_extract``)."""
    tight = counter("user:alice", 10, Unit.USD)
    for i, fallback in enumerate(("gpt-4o-mini", None, "")):
        meta: dict[str, object] = {"model": "gpt-4o", "scopes": ["user:alice"]}
        if fallback is not None:
            meta["fallback"] = fallback
        with pytest.raises(BudgetExceededError):
            ledger.reserve([hold(tight, 11 + i)], meta=meta)
    shadowed = ledger.reserve([hold(tight, 50)], enforce="shadow", meta={"model": "gpt-4o"})
    ledger.commit(shadowed, {"usd": 40}, meta={"cost_nano": 40})
    ledger.adjust(tight, 500, actor="ops", reason="a charge")
    if isinstance(ledger, SQLiteLedger | PostgresLedger):  # (in SQL, not read in Python)
        found = ledger.aggregate_journal(None, None, None, "model")
        assert found is not None
        assert (found.total.refused, found.total.routed, found.total.shadow_refused) == (3, 2, 1)
        assert found.total.cost_nano == 40  # (the adjustment is no call)
    for by in ("model", "user", "day"):
        _same(ledger, by, since=None)
    _, total = report(read_journal(ledger, since=None).entries, "model")
    assert (total.refused, total.routed) == (3, 2)

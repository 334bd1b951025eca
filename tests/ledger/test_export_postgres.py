"""The export PostgreSQL renders in SQL (``_ledger._postgres_export``) is byte for byte the one
``export_row`` and its writers make of the same entries (issue 17), as ``test_export_sql`` holds SQLite's:
the same odd entries, chunks with rows Python renders in place, and any rows Hypothesis makes."""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetguard._export import export_text, streamed_text
from budgetguard._ledger import _postgres_export, open_ledger
from budgetguard._ledger._postgres_tx import JOURNAL, ODD_ROW
from budgetguard._ledger._sqlite import journal_row
from budgetguard._ledger._sqlite_report import COLUMNS
from budgetguard._ledger._types import JournalEntry
from tests.ledger.test_export_sql import _ROW, NOW, ODD_TEXTS, _entries, _layout, assert_ranges
from tests.postgres_server import delete_namespace, with_options

_INSERT = (
    f"INSERT INTO {JOURNAL} (ns, ts, event, res_id, scopes, amounts, data, {', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * (7 + len(COLUMNS)))})"
)


@pytest.fixture
def store(postgres_url: str) -> Iterator[Any]:
    namespace = "x" + secrets.token_hex(6)
    ledger = open_ledger(with_options(postgres_url, namespace=namespace))
    try:
        yield ledger
    finally:
        ledger.close()
        delete_namespace(postgres_url, namespace)


def _put(store: Any, rows: list[tuple[Any, ...]]) -> None:
    """``rows`` (``journal_row``'s) in the store's journal, as ``PgTx.journal`` writes them (a row whose
    report texts hold a NUL without its report columns)."""
    with store._pool.connection() as conn, conn.cursor() as cur:
        for row in rows:
            if any(type(v) is str and "\0" in v for v in row[6:]):
                row = (*row[:6], *ODD_ROW)
            cur.execute(_INSERT, (store.namespace, *row))


def _in_sql(store: Any, fmt: str) -> tuple[int, int]:
    """Lines the export made in SQL, and entries it gave Python to render."""
    pieces = list(store.export_journal(-(2**62), 2**62, fmt, _layout if fmt == "csv" else None))
    lines = sum(_count(p, fmt) for p in pieces if isinstance(p, str))
    return lines, sum(isinstance(p, JournalEntry) for p in pieces)


def _count(text: str, fmt: str) -> int:
    """The records in ``text`` (a CSV field may hold a line break)."""
    return len(list(csv.reader(io.StringIO(text)))) if fmt == "csv" else text.count("\n")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize(("chunk", "sparse"), [(8192, 4), (3, 4), (8192, 0)])
def test_postgres_export_is_the_python_export_byte_for_byte(
    store: Any, fmt: str, chunk: int, sparse: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chunks of 3 seq values: lines joined in SQL beside chunks with a row Python renders, in seq order;
    # sparse 0: the range read row by row (as one spread among other namespaces' rows is)
    monkeypatch.setattr(_postgres_export, "CHUNK", chunk)
    monkeypatch.setattr(_postgres_export, "SPARSE", sparse)
    rows = _entries()
    _put(store, rows)
    expected = "".join(streamed_text(store, since=None, fmt=fmt))  # (entry by entry, in Python)
    assert "".join(export_text(store, since=None, fmt=fmt)) == expected
    assert _count(expected, fmt) == len(rows) + (fmt == "csv")
    in_sql, in_python = _in_sql(store, fmt)  # (most lines made in SQL: not Python against itself)
    assert in_sql >= 20 + (fmt == "csv") and in_sql + in_python == len(rows) + (fmt == "csv")
    if fmt == "csv":
        odd = [line for line in expected.splitlines() if ",refused," in line]
        assert len(odd) == len(ODD_TEXTS)


def test_a_range_and_an_empty_one(store: Any) -> None:
    _put(store, _entries())
    assert_ranges(store)


def test_a_range_spread_among_other_namespaces_rows_is_read_row_by_row(
    postgres_url: str, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of another namespace between this one's (its rows spread over 5 times as many ``seq``
    values): read row by row through the ``(ns, ts)`` index, each line still made in SQL, not in chunks
    that would scan the other rows too."""
    other = open_ledger(with_options(postgres_url, namespace=store.namespace + "o"))
    try:
        for row in _entries():
            _put(other, [row] * 4)
            _put(store, [row])
        monkeypatch.setattr(_postgres_export, "_chunks", None)  # (not called)
        for fmt in ("csv", "jsonl"):
            got = "".join(export_text(store, since=None, fmt=fmt))
            assert got == "".join(streamed_text(store, since=None, fmt=fmt))
        assert _in_sql(store, "jsonl")[0] >= 20
    finally:
        other.close()
        delete_namespace(postgres_url, store.namespace + "o")


@pytest.mark.parametrize("ident", ["a\0b", "a\udc80b"])
def test_a_scope_id_text_cannot_hold_is_rendered_in_python(store: Any, ident: str) -> None:
    """A scope id holding a NUL or a lone surrogate (kept escaped in the journal's JSON): its CSV cells,
    which PostgreSQL's text cannot hold, are rendered in Python, the other rows in SQL."""
    labels = ["global", f"user:{ident}", "feature:ünï"]
    calls = [labels[:1], labels, labels[::2]]
    rows = [
        journal_row(NOW + i, "committed", f"r{i}", calls[i], {"usd": 5}, {"scopes": calls[i]})
        for i in range(3)
    ]
    _put(store, rows)
    got = "".join(export_text(store, since=None, fmt="csv"))
    assert got == "".join(streamed_text(store, since=None, fmt="csv")) and ident in got
    assert _in_sql(store, "csv") == (3, 1)


_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_SETTINGS
@given(
    rows=st.lists(_ROW, min_size=1, max_size=12),
    chunk=st.sampled_from([2, 8192]),
    sparse=st.sampled_from([0, 4]),
)
def test_any_rows_export_in_sql_as_in_python(
    store: Any, rows: list[tuple[Any, ...]], chunk: int, sparse: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of any time, cost (every shape ``str(Decimal)`` gives), text and scopes: PostgreSQL's lines
    are Python's, byte for byte, in both formats, in chunks and row by row."""
    monkeypatch.setattr(_postgres_export, "CHUNK", chunk)
    monkeypatch.setattr(_postgres_export, "SPARSE", sparse)
    entries = []
    for i, (ts, event, cost, text, labels, flags) in enumerate(rows):
        data = {"model": text, "function": text, "estimated_usd": text, "attempt": i, "scopes": labels,
                "usage": {"input_tokens": i, "output_tokens": 2 * i}, "cost_nano": cost, **flags}  # fmt: skip
        res_id = f"r{i}{text}".replace("\0", "")  # (an id PostgreSQL's text cannot hold is never written)
        entries.append(journal_row(ts, event, res_id, labels[:1], {"usd": cost}, data))
    with store._pool.connection() as conn:
        conn.execute(f"DELETE FROM {JOURNAL} WHERE ns = %s", (store.namespace,))
    _put(store, entries)
    for fmt in ("csv", "jsonl"):
        assert "".join(export_text(store, since=None, fmt=fmt)) == "".join(
            streamed_text(store, since=None, fmt=fmt)
        )


def test_a_row_without_its_facts_has_its_call_scopes_in_the_csv_columns(store: Any) -> None:
    """A row PostgreSQL keeps without its report columns (a NUL in its model) whose call scopes are more
    than its charged ones: the CSV's columns come from its data, as in the Python export."""
    data = {"model": "m\0", "scopes": ["global", "team:t", "user:u"]}
    rows = [journal_row(NOW, "committed", "r0", ["global"], {"usd": 5}, data),
            journal_row(NOW + 1, "committed", "r1", ["global"], {"usd": 5}, {"model": "m"})]  # fmt: skip
    _put(store, rows)
    got = "".join(export_text(store, since=None, fmt="csv"))
    assert got == "".join(streamed_text(store, since=None, fmt="csv"))
    assert got.startswith("time,event,reservation_id,scope_global,scope_user,scope_team,")
    assert _in_sql(store, "csv") == (2, 1)


def test_the_session_s_time_zone_changes_nothing(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Times are UTC whatever the connection's ``TimeZone`` (here +05:30, through libpq's ``PGTZ``)."""
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")
    namespace = "x" + secrets.token_hex(6)
    store = open_ledger(with_options(postgres_url, namespace=namespace))
    try:
        with store._pool.connection() as conn:
            assert conn.execute("SHOW timezone").fetchone() == ("Asia/Kolkata",)
        _put(store, _entries())
        for fmt in ("csv", "jsonl"):
            got = "".join(export_text(store, since=None, fmt=fmt))
            assert got == "".join(streamed_text(store, since=None, fmt=fmt)) and "+00:00" in got
        assert _in_sql(store, "jsonl")[0] >= 20
    finally:
        store.close()
        delete_namespace(postgres_url, namespace)


def test_lists_past_those_the_server_is_given_are_rendered_in_python(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is given the cells of at most ``CELLS_SENT`` lists of scopes (a range of a million
    users' calls holds as many): a row of another list is rendered in Python, in its place."""
    monkeypatch.setattr(_postgres_export, "CELLS_SENT", 2)
    scopes = [["global", f"user:u{i % 5}"] for i in range(10)]
    rows = [
        journal_row(NOW + i, "committed", f"r{i}", s, {"usd": 5}, {"model": "m"})
        for i, s in enumerate(scopes)
    ]
    _put(store, rows)
    got = "".join(export_text(store, since=None, fmt="csv"))
    assert got == "".join(streamed_text(store, since=None, fmt="csv"))
    assert _in_sql(store, "csv") == (1 + 4, 6)  # (the header, two lists' four rows; three lists' six)


def test_costs_are_exact_without_standard_conforming_strings(postgres_url: str) -> None:
    """A server whose sessions read backslashes in plain literals as escapes: a scientific cost (2.5E-7)
    came out as control characters (a review)."""
    namespace = "x" + secrets.token_hex(6)
    url = with_options(postgres_url, namespace=namespace, options="-cstandard_conforming_strings=off")
    ledger = open_ledger(url)
    try:
        rows = [journal_row(NOW + i, "committed", f"r{i}", ["global"], {"usd": usd}, {"model": "m"})
                for i, usd in enumerate([250, 120_000_000_000, 1_500])]  # fmt: skip
        _put(ledger, rows)
        for fmt in ("csv", "jsonl"):
            got = "".join(export_text(ledger, since=None, fmt=fmt))
            assert got == "".join(streamed_text(ledger, since=None, fmt=fmt))
            assert "2.5E-7" in got and "1.2E+2" in got
    finally:
        ledger.close()
        delete_namespace(postgres_url, namespace)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_attempt_or_estimate_given_as_none_and_a_large_row_are_rendered_in_python(
    store: Any, fmt: str
) -> None:
    """JSON shows an attempt or estimate given as None as null (SQL's line wrote ""), and a row whose texts
    pass 8 KB is rendered in Python (a chunk of 8,192 such lines passed PostgreSQL's 1 GB string)."""
    datas = [{"attempt": None}, {"estimated_usd": None}, {"note": "x" * 9000}, {}]
    rows = [
        journal_row(NOW + i, "committed", f"r{i}", ["global"], {"usd": 5}, {"model": "m", **data})
        for i, data in enumerate(datas)
    ]
    _put(store, rows)
    got = "".join(export_text(store, since=None, fmt=fmt))
    assert got == "".join(streamed_text(store, since=None, fmt=fmt))
    assert _in_sql(store, fmt) == (1 + (fmt == "csv"), 3)

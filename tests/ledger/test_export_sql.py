"""The export SQLite renders in SQL (``_ledger._sqlite_export``) is byte for byte the one ``export_row``
and its writers make of the same entries (issue 17), for entries with odd data, on old rows filled on
first use too; the scopes' CSV columns and JSON list (issue 19)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetguard._export import csv_layout, export_text, export_utf8, streamed_text
from budgetguard._ledger import SQLiteLedger, _sqlite_export
from budgetguard._ledger._sqlite import journal_row
from budgetguard._ledger._sqlite_export import sql_export
from budgetguard._ledger._sqlite_report import COLUMNS

NOW = 1_765_000_000_000
ODD_TEXTS = ['o\'brien "x", y', "line\nbreak", "ünïcode", "tab\there", "back\\slash", "del\x7f", "😀", ""]


def _entries() -> list[tuple[Any, ...]]:
    """Journal rows (``journal_row``'s) with every kind of odd data an export meets."""
    rows: list[tuple[Any, ...]] = []
    costs = [0, 1, 250, 999, 1000, 2500, 123_456_789, 999_999_999, 10**9, 1_500_000_000, 10**10, 12 * 10**9,
             2**63 - 1, 120 * 10**9]  # fmt: skip
    for i, cost in enumerate(costs):  # costs of every shape ``str(Decimal)`` gives
        data = {"model": "gpt-4o", "function": "app.chat", "attempt": 1, "estimated_usd": "0.001",
                "scopes": ["global", f"user:u{i}"], "usage": {"input_tokens": 10, "output_tokens": i},
                "cost_nano": cost}  # fmt: skip
        charged = [f"user:u{i}"]
        rows.append(journal_row(NOW + i * 1000, "committed", f"r{i}", charged, {"usd": cost}, data))
    for i, text in enumerate(ODD_TEXTS):  # odd texts in every field that shows one
        labels = ["global", f"user:{text}", f"feature:{text}", f"team:{i}"]
        data = {"model": text, "function": text, "estimated_usd": text, "scopes": labels, "flag": text}
        rows.append(journal_row(NOW + 50_000 + i, "refused", f"id {text}", labels[1:2], {"usd": 5}, data))
    odd_data: list[dict[str, Any]] = [
        {},  # nothing: no model, function, attempt, estimate, usage
        {"model": None, "function": 3, "attempt": True},  # types the guard never writes
        {"attempt": 1.5, "estimated_usd": 0.25},
        {"attempt": 2**70},
        {"model": "(unknown)", "function": "(unknown)", "attempt": -3},  # a model named like the key
        {"usage": {"input_tokens": 5}, "variant": {"z": 1, "a": [1, {"y": 2, "b": None}]}, "overrun": True},
        {"scopes": ["global", "user:a", "user:b", "user:c"], "model": "m"},  # several scopes of one kind
        {"scopes": [], "model": "m"},
        {"calls": 3, "fitted": {"max_tokens": 10}, "error": 'boom, "quoted"\n'},
    ]
    for i, data in enumerate(odd_data):
        amounts = {"usd": 7, "tokens": 2}
        rows.append(journal_row(NOW + 60_000 + i, "released", f"x{i}", ["global"], amounts, data))
    for i, text in enumerate(ODD_TEXTS):  # odd reservation ids alone
        rows.append(journal_row(NOW + 70_000 + i, "expired", f"r {text}", ["global"], {}, {"model": "m"}))
    rows.append(journal_row(0, "expired", "epoch", ["global"], {}, {"model": "m"}))  # ms 0: no fraction
    rows.append(journal_row(NOW + 123, "committed", "ms", ["global"], {"usd": 10**15}, {"cost_nano": 1}))
    return rows


def _store(path: Path, rows: list[tuple[Any, ...]], *, old: int = 0) -> SQLiteLedger:
    """A store whose journal holds ``rows``, the first ``old`` of them as a version before the export
    columns wrote them (half with no report column, half with the report's eight only)."""
    store = SQLiteLedger(path)
    db = store._db()
    table = store._sql.report.table
    for at, row in enumerate(rows):
        width = 6 if at < old // 2 else 6 + 8 if at < old else 6 + len(COLUMNS)
        names = ["ts", "event", "res_id", "scopes", "amounts", "data", *COLUMNS][:width]
        db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * width)})", row[:width])
    return store


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("old", [0, 10])
@pytest.mark.parametrize("chunk", [8192, 3])
def test_sql_export_is_the_python_export_byte_for_byte(
    tmp_path: Path, fmt: str, old: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chunks of 3 rows: lines joined in SQL beside chunks with a row Python renders, in seq order
    monkeypatch.setattr(_sqlite_export, "CHUNK", chunk)
    rows = _entries()
    store = _store(tmp_path / "ledger.db", rows, old=old)
    try:
        expected = "".join(streamed_text(store, since=None, fmt=fmt))  # (entry by entry, in Python)
        assert "".join(export_text(store, since=None, fmt=fmt)) == expected
        utf8 = list(export_utf8(store, since=None, fmt=fmt))  # (SQL's lines as SQLite's UTF-8: a file's)
        assert b"".join(p.encode() if isinstance(p, str) else p for p in utf8) == expected.encode()
        assert chunk > 3 or any(isinstance(p, bytes) for p in utf8)  # (8,192: one chunk, with odd rows)
        # most lines were made in SQL (else this test would compare Python with itself)
        sql = store._sql.report
        pieces = list(sql_export(str(store.path), sql, -(2**62), 2**62, fmt, timeout=5, fill=_never,
                                 layout=_layout if fmt == "csv" else None))  # fmt: skip
        in_sql = sum(
            p.count("\n" if isinstance(p, str) else b"\n") for p in pieces if isinstance(p, (str, bytes))
        )
        assert in_sql >= 20 + (fmt == "csv") and len(pieces) > in_sql - 10
        # old rows were filled on first use: none is left without its export columns
        left = store._db().execute(f"SELECT count(*) FROM {sql.table} WHERE r_export IS NULL").fetchone()
        assert left == (0,)
    finally:
        store.close()
    lines = expected.splitlines(keepends=True)
    if fmt == "jsonl":
        first = json.loads(lines[0])
        assert first["scopes"] == ["global", "user:u0"] and first["cost_usd"] == "0"
        assert [json.loads(line)["cost_usd"] for line in lines[:14]] == [
            "0", "1E-9", "2.5E-7", "9.99E-7", "0.000001", "0.0000025", "0.123456789", "0.999999999", "1",
            "1.5", "1E+1", "12", "9223372036.854775807", "1.2E+2",
        ]  # fmt: skip
        return
    table = list(csv.reader(io.StringIO(expected)))
    header = table[0]
    assert header[3:9] == ["scope_global", "scope_user", "scope_user_2", "scope_user_3", "scope_feature",
                           "scope_team"]  # fmt: skip
    odd = [r for r in table[1:] if r[1] == "refused"]
    assert [r[4] for r in odd] == ODD_TEXTS and [r[7] for r in odd] == ODD_TEXTS
    several = next(r for r in table[1:] if r[2] == "x6")
    assert several[3:9] == ["global", "a", "b", "c", "", ""]


def test_an_older_version_s_rows_written_later_are_rendered_in_python(tmp_path: Path) -> None:
    """Rows an older version writes after the first export (no export columns) are exported alike."""
    rows = _entries()
    store = _store(tmp_path / "ledger.db", rows)
    try:
        db = store._db()
        table = store._sql.report.table
        late = journal_row(NOW + 90_000, "committed", "late", ["global"], {"usd": 3}, {"model": "m"})
        names = "ts, event, res_id, scopes, amounts, data"
        db.execute(f"INSERT INTO {table} ({names}) VALUES (?, ?, ?, ?, ?, ?)", late[:6])
        assert_as_in_python(store)
    finally:
        store.close()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_chunk_past_sqlite_s_longest_string_is_read_row_by_row(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose lines together pass SQLite's length limit (1 GB by default: here 1,000 bytes,
    more than any row and line, less than the lines SQL renders) is exported row by row, alike."""
    store = _store(tmp_path / "ledger.db", _entries())
    try:
        expected = "".join(streamed_text(store, since=None, fmt=fmt))
        assert len(expected) > 4_000 and max(map(len, expected.splitlines())) < 500
        connect = sqlite3.connect

        def limited(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            db = connect(*args, **kwargs)
            db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000)
            return db

        monkeypatch.setattr(_sqlite_export.sqlite3, "connect", limited)
        assert "".join(export_text(store, since=None, fmt=fmt)) == expected
    finally:
        store.close()


def test_an_empty_range_and_a_range(tmp_path: Path) -> None:
    store = _store(tmp_path / "ledger.db", _entries())
    try:
        assert_ranges(store)
    finally:
        store.close()


def assert_ranges(store: Any) -> None:
    """A range of ``_entries``' export is the Python one's (two rows), and a range with none is nothing
    (JSON lines) or the bare header (CSV)."""
    from budgetguard._ledger._types import to_datetime

    since, until = to_datetime(NOW + 1000), to_datetime(NOW + 3000)
    for fmt in ("csv", "jsonl"):
        got = "".join(export_text(store, since=since, until=until, fmt=fmt))
        assert got == "".join(streamed_text(store, since=since, until=until, fmt=fmt))
        assert got.count("\n") == 2 + (fmt == "csv")
        nothing = "".join(export_text(store, since=to_datetime(NOW + 10**9), fmt=fmt))
        header = "time,event,reservation_id,model,function,attempt,cost_usd,estimated_usd,input_tokens,"
        assert nothing == ("" if fmt == "jsonl" else header + "output_tokens,amounts,flags\n")


def assert_as_in_python(store: Any) -> None:
    """The whole journal's export, both formats, is the entry-by-entry export's, byte for byte."""
    for fmt in ("csv", "jsonl"):
        got = "".join(export_text(store, since=None, fmt=fmt))
        assert got == "".join(streamed_text(store, since=None, fmt=fmt))


def _never() -> None:
    raise AssertionError("filled already")


def _layout(lists: Iterable[str]) -> tuple[str, Callable[[str], str]]:
    return csv_layout(lists)[1:]


def test_a_file_with_the_report_columns_only_gains_the_export_columns_on_open(tmp_path: Path) -> None:
    """A file the previous version made (the report's eight columns, ``journal_facts`` 1) gets the
    export's columns when opened, and its rows are filled by the first export."""
    path = tmp_path / "ledger.db"
    rows = _entries()
    store = _store(path, rows)
    db = store._db()
    for name in COLUMNS[8:]:
        db.execute(f"ALTER TABLE journal DROP COLUMN {name}")
    db.execute("UPDATE meta SET value = 1 WHERE key = 'journal_facts'")
    store.close()
    store = SQLiteLedger(path)
    try:
        names = {row[1] for row in store._db().execute("PRAGMA table_info(journal)")}
        assert set(COLUMNS) <= names
        for fmt in ("csv", "jsonl"):
            got = "".join(export_text(store, since=None, fmt=fmt))
            assert got == "".join(streamed_text(store, since=None, fmt=fmt)) and got.count("\n") >= len(rows)
        left = store._db().execute("SELECT count(*) FROM journal WHERE r_export IS NULL").fetchone()
        assert left == (0,)
    finally:
        store.close()


def test_a_single_scope_column_s_empty_cell_is_empty_as_in_python(tmp_path: Path) -> None:
    """One scope column and a call without that kind: an empty cell (not ``""``, which the ``csv``
    module writes for a line of one empty field), as the Python export writes it."""
    rows = [journal_row(NOW + i, "committed", f"r{i}", ["global"][:i], {"usd": 5}, {"scopes": ["global"][:i]})
            for i in (1, 0)]  # fmt: skip
    store = _store(tmp_path / "ledger.db", rows)
    try:
        got = "".join(export_text(store, since=None, fmt="csv"))
        assert got == "".join(streamed_text(store, since=None, fmt="csv"))
        assert got.splitlines()[2].startswith(f"{_iso(NOW)},committed,r0,,")
    finally:
        store.close()


def _iso(ms: int) -> str:
    from budgetguard._ledger._types import to_datetime

    return to_datetime(ms).isoformat()


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_ROW = st.tuples(
    st.one_of(
        st.integers(0, 253_402_300_799_999), st.integers(-62_135_596_800_000, 0), st.sampled_from([0, 999])
    ),
    st.sampled_from(["committed", "refused", "released", "expired"]),
    st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 10**10), st.sampled_from([10**k for k in range(12)])),
    st.one_of(st.sampled_from(["gpt-4o", "m", ""]), _TEXT),
    st.lists(st.one_of(st.sampled_from(["global", "user:u1", "feature:a,b", "team:x"]), _TEXT), max_size=4),
    st.one_of(st.just({}), st.dictionaries(st.sampled_from(["flag", "error", "n"]), _TEXT, max_size=2)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_ROW, min_size=1, max_size=12))
def test_any_rows_export_in_sql_as_in_python(rows: list[tuple[Any, ...]]) -> None:
    """Rows of any time (a whole second or not, before 1970), cost (every shape ``str(Decimal)``
    gives), text and scopes: the SQL's lines (each of its ``printf`` variants) are Python's, byte
    for byte, in both formats."""
    entries = []
    for i, (ts, event, cost, text, labels, flags) in enumerate(rows):
        data = {"model": text, "function": text, "estimated_usd": text, "attempt": i, "scopes": labels,
                "usage": {"input_tokens": i, "output_tokens": 2 * i}, "cost_nano": cost, **flags}  # fmt: skip
        entries.append(journal_row(ts, event, f"r{i}{text}", labels[:1], {"usd": cost}, data))
    with tempfile.TemporaryDirectory() as folder:
        store = _store(Path(folder) / "ledger.db", entries)
        try:
            assert_as_in_python(store)
        finally:
            store.close()


def test_a_csv_layout_keeps_no_list_of_the_range_s_scopes() -> None:
    """A range of a million users' calls holds as many lists of scopes: the CSV's layout reads them once
    and keeps only its columns (it kept every list and its cells: 585 MB for 1M users' calls), and a
    list's cells are rendered when asked (the last ``CELLS_KEPT`` kept)."""
    import tracemalloc

    lists = (json.dumps(["global", f"user:someone-{i:07d}", "feature:chat"]) for i in range(50_000))
    tracemalloc.start()
    try:
        _, header, cells = csv_layout(lists)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200_000, peak  # (the 50,000 lists' texts alone are ~4 MB)
    assert header.startswith("time,event,reservation_id,scope_global,scope_user,scope_feature,")
    assert cells(json.dumps(["user:a,b", "global"])) == ',global,"a,b",'


def test_csv_lines_of_exports_in_two_threads_are_their_own() -> None:
    """Two exports at once, in threads: each line is its own (one CSV writer for all mixed their lines)."""
    from budgetguard._export import _csv_line

    from ..racing import race

    wrong: list[str] = []

    def lines(tag: str) -> None:
        for i in range(20_000):
            if (line := _csv_line([tag, i, "x,y"])) != f'{tag},{i},"x,y"\n':
                wrong.append(line)

    race(lines, [("a",), ("b",)])
    assert wrong == []


def test_a_row_without_its_facts_has_its_call_scopes_in_the_csv_columns(tmp_path: Path) -> None:
    """A row whose report columns could not be computed (a cost beyond a SQL integer) and whose call
    scopes are more than its charged ones: the CSV's columns come from its data, as in the Python export
    (the SQL export raised "the journal changed" for it)."""
    data = {"model": "m", "scopes": ["global", "team:t", "user:u"], "cost_nano": 2**64}
    rows = [journal_row(NOW, "committed", "r0", ["global"], {"tokens": 5}, data),
            journal_row(NOW + 1, "committed", "r1", ["global"], {"usd": 5}, {"model": "m"})]  # fmt: skip
    store = _store(tmp_path / "ledger.db", rows)
    try:
        got = "".join(export_text(store, since=None, fmt="csv"))
        assert got == "".join(streamed_text(store, since=None, fmt="csv"))
        assert got.startswith("time,event,reservation_id,scope_global,scope_user,scope_team,")
    finally:
        store.close()


def test_an_attempt_or_estimate_given_as_none_is_null_as_in_python(tmp_path: Path) -> None:
    """JSON shows an attempt or estimate given as None as null; SQL's line wrote "" (a review)."""
    datas = [{"attempt": None}, {"estimated_usd": None}, {}]
    rows = [
        journal_row(NOW + i, "committed", f"r{i}", ["global"], {"usd": 5}, {"model": "m", **data})
        for i, data in enumerate(datas)
    ]
    store = _store(tmp_path / "ledger.db", rows)
    try:
        assert_as_in_python(store)
    finally:
        store.close()


@pytest.mark.parametrize("sample", [1, 2048])
def test_lists_of_a_sampled_shape_hiding_other_scopes_get_their_columns(
    tmp_path: Path, sample: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV's columns come from every list of the range, also where a list matches the ``GLOB`` of a
    shape its first rows show (``_sqlite_export._distinct_lists``: ``["global", "user:*"]``) with more
    scopes than that shape behind it (each comma is then one the shape has not), or a NUL."""
    monkeypatch.setattr(_sqlite_export, "SAMPLE", sample)
    lists = [
        ["global", "user:a"],  # (the first row: its shape is checked first)
        ["global", "user:b", "team:c"],  # (a list the shape's GLOB matches, "*" = 'b", "team:c')
        ["global", "user:d", "user:e"],  # (a second user: scope_user_2)
        ['global', 'user:x", "zone:y'],  # (one user whose id looks like two scopes)
        ["global", "user:g,h"],  # (a comma in an id)
        ["global", "user:f\0"],  # (a NUL: its line rendered in Python)
        ["global"], [], ["user:z", "global"], ["global", "user:", "feature:k"],
    ]  # fmt: skip
    rows = [
        journal_row(NOW + i, "committed", f"r{i}", ["global"], {"usd": 5}, {"model": "m", "scopes": labels})
        for i, labels in enumerate(lists)
    ]
    store = _store(tmp_path / "ledger.db", rows)
    try:
        assert_as_in_python(store)
        header = next(export_text(store, since=None, fmt="csv"))
        assert "scope_team" in header and "scope_user_2" in header and "scope_zone" not in header
    finally:
        store.close()

"""Exports rendered inside SQLite: one ``SELECT`` per chunk of journal rows makes their CSV or JSON lines,
joined into one text (``group_concat``).

The lines are those ``_export.export_row`` and its writers make of the same entries, byte for byte,
made by one ``printf`` per row from the row's columns and its report columns (``_sqlite_report.
COLUMNS``, computed from the entry when it is written: the export never reads the data's JSON). Only
rows whose texts need no quoting nor escaping are rendered so (``_EXACT``); the JSON objects (amounts,
flags, the scopes' list) are kept as ``json.dumps`` wrote them, quoted as CSV fields by the ``csv``
module's rule, and costs are written as ``str(to_usd(nano))`` writes them (``_USD``). Any other row
comes back as its ``JournalEntry``, for Python to render in its place (its chunk is then read row by
row). The rows are read in ``seq`` order by a scan of the table's rowids between the range's first
and last ``seq`` (no sort), in one read transaction (one snapshot: a CSV's scope columns, taken
first, cover every row read after).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Iterator
from functools import lru_cache
from typing import Any

from .._money import to_usd
from ._local import journal_entry
from ._sqlite_report import JournalSql
from ._types import JournalEntry

__all__ = ["CHUNK", "sql_export"]

CHUNK = 8192
"""Rows rendered (and fetched as one text) at a time."""


_USD = (
    "CASE WHEN r_cost >= 1000 AND r_cost < 1000000000 THEN rtrim(printf('0.%09d', r_cost), '0') "
    "ELSE budgetguard_usd(r_cost) END"
)
"""SQL: ``str(to_usd(r_cost))``: from $0.000001 to under $1 a plain decimal with no trailing zero (the
common case), else ``_usd`` (a normalized ``Decimal``'s text: ``0``, ``1E+1``, ``2.5E-7``, ``1.5``)."""
_TIME = (
    "replace(datetime(ts / 1000, 'unixepoch'), ' ', 'T') "
    "|| CASE WHEN ts % 1000 THEN '.' || substr(1000 + ts % 1000, 2) || '000+00:00' ELSE '+00:00' END"
)
"""SQL: ``JournalEntry.time.isoformat()`` for ``0 <= ts < 253402300800000`` (years 1970-9999)."""
_EXACT = (
    "r_export BETWEEN 0 AND 3 AND r_cost >= 0 AND ts >= 0 AND ts < 253402300800000 "
    "AND event IN ('committed', 'refused', 'released', 'expired')"
)
"""SQL: the row is rendered in SQL: its texts need no quoting nor escaping in CSV or JSON (``_facts.
QUOTED`` clear: model, function, estimate and reservation id are printable ASCII without a comma, a
double quote or a backslash), its
facts were read (``r_export`` not ``ODD``), its time and cost in the ranges ``_TIME`` and ``_USD``
render. Else the line is NULL, and the row comes back as an entry."""
_MODEL = "CASE WHEN r_export & 1 THEN '' ELSE r_model END"  # (_facts.NO_MODEL, NO_FUNCTION)
_FUNCTION = "CASE WHEN r_export & 2 THEN '' ELSE r_function END"
_ESTIMATED = "coalesce(r_estimated, '')"
_FLAGS = "coalesce(r_flags, '{}')"
_SCOPES = "coalesce(r_scopes, scopes)"
CELLS = "budgetguard_scope_cells"
"""The SQL function (``sql_export``'s ``layout``) that renders a list of scopes' CSV columns."""
_CELLS = "budgetguard_export_cells"
"""The temporary table of a CSV export: each list of scopes of its range (JSON) and its CSV columns."""


_QUOTE = "CASE WHEN {0} = '{{}}' THEN '' ELSE '\"' END"
"""SQL: the quote around a JSON object's text ``{0}`` as a CSV field: none for ``{}``, else ``"`` (its
text is then written by ``printf``'s ``%w``, which doubles its double quotes)."""
_FIELDS = (
    ("time", _TIME), ("event", "event"), ("reservation_id", "res_id"), ("scopes", _SCOPES),
    ("model", _MODEL), ("function", _FUNCTION), ("attempt", "r_attempt"), ("cost_usd", _USD),
    ("estimated_usd", _ESTIMATED), ("input_tokens", "r_in"), ("output_tokens", "r_out"),
    ("amounts", "amounts"), ("flags", _FLAGS),
)  # fmt: skip
"""``export_row``'s keys and their values in SQL."""
_TEXTS = frozenset(("time", "event", "reservation_id", "model", "function", "cost_usd", "estimated_usd"))
"""The fields JSON quotes (their texts need no escaping: see ``_EXACT``)."""


def _json_line() -> str:
    """SQL: the row's JSON line (``json.dumps`` of its ``export_row``), by one ``printf`` (one string
    made, where each ``||`` makes one)."""
    pattern = ", ".join(f'"{key}": ' + ('"%s"' if key in _TEXTS else "%s") for key, _ in _FIELDS)
    values = ", ".join("coalesce(r_attempt, '\"\"')" if k == "attempt" else v for k, v in _FIELDS)
    return f"printf('{{{pattern}}}\n', {values})"


def _csv_line() -> str:
    """SQL: the row's CSV line (``csv.writer``'s of its ``export_row``, the scopes' columns those of its
    list in the temporary table ``cells``), by one ``printf``."""
    values = [
        f"{_QUOTE.format(v)}, {v}, {_QUOTE.format(v)}" if k in ("amounts", "flags")
        else "cells.c" if k == "scopes" else f"coalesce({v}, '')" if k == "attempt" else v
        for k, v in _FIELDS
    ]  # fmt: skip
    objects = ("amounts", "flags")  # (quoted as CSV by %w: no string made)
    pattern = "".join(  # (cells: after commas)
        "%s" if k in ("time", "scopes") else ",%s%w%s" if k in objects else ",%s" for k, _ in _FIELDS
    )
    return f"printf('{pattern}\n', {', '.join(values)})"


def _lines(table: str, fmt: str) -> str:
    """SQL: each row's line (NULL: Python renders it) and seq, of the rows with ``?1 < seq <= ?2`` in
    ``[?3, ?4)`` (ms), in ``seq`` order, at most ``CHUNK``."""
    if fmt != "csv":
        line, join = f"CASE WHEN {_EXACT} THEN {_json_line()} END", ""
    else:  # (each row's list of scopes looked up in the table of the range's lists: no call out)
        line = f"CASE WHEN {_EXACT} AND cells.c IS NOT NULL THEN {_csv_line()} END"
        join = f"LEFT JOIN temp.{_CELLS} AS cells ON cells.k = {_SCOPES} "
    return (
        f"SELECT {line} AS l, seq AS s FROM {table} {join}"
        f"WHERE seq > ?1 AND seq <= ?2 AND +ts >= ?3 AND +ts < ?4 ORDER BY seq LIMIT {CHUNK}"
    )


def _chunk(lines: str) -> str:
    """SQL: one chunk of ``_lines`` as one text (``group_concat`` in ``seq`` order: the subquery's, which
    is not flattened into an aggregate), with how many of its lines are NULL and its last seq. One
    string per chunk instead of a Python string and tuple per row: ~0.8 s less per 1M rows."""
    return f"SELECT group_concat(l, ''), count(*) - count(l), max(s) FROM ({lines})"


def sql_export(
    path: str,
    sql: JournalSql,
    since: int,
    until: int,
    fmt: str,
    *,
    timeout: float,
    fill: Callable[[], None],
    layout: Callable[[Iterator[str]], tuple[str, Callable[[str], str]]] | None = None,
) -> Iterator[str | JournalEntry]:
    """The export of ``[since, until)`` (ms) as ``fmt`` (``csv``, ``jsonl``): text (many lines at once),
    or an entry where the SQL cannot render its line exactly. For CSV, ``layout`` is given the range's
    distinct lists of call scopes (JSON) and answers the header line and the function that renders a
    list's scope columns (CSV fields, each after a comma). When the range's first rows lack their
    report columns (a file from before them), ``fill`` fills them before anything is read; a later row
    that lacks them (written since by an older version) comes back as an entry."""
    for attempt in (1, 2):
        done = yield from _export(path, sql, (since, until), fmt, timeout, layout, attempt == 2)
        if done:
            return
        fill()


def _export(
    path: str, sql: JournalSql, bounds: tuple[int, int], fmt: str, timeout: float,
    layout: Callable[[Iterator[str]], tuple[str, Callable[[str], str]]] | None, filled: bool,
) -> Generator[str | JournalEntry, None, bool]:  # fmt: skip
    """``sql_export`` in one read transaction; ``False`` before anything is read when its first rows
    lack their report columns and ``filled`` is not yet."""
    table = sql.table
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        db.create_function("budgetguard_usd", 1, _usd, deterministic=True)
        db.execute("BEGIN")  # (one snapshot for every statement below)
        lo, hi = db.execute(
            f"SELECT min(seq), max(seq) FROM {table} WHERE ts >= ? AND ts < ?", bounds
        ).fetchone()
        if lo is None:
            if layout is not None:
                yield layout(iter(()))[0]
            return True
        args = (lo - 1, hi, *bounds)
        if (
            not filled
            and db.execute(  # (the first rows: a file from before the columns has none)
                f"SELECT EXISTS (SELECT 1 FROM {table} WHERE seq BETWEEN ? AND ? AND r_export IS NULL)",
                (lo, min(hi, lo + CHUNK)),
            ).fetchone()[0]
        ):
            return False
        if layout is not None:  # (the range's distinct lists of scopes, then each one's CSV columns)
            db.execute(f"CREATE TEMP TABLE {_CELLS} (k TEXT PRIMARY KEY, c TEXT) WITHOUT ROWID")
            db.execute(
                f"INSERT OR IGNORE INTO temp.{_CELLS} (k) SELECT {_SCOPES} FROM {table} "
                "WHERE seq > ? AND seq <= ? AND +ts >= ? AND +ts < ?",
                args,
            )
            header, cells = layout(row[0] for row in db.execute(f"SELECT k FROM temp.{_CELLS}"))
            db.create_function(CELLS, 1, cells, deterministic=True)
            db.execute(f"UPDATE temp.{_CELLS} SET c = {CELLS}(k)")
            yield header
        lines = _lines(table, fmt)
        chunked = _chunk(lines)
        after = lo - 1
        while after < hi:
            try:
                text, odd, last = db.execute(chunked, (after, hi, *bounds)).fetchone()
            except sqlite3.DataError:  # (its lines together past SQLite's longest string, 1 GB)
                text, odd, last = None, 1, hi
            if not odd:
                if last is None:
                    break
                yield text
                after = last
                continue
            rows = db.execute(lines, (after, last, *bounds)).fetchall()  # (row by row)
            if not rows:
                break
            for line, seq in rows:
                yield line if line is not None else _entry(db, table, seq)
            after = rows[-1][1]
        db.execute("COMMIT")
        return True
    finally:
        db.close()


@lru_cache(maxsize=4096)
def _usd(nano: int) -> str:
    return str(to_usd(nano))


def _entry(db: sqlite3.Connection, table: str, seq: int) -> JournalEntry:
    row: Any = db.execute(
        f"SELECT ts, event, res_id, scopes, amounts, data FROM {table} WHERE seq = ?", (seq,)
    ).fetchone()
    return journal_entry(*row)

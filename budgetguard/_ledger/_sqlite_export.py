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

import json
import re
import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator
from functools import lru_cache
from typing import Any

from .._money import to_usd
from ._facts import ODD
from ._local import call_lists, journal_entry
from ._sqlite_report import JournalSql
from ._types import JournalEntry

__all__ = ["CHUNK", "sql_export"]

CHUNK = 8192
"""Rows rendered (and fetched as one text) at a time."""

Layout = Callable[[Iterable[str]], tuple[str, Callable[[str], str]]]
"""A CSV export's scope columns from the range's distinct lists of scopes: ``sql_export``'s ``layout``."""


_USD = (
    "CASE WHEN r_cost = 0 THEN '0' WHEN r_cost >= 1000 AND r_cost < 1000000000 "
    "THEN rtrim(printf('0.%09d', r_cost), '0') ELSE budgetguard_usd(r_cost) END"
)
"""SQL: ``str(to_usd(r_cost))``: from $0.000001 to under $1 a plain decimal with no trailing zero (the
common case), else ``_usd`` (a normalized ``Decimal``'s text: ``0``, ``1E+1``, ``2.5E-7``, ``1.5``)."""
_DIGITS = "r_cost % 10 AND r_cost >= 1000 AND r_cost < 1000000000"
"""SQL: ``str(to_usd(r_cost))`` is ``0.`` and ``r_cost``'s nine digits (no trailing zero to drop):
written by the line's own ``printf`` (``_COSTS``), where ``_USD`` makes a string or two."""
_COSTS = (("0.%09d", "r_cost"), ("%s", _USD))
"""The cost's pattern and value in a line's ``printf``: ``_DIGITS`` or not."""
DAY = 86_400_000
"""A day in ms (UTC: a Unix day has no leap second)."""
_DATE = (
    f"CASE WHEN ts >= ?5 AND ts < ?5 + {DAY} THEN date(?5 / 1000, 'unixepoch') "
    "ELSE date(ts / 1000, 'unixepoch') END"
)
"""SQL: the row's date, ``date(ts / 1000, 'unixepoch')``: the one of the day starting at ``?5`` (ms, the
day of the previous chunk's latest row: most rows') is computed once per statement (SQLite factors a
call of constant arguments out of the loop), ~1.5k instructions a row less than ``date`` of each row."""
_CLOCK = f"{_DATE}, ts / 3600000 % 24, ts / 60000 % 60, ts / 1000 % 60"
_TIMES = (("%sT%02d:%02d:%02d.%03d000+00:00", f"{_CLOCK}, ts % 1000"), ("%sT%02d:%02d:%02d+00:00", _CLOCK))
"""``JournalEntry.time.isoformat()``'s pattern and values in a line's ``printf`` (for ``0 <= ts <
253402300800000``: years 1970-9999), when ``ts % 1000`` or not (a whole second has no fraction). The
hours, minutes, seconds and milliseconds are ``printf``'s own integers, the date one ``date``."""
_EXACT = (
    "r_export BETWEEN 0 AND 3 AND r_cost >= 0 AND ts >= 0 AND ts < 253402300800000 "
    "AND (event = 'committed' OR event = 'refused' OR event = 'released' OR event = 'expired')"
)
"""SQL: the row is rendered in SQL: its texts need no quoting nor escaping in CSV or JSON (``_facts.
QUOTED`` clear: model, function, estimate and reservation id are printable ASCII without a comma, a
double quote or a backslash), its
facts were read (``r_export`` not ``ODD``), its time and cost in the ranges ``_TIMES`` and ``_USD``
render. Else the line is NULL, and the row comes back as an entry. (The events by ``OR``, commits first:
``IN`` of four constants seeks an ephemeral index a row, ~0.5k instructions.)"""
_MODEL = "CASE WHEN r_export & 1 THEN '' ELSE r_model END"  # (_facts.NO_MODEL, NO_FUNCTION)
_FUNCTION = "CASE WHEN r_export & 2 THEN '' ELSE r_function END"
_ESTIMATED = "coalesce(r_estimated, '')"
_SCOPES = "coalesce(r_scopes, scopes)"
CELLS = "budgetguard_scope_cells"
"""The SQL function of a CSV export: a list of scopes' (JSON) CSV columns (``sql_export``'s ``layout``)."""
_UNREAD = f"(r_calls = {ODD} OR r_calls IS NULL)"
"""SQL: the row's report columns were not read (``r_scopes`` may then lack call scopes its data has)."""
_LISTED = f"CASE WHEN {_UNREAD} THEN '' ELSE {_SCOPES} END"
"""SQL: a row's list of call scopes (JSON) for a CSV's columns, ``''`` (never a list) where ``_UNREAD``."""


_AMOUNTS_QUOTE = "CASE WHEN amounts = '{}' THEN '' ELSE '\"' END"
"""SQL: the quote around the amounts' JSON as a CSV field: none for ``{}``, else ``"`` (its text is
then written by ``printf``'s ``%w``, which doubles its double quotes)."""
_CSV_FLAGS = "CASE WHEN r_flags IS NULL OR r_flags = '{}' THEN '{}' ELSE printf('\"%w\"', r_flags) END"
"""SQL: the flags' JSON as a CSV field (quoted, its quotes doubled, unless ``{}``: NULL, the common case)."""
_FIELDS = (
    ("time", "", ""), ("event", "%s", "event"), ("reservation_id", "%s", "res_id"), ("scopes", "%s", _SCOPES),
    ("model", "%s", _MODEL), ("function", "%s", _FUNCTION), ("attempt", "%s", "r_attempt"),
    ("cost_usd", "", ""), ("estimated_usd", "%s", _ESTIMATED), ("input_tokens", "%d", "r_in"),
    ("output_tokens", "%d", "r_out"), ("amounts", "%s", "amounts"),
    ("flags", "%s", "coalesce(r_flags, '{}')"),
)  # fmt: skip
"""``export_row``'s keys, their pattern and value in SQL (time and cost: ``_TIMES``, ``_COSTS``; the
tokens are integers on every row rendered in SQL: its facts were read)."""
_CSV_VALUES = {"scopes": f"{CELLS}({_SCOPES})", "attempt": "coalesce(r_attempt, '')", "flags": _CSV_FLAGS}
"""The CSV's values where they are not ``_FIELDS``'."""
_TEXTS = frozenset(("time", "event", "reservation_id", "model", "function", "cost_usd", "estimated_usd"))
"""The fields JSON quotes (their texts need no escaping: see ``_EXACT``)."""


def _printf(fmt: str, time: tuple[str, str], cost: tuple[str, str]) -> str:
    """SQL: a row's line by one ``printf`` (one string made, where each ``||`` or call makes one), its
    time and cost as ``time`` and ``cost`` give them (pattern, values): JSON (``json.dumps`` of its
    ``export_row``) or CSV (``csv.writer``'s, the scopes' columns those ``CELLS`` gives its list)."""
    patterns, values = [], []
    for key, pattern, value in _FIELDS:
        if key in ("time", "cost_usd"):
            pattern, value = time if key == "time" else cost
        if fmt != "csv":
            quote = '"' if key in _TEXTS else ""
            patterns.append(f'"{key}": {quote}{pattern}{quote}')
            values.append("coalesce(r_attempt, '\"\"')" if key == "attempt" else value)
        elif key == "amounts":  # (quoted as CSV by %w: no string made)
            patterns.append(",%s%w%s")
            values += [_AMOUNTS_QUOTE, value, _AMOUNTS_QUOTE]
        else:  # (the scopes' cells come each after a comma)
            patterns.append(pattern if key in ("time", "scopes") else "," + pattern)
            values.append(_CSV_VALUES.get(key, value))
    pattern = "{" + ", ".join(patterns) + "}" if fmt != "csv" else "".join(patterns)
    return f"printf('{pattern}\n', {', '.join(values)})"


def _line(fmt: str) -> str:
    """SQL: the row's line, by one of four ``printf`` (``_printf``): a whole second or not, a cost
    of nine digits or not."""
    (frac, whole), (digits, text) = _TIMES, _COSTS
    return (
        f"CASE WHEN ts % 1000 THEN CASE WHEN {_DIGITS} THEN {_printf(fmt, frac, digits)} "
        f"ELSE {_printf(fmt, frac, text)} END ELSE CASE WHEN {_DIGITS} THEN {_printf(fmt, whole, digits)} "
        f"ELSE {_printf(fmt, whole, text)} END END"
    )


_RANGE = "WHERE seq > ?1 AND seq <= ?2 AND +ts >= ?3 AND +ts < ?4"
"""SQL: the rows of a range (a scan of rowids ``seq``, ``ts`` checked on each row)."""


def _lines(table: str, fmt: str, nul: bool = False) -> str:
    """SQL: each row's line (NULL: Python renders it), seq and time, of the rows with ``?1 < seq <= ?2``
    in ``[?3, ?4)`` (ms), in ``seq`` order, at most ``CHUNK`` (``?5``: a day's start, ``_DATE``).
    ``nul``: some list's scope cells hold a NUL, which ``printf`` would end the text at (``CELLS``
    answers NULL for them: Python renders them)."""
    line = f"CASE WHEN {_EXACT} {f'AND {CELLS}({_SCOPES}) IS NOT NULL ' if nul else ''}THEN {_line(fmt)} END"
    return f"SELECT {line} AS l, seq AS s, ts AS t FROM {table} {_RANGE} ORDER BY seq LIMIT {CHUNK}"


def _chunk(lines: str) -> str:
    """SQL: one chunk of ``_lines`` as one text (``group_concat`` in ``seq`` order: the subquery's, which
    is not flattened into an aggregate), with how many of its lines are NULL, its last seq and latest
    time. One string per chunk instead of a Python string and tuple per row: ~0.8 s less per 1M rows. The text
    comes as its UTF-8 bytes (a BLOB): written to a file as they are, not decoded and encoded again."""
    return f"SELECT CAST(group_concat(l, '') AS BLOB), count(*) - count(l), max(s), max(t) FROM ({lines})"


def sql_export(
    path: str,
    sql: JournalSql,
    since: int,
    until: int,
    fmt: str,
    *,
    timeout: float,
    fill: Callable[[], None],
    layout: Layout | None = None,
) -> Iterator[str | bytes | JournalEntry]:
    """The export of ``[since, until)`` (ms) as ``fmt`` (``csv``, ``jsonl``): text (many lines at once:
    as UTF-8 bytes where SQL rendered them together), or an entry where the SQL cannot render its line
    exactly. For CSV, ``layout`` is given the range's distinct lists of call scopes (JSON), streamed once,
    and answers the header line and a function giving a list's scope columns (CSV fields, each after a
    comma). When the range's
    first rows lack their report columns (a file from before them), ``fill`` fills them before anything
    is read; a later row that lacks them (written since by an older version) comes back as an entry."""
    for attempt in (1, 2):
        done = yield from _export(path, sql, (since, until), fmt, timeout, layout, attempt == 2)
        if done:
            return
        fill()


def _export(
    path: str, sql: JournalSql, bounds: tuple[int, int], fmt: str, timeout: float,
    layout: Layout | None, filled: bool,
) -> Generator[str | bytes | JournalEntry, None, bool]:  # fmt: skip
    """``sql_export`` in one read transaction; ``False`` before anything is read when its first rows
    lack their report columns and ``filled`` is not yet."""
    table = sql.table
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        db.create_function("budgetguard_usd", 1, _usd, deterministic=True)
        db.execute("BEGIN")  # (one snapshot for every statement below)
        lo, hi, first = db.execute(
            f"SELECT min(seq), max(seq), min(ts) FROM {table} WHERE ts >= ? AND ts < ?", bounds
        ).fetchone()
        nul = False
        if lo is None:
            if layout is not None:
                yield layout(())[0]
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
            seen = _Nul(_with_unread(db, table, _distinct_lists(db, table, args), args))
            header, cells = layout(seen)
            nul = seen.found
            db.create_function(CELLS, 1, _nul_free(cells) if nul else cells, deterministic=True)
            yield header
        lines = _lines(table, fmt, nul)
        chunked = _chunk(lines)
        after, day = lo - 1, first - first % DAY
        while after < hi:
            try:
                text, odd, last, latest = db.execute(chunked, (after, hi, *bounds, day)).fetchone()
            except sqlite3.DataError:  # (its lines together past SQLite's longest string, 1 GB)
                text, odd, last, latest = None, 1, hi, None
            if not odd:
                if last is None:
                    break
                yield text
                after, day = last, latest - latest % DAY
                continue
            rows = db.execute(lines, (after, last, *bounds, day)).fetchall()  # (row by row)
            if not rows:
                break
            for line, seq, _ in rows:
                yield line if line is not None else _entry(db, table, seq)
            after, day = rows[-1][1], rows[-1][2] - rows[-1][2] % DAY
        db.execute("COMMIT")
        return True
    finally:
        db.close()


SAMPLE = 2048
"""Rows at the range's start whose lists of scopes give the shapes ``_distinct_lists`` checks rows against."""
SHAPES = 4
"""The most shapes (the sample's most frequent) checked a row."""
_KIND = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
"""A kind a shape's pattern may hold (no ``GLOB`` wildcard, no character JSON escapes or a comma)."""


def _distinct_lists(db: sqlite3.Connection, table: str, args: tuple[int, ...]) -> Iterator[str]:
    """The range's distinct lists of call scopes (``_LISTED``), or, for those of a shape the range's
    first rows show (``_shape``), one list of that shape: what a CSV's columns need. A row's ``GLOB``
    against a few shapes costs ~0.1 us where ``DISTINCT`` over a range of many users' lists seeks
    a b-tree of them all (~0.5 us a row for 35k lists, 1M rows)."""
    sample = db.execute(
        f"SELECT l, count(*) FROM (SELECT {_LISTED} AS l FROM {table} {_RANGE} ORDER BY seq LIMIT {SAMPLE})"
        " GROUP BY l",
        args,
    ).fetchall()
    shapes: dict[str, tuple[int, str]] = {}
    for text, n in sample:
        if (pattern := _shape(text)) is not None:
            shapes[pattern] = (shapes.get(pattern, (0, text))[0] + n, text)
    kept = sorted(shapes.items(), key=lambda item: -item[1][0])[:SHAPES]
    x = _SCOPES
    tests = "".join(f"WHEN {x} GLOB '{p}' AND {x} NOT GLOB '{_commas(p)}' THEN NULL " for p, _ in kept)
    known = f"WHEN instr({x}, '\\u0000') THEN {x} {tests}" if kept else ""  # (a NUL: ``_Nul``)
    yield from (text for _, (_, text) in kept)
    for (text,) in db.execute(
        f"SELECT DISTINCT CASE WHEN {_UNREAD} THEN '' {known}ELSE {x} END FROM {table} {_RANGE}", args
    ):
        if text is not None:
            yield text


def _shape(text: str) -> str | None:
    """The ``GLOB`` pattern of lists of scopes of the kinds of ``text``'s, in its order (``*`` for each
    scope's id), or None (``text`` not as ``json.dumps`` writes a list of scopes of such kinds). A list
    (valid JSON) matching it with as many commas as the pattern has scopes of those kinds in that order:
    each comma is then one between two scopes (``_commas``), each scope a string."""
    try:
        labels = json.loads(text)
    except ValueError:
        return None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        return None
    if json.dumps(labels) != text:
        return None
    parts = []
    for label in labels:
        kind, colon, _ = label.partition(":")
        if not _KIND.fullmatch(kind):
            return None
        parts.append(f'"{kind}:*"' if colon else f'"{kind}"')
    return "[[]" + ", ".join(parts) + "]"


def _commas(pattern: str) -> str:
    """A ``GLOB`` pattern of texts with more commas than ``pattern``'s (a scope's id holding one)."""
    return "*" + ",*" * (pattern.count(",") + 1)


def _with_unread(
    db: sqlite3.Connection, table: str, lists: Iterator[str], args: tuple[int, ...]
) -> Iterator[str]:
    """The range's lists of call scopes (``_LISTED``), those of rows without their facts from their data."""
    unread = False
    for text in lists:
        if text:
            yield text
        else:
            unread = True
    if unread:
        rows = f"SELECT ts, event, res_id, scopes, amounts, data FROM {table} {_RANGE} AND {_UNREAD}"
        yield from call_lists(db.execute(rows, args))


class _Nul:
    """Lists of scopes (JSON), passed on, noting whether one may hold a NUL (JSON's ``\\u0000``; a list
    holding a backslash and ``u0000`` only costs the export a Python call a row)."""

    def __init__(self, lists: Iterator[str]) -> None:
        self._lists = lists
        self.found = False

    def __iter__(self) -> Iterator[str]:
        for text in self._lists:
            self.found = self.found or "\\u0000" in text
            yield text


def _nul_free(cells: Callable[[str], str]) -> Callable[[str], str | None]:
    """``cells``, None where they hold a NUL (``printf`` would end the line at it: Python renders it)."""

    def free(text: str) -> str | None:
        line = cells(text)
        return None if "\0" in line else line

    return free


@lru_cache(maxsize=4096)
def _usd(nano: int) -> str:
    return str(to_usd(nano))


def _entry(db: sqlite3.Connection, table: str, seq: int) -> JournalEntry:
    row: Any = db.execute(
        f"SELECT ts, event, res_id, scopes, amounts, data FROM {table} WHERE seq = ?", (seq,)
    ).fetchone()
    return journal_entry(*row)

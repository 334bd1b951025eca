"""Exports rendered inside PostgreSQL: one statement makes each chunk of journal rows' CSV or JSON lines,
joined into one text (``string_agg``), read through a server-side cursor a chunk at a time.

The lines are those ``_export.export_row`` and its writers make of the same entries, byte for byte, as
``_sqlite_export`` makes them in SQLite, from the same report columns (``_sqlite_report.COLUMNS``) and
under the same rule of which rows SQL renders (``_EXACT``: texts that need no quoting nor escaping, their
facts read, a time of years 1970-9999, a cost not negative). Lines are made by ``||``, so any NULL a row
holds where a line needs a text makes its line NULL: the row then comes back as its ``JournalEntry`` for
Python to render in its place (its chunk is then read again row by row). A CSV's scope cells come from
one ``jsonb`` parameter (each distinct list of scopes of the range to its cells), read by key on each
row. The chunks are ranges of ``seq`` (the primary key); a range whose rows are spread thin among other
namespaces' (``SPARSE``) is read row by row instead. All is read in one repeatable-read transaction (one
snapshot: a CSV's scope columns, taken first, cover every row read after).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._errors import LedgerError
from ._facts import ODD
from ._local import call_lists, journal_entry
from ._postgres_tx import JOURNAL, UNBOUNDED
from ._types import JournalEntry

__all__ = ["CHUNK", "SPARSE", "postgres_export"]

CHUNK = 8192
"""``seq`` values a chunk covers (its rows rendered and fetched as one text)."""

_SCI = "regexp_replace(rtrim({d}, '0'), '^(.)(.+)$', E'\\\\1.\\\\2') || 'E{sign}' || {exp}"
"""SQL: ``str(Decimal)``'s scientific form of the digits ``{d}`` (trailing zeros dropped, a point after
the first digit when more follow) and its exponent. The replacement an escape string: ``'\\1'`` reads as
a control character where ``standard_conforming_strings`` is off (a review found costs so written)."""
_USD = (
    "CASE WHEN r_cost = 0 THEN '0' "
    "WHEN r_cost < 1000 THEN " + _SCI.format(d="r_cost::text", sign="-", exp="(10 - length(r_cost::text))")
    + " WHEN r_cost < 1000000000 THEN rtrim('0.' || lpad(r_cost::text, 9, '0'), '0') "
    "WHEN r_cost %% 1000000000 <> 0 THEN (r_cost / 1000000000)::text "
    "|| rtrim('.' || lpad((r_cost %% 1000000000)::text, 9, '0'), '0') "
    "WHEN r_cost / 1000000000 %% 10 <> 0 THEN (r_cost / 1000000000)::text "
    "ELSE " + _SCI.format(d="(r_cost / 1000000000)::text", sign="+",
                          exp="(length((r_cost / 1000000000)::text) - 1)")
    + " END"
)  # fmt: skip
"""SQL: ``str(to_usd(r_cost))`` for ``r_cost >= 0``: ``0``; under $0.000001 scientific (``2.5E-7``); a plain
decimal without trailing zeros (``0.0000025``, ``1.5``, ``12``); whole tens of dollars scientific (``1E+1``,
``1.2E+2``)."""
_TIME = (
    "to_char(to_timestamp(ts / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
    "|| CASE WHEN ts %% 1000 = 0 THEN '+00:00' "
    "ELSE '.' || lpad((ts %% 1000)::text, 3, '0') || '000+00:00' END"
)
"""SQL: ``JournalEntry.time.isoformat()`` for ``0 <= ts < 253402300800000`` (whole seconds as a ``double``
are exact; a whole second has no fraction)."""
_EXACT = (
    "r_export BETWEEN 0 AND 3 AND r_cost >= 0 AND ts >= 0 AND ts < 253402300800000 "
    "AND event IN ('committed', 'refused', 'released', 'expired') "
    "AND octet_length(data) + octet_length(scopes) + octet_length(res_id) "
    "+ coalesce(octet_length(r_scopes), 0) <= 8192"
)
"""SQL: the row is rendered in SQL (``_sqlite_export._EXACT``'s rule: ``_facts.QUOTED`` clear, its facts
read), its texts together at most 8 KB (a chunk's text stays tens of MB: journal data has no size limit,
and 8,192 lines of 160 KB passed PostgreSQL's 1 GB string); else its line is NULL, and the row comes back
as an entry."""
_MODEL = "CASE WHEN r_export & 1 = 1 THEN '' ELSE r_model END"  # (_facts.NO_MODEL, NO_FUNCTION)
_FUNCTION = "CASE WHEN r_export & 2 = 2 THEN '' ELSE r_function END"
_SCOPES = "coalesce(r_scopes, scopes)"
_FLAGS = "coalesce(r_flags, '{}')"
_CELLS = f"(%(cells)s::jsonb ->> {_SCOPES})"
"""SQL: a CSV row's scope cells (each after a comma), by its list of scopes; NULL for a list not given
(one whose cells PostgreSQL's text cannot hold: ``_held``)."""


def _csv_json(value: str) -> str:
    """SQL: a JSON object's text as a CSV field: ``{}`` as it is, else quoted, its quotes doubled."""
    return f"CASE WHEN {value} = '{{}}' THEN '{{}}' ELSE '\"' || replace({value}, '\"', '\"\"') || '\"' END"


def _line(fmt: str) -> str:
    """SQL: a row's line (``json.dumps`` of its ``export_row``, or ``csv.writer``'s line of it)."""
    if fmt == "csv":
        parts = [
            _TIME, "','", "event", "','", "res_id", _CELLS, "','", _MODEL, "','", _FUNCTION, "','",
            "coalesce(r_attempt::text, '')", "','", _USD, "','", "coalesce(r_estimated, '')", "','",
            "r_in::text", "','", "r_out::text", "','", _csv_json("amounts"), "','", _csv_json(_FLAGS),
        ]  # fmt: skip
    else:
        parts = [
            "'{\"time\": \"'", _TIME, "'\", \"event\": \"'", "event", "'\", \"reservation_id\": \"'",
            "res_id",
            "'\", \"scopes\": '", _SCOPES, "', \"model\": \"'", _MODEL, "'\", \"function\": \"'", _FUNCTION,
            "'\", \"attempt\": '", "coalesce(r_attempt::text, '\"\"')", "', \"cost_usd\": \"'", _USD,
            "'\", \"estimated_usd\": \"'", "coalesce(r_estimated, '')", "'\", \"input_tokens\": '",
            "r_in::text", "', \"output_tokens\": '", "r_out::text", "', \"amounts\": '", "amounts",
            "', \"flags\": '", _FLAGS, "'}'",
        ]  # fmt: skip
    return "(" + " || ".join(f"({part})" for part in parts) + " || E'\\n')"


_RANGE = "ns = %(ns)s AND ts >= %(since)s AND ts < %(until)s"
_IN_RANGE = "ns || '' = %(ns)s AND ts + 0 >= %(since)s AND ts + 0 < %(until)s"
"""SQL: ``_RANGE`` checked on each row of a chunk's scan of the primary key (not by the ``(ns, ts)``
index, whose scan of the whole range for each chunk the planner would otherwise AND with it)."""


def _rows(fmt: str, first: str) -> str:
    """SQL: each row's line (NULL: Python renders it) and seq, of the rows with ``first <= seq < first
    + CHUNK`` in the range, in ``seq`` order."""
    line = f"CASE WHEN {_EXACT} THEN {_line(fmt)} END"
    return (
        f"SELECT {line} AS l, seq FROM {JOURNAL} WHERE seq >= {first} AND seq < {first} + {CHUNK} "
        f"AND {_IN_RANGE} ORDER BY seq"
    )


def _chunks(fmt: str) -> str:
    """SQL: the range's chunks, each as one text (its lines in ``seq`` order: the subquery's, a scan of
    the primary key), how many of its lines are NULL, and its first ``seq``; in the order of their first
    ``seq`` (``generate_series``'s, which the nested loop keeps: an ``ORDER BY`` would sort every
    chunk's text before the first is sent)."""
    return (
        f"SELECT c.t, c.n, g.s FROM (SELECT min(seq) AS lo, max(seq) AS hi FROM {JOURNAL} WHERE {_RANGE}) "
        f"AS b, generate_series(b.lo, b.hi, {CHUNK}) AS g (s), LATERAL (SELECT string_agg(r.l, '') "
        f"AS t, count(*) - count(r.l) AS n FROM ({_rows(fmt, 'g.s')}) AS r) AS c"
    )


def _one_by_one(fmt: str, sparse: bool = False) -> str:
    """SQL: the rows of the chunk at ``%(first)s`` (``sparse``: of the whole range, found by the ``(ns,
    ts)`` index), each its line or, where that is NULL, its entry's columns, in ``seq`` order."""
    rows = _rows(fmt, "%(first)s")
    if sparse:
        rows = f"SELECT CASE WHEN {_EXACT} THEN {_line(fmt)} END AS l, seq FROM {JOURNAL} WHERE {_RANGE}"
    return (
        f"SELECT r.l, j.ts, j.event, j.res_id, j.scopes, j.amounts, j.data FROM ({rows}) "
        f"AS r LEFT JOIN {JOURNAL} AS j ON r.l IS NULL AND j.seq = r.seq ORDER BY r.seq"
    )


_SPAN = f"SELECT count(*), coalesce(max(seq) - min(seq) + 1, 0) FROM {JOURNAL} WHERE {_RANGE}"
"""SQL: the range's rows, and the span of ``seq`` values they are spread over."""
SPARSE = 4
"""A range whose rows are spread over more than this many times as many ``seq`` values (other
namespaces' rows between them) is read row by row through the ``(ns, ts)`` index, each row's line made
in SQL: chunks would scan every row of the span (~0.4 us each)."""


def _held(text: str, utf8: bool) -> bool:
    """``text`` is one PostgreSQL's text holds and gives back as it is, on a connection of UTF-8 (else
    ASCII only): no NUL, no lone surrogate."""
    if "\0" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return utf8


_LISTS = f"SELECT DISTINCT {_SCOPES} FROM {JOURNAL} WHERE {_RANGE} AND r_calls <> {ODD}"
"""SQL: the distinct lists of call scopes (JSON) of the range's rows whose facts were read."""
_UNREAD = (
    f"SELECT ts, event, res_id, scopes, amounts, data FROM {JOURNAL} WHERE {_RANGE} "
    f"AND (r_calls = {ODD} OR r_calls IS NULL)"
)
"""SQL: the range's rows whose facts were not read (whose call scopes Python reads from their data)."""


CELLS_SENT = 65536
"""Lists of scopes whose CSV cells the server is given (one ``jsonb``: a range of a million users' calls
holds as many lists); a row of another list is rendered in Python (its cells NULL: the line NULL)."""


def _lists(conn: Any, args: dict[str, Any], sent: list[str]) -> Iterator[str]:
    """The range's distinct lists of call scopes (JSON), read once through a cursor (none kept but the
    first ``CELLS_SENT``, in ``sent``), then those of rows without their facts, from their data."""
    with conn.cursor(name="budgetguard_export_lists") as found:
        found.itersize = 8192
        found.execute(_LISTS, args)
        for (text,) in found:
            if len(sent) < CELLS_SENT:
                sent.append(text)
            yield text
    with conn.cursor(name="budgetguard_export_unread") as unread:
        unread.itersize = 1024
        unread.execute(_UNREAD, args)
        yield from call_lists(unread)


def postgres_export(
    conn: Any,
    namespace: str,
    since: int,
    until: int,
    fmt: str,
    layout: Callable[[Iterable[str]], tuple[str, Callable[[str], str]]] | None = None,
) -> Iterator[str | JournalEntry]:
    """The export of ``[since, until)`` (ms) of ``namespace`` as ``fmt`` (``csv``, ``jsonl``): text (many
    lines at once), or an entry where SQL cannot render its line exactly, in ``seq`` order. For CSV,
    ``layout`` is given the range's distinct lists of call scopes (JSON), streamed once, and answers the
    header line and a function giving a list's scope columns (CSV fields, each after a comma).
    ``conn``: a psycopg connection of the export's own, outside any transaction."""
    conn.isolation_level, conn.read_only = 3, True  # (psycopg's IsolationLevel.REPEATABLE_READ)
    args: dict[str, Any] = {"ns": namespace, "since": since, "until": until, "cells": None}
    with conn.transaction():
        conn.execute("SET LOCAL jit = off")  # (compiling the line's expression costs more than it saves)
        conn.execute(UNBOUNDED)  # (a reader as slow as it likes: it holds no lock)
        if layout is not None:
            sent: list[str] = []  # (the lists whose cells the server is given: at most CELLS_SENT)
            header, cells = layout(_lists(conn, args, sent))
            yield header
            utf8 = conn.info.encoding == "utf-8" and conn.info.parameter_status("server_encoding") == "UTF8"
            args["cells"] = json.dumps({key: text for key in sent if _held(text := cells(key), utf8)})
        count, span = conn.execute(_SPAN, args).fetchone()
        if span > SPARSE * count:
            with conn.cursor(name="budgetguard_export") as rows:
                rows.itersize = CHUNK
                rows.execute(_one_by_one(fmt, sparse=True), args)
                for line, *entry in rows:
                    yield line if line is not None else journal_entry(*entry)
            return
        with conn.cursor(name="budgetguard_export") as chunks:
            chunks.itersize = 1
            chunks.execute(_chunks(fmt), args)
            after = None
            for text, odd, first in chunks:
                if after is not None and first <= after:  # (never seen: the plan is a nested loop)
                    raise LedgerError("PostgreSQL gave the export's chunks out of order: run it again")
                after = first
                if not odd:
                    if text is not None:
                        yield text
                    continue
                for line, *entry in conn.execute(_one_by_one(fmt), {**args, "first": first}).fetchall():
                    yield line if line is not None else journal_entry(*entry)

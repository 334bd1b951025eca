"""Reports aggregated inside SQLite: the journal's report columns, their migration, and ``GROUP BY``.

Each journal row carries, beside its JSON, what a report counts of it (``_facts.facts``): calls,
input and output tokens, cost, the estimate beside that cost, the model and function keys, and the
call's scopes when they differ from the charged ones. A report then sums columns over a time range
(the ``ts`` index) in one ``GROUP BY`` statement, which also hands each group's (actual, estimate)
pairs to Python (``_Pairs``, 16 bytes a call): the distributions (median, p95, max by nearest rank)
are then taken exactly by the streamed report's own rule (``_report.RatioSample``).

A database made before these columns gets them on open (``migrate``: instant). Its rows, and those
an older process still writes, have none until a report finds one in its range and fills every
such row (``fill``, in chunks of short write transactions), once. A row whose facts could not be
read (``calls = -1``, a corrupt usage) makes ``aggregate`` answer ``None``: the caller reads the range
in Python instead.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._cache import memo
from ._facts import ODD, export_facts, facts
from ._meta import FALLBACK, expand

if TYPE_CHECKING:
    import sqlite3  # (not at ``import budgetguard``: ``_report`` imports this module)

__all__ = [
    "COLUMNS",
    "EVENTS",
    "FACTS_VERSION",
    "SUMS",
    "Aggregate",
    "JournalSql",
    "aggregate",
    "fact_columns",
    "fill",
    "migrate",
    "pairs_of",
    "sum_parts",
]

COLUMNS = ("r_calls", "r_in", "r_out", "r_cost", "r_estimate", "r_model", "r_function", "r_scopes",
           "r_attempt", "r_estimated", "r_flags", "r_export")  # fmt: skip
"""The journal's report columns (``fact_columns``), after its original ones: what a report sums and
groups by, then what an export shows beside that (``_facts.export_facts``; ``r_export``: its bits, NULL
on a row written before these columns)."""
_TYPES = ("INTEGER", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "TEXT", "TEXT", "TEXT",
          "INTEGER", "TEXT", "TEXT", "INTEGER")  # fmt: skip
FACTS_VERSION = 2
"""The ``journal_facts`` mark of a journal table that has all of ``COLUMNS`` (1: the report's eight)."""
DDL = ", ".join(f"{name} {kind}" for name, kind in zip(COLUMNS, _TYPES, strict=True))
"""The report columns in the journal table's ``CREATE TABLE``."""
_FILL_CHUNK = 2000


def fact_columns(
    event: str, scopes: Sequence[str], amounts: dict[str, Any], data: dict[str, Any], res_id: str = ""
) -> tuple[Any, ...]:
    """The report columns of a journal entry (all NULL but ``r_calls = -1`` when they cannot be read)."""
    data = expand(data, scopes, amounts)  # (the guard's compact form: _meta; as every reader sees it)
    found = facts(event, scopes, amounts, data)
    if found is None:
        return _ODD_ROW
    labels = found[7]
    shown = None if labels == list(scopes) else _labels_json(tuple(labels))
    return (*found[:7], shown, *export_facts(data, res_id))


_ODD_ROW = (ODD, *(None,) * (len(COLUMNS) - 2), ODD)
"""The report columns of an entry whose facts cannot be read (reports and exports read it in Python)."""


@memo("ledger.sqlite.labels", 4096)
def _labels_json(labels: tuple[str, ...]) -> str:
    """A call's scopes as the journal's ``r_scopes`` keeps them (JSON); calls repeat their scopes."""
    return json.dumps(labels)


class JournalSql:
    """The report statements of one journal table (``table``: its quoted name)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.unfilled = f"SELECT seq, event, scopes, amounts, data, res_id FROM {table} WHERE seq > ? AND (r_calls IS NULL OR r_export IS NULL) ORDER BY seq LIMIT {_FILL_CHUNK}"  # noqa: E501
        self.put_facts = f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in COLUMNS)} WHERE seq = ?"


def migrate(
    db: sqlite3.Connection, sql: JournalSql, done: Callable[[], bool], mark: Callable[[], None]
) -> None:
    """Give an older journal table its report columns (``done``/``mark``: whether that happened already
    for this namespace, and record that it did). Its rows are filled by the first report (``fill``):
    opening the store stays instant, whatever the journal's length."""
    if done():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({sql.table})")}
        for name, kind in zip(COLUMNS, _TYPES, strict=True):
            if name not in have:
                db.execute(f"ALTER TABLE {sql.table} ADD COLUMN {name} {kind}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    mark()


def fill(db: sqlite3.Connection, sql: JournalSql) -> None:
    """Fill the report columns of the rows that lack them (written before the migration, or by an
    older version of budgetguard since), in chunks of short write transactions."""
    after: int | None = -1
    while after is not None:
        after = _fill_chunk(db, sql, sql.unfilled, (after,))


def _fill_chunk(db: sqlite3.Connection, sql: JournalSql, select: str, args: tuple[int, ...]) -> int | None:
    """One short write transaction filling up to a chunk of rows; the last row's seq, or ``None``
    when there was nothing left."""
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(select, args).fetchall()
        updates = [
            (*_stored_facts(event, scopes, amounts, data, res_id), seq)
            for seq, event, scopes, amounts, data, res_id in rows
        ]
        db.executemany(sql.put_facts, updates)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return int(rows[-1][0]) if rows else None


def _stored_facts(event: str, scopes: str, amounts: str, data: str, res_id: str) -> tuple[Any, ...]:
    """``fact_columns`` of a stored row (its JSON unreadable: the row is one only Python reads)."""
    try:
        return fact_columns(event, json.loads(scopes), json.loads(amounts), json.loads(data), res_id)
    except ValueError:
        return _ODD_ROW


@dataclass(frozen=True, slots=True)
class Sums:
    """One group's sums (see ``ReportRow``)."""

    key: str
    calls: int
    refused: int
    routed: int
    shadow_refused: int
    input_tokens: int
    output_tokens: int
    cost_nano: int
    estimated_nano: int
    ratios: int
    """How many calls have an estimate (the size of the ratio distribution)."""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A report's groups and total, with each group's (actual, estimate) pairs when asked for."""

    rows: list[Sums]
    total: Sums
    pairs: dict[str, bytes]
    """Per group key, its calls' (actual, estimate) in nano-USD, interleaved int64 (``array("q")``
    bytes: ``pairs_of``), in no particular order; empty when the distributions were not asked for."""
    lists: bool
    """The rows are per distinct list of scopes (their keys: the lists' JSON), not per key."""


EVENTS = "('committed', 'refused', 'shadow_refused')"
"""SQL: the journal events a report reads (an administration's events are not calls: no sums of theirs)."""


def sum_parts(flag_set: Callable[[str], str]) -> tuple[str, ...]:
    """A group's ``Sums`` after its key, in SQL, given the dialect's test that a key of ``r_flags``
    (JSON text) is set (``flag_set``: SQLite's ``json_extract``, PostgreSQL's ``->>``)."""
    return (
        "coalesce(sum(CASE WHEN event = 'committed' THEN r_calls END), 0)",
        "count(CASE WHEN event = 'refused' THEN 1 END)",
        f"count(CASE WHEN event = 'refused' AND {flag_set(FALLBACK)} THEN 1 END)",
        "count(CASE WHEN event = 'shadow_refused' THEN 1 END)",
        "coalesce(sum(CASE WHEN event = 'committed' THEN r_in END), 0)",
        "coalesce(sum(CASE WHEN event = 'committed' THEN r_out END), 0)",
        "coalesce(sum(CASE WHEN event = 'committed' THEN r_cost END), 0)",
        "coalesce(sum(r_estimate), 0)",
        "count(r_estimate)",
    )


_SUM_PARTS = sum_parts(lambda key: f"json_extract(r_flags, '$.{key}') IS NOT NULL")
"""A group's ``Sums`` after its key, in SQLite's SQL."""
SUMS = ", ".join(_SUM_PARTS)
_SCOPES = "coalesce(r_scopes, scopes)"
_DAY = "date((ts - (ts % 1000 + 1000) % 1000) / 1000, 'unixepoch')"
_KEYS = {"model": "r_model", "function": "r_function", "day": _DAY}
"""The key column of a grouping with one key per row (any other: per distinct list of scopes)."""
_PAIRS = "budgetguard_pairs"
"""The aggregate (``_Pairs``) that gathers a group's (actual, estimate) pairs."""


class _Pairs:
    """A SQLite aggregate: a group's (actual, estimate) pairs as ``array("q")`` bytes (SQL integers are
    int64: exact, and 16 bytes a call)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = array("q")

    def step(self, actual: int, estimate: int) -> None:
        self.held.append(actual)
        self.held.append(estimate)

    def finalize(self) -> bytes:
        return self.held.tobytes()


def pairs_of(blob: bytes) -> tuple[array[int], array[int]]:
    """The actual and estimate arrays of ``Aggregate.pairs``' bytes (one group's, or several joined)."""
    held = array("q")
    held.frombytes(blob)
    return held[0::2], held[1::2]


def aggregate(
    db: sqlite3.Connection,
    sql: JournalSql,
    since: int,
    until: int,
    scope: str | None,
    by: str,
    *,
    ratios: bool,
) -> Aggregate | None:
    """The report's sums over ``[since, until)`` (ms) of the calls made on ``scope`` (all: ``None``)
    grouped ``by``, with each group's (actual, estimate) pairs if ``ratios``; ``None`` when a row of
    the range must be read in Python (see the module).

    One scan sums the rows per key or, by scope (or scope kind), per distinct list of the call's
    scopes (``Aggregate.lists``: the caller spreads those sums over each list's keys; they add up
    exactly, and the scopes' JSON is read once per list, not once per row). The same ``GROUP BY``
    gathers the pairs (``_Pairs``), from which the caller takes the distributions by the rule the
    streamed report follows (``RatioSample``): no second scan, no ordering of rows in SQL."""
    where = f"ts >= ? AND ts < ? AND event IN {EVENTS}"
    args: tuple[Any, ...] = (since, until)
    if scope is not None:
        where += f" AND EXISTS (SELECT 1 FROM json_each({_SCOPES}) WHERE value = ?)"
        args += (scope,)
    key = _KEYS.get(by)
    pairs = f", {_PAIRS}(r_cost, r_estimate) FILTER (WHERE r_estimate IS NOT NULL)" if ratios else ""
    grouped = (
        f"SELECT {key or _SCOPES} AS k, {SUMS}, count(CASE WHEN r_calls IS NULL THEN 1 END), "
        f"count(CASE WHEN r_calls = {ODD} THEN 1 END){pairs} FROM {sql.table} WHERE {where} GROUP BY k"
    )
    if ratios:
        db.create_aggregate(_PAIRS, 2, _Pairs)  # type: ignore[arg-type]
    width = len(_SUM_PARTS) + 1
    for attempt in (1, 2):
        found = db.execute(grouped, args).fetchall()  # (one statement: one snapshot)
        unfilled = any(r[width] for r in found)
        if not (unfilled and attempt == 1):  # (else: rows an older version wrote, filled below)
            if unfilled or any(r[width + 1] for r in found):
                return None
            rows = [Sums(*r[:width]) for r in found]
            total = Sums("total", *(sum(r[i] for r in found) for i in range(1, width)))
            held = {r[0]: r[width + 2] for r in found if r[width + 2]} if ratios else {}
            return Aggregate(rows, total, held, lists=key is None)
        fill(db, sql)
    raise AssertionError("unreachable")  # pragma: no cover

"""Reports aggregated inside SQLite: the journal's report columns, their migration, and ``GROUP BY``.

Each journal row carries, beside its JSON, what a report counts of it (``_facts.facts``): calls,
input and output tokens, cost, the estimate beside that cost, the model and function keys, and the
call's scopes when they differ from the charged ones. A report then sums columns over a time range
(the ``ts`` index) in one statement per grouping, and takes each group's actual / estimate
distribution (median, p95, max by nearest rank) without ordering rows by ratio: a histogram of each
key's ratios in buckets of the (correctly rounded, so monotone) float ratio finds the bucket of each
rank, and only those buckets' rows come back to Python, which orders them exactly (``_distributions``).

A database made before these columns gets them on open (``migrate``: instant). Its rows, and those
an older process still writes, have none until a report finds one in its range and fills every
such row (``fill``, in chunks of short write transactions), once. A row whose facts could not be
read (``calls = -1``, a corrupt usage) makes ``aggregate`` answer ``None``: the caller reads the range
in Python instead.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from .._cache import memo
from ._facts import ODD, facts
from ._meta import expand

if TYPE_CHECKING:
    import sqlite3  # (not at ``import budgetguard``: ``_report`` imports this module)

__all__ = ["COLUMNS", "Aggregate", "JournalSql", "aggregate", "fact_columns", "fill", "migrate"]

COLUMNS = ("r_calls", "r_in", "r_out", "r_cost", "r_estimate", "r_model", "r_function", "r_scopes")
"""The journal's report columns (``fact_columns``), after its original ones."""
_TYPES = ("INTEGER", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "TEXT", "TEXT", "TEXT")
DDL = ", ".join(f"{name} {kind}" for name, kind in zip(COLUMNS, _TYPES, strict=True))
"""The report columns in the journal table's ``CREATE TABLE``."""
_FILL_CHUNK = 2000
_EXACT_FLOAT = 2**53
"""Below it, an int is a double exactly, and ``a * 1.0 / b`` is a / b correctly rounded (monotone)."""


def fact_columns(
    event: str, scopes: Sequence[str], amounts: dict[str, Any], data: dict[str, Any]
) -> tuple[Any, ...]:
    """The report columns of a journal entry (all NULL but ``r_calls = -1`` when they cannot be read)."""
    found = facts(event, scopes, amounts, expand(data, scopes, amounts))  # (the guard's compact form: _meta)
    if found is None:
        return (ODD, *(None,) * (len(COLUMNS) - 1))
    labels = found[7]
    return (*found[:7], None if labels == list(scopes) else _labels_json(tuple(labels)))


@memo("ledger.sqlite.labels", 4096)
def _labels_json(labels: tuple[str, ...]) -> str:
    """A call's scopes as the journal's ``r_scopes`` keeps them (JSON); calls repeat their scopes."""
    return json.dumps(labels)


class JournalSql:
    """The report statements of one journal table (``table``: its quoted name)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.unfilled = f"SELECT seq, event, scopes, amounts, data FROM {table} WHERE seq > ? AND r_calls IS NULL ORDER BY seq LIMIT {_FILL_CHUNK}"  # noqa: E501
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
            (*_stored_facts(event, scopes, amounts, data), seq) for seq, event, scopes, amounts, data in rows
        ]
        db.executemany(sql.put_facts, updates)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return int(rows[-1][0]) if rows else None


def _stored_facts(event: str, scopes: str, amounts: str, data: str) -> tuple[Any, ...]:
    """``fact_columns`` of a stored row (its JSON unreadable: the row is one only Python reads)."""
    try:
        return fact_columns(event, json.loads(scopes), json.loads(amounts), json.loads(data))
    except ValueError:
        return (ODD, *(None,) * (len(COLUMNS) - 1))


@dataclass(frozen=True, slots=True)
class Sums:
    """One group's sums (see ``ReportRow``)."""

    key: str
    calls: int
    refused: int
    input_tokens: int
    output_tokens: int
    cost_nano: int
    estimated_nano: int
    ratios: int
    """How many calls have an estimate (the size of the ratio distribution)."""


Ranked = dict[str, dict[int, tuple[int, int]]]
"""Per key, the row (actual, estimate) at each of its nearest ranks (``nearest_ranks``)."""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A report's groups and total, with the rows their ratio distributions need (``Ranked``)."""

    rows: list[Sums]
    total: Sums
    ranked: Ranked
    total_ranked: Ranked
    lists: bool
    """The rows are per distinct list of scopes (their keys: the lists' JSON), not per key."""


_SUM_PARTS = (
    "coalesce(sum(CASE WHEN event = 'committed' THEN r_calls END), 0)",
    "count(CASE WHEN event = 'refused' THEN 1 END)",
    "coalesce(sum(CASE WHEN event = 'committed' THEN r_in END), 0)",
    "coalesce(sum(CASE WHEN event = 'committed' THEN r_out END), 0)",
    "coalesce(sum(CASE WHEN event = 'committed' THEN r_cost END), 0)",
    "coalesce(sum(r_estimate), 0)",
    "count(r_estimate)",
)
"""A group's ``Sums`` after its key, in SQL."""
_SUMS = ", ".join(_SUM_PARTS)
_SCOPES = "coalesce(r_scopes, scopes)"
_E_SCOPES = "coalesce(e.r_scopes, e.scopes)"
_KIND = "CASE WHEN instr(s.value, ':') THEN substr(s.value, 1, instr(s.value, ':') - 1) ELSE s.value END"
_ID = (
    "CASE WHEN s.value IS NULL THEN '(none)' WHEN instr(s.value, ':') "
    "THEN substr(s.value, instr(s.value, ':') + 1) ELSE '' END"
)
_DAY = "date((ts - (ts % 1000 + 1000) % 1000) / 1000, 'unixepoch')"
PERCENTILES = (50, 95, 100)


def _keyed(by: str) -> tuple[str, str, tuple[Any, ...]]:
    """A key column's expression, or for scopes the key's expression over ``s`` (each scope of the list
    ``g.t``), the join that makes ``s``, and its arguments."""
    if by == "model":
        return "r_model", "", ()
    if by == "function":
        return "r_function", "", ()
    if by == "day":
        return _DAY, "", ()
    if by == "scope":
        return "coalesce(s.value, '(none)')", "LEFT JOIN json_each(g.t) AS s", ()
    return _ID, f"LEFT JOIN json_each(g.t) AS s ON {_KIND} = ?", (by,)


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
    grouped ``by``, with the rows the ratio distributions need (``ratios``); ``None`` when a row of the
    range must be read in Python (see the module).

    One scan sums the rows per key or, by scope (or scope kind), per distinct list of the call's
    scopes (``Aggregate.lists``: the caller spreads those sums over each list's keys; they add up
    exactly, and the scopes' JSON is read once per list, not once per row)."""
    where = "ts >= ? AND ts < ? AND event IN ('committed', 'refused')"
    args: tuple[Any, ...] = (since, until)
    if scope is not None:
        where += f" AND EXISTS (SELECT 1 FROM json_each({_SCOPES}) WHERE value = ?)"
        args += (scope,)
    entries = f"SELECT ts, event, scopes, {', '.join(COLUMNS)} FROM {sql.table} WHERE {where}"
    key, join, _ = _keyed(by)
    grouped = (
        f"SELECT {_SCOPES if join else key} AS k, {_SUMS}, count(CASE WHEN r_calls IS NULL THEN 1 END), "
        f"count(CASE WHEN r_calls = {ODD} OR r_estimate >= {_EXACT_FLOAT} OR (r_estimate IS NOT NULL "
        f"AND r_cost >= {_EXACT_FLOAT}) THEN 1 END) FROM ({entries}) GROUP BY k"
    )
    for attempt in (1, 2):
        db.execute("BEGIN")  # (one snapshot for every statement below)
        try:
            found = db.execute(grouped, args).fetchall()
            unfilled = any(r[-2] for r in found)
            if not (unfilled and attempt == 1):  # (else: rows an older version wrote, filled below)
                if unfilled or any(r[-1] for r in found):
                    return None
                rows = [Sums(*r[:-2]) for r in found]
                total = Sums("total", *(sum(r[i] for r in found) for i in range(1, len(_SUM_PARTS) + 1)))
                if not (ratios and total.ratios):
                    return Aggregate(rows, total, {}, {}, lists=bool(join))
                ranked, total_ranked = _distributions(db, entries, args, by)
                return Aggregate(rows, total, ranked, total_ranked, lists=bool(join))
        finally:
            db.execute("COMMIT")
        fill(db, sql)
    raise AssertionError("unreachable")  # pragma: no cover


def nearest_ranks(n: int) -> list[int]:
    """The nearest ranks of the median, p95 and max among ``n`` (``calibration.nearest_rank``)."""
    return [max((p * n + 99) // 100, 1) for p in PERCENTILES]


_BUCKETS = 64
_BUCKET = f"CAST(r_cost * 1.0 / r_estimate * {_BUCKETS} AS INTEGER)"
"""A ratio's bucket: monotone in the exact ratio (a correctly rounded float, scaled by a power of two,
truncated), so every ratio of a lower bucket is below every ratio of a higher one."""


def _distributions(
    db: sqlite3.Connection, entries: str, args: tuple[Any, ...], by: str
) -> tuple[Ranked, Ranked]:
    """Each key's and the total's rows at their nearest ranks (``Ranked``) without ordering the rows by
    ratio: per key, a histogram of the ratios' buckets (``_BUCKET``) finds the bucket and the place in it of
    each rank; one more scan reads back only the rows of those buckets, ordered exactly in Python. By
    scope or scope kind a row counts once per key of its list of scopes (as ``_spread`` spreads the
    lists' sums), and the total has its own histogram."""
    key, join, key_args = _keyed(by)
    rated = f"SELECT *, {_SCOPES} AS t FROM ({entries}) WHERE r_estimate IS NOT NULL"
    keyed, keyed_args = f"SELECT {key} AS k, r_cost, r_estimate FROM ({rated}) AS g {join}", args + key_args
    per_key: dict[str, dict[int, int]] = {}
    for k, bucket, count in db.execute(
        f"SELECT k, {_BUCKET} AS b, count(*) FROM ({keyed}) GROUP BY k, b", keyed_args
    ):
        per_key.setdefault(k, {})[bucket] = count
    total: dict[int, int] = {}
    if join:
        total = dict(
            db.execute(f"SELECT {_BUCKET} AS b, count(*) FROM ({rated}) GROUP BY b", args).fetchall()
        )
    else:  # (each row has one key)
        for found in per_key.values():
            for bucket, count in found.items():
                total[bucket] = total.get(bucket, 0) + count
    wanted = {k: _places(found) for k, found in per_key.items()}
    total_wanted = _places(total)
    pairs = json.dumps([[k, b] for k, places in wanted.items() for b in places])
    held: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for k, a, b, bucket in db.execute(
        f"SELECT k, r_cost, r_estimate, {_BUCKET} AS b FROM ({keyed}) WHERE (k, b) IN "
        "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
        (*keyed_args, pairs),
    ):
        held.setdefault((k, bucket), []).append((a, b))
    total_held: dict[int, list[tuple[int, int]]] = {}
    for a, b, bucket in db.execute(
        f"SELECT r_cost, r_estimate, {_BUCKET} AS b FROM ({rated}) "
        "WHERE b IN (SELECT value FROM json_each(?))",
        (*args, json.dumps(list(total_wanted))),
    ):
        total_held.setdefault(bucket, []).append((a, b))
    ranked = {k: _picked(places, k, held) for k, places in wanted.items()}
    return ranked, {"": _picked(total_wanted, "", {("", b): rows for b, rows in total_held.items()})}


def _places(histogram: dict[int, int]) -> dict[int, list[tuple[int, int]]]:
    """Per bucket, the nearest ranks it holds and their places in it (1: its lowest ratio)."""
    n = sum(histogram.values())
    ranks = iter(sorted(set(nearest_ranks(n))))
    rank = next(ranks, None)
    places: dict[int, list[tuple[int, int]]] = {}
    below = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        while rank is not None and rank <= below + count:
            places.setdefault(bucket, []).append((rank, rank - below))
            rank = next(ranks, None)
        below += count
    return places


def _picked(
    places: dict[int, list[tuple[int, int]]], key: str, rows: dict[tuple[str, int], list[tuple[int, int]]]
) -> dict[int, tuple[int, int]]:
    """Per nearest rank, its row (actual, estimate): the bucket's rows ordered by their float ratio,
    the tie of equal floats at the place ordered exactly (as ``RatioSample.ratios``)."""
    out: dict[int, tuple[int, int]] = {}
    for bucket, found in places.items():
        held = rows[key, bucket]
        floats = sorted(a / b for a, b in held)
        for rank, place in found:
            value = floats[place - 1]
            lo = bisect_left(floats, value)
            tie = sorted((Fraction(a, b), a, b) for a, b in held if a / b == value)
            out[rank] = tie[place - 1 - lo][1:]
    return out

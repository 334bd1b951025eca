"""Reports aggregated inside PostgreSQL: ``GROUP BY`` over the journal's report columns.

The columns are those of the SQLite journal (``_sqlite_report.COLUMNS``, computed by ``_facts`` when an
entry is written), and so are the sums (``_sqlite_report.sum_parts``, given PostgreSQL's test of a
JSON flag): this module only says how PostgreSQL groups by day, filters by scope and hands each
group's (actual, estimate) pairs to Python (``array_agg``), from which the caller takes the
distributions by the streamed report's rule. PostgreSQL sums ``bigint`` columns as ``numeric``: no
sum overflows.

A row whose facts could not be read (``r_calls = -1``, a corrupt usage, a text with a NUL) makes
``aggregate`` answer ``None``: the caller reads the range in Python instead; so does a scope filter on a
range whose scopes hold a NUL (which PostgreSQL's JSON functions cannot read).
"""

from __future__ import annotations

import json
from array import array
from dataclasses import fields
from typing import Any

from ._facts import ODD
from ._postgres_tx import JOURNAL
from ._sqlite_report import EVENTS, Aggregate, Sums, sum_parts

__all__ = ["aggregate"]

_SCOPES = "coalesce(r_scopes, scopes)"
_DAY = (
    "to_char(date '1970-01-01' + ((ts - mod(mod(ts, 86400000) + 86400000, 86400000)) / 86400000)::int, "
    "'YYYY-MM-DD')"
)
"""A day key: the UTC date of ``ts`` (ms), in integer arithmetic."""
_KEYS = {"model": "r_model", "function": "r_function", "day": _DAY}
"""The key column of a grouping with one key per row (any other: per distinct list of scopes)."""
SUMS = ", ".join(sum_parts(lambda key: f"(r_flags::json -> '{key}') IS NOT NULL"))
"""A group's ``Sums`` after its key, in PostgreSQL's SQL (``r_flags``: JSON text or NULL; ``->``: the key
is there, as Python's ``in`` reads it)."""
_NUL = "position('\\u0000' in " + _SCOPES + ") > 0"
"""SQL: the row's scopes hold a NUL (escaped in their JSON), which ``json`` cannot turn into text."""


def aggregate(cur: Any, namespace: str, since: int, until: int, scope: str | None, by: str,
              *, ratios: bool) -> Aggregate | None:  # fmt: skip
    """The report's sums over ``[since, until)`` (ms) of the calls made on ``scope`` (all: ``None``)
    grouped ``by``, with each group's (actual, estimate) pairs if ``ratios`` (``_sqlite_report.
    aggregate`` says how the caller reads them); ``None`` when a row must be read in Python."""
    where = f"ns = %s AND ts >= %s AND ts < %s AND event IN {EVENTS}"
    args: list[Any] = [namespace, since, until]
    odd = f"count(CASE WHEN r_calls = {ODD} THEN 1 END)"
    if scope is not None:
        if "\0" in scope:
            return None
        # (a quick test of the JSON text first, then the exact one, unless the text holds a NUL)
        where += (
            f" AND position(%s in {_SCOPES}) > 0 AND ({_NUL} OR EXISTS "
            f"(SELECT 1 FROM json_array_elements_text({_SCOPES}::json) AS e (v) WHERE e.v = %s))"
        )
        args += [json.dumps(scope), scope]
        odd = f"count(CASE WHEN r_calls = {ODD} OR {_NUL} THEN 1 END)"
    key = _KEYS.get(by)
    pairs = ", array_agg(ARRAY[r_cost, r_estimate]) FILTER (WHERE r_estimate IS NOT NULL)" if ratios else ""
    cur.execute(
        f"SELECT {key or _SCOPES} AS k, {SUMS}, {odd}{pairs} FROM {JOURNAL} WHERE {where} GROUP BY k", args
    )
    found = cur.fetchall()
    names = [f.name for f in fields(Sums)][1:]
    width = len(names) + 1
    if any(r[width] for r in found):
        return None
    rows = [Sums(r[0], *(int(n) for n in r[1:width])) for r in found]
    total = Sums("total", *(sum(getattr(s, name) for s in rows) for name in names))
    held = {}
    if ratios:
        for r in found:
            if r[width + 1]:
                held[r[0]] = array("q", [n for pair in r[width + 1] for n in pair]).tobytes()
    return Aggregate(rows, total, held, lists=key is None)

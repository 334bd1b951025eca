"""Reports and exports from the ledger's journal: spend by user, feature, model or day.

A committed journal entry carries the USD amount its counters were charged (or, for calls without a
USD budget, the same cost in its data), so the report's totals equal the counters to the nano-USD.
The journal is bounded (each store drops its oldest entries): ``read_journal`` says when the asked
range starts before what the journal still covers.
"""

from __future__ import annotations

import json
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import chain
from operator import attrgetter, truediv
from typing import Any

from ._budgets import Scope
from ._calibration import Ratios
from ._errors import ConfigurationError
from ._ledger import JournalEntry, Ledger
from ._ledger._base import JournalQuery
from ._ledger._facts import call_scopes as scopes_of
from ._ledger._facts import calls, cost_of, estimate_pair, function_key, model_key, tokens
from ._ledger._meta import FALLBACK
from ._ledger._sqlite_report import Aggregate, Sums, pairs_of
from ._money import to_usd

__all__ = [
    "Coverage",
    "Journal",
    "ReportRow",
    "Summary",
    "coverage",
    "entry_cost",
    "parse_span",
    "parse_when",
    "read_journal",
    "report",
    "stream_journal",
    "summarize",
]

_SPAN = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: str) -> timedelta | None:
    """``"7d"``, ``"24h"``, ``"30m"``, ``"2w"`` as a ``timedelta``; ``None`` for any other text."""
    span = _SPAN.match(text.strip().lower())
    return None if span is None else timedelta(**{_UNITS[span[2]]: int(span[1])})


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``"7d"``, ``"24h"``, ``"30m"``, ``"2w"`` ago, or an ISO date / date-time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    span = parse_span(text)
    if span is not None:
        return now - span
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"cannot read the time {text!r}: use a span like 7d, 24h, 30m, 2w or a date like 2026-11-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Coverage:
    """A report's or an export's time range, and since when the journal is complete
    (``Ledger.journal_complete_since``: ``None`` if it never dropped an entry)."""

    since: datetime | None
    until: datetime | None
    complete_since: datetime | None

    @property
    def incomplete(self) -> bool:
        """The range starts before the journal's coverage: entries of it may have been dropped."""
        return self.complete_since is not None and (self.since is None or self.since < self.complete_since)

    def warning(self, what: str = "report") -> str | None:
        """What to tell the reader of a ``what`` (report, export) built on an incomplete range."""
        if not self.incomplete:
            return None
        return (
            f"the journal covers only from {_shown(self.complete_since)}; spend before that is not in "
            f"this {what} (to keep more, raise journal_maxlen or journal_retention_days in the store's URL)"
        )


@dataclass(frozen=True, slots=True)
class Journal:
    """The journal's entries in a time range, as a report or an export reads them, and since when the
    journal is complete (``Ledger.journal_complete_since``: ``None`` if it never dropped an entry)."""

    entries: list[JournalEntry]
    since: datetime | None
    until: datetime | None
    complete_since: datetime | None

    @property
    def coverage(self) -> Coverage:
        return Coverage(self.since, self.until, self.complete_since)

    @property
    def incomplete(self) -> bool:
        """The range starts before the journal's coverage: entries of it may have been dropped."""
        return self.coverage.incomplete

    def warning(self, what: str = "report") -> str | None:
        """What to tell the reader of a ``what`` (report, export) built on an incomplete range."""
        return self.coverage.warning(what)


def _shown(moment: datetime | None) -> str:
    assert moment is not None
    moment = moment.astimezone(UTC)
    if moment.microsecond:  # rounded up: everything from the instant shown is covered
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a time zone is UTC, as ``parse_when`` reads it."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def read_journal(
    ledger: Ledger, *, since: datetime | None, until: datetime | None = None, scope: str | None = None
) -> Journal:
    """The entries from ``since`` to ``until``; with ``scope``, those of the calls made on it, whether or
    not a budget charged it (the ledger's own scope filter sees only the charged scopes). A time without a
    time zone is UTC, as ``parse_when`` reads it. (``summarize`` and ``stream_journal`` read a range of
    any length without holding it.)"""
    entries = list(stream_journal(ledger, since=since, until=until, scope=scope))
    return Journal(entries, _utc(since), _utc(until), ledger.journal_complete_since())


def stream_journal(
    ledger: Ledger, *, since: datetime | None, until: datetime | None = None, scope: str | None = None
) -> Iterator[JournalEntry]:
    """``read_journal``'s entries, streamed (``Ledger.stream_history``). Read ``coverage`` after them:
    a trim meanwhile is then not missed."""
    entries = ledger.stream_history(since=_utc(since), until=_utc(until))
    if scope is None:
        return entries
    label = str(Scope.parse(scope))
    return (e for e in entries if label in call_scopes(e))


def coverage(ledger: Ledger, *, since: datetime | None, until: datetime | None = None) -> Coverage:
    """The range and since when the journal is complete, read now (after reading the range)."""
    return Coverage(_utc(since), _utc(until), ledger.journal_complete_since())


def entry_cost(entry: JournalEntry) -> int:
    """What a committed entry cost, in nano-USD (0 for refusals, releases and expiries)."""
    return cost_of(entry.event, entry.amounts, entry.data)


def call_scopes(entry: JournalEntry) -> list[str]:
    """Every scope of the call (also those without a budget), falling back to the charged ones."""
    return scopes_of(entry.data, entry.scopes)


def _keys(entry: JournalEntry, by: str) -> list[str]:
    if by == "model":
        return [model_key(entry.data)]
    if by == "day":
        return [entry.time.date().isoformat()]
    if by == "function":
        return [function_key(entry.data)]
    return _scope_keys(call_scopes(entry), by)


def _scope_keys(labels: list[str], by: str) -> list[str]:
    """The keys of a call on ``labels`` by ``scope`` or by a scope kind (``user``: the ids of its users)."""
    if by == "scope":
        return labels or ["(none)"]
    ids = [s.partition(":")[2] for s in labels if s.partition(":")[0] == by]
    return ids or ["(none)"]


PERCENTILES = (50, 95, 100)


def nearest_ranks(n: int) -> list[int]:
    """The nearest ranks of the median, p95 and max among ``n`` (``calibration.nearest_rank``)."""
    return [max((p * n + 99) // 100, 1) for p in PERCENTILES]


class RatioSample:
    """actual / estimate of many calls, kept as two int64 arrays (16 bytes a call, not a ``Fraction``
    each), with the exact nearest-rank distribution (``ratios``)."""

    __slots__ = ("actual", "estimate")

    def __init__(self, actual: Any = None, estimate: Any = None) -> None:
        self.actual: Any = array("q") if actual is None else actual
        self.estimate: Any = array("q") if estimate is None else estimate

    @classmethod
    def of_pairs(cls, blob: bytes) -> RatioSample:
        """The sample of a store's pairs (``Aggregate.pairs``: one group's, or several joined)."""
        return cls(*pairs_of(blob))

    def add(self, actual: int, estimate: int) -> None:
        try:
            self.actual.append(actual)
            self.estimate.append(estimate)
        except OverflowError:  # (beyond int64: plain lists from now on)
            self.actual, self.estimate = list(self.actual)[: len(self.estimate)], list(self.estimate)
            self.add(actual, estimate)

    def append(self, ratio: Fraction) -> None:
        self.add(ratio.numerator, ratio.denominator)

    def __len__(self) -> int:
        return len(self.estimate)

    def __iter__(self) -> Iterator[Fraction]:
        return map(Fraction, self.actual, self.estimate)

    def floats(self) -> list[float]:
        """Each call's ratio as a float (int / int: correctly rounded, so in the exact ratios' order)."""
        return list(map(truediv, self.actual, self.estimate))

    def ratios(self) -> Ratios | None:
        """Median, p95 and max by nearest rank, exactly: ordered by the float ratio (int / int is
        correctly rounded, so never out of order), each rank's tie of equal floats ordered exactly."""
        floats = self.floats()
        return ranked([(self, floats)], sorted(floats))


def ranked(parts: Sequence[tuple[RatioSample, list[float]]], ordered: list[float]) -> Ratios | None:
    """``RatioSample.ratios`` of the samples ``parts`` together (each with its ``floats``), given all
    their floats in order (``ordered``)."""
    n = len(ordered)
    if not n:
        return None
    picks = []
    for rank in nearest_ranks(n):
        value = ordered[rank - 1]
        lo = bisect_left(ordered, value)
        if bisect_right(ordered, value) - lo == 1:  # (one call has that float: the common case)
            for sample, floats in parts:
                if value in floats:
                    at = floats.index(value)
                    picks.append(Fraction(sample.actual[at], sample.estimate[at]))
                    break
            continue
        tie = sorted(
            Fraction(a, b)
            for sample, _ in parts
            for a, b in zip(sample.actual, sample.estimate, strict=True)
            if a / b == value
        )
        picks.append(tie[rank - 1 - lo])
    return Ratios(n, *picks)


@dataclass
class ReportRow:
    key: str
    calls: int = 0
    refused: int = 0
    """Refused reservations: those routed to a cheaper model (``routed``) and those raised to the caller."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    estimated_nano: int = 0
    """The worst-case estimates of the calls that carry one (``estimated_usd``)."""
    ratios: RatioSample = field(default_factory=RatioSample, repr=False)
    """actual / estimate of each of those calls (self-calibration), when aggregated in Python."""
    distribution: Ratios | None = field(default=None, repr=False)
    """Their distribution when the store aggregated it (``ratios`` is then empty)."""
    routed: int = 0
    """Of the refusals, those routed to a cheaper model (the call went on): ``refused - routed`` reached
    the caller."""
    shadow_refused: int = 0
    """Reservations admitted in shadow that would have been refused (``mode="shadow"``)."""

    @property
    def cost(self) -> Decimal:
        return to_usd(self.cost_nano)

    @property
    def estimated(self) -> Decimal:
        return to_usd(self.estimated_nano)

    @property
    def calibration(self) -> Ratios | None:
        """The distribution of actual / estimate (median, p95, max), ``None`` without estimates."""
        return self.distribution if self.distribution is not None else self.ratios.ratios()

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "calls": self.calls,
            "refused": self.refused,
            "routed": self.routed,
            "shadow_refused": self.shadow_refused,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": str(self.cost),
            "estimated_usd": str(self.estimated),
            **_ratio_columns(self.calibration),
        }


def _ratio_columns(ratios: Ratios | None) -> dict[str, str]:
    shown = ratios.as_dict() if ratios is not None else dict.fromkeys(("median", "p95", "max"), "")
    return {f"ratio_{name}": value for name, value in shown.items()}


def report(entries: Iterable[JournalEntry], by: str) -> tuple[list[ReportRow], ReportRow]:
    """Rows grouped ``by`` a scope kind (user, feature, ...), ``scope``, ``model``, ``function`` (the
    decorated function) or ``day``, most expensive first, and the total. Calls are committed attempts; a
    call counts once per key. Each row also sums the calls' worst-case estimates and keeps their
    actual / estimate ratios (``ReportRow.calibration``: how far below its reservation a call came).
    The entries are read once, as they come (a stream of any length)."""
    rows: dict[str, ReportRow] = {}
    total = ReportRow("total")
    for entry in entries:
        event = entry.event
        if event not in ("committed", "refused", "shadow_refused"):
            continue
        data = entry.data
        n_in, n_out = tokens(data)
        cost = cost_of(event, entry.amounts, data)
        pair = estimate_pair(event, entry.amounts, data)
        for row in [*(rows.setdefault(k, ReportRow(k)) for k in _keys(entry, by)), total]:
            if event == "refused":
                row.refused += 1
                row.routed += FALLBACK in data
                continue
            if event == "shadow_refused":
                row.shadow_refused += 1
                continue
            row.calls += calls(data)  # a job's line counts each of its calls
            row.input_tokens += n_in
            row.output_tokens += n_out
            row.cost_nano += cost
            if pair is not None:
                row.estimated_nano += pair[0]
                row.ratios.add(pair[1], pair[0])
    return _sorted(rows.values()), total


def _sorted(rows: Iterable[ReportRow]) -> list[ReportRow]:
    return sorted(rows, key=lambda r: (-r.cost_nano, r.key))


@dataclass(frozen=True, slots=True)
class Summary:
    """A report: its rows (most expensive first), the total, and the journal's coverage of the range."""

    rows: list[ReportRow]
    total: ReportRow
    coverage: Coverage


def summarize(
    ledger: Ledger,
    by: str,
    *,
    since: datetime | None,
    until: datetime | None = None,
    scope: str | None = None,
    ratios: bool = True,
) -> Summary:
    """``report(read_journal(...).entries, by)`` without holding the range: aggregated inside the store
    where it can (SQLite, PostgreSQL: ``GROUP BY`` over the journal's report columns, a store's
    ``aggregate_journal``), else streamed through ``report`` in chunks (memory, Redis). The numbers are
    the same either way."""
    found = None
    in_store = getattr(ledger, "aggregate_journal", None)
    if in_store is not None:
        query = JournalQuery.parse(_utc(since), _utc(until), None, None, None, None)
        label = None if scope is None else str(Scope.parse(scope))
        found = in_store(query.since, query.until, label, by, ratios=ratios)
    if found is not None:
        rows, total = _from_store(found, by)
    else:
        rows, total = report(stream_journal(ledger, since=since, until=until, scope=scope), by)
    return Summary(rows, total, coverage(ledger, since=since, until=until))


def _from_store(found: Aggregate, by: str) -> tuple[list[ReportRow], ReportRow]:
    """The report of a store's aggregate: its sums as rows (spread over the keys of each list of
    scopes), each row's distribution taken from its calls' pairs (``RatioSample``)."""
    pairs = found.pairs
    spread = _spread(found.rows, by) if found.lists else [(sums, [sums.key]) for sums in found.rows]
    rows = [_row(s) for s, _ in spread]
    total = _row(found.total)
    if pairs:  # (else the distributions were not asked for, or there are none)
        _distributions(pairs, [lists for _, lists in spread], rows, total)
    return _sorted(rows), total


def _row(sums: Sums) -> ReportRow:
    return ReportRow(sums.key, sums.calls, sums.refused, sums.input_tokens, sums.output_tokens,
                     sums.cost_nano, sums.estimated_nano, routed=sums.routed,
                     shadow_refused=sums.shadow_refused)  # fmt: skip


def _distributions(
    pairs: dict[str, bytes], lists: list[list[str]], rows: list[ReportRow], total: ReportRow
) -> None:
    """Each row's and the total's distribution from the groups' pairs (``lists``: each row's groups).
    The total is the rows' floats merged when each group is one row's (sorting sorted runs is cheap),
    else sorted anew; a row of every group once (``global``) has the total's. Consumes ``pairs``."""
    named = [[k for k in found if k in pairs] for found in lists]
    everywhere = [len(n) == len(pairs) == len(set(n)) for n in named]
    merged = sum(len(n) for n in named) == len(pairs) and not any(everywhere)  # (each group in one row)
    parts: list[tuple[RatioSample, list[float]]] = []
    runs: list[list[float]] = []
    if not merged:  # (first, and let go before the rows' samples are made)
        total.distribution = RatioSample.of_pairs(b"".join(pairs.values())).ratios()
    for row, groups, every in zip(rows, named, everywhere, strict=True):
        if groups and not every:  # (merged: each group is this row's alone, let go once read)
            sample = RatioSample.of_pairs(b"".join(pairs.pop(k) if merged else pairs[k] for k in groups))
            floats = sample.floats()
            ordered = sorted(floats)
            row.distribution = ranked([(sample, floats)], ordered)
            if merged:  # (kept for the total; else let go at once: memory stays one row's)
                parts.append((sample, floats))
                runs.append(ordered)
    if merged:
        total.distribution = ranked(parts, sorted(chain.from_iterable(runs)))
    for row, every in zip(rows, everywhere, strict=True):
        if every:
            row.distribution = total.distribution


_SUMMED = attrgetter(*(f.name for f in fields(Sums)[1:]))
"""A ``Sums``' numbers (all its fields but the key)."""


def _spread(lists: list[Sums], by: str) -> list[tuple[Sums, list[str]]]:
    """Sums per distinct list of scopes (its JSON) spread over each list's keys (``_scope_keys``), each
    with the lists it sums."""
    keys: dict[str, tuple[list[int], list[str]]] = {}
    for sums in lists:
        values = _SUMMED(sums)
        for key in _scope_keys(scopes_of({"scopes": json.loads(sums.key)}, ()), by):
            found = keys.get(key)
            if found is None:
                keys[key] = (list(values), [sums.key])
            else:
                added = found[0]
                for i, value in enumerate(values):
                    added[i] += value
                found[1].append(sums.key)
    return [(Sums(key, *values), names) for key, (values, names) in keys.items()]

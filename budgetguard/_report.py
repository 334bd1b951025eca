"""Reports and exports from the ledger's journal: spend by user, feature, model or day.

A committed journal entry carries the USD amount its counters were charged (or, for calls without a
USD budget, the same cost in its data), so the report's totals equal the counters to the nano-USD.
The journal is bounded (each store drops its oldest entries): ``read_journal`` says when the asked
range starts before what the journal still covers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ._budgets import Scope
from ._calibration import Ratios, by_function, estimate_and_cost
from ._errors import ConfigurationError
from ._ledger import JournalEntry, Ledger
from ._money import to_usd
from ._usage import Usage

__all__ = ["Journal", "ReportRow", "entry_cost", "export_row", "parse_when", "read_journal", "report"]

_SPAN = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``"7d"``, ``"24h"``, ``"30m"``, ``"2w"`` ago, or an ISO date / date-time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    span = _SPAN.match(text.strip().lower())
    if span:
        return now - timedelta(**{_UNITS[span[2]]: int(span[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"cannot read the time {text!r}: use a span like 7d, 24h, 30m, 2w or a date like 2026-11-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Journal:
    """The journal's entries in a time range, as a report or an export reads them, and since when the
    journal is complete (``Ledger.journal_complete_since``: ``None`` if it never dropped an entry)."""

    entries: list[JournalEntry]
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


def _shown(moment: datetime | None) -> str:
    assert moment is not None
    moment = moment.astimezone(UTC)
    if moment.microsecond:  # rounded up: everything from the instant shown is covered
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def read_journal(
    ledger: Ledger, *, since: datetime | None, until: datetime | None = None, scope: str | None = None
) -> Journal:
    """The entries from ``since`` to ``until``; with ``scope``, those of the calls made on it, whether or
    not a budget charged it (the ledger's own scope filter sees only the charged scopes). A time without a
    time zone is UTC, as ``parse_when`` reads it."""
    since, until = (t if t is None or t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    entries = ledger.history(since=since, until=until)
    complete_since = ledger.journal_complete_since()  # read after: a trim meanwhile is not missed
    if scope is not None:
        label = str(Scope.parse(scope))
        entries = [e for e in entries if label in call_scopes(e)]
    return Journal(entries, since, until, complete_since)


def entry_cost(entry: JournalEntry) -> int:
    """What a committed entry cost, in nano-USD (0 for refusals, releases and expiries)."""
    if entry.event != "committed":
        return 0
    charged = entry.amounts.get("usd")
    if charged is None:
        charged = entry.data.get("cost_nano", 0)
    return int(charged)


def _usage(entry: JournalEntry) -> Usage:
    raw = entry.data.get("usage")
    return Usage(**raw) if isinstance(raw, Mapping) else Usage()


def call_scopes(entry: JournalEntry) -> list[str]:
    """Every scope of the call (also those without a budget), falling back to the charged ones."""
    scopes = entry.data.get("scopes")
    return [str(s) for s in scopes] if isinstance(scopes, list | tuple) else list(entry.scopes)


def _keys(entry: JournalEntry, by: str) -> list[str]:
    if by == "model":
        return [entry.model or "(unknown)"]
    if by == "day":
        return [entry.time.date().isoformat()]
    if by == "function":
        return [by_function(entry)]
    if by == "scope":
        return call_scopes(entry) or ["(none)"]
    ids = [s.partition(":")[2] for s in call_scopes(entry) if s.partition(":")[0] == by]
    return ids or ["(none)"]


@dataclass
class ReportRow:
    key: str
    calls: int = 0
    refused: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    estimated_nano: int = 0
    """The worst-case estimates of the calls that carry one (``estimated_usd``)."""
    ratios: list[Fraction] = field(default_factory=list, repr=False)
    """actual / estimate of each of those calls (self-calibration)."""

    @property
    def cost(self) -> Decimal:
        return to_usd(self.cost_nano)

    @property
    def estimated(self) -> Decimal:
        return to_usd(self.estimated_nano)

    @property
    def calibration(self) -> Ratios | None:
        """The distribution of actual / estimate (median, p95, max), ``None`` without estimates."""
        return Ratios.of(self.ratios)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "calls": self.calls,
            "refused": self.refused,
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
    actual / estimate ratios (``ReportRow.calibration``: how far below its reservation a call came)."""
    rows: dict[str, ReportRow] = {}
    total = ReportRow("total")
    for entry in entries:
        if entry.event not in ("committed", "refused"):
            continue
        usage, cost = _usage(entry), entry_cost(entry)
        pair = estimate_and_cost(entry)
        for row in [*(rows.setdefault(k, ReportRow(k)) for k in _keys(entry, by)), total]:
            if entry.event == "refused":
                row.refused += 1
                continue
            row.calls += int(entry.data.get("calls", 1))  # a job's line counts each of its calls
            row.input_tokens += usage.total_input_tokens
            row.output_tokens += usage.total_output_tokens
            row.cost_nano += cost
            if pair is not None:
                row.estimated_nano += pair[0]
                row.ratios.append(Fraction(pair[1], pair[0]))
    return sorted(rows.values(), key=lambda r: (-r.cost_nano, r.key)), total


def export_row(entry: JournalEntry) -> dict[str, Any]:
    """One journal entry as a flat record for finance (CSV or JSON lines)."""
    usage = _usage(entry)
    return {
        "time": entry.time.isoformat(),
        "event": entry.event,
        "reservation_id": entry.reservation_id,
        "scopes": " ".join(call_scopes(entry)),
        "model": entry.model or "",
        "function": entry.data.get("function", ""),
        "attempt": entry.data.get("attempt", ""),
        "cost_usd": str(to_usd(entry_cost(entry))),
        "estimated_usd": entry.data.get("estimated_usd", ""),
        "input_tokens": usage.total_input_tokens,
        "output_tokens": usage.total_output_tokens,
        "amounts": dict(entry.amounts),
        "flags": {k: v for k, v in entry.data.items() if k not in _KNOWN},
    }


_KNOWN = {"model", "function", "attempt", "estimated_usd", "scopes", "usage", "cost_nano"}

"""What a report reads of one journal entry: its cost, tokens, calls, estimate and group keys (one rule,
shared by the streamed Python aggregate and the SQLite journal's report columns).

``facts`` computes them once from an entry's parts; the SQLite store writes them beside the entry
(``_sqlite_report``), so a report sums columns in SQL instead of reading every entry's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from .._cache import memo
from .._errors import ConfigurationError
from .._money import to_nano
from .._usage import Usage

__all__ = [
    "KNOWN",
    "ODD",
    "call_scopes",
    "calls",
    "cost_of",
    "entry_cost",
    "estimate_pair",
    "estimate_and_cost",
    "export_facts",
    "facts",
    "function_key",
    "model_key",
    "tokens",
]

ODD = -1
"""``facts``' calls for an entry whose facts cannot be computed (a report reads it in Python)."""


def cost_of(event: str, amounts: Mapping[str, Any], data: Mapping[str, Any]) -> int:
    """What a committed entry cost, in nano-USD (0 for refusals, releases and expiries)."""
    if event != "committed":
        return 0
    charged = amounts.get("usd")
    if charged is None:
        charged = data.get("cost_nano", 0)
    return int(charged)


def entry_cost(entry: Any) -> int:
    """``cost_of`` a ``JournalEntry``."""
    return cost_of(entry.event, entry.amounts, entry.data)


_TEXT_COUNTS = frozenset(("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                          "output_tokens", "reasoning_tokens"))  # fmt: skip


def tokens(data: Mapping[str, Any]) -> tuple[int, int]:
    """The call's total input and output tokens (its ``usage``, read as ``Usage``; none without one)."""
    raw = data.get("usage")
    if raw is None or (type(raw) is not dict and not isinstance(raw, Mapping)):  # (an ABC's check is slow)
        return 0, 0
    if raw.keys() <= _TEXT_COUNTS and _counts(raw.values()):
        get = raw.get  # (the common case, summed as ``Usage`` would, with its one other check)
        n_out = get("output_tokens", 0)
        if get("reasoning_tokens", 0) <= n_out:
            n_in = get("input_tokens", 0) + get("cache_read_tokens", 0) + get("cache_write_tokens", 0)
            return n_in + get("cache_write_1h_tokens", 0), n_out
    usage = Usage(**raw)
    return usage.total_input_tokens, usage.total_output_tokens


def _counts(values: Iterable[Any]) -> bool:
    """Every value is a non-negative ``int`` (a loop: cheaper than ``all`` of a generator)."""
    for v in values:  # noqa: SIM110
        if type(v) is not int or v < 0:
            return False
    return True


def calls(data: Mapping[str, Any]) -> int:
    """How many calls an entry counts (a job's line counts each of its calls)."""
    return int(data.get("calls", 1))


def _estimated_nano(data: Mapping[str, Any]) -> int | None:
    text = data.get("estimated_usd")
    return estimated_nano(text) if isinstance(text, str) else None


@memo("ledger.facts.estimate", 4096)
def estimated_nano(text: str) -> int | None:
    """An ``estimated_usd`` in nano-USD (``None``: not an exact amount); calls repeat their estimates."""
    try:
        return to_nano(Decimal(text))
    except (ArithmeticError, ConfigurationError, ValueError):
        return None


def estimate_pair(event: str, amounts: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(worst-case estimate, actual)`` in nano-USD of a committed call's entry, else ``None``."""
    if event != "committed":
        return None
    estimated = _estimated_nano(data)
    if not estimated:
        return None
    charged = amounts.get("usd")
    if charged is None:
        charged = data.get("cost_nano")
    if not isinstance(charged, int):
        return None
    return estimated, charged


def estimate_and_cost(entry: Any) -> tuple[int, int] | None:
    """``estimate_pair`` of a ``JournalEntry``."""
    return estimate_pair(entry.event, entry.amounts, entry.data)


def call_scopes(data: Mapping[str, Any], scopes: Sequence[str]) -> list[str]:
    """Every scope of the call (also those without a budget), falling back to the charged ones."""
    found = data.get("scopes")
    if found is None or not isinstance(found, (list, tuple)):  # (a tuple: no union made per call)
        return list(scopes)
    return [str(s) for s in found]


def model_key(data: Mapping[str, Any]) -> str:
    """A report's key ``--by model``."""
    value = data.get("model")
    return value if isinstance(value, str) and value else "(unknown)"


def function_key(data: Mapping[str, Any]) -> str:
    """A report's key ``--by function``: the decorated function, else ``(unknown)``."""
    value = data.get("function")
    return value if isinstance(value, str) else "(unknown)"


Facts = tuple[int, int, int, int, int | None, str, str, list[str]]


def facts(
    event: str, scopes: Sequence[str], amounts: Mapping[str, Any], data: Mapping[str, Any]
) -> Facts | None:
    """``(calls, input tokens, output tokens, cost, estimate or None, model key, function key, call
    scopes)`` of an entry, as a report counts them; ``None`` when they cannot be read (a corrupt usage:
    the report then reads the entry itself). The estimate is set only with an actual cost beside it."""
    try:
        pair = estimate_pair(event, amounts, data)
        n_in, n_out = tokens(data)
        found = (calls(data), n_in, n_out, cost_of(event, amounts, data), None if pair is None else pair[0],
                 model_key(data), function_key(data), call_scopes(data, scopes))  # fmt: skip
    except Exception:  # (the write goes on: the journal keeps what it was given)
        return None
    for n in found[:5]:  # (a loop, not ``any`` of a generator: this runs at every journal write)
        if type(n) is int and not _INT64_MIN <= n <= _INT64_MAX:
            return None  # (beyond what a SQL integer holds: the report reads the entry itself)
    return found


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

KNOWN = frozenset(("model", "function", "attempt", "estimated_usd", "scopes", "usage", "cost_nano"))
"""The data an export shows in columns of their own; the rest are its ``flags``."""

NO_MODEL, NO_FUNCTION, QUOTED = 1, 2, 4
"""``export_facts``' bits: the export's model is ``""`` (no model, or not a text), its function is
``""`` (none given), else the report columns ``r_model``/``r_function`` hold them; and one of them, the
estimate or the reservation id is a text that CSV or JSON would quote or escape (other than printable
ASCII, or with a comma, a double quote or a backslash: ``_sqlite_export`` renders only the others)."""


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable() and not ("," in text or '"' in text or "\\" in text)


@memo("ledger.facts.plain", 4096)
def _all_plain(model: str, function: str, estimated: str) -> bool:
    """``_plain`` of each (calls repeat their model, function and estimate)."""
    return _plain(model) and _plain(function) and _plain(estimated)


def export_facts(data: Mapping[str, Any], res_id: str) -> tuple[int | None, str | None, str | None, int]:
    """What an export shows of an entry beyond its report facts (``_export.export_row``):
    ``(attempt or None, estimated_usd text or None, flags as JSON or None when empty, bits)``, the bits
    ``NO_MODEL``, ``NO_FUNCTION``, ``QUOTED``, or ``ODD`` when the export must render the entry in
    Python (an attempt, estimate or function of another type than the guard writes). The flags' JSON
    has its keys sorted, as the SQLite journal stores the data and its reader gives it back."""
    attempt, estimated, function = data.get("attempt"), data.get("estimated_usd"), data.get("function", "")
    if not (  # (an attempt or estimate given as None: JSON shows null, which SQL's line does not write)
        (
            (attempt is None and "attempt" not in data)
            or (type(attempt) is int and _INT64_MIN <= attempt <= _INT64_MAX)
        )
        and ((estimated is None and "estimated_usd" not in data) or type(estimated) is str)
        and type(function) is str
    ):
        return None, None, None, ODD
    model = data.get("model")
    bits = 0 if model_key(data) == model else NO_MODEL
    if "function" not in data:
        bits |= NO_FUNCTION
    if not (_all_plain(model if type(model) is str else "", function, estimated or "") and _plain(res_id)):
        bits |= QUOTED
    if data.keys() <= KNOWN:  # (no flags: the common case)
        return attempt, estimated, None, bits
    flags = {k: v for k, v in data.items() if k not in KNOWN}
    try:
        shown = json.dumps(flags, sort_keys=True)
    except (TypeError, ValueError):
        return None, None, None, ODD
    return attempt, estimated, shown, bits

"""What an alert says: an event as a one-line title, a few lines of text, and a JSON document.

Data (scope ids, model names, reasons) is written as it is; each sink escapes it for its medium.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._events import Event

if TYPE_CHECKING:
    from ._delivery import Alert
from .._money import format_usd

__all__ = ["document", "lines", "title"]


def title(event: Event) -> str:
    """One line: what happened and where."""
    data = event.data
    if event.kind == "threshold":
        level = str(data.get("threshold", ""))
        scope, period = data.get("scope", ", ".join(event.scopes)), data.get("period")
        if level.endswith("%") and Decimal(level[:-1]) >= 100:
            return f"{scope} used up its {period} budget"
        return f"{scope} reached {level} of its {period} budget"
    if event.kind == "refused":
        return (
            f"{event.reason or ', '.join(event.scopes)} is refusing calls: its budget is used up or too low"
        )
    where = f" on {', '.join(event.scopes)}" if event.scopes else ""
    what = {
        "overrun": "a call cost more than it reserved" if not data.get("late") else "a call was charged late",
        "spend_lost": "spend could not be recorded",
        "store_unavailable": "the budget store is unavailable",
    }.get(event.kind, event.kind.replace("_", " "))
    return f"{what}{where}"


def lines(event: Event, held: int = 0) -> list[str]:
    """The alert's details, one fact a line."""
    data = event.data
    out = [title(event)]
    if (
        event.kind == "threshold"
        and isinstance(data.get("spent"), int)
        and isinstance(data.get("limit"), int)
    ):
        spent, limit = data["spent"], data["limit"]
        shown = (format_usd(spent), format_usd(limit)) if data.get("unit") == "usd" else (spent, limit)
        out.append(f"spent {shown[0]} of {shown[1]} ({data.get('unit')}, {data.get('period')})")
    if event.reason and event.kind != "threshold":
        out.append(f"reason: {event.reason}")
    if event.model:
        out.append(f"model: {event.model}")
    if event.actual is not None:
        out.append(
            f"cost: ${event.actual:f}" + (f" (reserved ${event.estimated:f})" if event.estimated else "")
        )
    if event.reservation_id:
        out.append(f"reservation: {event.reservation_id}")
    if held:
        out.append(f"(and {held} more like it since the last alert, held back)")
    return out


def document(alert: Alert) -> dict[str, Any]:
    """The alert as JSON-ready data, with ``title`` and ``text``: a webhook's body. ``id`` is the same
    for every retry of one alert."""
    event, held = alert.event, alert.held
    return {
        "id": alert.id,
        "kind": event.kind,
        "title": title(event),
        "text": "\n".join(lines(event, held)),
        "scopes": list(event.scopes),
        "model": event.model,
        "reservation_id": event.reservation_id,
        "attempt": event.attempt,
        "estimated_usd": None if event.estimated is None else f"{event.estimated:f}",
        "actual_usd": None if event.actual is None else f"{event.actual:f}",
        "reason": event.reason,
        "data": _plain(event.data),
        "held_back": held,
        "sent_at": datetime.now(UTC).isoformat(),
    }


def _plain(value: Any) -> Any:
    """JSON-ready: Decimals as strings, tuples as lists, objects with ``to_dict`` (a ``Usage``) as dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return f"{value:f}"
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _plain(to_dict())
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)

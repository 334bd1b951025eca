"""Events: what the guard did and why, sent to ``on_event`` hooks and to stdlib logging."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

__all__ = ["Event", "EventKind", "logger"]

logger = logging.getLogger("budgetguard")
logger.addHandler(logging.NullHandler())  # a library: the application decides where records go

EventKind = Literal[
    "reserved",
    "committed",
    "released",
    "refused",
    "routed",
    "threshold",
    "overrun",
    "usage_missing",
    "store_unavailable",
    "spend_lost",
    "estimate_fallback",
    "scope_missing",
    "fitted",
]

_LEVELS: Mapping[str, int] = {
    "reserved": logging.DEBUG,
    "committed": logging.DEBUG,
    "released": logging.DEBUG,
    "refused": logging.INFO,
    "routed": logging.INFO,
    "threshold": logging.WARNING,
    "overrun": logging.WARNING,
    "usage_missing": logging.WARNING,
    "store_unavailable": logging.ERROR,
    "spend_lost": logging.ERROR,
    "estimate_fallback": logging.WARNING,
    "scope_missing": logging.WARNING,
    "fitted": logging.INFO,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the guard did. Amounts are USD ``Decimal``; prompts and keys are never included.

    ``data`` of a ``committed`` or ``released`` event: ``duration`` (seconds from before the reservation),
    ``usage`` (the ``Usage`` charged, if any) and ``counters`` (each counter's ``scope``, ``unit``,
    ``period``, ``spent`` and ``limit`` after the commit, in the store's units; for a call without a
    budget, ``Guard.METERING``, whose limit is 2**63-1), and the flags the journal gets
    (``usage_missing``, ``interrupted``, ``error``). A ``fitted`` event (``with_budget(fit=...)``)
    carries ``from`` and ``to``: the request's max output tokens (per choice; ``None``: it had none)
    and what the call was sent with instead.
    """

    kind: EventKind
    model: str | None = None
    scopes: tuple[str, ...] = ()
    reservation_id: str | None = None
    attempt: int | None = None
    estimated: Decimal | None = None
    actual: Decimal | None = None
    reason: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def wanted(kind: EventKind, hooks: tuple[Callable[[Event], None], ...]) -> bool:
    """Whether anyone listens: skip building events nobody will see (the hot path)."""
    return bool(hooks) or logger.isEnabledFor(_LEVELS[kind])


def emit(event: Event, hooks: tuple[Callable[[Event], None], ...]) -> None:
    level = _LEVELS[event.kind]
    if logger.isEnabledFor(level):
        parts = [f"model={event.model}"] if event.model else []
        parts += [f"scopes={','.join(event.scopes)}"] if event.scopes else []
        parts += [f"attempt={event.attempt}"] if event.attempt else []
        parts += [f"estimated=${event.estimated:f}"] if event.estimated is not None else []
        parts += [f"actual=${event.actual:f}"] if event.actual is not None else []
        parts += [f"reason={event.reason}"] if event.reason else []
        logger.log(level, "budgetguard %s %s", event.kind, " ".join(parts))
    for hook in hooks:
        try:
            hook(event)
        except Exception:  # a broken hook must not leave a hold or lose a commit: log it, go on
            logger.exception("budgetguard: the on_event hook %r raised on a %s event", hook, event.kind)

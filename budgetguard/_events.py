"""Events: what the guard did and why, sent to ``on_event`` hooks and to stdlib logging."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import logging

__all__ = ["Event", "EventKind", "logger", "use_logging"]

logger: logging.Logger = None  # type: ignore[assignment]
"""The ``budgetguard`` logger, made (and logging imported) by the first guard: ``use_logging``."""


def use_logging() -> logging.Logger:
    """The ``budgetguard`` logger: made at the first guard (or estimate fallback), not at import."""
    global logger
    if logger is None:
        import logging

        logger = logging.getLogger("budgetguard")
        logger.addHandler(logging.NullHandler())  # a library: the application decides where records go
    return logger


EventKind = Literal[
    "reserved",
    "committed",
    "released",
    "refused",
    "shadow_refused",
    "routed",
    "threshold",
    "overrun",
    "usage_missing",
    "store_unavailable",
    "spend_lost",
    "estimate_fallback",
    "scope_missing",
    "fitted",
    "unreserved_tier",
    "unknown_deployment",
]

_LEVELS: Mapping[str, int] = {  # (logging's levels)
    "reserved": 10,  # DEBUG
    "committed": 10,  # DEBUG
    "released": 10,  # DEBUG
    "refused": 20,  # INFO
    "shadow_refused": 20,  # INFO
    "routed": 20,  # INFO
    "threshold": 30,  # WARNING
    "overrun": 30,  # WARNING
    "usage_missing": 30,  # WARNING
    "store_unavailable": 40,  # ERROR
    "spend_lost": 40,  # ERROR
    "estimate_fallback": 30,  # WARNING
    "scope_missing": 30,  # WARNING
    "fitted": 20,  # INFO
    "unreserved_tier": 30,  # WARNING
    "unknown_deployment": 30,  # WARNING
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
    and what the call was sent with instead. An ``unreserved_tier`` event: a call reserved at standard
    prices was served (and charged) at a dearer ``service_tier`` (``data["served_tier"]``): set
    ``Guard(default_service_tier=...)`` when that is the project's default tier. An
    ``unknown_deployment`` event, once per guard and model: a call went to an Azure OpenAI deployment
    whose type (Global, Data Zone, Regional) is declared nowhere, so it is reserved and charged as
    Regional, the dearest (``data["charged_as"]``): declare it with ``set_azure_deployment(...)`` or
    ``register_price(name, provider="azure", deployment=...)``.
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

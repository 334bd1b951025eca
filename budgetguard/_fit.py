"""Fit instead of refuse: lower a request's max output tokens so that its worst case fits what is left.

``with_budget(..., fit=True)`` (or ``fit=256``, or ``fit=Fit(min_output_tokens=256)``): before the last
model of a call (the only one when it does not route) is reserved, the guard reads what is left in every
counter the call holds on and, when the worst case does not fit the smallest of them, lowers the
request's max output tokens (``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``, as the
request's API names it; per choice for a chat with ``n``) to the largest value whose worst case fits,
down to the floor. The SDK call receives the lowered value, so the provider enforces it. Below the
floor, or when the input alone does not fit, the call is reserved at its worst case and refused as
without ``fit``. The worst case at a given output is ``Estimator.priced``: the estimator's own
pricing (the passes of server-side tools re-read the output), every unit rounded up once.

Routing comes first: each model of ``route=`` is tried at its worst case, and only the last one is
fitted (a cheaper model's whole answer rather than a cut-short one from a dearer model).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._budgets import Unit
from ._errors import ConfigurationError
from ._estimate import CHAT_OUTPUT_KEYS, Estimate, Estimator, _n, output_keys
from ._ledger import CounterStatus
from ._providers import api_of

__all__ = ["DEFAULT_MIN_OUTPUT_TOKENS", "Fit", "Fitting", "fit_for", "fit_option"]

DEFAULT_MIN_OUTPUT_TOKENS = 256
"""The floor of ``fit=True``: below 256 output tokens (per choice) an answer is rarely worth having."""

_KEYS = frozenset(("max_tokens", "max_completion_tokens", "max_output_tokens"))


@dataclass(frozen=True, slots=True)
class Fit:
    """How ``fit=`` lowers a request's max output tokens.

    ``min_output_tokens``: the floor (per choice); a request that cannot fit this many is refused.
    ``attempts``: how many times a fitted reservation that racing callers made too big is fitted again
    to what is left then, before the refusal is raised.
    """

    min_output_tokens: int = DEFAULT_MIN_OUTPUT_TOKENS
    attempts: int = 3

    def __post_init__(self) -> None:
        floor, attempts = self.min_output_tokens, self.attempts
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 1:
            raise ConfigurationError(f"Fit(min_output_tokens=...) takes a positive int, got {floor!r}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigurationError(f"Fit(attempts=...) takes a positive int, got {attempts!r}")


def fit_option(value: bool | int | Fit | None) -> Fit | None:
    """``fit=``: ``True`` (the default floor), an int (the floor), a ``Fit``, or ``False``/``None`` (off)."""
    if value is None or value is False:
        return None
    if value is True:
        return Fit()
    if isinstance(value, Fit):
        return value
    if isinstance(value, int):
        return Fit(min_output_tokens=value)
    raise ConfigurationError(
        f"fit= takes True, a floor in output tokens (fit=256) or a Fit(...), got {value!r}"
    )


@dataclass(slots=True)
class Fitting:
    """A decorated call's fit: the settings, how to see its request, and what its SDK call receives."""

    fit: Fit
    request_for: Callable[[str | None], Any]
    """The request (kwargs) the guard estimates for a model."""
    provider: str | None
    """Where the request goes (its prices), as the estimator takes it."""
    api: str | None
    """The SDK's wire format, if an SDK method is decorated."""
    accepts: Collection[str] | None
    """The output keys the decorated function takes (``None``: any, an SDK method or ``**kwargs``)."""
    sent: dict[str, int] = field(default_factory=dict)
    """What the call receives on top of its arguments: the lowered output keys (empty: unchanged)."""

    def lower(
        self,
        model: str | None,
        est: Estimate,
        statuses: Sequence[CounterStatus],
        estimator: Estimator,
        hold_usd: Callable[[int], int],
    ) -> tuple[Estimate, dict[str, Any]] | None:
        """``(estimate, journal note)`` of the request lowered to fit ``statuses``' smallest remaining,
        ``(est, {})`` when it fits as it is, ``None`` when it cannot fit above the floor. ``hold_usd``
        turns a worst case into the USD amount held (the hold policy's)."""
        self.sent.clear()
        request = self.request_for(model)
        if isinstance(request, Estimate):
            raise ConfigurationError(
                "fit= lowers the request's max output tokens: let estimate= return the request kwargs, "
                "not an Estimate"
            )
        keys = output_keys(request, self.api or api_of(self.provider, est.model))
        n = _n(request) if keys == CHAT_OUTPUT_KEYS else 1
        per_choice = est.output_tokens // n

        def fits(per: int) -> bool:
            worst = estimator.priced(est, per * n)
            usd: int | None = None
            for status in statuses:
                unit = status.counter.unit
                if unit is Unit.USD:
                    if usd is None:
                        usd = hold_usd(worst.cost_nano)
                    amount = usd
                elif unit is Unit.TOKENS:
                    amount = worst.total_tokens
                else:
                    amount = 1
                if amount > status.remaining:
                    return False
            return True

        if fits(per_choice):
            return est, {}
        floor = min(self.fit.min_output_tokens, per_choice)
        thinking = request.get("thinking")
        if isinstance(thinking, Mapping) and isinstance(thinking.get("budget_tokens"), int):
            floor = max(floor, thinking["budget_tokens"] + 1)  # Anthropic: max_tokens > budget_tokens
        if not keys or floor >= per_choice or not fits(floor):
            return None
        low, high = floor, per_choice - 1  # fits(low), not fits(per_choice)
        while low < high:
            mid = (low + high + 1) // 2
            if fits(mid):
                low = mid
            else:
                high = mid - 1
        given = [key for key in keys if request.get(key) is not None]
        chosen = given or [keys[0]]
        if self.accepts is not None:
            chosen = [key for key in chosen if key in self.accepts] or [
                key for key in keys if key in self.accepts
            ]
            if not chosen:
                raise ConfigurationError(
                    f"fit= lowers {keys[0]}, which the decorated function does not take: give it a "
                    f"{keys[0]} argument (or **kwargs) and pass it on to the SDK call"
                )
        self.sent.update(dict.fromkeys(chosen, low))
        old = request.get(given[0]) if given else None
        return estimator.priced(est, low * n), {"from": old, "to": low}


def fit_for(
    fit: bool | int | Fit | None,
    default: Fit | None,
    sdk: bool,
    params: Mapping[str, inspect.Parameter] | None,
) -> tuple[Fit | None, Collection[str] | None]:
    """A decorated function's fit (``with_budget``'s ``fit=``, else the guard's default) and the output
    keys it takes (``None``: any, an SDK method or ``**kwargs``). The guard's default leaves alone the
    functions that cannot pass a lowered value on; an explicit ``fit=`` on one is an error."""
    chosen = fit_option(fit) if fit is not None else default
    if chosen is None or sdk or params is None or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return chosen, None
    accepted = _KEYS & params.keys()
    if accepted:
        return chosen, accepted
    if fit is None:
        return None, None
    raise ConfigurationError(
        "fit= lowers the request's max output tokens, and the decorated function takes none of "
        f"{', '.join(sorted(_KEYS))}: give it that argument (or **kwargs) and pass it on to the SDK"
    )

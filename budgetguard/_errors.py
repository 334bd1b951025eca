"""The exception tree of budgetguard.

    BudgetGuardError                 root: catch this to catch everything budgetguard raises
    ├── BudgetExceededError          a reservation was refused: a limit would be passed
    ├── MissingScopeError            a call names no id for a scope kind that a budget applies to
    ├── PricingError                 no price for a model (never a silent $0)
    ├── UsageError                   a provider response carries no usable usage
    ├── LedgerError                  the store failed or is unreachable (the cause is chained)
    └── ConfigurationError           bad settings, unknown store URL, missing optional extra

Errors carry their context as attributes and say in their message what to do next.
User and SDK exceptions pass through budgetguard unchanged.

The refusals (``BudgetExceededError``, ``MissingScopeError``) travel between processes whole: pickled
by their fields, and rebuilt from their ``args`` (the message and the fields as JSON values), which is
how a task queue's JSON result backend (Celery's default) sends a task's error back: ``cls(*args)``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "BudgetExceededError",
    "BudgetGuardError",
    "ConfigurationError",
    "LedgerError",
    "MissingScopeError",
    "PricingError",
    "UsageError",
]


class BudgetGuardError(Exception):
    """Root of every exception raised by budgetguard."""


class ConfigurationError(BudgetGuardError, ValueError):
    """Settings that cannot work: unknown store URL, missing extra, invalid budget."""


class PricingError(BudgetGuardError, LookupError):
    """No price is known for a model. budgetguard never charges an unknown model $0."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model

    def __reduce__(self) -> tuple[Any, ...]:  # (pickled with its model: a process pool, a task queue)
        return functools.partial(type(self), model=self.model), (str(self),)


class UsageError(BudgetGuardError, ValueError):
    """A provider response has no usage, or usage that cannot be right."""


class LedgerError(BudgetGuardError):
    """The ledger store failed or could not be reached; ``__cause__`` holds the backend error."""


class _Refusal(BudgetGuardError):
    """A refusal whose ``args`` are its message and its fields as JSON values (see the module's
    docstring); its text is the message alone."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BudgetExceededError(_Refusal):
    """A reservation was refused because it would take a scope past its limit.

    Amounts are in the budget's unit: USD as ``Decimal`` for money budgets, integers for token and
    request budgets.
    """

    _FIELDS = (
        "scope",
        "unit",
        "period",
        "limit",
        "spent",
        "held",
        "requested",
        "resets_at",
        "tools_defaulted",
    )

    def __init__(
        self,
        _message: str | None = None,
        _fields: dict[str, Any] | None = None,
        /,
        *,
        scope: str = "",
        unit: str = "usd",
        period: str = "",
        limit: Decimal | int = 0,
        spent: Decimal | int = 0,
        held: Decimal | int = 0,
        requested: Decimal | int = 0,
        resets_at: datetime | None = None,
        tools_defaulted: tuple[str, ...] = (),
    ) -> None:
        if _fields is not None:  # rebuilt from its args (a JSON result backend): the fields as JSON
            number = Decimal if _fields["unit"] == "usd" else int
            scope, unit, period = _fields["scope"], _fields["unit"], _fields["period"]
            limit, spent, held, requested = (
                number(_fields[k]) for k in ("limit", "spent", "held", "requested")
            )
            at = _fields["resets_at"]
            resets_at = None if at is None else datetime.fromisoformat(at)
            tools_defaulted = tuple(_fields.get("tools_defaulted", ()))
        elif _message is not None or not scope:
            raise TypeError(
                "BudgetExceededError takes its fields by name: scope=, unit=, period=, limit=, ..."
            )
        self.scope = scope
        self.unit = unit
        self.period = period
        self.limit = limit
        self.spent = spent
        self.held = held
        self.requested = requested
        self.resets_at = resets_at
        self.tools_defaulted = tools_defaulted
        """The server-side tools the refused call's worst case counted at the default number of calls
        (``Estimate.tools_defaulted``): a request's ``max_tool_calls`` bounds them."""
        fmt = _fmt_usd if unit == "usd" else str
        when = f"it resets at {resets_at.isoformat()}" if resets_at else "it never resets"
        wire = {k: getattr(self, k) for k in self._FIELDS}
        wire.update({k: str(wire[k]) for k in ("limit", "spent", "held", "requested")})
        wire["resets_at"] = None if resets_at is None else resets_at.isoformat()
        wire["tools_defaulted"] = list(tools_defaulted)
        super().__init__(
            f"budget exceeded for {scope} ({period} {unit} budget): limit {fmt(limit)}, "
            f"spent {fmt(spent)}, held by calls in flight {fmt(held)}, "
            f"remaining {fmt(self.remaining)}, requested {fmt(requested)}; {when}. "
            f"Lower the request ({self._lower()}), wait for the reset, "
            "or raise the limit (budgetguard limits set).",
            wire,
        )

    def _lower(self) -> str:
        """How a request asks for less: its max tokens, a cheaper model, and ``max_tool_calls`` when
        its server-side tools were counted at the default number of calls."""
        if not self.tools_defaulted:
            return "max tokens, a cheaper model"
        return (
            f"max tokens, a cheaper model, max_tool_calls (a Claude tool's max_uses): its "
            f"{', '.join(self.tools_defaulted)} tool calls were reserved at the default count, "
            "Estimator(tool_calls=...)"
        )

    def with_tools(self, tools_defaulted: tuple[str, ...]) -> BudgetExceededError:
        """This refusal, of a call whose server-side ``tools_defaulted`` were counted at the default
        number of calls: its message names ``max_tool_calls``."""
        fields = {name: getattr(self, name) for name in self._FIELDS}
        return type(self)(**{**fields, "tools_defaulted": tuple(tools_defaulted)})

    def __reduce__(self) -> tuple[Any, ...]:  # (pickled by its fields: a process pool, a task queue)
        fields = {name: getattr(self, name) for name in self._FIELDS}
        if not fields.get("tools_defaulted", True):  # (left out when empty: an older release unpickles it)
            del fields["tools_defaulted"]
        return functools.partial(type(self), **fields), ()

    @property
    def remaining(self) -> Decimal | int:
        """What the budget had left for this call: its limit less what is spent and held (0 or less
        when nothing is left)."""
        return self.limit - self.spent - self.held

    @property
    def reason(self) -> str:
        """Why, in one line for the person whose call was refused (an HTTP body, a chat reply): that the
        budget is used up, or that the call's worst case needs more than is left."""
        fmt = _fmt_usd if self.unit == "usd" else str
        budget = f"the {self.period} budget of {self.scope}"
        if self.remaining <= 0:
            held = f" ({fmt(self.held)} of it held by calls in flight)" if self.held else ""
            return f"{budget} is used up: {fmt(self.limit)}{held}"
        return (
            f"{budget} has {fmt(self.remaining)} left, and this call needs up to {fmt(self.requested)} "
            f"(its worst case): ask for less ({self._lower()}) or wait for the reset"
        )


class MissingScopeError(_Refusal):
    """A guarded call names no id for a scope kind that a budget applies to (``Budget("user", ...)`` and
    no user id): it is refused rather than let through without that limit. ``kinds`` are the kinds
    without an id.

    Not a ``BudgetExceededError``: no limit was reached, and neither waiting nor a cheaper model would
    help; the caller has to name the scope (an HTTP 400, not a 429).
    """

    def __init__(self, kinds: Iterable[str], _fields: dict[str, Any] | None = None, /) -> None:
        if _fields is not None:  # rebuilt from its args (message, fields): see the module's docstring
            kinds = _fields["kinds"]
        elif isinstance(kinds, str):
            raise TypeError("MissingScopeError takes the scope kinds without an id, e.g. ['user']")
        self.kinds = tuple(kinds)
        names = " and ".join(self.kinds)
        kind = self.kinds[0]
        super().__init__(
            f"no {names} id: a budget applies to every {names}, so a guarded call or job must name one. "
            "Pass the id "
            f"({kind}='{{{kind}_id}}' on the decorator, budget_context({kind}=...), or the request header "
            "the middleware reads), or tell the guard what calls without one do: "
            f"Guard(default_scopes={{'{kind}': 'anonymous'}}) charges them all to one shared scope, "
            f"Guard(missing_scope='skip') leaves the {names} budgets off them.",
            {"kinds": list(self.kinds)},
        )

    def __reduce__(self) -> tuple[Any, ...]:  # (pickled by its kinds: a process pool, a task queue)
        return type(self), (self.kinds,)


def _fmt_usd(amount: Decimal | int) -> str:
    return f"${Decimal(amount).normalize():f}"

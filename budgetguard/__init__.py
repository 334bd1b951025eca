"""budgetguard: a hard, shared spending limit in front of every LLM call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._budgets import Budget, Period, Scope, Unit
from ._calibration import Learned, Ratios
from ._config import load_budgets
from ._context import Tracker, budget_context, follow_threads, propagate, track
from ._default import configure, default_guard, metered, with_budget
from ._errors import (
    BudgetExceededError,
    BudgetGuardError,
    ConfigurationError,
    LedgerError,
    MissingScopeError,
    PricingError,
    UsageError,
)
from ._estimate import Estimate, Estimator, estimate
from ._events import Event
from ._fit import Fit
from ._guard import Attempt, Guard, GuardedAsyncStream, GuardedStream
from ._job import Job
from ._ledger import (
    AsyncLedger,
    CounterSpec,
    CounterStatus,
    Hold,
    JournalEntry,
    Ledger,
    Outcome,
    Reservation,
    ReservationError,
    open_async_ledger,
    open_ledger,
)
from ._ledger._admin import Adjustment, LimitRaise
from ._limits import ModelLimits, model_limits
from ._money import format_usd, to_nano, to_usd
from ._plans import Plans, load_plans
from ._pricing import (
    PUBLISHED_PRICES,
    Price,
    PriceBook,
    Rates,
    cost,
    get_price,
    load_prices,
    price_book,
    published_prices,
    register_price,
    set_azure_deployment,
    set_default_price,
)
from ._tokens import count_text_tokens, get_encoding
from ._tokens_claude import count_anthropic_tokens, count_claude_request
from ._tokens_openai import (
    count_message_tokens,
    count_openai_request,
    count_responses_tokens,
    count_tool_tokens,
)
from ._usage import Pass, Usage

if TYPE_CHECKING:
    from ._report import ReportRow, read_journal, report

_REPORTS = ("ReportRow", "read_journal", "report")


def __getattr__(name: str) -> Any:
    """The report functions, imported at their first use (not at ``import budgetguard``)."""
    if name in _REPORTS:
        from . import _report

        return getattr(_report, name)
    raise AttributeError(f"module 'budgetguard' has no attribute {name!r}")


__all__ = [
    "Adjustment",
    "AsyncLedger",
    "Attempt",
    "Budget",
    "BudgetExceededError",
    "BudgetGuardError",
    "ConfigurationError",
    "CounterSpec",
    "CounterStatus",
    "Estimate",
    "Estimator",
    "Event",
    "Fit",
    "Guard",
    "Job",
    "Learned",
    "GuardedAsyncStream",
    "GuardedStream",
    "Hold",
    "JournalEntry",
    "Ledger",
    "LedgerError",
    "LimitRaise",
    "MissingScopeError",
    "ModelLimits",
    "Outcome",
    "PUBLISHED_PRICES",
    "Pass",
    "Period",
    "Price",
    "Plans",
    "PriceBook",
    "PricingError",
    "Rates",
    "Ratios",
    "Reservation",
    "ReportRow",
    "ReservationError",
    "Scope",
    "Tracker",
    "Unit",
    "Usage",
    "UsageError",
    "budget_context",
    "configure",
    "cost",
    "count_anthropic_tokens",
    "count_claude_request",
    "count_message_tokens",
    "count_openai_request",
    "count_responses_tokens",
    "count_text_tokens",
    "count_tool_tokens",
    "default_guard",
    "estimate",
    "follow_threads",
    "format_usd",
    "get_encoding",
    "get_price",
    "load_budgets",
    "load_plans",
    "load_prices",
    "metered",
    "model_limits",
    "open_async_ledger",
    "open_ledger",
    "price_book",
    "propagate",
    "published_prices",
    "read_journal",
    "register_price",
    "report",
    "set_azure_deployment",
    "set_default_price",
    "to_nano",
    "to_usd",
    "track",
    "with_budget",
]

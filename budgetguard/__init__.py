"""budgetguard: a hard, shared spending limit in front of every LLM call."""

from __future__ import annotations

from ._errors import (
    BudgetExceededError,
    BudgetGuardError,
    ConfigurationError,
    LedgerError,
    PricingError,
    UsageError,
)
from ._estimate import Estimate, Estimator, estimate
from ._money import format_usd, to_nano, to_usd
from ._pricing import (
    Price,
    PriceBook,
    Rates,
    cost,
    get_price,
    load_prices,
    price_book,
    register_price,
    set_default_price,
)
from ._tokens import (
    count_anthropic_tokens,
    count_message_tokens,
    count_responses_tokens,
    count_text_tokens,
    count_tool_tokens,
    get_encoding,
)
from ._usage import Usage

__all__ = [
    "BudgetExceededError",
    "BudgetGuardError",
    "ConfigurationError",
    "Estimate",
    "Estimator",
    "LedgerError",
    "Price",
    "PriceBook",
    "PricingError",
    "Rates",
    "Usage",
    "UsageError",
    "cost",
    "count_anthropic_tokens",
    "count_message_tokens",
    "count_responses_tokens",
    "count_text_tokens",
    "count_tool_tokens",
    "estimate",
    "format_usd",
    "get_encoding",
    "get_price",
    "load_prices",
    "price_book",
    "register_price",
    "set_default_price",
    "to_nano",
    "to_usd",
]

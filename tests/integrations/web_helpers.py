"""What the Django, Flask and Celery tests share: a guard with a per-user budget, a guarded function
returning a usage dict, and the ledger's spend per user, read from the store."""

from __future__ import annotations

from typing import Any

import budgetguard as bg

USAGE = bg.Usage(input_tokens=200, output_tokens=50)
COST = bg.cost("gpt-4o-mini", USAGE)
HI = [{"role": "user", "content": "hi"}]
REQUEST: dict[str, Any] = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 60}
TOO_BIG: dict[str, Any] = {**REQUEST, "max_tokens": 100_000}


def make_guard(**options: Any) -> bg.Guard:
    return bg.Guard(
        "memory://",
        budgets=[bg.Budget("user", usd="0.01", per="day"), bg.Budget("global", usd="100", per="day")],
        **options,
    )


def usage_reply(**_: Any) -> dict[str, Any]:
    return {"usage": {"prompt_tokens": USAGE.input_tokens, "completion_tokens": USAGE.output_tokens}}


def user_spent(guard: bg.Guard, user: str) -> int:
    """The nano-USD the ledger has charged to this user today."""
    [spec] = [s for s in guard.counters_for([bg.Scope("user", user)]) if s.scope == bg.Scope("user", user)]
    [status] = guard.ledger.status([spec])
    return status.spent


def stream_cost(reported: dict[str, Any]) -> int:
    """The nano-USD of a gpt-4o-mini stream whose final chunk reported this usage."""
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    usage = bg.Usage(
        input_tokens=reported["prompt_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=reported["completion_tokens"],
    )
    return bg.get_price("gpt-4o-mini").cost_nano(usage)

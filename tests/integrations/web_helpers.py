"""What the Django, Flask and Celery tests share: a guard with a per-user budget, a guarded function
returning a usage dict, and the ledger's spend per user, read from the store."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
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


def streamed_as_told(
    guard: bg.Guard, headers: Mapping[str, str], told: list[Any], reported: dict[str, Any]
) -> None:
    """A ``/stream`` response of user erin (a guarded call before the body, a guarded chat stream read
    by the body, a guarded call after it): its headers and what ``on_settled`` was told."""
    stream_nano = stream_cost(reported)
    assert user_spent(guard, "erin") == 2 * bg.to_nano(COST) + stream_nano
    assert [e.event for e in guard.ledger.history()] == ["committed"] * 3
    _, stream_entry, _ = guard.ledger.history()
    assert stream_entry.amounts["usd"] == stream_nano
    # the headers went before the stream was read: what was settled, and what the stream held; no cost
    assert "X-Budget-Cost-USD" not in headers
    assert Decimal(headers["X-Budget-Settled-USD"]) == COST
    assert Decimal(headers["X-Budget-Held-USD"]) == Decimal(stream_entry.data["estimated_usd"]) > 0
    # the whole cost, to the nano-USD, once the body has ended
    [message] = told
    assert (message.streamed, message.held, message.calls, message.scopes) == (True, 0, 3, {"user": "erin"})
    assert bg.to_nano(message.cost) == 2 * bg.to_nano(COST) + stream_nano

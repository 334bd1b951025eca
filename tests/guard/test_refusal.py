"""A budget too small refuses the call before the SDK is called, and says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, to_nano, to_usd
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    MESSAGES,
    anthropic_client,
    anthropic_message,
    async_openai_client,
    chat_completion,
    chat_request,
    claude_request,
    nano,
    openai_client,
    serve,
    small_completion,
)

COST = nano("gpt-4o", GPT4O_USAGE)
EST = budgetguard.estimate(chat_request())


def next_utc_midnight() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


def test_refused_before_the_sdk_is_called(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day"), Budget("global", usd="100")])
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    error = caught.value
    assert (error.scope, error.unit, error.period) == ("user:alice", "usd", "day")
    assert error.limit == Decimal("0.001")
    assert (error.spent, error.held) == (0, 0)
    assert error.requested == EST.cost == to_usd(EST.cost_nano)
    assert error.resets_at == next_utc_midnight()
    assert "user:alice" in str(error)
    assert api.requests == []  # the SDK was never called
    h.assert_settled({"user:alice": 0, "global": 0})
    (entry,) = h.history()
    assert (entry.event, entry.model, entry.scopes) == ("refused", "gpt-4o", ("user:alice",))
    assert entry.amounts == {"usd": EST.cost_nano}
    assert [e.kind for e in h.events] == ["refused"]
    assert h.events[0].reason == "user:alice"


def test_refusal_reports_spent_and_held(make_guard: MakeGuard) -> None:
    limit = Decimal("0.0095")
    h = make_guard(budgets=[Budget("user", usd=limit, per="day")])
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    create(**chat_request())  # spends COST
    counters = h.guard.counters_for([budgetguard.Scope("user", "alice")])
    in_flight = h.ledger.reserve([budgetguard.Hold(counters[0], 1_000_000)])  # another call holds $0.001

    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    error = caught.value
    assert error.limit == limit
    assert error.spent == to_usd(COST)
    assert error.held == Decimal("0.001")
    assert error.requested == EST.cost
    assert to_nano(error.spent) + to_nano(error.held) + EST.cost_nano > to_nano(limit)
    assert len(api.requests) == 1
    h.ledger.release(in_flight)
    h.assert_settled({"user:alice": COST})


def test_refusal_holds_nothing_on_other_scopes(make_guard: MakeGuard) -> None:
    """All scopes or none: the global budget that would admit the call is left untouched."""
    h = make_guard(
        budgets=[Budget("global", usd="100"), Budget("feature", usd="100"), Budget("user", usd="0.000001")]
    )
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", feature="chat")

    with pytest.raises(BudgetExceededError, match="user:alice"):
        create(**chat_request())

    h.assert_settled({"global": 0, "feature:chat": 0, "user:alice": 0})


def test_refused_once_the_budget_is_spent(make_guard: MakeGuard) -> None:
    # admits one worst case; the actual spend of the first call leaves too little for a second
    h = make_guard(budgets=[Budget("user", usd="0.006", per="day")])
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())
    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    assert caught.value.spent == to_usd(COST)
    assert len(api.requests) == 1
    h.assert_settled({"user:alice": COST})
    # other users have their own budget
    create_bob = h.guard.with_budget(openai_client(api).chat.completions.create, user="bob")
    create_bob(**chat_request())
    h.assert_settled({"user:alice": COST, "user:bob": COST})


def test_requests_budget(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", requests=2, per="minute")])
    api = serve(small_completion(20, 5))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())
    create(**chat_request())
    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    error = caught.value
    assert (error.unit, error.period, error.limit, error.spent, error.held, error.requested) == (
        "requests",
        "minute",
        2,
        2,
        0,
        1,
    )
    assert len(api.requests) == 2


def test_tokens_budget(make_guard: MakeGuard) -> None:
    # the worst case of one call is its input estimate + max_tokens
    worst = EST.input_tokens + EST.output_tokens
    h = make_guard(budgets=[Budget("user", tokens=worst + 100, per="hour")])
    api = serve(small_completion(EST.input_tokens, 150))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())
    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    assert (caught.value.spent, caught.value.requested) == (EST.input_tokens + 150, worst)
    h.assert_settled({"user:alice": EST.input_tokens + 150}, unit=budgetguard.Unit.TOKENS)


def test_anthropic_refusal(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.01")])
    api = serve(anthropic_message())
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")
    est = budgetguard.estimate(claude_request(max_tokens=64_000), provider="anthropic")

    with pytest.raises(BudgetExceededError) as caught:
        create(**claude_request(max_tokens=64_000))

    assert caught.value.requested == est.cost
    assert api.requests == []


async def test_async_refusal(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=[Budget("user", usd="0.001")])
    api = serve(chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    with pytest.raises(BudgetExceededError) as caught:
        await ask("alice", "gpt-4o", MESSAGES, 300)

    assert caught.value.requested == EST.cost
    assert api.requests == []
    h.assert_settled({"user:alice": 0})


def test_refusals_pickle_with_their_fields() -> None:
    """A process pool or a task queue (Celery's pickle serializer) carries them whole: they used to fail to
    unpickle (keyword-only constructors) or come back garbled."""
    import pickle
    from decimal import Decimal

    import budgetguard as bg

    refused = bg.BudgetExceededError(scope="user:a", unit="usd", period="day", limit=Decimal(1),
                                     spent=Decimal("0.95"), held=Decimal(0), requested=Decimal("0.1"),
                                     resets_at=None)  # fmt: skip
    missing, unpriced = bg.MissingScopeError(("user", "team")), bg.PricingError("no price", model="acme")
    tools = refused.with_tools(("web_search",))
    for error in (refused, missing, unpriced, tools):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error) and back.__dict__ == error.__dict__
    # a refusal without defaulted tools pickles as before they existed (an older release unpickles it)
    assert "tools_defaulted" not in refused.__reduce__()[0].keywords
    assert tools.__reduce__()[0].keywords["tools_defaulted"] == ("web_search",)


def test_refusals_are_rebuilt_from_their_args_as_json() -> None:
    """A JSON result backend (Celery's default) sends ``type``, ``module`` and ``args`` as JSON and
    rebuilds the error with ``cls(*args)``: the refusals come back whole that way too."""
    import json
    from datetime import UTC, datetime
    from decimal import Decimal

    import budgetguard as bg

    at = datetime(2026, 12, 8, tzinfo=UTC)
    usd = bg.BudgetExceededError(scope="user:a", unit="usd", period="day", limit=Decimal(1),
                                 spent=Decimal("0.95"), held=Decimal(0), requested=Decimal("0.1"),
                                 resets_at=at)  # fmt: skip
    tokens = bg.BudgetExceededError(scope="team:x y", unit="tokens", period="total", limit=10, spent=9,
                                    held=0, requested=5, resets_at=None)  # fmt: skip
    for error in (usd, tokens, bg.MissingScopeError(("user", "team"))):
        back = type(error)(*json.loads(json.dumps(error.args)))
        assert str(back) == str(error) and back.__dict__ == error.__dict__
    assert isinstance(usd.limit, Decimal) and isinstance(tokens.limit, int)
    with pytest.raises(TypeError, match="by name"):
        bg.BudgetExceededError("budget exceeded")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="scope kinds"):
        bg.MissingScopeError("user")

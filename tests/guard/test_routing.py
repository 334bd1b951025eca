"""Routing to a cheaper model: at a threshold of the budget, or when the primary model is refused."""

from __future__ import annotations

from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, ConfigurationError
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    MESSAGES,
    async_openai_client,
    chat_completion,
    chat_request,
    mini_completion,
    nano,
    openai_client,
    serve,
)

ROUTE = ["gpt-4o", "gpt-4o-mini"]
MINI_COST = nano("gpt-4o-mini", GPT4O_USAGE)
COST = nano("gpt-4o", GPT4O_USAGE)
DOLLAR = 1_000_000_000
BUDGETS = [Budget("user", usd="1", per="day"), Budget("global", usd="100", per="day")]


def test_routes_at_the_threshold(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=BUDGETS)
    h.charge("user:alice", 800_000_000)  # exactly 80% of $1
    api = serve(mini_completion())
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, route=ROUTE, at=0.8, user="alice"
    )

    create(**chat_request("gpt-4o"))

    assert [r["model"] for r in api.requests] == ["gpt-4o-mini"]  # the outgoing request was rewritten
    assert api.requests[0]["messages"] == MESSAGES
    h.assert_settled({"user:alice": 800_000_000 + MINI_COST, "global": MINI_COST})
    (entry,) = h.committed(scope="global")
    assert entry.model == "gpt-4o-mini"
    assert entry.data["estimated_usd"] == str(budgetguard.estimate(chat_request("gpt-4o-mini")).cost)
    (routed,) = h.of("routed")
    assert routed.model == "gpt-4o"
    assert routed.data == {"to": "gpt-4o-mini"}
    assert "user:alice" in (routed.reason or "")
    assert "80%" in (routed.reason or "")
    assert [e.model for e in h.of("committed")] == ["gpt-4o-mini"]


def test_below_the_threshold_keeps_the_primary(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=BUDGETS)
    h.charge("user:alice", 799_999_999)
    api = serve(chat_completion())
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, route=ROUTE, at=0.8, user="alice"
    )

    create(**chat_request("gpt-4o"))

    assert [r["model"] for r in api.requests] == ["gpt-4o"]
    assert h.of("routed") == []
    h.assert_settled({"user:alice": 799_999_999 + COST, "global": COST})


def test_threshold_counts_held_spend(make_guard: MakeGuard) -> None:
    """Calls in flight count towards the threshold (spent + held)."""
    h = make_guard(budgets=BUDGETS)
    h.charge("user:alice", 500_000_000)
    counters = h.guard.counters_for([budgetguard.Scope("user", "alice")])
    in_flight = h.ledger.reserve([budgetguard.Hold(counters[0], 300_000_000)])
    api = serve(mini_completion())
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, route=ROUTE, at=0.8, user="alice"
    )

    create(**chat_request("gpt-4o"))

    assert [r["model"] for r in api.requests] == ["gpt-4o-mini"]
    h.ledger.release(in_flight)
    h.assert_settled({"user:alice": 500_000_000 + MINI_COST})


def test_routes_when_the_primary_is_refused(make_guard: MakeGuard) -> None:
    gpt4o = budgetguard.estimate(chat_request("gpt-4o"))
    mini = budgetguard.estimate(chat_request("gpt-4o-mini"))
    assert mini.cost_nano < 1_000_000 < gpt4o.cost_nano
    h = make_guard(budgets=[Budget("user", usd="0.001"), Budget("global", usd="100")])
    api = serve(mini_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, route=ROUTE, user="alice")

    create(**chat_request("gpt-4o"))

    assert [r["model"] for r in api.requests] == ["gpt-4o-mini"]
    assert [(e.kind, e.model) for e in h.events if e.kind != "overrun"] == [
        ("refused", "gpt-4o"),
        ("routed", "gpt-4o"),
        ("committed", "gpt-4o-mini"),
    ]
    routed = h.of("routed")[0]
    assert routed.reason == "refused on user:alice"
    assert routed.data == {"to": "gpt-4o-mini"}
    assert [(e.event, e.model) for e in h.history(scope="user:alice")] == [
        ("refused", "gpt-4o"),
        ("committed", "gpt-4o-mini"),
    ]
    h.assert_settled({"user:alice": MINI_COST, "global": MINI_COST})


def test_every_model_refused(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.0001")])
    api = serve(mini_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, route=ROUTE, user="alice")

    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request("gpt-4o"))

    assert caught.value.requested == budgetguard.estimate(chat_request("gpt-4o-mini")).cost
    assert api.requests == []
    assert [(e.kind, e.model) for e in h.events] == [
        ("refused", "gpt-4o"),
        ("routed", "gpt-4o"),
        ("refused", "gpt-4o-mini"),
    ]
    h.assert_settled({"user:alice": 0})


def test_route_rewrites_a_functions_model_argument(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=BUDGETS)
    h.charge("user:alice", 900_000_000)
    api = serve(mini_completion())
    client = openai_client(api)
    seen: list[str] = []

    @h.guard.with_budget(route=ROUTE, at=0.8, user="{user_id}")
    def ask(user_id: str, question: str, model: str = "gpt-4o", max_tokens: int = 300) -> Any:
        seen.append(model)
        messages = [{"role": "user", "content": question}]
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    with pytest.raises(ConfigurationError):  # no messages in the arguments: the request is not visible
        ask("alice", MESSAGES[0]["content"])

    routed = h.guard.with_budget(
        ask.__wrapped__,
        route=ROUTE,
        at=0.8,
        user="{user_id}",
        estimate=lambda user_id, question, **kw: {
            "model": kw.get("model", "gpt-4o"),
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 300,
        },
    )
    routed("alice", MESSAGES[0]["content"])

    assert seen == ["gpt-4o-mini"]
    assert [r["model"] for r in api.requests] == ["gpt-4o-mini"]
    h.assert_settled({"user:alice": 900_000_000 + MINI_COST})


async def test_async_route(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=BUDGETS)
    h.charge("user:bob", 950_000_000)
    api = serve(mini_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(route=ROUTE, at=0.8, user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    await ask("bob", **chat_request("gpt-4o"))

    assert [r["model"] for r in api.requests] == ["gpt-4o-mini"]
    h.assert_settled({"user:bob": 950_000_000 + MINI_COST})
    assert [e.kind for e in h.events if e.kind != "overrun"] == ["routed", "committed"]


def test_at_must_be_a_fraction(make_guard: MakeGuard) -> None:
    h = make_guard()
    create = openai_client(serve(chat_completion())).chat.completions.create
    with pytest.raises(ConfigurationError, match="fraction"):
        h.guard.with_budget(create, route=ROUTE, at=80)

"""Decorated user functions (the request from their arguments, or from ``estimate=``) and where scopes
come from: literals, ``"{arg}"`` templates, callables and ``budget_context`` (also across asyncio tasks)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, ConfigurationError, budget_context
from tests.guard.conftest import DEFAULT_BUDGETS, MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    MESSAGES,
    async_openai_client,
    chat_completion,
    chat_request,
    nano,
    openai_client,
    serve,
)

COST = nano("gpt-4o", GPT4O_USAGE)


def test_function_whose_arguments_carry_the_request(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int = 300) -> Any:
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    result = ask("alice", "gpt-4o", MESSAGES)

    assert result.usage.completion_tokens == 300
    assert ask.__name__ == "ask"
    h.assert_settled({"user:alice": COST, "global": COST})
    (entry,) = h.committed()
    assert entry.model == "gpt-4o"
    assert entry.data["usage"] == GPT4O_USAGE.to_dict()
    # the reservation used the arguments, defaults included (max_tokens=300)
    assert entry.data["estimated_usd"] == str(budgetguard.estimate(chat_request()).cost)


def test_function_without_a_request_needs_estimate(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    def summarize(user_id: str, doc_id: int) -> Any:
        return client.chat.completions.create(**chat_request())

    with pytest.raises(ConfigurationError, match=r"estimate="):
        summarize("alice", 7)
    assert api.requests == []
    h.assert_settled({"user:alice": 0, "global": 0})

    seen: list[tuple[Any, ...]] = []

    def estimate(user_id: str, doc_id: int) -> dict[str, Any]:
        seen.append((user_id, doc_id))
        return chat_request()

    guarded = h.guard.with_budget(summarize.__wrapped__, estimate=estimate, user="{user_id}")
    guarded("alice", doc_id=7)

    assert seen == [("alice", 7)]
    assert len(api.requests) == 1
    h.assert_settled({"user:alice": COST, "global": COST})
    (entry,) = h.committed()
    assert entry.data["estimated_usd"] == str(budgetguard.estimate(chat_request()).cost)


def test_estimate_may_return_an_estimate(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    client = openai_client(api)
    est = budgetguard.estimate(chat_request())

    @h.guard.with_budget(estimate=lambda *a, **kw: est, user="bob")
    def run() -> Any:
        return client.chat.completions.create(**chat_request())

    run()

    h.assert_settled({"user:bob": COST})
    (entry,) = h.committed()
    assert entry.data["estimated_usd"] == str(est.cost)


def test_function_returning_no_usage_is_charged_the_worst_case(make_guard: MakeGuard) -> None:
    """A function that returns text, not the response: never $0, the reservation is charged and flagged."""
    h = make_guard()
    api = serve(chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> str:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
        return reply.choices[0].message.content or ""

    assert ask("alice", **chat_request()) == "Budgets are plans for money."

    worst = budgetguard.estimate(chat_request()).cost_nano
    h.assert_settled({"user:alice": worst})
    (entry,) = h.committed()
    assert entry.data["usage_missing"] is True
    assert h.kinds() == ["usage_missing", "committed"]


async def test_async_function(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int = 300) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    result = await ask("alice", "gpt-4o", MESSAGES)

    assert result.usage.prompt_tokens == 2006
    h.assert_settled({"user:alice": COST, "global": COST})
    assert len(h.committed()) == 1


# -- scopes ----------------------------------------------------------------------------------------

TEAM_BUDGETS = (*DEFAULT_BUDGETS, Budget("team", usd="3", per="month"))


def test_scopes_from_literal_template_and_callable(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=TEAM_BUDGETS)
    api = serve(chat_completion())
    client = openai_client(api)
    create = h.guard.with_budget(
        client.chat.completions.create,
        user="{user}",  # OpenAI's own end-user field, a template over the kwargs
        feature="search",
        team=lambda **kw: f"t-{len(kw['messages'])}",
    )

    create(**chat_request(user="alice"))

    h.assert_settled({"user:alice": COST, "feature:search": COST, "team:t-1": COST, "global": COST})
    (entry,) = h.committed()
    assert set(entry.scopes) == {"global", "user:alice", "feature:search", "team:t-1"}
    assert api.requests[0]["user"] == "alice"


def test_scope_template_over_positional_arguments(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=TEAM_BUDGETS)
    api = serve(chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="{user_id}", team=lambda user_id, *a, **kw: user_id.split("@")[1])
    def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    ask("alice@acme", "gpt-4o", MESSAGES, 300)

    h.assert_settled({"user:alice@acme": COST, "team:acme": COST, "global": COST})


def test_scope_template_naming_a_missing_argument(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="{user_id}")

    with pytest.raises(ConfigurationError, match="user_id"):
        create(**chat_request())
    assert api.requests == []


def test_scope_ids_are_data(make_guard: MakeGuard) -> None:
    """An id full of key syntax is one user, not a way into another scope."""
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="{user}")
    nasty = "bob}:feature:{x*\n"

    create(**chat_request(user=nasty))

    h.assert_settled({f"user:{nasty}": COST, "user:bob": 0, "feature:x*": 0})


def test_budget_context(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create)

    with budget_context(user="bob", feature="chat"):
        create(**chat_request())
        with budget_context(user="carol"):  # nested: overrides the user, keeps the feature
            create(**chat_request())
            with budget_context(feature=None):  # None removes a scope
                create(**chat_request())
    create(**chat_request())  # outside: only the global scope

    h.assert_settled({"user:bob": COST, "user:carol": 2 * COST, "feature:chat": 2 * COST, "global": 4 * COST})


def test_decorator_scopes_and_context_together(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, feature="summaries")

    with budget_context(user="dave"):
        create(**chat_request())

    h.assert_settled({"user:dave": COST, "feature:summaries": COST, "global": COST})


async def test_budget_context_across_asyncio_tasks(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(feature="chat")
    async def ask(model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        await asyncio.sleep(0)  # let the other tasks interleave
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    async def as_user(user: str, calls: int) -> None:
        with budget_context(user=user):
            await asyncio.gather(*(ask(**chat_request()) for _ in range(calls)))

    with budget_context(user="carol"):
        await asyncio.gather(*(ask(**chat_request()) for _ in range(3)))
    await asyncio.gather(as_user("alice", 2), as_user("bob", 4))

    h.assert_settled(
        {"user:carol": 3 * COST, "user:alice": 2 * COST, "user:bob": 4 * COST, "feature:chat": 9 * COST}
    )
    assert len(h.committed()) == 9


def test_budget_context_follows_propagated_threads_and_plain_ones_after_follow_threads(
    make_guard: MakeGuard, thread_mode: str
) -> None:
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create)

    def work() -> None:
        create(**chat_request())

    with budget_context(user="erin"):
        plain = threading.Thread(target=work)  # erin's only after follow_threads(): it may outlive her
        carried = threading.Thread(target=budgetguard.propagate(work))
        plain.start()
        plain.join()
        carried.start()
        carried.join()

    erin = 2 * COST if thread_mode == "whole context" else COST
    h.assert_settled({"user:erin": erin, "global": 2 * COST})

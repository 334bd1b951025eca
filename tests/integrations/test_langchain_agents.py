"""LangChain 1.x agents (the real ``langchain.agents.create_agent`` on langchain-openai's ``ChatOpenAI``) with
``BudgetMiddleware``, against local servers (scripted tool calls, ``MockProvider``): every model call of a
tool loop charged to the nano-USD on the scopes of the run's metadata or context, a refusal that stops the
run before anything is sent as LangChain's ``ModelError`` with the refusal chained,
``ModelFallbackMiddleware`` routing a refused call to its cheaper model, and ``ModelRetryMiddleware``
not retrying a refusal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelFallbackMiddleware, ModelRetryMiddleware
from langchain_core.exceptions import ModelError
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

import budgetguard as bg
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.integrations.langchain_agents import BudgetExceeded, BudgetMiddleware
from budgetguard.testing import MockProvider
from tests.integrations.scripted import cost, serve, text, tool_call
from tests.sdk_http import unpooled_openai_http

MODEL = "gpt-4o"
CHEAP = "gpt-4o-mini"
calls: list[str] = []


@tool
def lookup(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    return f"sunny in {city}"


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")])
    yield made
    made.close()


def chat(url: str, model: str = MODEL, max_tokens: int = 400) -> ChatOpenAI:
    http = unpooled_openai_http()
    return ChatOpenAI(model=model, base_url=url, api_key="test", max_retries=0, max_tokens=max_tokens, **http)  # type: ignore[arg-type]


def status(guard: bg.Guard, user: str) -> tuple[int, int]:
    [found] = guard.ledger.status(guard.counters_for([bg.Scope("user", user)])[:1])
    return found.spent, found.held


def replies() -> list[dict[str, Any]]:
    uncached = {"prompt_tokens_details": {"cached_tokens": 0}}
    return [
        tool_call("lookup", {"city": "Paris"}, "call_1", prompt_tokens=140, completion_tokens=18, **uncached),
        text("Sunny in Paris.", prompt_tokens=190, completion_tokens=6, **uncached),
    ]


def test_each_model_call_of_a_tool_loop_is_reserved_and_charged() -> None:
    calls.clear()
    events: list[bg.Event] = []
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")], on_event=events.append)
    with serve(replies()) as api:
        agent = create_agent(
            chat(api.url), [lookup], system_prompt="Use the tool.",
            middleware=[BudgetMiddleware(guard, user="{user_id}")],
        )  # fmt: skip
        result = agent.invoke(
            {"messages": [{"role": "user", "content": "Weather in Paris?"}]},
            config={"metadata": {"user_id": "alice"}},
        )

    assert result["messages"][-1].content == "Sunny in Paris." and calls == ["Paris"]
    first, second = api.requests
    assert first["tools"][0]["function"]["name"] == "lookup"  # a real tool loop: the tool's result sent back
    assert second["messages"][-1]["role"] == "tool"
    expected = [cost(MODEL, r) for r in replies()]
    assert [e.kind for e in events] == ["reserved", "committed", "reserved", "committed"]
    assert [bg.to_nano(e.actual) for e in events if e.kind == "committed"] == expected
    second["messages"][-1]["name"] = "lookup"  # (LangChain's message names its tool; its wire form does not)
    for reserved, sent in zip(events[::2], api.requests, strict=True):
        assert reserved.estimated == bg.estimate(sent).cost  # the request the agent sent, estimated
    assert status(guard, "alice") == (sum(expected), 0)


@pytest.mark.parametrize("is_async", [False, True])
async def test_the_callback_handler_of_the_same_guard_leaves_the_middlewares_calls_to_it(
    guard: bg.Guard, is_async: bool
) -> None:
    """Both installed (the handler in the run's callbacks, the middleware on the agent): each model call is
    charged once, by the middleware (a review found every call charged twice)."""
    calls.clear()
    handler = BudgetCallbackHandler(guard, user="{user_id}")
    config: Any = {"metadata": {"user_id": "fay"}, "callbacks": [handler]}
    question = {"messages": [{"role": "user", "content": "Weather in Paris?"}]}
    with serve(replies()) as api:
        agent = create_agent(chat(api.url), [lookup], middleware=[BudgetMiddleware(guard, user="{user_id}")])
        await agent.ainvoke(question, config=config) if is_async else agent.invoke(question, config=config)
    assert [e.event for e in guard.ledger.history()] == ["committed", "committed"]
    assert status(guard, "fay") == (sum(cost(MODEL, r) for r in replies()), 0)


@dataclass
class Context:
    user_id: str


async def test_async_runs_take_their_scope_from_the_runtime_context(guard: bg.Guard) -> None:
    calls.clear()
    with serve(replies()) as api:
        agent = create_agent(
            chat(api.url), [lookup], context_schema=Context,
            middleware=[BudgetMiddleware(guard, user="{user_id}")],
        )  # fmt: skip
        await agent.ainvoke({"messages": [{"role": "user", "content": "Weather?"}]}, context=Context("bo"))

    assert status(guard, "bo") == (sum(cost(MODEL, r) for r in replies()), 0)


@pytest.mark.parametrize("budget_first", [False, True])
def test_a_refusal_stops_the_run_as_a_model_error_and_is_not_retried(
    guard: bg.Guard, caplog: pytest.LogCaptureFixture, budget_first: bool
) -> None:
    calls.clear()
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "cy")])[0], bg.to_nano("0.0001"))
    caplog.set_level(logging.DEBUG)
    with serve(replies()) as api:
        retry, budget = (
            ModelRetryMiddleware(max_retries=2, initial_delay=0),
            BudgetMiddleware(guard, user="cy"),
        )
        agent = create_agent(
            chat(api.url), [lookup], middleware=[budget, retry] if budget_first else [retry, budget]
        )
        with pytest.raises(ModelError) as raised:
            agent.invoke({"messages": [{"role": "user", "content": "Weather?"}]})

    error = raised.value
    assert isinstance(error, BudgetExceeded) and isinstance(error, bg.BudgetExceededError)
    assert isinstance(error.__cause__, bg.BudgetExceededError) and error.scope == "user:cy"
    assert error.limit == bg.to_usd(bg.to_nano("0.0001"))
    assert api.requests == []  # nothing sent
    assert [e.event for e in guard.ledger.history()] == ["refused"]  # and not retried
    assert status(guard, "cy") == (0, 0)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_refused_model_falls_back_to_the_cheaper_one(guard: bg.Guard) -> None:
    with MockProvider() as api:
        guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "di")])[0], bg.to_nano("0.003"))
        primary = chat(api.openai_base_url, max_tokens=4000)  # worst case $0.04: refused
        fallback = ModelFallbackMiddleware(chat(api.openai_base_url, CHEAP))
        agent = create_agent(primary, [], middleware=[fallback, BudgetMiddleware(guard, user="di")])
        agent.invoke({"messages": [{"role": "user", "content": "Why reserve before calling?"}]})

    [sent] = api.requests
    assert sent.body["model"] == CHEAP
    [usage] = api.usages
    charged = bg.Usage.from_response(usage)
    assert [e.event for e in guard.ledger.history()] == ["refused", "committed"]
    assert status(guard, "di") == (bg.to_nano(bg.cost(CHEAP, charged)), 0)


def test_a_failed_call_is_released(guard: bg.Guard) -> None:
    with serve([]) as api:  # (no reply scripted: the server answers 500)
        agent = create_agent(chat(api.url), [], middleware=[BudgetMiddleware(guard, user="ed")])
        with pytest.raises(Exception, match="no reply scripted"):
            agent.invoke({"messages": [{"role": "user", "content": "Hi"}]})
    assert [e.event for e in guard.ledger.history()] == ["released"]
    assert status(guard, "ed") == (0, 0)

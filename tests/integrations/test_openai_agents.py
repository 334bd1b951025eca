"""The OpenAI Agents SDK (the real ``openai-agents`` package) on ``BudgetProvider``: runs against local
servers (scripted tool calls, ``MockProvider``'s Responses API and streams), every model call of a run
charged to the nano-USD, a budget per run and per user, and a refusal that stops the run as the SDK's
error, the refusal chained, nothing logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import openai
import pytest
from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.exceptions import AgentsException

import budgetguard as bg
from budgetguard import Usage
from budgetguard.integrations.openai_agents import BudgetExceeded, BudgetProvider
from budgetguard.testing import MockProvider
from tests.integrations.scripted import cost, serve, text, tool_call

MODEL = "gpt-4o"


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)  # (the SDK would export traces to OpenAI)
    yield
    set_tracing_disabled(False)


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard(
        "memory://",
        budgets=[bg.Budget("user", usd="5", per="day"), bg.Budget("run", usd="2", per="total")],
    )
    yield made
    made.close()


def committed(guard: bg.Guard) -> list[int]:
    return [e.amounts["usd"] for e in guard.ledger.history() if e.event == "committed"]


def spent(guard: bg.Guard, scope: bg.Scope) -> int:
    (status,) = guard.ledger.status(guard.counters_for([scope])[:1])
    assert status.held == 0
    return status.spent


attempts: list[str] = []


@function_tool
def lookup(city: str) -> str:
    """The weather in a city (fails on its first call: the model retries it)."""
    attempts.append(city)
    if len(attempts) == 1:
        raise RuntimeError("weather service busy, try again")
    return f"sunny in {city}"


async def test_every_model_call_of_a_tool_run_is_charged_to_the_run_and_the_user(guard: bg.Guard) -> None:
    attempts.clear()
    replies = [
        tool_call("lookup", {"city": "Paris"}, "call_1", prompt_tokens=2006, completion_tokens=30),
        tool_call("lookup", {"city": "Paris"}, "call_2", prompt_tokens=2100, completion_tokens=30),
        text("Sunny in Paris.", prompt_tokens=2200, completion_tokens=12),
    ]
    with serve(replies) as api:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="test", max_retries=0)
        provider = BudgetProvider(guard, client, use_responses=False)
        agent = Agent(name="weather", instructions="Use the tool.", model=MODEL, tools=[lookup])
        async with provider.client:
            with bg.budget_context(user="alice", run="run-1"):
                result = await Runner.run(agent, "Weather?", run_config=RunConfig(model_provider=provider))

    assert result.final_output == "Sunny in Paris."
    assert attempts == ["Paris", "Paris"]  # the tool's failure, then its retry
    expected = [cost(MODEL, r) for r in replies]
    assert len(api.requests) == 3
    assert api.requests[0].get("max_tokens") is None  # the SDK's omit: absent, not a ConfigurationError
    assert committed(guard) == expected
    assert spent(guard, bg.Scope("run", "run-1")) == sum(expected)
    assert spent(guard, bg.Scope("user", "alice")) == sum(expected)


async def test_responses_api_and_streamed_runs(guard: bg.Guard) -> None:
    with MockProvider() as api:
        provider = BudgetProvider(guard, api.async_openai(), user="bob", run="bob-1")
        config = RunConfig(model_provider=provider)
        agent = Agent(name="brief", instructions="Be brief.", model="gpt-4o-mini")
        async with provider.client:
            await Runner.run(agent, "Why reserve before calling?", run_config=config)
            streamed = Runner.run_streamed(agent, "And after?", run_config=config)
            async for _ in streamed.stream_events():
                pass

    assert [r.path for r in api.requests] == ["/v1/responses", "/v1/responses"]
    assert api.requests[1].body["stream"] is True
    expected = [
        bg.get_price("gpt-4o-mini").cost_nano(
            Usage(
                input_tokens=u["input_tokens"] - u["input_tokens_details"]["cached_tokens"],
                cache_read_tokens=u["input_tokens_details"]["cached_tokens"],
                output_tokens=u["output_tokens"],
            )
        )
        for u in api.usages
    ]
    assert committed(guard) == expected
    assert spent(guard, bg.Scope("user", "bob")) == sum(expected)


async def test_a_refusal_stops_the_run_as_the_sdks_error(
    guard: bg.Guard, caplog: pytest.LogCaptureFixture
) -> None:
    attempts.clear()
    replies = [tool_call("lookup", {"city": "Paris"}, "call_1"), text("never sent")]
    with serve(replies) as api:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="test", max_retries=2)
        provider = BudgetProvider(guard, client, use_responses=False)
        config = RunConfig(model_provider=provider)
        agent = Agent(name="weather", instructions="Use the tool.", model=MODEL, tools=[lookup])
        # room for the first call's worst case, not for a second one
        guard.ledger.set_limit(guard.counters_for([bg.Scope("run", "run-2")])[0], bg.to_nano("0.165"))
        caplog.set_level(logging.DEBUG)
        async with provider.client:
            with bg.budget_context(user="alice", run="run-2"), pytest.raises(AgentsException) as raised:
                await Runner.run(agent, "Weather in Paris?", run_config=config)

    error = raised.value
    assert isinstance(error, BudgetExceeded) and isinstance(error, bg.BudgetExceededError)
    assert isinstance(error.__cause__, bg.BudgetExceededError) and error.scope == "run:run-2"
    assert error.run_data is not None  # the runner's account of the run so far
    assert len(api.requests) == 1  # the refused call never left, and was not retried
    events = [e.event for e in guard.ledger.history()]
    assert events == ["committed", "refused"]
    assert spent(guard, bg.Scope("run", "run-2")) == cost(MODEL, replies[0])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

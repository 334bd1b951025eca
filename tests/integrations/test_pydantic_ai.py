"""pydantic-ai (the real ``pydantic-ai-slim[openai]``) on ``openai_model``: agent runs against local
servers (scripted tool calls, ``MockProvider``'s chat completions, streams and Responses API), every model
request charged to the nano-USD, and a refusal raised as pydantic-ai's ``UsageLimitExceeded`` with the
refusal chained."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.exceptions import AgentRunError, UsageLimitExceeded

import budgetguard as bg
from budgetguard import Usage
from budgetguard.integrations.pydantic_ai import BudgetExceeded, openai_model
from budgetguard.testing import MockProvider
from tests.integrations.scripted import cost, serve, text, tool_call

MODEL = "gpt-4o"


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")])
    yield made
    made.close()


def committed(guard: bg.Guard) -> list[int]:
    return [e.amounts["usd"] for e in guard.ledger.history() if e.event == "committed"]


def spent(guard: bg.Guard, user: str) -> int:
    (status,) = guard.ledger.status(guard.counters_for([bg.Scope("user", user)])[:1])
    assert status.held == 0
    return status.spent


def weather_agent(model: Any, attempts: list[str]) -> Agent[None, str]:
    agent = Agent(model, instructions="Use the tool.")

    @agent.tool_plain
    def lookup(city: str) -> str:
        """The weather in a city (asks the model to retry its first call)."""
        attempts.append(city)
        if len(attempts) == 1:
            raise ModelRetry("weather service busy, try again")
        return f"sunny in {city}"

    return agent


async def test_every_request_of_a_tool_run_is_charged(guard: bg.Guard) -> None:
    replies = [
        tool_call("lookup", {"city": "Paris"}, "call_1", prompt_tokens=2006, completion_tokens=30),
        tool_call("lookup", {"city": "Paris"}, "call_2", prompt_tokens=2100, completion_tokens=30),
        text("Sunny in Paris.", prompt_tokens=2200, completion_tokens=12),
    ]
    attempts: list[str] = []
    with serve(replies) as api:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="test", max_retries=0)
        model = openai_model(guard, MODEL, client)
        async with model.client:
            with bg.budget_context(user="alice"):
                result = await weather_agent(model, attempts).run("Weather in Paris?")

    assert result.output == "Sunny in Paris."
    assert attempts == ["Paris", "Paris"]  # ModelRetry, then the tool's second call
    assert len(api.requests) == 3
    expected = [cost(MODEL, r) for r in replies]
    assert committed(guard) == expected
    assert spent(guard, "alice") == sum(expected)


def chat_cost(model: str, reported: dict[str, Any]) -> int:
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    usage = Usage(
        input_tokens=reported["prompt_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=reported["completion_tokens"],
    )
    return bg.get_price(model).cost_nano(usage)


def responses_cost(model: str, reported: dict[str, Any]) -> int:
    cached = reported["input_tokens_details"]["cached_tokens"]
    usage = Usage(
        input_tokens=reported["input_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=reported["output_tokens"],
    )
    return bg.get_price(model).cost_nano(usage)


async def test_streamed_runs_and_the_responses_api(guard: bg.Guard) -> None:
    with MockProvider() as api:
        chat = openai_model(guard, "gpt-4o-mini", api.async_openai(), user="bob")
        responses = openai_model(guard, "gpt-4o-mini", api.async_openai(), responses=True, user="bob")
        async with chat.client, responses.client:
            async with Agent(chat).run_stream("Why reserve before calling?") as run:
                await run.get_output()
            await Agent(responses).run("And after?")

    assert [r.path for r in api.requests] == ["/v1/chat/completions", "/v1/responses"]
    assert api.requests[0].body["stream"] is True
    streamed, answered = api.usages
    expected = [chat_cost("gpt-4o-mini", streamed), responses_cost("gpt-4o-mini", answered)]
    assert committed(guard) == expected
    assert spent(guard, "bob") == sum(expected)


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_stream"])
async def test_a_refusal_is_pydantic_ais_usage_limit_error(guard: bg.Guard, stream: bool) -> None:
    with MockProvider() as api:
        model = openai_model(guard, "gpt-4o-mini", api.async_openai(max_retries=2), user="carol")
        guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "carol")])[0], 1)
        agent = Agent(model)

        async def run() -> None:
            if stream:
                async with agent.run_stream("Hello?") as streamed:
                    await streamed.get_output()
            else:
                await agent.run("Hello?")

        async with model.client:
            with pytest.raises(AgentRunError) as raised:
                await run()

    error = raised.value
    assert isinstance(error, UsageLimitExceeded) and isinstance(error, BudgetExceeded)
    assert isinstance(error, bg.BudgetExceededError) and error.scope == "user:carol"
    assert isinstance(error.__cause__, bg.BudgetExceededError)
    assert api.requests == []  # refused before it left, and not retried
    assert [e.event for e in guard.ledger.history()] == ["refused"]

"""Refusals inside an OpenAI Agents SDK run (the real ``openai-agents`` package): a tool whose guarded
call is refused, and an agent used as a tool whose run is refused, end the run with ``stop_on_refusal``
(the SDK would hand the model an error message and let it call, and pay, again); a tool's other errors
still reach the model; a refused streamed run logs nothing, and a stream that fails otherwise is logged
as before."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing

import openai
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.tool import default_tool_error_function

import budgetguard as bg
from budgetguard.integrations.openai_agents import BudgetExceeded, BudgetProvider, stop_on_refusal
from budgetguard.testing import MockProvider
from tests.integrations.scripted import cost, serve, text, tool_call
from tests.integrations.test_openai_agents import no_tracing

__all__ = ["no_tracing"]  # (its autouse fixture: the SDK would export traces to OpenAI)

MODEL = "gpt-4o"
SHORT = ModelSettings(max_tokens=1000)  # the outer agent's calls fit its budget; a summary does not


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    budgets = [bg.Budget("user", usd="5", per="day"), bg.Budget("feature", usd="0.05", per="day")]
    with closing(bg.Guard("memory://", budgets=budgets)) as made:
        yield made


async def run(agent: Agent, prompt: str, provider: BudgetProvider, streamed: bool) -> object:
    """``Runner.run``, or ``Runner.run_streamed`` with its events read to the end."""
    config = RunConfig(model_provider=provider)
    if not streamed:
        return (await Runner.run(agent, prompt, run_config=config)).final_output
    result = Runner.run_streamed(agent, prompt, run_config=config)
    async for _ in result.stream_events():
        pass
    return result.final_output


def events(guard: bg.Guard) -> list[tuple[str, str]]:
    return [(e.event, e.scopes[-1]) for e in guard.ledger.history()]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_tool_whose_guarded_call_is_refused_ends_the_run(
    guard: bg.Guard, streamed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with MockProvider() as mock:
        summariser = guard.wrap(mock.openai(), feature="summaries")

        @function_tool(failure_error_function=stop_on_refusal)
        def summarise(text_: str) -> str:
            """Summarise a text with an LLM."""
            reply = summariser.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text_}], max_tokens=16000
            )
            return reply.choices[0].message.content or ""

        replies = [tool_call("summarise", {"text_": "x"}, f"call_{i}") for i in range(3)] + [text("gave up")]
        with serve(replies) as api:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="test", max_retries=0)
            provider = BudgetProvider(guard, client, feature="agent", use_responses=False)
            agent = Agent(name="a", model=MODEL, model_settings=SHORT, tools=[summarise])
            async with provider.client:
                with bg.budget_context(user="alice"), pytest.raises(BudgetExceeded) as raised:
                    await run(agent, "Summarise x", provider, streamed)

    error = raised.value
    assert isinstance(error.__cause__, bg.BudgetExceededError) and error.scope == "feature:summaries"
    assert len(api.requests) == 1  # no model call after the refused tool: nothing more paid
    assert api.requests[0].get("stream", False) is streamed
    assert events(guard) == [("committed", "feature:agent"), ("refused", "feature:summaries")]
    assert guard.ledger.history()[0].amounts["usd"] == cost(MODEL, replies[0])
    assert mock.requests == []  # the refused summary never left
    assert not warnings(caplog)  # the SDK logged no failed tool


async def test_a_tools_other_errors_still_reach_the_model(guard: bg.Guard) -> None:
    @function_tool(failure_error_function=stop_on_refusal)
    def flaky(city: str) -> str:
        """The weather in a city."""
        raise RuntimeError("weather service busy")

    replies = [tool_call("flaky", {"city": "Paris"}, "call_1"), text("sunny, probably")]
    with serve(replies) as api:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="test", max_retries=0)
        provider = BudgetProvider(guard, client, feature="agent", use_responses=False)
        agent = Agent(name="a", model=MODEL, model_settings=SHORT, tools=[flaky])
        async with provider.client:
            with bg.budget_context(user="alice"):
                output = await run(agent, "Weather?", provider, streamed=True)

    assert output == "sunny, probably"
    [told] = [m["content"] for m in api.requests[1]["messages"] if m["role"] == "tool"]
    # the SDK's default (its text changes between releases: 0.25 dropped "Please try again.")
    assert told == default_tool_error_function(None, RuntimeError("weather service busy"))  # type: ignore[arg-type]
    assert [e for e, _ in events(guard)] == ["committed", "committed"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_agent_used_as_a_tool_whose_run_is_refused_ends_the_outer_run(
    guard: bg.Guard, streamed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    replies = [tool_call("research", {"input": "x"}, "call_1"), text("never sent")]
    with serve(replies) as api:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="test", max_retries=0)
        provider = BudgetProvider(guard, client, feature="agent", use_responses=False)
        researcher = Agent(name="researcher", model=MODEL, model_settings=ModelSettings(max_tokens=16000))
        tool = researcher.as_tool("research", "Research a topic.", failure_error_function=stop_on_refusal)
        agent = Agent(name="a", model=MODEL, model_settings=SHORT, tools=[tool])
        async with provider.client:
            with bg.budget_context(user="alice"), pytest.raises(BudgetExceeded) as raised:
                await run(agent, "Research x", provider, streamed)

    assert isinstance(raised.value.__cause__, bg.BudgetExceededError)
    assert raised.value.scope == "feature:agent"  # the researcher's worst case does not fit
    assert len(api.requests) == 1  # the outer agent's first call; the researcher's never left
    assert events(guard) == [("committed", "feature:agent"), ("refused", "feature:agent")]
    assert not warnings(caplog)


async def streamed_run(guard: bg.Guard, client: openai.AsyncOpenAI, user: str) -> None:
    provider = BudgetProvider(guard, client, feature="streams", use_responses=True)
    async with provider.client:
        with bg.budget_context(user=user):
            await run(Agent(name="a", model=MODEL), "Why?", provider, streamed=True)


async def test_a_refused_streamed_run_logs_nothing_and_a_failing_stream_is_still_logged(
    guard: bg.Guard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with MockProvider() as api:
        guard.ledger.set_limit(guard.counters_for([bg.Scope("feature", "streams")])[0], bg.to_nano("1"))
        guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], 1000)
        with pytest.raises(BudgetExceeded):
            await streamed_run(guard, api.async_openai(), "alice")
    assert not warnings(caplog) and api.requests == []

    with serve([]) as failing:  # (it answers /v1/responses with a 500)
        client = openai.AsyncOpenAI(base_url=failing.url, api_key="test", max_retries=0)
        with pytest.raises(openai.APIStatusError):
            await streamed_run(guard, client, "bob")
    assert any(line.startswith("openai.agents: Error streaming response") for line in warnings(caplog))

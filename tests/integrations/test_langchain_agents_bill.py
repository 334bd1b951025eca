"""LangChain 1.x agents with ``BudgetMiddleware``: the reservation is the worst case of what is sent and the
charge is the bill, against the real ``create_agent`` and ``ChatOpenAI`` on local servers: a Responses API
web search's fee (issue 18's review: charged $0), a structured output's schema (ToolStrategy's tool,
ProviderStrategy's response format) in the estimate, a fallback model's call reserved and charged at its
own rate whatever the middleware order, and a stream on a custom base URL that reports its usage."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import LLMToolSelectorMiddleware, ModelFallbackMiddleware
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.exceptions import ModelError
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

import budgetguard as bg
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.integrations.langchain_agents import BudgetExceeded, BudgetMiddleware
from budgetguard.testing import MockProvider
from tests.integrations.scripted import cost, serve, text, tool_call
from tests.integrations.test_langchain_agents import chat, lookup, status
from tests.sdk_http import unpooled_openai_http

QUESTION = {"messages": [{"role": "user", "content": "What is the weather in Paris today?"}]}


def track(usd: str = "5") -> tuple[bg.Guard, list[bg.Event]]:
    events: list[bg.Event] = []
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd=usd, per="day")], on_event=events.append)
    return guard, events


def billed(model: str, usage: dict[str, Any], **units: int) -> int:
    """What the mock's reported usage costs, with the billed units it reports as output items."""
    return bg.to_nano(bg.cost(model, dataclasses.replace(bg.Usage.from_response(usage), **units)))


# -- 1. billed units that are not tokens ------------------------------------------------------------


def responses_chat(url: str, model: str = "gpt-4o") -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=url, api_key="test", max_retries=0, max_tokens=400,  # type: ignore[arg-type]
        use_responses_api=True, **unpooled_openai_http(),
    )  # fmt: skip


@pytest.mark.parametrize("output_version", ["responses/v1", "v0", "v1"])
def test_a_responses_web_search_is_charged_its_fee(output_version: str) -> None:
    """The Responses API's web search is billed per call: the agent's call is charged the fee on top of its
    tokens (the review found it charged tokens only, 34% under), and the reservation covers it."""
    guard, events = track()
    with MockProvider() as api:
        model = responses_chat(api.openai_base_url).model_copy(update={"output_version": output_version})
        agent = create_agent(model, [{"type": "web_search"}], middleware=[BudgetMiddleware(guard, user="al")])
        agent.invoke(QUESTION)

    [sent] = api.requests
    assert sent.body["tools"] == [{"type": "web_search"}]
    [usage] = api.usages
    expected = billed("gpt-4o", usage, web_search_calls=1)
    assert [e.kind for e in events] == ["reserved", "committed"]
    assert bg.to_nano(events[1].actual) == expected
    assert events[0].estimated == bg.estimate(sent.body).cost  # the Responses request, web searches and all
    assert status(guard, "al") == (expected, 0)


@pytest.mark.parametrize("model", ["gpt-4o", "o3"])
def test_a_responses_runs_tool_history_is_estimated_as_the_responses_request_sent(model: str) -> None:
    """A run langchain-openai sends to the Responses API is estimated by that API's rules (its input items,
    function calls and their outputs, its flat tools: o3 reads a strict tool's schema rules), not as a
    chat completion (which counts less)."""
    history = [
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"city": "Paris"}, "id": "call_1"}]),
        ToolMessage("sunny in Paris", tool_call_id="call_1"),
    ]
    guard, events = track()
    with MockProvider() as api:
        bound = responses_chat(api.openai_base_url, model).bind_tools([lookup], strict=True)
        bound.invoke(history, config={"callbacks": [BudgetCallbackHandler(guard, user="bo")]})
    [sent] = api.requests
    kinds = [item.get("type") for item in sent.body["input"]]
    assert kinds == ["message", "function_call", "function_call_output"]
    assert events[0].estimated == bg.estimate(sent.body).cost


def test_the_callback_handler_charges_a_web_search_fee_too() -> None:
    guard, _ = track()
    with MockProvider() as api:
        model = responses_chat(api.openai_base_url).bind_tools([{"type": "web_search"}])
        handler = BudgetCallbackHandler(guard, user="bo")
        model.invoke("What is the weather in Paris today?", config={"callbacks": [handler]})
    [usage] = api.usages
    assert status(guard, "bo") == (billed("gpt-4o", usage, web_search_calls=1), 0)


# -- 2. structured output ------------------------------------------------------------------------------


class Weather(BaseModel):
    """The weather in a city, as the agent reports it."""

    city: str
    sky: str
    temperature_celsius: float
    advice_for_travellers_with_a_long_field_name: str


@pytest.mark.parametrize("strategy", ["tool", "provider"])
def test_a_structured_outputs_schema_is_in_the_estimate(strategy: str) -> None:
    """``response_format=`` adds the schema as a tool (ToolStrategy) or a JSON-schema response format
    (ProviderStrategy) after the middleware's request: the reservation is the estimate of what is sent."""
    answer = {"city": "Paris", "sky": "clear", "temperature_celsius": 21.5,
              "advice_for_travellers_with_a_long_field_name": "sunglasses"}  # fmt: skip
    usage = {"prompt_tokens": 180, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 0}}
    reply = (
        tool_call("Weather", answer, "call_1", **usage)
        if strategy == "tool"
        else text(json.dumps(answer), **usage)
    )
    fmt = ToolStrategy(Weather) if strategy == "tool" else ProviderStrategy(Weather)
    guard, events = track()
    with serve([reply]) as api:
        agent = create_agent(
            chat(api.url), [], response_format=fmt, middleware=[BudgetMiddleware(guard, user="cy")]
        )
        result = agent.invoke(QUESTION)

    assert result["structured_response"] == Weather(**answer)
    [sent] = api.requests
    assert ("tools" in sent) if strategy == "tool" else sent["response_format"]["type"] == "json_schema"
    reserved = events[0]
    assert reserved.kind == "reserved" and reserved.estimated == bg.estimate(sent).cost
    assert status(guard, "cy") == (cost("gpt-4o", reply), 0)


# -- 3. a fallback model, whatever the middleware order ------------------------------------------------


PRIMARY, FALLBACK = "gpt-4o-mini", "gpt-4o"  # (the fallback is the dearer one)


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("budget_first", [True, False])
async def test_a_fallback_call_is_reserved_and_charged_at_its_own_rate(
    budget_first: bool, is_async: bool
) -> None:
    guard, events = track()
    with MockProvider() as api:
        api.fail(500, times=1)  # the primary's call fails
        budget = BudgetMiddleware(guard, user="di")
        fallback = ModelFallbackMiddleware(chat(api.openai_base_url, FALLBACK))
        middleware = [budget, fallback] if budget_first else [fallback, budget]
        agent = create_agent(chat(api.openai_base_url, PRIMARY), [], middleware=middleware)
        await agent.ainvoke(QUESTION) if is_async else agent.invoke(QUESTION)

    first, second = api.requests
    assert (first.body["model"], second.body["model"]) == (PRIMARY, FALLBACK)
    [usage] = api.usages
    assert [(e.kind, e.model) for e in events] == [
        ("reserved", PRIMARY), ("released", PRIMARY), ("reserved", FALLBACK), ("committed", FALLBACK),
    ]  # fmt: skip
    assert events[2].estimated == bg.estimate(second.body).cost  # reserved before it was sent
    assert status(guard, "di") == (billed(FALLBACK, usage), 0)


@pytest.mark.parametrize("budget_first", [True, False])
def test_a_refused_fallback_call_stops_the_run_as_a_refusal(budget_first: bool) -> None:
    """The primary (cheap) is admitted and fails; the dearer fallback's worst case is past the limit: it is
    refused before it is sent, and the run raises the refusal as LangChain's ``ModelError``."""
    guard, events = track()
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "ed")])[0], bg.to_nano("0.002"))
    with MockProvider() as api:
        api.fail(500, times=1)
        budget = BudgetMiddleware(guard, user="ed")
        fallback = ModelFallbackMiddleware(chat(api.openai_base_url, FALLBACK))
        middleware = [budget, fallback] if budget_first else [fallback, budget]
        agent = create_agent(chat(api.openai_base_url, PRIMARY), [], middleware=middleware)
        with pytest.raises(ModelError) as raised:
            agent.invoke(QUESTION)

    assert isinstance(raised.value, BudgetExceeded) and raised.value.scope == "user:ed"
    assert [r.body["model"] for r in api.requests] == [PRIMARY]  # the fallback never sent
    assert [(e.kind, e.model) for e in events] == [
        ("reserved", PRIMARY), ("released", PRIMARY), ("refused", FALLBACK),
    ]  # fmt: skip
    assert status(guard, "ed") == (0, 0)


def test_a_model_that_a_middleware_inside_it_calls_is_guarded_too() -> None:
    """``LLMToolSelectorMiddleware`` calls its own model inside ``wrap_model_call`` to pick the tools: that
    call is sent too, so it is reserved and charged at its model's rate."""
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 0}}
    picked, answer = text(json.dumps({"tools": ["lookup"]}), **usage), text("Sunny.", **usage)
    guard, events = track()
    with serve([picked, answer]) as api:
        selector = LLMToolSelectorMiddleware(model=chat(api.url, PRIMARY))
        middleware = [BudgetMiddleware(guard, user="go"), selector]
        agent = create_agent(chat(api.url, FALLBACK), [lookup], middleware=middleware)
        agent.invoke(QUESTION)
    assert [r["model"] for r in api.requests] == [PRIMARY, FALLBACK]
    assert [(e.kind, e.model) for e in events] == [
        ("reserved", PRIMARY), ("committed", PRIMARY), ("reserved", FALLBACK), ("committed", FALLBACK),
    ]  # fmt: skip
    assert status(guard, "go") == (cost(PRIMARY, picked) + cost(FALLBACK, answer), 0)


# -- 4. streams on a custom base URL -----------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_stream_on_a_custom_base_url_is_charged_its_usage(is_async: bool) -> None:
    """langchain-openai asks a custom base URL for no stream usage by default: the middleware asks for it,
    so the stream is charged its bill (it was charged the worst case)."""
    guard, events = track()
    with MockProvider() as api:
        agent = create_agent(chat(api.openai_base_url), [], middleware=[BudgetMiddleware(guard, user="fi")])
        if is_async:
            chunks = [c async for c in agent.astream(QUESTION, stream_mode="messages")]
        else:
            chunks = list(agent.stream(QUESTION, stream_mode="messages"))

    assert len(chunks) > 2  # (streamed: the model's tokens came as chunks)
    [sent] = api.requests
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    [usage] = api.usages
    assert [e.kind for e in events] == ["reserved", "committed"]
    assert status(guard, "fi") == (billed("gpt-4o", usage), 0)


def test_a_model_that_turned_stream_usage_off_keeps_it_off() -> None:
    """``stream_usage=False`` (a server that rejects ``stream_options``) is the user's choice: no usage is
    asked for, and the stream is charged its worst case."""
    guard, events = track()
    with MockProvider() as api:
        model = chat(api.openai_base_url).model_copy(update={"stream_usage": False})
        agent = create_agent(model, [], middleware=[BudgetMiddleware(guard, user="gu")])
        list(agent.stream(QUESTION, stream_mode="messages"))
    [sent] = api.requests
    assert "stream_options" not in sent.body
    assert status(guard, "gu") == (bg.to_nano(events[0].estimated), 0)

"""Second review of red team 3: holes its first review's fixes left.

- A LangChain run that streams inside ``invoke`` (``ChatOpenAI(streaming=True)``; any chat model under
  ``astream_events``, or a LangGraph node streamed with ``stream_mode="messages"``) and breaks off is
  ended by langchain-core with the error's generation alone (``_generate_with_cache`` keeps the chunks
  to itself): the chunks it showed never reach ``partial_usage``, so the run is charged as a failed call,
  its input, where the same stream through ``model.stream()`` is charged by the guard's ``received`` rule
  (an agent's ``BudgetMiddleware`` too).
- A Claude run's nested ``model_kwargs`` were merged over the call's own parameters: ChatAnthropic sends
  the call's (``{**self.model_kwargs, **kwargs}``), so a ``speed="fast"`` given at the call, over a
  chat model whose ``model_kwargs`` say ``"standard"``, was reserved at the base price.

Each test failed on main (ce9861a) with the figure its docstring gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain.agents import create_agent

from budgetguard import Budget, Guard
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.integrations.langchain_agents import BudgetMiddleware
from tests.guard.one_call import committed, nano
from tests.guard.payloads import chat_stream_chunks, cut_stream, openai_sse, serve
from tests.sdk_http import OPENAI_STREAM_CUT
from tests.test_redteam3 import ASK, HI, charged_usd, chat_openai, gpt5_stream, run
from tests.test_review_rt3 import CLAUDE_FAST, ClaudeParams, StartUsageClaude


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
    yield made
    made.close()


def test_a_langchain_run_streamed_inside_invoke_and_cut_is_charged_as_a_cut_stream(guard: Guard) -> None:
    """On main: ``ChatOpenAI(streaming=True).invoke`` on gpt-5, its stream cut after its first words, was
    charged its input alone, $0.000015 (langchain-core ends the run with the error's generation, not the
    chunks); the same cut stream through ``model.stream()`` is charged $0.040015, its 4,000-token output
    bound ($10 / M): gpt-5 reasons unseen before it writes, billed as it goes."""
    api = serve(cut_stream(gpt5_stream(), after_events=3))
    with pytest.raises(OPENAI_STREAM_CUT):
        run(guard, chat_openai(api, "gpt-5", max_tokens=4000, stream_usage=True, streaming=True))
    inside_invoke = charged_usd(guard)

    streamed = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
    try:
        api = serve(cut_stream(gpt5_stream(), after_events=3))
        with pytest.raises(OPENAI_STREAM_CUT):
            run(streamed, chat_openai(api, "gpt-5", max_tokens=4000, stream_usage=True), stream=True)
        assert inside_invoke == charged_usd(streamed)
    finally:
        streamed.close()
    assert inside_invoke >= Decimal(nano((4000, "10"))) / 10**9


def test_a_langchain_claude_call_parameter_beats_its_model_kwargs(guard: Guard) -> None:
    """On main: a call's ``speed="fast"`` over a Claude chat model whose ``model_kwargs`` say
    ``speed="standard"`` was reserved at the base price, $0.100, as the model_kwargs were merged over the
    call's parameters; ChatAnthropic sends the call's (``{**self.model_kwargs, **kwargs}``): fast mode,
    $0.200 reserved by the estimate of the request as sent."""
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="alice")]}
    ClaudeParams(model_kwargs={"speed": "standard"}).invoke(ASK, config=config, speed="fast")
    sent = {"model": CLAUDE_FAST, "max_tokens": 4000, "speed": "fast", "messages": HI}
    assert committed(guard).data["estimated_usd"] == str(guard.estimator(sent).cost)


class StreamingClaude(StartUsageClaude):
    """``StartUsageClaude`` with a ``streaming`` setting: ``streaming=True`` streams inside ``ainvoke``."""

    streaming: bool = False


def test_a_langchain_claude_run_streamed_inside_ainvoke_and_cut_is_charged_as_a_cut_stream(
    guard: Guard,
) -> None:
    """On main: a Claude run streamed inside ``ainvoke`` (``streaming=True``), cut after its thinking and
    first words, was charged as a failed call, its input estimate, $0.000051 (what it showed never
    reached the handler's end); through ``astream()`` the same cut stream is charged $0.0750, its
    thinking at its 4,000-token output bound ($15 / M)."""
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="alice")]}
    with pytest.raises(ConnectionError):
        asyncio.run(StreamingClaude(streaming=True).ainvoke(ASK, config=config))
    inside_ainvoke = charged_usd(guard)

    streamed = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
    try:

        async def consume() -> None:
            config: Any = {"callbacks": [BudgetCallbackHandler(streamed, user="alice")]}
            async for _ in StreamingClaude().astream(ASK, config=config):
                pass

        with pytest.raises(ConnectionError):
            asyncio.run(consume())
        assert inside_ainvoke == charged_usd(streamed)
    finally:
        streamed.close()
    assert inside_ainvoke == Decimal(nano((5000, "3"), (4000, "15"))) / 10**9


@pytest.mark.parametrize("is_async", [False, True], ids=["stream", "astream"])
def test_an_agent_streamed_as_messages_whose_model_stream_is_cut_is_charged_as_a_cut_stream(
    guard: Guard, is_async: bool
) -> None:
    """On main: a ``create_agent`` agent with ``BudgetMiddleware``, streamed with
    ``stream_mode="messages"`` (its model streams inside the node's call), its Claude's stream cut after
    its thinking and first words, was charged as a failed call, $0.000051; the cut stream is charged
    $0.0750, as through ``model.stream()``: Claude's thinking at its 4,000-token bound ($15 / M)."""
    agent = create_agent(StreamingClaude(), [], middleware=[BudgetMiddleware(guard, user="alice")])
    question = {"messages": HI}

    async def consume() -> None:
        async for _ in agent.astream(question, stream_mode="messages"):
            pass

    with pytest.raises(ConnectionError):
        asyncio.run(consume()) if is_async else list(agent.stream(question, stream_mode="messages"))
    assert charged_usd(guard) == Decimal(nano((5000, "3"), (4000, "15"))) / 10**9


@pytest.mark.parametrize("output_version", ["v0", "v1"])
def test_a_run_streamed_inside_invoke_and_cut_counts_each_chunk_once(output_version: str) -> None:
    """On main: ``ChatOpenAI(streaming=True).invoke`` on gpt-4o cut after its first words was charged its
    input alone, $0.00003; it is charged what ``model.stream()`` charges the same cut stream, $0.00008:
    its words once, though langchain-openai's ``_stream`` and langchain-core both report each chunk."""
    charged = []
    for settings, stream in (({"streaming": True}, False), ({}, True)):
        held = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
        try:
            api = serve(cut_stream(openai_sse(chat_stream_chunks(include_usage=True)), after_events=4))
            model = chat_openai(api, "gpt-4o", stream_usage=True, output_version=output_version, **settings)
            with pytest.raises(OPENAI_STREAM_CUT):
                run(held, model, stream=stream)
            charged.append(charged_usd(held))
        finally:
            held.close()
    assert charged[0] == charged[1] > Decimal(nano((12, "2.5"))) / 10**9

"""LangChain: runs streamed by langchain-core 1.8's protocol (``stream_events(version="v3")``), cut or not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from budgetguard import Budget, Guard
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.integrations.langchain_agents import BudgetMiddleware
from tests.guard.one_call import nano
from tests.guard.payloads import chat_stream_chunks, cut_stream, openai_sse, serve
from tests.integrations.test_langchain_agents_sync_driven import ToThread
from tests.sdk_http import OPENAI_STREAM_CUT
from tests.test_redteam3 import ASK, HI, charged_usd, chat_openai
from tests.test_review2_rt3 import StreamingClaude

pytest.importorskip("langchain_protocol")  # (langchain-core 1.8: older ones have no protocol streaming)
pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.LangChainBetaWarning")  # (v3 is in beta)


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
    yield made
    made.close()


class TaggedClaude(StreamingClaude):
    """``StreamingClaude`` tagging its chunks as langchain-anthropic does (``model_provider``), so that
    langchain-core reads its thinking block as a standard ``reasoning`` block; its ``_stream``, as the
    fake's, reports no chunk of its own (``on_llm_new_token``)."""

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for chunk in super()._stream(*args, **kwargs):
            chunk.message.response_metadata["model_provider"] = "anthropic"
            yield chunk


def handler_config(guard: Guard) -> Any:
    return {"callbacks": [BudgetCallbackHandler(guard, user="alice")]}


def consume_v3(model: Any, guard: Guard, *, is_async: bool = False) -> None:
    if not is_async:
        for _ in model.stream_events(ASK, handler_config(guard), version="v3"):
            pass
        return

    async def consume() -> None:
        try:
            async for _ in await model.astream_events(ASK, handler_config(guard), version="v3"):
                pass
        finally:  # (langchain-core ends the run in a task of its own: left to run, not cancelled)
            await asyncio.gather(*asyncio.all_tasks() - {asyncio.current_task()})

    asyncio.run(consume())


def streamed_charge(model: Any) -> Decimal:
    """What ``model.stream()`` charges the same run, on a guard of its own."""
    held = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
    try:
        try:
            for _ in model.stream(ASK, config=handler_config(held)):
                pass
        except (ConnectionError, *OPENAI_STREAM_CUT):
            pass
        return charged_usd(held)
    finally:
        held.close()


@pytest.mark.parametrize("is_async", [False, True], ids=["stream_events", "astream_events"])
def test_a_claude_stream_of_langchain_cores_v3_protocol_cut_is_charged_as_a_cut_stream(
    guard: Guard, is_async: bool
) -> None:
    """On main: a Claude run streamed by the v3 protocol, cut after its thinking and first words, was
    charged as a failed call, its input estimate, $0.000051 (its handler saw no ``on_llm_new_token``);
    it is charged what ``model.stream()`` charges a stream cut there without Anthropic's input count
    (which the protocol carries on ``message-finish`` alone): its thinking at its 4,000-token bound."""
    with pytest.raises(ConnectionError):
        consume_v3(TaggedClaude(), guard, is_async=is_async)
    charged = charged_usd(guard)
    assert charged == streamed_charge(TaggedClaude(start_usage=False))
    assert charged > Decimal(nano((4000, "15"))) / 10**9


def test_a_chat_openai_v3_stream_cut_is_charged_as_its_stream_is(guard: Guard) -> None:
    """ChatOpenAI's ``_stream`` reports each chunk (``on_llm_new_token``) and langchain-core each protocol
    event: a cut v3 stream is charged as ``model.stream()`` charges it, its words counted once."""
    sse = openai_sse(chat_stream_chunks(include_usage=True))
    with pytest.raises(OPENAI_STREAM_CUT):
        consume_v3(chat_openai(serve(cut_stream(sse, after_events=4)), "gpt-4o", stream_usage=True), guard)
    model = chat_openai(serve(cut_stream(sse, after_events=4)), "gpt-4o", stream_usage=True)
    assert charged_usd(guard) == streamed_charge(model) > Decimal(nano((12, "2.5"))) / 10**9


def test_a_whole_v3_stream_is_charged_its_usage(guard: Guard) -> None:
    """A complete v3 stream of ChatOpenAI is charged the usage its last chunk carried, once."""
    sse = openai_sse(chat_stream_chunks(include_usage=True))
    consume_v3(chat_openai(serve(sse), "gpt-4o", stream_usage=True), guard)
    assert charged_usd(guard) == streamed_charge(chat_openai(serve(sse), "gpt-4o", stream_usage=True))


@pytest.mark.parametrize("is_async", [False, True], ids=["stream_events", "astream_events"])
def test_an_agent_streamed_by_the_v3_protocol_whose_claude_is_cut_is_charged_as_a_cut_stream(
    guard: Guard, is_async: bool
) -> None:
    """A ``create_agent`` agent with ``BudgetMiddleware`` streamed by LangGraph's v3 protocol invokes its
    model under a v2 streaming handler (protocol events, no ``on_llm_new_token``): on main its Claude cut
    after its thinking and first words was charged as a failed call, $0.000051; now as the cut stream."""
    agent = create_agent(TaggedClaude(), [], middleware=[BudgetMiddleware(guard, user="alice")])
    question = {"messages": HI}

    async def consume() -> None:
        try:
            async for _ in await agent.astream_events(question, version="v3"):
                pass
        finally:  # (as ``consume_v3``)
            await asyncio.gather(*asyncio.all_tasks() - {asyncio.current_task()})

    with pytest.raises(ConnectionError):
        asyncio.run(consume()) if is_async else list(agent.stream_events(question, version="v3"))
    assert charged_usd(guard) == streamed_charge(TaggedClaude(start_usage=False))


def test_an_agents_model_invoked_from_a_thread_under_the_v3_protocol_and_cut_is_charged_as_a_cut_stream(
    guard: Guard,
) -> None:
    """The same agent streamed by ``astream_events(version="v3")``, a later middleware invoking its model
    from a thread (``asyncio.to_thread(model.invoke, ...)``): a sync callback manager passes the protocol
    events to the middleware's handler and its sync twin (``_SyncDriven``), read once."""
    middleware = [BudgetMiddleware(guard, user="alice"), ToThread()]
    agent = create_agent(TaggedClaude(), [], middleware=middleware)

    async def consume() -> None:
        try:
            async for _ in await agent.astream_events({"messages": HI}, version="v3"):
                pass
        finally:  # (as ``consume_v3``)
            await asyncio.gather(*asyncio.all_tasks() - {asyncio.current_task()})

    with pytest.raises(ConnectionError):
        asyncio.run(consume())
    assert charged_usd(guard) == streamed_charge(TaggedClaude(start_usage=False))


class NativeClaude(TaggedClaude):
    """``TaggedClaude`` producing its protocol events itself (``_stream_chat_model_events``), as a provider
    package may, with ``extra`` after its ``message-start``: events langchain-core passes on (its
    ``ChatModelStream`` takes them) though they are off the protocol."""

    extra: list[Any] = Field(default_factory=list)

    def _stream_chat_model_events(self, messages: Any, **kwargs: Any) -> Iterator[Any]:
        from langchain_core.language_models._compat_bridge import chunks_to_events  # (1.8's)

        for event in chunks_to_events(self._stream(messages, **kwargs)):
            yield event
            if event["event"] == "message-start":
                yield from self.extra


OFF_PROTOCOL = {
    "delta-a-string": [{"event": "content-block-delta", "index": 0, "delta": "a delta"}],
    "block-a-string": [{"event": "content-block-start", "index": 5, "content": "a block"}],
    "tool-name-an-int": [
        {"event": "content-block-start", "index": 6, "content": {"type": "tool_call_chunk", "name": 5}}
    ],
    "tool-args-a-dict": [
        {"event": "content-block-delta", "index": 7, "delta": {"type": "tool-call-delta", "args": {"a": 1}}}
    ],
    "delta-extra-floats": [
        {"event": "content-block-delta", "index": 8, "delta": {"type": "text-delta", "text": "", "p": p}}
        for p in (0.5, 0.25)
    ],
}


@pytest.mark.parametrize("extra", OFF_PROTOCOL.values(), ids=OFF_PROTOCOL.keys())
def test_a_cut_v3_stream_with_an_event_off_the_protocol_is_charged_without_raising(
    guard: Guard, extra: Any
) -> None:
    """On lcv3: a cut v3 stream whose native producer showed events off the protocol (a string for a
    delta or a block, a tool call's name or arguments not a string, deltas with an extra field that merge
    badly) raised from the handler's ``on_llm_error`` (``raise_error``: an ``AttributeError``,
    ``ValueError``, ``ValidationError`` or ``TypeError`` in place of the model's ``ConnectionError``) and
    its hold was never settled; such an event now counts as an empty chunk."""
    with pytest.raises(ConnectionError):
        consume_v3(NativeClaude(extra=extra), guard)
    assert charged_usd(guard) == streamed_charge(TaggedClaude(start_usage=False))

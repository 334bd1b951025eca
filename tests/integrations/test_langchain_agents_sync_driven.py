"""LangChain 1.x agents with ``BudgetMiddleware`` on an event loop whose later middleware sends the model call
from a thread (``await asyncio.to_thread(model.invoke, ...)``): a sync callback manager drives the run, and
runs an async handler's coroutines on a loop of their own, logging their exceptions away (LangChain's
``_run_coros``). A review found the refusal swallowed there (the call sent unguarded) and, on a Redis guard,
the commit failing on that loop, closed by then. The real ``create_agent`` on ``ChatOpenAI`` against
``MockProvider``, in memory and on a real Redis server."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

import budgetguard as bg
from budgetguard.integrations.langchain_agents import BudgetMiddleware
from budgetguard.testing import MockProvider
from tests.ledger.conftest import redis_url  # noqa: F401 - a Redis server of the tests' own

QUESTION = {"messages": [{"role": "user", "content": "What is the weather in Paris today?"}]}


class ToThread(AgentMiddleware):  # type: ignore[misc]
    """Sends the model call from a worker thread, with the sync ``invoke`` (the context copied)."""

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        return await asyncio.to_thread(request.model.invoke, request.messages)


class OnTheLoop(AgentMiddleware):  # type: ignore[misc]
    """Sends the model call with the sync ``invoke`` on the event loop's own thread (blocking it)."""

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        return request.model.invoke(request.messages)


class CloseOnLoop(AgentMiddleware):  # type: ignore[misc]
    """Starts a stream and reads a chunk from a thread, then closes it on the loop's thread: the run the
    twin started ends there (a review found it settled by neither handler, its hold released)."""

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        stream = await asyncio.to_thread(lambda: request.model.stream(request.messages))
        chunk = await asyncio.to_thread(next, stream)
        stream.close()
        return AIMessage(content=chunk.content)


def agent_on(api: MockProvider, guard: bg.Guard, sender: type[AgentMiddleware] = ToThread) -> Any:
    model = ChatOpenAI(
        model="gpt-4o", base_url=api.openai_base_url, api_key="test", max_retries=0, max_tokens=400
    )  # type: ignore[arg-type]
    return create_agent(model, [], middleware=[BudgetMiddleware(guard, user="t"), sender()])


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return f"{request.getfixturevalue('redis_url')}?namespace=t{secrets.token_hex(6)}"


def spent_held(guard: bg.Guard) -> tuple[int, int]:
    [found] = guard.ledger.status(guard.counters_for([bg.Scope("user", "t")])[:1])
    return found.spent, found.held


async def test_a_refusal_stops_a_model_call_sent_from_a_thread(store: str) -> None:
    events: list[bg.Event] = []
    guard = bg.Guard(store, budgets=[bg.Budget("user", usd="0.0001", per="day")], on_event=events.append)
    try:
        with MockProvider() as api:
            with pytest.raises(bg.BudgetExceededError):
                await agent_on(api, guard).ainvoke(QUESTION)
            assert api.requests == []
        assert [e.kind for e in events] == ["refused"]
        assert spent_held(guard) == (0, 0)
    finally:
        await guard.aclose()


@pytest.mark.parametrize("sender", [ToThread, OnTheLoop])
async def test_an_admitted_model_call_sent_from_a_thread_is_charged_once(
    store: str, sender: type[AgentMiddleware]
) -> None:
    """(Invoked synchronously on the loop's thread, LangChain runs the async handler's coroutine on a loop
    of its own in a worker thread: it settles with the guard's sync operations, which a Redis guard's async
    connections would fail on that loop.)"""
    events: list[bg.Event] = []
    guard = bg.Guard(store, budgets=[bg.Budget("user", usd="5", per="day")], on_event=events.append)
    try:
        with MockProvider() as api:
            await agent_on(api, guard, sender).ainvoke(QUESTION)
        [request] = api.requests
        [usage] = api.usages
        bill = bg.to_nano(bg.cost(request.body["model"], bg.Usage.from_response(usage)))
        assert [e.kind for e in events] == ["reserved", "committed"]
        assert spent_held(guard) == (bill, 0)
        assert [entry.event for entry in guard.ledger.history()] == ["committed"]
    finally:
        await guard.aclose()


async def test_a_stream_started_from_a_thread_and_closed_on_the_loop_is_charged(store: str) -> None:
    events: list[bg.Event] = []
    guard = bg.Guard(store, budgets=[bg.Budget("user", usd="5", per="day")], on_event=events.append)
    try:
        with MockProvider() as api:
            await agent_on(api, guard, CloseOnLoop).ainvoke(QUESTION)
            assert len(api.requests) == 1
        assert [e.kind for e in events] == ["reserved", "committed"]
        spent, held = spent_held(guard)
        assert spent > 0 and held == 0
        assert [entry.event for entry in guard.ledger.history()] == ["committed"]
    finally:
        await guard.aclose()

"""LangChain 1.x agents with ``BudgetMiddleware`` on an event loop: a model invoked synchronously on the
loop's own thread inside the async model call (a later middleware calling ``model.invoke``,
``model.stream``), and a model carrying its own ``BudgetCallbackHandler`` of the same guard sent from a
thread without the context (``loop.run_in_executor``, a plain ``ThreadPoolExecutor``). A review found the
first sent unguarded (LangChain ran the async handler's coroutine in its executor and logged the refusal
away) and the second charged twice. The real ``create_agent`` on ``ChatOpenAI`` against ``MockProvider``,
on every store kind."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

import budgetguard as bg
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.integrations.langchain_agents import BudgetMiddleware
from budgetguard.testing import MockProvider
from tests.integrations.test_langchain_agents_sync_driven import (
    QUESTION,
    BlockedLoop,
    OnTheLoop,
    Threaded,
    ToThread,
    books,
    guard_on,
    store,  # noqa: F401 - every store kind
)
from tests.ledger.conftest import redis_url  # noqa: F401 - a Redis server of the tests' own
from tests.sdk_http import unpooled_openai_http


class StreamOnTheLoop(AgentMiddleware):  # type: ignore[misc]
    """Streams the model call with the sync ``stream`` on the event loop's own thread."""

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        chunks = list(request.model.stream(request.messages))
        return AIMessage(content="".join(str(chunk.content) for chunk in chunks))


class BatchOnTheLoop(AgentMiddleware):  # type: ignore[misc]
    """Sends two prompts in one ``generate`` on the event loop's own thread (a sync manager's batch)."""

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        result = request.model.generate([request.messages, request.messages])
        return result.generations[0][0].message  # type: ignore[attr-defined]


def bare(send: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """``send`` to run in an empty context: a pool's worker without the caller's context, as Python's own
    pools run it (budgetguard's pool patch, on from the first ``budget_context()`` or ``track()`` in the
    process unless ``BUDGETGUARD_FOLLOW_THREADS=0``, would carry it: the tests' order would decide)."""
    return functools.partial(contextvars.Context().run, send, *args, **kwargs)


class InExecutor(AgentMiddleware):  # type: ignore[misc]
    """Sends the model call with ``loop.run_in_executor``: a worker thread, without the context."""

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, bare(request.model.invoke, request.messages))


class InPool(AgentMiddleware):  # type: ignore[misc]
    """Sends the sync agent's model call from a ``ThreadPoolExecutor``, without the context."""

    pool = ThreadPoolExecutor(1)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        return self.pool.submit(bare(request.model.invoke, request.messages)).result()


def chat(api: MockProvider, **settings: Any) -> ChatOpenAI:
    url, settings = api.openai_base_url, {**unpooled_openai_http(), **settings}
    return ChatOpenAI(model="gpt-4o", base_url=url, api_key="test", max_retries=0, max_tokens=400, **settings)  # type: ignore[arg-type]


def bill(api: MockProvider) -> int:
    [request] = api.requests
    [usage] = api.usages
    return bg.to_nano(bg.cost(request.body["model"], bg.Usage.from_response(usage)))


@pytest.mark.parametrize(
    "sender", [OnTheLoop, StreamOnTheLoop, BatchOnTheLoop, ToThread, Threaded, BlockedLoop, InExecutor]
)
async def test_a_refusal_stops_a_model_call_however_it_is_sent(
    store: str,  # noqa: F811
    sender: type[AgentMiddleware],
) -> None:
    """Invoked synchronously on the loop's own thread, a sync callback manager drives the run there: it runs
    the async handler's coroutine in LangChain's executor and logs its exceptions away (``_run_coros``), so
    the refusal was logged and the call sent, unguarded (a review). The handler's sync twin now takes every
    run a sync manager drives, on the loop's thread too, and raises the refusal there."""
    events: list[bg.Event] = []
    guard = guard_on(store, "0.0001", events)
    try:
        with MockProvider() as api:
            agent = create_agent(chat(api), [], middleware=[BudgetMiddleware(guard, user="t"), sender()])
            with pytest.raises(bg.BudgetExceededError):
                await agent.ainvoke(QUESTION)
            assert api.requests == []
        assert [e.kind for e in events] == ["refused"]
        assert await books(guard) == (0, 0, ["refused"])
        if not store.startswith("redis"):  # (a Redis guard opens its sync pool for a sync manager's steps)
            assert guard._sync in (None, guard.async_ledger)  # (memory, SQLite: one store)
    finally:
        await guard.aclose()


@pytest.mark.parametrize("sender", [OnTheLoop, StreamOnTheLoop])
async def test_a_model_invoked_synchronously_on_the_loop_is_charged_once(
    store: str,  # noqa: F811
    sender: type[AgentMiddleware],
) -> None:
    events: list[bg.Event] = []
    guard = guard_on(store, "5", events)
    try:
        with MockProvider() as api:
            agent = create_agent(chat(api), [], middleware=[BudgetMiddleware(guard, user="t"), sender()])
            await agent.ainvoke(QUESTION)
            charged = bill(api)
        assert [e.kind for e in events] == ["reserved", "committed"]
        assert await books(guard) == (charged, 0, ["committed"])
    finally:
        await guard.aclose()


@pytest.mark.parametrize("sender", [InExecutor, InPool, "config"])
async def test_a_model_with_its_own_handler_sent_without_the_context_is_charged_once(
    store: str,  # noqa: F811
    sender: type[AgentMiddleware] | str,
) -> None:
    """The model carries a ``BudgetCallbackHandler`` of the middleware's guard; the call is sent from a thread
    without the context, where the handler cannot see the middleware metering the call (``metered_by``):
    both reserved and charged it (a review). Each run is now claimed once per guard, the middleware's
    handler first; a handler given in the thread's own ``config`` is dispatched before the model's, holds
    the run, and gives it up to the middleware's handler (its hold released): charged once, on the
    middleware's scopes (``test_langchain_claims``: with scopes of its own)."""
    events: list[bg.Event] = []
    guard = guard_on(store, "5", events)
    own = BudgetCallbackHandler(guard, user="t")
    is_async = sender != InPool

    class InExecutorWithConfig(AgentMiddleware):  # type: ignore[misc]
        async def awrap_model_call(
            self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
        ) -> Any:
            send = bare(request.model.invoke, request.messages, config={"callbacks": [own]})
            return await asyncio.get_running_loop().run_in_executor(None, send)

    try:
        with MockProvider() as api:
            model = chat(api) if sender == "config" else chat(api, callbacks=[own])
            later = InExecutorWithConfig() if sender == "config" else sender()  # type: ignore[operator]
            agent = create_agent(model, [], middleware=[BudgetMiddleware(guard, user="t"), later])
            send = agent.ainvoke(QUESTION) if is_async else asyncio.to_thread(agent.invoke, QUESTION)
            if store == "memory-async-only://" and sender in (InPool, "config"):
                with pytest.raises(bg.ConfigurationError, match="only an async ledger"):
                    await send  # (a handler's sync flow, or a sync agent's, needs a sync ledger: said)
                assert api.requests == [] and events == []
                return
            await send
            charged = bill(api)
        given_up = ["reserved", "released"] if sender == "config" else []  # (the config's handler's hold)
        assert [e.kind for e in events] == [*given_up, "reserved", "committed"]
        assert await books(guard) == (charged, 0, [*given_up[1:], "committed"])
    finally:
        await guard.aclose()


async def test_a_guarded_model_invoked_synchronously_on_a_loop_outside_an_agent_is_refused() -> None:
    """(A tool's code on the loop's thread: the handler's own sync flow, which LangChain raises from.)"""
    events: list[bg.Event] = []
    guard = guard_on("memory://", "0.0001", events)
    with MockProvider() as api:
        with pytest.raises(bg.BudgetExceededError):
            chat(api, callbacks=[BudgetCallbackHandler(guard, user="t")]).invoke("Why?")
        assert api.requests == [] and [e.kind for e in events] == ["refused"]

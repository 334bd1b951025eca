"""LangChain 1.x agents with ``BudgetMiddleware`` on an event loop whose later middleware sends the model call
from a thread (``await asyncio.to_thread(model.invoke, ...)``): a sync callback manager drives the run, and
runs an async handler's coroutines on a loop of their own, logging their exceptions away (LangChain's
``_run_coros``). A review found the refusal swallowed there (the call sent unguarded) and, on a Redis guard,
the commit failing on that loop, closed by then. The real ``create_agent`` on ``ChatOpenAI`` against
``MockProvider``, in memory and on a real Redis server."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

import budgetguard as bg
from budgetguard._ledger import open_async_ledger
from budgetguard.integrations.langchain_agents import BudgetMiddleware
from budgetguard.testing import MockProvider
from tests import postgres_server
from tests.ledger.conftest import redis_url  # noqa: F401 - a Redis server of the tests' own
from tests.postgres_server import with_options
from tests.sdk_http import unpooled_openai_http

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


class Threaded(AgentMiddleware):  # type: ignore[misc]
    """Runs the rest of the model call on a loop of a worker thread (``asyncio.run``), the agent's loop
    blocked waiting for it: an async callback manager on another loop drives the run."""

    pool = ThreadPoolExecutor(1)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        return self.pool.submit(asyncio.run, handler(request)).result()  # type: ignore[arg-type]


class BlockedLoop(AgentMiddleware):  # type: ignore[misc]
    """Sends the model call with the sync ``invoke`` from a worker thread while the agent's loop blocks
    waiting for it: a step sent to that loop is never taken up (it is settled another way, no deadlock)."""

    pool = ThreadPoolExecutor(1)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        return self.pool.submit(request.model.invoke, request.messages).result()


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
        model="gpt-4o",
        base_url=api.openai_base_url,
        api_key="test",
        max_retries=0,
        max_tokens=400,
        **unpooled_openai_http(),
    )  # type: ignore[arg-type]
    return create_agent(model, [], middleware=[BudgetMiddleware(guard, user="t"), sender()])


@pytest.fixture(params=["memory", "memory-async-only", "sqlite", "redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    namespace = f"t{secrets.token_hex(6)}"
    if request.param.startswith("memory"):
        yield f"{request.param}://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    elif request.param == "redis":
        yield f"{request.getfixturevalue('redis_url')}?namespace={namespace}"
    else:
        url = request.getfixturevalue("postgres_url")
        yield with_options(url, namespace=namespace)
        postgres_server.delete_namespace(url, namespace)


def guard_on(store: str, usd: str, events: list[bg.Event]) -> bg.Guard:
    """A guard on ``store``; ``memory-async-only://`` is one over an async-only ledger (no sync store)."""
    ledger = open_async_ledger("memory://") if store == "memory-async-only://" else store
    return bg.Guard(ledger, budgets=[bg.Budget("user", usd=usd, per="day")], on_event=events.append)


async def books(guard: bg.Guard) -> tuple[int, int, list[str]]:
    """The user's spent and held, and the journal's events, read on the guard's async store."""
    store = guard.async_ledger

    async def read(found: Any) -> Any:
        return await found if inspect.isawaitable(found) else found

    [found] = await read(store.status(guard.counters_for([bg.Scope("user", "t")])[:1]))
    return found.spent, found.held, [entry.event for entry in await read(store.history())]


@pytest.mark.parametrize("sender", [ToThread, OnTheLoop, Threaded, BlockedLoop])
async def test_an_admitted_model_call_sent_from_a_thread_is_charged_once(
    store: str, sender: type[AgentMiddleware]
) -> None:
    """(Invoked synchronously on the loop's thread, LangChain runs the async handler's coroutine on a loop
    of its own in a worker thread, the agent's loop blocked: it settles on a sync store, which a Redis
    guard opens for it, as its async connections would fail on that loop. From a thread running no loop,
    the same: a guard over an async-only ledger works on its store's own sync one.)"""
    events: list[bg.Event] = []
    guard = guard_on(store, "5", events)
    try:
        with MockProvider() as api:
            await agent_on(api, guard, sender).ainvoke(QUESTION)
        [request] = api.requests
        [usage] = api.usages
        bill = bg.to_nano(bg.cost(request.body["model"], bg.Usage.from_response(usage)))
        assert [e.kind for e in events] == ["reserved", "committed"]
        assert await books(guard) == (bill, 0, ["committed"])
        if not store.startswith("redis"):  # (its async store's own sync one: shared, nothing opened)
            assert guard._sync in (None, guard.async_ledger)  # (memory, SQLite: one store)
    finally:
        await guard.aclose()


async def test_a_stream_started_from_a_thread_and_closed_on_the_loop_is_charged(store: str) -> None:
    events: list[bg.Event] = []
    guard = guard_on(store, "5", events)
    try:
        with MockProvider() as api:
            await agent_on(api, guard, CloseOnLoop).ainvoke(QUESTION)
            assert len(api.requests) == 1
        assert [e.kind for e in events] == ["reserved", "committed"]
        spent, held, journal = await books(guard)
        assert spent > 0 and held == 0
        assert journal == ["committed"]
    finally:
        await guard.aclose()


async def test_many_model_calls_sent_from_threads_at_once_are_each_charged(store: str) -> None:
    """Eight agent runs at once, each sending its model call from a thread, on a Redis guard named by host
    name: a first version sent each step to the agent's loop and waited, and the loop's step (resolving
    the host name) needed a worker of the default pool those waiting threads held: runs failed or, with
    ``fail_open``, were sent uncharged (a review)."""
    store = store.replace("127.0.0.1", "localhost")
    runs = 8
    events: list[bg.Event] = []
    guard = guard_on(store, "50", events)
    try:
        with MockProvider() as api:
            agent = agent_on(api, guard)
            await asyncio.wait_for(asyncio.gather(*(agent.ainvoke(QUESTION) for _ in range(runs))), 60)
            assert len(api.requests) == runs
            bills = [bg.to_nano(bg.cost("gpt-4o", bg.Usage.from_response(u))) for u in api.usages]
        assert sorted(e.kind for e in events) == ["committed"] * runs + ["reserved"] * runs
        assert await books(guard) == (sum(bills), 0, ["committed"] * runs)
    finally:
        await guard.aclose()

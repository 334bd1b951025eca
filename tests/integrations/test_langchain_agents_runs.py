"""LangChain 1.x agents with ``BudgetMiddleware`` (the real ``create_agent`` on ``ChatOpenAI``, against
``MockProvider``), the runs a model call starts and how they end: a cancelled or abandoned async run
settles its hold as the call ends (LangChain never ends its model run), an async run on a guard over an
async-only ledger (memory, a real Redis server) is guarded with the guard's async operations, a model call
sent from a thread without the context is still reserved, and an agent run inside a model call (a
middleware's sub-agent) with a middleware of the same guard is charged once, on its own scopes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest
from langchain_core.caches import InMemoryCache
from langchain_openai import ChatOpenAI

import budgetguard as bg
from budgetguard._ledger import open_async_ledger
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.integrations.langchain_agents import BudgetMiddleware
from budgetguard.testing import MockProvider
from tests.ledger.conftest import redis_url  # noqa: F401 - a Redis server of the tests' own
from tests.sdk_http import unpooled_openai_http

QUESTION = {"messages": [{"role": "user", "content": "What is the weather in Paris today?"}]}


def chat(url: str, model: str = "gpt-4o") -> ChatOpenAI:
    http = unpooled_openai_http()
    return ChatOpenAI(model=model, base_url=url, api_key="test", max_retries=0, max_tokens=400, **http)  # type: ignore[arg-type]


def tracked() -> tuple[bg.Guard, list[bg.Event]]:
    events: list[bg.Event] = []
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")], on_event=events.append)
    return guard, events


def status(guard: bg.Guard, user: str) -> tuple[int, int]:
    [found] = guard.ledger.status(guard.counters_for([bg.Scope("user", user)])[:1])
    return found.spent, found.held


def bills(api: MockProvider) -> list[int]:
    """What each answered call costs, from the usage the server reported."""
    sent = [request.body["model"] for request in api.requests]
    return [bg.to_nano(bg.cost(m, bg.Usage.from_response(u))) for m, u in zip(sent, api.usages, strict=True)]


async def sent(api: MockProvider) -> None:
    """Until the server has received a request (the run reserved and sending)."""
    while not api.requests:
        await asyncio.sleep(0.01)


async def test_a_cancelled_async_run_settles_its_hold_as_it_is_cancelled() -> None:
    """``asyncio`` cancels the model run inside LangChain's ``gather``: no ``on_llm_error`` comes (a review
    found the hold kept until its lease ended, and the run kept in the handler)."""
    guard, events = tracked()
    with MockProvider() as api:
        api.delay(5.0)
        agent = create_agent(chat(api.openai_base_url), [], middleware=[BudgetMiddleware(guard, user="ca")])
        task = asyncio.ensure_future(agent.ainvoke(QUESTION))
        await sent(api)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(events) == 2 and events[0].kind == "reserved"  # settled by now
        assert status(guard, "ca")[1] == 0
        [failed] = [entry for entry in guard.ledger.history() if entry.event != "reserved"]
        assert failed.event in ("released", "committed")  # (charged its input or not, per charge_failed)


async def test_an_abandoned_async_stream_settles_its_hold_when_closed() -> None:
    guard, events = tracked()
    with MockProvider() as api:
        agent = create_agent(chat(api.openai_base_url), [], middleware=[BudgetMiddleware(guard, user="ab")])
        stream = agent.astream(QUESTION, stream_mode="messages")
        async for _ in stream:
            break  # (the model's stream under way)
        assert status(guard, "ab")[1] > 0
        await stream.aclose()  # type: ignore[attr-defined]
        assert status(guard, "ab")[1] == 0
        assert len(events) == 2 and events[0].kind == "reserved"


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_an_async_run_on_an_async_only_ledger_is_guarded(
    store: str, request: pytest.FixtureRequest
) -> None:
    """The async path awaits the guard's async operations (a review found it ran the sync flow in
    LangChain's executor: "this guard has only an async ledger", nothing sent)."""
    url = (
        "memory://"
        if store == "memory"
        else f"{request.getfixturevalue('redis_url')}?namespace=t{secrets.token_hex(6)}"
    )
    events: list[bg.Event] = []
    budgets = [bg.Budget("user", usd="5", per="day")]
    ledger = open_async_ledger(url)
    guard = bg.Guard(ledger, budgets=budgets, on_event=events.append)
    try:
        with MockProvider() as api:
            agent = create_agent(
                chat(api.openai_base_url), [], middleware=[BudgetMiddleware(guard, user="as")]
            )
            await agent.ainvoke(QUESTION)
        assert [e.kind for e in events] == ["reserved", "committed"]
        [bill] = bills(api)
        [found] = await ledger.status(guard.counters_for([bg.Scope("user", "as")])[:1])
        assert (found.spent, found.held) == (bill, 0)
    finally:
        await guard.aclose()


async def test_an_async_run_on_a_redis_guard_opens_no_sync_store(redis_url: str) -> None:  # noqa: F811
    """(A review found a second, sync pool opened for the agent's async calls.)"""
    guard = bg.Guard(f"{redis_url}?namespace=t{secrets.token_hex(6)}")
    try:
        with MockProvider() as api:
            agent = create_agent(
                chat(api.openai_base_url), [], middleware=[BudgetMiddleware(guard, user="rs")]
            )
            await agent.ainvoke(QUESTION)
        assert [entry.event for entry in await guard.async_ledger.history()] == ["committed"]  # type: ignore[misc]
        assert guard._sync is None  # (the sync store, opened on first use)
    finally:
        await guard.aclose()


class Threaded(AgentMiddleware):  # type: ignore[misc]
    """Sends the model call from a thread of its own, without the context (a plain executor)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = ThreadPoolExecutor(1)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        return self.pool.submit(handler, request).result()

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        return self.pool.submit(asyncio.run, handler(request)).result()  # type: ignore[arg-type]


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_model_call_sent_from_a_thread_without_the_context_is_reserved(is_async: bool) -> None:
    """The handler rides on the request's model (a review found such a call sent with no reservation)."""
    guard, events = tracked()
    with MockProvider() as api:
        budget = BudgetMiddleware(guard, user="th")
        agent = create_agent(chat(api.openai_base_url), [], middleware=[budget, Threaded()])
        await agent.ainvoke(QUESTION) if is_async else agent.invoke(QUESTION)
    assert [e.kind for e in events] == ["reserved", "committed"]
    assert status(guard, "th") == (sum(bills(api)), 0)


class Critic(AgentMiddleware):  # type: ignore[misc]
    """Asks a sub-agent before each model call."""

    def __init__(self, sub: Any) -> None:
        super().__init__()
        self.sub = sub

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        self.sub.invoke({"messages": [{"role": "user", "content": "Is this question fine?"}]})
        return handler(request)


@pytest.mark.parametrize("same_user", [False, True])
def test_a_sub_agent_inside_a_model_call_is_charged_once_on_its_own_scopes(same_user: bool) -> None:
    """The innermost middleware of a guard guards a run: the outer one's handler, which the sub-agent's
    runs inherit, leaves them to it (a review found the sub-agent's call charged twice)."""
    guard, events = tracked()
    inner_user = "top" if same_user else "sub"
    with MockProvider() as api:
        inside = BudgetMiddleware(guard, user=inner_user)
        sub = create_agent(chat(api.openai_base_url, "gpt-4o-mini"), [], middleware=[inside])
        budget = BudgetMiddleware(guard, user="top")
        agent = create_agent(chat(api.openai_base_url), [], middleware=[budget, Critic(sub)])
        agent.invoke(QUESTION)
    sub_bill, top_bill = bills(api)
    assert [(e.kind, e.model) for e in events] == [
        ("reserved", "gpt-4o-mini"), ("committed", "gpt-4o-mini"),
        ("reserved", "gpt-4o"), ("committed", "gpt-4o"),
    ]  # fmt: skip
    if same_user:
        assert status(guard, "top") == (sub_bill + top_bill, 0)
    else:
        assert status(guard, "sub") == (sub_bill, 0) and status(guard, "top") == (top_bill, 0)


def test_a_sub_agent_of_another_guard_is_charged_by_both() -> None:
    """Each guard reserves: the outer guard's budget covers every call inside its model call."""
    outer, _ = tracked()
    inner, _ = tracked()
    with MockProvider() as api:
        inside = BudgetMiddleware(inner, user="sub")
        sub = create_agent(chat(api.openai_base_url, "gpt-4o-mini"), [], middleware=[inside])
        budget = BudgetMiddleware(outer, user="top")
        agent = create_agent(chat(api.openai_base_url), [], middleware=[budget, Critic(sub)])
        agent.invoke(QUESTION)
    sub_bill, top_bill = bills(api)
    assert status(inner, "sub") == (sub_bill, 0)
    assert status(outer, "top") == (sub_bill + top_bill, 0)


@pytest.mark.parametrize("via", ["middleware", "handler"])
async def test_a_cache_hit_is_released_not_charged(via: str) -> None:
    """LangChain's LLM cache answers the second run: nothing is sent, so nothing is charged (a review
    found the cached message's usage charged again)."""
    guard, events = tracked()
    with MockProvider() as api:
        model = chat(api.openai_base_url).model_copy(update={"cache": InMemoryCache()})
        if via == "middleware":
            agent = create_agent(model, [], middleware=[BudgetMiddleware(guard, user="hi")])
            agent.invoke(QUESTION)
            await agent.ainvoke(QUESTION)
        else:
            config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="hi")]}
            model.invoke("Hello", config=config)
            await model.ainvoke("Hello", config=config)
    assert len(api.requests) == 1
    assert [e.kind for e in events] == ["reserved", "committed", "reserved", "released"]
    assert status(guard, "hi") == (sum(bills(api)), 0)


class OrgBudget(BudgetMiddleware):
    """A second budget middleware on one agent (``create_agent`` takes one middleware of a class)."""


def two_budgets(api: MockProvider, outer: bg.Guard, inner: bg.Guard) -> Any:
    budgets = [BudgetMiddleware(outer, user="t"), OrgBudget(inner, user="o")]
    return create_agent(chat(api.openai_base_url), [], middleware=budgets)


def test_two_budget_middlewares_of_two_guards_each_reserve_every_call() -> None:
    tenant, tenant_events = tracked()
    org, _ = tracked()
    with MockProvider() as api:
        agent = two_budgets(api, tenant, org)
        agent.invoke(QUESTION)
        [bill] = bills(api)
        assert status(tenant, "t") == (bill, 0) and status(org, "o") == (bill, 0)
        tenant.ledger.set_limit(tenant.counters_for([bg.Scope("user", "t")])[0], bill)  # (spent in full)
        with pytest.raises(bg.BudgetExceededError):
            agent.invoke(QUESTION)
    assert len(api.requests) == 1 and tenant_events[-1].kind == "refused"
    assert status(org, "o") == (bill, 0)  # (nothing held by the other guard)


def test_two_budget_middlewares_of_one_guard_on_one_agent_are_refused_clearly() -> None:
    """A model call is reserved once per guard: one scope set would silently not apply (a review found
    the outer one's budgets ignored)."""
    guard, events = tracked()
    with MockProvider() as api:
        agent = two_budgets(api, guard, guard)
        with pytest.raises(bg.ConfigurationError, match="two BudgetMiddleware of one guard on one agent"):
            agent.invoke(QUESTION)
    assert api.requests == [] and events == []


def test_a_model_kept_past_its_middleware_call_is_still_charged() -> None:
    """A middleware inside the budget's keeps the model it was handed (the middleware's copy, carrying that
    call's handler) and calls it after the agent's run: each such call is reserved and charged as it ends
    (a review found them released at their start and sent uncharged)."""
    kept: list[Any] = []

    class Keep(AgentMiddleware):  # type: ignore[type-arg]
        def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
            kept.append(request.model)
            return handler(request)

    guard, events = tracked()
    with MockProvider() as api:
        agent = create_agent(
            chat(api.openai_base_url), [], middleware=[BudgetMiddleware(guard, user="kim"), Keep()]
        )
        agent.invoke(QUESTION)
        kept[0].invoke("And tomorrow?")

    assert len(api.requests) == 2
    assert [e.kind for e in events] == ["reserved", "committed", "reserved", "committed"]
    assert status(guard, "kim") == (sum(bills(api)), 0)

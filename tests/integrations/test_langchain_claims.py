"""LangChain runs claimed once per guard (``_langchain_claims``): a run id reused by the caller is a new
claim each call (a review found every later call with the id sent unguarded and uncharged); the agent
middleware's handler takes a run over from a plain handler of its guard dispatched before it, so that its
own budgets are checked (a review found a plain handler in a thread's own config bypass the user's
budget); the claims are forgotten as their runs settle, a tracer keeping the run ids alive or not."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import threading
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

import budgetguard as bg
from budgetguard.integrations import _langchain_claims
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.integrations.langchain_agents import BudgetMiddleware
from budgetguard.testing import MockProvider
from tests.integrations.test_langchain_agents_on_loop import bare, bill, chat
from tests.integrations.test_langchain_agents_sync_driven import QUESTION, books, guard_on


def test_a_run_id_reused_in_a_config_is_reserved_and_charged_each_call() -> None:
    events: list[bg.Event] = []
    guard = guard_on("memory://", "5", events)
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="t")], "run_id": uuid.uuid4()}
    with MockProvider() as api:
        model = chat(api)
        model.invoke("Why?", config=config)
        model.invoke("Why not?", config=config)
        assert len(api.requests) == 2
    assert [e.kind for e in events] == ["reserved", "committed"] * 2


def test_a_model_with_a_fixed_run_id_is_refused_once_over_budget() -> None:
    events: list[bg.Event] = []
    guard = guard_on("memory://", "0.005", events)  # (one call's worst case fits; not five calls' bills)
    with MockProvider() as api:
        model = chat(api, callbacks=[BudgetCallbackHandler(guard, user="t")])
        chat_with_run_id = model.with_config(run_id=uuid.uuid4())
        refused = 0
        for _ in range(5):
            try:
                chat_with_run_id.invoke("Why?")
            except bg.BudgetExceededError:
                refused += 1
        kinds = [e.kind for e in events]
        assert refused >= 1 and len(api.requests) == 5 - refused
        assert kinds.count("reserved") == kinds.count("committed") == len(api.requests)
        assert kinds.count("refused") == refused


class TwiceWithOneRunId(AgentMiddleware):  # type: ignore[misc]
    """Sends the model call twice on the loop's own thread, with one ``run_id`` in both configs."""

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        config: Any = {"run_id": uuid.uuid4()}
        request.model.invoke(request.messages, config=config)
        return request.model.invoke(request.messages, config=config)


async def test_an_agent_model_sent_twice_with_one_run_id_is_charged_twice() -> None:
    events: list[bg.Event] = []
    guard = guard_on("memory://", "5", events)
    with MockProvider() as api:
        agent = create_agent(
            chat(api), [], middleware=[BudgetMiddleware(guard, user="t"), TwiceWithOneRunId()]
        )
        await agent.ainvoke(QUESTION)
        assert len(api.requests) == 2
    assert [e.kind for e in events] == ["reserved", "committed"] * 2


def sent_in_a_thread(
    own: BudgetCallbackHandler, manager: str, client: httpx.AsyncClient
) -> type[AgentMiddleware]:
    """A middleware sending the model call from ``run_in_executor`` without the context, ``own`` in the
    call's config: by a sync callback manager (``invoke``) or an async one (``asyncio.run(ainvoke)``, the
    model's ``client`` closed on that loop, which opened its connections)."""

    async def ainvoke(model: Any, messages: Any, config: Any) -> Any:
        try:
            return await model.ainvoke(messages, config=config)
        finally:
            await client.aclose()

    class Sender(AgentMiddleware):  # type: ignore[misc]
        async def awrap_model_call(
            self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
        ) -> Any:
            config: Any = {"callbacks": [own]}
            if manager == "sync":
                send = bare(request.model.invoke, request.messages, config=config)
            else:
                send = bare(lambda: asyncio.run(ainvoke(request.model, request.messages, config)))
            return await asyncio.get_running_loop().run_in_executor(None, send)

    return Sender


@pytest.mark.parametrize("manager", ["sync", "async"])
async def test_the_middleware_budget_refuses_a_call_sent_with_a_plain_handler_in_its_config(
    manager: str,
) -> None:
    """The plain handler (no user scope: an app-wide meter) is dispatched first and claimed the run; the
    middleware's handler left it, and its user budget was never checked (a review). The middleware's handler
    now takes the run over: the plain hold released, the user's budget refuses."""
    events: list[bg.Event] = []
    guard = bg.Guard(
        "memory://",
        budgets=[bg.Budget("user", usd="0.0001", per="day")],
        on_event=events.append,
        missing_scope="skip",
    )
    own = BudgetCallbackHandler(guard)
    with MockProvider() as api:
        client = httpx.AsyncClient()
        sender = sent_in_a_thread(own, manager, client)
        agent = create_agent(
            chat(api, http_async_client=client), [], middleware=[BudgetMiddleware(guard, user="t"), sender()]
        )
        with pytest.raises(bg.BudgetExceededError):
            await agent.ainvoke(QUESTION)
        assert api.requests == []
    kinds = [e.kind for e in events]
    assert "committed" not in kinds and kinds.count("reserved") == kinds.count("released")
    spent, held, journal = await books(guard)
    assert (spent, held) == (0, 0)  # (an async manager: the plain hold may be released after the refusal)
    assert sorted(journal) == sorted([*(["released"] * kinds.count("released")), "refused"])


@pytest.mark.parametrize("manager", ["sync", "async"])
async def test_a_call_sent_with_a_plain_handler_in_its_config_is_charged_on_the_middleware(
    manager: str,
) -> None:
    """Whichever handler LangChain dispatches first (an async manager runs them concurrently), the run is
    charged once, on the middleware's scopes."""
    events: list[bg.Event] = []
    guard = guard_on("memory://", "5", events)
    own = BudgetCallbackHandler(guard, user="other")
    with MockProvider() as api:
        client = httpx.AsyncClient()
        sender = sent_in_a_thread(own, manager, client)
        agent = create_agent(
            chat(api, http_async_client=client), [], middleware=[BudgetMiddleware(guard, user="t"), sender()]
        )
        await agent.ainvoke(QUESTION)
        charged = bill(api)
    kinds = [e.kind for e in events]
    assert kinds.count("committed") == 1 and kinds.count("reserved") == kinds.count("released") + 1
    assert (await books(guard))[:2] == (charged, 0)


class Tracer(BaseTracer):
    """Keeps every run (and so its id) alive, as a tracer that persists them may."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.kept.append(run)


async def test_claims_are_forgotten_as_their_runs_settle() -> None:
    guard = guard_on("memory://", "50", [])
    tracer = Tracer()
    with MockProvider() as api:
        agent = create_agent(chat(api), [], middleware=[BudgetMiddleware(guard, user="t")])
        for _ in range(3):
            await agent.ainvoke(QUESTION, config={"callbacks": [tracer]})
        task = asyncio.ensure_future(agent.ainvoke(QUESTION, config={"callbacks": [tracer]}))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    gc.collect()
    assert tracer.kept and len(_langchain_claims._claims) == 0


def test_two_runs_in_flight_with_one_run_id_are_each_reserved_and_charged() -> None:
    """Two threads send a model with one caller-given ``run_id`` at once: both runs start before either
    ends (each request waits at the barrier for the other). The second start's hold replaced the first's,
    so one end settled nothing and one hold waited for its lease (a review)."""
    events: list[bg.Event] = []
    guard = guard_on("memory://", "5", events)
    both_started = threading.Barrier(2)
    client = httpx.Client(event_hooks={"request": [lambda _: both_started.wait(10)]})
    with MockProvider() as api:
        model = chat(api, http_client=client, callbacks=[BudgetCallbackHandler(guard, user="t")])
        config: Any = {"run_id": uuid.uuid4()}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            sent = [pool.submit(model.invoke, question, config=config) for question in ("Why?", "Why not?")]
            for future in sent:
                future.result()
        billed = sum(bg.to_nano(bg.cost("gpt-4o", bg.Usage.from_response(u))) for u in api.usages)
    client.close()
    kinds = [e.kind for e in events]
    assert kinds.count("reserved") == kinds.count("committed") == 2
    assert asyncio.run(books(guard))[:2] == (billed, 0)


async def test_two_async_runs_in_flight_with_one_run_id_are_each_reserved_and_charged() -> None:
    """The same with ``ainvoke`` on one loop: an async callback manager dispatches the plain handler in
    LangChain's executor."""
    events: list[bg.Event] = []
    guard = guard_on("memory://", "5", events)
    both_started = asyncio.Barrier(2)

    async def wait(_: Any) -> None:
        await asyncio.wait_for(both_started.wait(), 10)

    client = httpx.AsyncClient(event_hooks={"request": [wait]})
    with MockProvider() as api:
        model = chat(api, http_async_client=client, callbacks=[BudgetCallbackHandler(guard, user="t")])
        config: Any = {"run_id": uuid.uuid4()}
        await asyncio.gather(*(model.ainvoke(question, config=config) for question in ("Why?", "Why not?")))
        billed = sum(bg.to_nano(bg.cost("gpt-4o", bg.Usage.from_response(u))) for u in api.usages)
    await client.aclose()
    kinds = [e.kind for e in events]
    assert kinds.count("reserved") == kinds.count("committed") == 2
    assert (await books(guard))[:2] == (billed, 0)


def _start(
    handler: BudgetCallbackHandler,
    run_id: uuid.UUID,
    user: str,
    max_tokens: int,
    model: str = "gpt-4o",
    prompt: str = "hi",
) -> None:
    """A chat model run's start, as LangChain dispatches it (``options``: new for each call)."""
    params = {"model": model, "model_name": model, "max_tokens": max_tokens, "_type": "openai-chat"}
    handler.on_chat_model_start(
        {"kwargs": {"model_name": model}},
        [[HumanMessage(prompt)]],
        run_id=run_id,
        metadata={"user_id": user},
        invocation_params=params,
        options={"stop": None},
        batch_size=1,
    )


def _result(output_tokens: int) -> LLMResult:
    usage = {"input_tokens": 8, "output_tokens": output_tokens, "total_tokens": 8 + output_tokens}
    message = AIMessage("x", usage_metadata=usage)  # type: ignore[arg-type]
    return LLMResult(generations=[[ChatGeneration(message=message)]])


def _books(guard: bg.Guard, user: str) -> tuple[int, int]:
    [status] = guard.ledger.status(guard.counters_for([bg.Scope("user", user)])[:1])
    return status.spent, status.held


@pytest.mark.parametrize("ends", ["on_llm_end", "on_llm_error"])
def test_an_end_of_one_of_two_runs_with_one_run_id_settles_the_smaller_hold(ends: str) -> None:
    """A big and a small run in flight with one caller-given ``run_id``: the small one ends first. An end
    names its run by id alone; it settled the earliest start (the big one's hold), leaving the small hold
    to cover the big call still running, and a third big call was admitted past the limit (a review:
    $0.01816 spent of $0.01). Settling the smallest hold leaves what is still owed covered."""
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="0.01", per="day")])
    handler = BudgetCallbackHandler(guard, user="{user_id}")
    run_id = uuid.uuid4()
    _start(handler, run_id, "t", 900)  # (its worst case: $0.00902)
    _start(handler, run_id, "t", 10)
    if ends == "on_llm_end":
        handler.on_llm_end(_result(10), run_id=run_id)
    else:
        handler.on_llm_error(RuntimeError("connection reset"), run_id=run_id)
    spent, held = _books(guard, "t")
    assert held == bg.to_nano(bg.cost("gpt-4o", bg.Usage(input_tokens=8, output_tokens=900)))
    with pytest.raises(bg.BudgetExceededError):
        _start(handler, uuid.uuid4(), "t", 900)
    handler.on_llm_end(_result(900), run_id=run_id)
    spent, held = _books(guard, "t")
    assert held == 0 and spent <= bg.to_nano(Decimal("0.01"))


def test_runs_in_flight_with_one_run_id_and_other_budgets_are_refused() -> None:
    """Two users' runs with one caller-given ``run_id``: an end cannot tell whose it is, and user b's bill
    was committed on user a's hold (a review). The second start is refused before anything is reserved."""
    events: list[bg.Event] = []
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")], on_event=events.append)
    handler = BudgetCallbackHandler(guard, user="{user_id}")
    run_id = uuid.uuid4()
    _start(handler, run_id, "a", 10)
    with pytest.raises(bg.ConfigurationError, match=f"share run_id {run_id} with other budgets or models"):
        _start(handler, run_id, "b", 900)
    assert _books(guard, "b") == (0, 0)
    handler.on_llm_end(_result(10), run_id=run_id)
    assert _books(guard, "a")[1] == 0 and _books(guard, "a")[0] > 0
    assert [e.kind for e in events] == ["reserved", "committed"]
    _start(handler, run_id, "b", 900)  # (the id free again: b's run is guarded as any)
    assert _books(guard, "b")[1] > 0


def test_runs_in_flight_with_one_run_id_that_no_end_could_tell_apart_are_refused() -> None:
    """Settling the start that holds least covers the runs still in flight only while each open start
    holds no less, or no more, than the others in every counter (a third review): a long prompt with a
    short answer beside a short prompt with a long one (cheaper in USD, dearer in tokens: a token budget
    was spent 19,934 of 16,000), or two models (one's call charged at the other's prices), are refused.
    One model's calls of one shape (the same output bound) always pass: a reused id stays usable."""
    budgets = [bg.Budget("user", tokens=1_000_000, per="day"), bg.Budget("user", usd="1", per="day")]
    guard = bg.Guard("memory://", budgets=budgets)
    handler = BudgetCallbackHandler(guard, user="{user_id}")
    run_id = uuid.uuid4()
    _start(handler, run_id, "t", 10, prompt="word " * 5000)
    with pytest.raises(bg.ConfigurationError, match=f"share run_id {run_id} with other budgets or models"):
        _start(handler, run_id, "t", 4000)
    with pytest.raises(bg.ConfigurationError, match="on gpt-4o; global, user:t on gpt-4o-mini"):
        _start(handler, run_id, "t", 10, model="gpt-4o-mini", prompt="word " * 5000)
    _start(handler, run_id, "t", 10, prompt="word " * 6000)  # (holds more in both: let in)
    handler.on_llm_end(_result(10), run_id=run_id)
    handler.on_llm_end(_result(10), run_id=run_id)
    assert _books(guard, "t")[1] == 0


def test_a_dropped_run_id_fails_its_own_start_alone() -> None:
    """Two runs with one id's value in two ``UUID`` objects: the first is abandoned (its id object dies,
    LangChain never ends it), the second still in flight. The first's finalizer queued a failure for every
    start with the id, the live one's too, whose call then went uncharged (a review)."""
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")])
    handler = BudgetCallbackHandler(guard, user="{user_id}")
    value = str(uuid.uuid4())
    abandoned, live = uuid.UUID(value), uuid.UUID(value)
    _start(handler, abandoned, "t", 900)
    _start(handler, live, "t", 900)
    del abandoned
    gc.collect()
    other = uuid.uuid4()  # (the guard's next operation settles the dropped run)
    _start(handler, other, "t", 10)
    handler.on_llm_end(_result(10), run_id=other)
    worst = bg.to_nano(bg.cost("gpt-4o", bg.Usage(input_tokens=8, output_tokens=900)))
    assert _books(guard, "t")[1] == worst  # (the live run's hold)
    spent = _books(guard, "t")[0]
    handler.on_llm_end(_result(900), run_id=live)
    assert _books(guard, "t") == (spent + worst, 0)


def _two_handlers(events: list[bg.Event]) -> tuple[bg.Guard, BudgetCallbackHandler, BudgetCallbackHandler]:
    """A plain handler (user p) and an agent middleware's (user m) of one guard."""
    from budgetguard.integrations.langchain_agents import _ModelCalls

    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")], on_event=events.append)
    return guard, BudgetCallbackHandler(guard, user="p"), _ModelCalls(guard, {}, enforce=True, user="m")


def _start_with(handlers: list[BudgetCallbackHandler], run_id: uuid.UUID, max_tokens: int) -> None:
    """One start dispatched to ``handlers`` in order (one ``options`` object: one start)."""
    params = {"model": "gpt-4o", "model_name": "gpt-4o", "max_tokens": max_tokens, "_type": "openai-chat"}
    options = {"stop": None}
    for handler in handlers:
        handler.on_chat_model_start(
            {}, [[HumanMessage("hi")]], run_id=run_id, invocation_params=params, options=options, batch_size=1
        )


def test_a_plain_handler_s_end_of_a_run_a_middleware_took_settles_none_of_its_own() -> None:
    """A plain handler dispatched before the middleware's gives the run up to it; the run's end still
    comes to it. With another of its runs in flight with the id, that end settled the other run's hold
    with the middleware's bill (charged twice; a review). A start of the plain handler's with the id while
    the middleware's run is in flight is refused, and its end of the taken run settles nothing."""
    events: list[bg.Event] = []
    guard, plain, middleware = _two_handlers(events)
    run_id = uuid.uuid4()
    _start_with([plain, middleware], run_id, 900)  # (the middleware's run: the plain handler's hold released)
    with pytest.raises(bg.ConfigurationError, match=f"share run_id {run_id} with different budgets"):
        _start_with([plain], run_id, 10)
    plain.on_llm_end(_result(900), run_id=run_id)
    middleware.on_llm_end(_result(900), run_id=run_id)
    assert _books(guard, "p") == (0, 0)
    assert _books(guard, "m")[1] == 0 and _books(guard, "m")[0] > 0
    assert [e.kind for e in events if e.kind in ("reserved", "committed")] == ["reserved"] * 2 + ["committed"]
    _start_with([plain], run_id, 10)  # (the middleware's run settled: the id is the plain handler's again)
    plain.on_llm_end(_result(10), run_id=run_id)
    assert _books(guard, "p")[0] > 0


def test_a_middleware_taking_a_run_whose_id_a_plain_handler_holds_for_another_run_is_refused() -> None:
    events: list[bg.Event] = []
    guard, plain, middleware = _two_handlers(events)
    run_id = uuid.uuid4()
    _start_with([plain], run_id, 10)  # (the plain handler's own run, in flight)
    with pytest.raises(bg.ConfigurationError, match=f"share run_id {run_id} with different budgets"):
        _start_with([plain, middleware], run_id, 900)
    assert _books(guard, "m") == (0, 0)
    plain.on_llm_end(_result(10), run_id=run_id)
    assert _books(guard, "p")[1] == 0 and _books(guard, "p")[0] > 0

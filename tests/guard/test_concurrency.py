"""Many callers, one budget: reservations are atomic, so the budget is never overspent when the actual
cost stays within the estimate, and nothing is left held."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, Usage, to_usd
from budgetguard import _core as guard_module
from tests.guard.conftest import Harness, MakeGuard
from tests.guard.payloads import (
    async_openai_client,
    chat_request,
    exact_completion,
    nano,
    openai_client,
    serve,
    small_completion,
)

CALLERS = 20
ADMITTED = 7
EST = budgetguard.estimate(chat_request())
EXACT_LIMIT = ADMITTED * EST.cost_nano + EST.cost_nano - 1  # N worst cases fit, N + 1 do not


def budgets(limit: int) -> list[Budget]:
    return [Budget("user", usd=to_usd(limit), per="day"), Budget("global", usd="100", per="day")]


def run_threads(call: Callable[[], Any], errors: list[BaseException] | None = None) -> list[str]:
    """Run ``call`` in CALLERS threads released together; unexpected errors fail the test unless the
    caller collects them in ``errors``."""
    collect = errors is not None
    errors = [] if errors is None else errors
    barrier = threading.Barrier(CALLERS)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        try:
            call()
            results.append("ok")
        except BudgetExceededError:
            results.append("refused")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not collect:
        assert errors == []
    return results


def check_exact(h: Harness, results: list[str], requests: int) -> None:
    assert results.count("ok") == ADMITTED
    assert results.count("refused") == CALLERS - ADMITTED
    assert requests == ADMITTED  # a refused caller never reaches the SDK
    h.assert_settled({"user:alice": ADMITTED * EST.cost_nano, "global": ADMITTED * EST.cost_nano})
    assert h.spent("user:alice") <= EXACT_LIMIT
    events = [e.event for e in h.history(scope="user:alice")]
    assert (events.count("committed"), events.count("refused")) == (ADMITTED, CALLERS - ADMITTED)
    usages = [e.data["usage"] for e in h.committed(scope="user:alice")]
    assert all(u == {"input_tokens": EST.input_tokens, "output_tokens": EST.output_tokens} for u in usages)
    assert not any(e.data.get("usage_missing") for e in h.committed())  # read from each response


def test_actual_equal_to_estimate_is_the_worst_case() -> None:
    usage = Usage(input_tokens=EST.input_tokens, output_tokens=EST.output_tokens)
    assert nano("gpt-4o", usage) == EST.cost_nano


def test_threads_admit_exactly_n(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=budgets(EXACT_LIMIT))
    api = serve(exact_completion(chat_request()))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    results = run_threads(lambda: create(**chat_request()))

    check_exact(h, results, len(api.requests))


def test_threads_never_overspend_when_actual_is_below_estimate(make_guard: MakeGuard) -> None:
    actual = Usage(input_tokens=EST.input_tokens, output_tokens=120)
    h = make_guard(budgets=budgets(EXACT_LIMIT))
    api = serve(small_completion(EST.input_tokens, 120))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    results = run_threads(lambda: create(**chat_request()))

    ok = results.count("ok")
    assert ok >= ADMITTED  # early finishers return what they did not use
    assert ok == len(api.requests) == len(h.committed(scope="user:alice"))
    h.assert_settled({"user:alice": ok * nano("gpt-4o", actual)})
    assert h.spent("user:alice") <= EXACT_LIMIT


def ask_function(h: Harness, api: Any) -> Any:
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        await asyncio.sleep(0)
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    return ask


async def gather_results(calls: list[Any]) -> list[str]:
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    unexpected = [
        o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, BudgetExceededError)
    ]
    assert unexpected == []
    return ["refused" if isinstance(o, BudgetExceededError) else "ok" for o in outcomes]


async def test_asyncio_tasks_admit_exactly_n(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=budgets(EXACT_LIMIT))
    api = serve(exact_completion(chat_request()))
    ask = ask_function(h, api)

    results = await gather_results([ask("alice", **chat_request()) for _ in range(CALLERS)])

    check_exact(h, results, len(api.requests))


async def test_asyncio_tasks_never_overspend_when_actual_is_below_estimate(amake_guard: MakeGuard) -> None:
    actual = Usage(input_tokens=EST.input_tokens, output_tokens=120)
    h = amake_guard(budgets=budgets(EXACT_LIMIT))
    api = serve(small_completion(EST.input_tokens, 120))
    ask = ask_function(h, api)

    results = await gather_results([ask("alice", **chat_request()) for _ in range(CALLERS)])

    ok = results.count("ok")
    assert ok >= ADMITTED
    h.assert_settled({"user:alice": ok * nano("gpt-4o", actual)})
    assert h.spent("user:alice") <= EXACT_LIMIT


async def test_asyncio_tasks_on_the_async_sdk_method(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=budgets(EXACT_LIMIT))
    api = serve(exact_completion(chat_request()))
    create = h.guard.with_budget(async_openai_client(api).chat.completions.create, user="alice")
    assert inspect.iscoroutinefunction(create), "an AsyncOpenAI method must stay a coroutine function"

    async def call() -> Any:
        return await create(**chat_request())

    results = await gather_results([call() for _ in range(CALLERS)])

    check_exact(h, results, len(api.requests))


def test_threads_racing_the_first_call_share_one_store(
    make_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is opened on first use; callers racing that first use must all get the same one.

    Opening is made slow (as a Redis handshake or SQLite schema check can be) to widen the race.
    """
    opened: list[Any] = []
    real_open = guard_module.open_ledger

    def slow_open(url: str, **kwargs: Any) -> Any:
        time.sleep(0.05)
        store = real_open(url, **kwargs)
        opened.append(store)
        return store

    monkeypatch.setattr(guard_module, "open_ledger", slow_open)
    h = make_guard(budgets=budgets(EXACT_LIMIT), open_store=False)
    api = serve(exact_completion(chat_request()))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    errors: list[BaseException] = []
    try:
        results = run_threads(lambda: create(**chat_request()), errors)
        assert len(opened) == 1, f"{len(opened)} stores opened for one guard"
        assert errors == []
        check_exact(h, results, len(api.requests))
    finally:
        for store in opened:
            if store is not h.guard.ledger:
                store.close()

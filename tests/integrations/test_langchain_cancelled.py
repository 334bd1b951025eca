"""A bare ``BudgetCallbackHandler`` (no agent middleware) whose async run is cancelled mid-call: LangChain
ends none of the runs ``asyncio`` cancels (no ``on_llm_error``), so a review found the hold kept until its
lease ended and the run kept in the handler. The run's id dies with the run: its finalizer queues the
attempt's failure (no ledger I/O there), which the guard settles at its next operation, as a dropped
connection (its input charged, per ``charge_failed``). The real ``ChatOpenAI`` against ``MockProvider``."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
from langchain_core.tracers.base import BaseTracer
from langchain_openai import ChatOpenAI

import budgetguard as bg
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.testing import MockProvider
from tests.sdk_http import unpooled_openai_http


def chat(api: MockProvider) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o",
        base_url=api.openai_base_url,
        api_key="test",
        max_retries=0,
        max_tokens=100,
        **unpooled_openai_http(),
    )  # type: ignore[arg-type]


def status(guard: bg.Guard) -> tuple[int, int]:
    [found] = guard.ledger.status(guard.counters_for([bg.Scope("user", "c")])[:1])
    return found.spent, found.held


async def sent(api: MockProvider, count: int) -> None:
    while len(api.requests) < count:
        await asyncio.sleep(0.01)


def input_cost(entry: bg.JournalEntry) -> int:
    usage = entry.data["usage"]
    assert set(usage) == {"input_tokens"}  # (the input estimate, nothing written)
    return bg.get_price("gpt-4o").cost_nano(bg.Usage(input_tokens=usage["input_tokens"]))


@pytest.mark.parametrize("how", ["ainvoke", "abatch", "wait_for"])
async def test_a_cancelled_run_is_settled_at_the_guards_next_operation(how: str) -> None:
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")])
    handler = BudgetCallbackHandler(guard, user="c")
    config: Any = {"callbacks": [handler]}
    with MockProvider() as api:
        api.delay(5.0, times=2)
        model = chat(api)
        runs = 2 if how == "abatch" else 1
        if how == "wait_for":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(model.ainvoke("Hello", config=config), 0.5)
        else:
            call = (
                model.abatch(["Hello", "Hi"], config=config)
                if how == "abatch"
                else model.ainvoke("Hello", config=config)
            )
            task = asyncio.ensure_future(call)
            await sent(api, runs)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0)  # (the task's frames let go of the runs)
        assert status(guard)[1] > 0 and len(handler._attempts) == runs  # (held until the next operation)
        await model.ainvoke("And now?", config=config)  # the guard's next operation settles them first
    assert len(handler._attempts) == 0
    *dropped, answered = guard.ledger.history()
    assert [entry.event for entry in dropped] == ["committed"] * runs
    assert [entry.amounts["usd"] for entry in dropped] == [input_cost(entry) for entry in dropped]
    assert status(guard) == (sum(entry.amounts["usd"] for entry in [*dropped, answered]), 0)
    guard.close()


async def test_a_run_that_ends_is_not_settled_again_when_its_id_dies() -> None:
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")])
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="c")]}
    with MockProvider() as api:
        await chat(api).ainvoke("Hello", config=config)
        await asyncio.sleep(0)
        assert len(guard._queued) == 0
        await chat(api).ainvoke("Again", config=config)
    assert [entry.event for entry in guard.ledger.history()] == ["committed", "committed"]
    guard.close()


class Tracer(BaseTracer):  # type: ignore[misc]
    """A tracer that keeps the runs it saw (as LangSmith's tracing does until it sends them)."""

    def _persist_run(self, run: Any) -> None:
        pass


async def test_a_cancelled_run_whose_id_is_kept_alive_is_held_until_its_lease() -> None:
    """The limitation the README states: a tracer (any ``BaseTracer``) keeps the cancelled run's id, so
    its finalizer does not run, and its hold waits for its lease (as before the fix)."""
    with warnings.catch_warnings():  # (earlier tests' garbage first: an unclosed client warns as it goes)
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")])
    handler, tracer = BudgetCallbackHandler(guard, user="c"), Tracer()
    with MockProvider() as api:
        api.delay(5.0, times=1)
        model = chat(api)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(model.ainvoke("Hello", config={"callbacks": [handler, tracer]}), 0.5)
        await asyncio.sleep(0)
        gc.collect()
        await model.ainvoke("And now?", config={"callbacks": [handler]})
    assert len(handler._attempts) == 1 and status(guard)[1] > 0
    assert [entry.event for entry in guard.ledger.history()] == ["committed"]  # (the second call only)
    assert tracer.run_map  # (what keeps the run's id)
    guard.close()

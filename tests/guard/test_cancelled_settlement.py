"""An async call cancelled (``asyncio.wait_for``, a client gone) while its settlement is on its way to the
store: the settlement is finished anyway, by the flow itself, in the background (``_drivers._finish``):
the commit lands, a forgotten reservation is charged late, and the events are the flow's own (a
``committed`` event with its model and usage, the thresholds the commit crossed, an ``overrun``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from budgetguard import Budget, to_usd
from budgetguard._drivers import settling
from budgetguard._settle import LATE
from tests.guard.conftest import Harness, MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    Reply,
    async_openai_client,
    chat_completion,
    chat_request,
    serve,
)
from tests.guard.test_late_settlement import COST, assert_charged_late, forget, late_guard


class Gate:
    """Holds the guard's commits until released: ``entered`` once one is on its way."""

    def __init__(self, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        store: Any = h.guard.async_ledger
        commit = store.commit
        if asyncio.iscoroutinefunction(commit):  # an async store (Redis): wait on the loop

            async def held(*args: Any, **kwargs: Any) -> Any:
                self.entered.set()
                while not self.opened.is_set():
                    await asyncio.sleep(0.001)
                return await commit(*args, **kwargs)

        else:  # a local store, run in a thread

            def held(*args: Any, **kwargs: Any) -> Any:
                self.entered.set()
                self.opened.wait(60)
                return commit(*args, **kwargs)

        monkeypatch.setattr(store, "commit", held)

    async def cancel_while_committing(self, task: asyncio.Future[Any]) -> None:
        while not self.entered.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        self.opened.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        while settling:
            await asyncio.gather(*settling)


async def test_a_cancelled_commit_lands_with_the_flows_events_and_thresholds(
    amake_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = amake_guard(budgets=[Budget("user", usd=str(to_usd(2 * COST)), per="day")], thresholds=("0.5",))
    gate = Gate(h, monkeypatch)
    create = h.guard.with_budget(
        async_openai_client(serve(chat_completion())).chat.completions.create, user="ann"
    )
    await gate.cancel_while_committing(asyncio.ensure_future(create(**chat_request())))
    assert h.spent("user:ann") == COST and h.held("user:ann") == 0
    (committed,) = h.of("committed")
    assert (committed.model, committed.actual) == ("gpt-4o", to_usd(COST))
    assert committed.data["usage"] == GPT4O_USAGE
    assert [c["spent"] for c in committed.data["counters"]] == [COST]
    (crossed,) = h.of("threshold")  # crossed by this commit: told once, by the flow, as ever
    assert crossed.data["threshold"] == "50%"


async def test_a_cancelled_commit_of_a_forgotten_reservation_is_charged_late(
    amake_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, reserved = late_guard(amake_guard)
    gate = Gate(h, monkeypatch)
    api = serve(Reply(200, chat_completion(), before=lambda: forget(h, reserved[-1])))
    create = h.guard.with_budget(
        async_openai_client(api).chat.completions.create, user="alice", feature="late"
    )
    await gate.cancel_while_committing(asyncio.ensure_future(create(**chat_request())))
    assert_charged_late(h, reserved[0], COST)
    assert h.committed()[0].data["model"] == "gpt-4o"
    assert [e.reason for e in h.of("overrun")] == [LATE]


async def test_a_settlement_left_running_at_the_loops_end_is_not_cancelled(
    amake_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asyncio.run`` cancels the tasks left when its coroutine returns, then waits for them: a
    settlement task carries on (its commit was on the wire; a late charge follows), not dropped."""
    h, reserved = late_guard(amake_guard)
    gate = Gate(h, monkeypatch)
    api = serve(Reply(200, chat_completion(), before=lambda: forget(h, reserved[-1])))
    client = async_openai_client(api)
    create = h.guard.with_budget(client.chat.completions.create, user="alice", feature="late")
    task = asyncio.ensure_future(create(**chat_request()))
    while not gate.entered.is_set():
        await asyncio.sleep(0.001)
    task.cancel()
    while not settling:
        await asyncio.sleep(0.001)
    left = list(settling)
    for pending in left:  # what asyncio.run does at its end
        pending.cancel()
    gate.opened.set()
    await asyncio.gather(*left, return_exceptions=True)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_charged_late(h, reserved[0], COST)

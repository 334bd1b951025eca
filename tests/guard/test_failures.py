"""Whatever goes wrong around a call, its reservation is resolved: nothing stays held after the call."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

import budgetguard
from budgetguard import Usage
from budgetguard import _drivers as drivers_module
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    MESSAGES,
    async_openai_client,
    chat_completion,
    chat_request,
    input_nano,
    nano,
    openai_client,
    serve,
)
from tests.sdk_http import OPENAI_HTTP

EST = budgetguard.estimate(chat_request())
COST = nano("gpt-4o", GPT4O_USAGE)


def test_user_exceptions_pass_through_unchanged(make_guard: MakeGuard) -> None:
    h = make_guard()
    boom = ValueError("the caller's own bug")
    calls: list[int] = []

    @h.guard.with_budget(user="{user_id}")
    def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        calls.append(1)
        raise boom

    with pytest.raises(ValueError, match="own bug") as caught:
        ask("alice", **chat_request())

    assert caught.value is boom
    assert calls == [1]  # not retried
    assert [(e.event, e.data["error"]) for e in h.history()] == [("released", "ValueError")]
    h.assert_settled({"user:alice": 0, "global": 0})


def test_custom_usage_reader(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    reader_usage = Usage(input_tokens=2006, output_tokens=300)  # ignores the cache discount, on purpose
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, user="alice", usage=lambda response: reader_usage
    )

    create(**chat_request())

    h.assert_settled({"user:alice": nano("gpt-4o", reader_usage)})
    (entry,) = h.committed()
    assert entry.data["usage"] == reader_usage.to_dict()


def test_usage_reader_error_leaves_nothing_held(make_guard: MakeGuard) -> None:
    """The call was made (and billed); a usage hook that fails must not leave the hold to its lease."""
    h = make_guard()
    api = serve(chat_completion())

    def broken_reader(response: Any) -> Usage:
        raise KeyError("usage")

    guard = h.guard.with_budget(usage=broken_reader, user="alice")
    create = guard(openai_client(api).chat.completions.create)

    with pytest.raises(KeyError):
        create(**chat_request())

    assert len(api.requests) == 1
    h.assert_settled({"user:alice": EST.cost_nano, "global": EST.cost_nano})  # the worst case, charged once


async def test_cancelled_call_is_charged_its_input(amake_guard: MakeGuard) -> None:
    """The request was sent when the task was cancelled: the provider may bill it, as for a timeout."""
    h = amake_guard()
    started = asyncio.Event()

    async def slow(request: Any) -> Any:
        started.set()
        await asyncio.sleep(30)
        return OPENAI_HTTP.Response(200, json=chat_completion())  # pragma: no cover - cancelled first

    client = openai.AsyncOpenAI(
        base_url="http://openai.test/v1",
        api_key="sk-test",
        max_retries=0,
        http_client=OPENAI_HTTP.AsyncClient(transport=OPENAI_HTTP.MockTransport(slow)),
    )

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    task = asyncio.create_task(ask("alice", "gpt-4o", MESSAGES, 300))
    await started.wait()
    assert h.held("user:alice") == EST.cost_nano
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert [(e.event, e.data["error"]) for e in h.history()] == [("committed", "CancelledError")]
    charged = input_nano("gpt-4o", {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 300})
    h.assert_settled({"user:alice": charged, "global": charged})


class _Writer:
    """Another process's write transaction on a SQLite ledger: it holds the lock until ``end``."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.ended = False

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def end(self) -> None:
        self.db.execute("COMMIT")
        self.db.close()
        self.ended = True


def _entered(ledger: Any, op: str) -> threading.Event:
    """Set when the store's ``op`` starts in its worker thread, where it then waits for the writer's lock:
    a condition to wait for, where a sleep would guess how long the machine takes to get there."""
    entered, original = threading.Event(), getattr(ledger, op)

    def spy(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        return original(*args, **kwargs)

    setattr(ledger, op, spy)
    return entered


async def _until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def _sqlite_guard(path: Path, on_event: Callable[[budgetguard.Event], None]) -> tuple[budgetguard.Guard, Any]:
    guard = budgetguard.Guard(
        f"sqlite:///{path}", budgets=[budgetguard.Budget("user", usd="1", per="day")], on_event=on_event
    )
    client = async_openai_client(serve(chat_completion()))

    @guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    guard.ledger.status(guard.counters_for([budgetguard.Scope("user", "alice")]))  # the schema exists
    return guard, ask


async def test_cancelled_while_a_local_reserve_runs_holds_nothing(tmp_path: Path) -> None:
    """A local store's reserve runs in a thread that a cancellation cannot stop (here it waits for another
    writer's lock): the cancelled call waits for it and releases the hold, before its cancellation ends."""
    events: list[budgetguard.Event] = []
    guard, ask = _sqlite_guard(tmp_path / "ledger.db", events.append)
    writer = _Writer(tmp_path / "ledger.db")
    writer.begin()
    reserving = _entered(guard.ledger, "reserve")
    task = asyncio.create_task(ask("alice", **chat_request()))
    await _until(reserving.is_set)  # the reserve's thread waits for the lock
    asyncio.get_running_loop().call_later(0.2, writer.end)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert writer.ended  # the cancellation waited for the reserve
    (entry,) = guard.ledger.history()
    assert (entry.event, entry.data["error"]) == ("released", "CancelledError")
    assert [(e.kind, e.reason, e.reservation_id) for e in events] == [
        ("released", "CancelledError", entry.reservation_id)
    ]
    (status,) = guard.ledger.status(guard.counters_for([budgetguard.Scope("user", "alice")]))
    assert (status.spent, status.held) == (0, 0)
    guard.close()


async def test_cancelled_twice_leaves_the_release_to_a_task(tmp_path: Path) -> None:
    """A second cancellation does not wait for the store: a task finishes the reserve and releases it."""
    events: list[budgetguard.Event] = []
    guard, ask = _sqlite_guard(tmp_path / "ledger.db", events.append)
    writer = _Writer(tmp_path / "ledger.db")
    writer.begin()
    reserving = _entered(guard.ledger, "reserve")
    task = asyncio.create_task(ask("alice", **chat_request()))
    await _until(reserving.is_set)  # the reserve's thread waits for the lock
    task.cancel()
    loop = asyncio.get_running_loop()
    undoing = lambda: [t for t in drivers_module.settling if t.get_loop() is loop]  # noqa: E731
    await _until(undoing)  # the cancelled call waits for the reserve
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not writer.ended  # it did not wait this time
    (undo,) = undoing()
    writer.end()
    await undo

    (entry,) = guard.ledger.history()
    assert (entry.event, entry.data["error"]) == ("released", "CancelledError")
    assert [(e.kind, e.reason) for e in events] == [("released", "CancelledError")]
    (status,) = guard.ledger.status(guard.counters_for([budgetguard.Scope("user", "alice")]))
    assert (status.spent, status.held) == (0, 0)
    guard.close()


async def test_cancelled_while_a_local_commit_runs_is_charged_first(tmp_path: Path) -> None:
    """The provider answered; the commit waits for another writer's lock when the task is cancelled: the
    commit lands before the cancellation ends (the call was billed; its hold must not just expire)."""
    writer = _Writer(tmp_path / "ledger.db")

    def on_event(event: budgetguard.Event) -> None:
        if event.kind == "reserved":
            writer.begin()  # before the provider answers: the commit will wait for this writer

    guard, ask = _sqlite_guard(tmp_path / "ledger.db", on_event)
    committing = _entered(guard.ledger, "commit")
    asked = asyncio.create_task(ask("alice", **chat_request()))
    await _until(committing.is_set)  # the provider answered; the commit's thread waits for the lock
    asyncio.get_running_loop().call_later(0.2, writer.end)
    asked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asked

    assert writer.ended  # the cancellation waited for the commit
    (entry,) = guard.ledger.history()
    assert entry.event == "committed" and entry.amounts["usd"] == COST
    (status,) = guard.ledger.status(guard.counters_for([budgetguard.Scope("user", "alice")]))
    assert (status.spent, status.held) == (COST, 0)
    guard.close()


def test_a_raising_hook_is_logged_and_the_books_stay_right(
    make_guard: MakeGuard, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: budgetguard.Event) -> None:
        raise RuntimeError(f"metrics backend down ({event.kind})")

    h = make_guard(on_event=broken)
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    create(**chat_request())

    assert len(api.requests) == 1
    h.assert_settled({"user:alice": nano("gpt-4o", GPT4O_USAGE), "global": nano("gpt-4o", GPT4O_USAGE)})
    assert "the on_event hook" in caplog.text and "metrics backend down (reserved)" in caplog.text


def test_pricing_error_before_the_call(make_guard: MakeGuard, global_prices: budgetguard.PriceBook) -> None:
    """An unknown model is never charged $0: the call is stopped before it is sent."""
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(budgetguard.PricingError):
        create(**chat_request("gpt-unknown-2099"))

    assert api.requests == []
    h.assert_settled({"user:alice": 0})
    global_prices.register("gpt-unknown-2099", input="1.00", output="2.00")
    create(**chat_request("gpt-unknown-2099"))
    assert len(api.requests) == 1
    h.assert_settled({"user:alice": nano("gpt-unknown-2099", GPT4O_USAGE)})

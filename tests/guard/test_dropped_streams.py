"""Streams nobody finished: their finalizers only queue the settlement, and the guard settles the queue on
its next operation, on ``close()``/``aclose()``, when a job ends and at exit. A finalizer runs wherever the
garbage collector does: inside a store's lock or a SQLite transaction of the same thread, or on an event
loop that is shutting down. The process tests run in a subprocess with a timeout (a finalizer that takes
the memory store's lock in the thread that holds it used to hang the process). Streams abandoned under
GC pressure, counted: ``tests/reliability/test_abandoned_streams.py``."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import budgetguard
from budgetguard import AsyncLedger, Budget, Guard, LedgerError, open_async_ledger
from budgetguard._deferred import drain, owed
from budgetguard._ledger import MemoryLedger
from budgetguard._ledger._local import AsyncLocalLedger
from budgetguard._ledger._sqlite import SQLiteLedger
from tests.guard.conftest import MakeGuard
from tests.guard.dropworker import run_worker
from tests.guard.payloads import (
    anthropic_client,
    anthropic_sse,
    anthropic_stream_events,
    async_openai_client,
    chat_request,
    chat_stream_chunks,
    claude_request,
    openai_client,
    serve,
    small_completion,
)
from tests.guard.test_streams import CHAT_SSE, interrupted_cost


def test_a_stream_collected_inside_a_store_operation_is_queued_then_charged(store_url: str) -> None:
    """Each stream is collected by a ``gc.collect()`` run from inside the next store operation of the same
    thread (under the memory store's lock, inside SQLite's transaction, with a Redis connection checked
    out): the process does not hang, no store operation starts inside the collection, and every stream is
    charged by the guard's next operation or its ``close()``."""
    n = 10
    counts = run_worker("inside", store_url, n)
    assert counts["collections_inside_store_ops"] == n - 1  # (the last stream is dropped after the last op)
    assert counts["store_ops_inside_collections"] == 0  # no ledger I/O from a finalizer
    assert counts["collected_before_close"] >= n - 1  # (the last one: before close or at exit)
    assert counts["charged_at_close"] >= counts["collected_before_close"]  # (a GC in close() may add one)
    assert counts["charged"] == counts["committed_events"] == n
    assert counts["held"] == 0
    assert counts["spend_lost"] == 0


def test_async_streams_abandoned_as_asyncio_run_ends_are_charged(store_url: str) -> None:
    """Async streams dropped as ``main()`` returns and streams held by tasks that ``asyncio.run`` cancels:
    no settlement task for the closing loop to cancel; each is charged (with its ``committed`` event) by
    the exit handler, Redis included (through a sync client opened from the guard's URL)."""
    n = 20
    counts = run_worker("async", store_url, n)
    assert counts["tasks_pending_at_the_end"] == n // 2
    assert counts["charged"] == counts["committed_events"] == n
    assert counts["held"] == 0
    assert counts["spend_lost"] == 0


def test_streams_still_referenced_at_exit_are_charged(store_url: str) -> None:
    """Streams a module's global still holds when the program ends: the exit handler settles them (the
    interpreter's teardown finalizes them only after it, when nothing drains a queue any more)."""
    n = 5
    counts = run_worker("kept", store_url, n)
    assert counts["charged"] == counts["committed_events"] == n
    assert counts["held"] == 0


# -- in this process ---------------------------------------------------------------------------------


def drop_in_a_cycle(stream: Any) -> None:
    stream.cycle = stream  # only the collector frees it


def test_a_dropped_stream_is_charged_by_the_guards_next_operation(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(CHAT_SSE, small_completion(10, 5))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    stream = create(**chat_request(stream=True))
    next(stream)
    next(stream)
    drop_in_a_cycle(stream)
    del stream
    gc.collect()
    assert h.history() == []  # queued: the finalizer did no ledger I/O
    create(**chat_request())  # the next operation settles it first

    first, second = h.history()
    usage, cost = interrupted_cost(chat_request(), "Budgets")
    assert (first.event, first.amounts["usd"], first.data["interrupted"]) == ("committed", cost, True)
    assert first.data["usage"] == usage.to_dict()
    assert second.event == "committed" and "interrupted" not in second.data
    assert h.kinds() == ["usage_missing", "committed", "committed"]
    assert h.held("user:alice") == 0


def test_a_dropped_stream_is_counted_by_the_trackers_of_its_own_request(make_guard: MakeGuard) -> None:
    """A stream dropped in one request (``track()`` block) is settled by the guard's next operation, in
    another's: its cost goes to the trackers it was held by, not to the request that settles it; a
    stream started outside any tracker is counted by none."""
    h = make_guard()
    api = serve(CHAT_SSE, CHAT_SSE, small_completion(10, 5))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    def drop(stream: Any) -> None:
        next(stream)
        drop_in_a_cycle(stream)

    with budgetguard.track() as first:
        drop(create(**chat_request(stream=True)))
    drop(create(**chat_request(stream=True)))  # (no tracker open)
    gc.collect()
    assert first.open_calls == 1 and first.cost == 0 and h.history() == []
    with budgetguard.track() as second:
        create(**chat_request())  # settles both dropped streams first

    stream, untracked, call = (entry.amounts["usd"] for entry in h.history())
    assert (first.calls, first.cost, first.held, first.open_calls) == (1, budgetguard.to_usd(stream), 0, 0)
    assert (second.calls, second.cost) == (1, budgetguard.to_usd(call))
    assert untracked == stream and h.held("user:alice") == 0


def test_a_stream_dropped_inside_a_job_is_charged_to_it_at_what_it_cost(make_guard: MakeGuard) -> None:
    """A stream dropped inside ``guard.reserve()`` settles on the job's hold when the job ends: charged
    what it streamed, not counted among the unsettled calls charged at their hold."""
    h = make_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with h.guard.reserve(usd="0.5", user="alice") as job:
        stream = create(**chat_request(stream=True))
        next(stream)
        next(stream)
        drop_in_a_cycle(stream)
        del stream
        gc.collect()

    _, cost = interrupted_cost(chat_request(), "Budgets")
    (entry,) = h.history()
    assert entry.data["calls"] == 1
    assert "unsettled_calls" not in entry.data
    assert entry.amounts["usd"] == job.cost_nano == cost
    h.assert_settled({"user:alice": cost})


def run_and_abandon(guard: Guard, create: Any) -> None:
    """An ``asyncio.run`` whose stream, read one chunk, is still referenced when the loop has closed.
    (The run closes the guard's async store, bound to its loop, before it ends.)"""
    kept: list[Any] = []

    async def main() -> None:
        stream = await create()
        await stream.__anext__()
        kept.append(stream)
        await guard.aclose()

    asyncio.run(main())
    kept.clear()  # dropped with no loop running
    gc.collect()


def async_function(guard: Guard) -> Any:
    first = chat_stream_chunks()[1]  # "Budgets"

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield first
        yield first

    @guard.with_budget(user="alice", estimate=lambda: chat_request())
    async def ask() -> AsyncIterator[dict[str, Any]]:
        return chunks()

    return ask


def test_an_async_stream_left_after_asyncio_run_is_charged_on_close(make_guard: MakeGuard) -> None:
    h = make_guard()
    run_and_abandon(h.guard, async_function(h.guard))
    h.guard.close()

    (entry,) = h.history()
    assert (entry.event, entry.data["interrupted"], entry.data["usage_missing"]) == ("committed", True, True)
    assert h.kinds() == ["usage_missing", "committed"]
    assert h.held("user:alice") == 0


def test_an_async_only_guard_settles_through_a_sync_twin_of_its_store(make_guard: MakeGuard) -> None:
    """A guard given only an async store (``open_async_ledger``) has no sync store for ``close()`` and
    exit, where no loop runs: it settles through the same store's sync side (a local store's own, a
    Redis store opened from the same URL), then closes what it opened."""
    h = make_guard()
    url = h.ledger.url
    store = AsyncLocalLedger(h.ledger, in_thread=False) if url == "memory://" else open_async_ledger(url)
    events: list[Any] = []
    guard = Guard(store, budgets=h.guard.budgets, on_event=events.append, missing_scope="skip")
    run_and_abandon(guard, async_function(guard))
    guard.close()
    assert guard._sync is None  # the twin was for settling only

    (entry,) = h.history()
    assert (entry.event, entry.data["interrupted"]) == ("committed", True)
    assert [e.kind for e in events if e.kind != "reserved"] == ["usage_missing", "committed"]
    assert h.held("user:alice") == 0


class _Relay(AsyncLedger):
    """A user's own async store (here relaying to a real one): the guard knows no sync side for it."""

    def __init__(self, inner: AsyncLedger) -> None:
        self.inner, self.namespace, self.url = inner, inner.namespace, "custom://"

    async def reserve(self, holds: Iterable[Any], **kw: Any) -> Any:
        return await self.inner.reserve(holds, **kw)

    async def commit(self, reservation: Any, actual: Any, **kw: Any) -> Any:
        return await self.inner.commit(reservation, actual, **kw)

    async def release(self, reservation: Any, **kw: Any) -> Any:
        return await self.inner.release(reservation, **kw)

    async def status(self, counters: Iterable[Any]) -> Any:
        return await self.inner.status(counters)

    async def set_limit(self, counter: Any, limit: int) -> None:
        await self.inner.set_limit(counter, limit)

    async def get_limit(self, counter: Any) -> int | None:
        return await self.inner.get_limit(counter)

    async def clear_limit(self, counter: Any) -> None:
        await self.inner.clear_limit(counter)

    async def history(self, **kw: Any) -> Any:
        return await self.inner.history(**kw)

    async def journal_complete_since(self) -> Any:
        return await self.inner.journal_complete_since()


def test_a_settlement_no_driver_can_reach_is_reported_lost_with_its_amount() -> None:
    """With no loop and no sync side for the store, a dropped stream cannot be charged: ``spend_lost``
    says so, with what it streamed."""
    events: list[Any] = []
    store = _Relay(AsyncLocalLedger(MemoryLedger(), in_thread=False))
    guard = Guard(store, budgets=[Budget("user", usd="1", per="day")], on_event=events.append)
    run_and_abandon(guard, async_function(guard))
    guard.close()

    _, cost = interrupted_cost(chat_request(), "Budgets")
    lost = [e for e in events if e.kind == "spend_lost"]
    assert [(e.actual, e.scopes) for e in lost] == [(Decimal(cost) / 10**9, ("global", "user:alice"))]
    assert "could not be settled" in (lost[0].reason or "")


def test_a_stream_manager_dropped_unentered_is_released_on_close(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(anthropic_sse(anthropic_stream_events()))
    stream = h.guard.with_budget(anthropic_client(api).messages.stream, user="alice")
    manager = stream(**claude_request())
    drop_in_a_cycle(manager)
    del manager
    gc.collect()
    assert h.held("user:alice") > 0  # queued
    h.guard.close()
    assert [(e.event, e.data.get("error")) for e in h.history()] == [("released", "never sent")]


# -- the store fails a queued settlement; drains at once; bounded drains -------------------------------


def drop_chat_streams(guard: Guard, api: Any, n: int) -> Any:
    """``n`` streams read two chunks and dropped: queued. Returns the guarded ``create``."""
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    gc.disable()  # (a collection meanwhile would queue one, for the next stream's call to settle)
    try:
        for _ in range(n):
            stream = create(**chat_request(stream=True))
            next(stream)
            next(stream)
            drop_in_a_cycle(stream)
            del stream
    finally:
        gc.enable()
    gc.collect()
    return create


def test_a_queued_settlement_the_store_fails_is_kept_and_retried_not_lost(tmp_path: Path) -> None:
    """The store fails the settlement of a dropped stream (here SQLite, locked by another writer): it stays
    queued (the hold would still be charged by a late commit), reported ``store_unavailable`` with
    ``will_retry`` and not as ``spend_lost``; once the store is back it is charged once, its usage_missing
    reported once."""
    path = tmp_path / "ledger.db"
    events: list[Any] = []
    guard = Guard(
        SQLiteLedger(path, timeout=0.05), budgets=[Budget("user", usd="1", per="day")],
        on_event=events.append, missing_scope="skip",
    )  # fmt: skip
    create = drop_chat_streams(guard, serve(CHAT_SSE, small_completion(10, 5)), 1)
    assert len(guard._queued) == 1

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process writing: the guard's writes time out
    with pytest.raises(LedgerError):
        create(**chat_request())  # its drain fails (kept queued), then its own reservation
    guard.close()  # fails again: still queued, for the next operation or exit
    assert len(guard._queued) == 1 and guard in owed
    kinds = [e.kind for e in events if e.kind != "reserved"]
    assert "spend_lost" not in kinds
    retried = [e for e in events if e.kind == "store_unavailable" and e.data.get("will_retry")]
    assert len(retried) == 2
    locker.execute("ROLLBACK")
    locker.close()

    guard.close()
    assert not guard._queued and guard not in owed
    _, cost = interrupted_cost(chat_request(), "Budgets")
    (entry,) = guard.ledger.history(events=["committed"])
    assert (entry.amounts["usd"], entry.data["interrupted"]) == (cost, True)
    assert [e.kind for e in events].count("usage_missing") == 1
    assert "spend_lost" not in [e.kind for e in events]
    (status,) = guard.ledger.status(guard.counters_for([budgetguard.Scope.parse("user:alice")])[:1])
    assert (status.spent, status.held) == (cost, 0)
    guard.close()


def test_one_operation_settles_a_bounded_batch_of_the_queue(
    make_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's call settles at most ``DRAIN_BATCH`` queued settlements before its own; ``close()`` the
    rest."""
    monkeypatch.setattr("budgetguard._deferred.DRAIN_BATCH", 2, raising=False)  # (before the fix: none)
    h = make_guard()
    create = drop_chat_streams(h.guard, serve(CHAT_SSE, CHAT_SSE, CHAT_SSE, small_completion(10, 5)), 3)
    assert len(h.guard._queued) == 3

    create(**chat_request())
    assert len(h.guard._queued) == 1 and h.guard in owed
    assert len(h.committed()) == 3  # two dropped streams, then the call

    h.guard.close()
    assert not h.guard._queued
    _, cost = interrupted_cost(chat_request(), "Budgets")
    assert [e.amounts["usd"] for e in h.committed()].count(cost) == 3
    assert h.held("user:alice") == 0


def abandon_async_streams(guard: Guard, create: Any, n: int) -> None:
    """``run_and_abandon`` with ``n`` streams."""
    kept: list[Any] = []

    async def main() -> None:
        for _ in range(n):
            stream = await create()
            await stream.__anext__()
            kept.append(stream)
        await guard.aclose()

    asyncio.run(main())
    kept.clear()
    gc.collect()


def test_drains_at_once_of_an_async_only_guard_share_no_state(make_guard: MakeGuard) -> None:
    """Settling an async-only guard's queue through a sync twin of its store does not lend that twin to
    the guard (``guard.ledger`` still says the guard has no sync store), and a second drain running meanwhile
    in another thread (``close()``) uses its own: both settlements are charged."""
    h = make_guard()
    url = h.ledger.url
    store = AsyncLocalLedger(h.ledger, in_thread=False) if url == "memory://" else open_async_ledger(url)
    events: list[Any] = []
    seen: list[Any] = []
    guard: Guard

    def during_the_drain(event: Any) -> None:
        events.append(event)
        if event.kind != "committed" or seen:
            return
        seen.append(guard._sync)
        try:
            guard.ledger  # noqa: B018
        except budgetguard.ConfigurationError:
            seen.append("no sync store")
        other = threading.Thread(target=guard.close)  # a second drain at once: takes the other one
        other.start()
        other.join()

    guard = Guard(store, budgets=h.guard.budgets, on_event=during_the_drain, missing_scope="skip")
    abandon_async_streams(guard, async_function(guard), 2)
    assert len(guard._queued) == 2
    guard.close()

    assert seen == [None, "no sync store"]
    assert guard._sync is None and not guard._queued
    _, cost = interrupted_cost(chat_request(), "Budgets")
    assert [(e.event, e.amounts["usd"]) for e in h.history()] == [("committed", cost)] * 2
    assert [e.kind for e in events].count("committed") == 2
    assert "spend_lost" not in [e.kind for e in events]
    assert h.held("user:alice") == 0


def locked_guard(path: Path, events: list[Any]) -> Guard:
    return Guard(
        SQLiteLedger(path, timeout=0.05), budgets=[Budget("user", usd="1", per="day")],
        on_event=events.append, missing_scope="skip",
    )  # fmt: skip


async def test_a_queued_settlement_the_store_fails_is_retried_by_the_async_driver(tmp_path: Path) -> None:
    """The async driver's drain (an async call's start) keeps a settlement the store failed, too."""
    path = tmp_path / "ledger.db"
    events: list[Any] = []
    guard = locked_guard(path, events)
    api = serve(CHAT_SSE, small_completion(10, 5))
    drop_chat_streams(guard, api, 1)
    acreate = guard.with_budget(async_openai_client(api).chat.completions.create, user="alice")

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(LedgerError):
        await acreate(**chat_request())
    assert len(guard._queued) == 1
    assert [e.data.get("will_retry") for e in events if e.kind == "store_unavailable"] == [True, None]
    locker.execute("ROLLBACK")
    locker.close()

    await guard.aclose()
    assert not guard._queued
    _, cost = interrupted_cost(chat_request(), "Budgets")
    assert [e.amounts["usd"] for e in guard.ledger.history(events=["committed"])] == [cost]
    assert "spend_lost" not in [e.kind for e in events]
    guard.close()


def test_the_last_try_at_exit_reports_the_spend_lost_once(tmp_path: Path) -> None:
    """At exit (``drain_at_exit``: the final drain) a store still failing the settlement: ``spend_lost``,
    once, with what the stream cost, after the earlier tries reported only ``store_unavailable``."""
    path = tmp_path / "ledger.db"
    events: list[Any] = []
    guard = locked_guard(path, events)
    drop_chat_streams(guard, serve(CHAT_SSE), 1)

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    guard.close()
    assert len(guard._queued) == 1  # kept
    drain(guard, final=True)  # what the exit handler does
    locker.execute("ROLLBACK")
    locker.close()

    _, cost = interrupted_cost(chat_request(), "Budgets")
    assert not guard._queued and guard not in owed
    assert [e.actual for e in events if e.kind == "spend_lost"] == [Decimal(cost) / 10**9]
    assert [e.data.get("will_retry") for e in events if e.kind == "store_unavailable"] == [True, None]
    guard.close()

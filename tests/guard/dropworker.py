"""A process that abandons guarded streams: ``python -m tests.guard.dropworker MODE KIND URL N``.

Run in a subprocess with a timeout (a finalizer that takes a store's lock in the thread holding it
hangs the process: the test must fail, not hang). It prints one JSON line of what it counted, at exit
(after budgetguard's own exit handler, which settles what is still queued).

Streams come from the real OpenAI client (a chat completion streamed from a ``MockTransport``); each is
read one chunk, put in a reference cycle (so only the garbage collector frees it) and dropped. KIND is
``memory``, ``sqlite`` or ``redis``: the store at URL, built with a hook that runs inside every store
operation, in the thread that performs it (the memory store's clock runs under its lock, SQLite's inside
its ``BEGIN IMMEDIATE`` transaction, a Redis connection's ``send_packed_command`` while it is checked
out of its pool).

MODE:
- ``inside``: after each stream is dropped, the next store operation runs ``gc.collect()`` from the hook,
  so every stream is collected inside a store operation of the same thread.
- ``pressure``: collection thresholds of (50, 5, 5): the collector runs wherever allocations trigger it.
- ``kept``: N streams read one chunk and kept in a module's global when the program ends: the exit
  handler settles them (the interpreter's teardown would finalize them after it).

The sync modes close the guard and count what is charged then (``charged_at_close``: every stream
collected before, ``collected_before_close``), and again at exit (``charged``).
- ``async``: N async streams (a guarded ``async def`` that returns an async generator, which goes quiet
  after its first chunk). Half are read one chunk and dropped as ``main()`` returns, with the loop
  running; half are read by tasks that ``asyncio.run`` cancels as it ends, which drops them while the
  loop closes. The guard is never closed: the exit handler settles them.
"""

from __future__ import annotations

import atexit
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

counts: dict[str, Any] = {}
_report: list[Any] = []


def _print_report() -> None:  # registered before budgetguard is imported: runs after its exit handler
    if _report:
        counts.update(_report[0]())
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    atexit.register(_print_report)

import asyncio  # noqa: E402
import time  # noqa: E402
import weakref  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from urllib.parse import parse_qsl, urlsplit  # noqa: E402

import redis  # noqa: E402

from budgetguard import Budget, Event, Guard, Ledger, Scope  # noqa: E402
from budgetguard._ledger import MemoryLedger, SQLiteLedger  # noqa: E402
from budgetguard._ledger._postgres import PostgresLedger  # noqa: E402
from budgetguard._ledger._redis import JOURNAL_MAXLEN, RedisLedger  # noqa: E402
from tests.guard.payloads import (  # noqa: E402
    chat_request,
    chat_stream_chunks,
    openai_client,
    openai_sse,
    serve,
)
from tests.postgres_server import libpq_url  # noqa: E402

BUDGETS = [Budget("user", usd="1000", per="day"), Budget("global", usd="10000", per="day")]


class Hook:
    """Runs ``gc.collect()`` once, from inside the next store operation, when armed."""

    def __init__(self) -> None:
        self.armed = False
        self.collecting = False
        self.collections = 0
        self.store_ops_inside = 0
        """Store operations begun (in this thread) while a collection ran inside another one."""

    def __call__(self) -> None:
        if self.collecting:
            self.store_ops_inside += 1
        elif self.armed:
            self.armed = False
            self.collecting = True
            try:
                gc.collect()
            finally:
                self.collecting = False
            self.collections += 1


def hooked_store(kind: str, url: str, hook: Hook) -> Ledger:
    def clock() -> int:
        hook()
        return time.time_ns() // 1_000_000

    if kind == "memory":
        return MemoryLedger(clock=clock)
    if kind == "sqlite":
        return SQLiteLedger(urlsplit(url).path[1:], clock=clock)
    if kind == "postgresql":  # (its clock is the server's: the hook runs as each transaction begins)

        class HookedPostgres(PostgresLedger):
            def _transaction(self, conn: Any, op: Any, args: tuple[Any, ...]) -> Any:
                hook()
                return super()._transaction(conn, op, args)

        return HookedPostgres(libpq_url(url), namespace=dict(parse_qsl(urlsplit(url).query))["namespace"])

    class HookedConnection(redis.Connection):
        def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
            hook()
            super().send_packed_command(*args, **kwargs)

    base, _, query = url.partition("?")
    namespace = dict(parse_qsl(query)).get("namespace", "default")
    client = redis.Redis.from_url(base, decode_responses=True, connection_class=HookedConnection)
    return RedisLedger(url, client, namespace, JOURNAL_MAXLEN)


def charged_report(guard: Guard, events: list[Event]) -> dict[str, Any]:
    journal = guard.ledger.history()
    (status,) = guard.ledger.status(guard.counters_for([Scope("user", "u")])[:1])
    return {
        "charged": sum(e.event == "committed" and bool(e.data.get("interrupted")) for e in journal),
        "journal_entries": len(journal),
        "held": status.held,
        "committed_events": sum(e.kind == "committed" and bool(e.data.get("interrupted")) for e in events),
        "spend_lost": sum(e.kind == "spend_lost" for e in events),
        "spend_lost_nano": sum(int(e.actual * 10**9) for e in events if e.kind == "spend_lost" and e.actual),
    }


def sync_run(mode: str, kind: str, url: str, n: int) -> None:
    hook = Hook()
    events: list[Event] = []
    guard = Guard(hooked_store(kind, url, hook), budgets=BUDGETS, on_event=events.append)
    api = serve(openai_sse(chat_stream_chunks()))
    create = guard.with_budget(openai_client(api).chat.completions.create, user="u")
    if mode == "pressure":
        gc.collect()
        gc.set_threshold(50, 5, 5)
    dropped = []
    for _ in range(0 if mode == "kept" else n):
        stream = create(**chat_request(stream=True))
        next(stream)
        stream.cycle = stream  # only the collector frees it
        dropped.append(weakref.ref(stream))
        del stream
        hook.armed = mode == "inside"
    gc.set_threshold(700, 10, 10)
    counts.update(abandoned=n, collections_inside_store_ops=hook.collections)
    counts["store_ops_inside_collections"] = hook.store_ops_inside
    counts["collected_before_close"] = sum(ref() is None for ref in dropped)
    guard.close()  # settles what the streams collected so far queued
    counts["charged_at_close"] = charged_report(guard, events)["charged"]
    for _ in range(n if mode == "kept" else 0):
        stream = create(**chat_request(stream=True))
        next(stream)
        kept.append(stream)

    def report() -> dict[str, Any]:  # at exit, after budgetguard's handler settled the rest
        found = charged_report(guard, events)
        kept.clear()  # now, not in the teardown, where the SDK's generators cannot close cleanly
        return found

    _report.append(report)


kept: list[Any] = []
"""``kept`` mode: streams a module's global still holds when the program ends."""


def async_run(kind: str, url: str, n: int) -> None:
    events: list[Event] = []
    guard = Guard(url, budgets=BUDGETS, on_event=events.append)
    first = chat_stream_chunks()[0]

    async def chunks() -> AsyncIterator[dict[str, Any]]:  # one chunk, then the provider goes quiet
        yield first
        await asyncio.Event().wait()
        yield first

    @guard.with_budget(user="u", estimate=lambda: chat_request())
    async def ask() -> AsyncIterator[dict[str, Any]]:  # a function that returns a stream
        return chunks()

    async def reader(started: asyncio.Queue[None]) -> None:
        stream = await ask()
        started.put_nowait(None)
        async for _ in stream:  # waits inside the stream for a chunk that never comes
            pass

    async def main() -> None:
        streams = [await ask() for _ in range(n // 2)]
        for stream in streams:
            await stream.__anext__()
        started: asyncio.Queue[None] = asyncio.Queue()
        tasks = [asyncio.create_task(reader(started)) for _ in range(n - n // 2)]
        for _ in tasks:
            await started.get()
        counts["tasks_pending_at_the_end"] = sum(not t.done() for t in tasks)
        streams.clear()  # dropped with the loop running, as the run ends

    asyncio.run(main())
    counts["abandoned"] = n
    _report.append(lambda: charged_report(guard, events))  # at exit, after budgetguard's handler


ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180
"""Seconds: a hung worker fails its test instead of hanging the suite."""


def kind_of(url: str) -> str:
    return url.split(":", 1)[0].replace("rediss", "redis")


def run_worker(mode: str, url: str, n: int) -> dict[str, Any]:
    """This module in a subprocess: what it counted. A worker that hangs fails the calling test."""
    import pytest

    command = [sys.executable, "-m", "tests.guard.dropworker", mode, kind_of(url), url, str(n)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the process abandoning streams ({mode}, {kind_of(url)}) hung: killed after {TIMEOUT} s")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]
    counts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def main() -> None:
    mode, kind, url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "async":
        async_run(kind, url, n)
    else:
        sync_run(mode, kind, url, n)


if __name__ == "__main__":
    main()

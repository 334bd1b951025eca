"""Redis down or hanging: fail closed raises ``LedgerError`` by the operation's deadline (plus a margin
for a shared machine's scheduling), the SDK is not called; fail open proceeds and reports the spend it
could not record."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, Event, Guard, LedgerError, to_usd
from budgetguard._ledger import DEADLINE_FACTOR, TIMEOUTS, Hold, open_ledger
from tests.guard.payloads import GPT4O_USAGE, chat_completion, chat_request, nano, openai_client, serve
from tests.ledger.helpers import counter
from tests.redis_server import RedisServer

from . import figures

TIMEOUT = 0.2
MARGIN = 1.5  # CI machines are slow and shared: scheduling, not waiting on Redis


def bound(timeout: float) -> float:
    """The longest a hung or dead server may keep a caller: one operation's deadline (``?deadline=``,
    by default ``DEADLINE_FACTOR`` x the socket timeout, retries included), plus the margin. Before the
    deadline, redis-py's retries stacked four timeouts and the backoff: 8.3 s at the default 2 s."""
    return DEADLINE_FACTOR * timeout + MARGIN


@pytest.fixture
def hung() -> Iterator[RedisServer]:
    """A real Redis that stops answering (SIGSTOP): connections are accepted by the kernel, then silence."""
    server = RedisServer().start()
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield server
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()


@pytest.fixture
def dead() -> RedisServer:
    server = RedisServer().start()
    server.kill()
    return server


def _timed(call: Callable[[], Any]) -> tuple[float, BaseException]:
    started = time.monotonic()
    with pytest.raises(LedgerError) as caught:
        call()
    return time.monotonic() - started, caught.value


@pytest.mark.parametrize("state", ["hung", "dead"])
def test_every_ledger_call_fails_within_the_timeout(state: str, request: pytest.FixtureRequest) -> None:
    server: RedisServer = request.getfixturevalue(state)
    spec = counter(limit=1000)
    url = f"{server.url}?socket_timeout={TIMEOUT}&socket_connect_timeout={TIMEOUT}"
    with open_ledger(url) as ledger:
        calls: list[Callable[[], Any]] = [
            lambda: ledger.reserve([Hold(spec, 1)]),
            lambda: ledger.commit("some-id", {"usd": 1}),
            lambda: ledger.status([spec]),
            lambda: ledger.history(),
        ]
        for call in calls:
            elapsed, error = _timed(call)
            assert error.__cause__ is not None
            assert elapsed < bound(TIMEOUT), elapsed
            name = f"slowest LedgerError, {state} Redis, {TIMEOUT} s timeouts (s)"
            figures.peak("store_down", name, elapsed)
    figures.record("store_down", f"ledger calls against a {state} Redis, each a LedgerError", len(calls))
    figures.note("store_down", "bound asserted: the deadline (1.5 x timeout) + margin (s)",
                 f"{bound(TIMEOUT):.2f} for {TIMEOUT} s")  # fmt: skip


def test_default_timeouts_bound_a_hung_server(hung: RedisServer) -> None:
    """Without timeouts in the URL a hung server would block forever; the defaults bound it."""
    default = float(TIMEOUTS["socket_timeout"])
    with open_ledger(hung.url) as ledger:
        kwargs = ledger.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (default, default)
        if not figures.LONG:
            return  # the real wait (a 3 s deadline) is the long tier's
        elapsed, _ = _timed(lambda: ledger.reserve([Hold(counter(), 1)]))
    assert elapsed < bound(default)
    figures.peak("store_down", f"slowest LedgerError, hung Redis, default timeouts {default} s (s)", elapsed)


def _guard(url: str, mode: str) -> tuple[Guard, list[Event]]:
    events: list[Event] = []
    guard = Guard(
        url,
        budgets=[Budget("user", usd="1"), Budget("global", usd="100")],
        on_event=events.append,
        on_store_error=mode,  # type: ignore[arg-type]
    )
    return guard, events


@pytest.mark.parametrize("state", ["hung", "dead"])
@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
def test_guard_on_a_hung_or_dead_store(state: str, mode: str, request: pytest.FixtureRequest) -> None:
    server: RedisServer = request.getfixturevalue(state)
    guard, events = _guard(f"{server.url}?socket_timeout={TIMEOUT}&socket_connect_timeout={TIMEOUT}", mode)
    api = serve(chat_completion())
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    budgetguard.estimate(chat_request())  # load the tokenizer before the clock starts
    try:
        started = time.monotonic()
        if mode == "fail_closed":
            with pytest.raises(LedgerError):
                create(**chat_request())
        else:
            result = create(**chat_request())
            assert result.usage.total_tokens == 2306
        elapsed = time.monotonic() - started
    finally:
        guard.close()
    kinds = [e.kind for e in events]
    if mode == "fail_closed":
        assert api.requests == []  # no reservation, no call
        assert kinds == ["store_unavailable"]
        assert elapsed < bound(TIMEOUT)
    else:
        assert len(api.requests) == 1
        assert kinds == ["store_unavailable", "spend_lost"]  # what fail_open promises, said out loud
        assert events[1].actual == to_usd(nano("gpt-4o", GPT4O_USAGE))
        # it tried twice (reserve, then the commit of the call it let through): two waits at most
        assert elapsed < 2 * bound(TIMEOUT)
    figures.peak("store_down", f"slowest guarded call, {mode}, {state} Redis (s)", elapsed)
    figures.record("store_down", f"guarded calls, {mode}", 1)
    figures.record("store_down", f"SDK calls made, {mode}", len(api.requests))
    figures.record("store_down", f"spend_lost events, {mode}", kinds.count("spend_lost"))

"""The Redis store under faults: lost replies, flushed scripts, a dead server, hostile input.

DESIGN ("The ledger contract", 4 and 8): a redis-py retry after a lost reply must never charge twice;
scripts are reloaded on NOSCRIPT and validate every input before their first write; all keys of one
operation share a hash tag; scope ids are data, never key syntax.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from budgetguard import (
    AsyncLedger,
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Event,
    Guard,
    LedgerError,
    Scope,
)
from budgetguard._budgets import Period, Unit
from budgetguard._ledger import Hold, open_async_ledger, open_ledger
from budgetguard._ledger._redis import JOURNAL_MAXLEN, RedisLedger
from budgetguard._money import to_usd
from tests.redis_server import delete_namespace

from .cluster_close import close_cluster_client, close_ledger
from .helpers import counter
from .proxy import LossyProxy, SilentServer
from .test_contract import HOSTILE_IDS

# -- helpers -------------------------------------------------------------------------------------


def _namespace() -> str:
    return "f" + secrets.token_hex(6)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REDIS_DEFAULT_RETRY: Retry = inspect.signature(redis.Redis.__init__).parameters["retry"].default or Retry(
    ExponentialBackoff(cap=1, base=0.01), 10
)
"""What ``redis.Redis(...)`` retries with when not told otherwise (redis-py 8: 10 retries,
exponential backoff with jitter, on ConnectionError / TimeoutError; redis-py 5 has none, so the tests
write that policy out). ``Redis.from_url`` - and so ``open_ledger`` - does NOT get it: its connections
are built by ``ConnectionPool.from_url`` with ``Retry(NoBackoff(), 0)``; see
``test_open_ledger_retry_policy``."""


def _ledger_via(url: str, namespace: str, retry: Retry) -> RedisLedger:
    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=copy.deepcopy(retry),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],  # redis-py 5 retries only these
    )
    return RedisLedger(f"{url}?namespace={namespace}", client, namespace, JOURNAL_MAXLEN)


def _sha(ledger: RedisLedger, op: str) -> bytes:
    """The SHA of a script, whose next reply a test drops: a commit of a held reservation goes to
    ``commit_fast`` (its fast path); a reserve on a counter it creates, to ``reserve`` (the general path:
    the fast one answers ``G``, having written nothing)."""
    return ledger._scripts[op].sha.encode()


def _spent_held(ledger: Any, spec: Any) -> tuple[int, int]:
    [status] = ledger.status([spec])
    return status.spent, status.held


def _events(ledger: Any, res_id: str) -> list[str]:
    return [e.event for e in ledger.history() if e.reservation_id == res_id]


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    ns = _namespace()
    yield ns
    delete_namespace(redis_url, ns)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[LossyProxy]:
    with LossyProxy(*_host_port(redis_url)) as lossy:
        yield lossy


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _snapshot(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """Every key of a namespace with its full content."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=f"bg:{{{namespace}}}:*"):
        kind = client.type(key)
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = client.dump(key)
        out[key] = (kind, value, client.pttl(key) > 0)
    return out


# -- lost replies ----------------------------------------------------------------------------------


def test_open_ledger_retry_policy(redis_url: str) -> None:
    """``Redis.from_url`` does not apply ``redis.Redis``'s default ``Retry``: ``open_ledger`` sets its
    own (3 quick retries), which the idempotent scripts make safe after a lost reply (redis-py's own
    default differs between releases: none in 5, 3 retries in 6.3, 10 in 8)."""
    with open_ledger(f"{redis_url}?namespace={_namespace()}") as ledger:
        assert isinstance(ledger, RedisLedger)
        conn = ledger.client.connection_pool.make_connection()
        try:
            retries = conn.retry._retries  # (redis-py 6 adds get_retries())
        finally:
            conn.disconnect()
    assert retries == 3


def test_lost_reserve_reply_is_retried_and_holds_once(proxy: LossyProxy, namespace: str) -> None:
    ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
    with ledger:
        user, glob = counter("user:lost", limit=1000), counter("global", limit=10_000)
        ledger.status([user])  # connect (and load nothing yet) before arming
        proxy.drop_next_reply(_sha(ledger, "reserve"))
        res = ledger.reserve([Hold(user, 300), Hold(glob, 300)], id="lost-reserve")
        assert proxy.dropped == 1
        assert proxy.connections >= 2
        assert res.id == "lost-reserve"
        assert [(h.amount, h.limit) for h in res.held] == [(300, 1000), (300, 10_000)]
        # The retry saw its own first write: redis-py's retry is invisible except for this flag.
        assert res.duplicate
        assert _spent_held(ledger, user) == (0, 300)  # held ONCE
        assert _spent_held(ledger, glob) == (0, 300)
        again = ledger.reserve([Hold(user, 300), Hold(glob, 300)], id="lost-reserve")
        assert (again.created_at, again.expires_at) == (res.created_at, res.expires_at)
        assert _spent_held(ledger, user) == (0, 300)


def test_lost_commit_reply_is_retried_and_charges_once(proxy: LossyProxy, namespace: str) -> None:
    ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
    with ledger:
        user, glob = counter("user:lost", limit=1000), counter("global", limit=10_000)
        res = ledger.reserve([Hold(user, 300), Hold(glob, 300)], id="lost-commit")
        proxy.drop_next_reply(_sha(ledger, "commit_fast"))
        out = ledger.commit(res, {"usd": 250}, meta={"attempt": 1})
        assert proxy.dropped == 1
        assert (out.state, out.charged, out.overrun, out.expired) == (
            "committed",
            {Unit.USD: 250},
            False,
            False,
        )
        assert _spent_held(ledger, user) == (250, 0)  # charged ONCE
        assert _spent_held(ledger, glob) == (250, 0)
        entries = [e for e in ledger.history() if e.reservation_id == "lost-commit"]
        assert [e.event for e in entries] == ["committed"]
        assert entries[0].amounts == {"usd": 250}


def test_lost_release_reply_is_retried(proxy: LossyProxy, namespace: str) -> None:
    ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
    with ledger:
        user = counter("user:lost", limit=1000)
        res = ledger.reserve([Hold(user, 300)], id="lost-release")
        proxy.drop_next_reply(_sha(ledger, "release"))
        out = ledger.release(res)
        assert proxy.dropped == 1
        assert out.state == "released"
        assert _spent_held(ledger, user) == (0, 0)
        assert _events(ledger, "lost-release") == ["released"]


def test_lost_refusal_reply_is_retried_and_journaled_once(proxy: LossyProxy, namespace: str) -> None:
    ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
    with ledger:
        user = counter("user:lost", limit=100)
        ledger.reserve([Hold(user, 80)], id="blocker")
        proxy.drop_next_reply(_sha(ledger, "reserve"))
        with pytest.raises(BudgetExceededError) as info:
            ledger.reserve([Hold(user, 50)], id="lost-refusal")
        assert proxy.dropped == 1
        assert (info.value.limit, info.value.held) == (to_usd(100), to_usd(80))
        assert _events(ledger, "lost-refusal") == ["refused"]
        assert _spent_held(ledger, user) == (0, 80)


def test_lost_replies_without_retries(proxy: LossyProxy, namespace: str) -> None:
    """No retries: the caller gets LedgerError (cause chained); calling again with the same id
    returns the outcome of the call whose reply was lost, and nothing is held or charged twice."""
    ledger = _ledger_via(proxy.url, namespace, Retry(NoBackoff(), 0))
    with ledger:
        user = counter("user:lost", limit=1000)
        proxy.drop_next_reply(_sha(ledger, "reserve"))
        with pytest.raises(LedgerError) as info:
            ledger.reserve([Hold(user, 300)], id="no-retry")
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        assert proxy.dropped == 1
        assert _spent_held(ledger, user) == (0, 300)  # the lost call did hold
        res = ledger.reserve([Hold(user, 300)], id="no-retry")
        assert res.duplicate
        assert _spent_held(ledger, user) == (0, 300)  # ...once

        proxy.drop_next_reply(_sha(ledger, "commit_fast"))
        with pytest.raises(LedgerError) as info:
            ledger.commit(res, {"usd": 120})
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        assert proxy.dropped == 2
        again = ledger.commit("no-retry", {"usd": 999})  # a different amount: the first one stands
        assert again.duplicate
        assert again.charged == {Unit.USD: 120}
        assert _spent_held(ledger, user) == (120, 0)
        assert _events(ledger, "no-retry") == ["committed"]


def test_open_ledger_survives_a_lost_reply(proxy: LossyProxy, namespace: str) -> None:
    """Whatever ``open_ledger``'s retry policy, a lost reply never holds or charges twice."""
    with open_ledger(f"{proxy.url}?namespace={namespace}") as ledger:
        assert isinstance(ledger, RedisLedger)
        user = counter("user:lost", limit=1000)
        for op, call in [
            ("reserve", lambda: ledger.reserve([Hold(user, 400)], id="via-url")),
            ("commit_fast", lambda: ledger.commit("via-url", {"usd": 350})),
        ]:
            proxy.drop_next_reply(_sha(ledger, op))
            with contextlib.suppress(LedgerError):
                call()
            assert proxy.dropped >= 1
            assert not proxy.armed
            call()  # the repeat (or the only call, if redis-py retried) returns the first outcome
        assert _spent_held(ledger, user) == (350, 0)
        assert _events(ledger, "via-url") == ["committed"]


def _guard_via(proxy: LossyProxy, namespace: str, events: list[Event]) -> tuple[Guard, Callable[[], Any]]:
    """A guard on ``open_ledger``'s Redis client through the proxy, $0.0008 a day per user, alerting
    at 50%; and a call that costs $0.00045 (gpt-4o-mini, 1,000 tokens in, 500 out): 56% of it."""
    guard = Guard(
        f"{proxy.url}?namespace={namespace}",
        budgets=[Budget("user", usd="0.0008", per="day")],
        thresholds=["0.5"],
        on_event=events.append,
    )

    @guard.with_budget(user="alice")
    def call(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    return guard, lambda: call(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=500
    )


def test_a_lost_commit_reply_still_fires_its_threshold_once(proxy: LossyProxy, namespace: str) -> None:
    """The commit that crosses a threshold loses its reply; redis-py's retry gets the repeat's answer,
    which carries the spent totals of the first commit: the threshold event fires, once."""
    events: list[Event] = []
    guard, ask = _guard_via(proxy, namespace, events)
    try:
        ledger = guard.ledger
        assert isinstance(ledger, RedisLedger)
        proxy.drop_next_reply(_sha(ledger, "commit_fast"))
        ask()
        assert proxy.dropped == 1
        ask()  # past 50% already: no second event
        [event] = [e for e in events if e.kind == "threshold"]
        assert (event.data["threshold"], event.data["spent"], event.data["limit"]) == (
            "50%",
            450_000,
            800_000,
        )
        assert [e.kind for e in events].count("committed") == 2
        [status] = ledger.status([guard.counters_for([Scope("user", "alice")])[0]])
        assert status.spent == 900_000  # each call charged once
    finally:
        guard.close()


# -- NOSCRIPT ---------------------------------------------------------------------------------------


def test_script_flush_is_transparent(redis_url: str, namespace: str, raw: redis.Redis) -> None:
    with open_ledger(f"{redis_url}?namespace={namespace}") as ledger:
        assert isinstance(ledger, RedisLedger)
        user, glob = counter("user:flush", limit=1000), counter("global", limit=5000)
        steps: list[Callable[[], Any]] = [
            lambda: ledger.reserve([Hold(user, 400), Hold(glob, 400)], id="f1"),
            lambda: ledger.commit("f1", {"usd": 300}),
            lambda: ledger.commit("f1", {"usd": 300}),  # duplicate
            lambda: ledger.reserve([Hold(user, 200)], id="f2"),
            lambda: ledger.release("f2"),
            lambda: ledger.set_limit(user, 350),
            lambda: ledger.reserve([Hold(user, 100)], id="f3"),  # refused: 300 + 100 > 350
            lambda: ledger.clear_limit(user),
            lambda: ledger.status([user, glob]),
        ]
        results = []
        for step in steps:
            raw.script_flush()
            assert not any(raw.script_exists(*(s.sha for s in ledger._scripts.values())))
            try:
                results.append(step())
            except BudgetExceededError as exc:
                results.append(exc)
        assert results[0].id == "f1"
        assert results[1].charged == {Unit.USD: 300}
        assert not results[1].duplicate
        assert results[2].duplicate
        assert results[4].state == "released"
        assert isinstance(results[6], BudgetExceededError)
        assert [(s.spent, s.held, s.limit) for s in results[8]] == [(300, 0, 1000), (300, 0, 5000)]
        assert [e.event for e in ledger.history()] == ["committed", "released", "refused"]


async def test_script_flush_is_transparent_async(redis_url: str, namespace: str, raw: redis.Redis) -> None:
    ledger = open_async_ledger(f"{redis_url}?namespace={namespace}")
    try:
        user = counter("user:flush", limit=1000)
        raw.script_flush()
        res = await ledger.reserve([Hold(user, 400)])
        raw.script_flush()
        out = await ledger.commit(res, {"usd": 300})
        raw.script_flush()
        [status] = await ledger.status([user])
        assert out.charged == {Unit.USD: 300}
        assert (status.spent, status.held) == (300, 0)
    finally:
        await ledger.aclose()


def test_script_flush_on_the_cluster(cluster_url: str) -> None:
    ns = _namespace()
    ledger = open_ledger(f"{cluster_url}?namespace={ns}")
    try:
        assert isinstance(ledger, RedisLedger)
        client = ledger.client
        try:
            user = counter("user:flush", limit=1000)
            shas = [s.sha for s in ledger._scripts.values()]

            def flush_every_node() -> None:
                for node in client.get_nodes():
                    node.redis_connection.script_flush()
                    assert node.redis_connection.script_exists(*shas) == [False] * len(shas)

            flush_every_node()
            res = ledger.reserve([Hold(user, 400)])
            flush_every_node()
            ledger.commit(res, {"usd": 300})
            flush_every_node()
            assert _spent_held(ledger, user) == (300, 0)
        finally:
            for key in client.scan_iter(match=f"bg:{{{ns}}}:*", target_nodes=redis.RedisCluster.ALL_NODES):
                client.delete(key)
    finally:
        close_ledger(ledger)


# -- Redis down -------------------------------------------------------------------------------------

_FAST = "socket_connect_timeout=0.5&socket_timeout=0.5"


def test_url_timeouts_reach_redis_py() -> None:
    with open_ledger(f"redis://127.0.0.1:{_free_port()}/0?{_FAST}&namespace=x") as ledger:
        assert isinstance(ledger, RedisLedger)
        kwargs = ledger.client.connection_pool.connection_kwargs
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (0.5, 0.5)
        assert "namespace" not in kwargs
        assert ledger.namespace == "x"


def test_closed_port_raises_ledger_error_quickly() -> None:
    spec = counter(limit=1000)
    with open_ledger(f"redis://127.0.0.1:{_free_port()}/0?{_FAST}") as ledger:
        for call in (
            lambda: ledger.reserve([Hold(spec, 1)]),
            lambda: ledger.commit("some-id", {"usd": 1}),
            lambda: ledger.release("some-id"),
            lambda: ledger.status([spec]),
            lambda: ledger.get_limit(spec),
            lambda: ledger.history(),
        ):
            started = time.monotonic()
            with pytest.raises(LedgerError) as info:
                call()
            assert time.monotonic() - started < 3
            assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_silent_server_times_out_into_ledger_error() -> None:
    """A server that accepts the connection and never answers: the URL's socket_timeout bounds the wait."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
        port = silent.getsockname()[1]
        with open_ledger(f"redis://127.0.0.1:{port}/0?{_FAST}") as ledger:
            started = time.monotonic()
            with pytest.raises(LedgerError) as info:
                ledger.reserve([Hold(counter(), 1)])
            elapsed = time.monotonic() - started
    assert isinstance(info.value.__cause__, redis.TimeoutError | redis.ConnectionError)
    assert 0.4 < elapsed < 3


async def test_closed_port_async() -> None:
    ledger = open_async_ledger(f"redis://127.0.0.1:{_free_port()}/0?{_FAST}")
    try:
        started = time.monotonic()
        with pytest.raises(LedgerError) as info:
            await ledger.reserve([Hold(counter(), 1)])
        assert time.monotonic() - started < 3
        assert isinstance(info.value.__cause__, redis.ConnectionError)
    finally:
        await ledger.aclose()


def test_unreachable_cluster_raises_ledger_error() -> None:
    started = time.monotonic()
    with pytest.raises(LedgerError) as info:  # noqa: PT012 - either step may be the one to fail
        ledger = open_ledger(f"redis+cluster://127.0.0.1:{_free_port()}?{_FAST}")
        try:
            ledger.reserve([Hold(counter(), 1)])
        finally:
            ledger.close()
    assert time.monotonic() - started < 5
    assert info.value.__cause__ is not None


async def test_unreachable_cluster_raises_ledger_error_async() -> None:
    ledger = open_async_ledger(f"redis+cluster://127.0.0.1:{_free_port()}?{_FAST}")
    try:
        with pytest.raises(LedgerError) as info:
            await ledger.reserve([Hold(counter(), 1)])
    finally:
        await ledger.aclose()
    assert info.value.__cause__ is not None


# -- one deadline per operation ----------------------------------------------------------------------
# A hung server (accepts, never answers): redis-py's retries used to stack its timeouts (8.3 s for a
# call at the default 2 s timeout, 2.3 s at 0.5 s). Each operation now ends by one deadline. The
# bounds below are 3x the deadline: the old behaviour took 16x with these settings.

_HUNG = "socket_timeout=2&socket_connect_timeout=2&deadline=0.5"
_DEADLINE = 0.5


def _ledger_ops(ledger: Any, spec: Any) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("reserve", lambda: ledger.reserve([Hold(spec, 1)])),
        ("commit", lambda: ledger.commit("some-id", {"usd": 1})),  # two calls: the record, then the script
        ("release", lambda: ledger.release("some-id")),
        ("status", lambda: ledger.status([spec])),
        ("set_limit", lambda: ledger.set_limit(spec, 5)),
        ("get_limit", lambda: ledger.get_limit(spec)),
        ("history", lambda: ledger.history()),
    ]


def test_a_hung_server_fails_each_operation_within_its_deadline() -> None:
    spec = counter(limit=1000)
    with SilentServer() as silent, open_ledger(f"{silent.url}?{_HUNG}") as ledger:
        assert isinstance(ledger, RedisLedger)
        assert ledger.deadline == _DEADLINE
        for name, call in _ledger_ops(ledger, spec):
            started = time.monotonic()
            with pytest.raises(LedgerError, match="deadline") as info:
                call()
            assert time.monotonic() - started < 3 * _DEADLINE, name
            assert isinstance(info.value.__cause__, redis.TimeoutError), name


def test_the_default_deadline_is_one_and_a_half_socket_timeouts() -> None:
    with SilentServer() as silent, open_ledger(f"{silent.url}?socket_timeout=1") as ledger:
        started = time.monotonic()
        with pytest.raises(LedgerError) as info:
            ledger.reserve([Hold(counter(), 1)])
        assert time.monotonic() - started < 2 * 1.5  # it took 4 timeouts and the backoff (4.1 s)
        assert isinstance(info.value.__cause__, redis.TimeoutError)
        assert isinstance(ledger, RedisLedger)
        assert ledger.deadline == 1.5


async def test_a_hung_server_fails_each_async_operation_within_its_deadline() -> None:
    spec = counter(limit=1000)
    with SilentServer() as silent:
        ledger = open_async_ledger(f"{silent.url}?{_HUNG}")
        try:
            for name, call in _ledger_ops(ledger, spec):
                started = time.monotonic()
                with pytest.raises(LedgerError, match="deadline"):
                    await call()
                assert time.monotonic() - started < 3 * _DEADLINE, name
        finally:
            await ledger.aclose()


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_deadline_is_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="deadline"):
        open_ledger(f"redis://127.0.0.1:{_free_port()}/0?deadline={bad}")


def _hung_guard(silent: SilentServer, mode: str, events: list[Event]) -> Guard:
    return Guard(
        f"{silent.url}?{_HUNG}",
        budgets=[Budget("user", usd="1", per="day")],
        on_store_error=mode,  # type: ignore[arg-type]
        on_event=events.append,
    )


_ASK = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100}
_USAGE = {"usage": {"prompt_tokens": 10, "completion_tokens": 20}}


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_a_guarded_call_on_a_hung_store_is_decided_at_the_deadline(mode: str) -> None:
    events: list[Event] = []
    calls: list[str] = []
    with SilentServer() as silent:
        guard = _hung_guard(silent, mode, events)

        @guard.with_budget(user="alice")
        def ask(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
            calls.append(model)
            return _USAGE

        try:
            started = time.monotonic()
            if mode == "fail_open":
                assert ask(**_ASK) == _USAGE  # goes on, and says so
            else:
                with pytest.raises(LedgerError, match="deadline"):
                    ask(**_ASK)
            elapsed = time.monotonic() - started
        finally:
            guard.close()
    assert elapsed < 3 * _DEADLINE
    kinds = [e.kind for e in events]
    if mode == "fail_open":
        assert (calls, kinds) == (["gpt-4o-mini"], ["store_unavailable", "spend_lost"])
        assert "deadline" in (events[0].reason or "")
    else:
        assert (calls, kinds) == ([], ["store_unavailable"])


async def test_an_async_guarded_call_on_a_hung_store_goes_on_at_the_deadline() -> None:
    events: list[Event] = []
    with SilentServer() as silent:
        guard = _hung_guard(silent, "fail_open", events)

        @guard.with_budget(user="alice")
        async def ask(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
            return _USAGE

        try:
            started = time.monotonic()
            assert await ask(**_ASK) == _USAGE
            elapsed = time.monotonic() - started
        finally:
            guard.close()
            store = guard.async_ledger
            if isinstance(store, AsyncLedger):
                await store.aclose()
    assert elapsed < 3 * _DEADLINE
    assert [e.kind for e in events] == ["store_unavailable", "spend_lost"]


def test_a_lost_reply_is_still_retried_within_a_short_deadline(proxy: LossyProxy, namespace: str) -> None:
    """A lost reply's connection error is immediate: the retry runs within the deadline and finds the
    first write (idempotency by id), rather than giving up."""
    with open_ledger(f"{proxy.url}?namespace={namespace}&{_HUNG}") as ledger:
        assert isinstance(ledger, RedisLedger)
        user = counter("user:lost", limit=1000)
        res = ledger.reserve([Hold(user, 300)])
        proxy.drop_next_reply(_sha(ledger, "commit_fast"))
        out = ledger.commit(res, {"usd": 250})
        assert proxy.dropped == 1
        assert (out.duplicate, out.charged, out.spent) == (True, {Unit.USD: 250}, (250,))
        assert _spent_held(ledger, user) == (250, 0)


def test_a_connection_cut_at_the_deadline_is_never_reused(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    """The server answers after the deadline (CLIENT PAUSE): the late reply must not be read as the
    answer to the client's next command."""
    with open_ledger(f"{redis_url}?namespace={namespace}&socket_timeout=2&deadline=0.2") as ledger:
        user = counter("user:paused", limit=1000)
        ledger.commit(ledger.reserve([Hold(user, 100)]), {"usd": 40})
        raw.client_pause(600)  # every client's commands wait 0.6 s
        with pytest.raises(LedgerError, match="deadline"):
            ledger.reserve([Hold(user, 300)], id="paused")
        time.sleep(0.7)
        assert _spent_held(ledger, user)[0] == 40  # its own reply: a status
        res = ledger.reserve([Hold(user, 300)], id="paused")  # new, or the cut call's write
        assert ledger.commit(res, {"usd": 60}).spent == (100,)
        assert _spent_held(ledger, user) == (100, 0)


async def test_an_async_command_cut_at_the_deadline_is_never_reused(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    ledger = open_async_ledger(f"{redis_url}?namespace={namespace}&socket_timeout=2&deadline=0.2")
    try:
        user = counter("user:paused", limit=1000)
        await ledger.commit(await ledger.reserve([Hold(user, 100)]), {"usd": 40})
        raw.client_pause(600)
        with pytest.raises(LedgerError, match="deadline"):
            await ledger.reserve([Hold(user, 300)], id="paused")
        time.sleep(0.7)
        [status] = await ledger.status([user])
        assert status.spent == 40
        res = await ledger.reserve([Hold(user, 300)], id="paused")
        assert (await ledger.commit(res, {"usd": 60})).spent == (100,)
    finally:
        await ledger.aclose()


def _recovers(step: Callable[[], object], tries: int = 50) -> None:
    """``step`` succeeds once the stopped node runs again: each try has the store's short deadline, and a
    node just continued (on a loaded machine) may need more than one to answer, so a few tries, not a
    time limit."""
    for left in range(tries, 0, -1):
        try:
            step()
            return
        except LedgerError:
            if left == 1:
                raise
            time.sleep(0.1)


def test_a_hung_cluster_node_fails_within_the_deadline(cluster_url: str) -> None:
    """A cluster node stopped (SIGSTOP) under a connected client: one deadline too (9.7 s before)."""
    probe = redis.RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
    try:  # a namespace on another node than the one the URL names
        seed = int(urlsplit(cluster_url).port or 0)
        ns = next(f"h{i}" for i in range(1000) if probe.get_node_from_key(f"{{h{i}}}").port != seed)
        node = probe.get_node_from_key(f"{{{ns}}}")
        pid = int(probe.execute_command("INFO", "server", target_nodes=node)["process_id"])
    finally:
        close_cluster_client(probe)
    ledger = open_ledger(f"{cluster_url}?namespace={ns}&{_HUNG}")
    try:
        spec = counter(limit=1000)
        ledger.status([spec])  # connected to the node
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(LedgerError, match="deadline"):
                ledger.reserve([Hold(spec, 1)])
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert elapsed < 3 * _DEADLINE
        _recovers(lambda: ledger.release(ledger.reserve([Hold(spec, 1)])))  # the node is back
    finally:
        close_ledger(ledger)


# -- invalid input reaching the scripts -------------------------------------------------------------

BAD_INTS = ["-5", "1.5", "99999999999999999999", "9223372036854775808", "", "+5", " 5", "5 ", "1e3", "0x10",
            "05", "abc", "5\n", "nan", "inf"]  # fmt: skip


def _reserve_call(ledger: RedisLedger, holds: list[Hold], res_id: str) -> tuple[list[str], list[Any]]:
    flow = ledger._flows.reserve(tuple(holds), 60_000, res_id, "{}", True)
    call = next(flow)
    flow.close()
    assert call.op == "reserve_fast"  # (the general path, reserve, takes the same keys and arguments)
    return list(call.keys), list(call.args)


@pytest.fixture
def redis_ledger(redis_url: str, namespace: str) -> Iterator[RedisLedger]:
    with open_ledger(f"{redis_url}?namespace={namespace}") as store:
        assert isinstance(store, RedisLedger)
        yield store


def _mutated(args: list[Any], index: int, field: int | None, bad: str) -> list[Any]:
    """``args`` with argument ``index`` (or, ``field`` given, that field of a packed argument) = ``bad``."""
    out = list(args)
    if field is None:
        out[index] = bad
    else:
        parts = str(out[index]).split(",")
        parts[field] = bad
        out[index] = ",".join(parts)
    return out


def _expect_invalid(ledger: RedisLedger, op: str, keys: list[str], args: list[Any]) -> None:
    """The general path refuses the call, and so does the fast path: it answers ``G`` (the general path
    then says why); neither writes anything."""
    before = _snapshot(ledger.client, ledger.namespace)
    with pytest.raises(redis.ResponseError, match="BGINVALID"):
        ledger._scripts[op](keys=keys, args=args)
    assert _snapshot(ledger.client, ledger.namespace) == before
    fast = {"reserve": "reserve_fast", "commit": "commit_fast"}.get(op)
    if fast is not None:
        assert ledger._scripts[fast](keys=keys, args=args) == ["G"]
        assert _snapshot(ledger.client, ledger.namespace) == before


@pytest.mark.parametrize("bad", BAD_INTS)
def test_scripts_refuse_bad_integers_before_writing(redis_ledger: RedisLedger, bad: str) -> None:
    ledger = redis_ledger
    user, glob = counter("user:lua", limit=1000), counter("global", limit=10_000)
    ledger.commit(ledger.reserve([Hold(user, 100), Hold(glob, 100)], id="seed"), {"usd": 40})
    held = ledger.reserve([Hold(user, 100), Hold(glob, 100)], id="open")
    ledger.set_limit(glob, 20_000)
    assert ledger.client.dbsize() > 0

    keys, args = _reserve_call(ledger, [Hold(user, 5), Hold(glob, 5)], "bad-reserve")
    first, second = 8, 8 + 1  # ARGV offsets of each hold's packed fields (lua/_reserve.lua: 8 header args)
    # packed hold fields: amount, default limit, window start, window end, expiry
    for index, field in [(first, 0), (second, 0), (first, 1), (second, 1), (first, 2), (first, 3),
                         (first, 4), (1, None), (2, None), (3, None)]:  # fmt: skip
        if bad == "" and field in (3, 4):
            continue  # '' means "no window end" / "no expiry" there
        _expect_invalid(ledger, "reserve", keys, _mutated(args, index, field, bad))

    flow = ledger._flows.resolve(held, {"usd": 5}, "{}")
    call = next(flow)
    flow.close()
    assert call.op == "commit_fast"  # (the general path, commit, takes the same keys and arguments)
    # each counter's charge and expiry, retention, maxlen ('' is "no expiry": a total's counter)
    for index, field in [(6, 0), (7, 0), (6, 1), (7, 1), (1, None), (2, None)]:
        if bad == "" and field == 1:
            continue
        _expect_invalid(ledger, "commit", list(call.keys), _mutated(list(call.args), index, field, bad))

    if bad != "":  # '' clears the override
        limit_args = [ledger._flows.keys.limit_field(user), bad]
        _expect_invalid(ledger, "set_limit", [ledger._flows.keys.limits], limit_args)

    # nothing above reached the counters or the journal
    assert [(s.spent, s.held) for s in ledger.status([user, glob])] == [(40, 100), (40, 100)]
    assert [e.event for e in ledger.history()] == ["committed"]
    assert ledger.get_limit(user) is None
    assert ledger.client.exists(ledger._flows.keys.record("bad-reserve")) == 0


def test_scripts_refuse_bad_arity(redis_ledger: RedisLedger) -> None:
    ledger = redis_ledger
    user = counter("user:lua", limit=1000)
    keys, args = _reserve_call(ledger, [Hold(user, 5)], "bad-arity")
    for k, a in [
        (keys, [*args[:6], "2", *args[7:]]),
        (keys[:-1], args),
        (keys, args[:-1]),
        (keys, [*args, args[-1]]),
        (keys, [*args[:6], "x"]),
    ]:
        _expect_invalid(ledger, "reserve", k, a)
    assert ledger.client.exists(ledger._flows.keys.record("bad-arity")) == 0


# -- hash slots and key names -----------------------------------------------------------------------


def _exercise(ledger: Any, specs: list[Any]) -> None:
    """Touch every kind of key a namespace can have: records, counters, leases, limits, journal."""
    res = ledger.reserve([Hold(s, 10) for s in specs], id="k-commit")
    ledger.commit(res, {"usd": 7, "tokens": 7, "requests": 1})
    ledger.release(ledger.reserve([Hold(s, 5) for s in specs], id="k-release"))
    ledger.set_limit(specs[0], 12)
    with pytest.raises(BudgetExceededError):
        ledger.reserve([Hold(specs[0], 10)], id="k-refused")
    ledger.reserve([Hold(s, 1) for s in specs], id="k-open")
    crashed = ledger.reserve([Hold(specs[-1], 1)], id="k-crash", lease=0.05)
    time.sleep(0.1)
    assert crashed.id == "k-crash"
    ledger.status(specs)  # reclaims the expired lease (journal 'expired')


def test_cluster_keys_of_a_namespace_share_one_slot(cluster_url: str) -> None:
    specs = [
        counter("user:alice", limit=1000),
        counter("team:{other}", limit=1000, unit=Unit.TOKENS, period=Period.MONTH),
        counter("global", limit=1000, unit=Unit.REQUESTS, period=Period.TOTAL),
    ]
    # namespaces whose slots live on different nodes (each script runs on one node, whichever it is)
    nodes_seen: set[str] = set()
    namespaces: list[str] = []
    probe = redis.RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
    try:
        for i in range(200):
            ns = f"slot{i}"
            node = probe.get_node_from_key(f"{{{ns}}}")
            if node.name not in nodes_seen:
                nodes_seen.add(node.name)
                namespaces.append(ns)
        assert len(namespaces) == 3
        for ns in namespaces:
            ledger = open_ledger(f"{cluster_url}?namespace={ns}")
            try:
                _exercise(ledger, specs)
            finally:
                close_ledger(ledger)
            keys = list(probe.scan_iter(match=f"bg:{{{ns}}}:*", target_nodes=redis.RedisCluster.ALL_NODES))
            try:
                names = {k.decode() for k in keys}
                assert {f"bg:{{{ns}}}:limits", f"bg:{{{ns}}}:journal", f"bg:{{{ns}}}:r:k-commit"} <= names
                assert sum(":c:" in k for k in names) == 2 * len(specs)  # counter hash + lease set each
                expected = probe.keyslot(f"{{{ns}}}")
                assert {probe.keyslot(k) for k in keys} == {expected}
                # the servers agree (CLUSTER KEYSLOT is computed by Redis, not redis-py)
                node = probe.get_node_from_key(f"{{{ns}}}")
                server_slots = {probe.execute_command("CLUSTER KEYSLOT", k, target_nodes=node) for k in keys}
                assert server_slots == {expected}
            finally:
                for key in keys:
                    probe.delete(key)
    finally:
        close_cluster_client(probe)


KEY = re.compile(
    r"bg:\{(?P<ns>[A-Za-z0-9_.-]+)\}:(limits|journal|r:[A-Za-z0-9_.:-]{1,128}|c:[A-Za-z0-9_-]{24}:\d+(:l)?)"
)


def test_hostile_scope_ids_never_reach_key_names(redis_ledger: RedisLedger, raw: redis.Redis) -> None:
    ledger = redis_ledger
    hostile = list(
        dict.fromkeys([":", "{", "}", "*", "\n", "x" * 10_000, "{evil}", "a}b{c", "*:*", *HOSTILE_IDS])
    )
    before = set(raw.scan_iter(match="*"))
    specs = [counter(f"user:{ident}", limit=10**6) for ident in hostile]
    specs += [counter(f"team:{ident}", limit=10**6, unit=Unit.TOKENS) for ident in hostile[:6]]
    for i, spec in enumerate(specs):
        res = ledger.reserve([Hold(spec, 10), Hold(counter("global", limit=10**9), 10)], id=f"h{i}")
        if i % 2:
            ledger.commit(res, {"usd": 3, "tokens": 3})
        ledger.set_limit(spec, 10**6 + i)
    _exercise(ledger, [counter("user:{x}\n*", limit=100)])
    created = set(raw.scan_iter(match="*")) - before
    prefix = f"bg:{{{ledger.namespace}}}:"
    assert created
    for key in created:
        assert key.startswith(prefix), key
        match = KEY.fullmatch(key)
        assert match is not None, key
        assert match["ns"] == ledger.namespace, key
        assert len(key) < 200
        for ident in hostile:
            if len(ident) >= 3:
                assert ident not in key
        assert not any(ch in key[len(prefix) :] for ch in "{}*\n\x00 ")
    # every scope got its own counter: distinct ids never share a key
    counters = {k for k in created if ":c:" in k and not k.endswith(":l")}
    assert len(counters) == len(specs) + 2  # + global + the exercise's scope
    statuses = ledger.status(specs)
    assert [s.spent for s in statuses] == [3 if i % 2 else 0 for i in range(len(specs))]
    assert [s.limit for s in statuses] == [10**6 + i for i in range(len(specs))]
    assert set(raw.hkeys(prefix + "limits")) <= {ledger._flows.keys.limit_field(s) for s in specs} | {
        ledger._flows.keys.limit_field(counter("user:{x}\n*", limit=100))
    }


def test_hostile_namespace_is_refused(redis_url: str) -> None:
    for bad in ["a}b", "{x}", "a:b", "*", " ", "x" * 65, "line\nbreak"]:
        with pytest.raises(ValueError, match="namespace"):
            open_ledger(redis_url, namespace=bad)


def test_lost_adjust_reply_is_retried_and_reported_as_applied(
    proxy: LossyProxy, namespace: str, raw: redis.Redis
) -> None:
    """redis-py's retry of a credit whose reply was lost finds the credit's record: with an id this call
    generated, that is the credit applied (once), never 'already credited; nothing changed' (an operator
    told that credits again)."""
    ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
    with ledger:
        user = counter("user:lost", limit=1000, period=Period.MONTH)
        ledger.commit(ledger.reserve([Hold(user, 500)]), {"usd": 500})
        proxy.drop_next_reply(_sha(ledger, "adjust"))
        done = ledger.adjust(user, -200, actor="ops", reason="refund")
        assert proxy.dropped == 1
        assert (done.change, done.spent, done.duplicate) == (-200, 300, False)
        assert _spent_held(ledger, user) == (300, 0)  # credited ONCE
        proxy.drop_next_reply(_sha(ledger, "adjust"))
        given = ledger.adjust(user, -100, id="ticket-9", actor="ops", reason="refund")
        assert proxy.dropped == 2
        assert given.duplicate  # an id the caller gave: its repeat is one, whoever sent it
        assert _spent_held(ledger, user) == (200, 0)
        # the id is remembered as long as the month's counter is kept, not the 15 minutes of a reservation
        record_ttl = raw.pttl(f"bg:{{{namespace}}}:r:@ticket-9")
        [counter_key] = [k for k in raw.scan_iter(match=f"bg:{{{namespace}}}:c:*") if raw.type(k) == "hash"]
        assert abs(record_ttl - raw.pttl(counter_key)) < 60_000
        assert record_ttl > 86_400_000


def test_lost_limit_change_replies_are_retried_and_journaled_once(proxy: LossyProxy, namespace: str) -> None:
    """raise_limit and set_limits after a lost reply: redis-py's retry finds the call's record, so the
    raise is not replaced by a second one and the journal holds one entry each."""
    ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
    with ledger:
        user = counter("user:lost", limit=1000)
        ledger.status([user])
        proxy.drop_next_reply(_sha(ledger, "raise_limit"))
        raised = ledger.raise_limit(user, 500, until=timedelta(hours=1), actor="ops", reason="launch")
        assert proxy.dropped == 1
        assert (raised.limit, raised.base) == (1500, None)
        proxy.drop_next_reply(_sha(ledger, "set_limits"))
        ledger.set_limits({user: 700}, actor="ops", reason="plan")
        assert proxy.dropped == 2
        assert ledger.get_limit(user) == 700
        events = [e.event for e in ledger.history()]
        assert events == ["limit_raised", "limits_set"]

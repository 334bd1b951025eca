"""Group commit on the Redis stores (``_redis_batch.py``): concurrent callers of one store share round
trips, and each gets exactly what it would have got alone; totals stay exact to the nano-USD."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from budgetguard import BudgetExceededError, LedgerError
from budgetguard._ledger import AsyncLedger, Hold, Outcome, Reservation, open_async_ledger, open_ledger
from budgetguard._ledger._redis import AsyncRedisLedger, RedisLedger
from budgetguard._ledger._redis_batch import AsyncBatcher, Batcher
from budgetguard._ledger._redis_flows import Call
from tests.redis_server import delete_namespace

from .helpers import counter
from .proxy import LossyProxy, SilentServer
from .test_redis_faults import _DEADLINE, _HUNG, REDIS_DEFAULT_RETRY, _host_port, _ledger_via, _sha

THREADS = 32
PAIRS = 12


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    ns = "b" + secrets.token_hex(6)
    yield ns
    delete_namespace(redis_url, ns)


@pytest.fixture
def store(redis_url: str, namespace: str) -> Iterator[RedisLedger]:
    with open_ledger(f"{redis_url}?namespace={namespace}") as ledger:
        assert isinstance(ledger, RedisLedger)
        yield ledger


def _record_batches(batch: Any) -> Counter[int]:
    """Counts the round trips of ``batch`` (a store's ``Batcher`` or ``AsyncBatcher``) by size."""
    sizes: Counter[int] = Counter()
    exchange = batch._exchange

    def counted(slots: list[Any], replies: list[Any]) -> Any:
        sizes[len(slots)] += 1
        return exchange(slots, replies)

    batch._exchange = counted
    return sizes


def _in_threads(work: Callable[[int], Any], threads: int = THREADS) -> list[Any]:
    """``work(i)`` in ``threads`` threads released together: each one's result or exception."""
    barrier = threading.Barrier(threads)
    out: list[Any] = [None] * threads

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = work(i)
        except BaseException as exc:  # checked by the test
            out[i] = exc

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return out


def _amount(i: int, j: int) -> int:
    return 1_000_003 * (i + 1) + 7 * j  # distinct per caller and pair: a mixed-up reply would show


def _everyone() -> int:
    return sum(_amount(i, j) for i in range(THREADS) for j in range(PAIRS))


def test_threads_share_round_trips_and_each_gets_its_own_result(store: RedisLedger) -> None:
    shared = counter("global", limit=10**15)
    sizes = _record_batches(store._batch)

    def pairs(i: int) -> list[tuple[Reservation, Outcome]]:
        own = counter(f"user:u{i}", limit=10**15)
        out = []
        for j in range(PAIRS):
            amount = 2 * _amount(i, j)
            res = store.reserve([Hold(own, amount), Hold(shared, amount)], id=f"r{i}-{j}")
            out.append((res, store.commit(res, {"usd": _amount(i, j)})))
        return out

    results = _in_threads(pairs)
    for i, pairs_of_i in enumerate(results):
        assert not isinstance(pairs_of_i, BaseException), pairs_of_i
        for j, (res, outcome) in enumerate(pairs_of_i):
            assert res.id == outcome.id == f"r{i}-{j}"
            assert [h.amount for h in res.held] == [2 * _amount(i, j)] * 2
            assert not res.duplicate and not outcome.duplicate
            assert outcome.state == "committed"
            assert dict(outcome.charged) == {"usd": _amount(i, j)}
    assert max(sizes) > 1, sizes  # calls did share round trips
    total = sum(_amount(i, j) for i in range(THREADS) for j in range(PAIRS))
    [status] = store.status([shared])
    assert (status.spent, status.held) == (total, 0)
    for i in range(THREADS):
        [own] = store.status([counter(f"user:u{i}", limit=10**15)])
        assert (own.spent, own.held) == (sum(_amount(i, j) for j in range(PAIRS)), 0)
    assert Counter(e.event for e in store.history()) == {"committed": THREADS * PAIRS}


def test_a_racing_crowd_gets_exactly_the_budget(store: RedisLedger) -> None:
    """32 threads, 5 reservations each, on a budget for 70 of them: exactly 70 are admitted."""
    budget = counter("team:race", limit=70 * 1_000)

    def tries(i: int) -> list[bool]:
        out = []
        for j in range(5):
            try:
                store.reserve([Hold(budget, 1_000)], id=f"race-{i}-{j}")
                out.append(True)
            except BudgetExceededError:
                out.append(False)
        return out

    results = _in_threads(tries)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sum(sum(r) for r in results) == 70
    [status] = store.status([budget])
    assert (status.spent, status.held) == (0, 70 * 1_000)


def test_an_error_reply_stays_with_its_caller(store: RedisLedger) -> None:
    """Half the threads send a call the script refuses (BGINVALID): each of them gets that error,
    the other half their own results, in the same round trips."""
    user = counter("user:mixed", limit=10**15)
    field = store._flows.keys.limit_field(user)
    bad = Call("set_limit", (store._flows.keys.limits,), (field, "12x"))

    def work(i: int) -> Any:
        out = []
        for j in range(PAIRS):
            if i % 2:
                with pytest.raises(redis.ResponseError, match="BGINVALID"):
                    store._send(bad)
                out.append(None)
            else:
                res = store.reserve([Hold(user, _amount(i, j))], id=f"m{i}-{j}")
                out.append(store.commit(res, {"usd": _amount(i, j)}).charged["usd"])
        return out

    results = _in_threads(work)
    for i, result in enumerate(results):
        assert not isinstance(result, BaseException), result
        assert result == ([None] * PAIRS if i % 2 else [_amount(i, j) for j in range(PAIRS)])
    [status] = store.status([user])
    expected = sum(_amount(i, j) for i in range(0, THREADS, 2) for j in range(PAIRS))
    assert (status.spent, status.held) == (expected, 0)
    assert store.get_limit(user) is None


def test_a_reply_lost_mid_batch_fails_no_one_and_charges_once(redis_url: str, namespace: str) -> None:
    """The connection dies with a batch's replies in flight: the callers in it retry (idempotent by
    reservation id), no one else notices, nothing is held or charged twice."""
    with LossyProxy(*_host_port(redis_url)) as proxy:
        ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
        with ledger:
            shared = counter("global", limit=10**15)
            ledger.status([shared])  # connect, load
            sizes = _record_batches(ledger._batch)
            armed = threading.Event()

            def pairs(i: int) -> list[Outcome]:
                out = []
                for j in range(PAIRS):
                    if i == 0 and j == PAIRS // 2:
                        proxy.drop_next_reply(_sha(ledger, "commit_fast"))
                        armed.set()
                    res = ledger.reserve([Hold(shared, _amount(i, j))], id=f"k{i}-{j}")
                    out.append(ledger.commit(res, {"usd": _amount(i, j)}))
                return out

            results = _in_threads(pairs, 16)
            assert armed.is_set() and proxy.dropped == 1
            assert max(sizes) > 1, sizes
            for i, outcomes in enumerate(results):
                assert not isinstance(outcomes, BaseException), outcomes
                assert [o.charged["usd"] for o in outcomes] == [_amount(i, j) for j in range(PAIRS)]
            [status] = ledger.status([shared])
            total = sum(_amount(i, j) for i in range(16) for j in range(PAIRS))
            assert (status.spent, status.held) == (total, 0)
            assert Counter(e.event for e in ledger.history()) == {"committed": 16 * PAIRS}


def test_killed_connections_mid_batch_charge_nothing_twice(store: RedisLedger, redis_url: str) -> None:
    """The server kills the store's connection again and again while 32 threads run pairs: a caller
    may fail (its retries also hit a killed connection) but with a ``LedgerError`` only; repeating
    its operation settles it, and the totals are exact."""
    shared = counter("global", limit=10**15)
    store.status([shared])
    stop = threading.Event()
    killer = redis.Redis.from_url(redis_url)
    killed = 0

    def kill() -> None:
        nonlocal killed
        while not stop.is_set():
            killed += killer.client_kill_filter(_type="normal", skipme=True)
            stop.wait(0.01)

    def pairs(i: int) -> list[Any]:
        out: list[Any] = []
        for j in range(PAIRS):
            try:
                res = store.reserve([Hold(shared, _amount(i, j))], id=f"x{i}-{j}")
                out.append(store.commit(res, {"usd": _amount(i, j)}))
            except LedgerError as exc:
                out.append(exc)
        return out

    thread = threading.Thread(target=kill)
    thread.start()
    try:
        results = _in_threads(pairs)
    finally:
        stop.set()
        thread.join()
        killer.close()
    assert killed > 0
    for i, outcomes in enumerate(results):
        assert not isinstance(outcomes, BaseException) or isinstance(outcomes, LedgerError), outcomes
        for j, outcome in enumerate(outcomes):
            if isinstance(outcome, Outcome):
                assert outcome.charged["usd"] == _amount(i, j)
                continue
            assert isinstance(outcome, LedgerError)
            res = store.reserve([Hold(shared, _amount(i, j))], id=f"x{i}-{j}")  # the same again
            assert store.commit(res, {"usd": _amount(i, j)}).charged["usd"] == _amount(i, j)
    [status] = store.status([shared])
    assert (status.spent, status.held) == (_everyone(), 0)
    assert Counter(e.event for e in store.history()) == {"committed": THREADS * PAIRS}


def test_a_hung_server_fails_every_waiting_caller_at_its_deadline() -> None:
    """The leader waits on a server that never answers; the callers queued behind it give up at their
    own deadlines (a deadline error each, no one left waiting), and later calls fail the same way."""
    with SilentServer() as silent, open_ledger(f"{silent.url}?{_HUNG}") as ledger:
        spec = counter(limit=1000)
        for _ in range(2):
            results = _in_threads(lambda i: ledger.reserve([Hold(spec, 1)], id=f"h{i}"), 8)
            for result in results:
                assert isinstance(result, LedgerError), result
                assert "deadline" in str(result)
                assert isinstance(result.__cause__, redis.TimeoutError)


async def test_a_hung_server_fails_every_waiting_task_at_its_deadline() -> None:
    with SilentServer() as silent:
        ledger = open_async_ledger(f"{silent.url}?{_HUNG}")
        try:
            spec = counter(limit=1000)
            for _ in range(2):
                results = await asyncio.gather(
                    *(ledger.reserve([Hold(spec, 1)], id=f"h{i}") for i in range(8)), return_exceptions=True
                )
                for result in results:
                    assert isinstance(result, LedgerError), result
                    assert "deadline" in str(result)
        finally:
            await ledger.aclose()


async def test_a_client_timeout_past_the_deadline_is_reported_as_the_deadline() -> None:
    """On a stalled host the client's socket timeout and the operation's deadline can come due in one
    turn of the loop, the client's handled first (a CI run under load: "Timeout reading from ..." where
    the deadline was expected): an error that ends an operation past its deadline is the deadline's, as
    in the sync store."""
    with SilentServer() as silent:
        ledger = open_async_ledger(f"{silent.url}?{_HUNG}")
        assert isinstance(ledger, AsyncRedisLedger)

        async def stalled(call: Call) -> Any:
            time.sleep(_DEADLINE + 0.1)  # the loop held past the deadline, then the client's timeout
            raise redis.TimeoutError("Timeout reading from socket")

        ledger._send = stalled  # type: ignore[method-assign]
        try:
            with pytest.raises(LedgerError, match="deadline") as caught:
                await ledger.reserve([Hold(counter(limit=1000), 1)], id="stalled")
            assert isinstance(caught.value.__cause__, redis.TimeoutError)
        finally:
            await ledger.aclose()


def test_a_forked_child_uses_its_own_connection(store: RedisLedger) -> None:
    user = counter("user:fork", limit=10**15)
    store.commit(store.reserve([Hold(user, 10)], id="parent-1"), {"usd": 10})  # the parent's connection
    assert isinstance(store._batch, Batcher)
    [parent_conn] = store._batch._idle
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a pair on the inherited store, then report
        code = 1
        try:
            outcome = store.commit(store.reserve([Hold(user, 20)], id="child-1"), {"usd": 20})
            ok = outcome.charged["usd"] == 20 and parent_conn not in store._batch._idle
            code = 0 if ok else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"\x00"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    store.commit(store.reserve([Hold(user, 30)], id="parent-2"), {"usd": 30})  # still the parent's own
    assert store._batch._idle == [parent_conn]
    [status] = store.status([user])
    assert (status.spent, status.held) == (60, 0)


# -- asyncio ----------------------------------------------------------------------------------------


@pytest.fixture
async def astore(redis_url: str, namespace: str) -> Any:
    ledger = open_async_ledger(f"{redis_url}?namespace={namespace}")
    assert isinstance(ledger, AsyncRedisLedger)
    yield ledger
    await ledger.aclose()


async def test_tasks_share_round_trips_and_each_gets_its_own_result(astore: AsyncRedisLedger) -> None:
    shared = counter("global", limit=10**15)
    assert isinstance(astore._batch, AsyncBatcher)
    sizes = _record_batches(astore._batch)

    async def pairs(i: int) -> list[Outcome]:
        own = counter(f"user:t{i}", limit=10**15)
        out = []
        for j in range(PAIRS):
            amount = _amount(i, j)
            res = await astore.reserve([Hold(own, amount), Hold(shared, amount)], id=f"t{i}-{j}")
            out.append(await astore.commit(res, {"usd": _amount(i, j)}))
        return out

    results = await asyncio.gather(*(pairs(i) for i in range(THREADS)))
    for i, outcomes in enumerate(results):
        assert [(o.id, o.charged["usd"]) for o in outcomes] == [
            (f"t{i}-{j}", _amount(i, j)) for j in range(PAIRS)
        ]
    assert max(sizes) > 1, sizes
    [status] = await astore.status([shared])
    assert (status.spent, status.held) == (_everyone(), 0)


async def test_cancelled_tasks_affect_only_themselves(astore: AsyncLedger) -> None:
    """Tasks cancelled while their calls wait or fly: the others get their results; repeating the
    cancelled ones' operations settles them, and the totals are exact."""
    shared = counter("global", limit=10**15)
    await astore.status([shared])

    async def pair(i: int) -> Outcome:
        res = await astore.reserve([Hold(shared, _amount(i, 0))], id=f"c{i}")
        return await astore.commit(res, {"usd": _amount(i, 0)})

    tasks = [asyncio.create_task(pair(i)) for i in range(THREADS)]
    for _ in range(3):
        await asyncio.sleep(0)
    for task in tasks[::3]:
        task.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = 0
    for i, result in enumerate(done):
        if isinstance(result, asyncio.CancelledError):
            cancelled += 1
            result = await pair(i)  # the same again: settles it, charges once
        assert isinstance(result, Outcome), result
        assert result.charged["usd"] == _amount(i, 0)
    assert cancelled > 0
    [status] = await astore.status([shared])
    assert (status.spent, status.held) == (sum(_amount(i, 0) for i in range(THREADS)), 0)
    assert Counter(e.event for e in await astore.history()) == {"committed": THREADS}


async def test_a_reply_lost_mid_batch_fails_no_task(redis_url: str, namespace: str) -> None:
    with LossyProxy(*_host_port(redis_url)) as proxy:
        ledger = open_async_ledger(f"{proxy.url}?namespace={namespace}")
        assert isinstance(ledger, AsyncRedisLedger)
        try:
            shared = counter("global", limit=10**15)
            await ledger.status([shared])

            async def pair(i: int) -> Outcome:
                res = await ledger.reserve([Hold(shared, _amount(i, 0))], id=f"a{i}")
                return await ledger.commit(res, {"usd": _amount(i, 0)})

            proxy.drop_next_reply(_sha(ledger, "reserve"))  # type: ignore[arg-type]
            outcomes = await asyncio.gather(*(pair(i) for i in range(THREADS)))
            assert proxy.dropped == 1
            assert [o.charged["usd"] for o in outcomes] == [_amount(i, 0) for i in range(THREADS)]
            [status] = await ledger.status([shared])
            assert (status.spent, status.held) == (sum(_amount(i, 0) for i in range(THREADS)), 0)
        finally:
            await ledger.aclose()

"""The batch script (``lua/batch.lua``): queued reserves, commits and releases of concurrent callers go
as ONE ``EVALSHA``, and each gets exactly the outcome its own script gives it (the same replies as
one call each, in another namespace); one's refusal or error never touches another's; NOSCRIPT and a
connection cut mid-batch lose nothing and charge nothing twice. Totals exact to the nano-USD."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis

from budgetguard import BudgetExceededError, LedgerError
from budgetguard._ledger import Hold, Outcome, Reservation, _redis_batch, open_async_ledger, open_ledger
from budgetguard._ledger._redis import AsyncRedisLedger, RedisLedger, _wrap_error
from budgetguard._ledger._redis_flows import Call, Flow
from budgetguard._ledger._redis_wire import meta_json
from budgetguard._ledger._types import ReservationError
from tests.redis_server import delete_namespace

from .helpers import counter
from .proxy import LossyProxy
from .test_redis_batch import _in_threads, _record_batches
from .test_redis_faults import REDIS_DEFAULT_RETRY, _host_port, _ledger_via, _sha

LIMIT = 10_000_000


@pytest.fixture(params=[True, False], ids=["fast", "general"])
def stores(redis_url: str, request: pytest.FixtureRequest) -> Iterator[tuple[RedisLedger, RedisLedger]]:
    """Two stores in two fresh namespaces: one runs a batch, the other the same calls one by one; both
    with the fast path (its fallbacks in a second batch), or both without it (the general path)."""
    names = ["s" + secrets.token_hex(6) for _ in range(2)]
    ledgers = [open_ledger(f"{redis_url}?namespace={ns}") for ns in names]
    for ledger in ledgers:
        ledger._flows.fast = request.param  # type: ignore[attr-defined]
    try:
        assert all(isinstance(ledger, RedisLedger) for ledger in ledgers)
        yield ledgers[0], ledgers[1]  # type: ignore[misc]
    finally:
        for ledger, ns in zip(ledgers, names, strict=True):
            ledger.close()
            delete_namespace(redis_url, ns)


def _batch_calls(store: RedisLedger | AsyncRedisLedger) -> Counter[str]:
    """Counts what ``store`` sends per write: 'batch' for a batch call, else each call's op."""
    sent: Counter[str] = Counter()
    wire = store._pack.wire

    def counted(items: list[Any]) -> tuple[bytes, int]:
        data, grouped = wire(items)
        sent["batch"] += grouped > 0
        sent["ops in batches"] += grouped
        return data, grouped

    store._pack.wire = counted  # type: ignore[method-assign]
    return sent


def _step(flow: Flow, reply: Any) -> tuple[bool, Any]:
    """``(True, the flow's result)`` for ``reply`` (its error as the store raises it), or ``(False, its
    next call)``: a fast path's ``G`` sends the same call to the general path."""
    if isinstance(reply, Exception):
        return True, _wrap_error(reply)
    try:
        return False, flow.send(reply)
    except StopIteration as done:
        return True, done.value
    except Exception as exc:
        return True, exc


def _finish(flow: Flow, reply: Any, store: RedisLedger | None = None) -> Any:
    """The flow's result for ``reply``; its further calls made one by one on ``store``, if given."""
    done, value = _step(flow, reply)
    while not done:
        if store is None:
            raise AssertionError(f"the flow wanted another call: {value}")
        try:
            reply = store._send(value)
        except Exception as exc:
            reply = exc
        done, value = _step(flow, reply)
    return value


def _together(store: RedisLedger, flows: list[Flow]) -> list[Any]:
    """The flows' first calls in one exchange (as a leader sends a queue), then the next calls of those
    that need one (a fast path's fallback) in the next, and so on; each result or error."""
    results: list[Any] = [None] * len(flows)
    waiting = [(i, flow, next(flow)) for i, flow in enumerate(flows)]
    while waiting:
        replies: list[Any] = []
        store._batch._exchange([store._pack(call) for _, _, call in waiting], replies)  # type: ignore[union-attr]
        after = []
        for (i, flow, _), reply in zip(waiting, replies, strict=True):
            done, value = _step(flow, reply)
            if done:
                results[i] = value
            else:
                after.append((i, flow, value))
        waiting = after
    return results


def _one_by_one(store: RedisLedger, flows: list[Flow]) -> list[Any]:
    out = []
    for flow in flows:
        call = next(flow)
        try:
            reply = store._send(call)
        except Exception as exc:
            reply = exc
        out.append(_finish(flow, reply, store))
    return out


def _same(result: Any) -> Any:
    """What must agree between a batch and single calls (times aside: each has its own clock)."""
    if isinstance(result, Reservation):
        return ("reserved", result.id, [(h.amount, h.limit) for h in result.held], result.duplicate)
    if isinstance(result, Outcome):
        return ("outcome", result.id, result.state, dict(result.charged), result.overrun, result.expired,
                result.duplicate, result.spent)  # fmt: skip
    if isinstance(result, BudgetExceededError):
        return ("refused", result.limit, result.spent, result.held, result.requested)
    return (type(result).__name__, str(result).replace(result.__class__.__name__, ""))


def _mixed(store: RedisLedger, first: Reservation) -> list[Flow]:
    """Admitted beside refused, an unknown id, repeats of one id, a commit and its repeat, a release."""
    flows = store._flows
    user = counter("user:batch", limit=LIMIT)
    stranger = Reservation("never-reserved", first.held, first.created_at, first.expires_at)
    return [
        flows.checked_reserve([Hold(user, 4_000_000)], 120, "b-admitted", {"n": 1}, True),
        flows.checked_reserve([Hold(user, 2_000_000)], 120, "c-refused", None, True),  # 5+4+2 > 10
        flows.resolve(stranger, {"usd": 5}, meta_json(None)),  # unknown id
        flows.resolve(first, {"usd": 3_000_001}, meta_json({"m": "x"})),
        flows.resolve(first, {"usd": 3_000_001}, meta_json(None)),  # its repeat, same batch
        flows.checked_reserve([Hold(user, 1_000_000)], 120, "d-twice", None, True),  # 8M after the commit
        flows.checked_reserve([Hold(user, 1_000_000)], 120, "d-twice", None, True),  # its repeat
        flows.checked_reserve([Hold(user, 2_000_000)], 120, "c-refused", None, True),  # stays refused
        flows.checked_reserve([Hold(user, 10)], 120, "e-released", None, True),
    ]


def test_mixed_operations_in_one_batch_get_what_single_calls_get(
    stores: tuple[RedisLedger, RedisLedger],
) -> None:
    batched, single = stores
    sent = _batch_calls(batched)
    user = counter("user:batch", limit=LIMIT)
    results = []
    for store, run in ((batched, _together), (single, _one_by_one)):
        first = store.reserve([Hold(user, 5_000_000)], id="a-first")
        if store is single and single._flows.fast:  # the batch's order: its first round, then the G's
            flows = _mixed(store, first)
            order = [0, 2, 3, 5, 8, 1, 4, 6, 7]  # (2, 4, 6, 7 answer G as well, 1 is refused)
            done = dict(zip(order, _one_by_one(store, [flows[i] for i in order]), strict=True))
            results.append([done[i] for i in range(len(flows))])
            continue
        results.append(run(store, _mixed(store, first)))
    # (the first reserve went alone; with the fast path, the 5 that answered G went in a second batch:
    # the refused reserve and its repeat, the unknown commit, the repeated commit and reserve)
    fast = batched._flows.fast
    assert (sent["batch"], sent["ops in batches"]) == ((2, 14) if fast else (1, 9))
    out = results[0]
    assert [_same(r) for r in out] == [_same(r) for r in results[1]]
    assert isinstance(out[0], Reservation) and not out[0].duplicate
    # with the fast path, the refusal's answered G: refused by the second batch, after the first's
    # writes (a charged; b, d and e held)
    fast_refusal = (Decimal("0.003000001"), Decimal("0.00500001"))
    spent_held = fast_refusal if fast else (Decimal(0), Decimal("0.009"))
    assert isinstance(out[1], BudgetExceededError) and (out[1].spent, out[1].held) == spent_held
    assert isinstance(out[2], ReservationError) and "never-reserved" in str(out[2])
    assert isinstance(out[3], Outcome) and not out[3].duplicate and out[3].charged == {"usd": 3_000_001}
    assert isinstance(out[4], Outcome) and out[4].duplicate and out[4].charged == {"usd": 3_000_001}
    assert isinstance(out[5], Reservation) and not out[5].duplicate
    assert isinstance(out[6], Reservation) and out[6].duplicate and out[6].held[0].amount == 1_000_000
    assert isinstance(out[7], BudgetExceededError)
    assert isinstance(out[8], Reservation)
    for store in stores:
        store.release("e-released")
        [status] = store.status([user])
        assert (status.spent, status.held) == (3_000_001, 5_000_000)  # b and d held, a charged
        events = Counter(e.event for e in store.history())
        assert events == {"committed": 1, "refused": 1, "released": 1}
        [commit] = [e for e in store.history() if e.event == "committed"]
        assert commit.data == {"m": "x"}


def test_an_operation_s_error_touches_no_other(stores: tuple[RedisLedger, RedisLedger]) -> None:
    """Invalid input (BGINVALID) and a command's error (WRONGTYPE) inside a batch: those two calls
    get their errors, the calls around them their own results, and nothing else is written."""
    store = stores[0]
    flows = store._flows
    user, broken = counter("user:ok", limit=LIMIT), counter("user:broken", limit=LIMIT)
    ok = flows.checked_reserve([Hold(user, 7)], 120, "ok-1", None, True)
    bad_call = next(flows.checked_reserve([Hold(user, 1)], 120, "bad", None, True))
    bad_args = (*bad_call.args[:-1], "12x,not-a-hold")
    wrong = flows.checked_reserve([Hold(broken, 9)], 120, "wrongtype", None, True)
    wrong_call = next(wrong)
    store.client.set(wrong_call.keys[3], "a string, not a counter hash")
    after = flows.checked_reserve([Hold(user, 11)], 120, "ok-2", None, True)
    calls = [next(ok), Call("reserve", bad_call.keys, bad_args), wrong_call, next(after)]
    replies: list[Any] = []
    store._batch._exchange([store._pack(c) for c in calls], replies)  # type: ignore[union-attr]
    assert isinstance(replies[1], redis.ResponseError) and "BGINVALID hold" in str(replies[1])
    if store._flows.fast:  # the fast path answers G (nothing written); the general path raises
        assert replies[2] == ["G"]
        error = _finish(wrong, replies[2], store)
        assert isinstance(error, LedgerError) and "WRONGTYPE" in str(error)
    else:
        assert isinstance(replies[2], redis.ResponseError) and "WRONGTYPE" in str(replies[2])
        assert isinstance(_wrap_error(replies[2]), LedgerError)
    assert isinstance(_wrap_error(replies[1]), ValueError)
    assert isinstance(_finish(ok, replies[0], store), Reservation)
    assert isinstance(_finish(after, replies[3], store), Reservation)
    [status] = store.status([user])
    assert (status.spent, status.held) == (0, 18)
    assert store.client.get(flows.keys.record("bad")) is None


def test_noscript_on_the_batch_script_loads_it_and_runs_the_batch_once(
    stores: tuple[RedisLedger, RedisLedger],
) -> None:
    store = stores[0]
    user = counter("user:flushed", limit=LIMIT)
    flows = [
        store._flows.checked_reserve([Hold(user, 1_000 + i)], 120, f"n{i}", None, True) for i in range(5)
    ]
    store.client.script_flush()
    assert store.client.script_exists(_sha(store, "batch")) == [False]
    out = _together(store, flows)
    assert [r.held[0].amount for r in out] == [1_000 + i for i in range(5)]
    assert not any(r.duplicate for r in out)
    assert store.client.script_exists(_sha(store, "batch")) == [True]
    [status] = store.status([user])
    assert (status.spent, status.held) == (0, sum(1_000 + i for i in range(5)))


def _amount(i: int, j: int) -> int:
    return 1_000_003 * (i + 1) + 7 * j


def test_a_batch_cut_mid_reply_is_retried_by_each_caller_and_charged_once(
    redis_url: str,
) -> None:
    """The batch call ran on the server, then its connection died before the reply: every caller in
    it retries on its own (idempotent by reservation id), gets its own result, and each pair is
    held and charged once."""
    namespace = "k" + secrets.token_hex(6)
    threads, pairs = 16, 10
    try:
        with LossyProxy(*_host_port(redis_url)) as proxy:
            ledger = _ledger_via(proxy.url, namespace, REDIS_DEFAULT_RETRY)
            with ledger:
                shared = counter("global", limit=10**15)
                ledger.status([shared])  # connect
                sent = _batch_calls(ledger)
                proxy.drop_next_reply(_sha(ledger, "batch"))

                def work(i: int) -> list[Outcome]:
                    out = []
                    for j in range(pairs):
                        res = ledger.reserve([Hold(shared, 2 * _amount(i, j))], id=f"k{i}-{j}")
                        out.append(ledger.commit(res, {"usd": _amount(i, j)}))
                    return out

                results = _run_until_dropped(work, threads, proxy)
                assert sent["batch"] > 1 and proxy.dropped == 1
                for i, outcomes in enumerate(results):
                    assert not isinstance(outcomes, BaseException), outcomes
                    assert [o.charged["usd"] for o in outcomes] == [_amount(i, j) for j in range(pairs)]
                [status] = ledger.status([shared])
                total = sum(_amount(i, j) for i in range(threads) for j in range(pairs))
                assert (status.spent, status.held) == (total, 0)
                assert Counter(e.event for e in ledger.history()) == {"committed": threads * pairs}
    finally:
        delete_namespace(redis_url, namespace)


def _run_until_dropped(work: Callable[[int], Any], threads: int, proxy: LossyProxy) -> list[Any]:
    """``work`` in ``threads`` threads; the proxy was armed before: a batch call was in their traffic."""
    results = _in_threads(work, threads)
    assert proxy.dropped == 1, "no batch call crossed the proxy"
    return results


def test_32_threads_go_through_batch_calls(stores: tuple[RedisLedger, RedisLedger]) -> None:
    """Under 32 threads most calls go as batch calls; every result is the caller's own."""
    store = stores[0]
    sent = _batch_calls(store)
    sizes = _record_batches(store._batch)

    def work(i: int) -> list[int]:
        user = counter(f"user:t{i}", limit=LIMIT)
        out = []
        for j in range(8):
            res = store.reserve([Hold(user, 1_000 + j)], id=f"t{i}-{j}")
            out.append(store.commit(res, {"usd": i * 100 + j}).charged["usd"])
        return out

    results = _in_threads(work, 32)
    assert results == [[i * 100 + j for j in range(8)] for i in range(32)]
    assert sent["batch"] > 0 and max(sizes) > 2
    for i in range(32):
        [status] = store.status([counter(f"user:t{i}", limit=LIMIT)])
        assert (status.spent, status.held) == (sum(i * 100 + j for j in range(8)), 0)


async def test_tasks_reload_the_batch_script_after_a_flush(redis_url: str) -> None:
    """32 tasks right after SCRIPT FLUSH: their batch calls meet NOSCRIPT, the leader loads the batch
    script on its connection and sends the batch again; every pair is charged once."""
    namespace = "a" + secrets.token_hex(6)
    ledger = open_async_ledger(f"{redis_url}?namespace={namespace}")
    try:
        assert isinstance(ledger, AsyncRedisLedger)
        shared = counter("global", limit=10**15)
        await ledger.status([shared])  # connect
        sent = _batch_calls(ledger)  # type: ignore[arg-type]
        await ledger.client.script_flush()

        async def pairs(i: int) -> list[int]:
            out = []
            for j in range(4):
                res = await ledger.reserve([Hold(shared, 2 * _amount(i, j))], id=f"f{i}-{j}")
                out.append((await ledger.commit(res, {"usd": _amount(i, j)})).charged["usd"])
            return out

        results = await asyncio.gather(*(pairs(i) for i in range(32)))
        assert results == [[_amount(i, j) for j in range(4)] for i in range(32)]
        assert sent["batch"] > 0
        assert await ledger.client.script_exists(_sha(ledger, "batch")) == [True]  # type: ignore[arg-type]
        [status] = await ledger.status([shared])
        total = sum(_amount(i, j) for i in range(32) for j in range(4))
        assert (status.spent, status.held) == (total, 0)
        assert Counter(e.event for e in await ledger.history()) == {"committed": 32 * 4}
    finally:
        await ledger.aclose()
        delete_namespace(redis_url, namespace)


def test_a_leader_sends_at_most_max_batch_calls(
    stores: tuple[RedisLedger, RedisLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 threads with MAX_BATCH at 4: no round trip carries more than 4 calls, the callers queued
    beyond wait for the next one, and every result is still the caller's own."""
    monkeypatch.setattr(_redis_batch, "MAX_BATCH", 4)
    store = stores[0]
    sizes = _record_batches(store._batch)
    user = counter("user:capped", limit=LIMIT)

    def work(i: int) -> list[int]:
        out = []
        for j in range(6):
            res = store.reserve([Hold(user, 10 + j)], id=f"c{i}-{j}")
            out.append(store.commit(res, {"usd": i * 10 + j}).charged["usd"])
        return out

    results = _in_threads(work, 32)
    assert results == [[i * 10 + j for j in range(6)] for i in range(32)]
    assert max(sizes) == 4, sizes
    [status] = store.status([user])
    assert (status.spent, status.held) == (sum(i * 10 + j for i in range(32) for j in range(6)), 0)

"""The batch script against one call each, over random sequences: reserves, commits and releases on
shared and separate counters (fit and refusal interplay, repeats, ids reused, a WRONGTYPE counter among
them), run as ONE batch call in one namespace and one by one in another, give the same replies and
leave the same counters, records, leases and journal, field by field (times aside: each side has its
own clock; a record's expiry counted from its creation), with the fast path and without."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetguard._ledger import Hold, Reservation, open_ledger
from budgetguard._ledger._expiry import window_at
from budgetguard._ledger._redis import RedisLedger
from budgetguard._ledger._redis_flows import Flow
from budgetguard._ledger._redis_wire import LIBRARY, SCRIPTS, meta_json
from budgetguard._ledger._types import HeldCounter
from tests.redis_server import delete_namespace

from .helpers import counter
from .test_redis_batch_script import _one_by_one, _same, _step, _together

COUNTERS = [
    counter("user:a", limit=100),
    counter("team:b", limit=150),
    counter("global", limit=200),
    counter("user:broken", limit=100),  # its counter key holds a string: WRONGTYPE
]
IDS = [f"i{n}" for n in range(5)]
ENFORCE = [True, True, "shadow", False]

# per id: which counters it holds (indices into COUNTERS, in order); the same in every example, so that
# commits and releases name the counters a reserve of that id held
HOLDS = {"i0": (0,), "i1": (0, 2), "i2": (1, 2), "i3": (2,), "i4": (0, 3), "over": (0, 2), "zero": (1,)}

reserve_op = st.tuples(
    st.just("reserve"),
    st.sampled_from(IDS),
    st.lists(st.integers(0, 120), min_size=2, max_size=2),
    st.sampled_from(ENFORCE),
    st.sampled_from([None, {"n": 1}]),
)
resolve_op = st.tuples(
    st.sampled_from(["commit", "release"]),
    st.sampled_from([*IDS, "over", "zero"]),  # (over, zero: their leases ended before the batch)
    st.integers(0, 150),
    st.just(True),
    st.sampled_from([None, {"m": "x"}]),
)
operations = st.lists(st.one_of(reserve_op, resolve_op), min_size=1, max_size=14)


@contextmanager
def _store(redis_url: str) -> Iterator[RedisLedger]:
    namespace = "m" + secrets.token_hex(6)
    ledger = open_ledger(f"{redis_url}?namespace={namespace}")
    try:
        assert isinstance(ledger, RedisLedger)
        # the general path (a test turns the fast path on: its fallbacks run in a next batch, after the
        # operations queued behind them, so its single calls run in that order, _in_rounds)
        ledger._flows.fast = False
        yield ledger
    finally:
        ledger.close()
        delete_namespace(redis_url, namespace)


def _flows(store: RedisLedger, ops: list[tuple[Any, ...]], now: int) -> list[Flow]:
    out = []
    for op, res_id, amounts, enforce, meta in ops:
        counters = [COUNTERS[i] for i in HOLDS[res_id]]
        if op == "reserve":
            holds = [Hold(c, a) for c, a in zip(counters, amounts, strict=False)]
            out.append(store._flows.checked_reserve(holds, 120, res_id, meta, enforce))
            continue
        held = []
        for c in counters:
            w = window_at(c, now)
            held.append(HeldCounter(c, w.start, w.end, 10, c.limit))
        ref = Reservation(res_id, tuple(held), now, now + 120_000)
        actual = {"usd": amounts} if op == "commit" else None
        out.append(store._flows.resolve(ref, actual, meta_json(meta)))
    return out


def _prepare(store: RedisLedger, now: int) -> None:
    """A string where user:broken's counter hash would be; reservations held on the global counter and
    on team:b; two whose leases end at once (one of a hold of 0: reclaiming it leaves its counter as it
    is); the scripts loaded (a lone call of a batch goes as its own script)."""
    for text in SCRIPTS.values():
        store.client.script_load(text)
    broken = COUNTERS[3]
    store.client.set(store._flows.slot(broken, window_at(broken, now)).keys[0], "not a counter")
    store.reserve([Hold(COUNTERS[2], 30)], id="i3")
    store.reserve([Hold(COUNTERS[1], 11)], id="kept")
    store.reserve([Hold(COUNTERS[0], 7), Hold(COUNTERS[2], 7)], lease=0.001, id="over")
    store.reserve([Hold(COUNTERS[1], 0)], lease=0.001, id="zero")


_WHERE = re.compile(r" script: [0-9a-f]+, on @user_script:\d+\.$")


def _result(result: Any) -> Any:
    """What must agree (``_same``), an error's text without where a lone script raised it."""
    same = _same(result)
    return (same[0], _WHERE.sub("", same[1])) if len(same) == 2 else same


_TIMES = re.compile(r"^([hcr]) (\d+) (\d+) ")


def _expiry(client: redis.Redis, key: str, text: str | None) -> Any:
    """A record's expiry in seconds from its reservation's creation (its lease and the retention; to
    the second: a key's expiry is on the server's cached clock, a script's times on ``TIME``, ~1 ms
    apart); any other key's: whether it has one."""
    times = _TIMES.match(text or "")
    if times is None:
        return client.pttl(key) >= 0
    at: int = client.pexpiretime(key)
    return (at - int(times[2]) + 500) // 1000


def _state(store: RedisLedger) -> dict[str, Any]:
    """Every key of the store's namespace and its content, times masked (records' created and expires,
    journal timestamps, lease scores); its expiry (``_expiry``)."""
    client: redis.Redis = store.client
    prefix = f"bg:{{{store._flows.namespace}}}:"
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=prefix + "*", count=1000):  # (the store's client decodes)
        kind = client.type(key)
        text = client.get(key) if kind == "string" else None
        if kind == "string":
            value: Any = _TIMES.sub(r"\1 T T ", text)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "zset":
            value = sorted(client.zrange(key, 0, -1))
        elif kind == "stream":
            value = [{k: v for k, v in fields.items() if k != "ts"} for _, fields in client.xrange(key)]
        else:
            value = kind
        out[key[len(prefix) :]] = (kind, value, _expiry(client, key, text))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_a_batch_of_random_operations_does_what_they_do_one_by_one(
    redis_url: str, ops: list[tuple[Any, ...]]
) -> None:
    now = time.time_ns() // 1_000_000
    with _store(redis_url) as batched, _store(redis_url) as single:
        results, states = [], []
        for store in (batched, single):
            _prepare(store, now)
        time.sleep(0.005)
        for store, run in ((batched, _together), (single, _one_by_one)):
            results.append([_result(r) for r in run(store, _flows(store, ops, now))])
            states.append(_state(store))
        assert results[0] == results[1]
        assert states[0] == states[1]


def _in_rounds(store: RedisLedger, flows: list[Flow]) -> list[Any]:
    """``_together``'s order one call at a time: every flow's first call, then the next calls of those
    that need one (a fast path's fallback), and so on."""
    results: list[Any] = [None] * len(flows)
    waiting = [(i, flow, next(flow)) for i, flow in enumerate(flows)]
    while waiting:
        after = []
        for i, flow, call in waiting:
            try:
                reply = store._send(call)
            except Exception as exc:
                reply = exc
            done, value = _step(flow, reply)
            if done:
                results[i] = value
            else:
                after.append((i, flow, value))
        waiting = after
    return results


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_a_batch_of_random_operations_with_the_fast_path_does_what_they_do_one_by_one(
    redis_url: str, ops: list[tuple[Any, ...]]
) -> None:
    """The fast path on: the batch's fallbacks go in a next batch, so the single calls run in the
    batch's order (``_in_rounds``)."""
    now = time.time_ns() // 1_000_000
    with _store(redis_url) as batched, _store(redis_url) as single:
        results, states = [], []
        for store in (batched, single):
            store._flows.fast = True
            _prepare(store, now)
        time.sleep(0.005)
        for store, run in ((batched, _together), (single, _in_rounds)):
            results.append([_result(r) for r in run(store, _flows(store, ops, now))])
            states.append(_state(store))
        assert results[0] == results[1]
        assert states[0] == states[1]


INT64_CASES = {
    "0": 1, "7": 1, "10": 1, "999999999999999999": 1, "1000000000000000000": 1,
    "9223372036854775807": 1, "9223372036854775808": 0, "9999999999999999999": 0,
    "12345678901234567890": 0, "": 0, "01": 0, "00": 0, "0000000000000000000": 0, "-1": 0, "1a": 0,
    " 1": 0, "1 ": 0, "1.5": 0, "1e3": 0, "0x10": 0,
}  # fmt: skip


def test_is_int64_accepts_exactly_the_int64_digit_strings(redis_url: str) -> None:
    """The scripts' number check (lua/_lib.lua), alone and with a batch's memo of accepted strings (an
    accepted string never makes another one pass)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    script = (
        LIBRARY
        + """
local out = {}
if ARGV[1] == 'batch' then int64s = {} end
for i = 2, #ARGV do out[#out + 1] = is_int64(ARGV[i]) and 1 or 0 end
for i = 2, #ARGV do out[#out + 1] = is_int64(ARGV[i]) and 1 or 0 end
return out
"""
    )
    try:
        for mode in ("alone", "batch"):
            got = client.eval(script, 0, mode, *INT64_CASES)
            assert got == [*INT64_CASES.values()] * 2, mode
    finally:
        client.close()


@pytest.mark.parametrize("fast", [False, True], ids=["general", "fast"])
def test_a_leases_set_with_more_expired_than_one_scan_takes_is_scanned_again(
    redis_url: str, fast: bool
) -> None:
    """1,001 expired leases on one counter: a scan takes 1,000, so the batch's second operation on the
    counter scans again and reclaims the last one, as its own script would. (With the fast path: both
    reserves answer G, seeing an ended lease, and run as a second batch of the general path.)"""
    now = time.time_ns() // 1_000_000
    user = counter("user:crowd", limit=10**6)
    with _store(redis_url) as batched, _store(redis_url) as single:
        results, states = [], []
        for store, run in ((batched, _together), (single, _one_by_one)):
            store._flows.fast = fast
            for text in SCRIPTS.values():
                store.client.script_load(text)
            key, leases = store._flows.slot(user, window_at(user, now)).keys
            ids = [f"gone{n}" for n in range(1_001)]
            store.client.hset(key, mapping={"held": "1001", **{f"r:{i}": "1" for i in ids}})
            store.client.zadd(leases, dict.fromkeys(ids, 1))  # (ended long ago)
            flows = [
                store._flows.checked_reserve([Hold(user, 5)], 120, f"new{n}", None, True) for n in range(2)
            ]
            results.append([_result(r) for r in run(store, flows)])
            states.append(_state(store))
            assert store.client.zcard(leases) == 2 and store.client.hget(key, "held") == "10"
        assert results[0] == results[1]
        assert states[0] == states[1]

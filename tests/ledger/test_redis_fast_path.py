"""The Redis store's fast path (``lua/_reserve_fast.lua``, ``lua/_commit_fast.lua``; issue 17's
``compat``): a usual reserve and commit take it alone; every unusual case answers ``G`` having written
nothing and goes on to the general path with the same outcome as before; the fast and the general path
(a client from before, ``Flows.fast = False``) mix on one namespace, each committing the other's
reservations; random sequences leave the same replies, records, counters and journal either way."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings

from budgetguard import BudgetExceededError, LedgerError
from budgetguard._budgets import ROLLING, Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, open_ledger
from budgetguard._ledger._redis import RedisLedger
from budgetguard._ledger._types import Reservation, ReservationError
from tests.redis_server import delete_namespace

from .helpers import counter
from .test_redis_batch_model import _flows, _prepare, _result, _state, _store, operations
from .test_redis_batch_script import _one_by_one

SHORT = 0.3
"""A lease (s) a test lets end (it sleeps past it)."""


@pytest.fixture
def pair(redis_url: str) -> Iterator[tuple[RedisLedger, RedisLedger]]:
    """Two stores on ONE namespace: the fast path's (today's client), and a client without it."""
    namespace = "f" + secrets.token_hex(6)
    stores = [open_ledger(f"{redis_url}?namespace={namespace}") for _ in range(2)]
    try:
        assert all(isinstance(s, RedisLedger) for s in stores)
        fast, general = stores
        general._flows.fast = False  # type: ignore[union-attr]
        yield fast, general  # type: ignore[misc]
    finally:
        for s in stores:
            s.close()
        delete_namespace(redis_url, namespace)


@pytest.fixture
def store(pair: tuple[RedisLedger, RedisLedger]) -> RedisLedger:
    return pair[0]


def _sent(store: RedisLedger) -> list[str]:
    """The script calls ``store`` makes from now on, by name, in order (cleared by the caller)."""
    sent: list[str] = []
    send = store._send

    def recorded(call: Any) -> Any:
        sent.append(call.op)
        return send(call)

    store._send = recorded  # type: ignore[method-assign]
    return sent


def _counter(store: RedisLedger, spec: CounterSpec) -> dict[str, str]:
    """The counter's hash as stored (no reclaim: ``status`` would reclaim)."""
    key = store._flows.slot(spec, _window(spec)).keys[0]
    return store.client.hgetall(key)  # type: ignore[no-any-return]


def _window(spec: CounterSpec) -> Any:
    from budgetguard._ledger._expiry import window_at

    return window_at(spec, time.time_ns() // 1_000_000)


def _journal(store: RedisLedger) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.event, e.reservation_id, dict(e.amounts)) for e in store.history()]


def _spent_held(store: RedisLedger, spec: CounterSpec) -> tuple[int, int]:
    [s] = store.status([spec])
    return s.spent, s.held


# -- the fast path is taken ---------------------------------------------------------------------------


def test_a_usual_pair_takes_the_fast_path_alone(store: RedisLedger, redis_url: str) -> None:
    user, glob = counter("user:f", limit=10_000), counter("global", limit=10**6)
    store.reserve([Hold(user, 1), Hold(glob, 1)], id="seed")  # (new counters: the general path)
    sent = _sent(store)
    server = redis.Redis.from_url(redis_url)
    server.config_resetstat()
    res = store.reserve([Hold(user, 500), Hold(glob, 500)], id="f1", meta={"model": "m"})
    stats = server.info("commandstats")
    assert sent == ["reserve_fast"]
    # the fast reserve reads no record (reserve GETs it) and writes it with SET NX
    assert "cmdstat_get" not in stats and stats["cmdstat_set"]["calls"] == 1
    server.config_resetstat()
    out = store.commit(res, {"usd": 400}, meta={"ok": True})
    stats = server.info("commandstats")
    server.close()
    assert sent == ["reserve_fast", "commit_fast"]
    # the fast commit reads each leases set once for an ended lease (commit's reclaim: every id ended)
    assert stats["cmdstat_zrangebyscore"]["calls"] == 2 and stats["cmdstat_xadd"]["calls"] == 1
    assert (out.state, out.charged, out.spent, out.overrun, out.expired) == (
        "committed", {Unit.USD: 400}, (400, 400), False, False,
    )  # fmt: skip
    assert _counter(store, user) == {"spent": "400", "held": "1", "r:seed": "1"}
    [entry] = [e for e in store.history() if e.reservation_id == "f1"]
    assert entry.event == "committed" and entry.data == {"model": "m", "ok": True}


def test_a_batch_runs_fast_operations(store: RedisLedger) -> None:
    """Concurrent callers' fast reserves and commits go in batch calls, their fallbacks after."""
    from .test_redis_batch import _record_batches

    spec = counter("global", limit=10**12)
    store.reserve([Hold(spec, 1)], id="seed")
    ops: Counter[str] = Counter()
    pack = store._pack.batch

    def counted(items: list[Any]) -> bytes:
        ops.update(item[0] for item in items)
        return pack(items)

    store._pack.batch = counted  # type: ignore[method-assign]
    sizes = _record_batches(store._batch)

    def work(i: int) -> None:
        for j in range(20):
            res = store.reserve([Hold(spec, 10)], id=f"b{i}-{j}")
            store.commit(res, {"usd": 7})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(sizes) > 1 and ops["reserve_fast"] > 0 and ops["commit_fast"] > 0, (sizes, ops)
    assert _spent_held(store, spec) == (16 * 20 * 7, 1)
    assert Counter(e.event for e in store.history()) == {"committed": 320}


# -- each unusual case: G, nothing written, the general path ------------------------------------------


def _case(store: RedisLedger, ops: list[str], call: Callable[[], Any]) -> Any:
    sent = _sent(store)
    try:
        return call()
    finally:
        assert sent == ops


def test_a_new_counter_and_a_repeat_take_the_general_path(store: RedisLedger) -> None:
    user = counter("user:g", limit=1000)
    res = _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(user, 100)], id="n1"))
    assert not res.duplicate
    again = _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(user, 5)], id="n1"))
    assert again.duplicate and again.held[0].amount == 100
    assert _spent_held(store, user) == (0, 100)


def test_a_refusal_takes_the_general_path_and_is_recorded(store: RedisLedger) -> None:
    """All or nothing over 3 counters (one past its limit: none held), the refusal recorded, journaled
    once, and repeated as a refusal; the limit counts spent + held + amount."""
    a, b, c = counter("user:a", limit=1000), counter("team:b", limit=1000), counter("global", limit=5)
    for spec in (a, b, c):
        store.reserve([Hold(spec, 1)], id=f"seed-{spec.scope}")  # (the counters exist: no new counter)
    with pytest.raises(BudgetExceededError):
        _case(store, ["reserve_fast", "reserve"],
              lambda: store.reserve([Hold(a, 10), Hold(b, 10), Hold(c, 10)], id="r3"))  # fmt: skip
    assert [_spent_held(store, s) for s in (a, b, c)] == [(0, 1), (0, 1), (0, 1)]
    with pytest.raises(BudgetExceededError):
        _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(a, 10)], id="r3"))
    with pytest.raises(BudgetExceededError):  # 0 spent + 1 held + 1000 > 1000
        _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(a, 1000)], id="r4"))
    _case(store, ["reserve_fast"], lambda: store.reserve([Hold(a, 999)], id="r4b"))
    assert [e.event for e in store.history()] == ["refused", "refused"]


def test_an_ended_lease_on_the_counter_takes_the_general_path_which_reclaims_it(store: RedisLedger) -> None:
    user = counter("user:e", limit=1000)
    store.reserve([Hold(user, 1)], id="seed")
    _case(store, ["reserve_fast"], lambda: store.reserve([Hold(user, 300)], id="short", lease=SHORT))
    time.sleep(SHORT + 0.1)
    # it would fit without reclaiming: the ended hold is given back and journaled all the same
    _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(user, 20)], id="next"))
    assert _counter(store, user) == {"held": "21", "r:seed": "1", "r:next": "20"}
    assert _journal(store) == [("expired", "short", {"usd": 300})]
    # a late commit charges once and releases nothing again
    out = _case(store, ["record", "commit_fast", "commit"], lambda: store.commit("short", {"usd": 30}))
    assert (out.state, out.expired, out.spent) == ("committed", True, (30,))
    assert _counter(store, user) == {"spent": "30", "held": "21", "r:seed": "1", "r:next": "20"}


def test_a_commit_after_its_lease_ended_takes_the_general_path(store: RedisLedger) -> None:
    """Nothing reclaimed the hold yet: the general path reclaims it (journaled) and says expired."""
    user = counter("user:l", limit=1000)
    store.reserve([Hold(user, 1)], id="seed")
    res = store.reserve([Hold(user, 5)], id="late", lease=SHORT)
    time.sleep(SHORT + 0.1)
    out = _case(store, ["commit_fast", "commit"], lambda: store.commit(res, {"usd": 5}))
    assert (out.expired, out.spent) == (True, (5,))
    assert _counter(store, user) == {"spent": "5", "held": "1", "r:seed": "1"}
    assert _journal(store) == [("expired", "late", {"usd": 5}), ("committed", "late", {"usd": 5})]


def test_repeats_and_unknown_commits_take_the_general_path(store: RedisLedger) -> None:
    user = counter("user:r", limit=1000)
    store.reserve([Hold(user, 1)], id="seed")
    res = store.reserve([Hold(user, 100)], id="c1")
    first = _case(store, ["commit_fast"], lambda: store.commit(res, {"usd": 70}))
    again = _case(store, ["commit_fast", "commit"], lambda: store.commit(res, {"usd": 99}))
    assert (first.duplicate, again.duplicate, again.charged, again.spent) == (False, True, {"usd": 70}, (70,))
    stranger = Reservation("nope", res.held, res.created_at, res.expires_at)
    with pytest.raises(ReservationError):
        _case(store, ["commit_fast", "commit"], lambda: store.commit(stranger, {"usd": 1}))
    # by id alone: the record read, then the fast path (it reads the record's meta and holds itself)
    store.reserve([Hold(user, 10)], id="by-id")
    out = _case(store, ["record", "commit_fast"], lambda: store.commit("by-id", {"usd": 10}))
    assert out.spent == (80,)
    # a release: the general path
    store.reserve([Hold(user, 10)], id="rel")
    _case(store, ["record", "release"], lambda: store.release("rel"))
    assert _spent_held(store, user) == (80, 1)


def test_enforcement_rolling_raises_and_big_numbers_take_the_general_path(store: RedisLedger) -> None:
    user = counter("user:u", limit=10**18)
    store.reserve([Hold(user, 1)], id="seed")
    _case(store, ["reserve"], lambda: store.reserve([Hold(user, 1)], id="s1", enforce="shadow"))
    _case(store, ["reserve"], lambda: store.reserve([Hold(user, 1)], id="o1", enforce=False))
    shadowed = CounterSpec(Scope.parse("user:u"), Unit.TOKENS, Period.DAY, 10, shadow=True)
    store.reserve([Hold(shadowed, 1)], id="seed-shadow", enforce=False)
    _case(store, ["reserve"], lambda: store.reserve([Hold(shadowed, 1)], id="s2"))
    minute = CounterSpec(Scope.parse("user:u"), Unit.REQUESTS, Period.MINUTE, 10, tz=ROLLING)
    store.reserve([Hold(minute, 1)], id="seed-rolling", lease=5)
    _case(store, ["reserve"], lambda: store.reserve([Hold(minute, 1)], id="w1", lease=5))
    # an amount of 16 digits: reserve's limbs, not the fast path's numbers; its commit, and the
    # counter's next reserve (its spent has 16 digits) too
    large = counter("user:large", limit=10**18)
    store.reserve([Hold(large, 1)], id="seed-large")
    big = _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(large, 10**15)], id="big"))
    _case(store, ["commit_fast", "commit"], lambda: store.commit(big, {"usd": 10**15}))
    _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(large, 1)], id="big2"))
    # a live temporary raise: the general path (which ends it when it is over)
    store.raise_limit(user, 5, until=timedelta(seconds=SHORT), actor="t", reason="test")
    _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(user, 1)], id="raised"))
    time.sleep(SHORT + 0.1)
    _case(store, ["reserve_fast", "reserve"], lambda: store.reserve([Hold(user, 1)], id="ended"))
    _case(store, ["reserve_fast"], lambda: store.reserve([Hold(user, 1)], id="after"))  # (raise gone)
    assert store.get_limit(user) is None


def test_a_fast_commit_leaves_for_the_general_path_when_another_lease_ended(store: RedisLedger) -> None:
    """Counters are per window: an ended lease a commit sees may meet no later reserve or status on
    its counter, so the commit goes to the general path, which reclaims and journals it first."""
    user = counter("user:d", limit=1000)
    store.reserve([Hold(user, 1)], id="seed")
    res = store.reserve([Hold(user, 10)], id="mine")
    store.reserve([Hold(user, 300)], id="gone", lease=SHORT)
    time.sleep(SHORT + 0.1)
    _case(store, ["commit_fast", "commit"], lambda: store.commit(res, {"usd": 10}))
    assert _counter(store, user) == {"spent": "10", "held": "1", "r:seed": "1"}
    assert _journal(store) == [("expired", "gone", {"usd": 300}), ("committed", "mine", {"usd": 10})]


def test_a_leases_key_of_another_type_leaves_a_commit_whole(pair: tuple[RedisLedger, RedisLedger]) -> None:
    """The fast commit checks the leases set before its first write: a key of another type sends the
    commit to the general path, which raises it with nothing written; once the key is gone, the retry
    charges once, as a client without the fast path does."""
    ends = []
    for store in pair:  # (one namespace: a counter each)
        user = counter(f"user:w{len(ends)}", limit=1000)
        store.reserve([Hold(user, 1)], id=f"seed-{len(ends)}")
        res = store.reserve([Hold(user, 100)], id=f"w{len(ends)}")
        leases = store._flows.slot(user, _window(user)).keys[1]
        store.client.delete(leases)
        store.client.set(leases, "not a set")
        with pytest.raises(LedgerError):
            store.commit(res, {"usd": 60})
        assert _counter(store, user)["held"] == "101" and "spent" not in _counter(store, user)
        assert not [e for e in store.history() if e.reservation_id == res.id]
        store.client.delete(leases)
        out = store.commit(res, {"usd": 60})
        assert (out.state, out.expired, out.spent) == ("committed", False, (60,))
        ends.append(
            (_counter(store, user)["spent"], [e.event for e in store.history() if e.reservation_id == res.id])
        )
    assert ends == [("60", ["committed"])] * 2


# -- the fast and the general path on one namespace ---------------------------------------------------


def test_each_path_commits_the_other_s_reservations(pair: tuple[RedisLedger, RedisLedger]) -> None:
    """A rolling upgrade: a client with the fast path and one without, on one namespace, each commits
    (as a Reservation, and by id) what the other reserved; the records, counters and journal are one."""
    fast, general = pair
    a, b = counter("user:m", limit=10_000), counter("global", limit=10**6)
    general.reserve([Hold(a, 1), Hold(b, 1)], id="m0")  # (new counters)
    sent = _sent(fast)
    by_fast = fast.reserve([Hold(a, 100), Hold(b, 100)], id="m1", meta={"by": "fast"})
    by_general = general.reserve([Hold(a, 200), Hold(b, 200)], id="m2", meta={"by": "general"})
    assert general.commit(by_fast, {"usd": 70}).spent == (70, 70)
    assert fast.commit(by_general, {"usd": 150}, meta={"at": 2}).spent == (220, 220)
    fast.reserve([Hold(a, 5), Hold(b, 5)], id="m3")
    general.reserve([Hold(a, 6), Hold(b, 6)], id="m4")
    assert general.commit("m3", {"usd": 5}).spent == (225, 225)
    assert fast.commit("m4", {"usd": 6}).spent == (231, 231)
    assert sent == ["reserve_fast", "commit_fast", "reserve_fast", "record", "commit_fast"]
    for s in (fast, general):
        assert [_spent_held(s, spec) for spec in (a, b)] == [(231, 1), (231, 1)]
    assert fast.commit("m2", {"usd": 1}).duplicate and general.commit("m1", {"usd": 1}).duplicate
    data = {e.reservation_id: e.data for e in fast.history()}
    assert data == {"m1": {"by": "fast"}, "m2": {"by": "general", "at": 2}, "m3": {}, "m4": {}}


def test_fast_and_general_clients_race_to_the_limit_exactly(pair: tuple[RedisLedger, RedisLedger]) -> None:
    """4 threads (2 each path) of 3-scope pairs on shared counters stop exactly at the limit; every
    counter's spent is the journal's commits."""
    fast, general = pair
    specs = [counter("user:x", limit=LIMIT), counter("team:y", limit=LIMIT), counter("global", limit=LIMIT)]
    admitted = [0] * 4

    def work(i: int) -> None:
        store = (fast, general)[i % 2]
        for j in range(60):
            try:
                res = store.reserve([Hold(s, 1_000_000) for s in specs], id=f"p{i}-{j}")
            except BudgetExceededError:
                continue
            store.commit(res, {"usd": 900_000})
            admitted[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    charged = sum(admitted) * 900_000
    assert [_spent_held(fast, s) for s in specs] == [(charged, 0)] * 3
    commits = [e for e in fast.history() if e.event == "committed"]
    assert sum(e.amounts["usd"] for e in commits) == charged and len(commits) == sum(admitted)
    assert charged <= LIMIT < charged + 1_000_000
    assert all(n > 0 for n in admitted), admitted


LIMIT = 100 * 900_000 + 1_000_000
"""The race's counters: 100 pairs' charges and one hold."""


# -- random sequences: the same with or without the fast path -----------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_random_operations_do_the_same_with_and_without_the_fast_path(
    redis_url: str, ops: list[tuple[Any, ...]]
) -> None:
    """One by one, in two namespaces, one store with the fast path and one without: the same replies,
    the same keys, field by field (times aside), the journal's entries in the same order (every ended
    lease a call meets sends it to the general path, which reclaims and journals it first)."""
    from .test_redis_batch_model import COUNTERS

    now = time.time_ns() // 1_000_000
    with _store(redis_url) as with_fast, _store(redis_url) as without:
        with_fast._flows.fast = True  # (_store's are without)
        results, states = [], []
        for store in (with_fast, without):
            _prepare(store, now)
        time.sleep(0.005)
        for store in (with_fast, without):
            results.append([_result(r) for r in _one_by_one(store, _flows(store, ops, now))])
            states.append(_state(store))
            store.status(COUNTERS[:3])  # (then a status: what it reclaims, the same too)
            states.append(_state(store))
        assert results[0] == results[1]
        assert states[:2] == states[2:]

"""Redis memory stays bounded: past windows, resolved reservations and the journal all expire."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
import redis

from budgetguard._budgets import Period, Unit
from budgetguard._ledger import Hold, open_ledger
from budgetguard._ledger._expiry import COUNTER_RETENTION_MS, RECORD_RETENTION_MS
from budgetguard._ledger._redis import RedisLedger
from tests.redis_server import delete_namespace

from .helpers import counter


@pytest.fixture
def ns(redis_url: str) -> Iterator[str]:
    name = "t" + secrets.token_hex(6)
    yield name
    delete_namespace(redis_url, name)


def test_counters_expire_after_their_window(redis_url: str, ns: str) -> None:
    store = open_ledger(f"{redis_url}?namespace={ns}")
    assert isinstance(store, RedisLedger)
    hourly = counter("user:a", limit=100, period=Period.HOUR)
    total = counter("user:a", limit=100, unit=Unit.TOKENS, period=Period.TOTAL)
    res = store.reserve([Hold(hourly, 5), Hold(total, 5)], lease=30)
    raw = redis.Redis.from_url(redis_url)
    hourly_key, hourly_leases = store._flows.keys.counter(hourly, res.held[0].window_start)
    total_key, _ = store._flows.keys.counter(total, 0)
    expected = res.held[0].window_end + COUNTER_RETENTION_MS  # type: ignore[operator]
    assert raw.pexpiretime(hourly_key) == expected
    assert raw.pexpiretime(hourly_leases) == expected
    assert raw.pexpiretime(total_key) == -1  # a total never resets: kept
    record = store._flows.keys.record(res.id)
    # (a record's TTL is set relative, PX, for Redis before 6.2: the server counts it from the script's
    # start, which may be a millisecond before or after the TIME the script read)
    assert abs(raw.pexpiretime(record) - (res.expires_at + RECORD_RETENTION_MS)) <= 2
    store.commit(res, {"usd": 1, "tokens": 1})
    now_ms = time.time_ns() // 1_000_000
    assert (
        now_ms + RECORD_RETENTION_MS - 5_000
        <= raw.pexpiretime(record)
        <= res.expires_at + RECORD_RETENTION_MS + 2
    )
    raw.close()
    store.close()


def test_journal_is_capped(redis_url: str, ns: str) -> None:
    store = open_ledger(f"{redis_url}?namespace={ns}&journal_maxlen=100")
    spec = counter("user:a", limit=10**9)
    for _ in range(400):
        store.release(store.reserve([Hold(spec, 1)]))
    raw = redis.Redis.from_url(redis_url)
    length = raw.xlen(f"bg:{{{ns}}}:journal")
    assert 100 <= length < 400  # MAXLEN ~ trims in whole macro-nodes: bounded, not exact
    raw.close()
    store.close()


def _ttls(raw: redis.Redis, ns: str) -> dict[str, int]:
    """PTTL of every key of a namespace (-1: no expiry)."""
    return {key.decode(): raw.pttl(key) for key in raw.scan_iter(match=f"bg:{{{ns}}}:*")}


def test_a_late_commit_leaves_no_key_without_an_expiry(redis_url: str, ns: str) -> None:
    """A commit after its lease ended and its counter expired (a long call, a window long gone) writes
    the counter again: with its expiry, never a key that lives for good. Only the journal (capped by
    MAXLEN) and an operator's limits are meant to live on."""
    store = open_ledger(f"{redis_url}?namespace={ns}")
    assert isinstance(store, RedisLedger)
    raw = redis.Redis.from_url(redis_url)
    try:
        minute = counter("user:late", limit=10**6, period=Period.MINUTE)
        hourly = counter("global", limit=10**6, unit=Unit.TOKENS, period=Period.HOUR)
        res = store.reserve([Hold(minute, 50), Hold(hourly, 50)], lease=0.05)
        keys = [store._flows.keys.counter(h.counter, h.window_start) for h in res.held]
        for counter_key, leases_key in keys:  # what Redis does at window end + retention
            raw.delete(counter_key, leases_key)
        time.sleep(0.1)  # the lease has ended too
        out = store.commit(res, {"usd": 40, "tokens": 30})
        assert (out.expired, out.spent) == (True, (40, 30))  # charged once, in counters made again
        ttls = _ttls(raw, ns)
        journal = store._flows.keys.journal
        assert ttls.pop(journal) == -1  # the history: capped by XADD MAXLEN, not by time
        assert [k for k, ttl in ttls.items() if ttl < 0] == []
        for held, (counter_key, _) in zip(res.held, keys, strict=True):
            assert held.window_end is not None
            assert raw.pexpiretime(counter_key) == held.window_end + COUNTER_RETENTION_MS
        # a repeat and a later reservation keep it so
        store.commit(res, {"usd": 40, "tokens": 30})
        store.release(store.reserve([Hold(minute, 5), Hold(hourly, 5)], lease=30))
        ttls = _ttls(raw, ns)
        ttls.pop(journal)
        assert [k for k, ttl in ttls.items() if ttl < 0] == []
    finally:
        raw.close()
        store.close()

"""Redis memory stays bounded: past windows, resolved reservations and the journal all expire."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
import redis

from budgetguard._budgets import Period, Unit
from budgetguard._ledger import Hold, open_ledger
from budgetguard._ledger._engine import COUNTER_RETENTION_MS, RECORD_RETENTION_MS
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
    assert raw.pexpiretime(record) == res.expires_at + RECORD_RETENTION_MS
    store.commit(res, {"usd": 1, "tokens": 1})
    now_ms = time.time_ns() // 1_000_000
    assert (
        now_ms + RECORD_RETENTION_MS - 5_000
        <= raw.pexpiretime(record)
        <= res.expires_at + RECORD_RETENTION_MS
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

"""Lost, delayed and reset Redis replies under concurrent load, with redis-py's default retries on.

A chaos proxy sits between every client and a real Redis. Nothing is charged twice, nothing is lost,
and every reservation ends in exactly the state its caller was told.
"""

from __future__ import annotations

import copy
import inspect
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.retry import Retry

from budgetguard._ledger import open_ledger
from budgetguard._ledger._redis import JOURNAL_MAXLEN, RedisLedger
from tests.redis_server import delete_namespace

from . import figures
from .chaos import ChaosProxy
from .workload import Tally, assert_exact, audit, states, tight, work

REDIS_DEFAULT_RETRY: Retry = inspect.signature(redis.Redis.__init__).parameters["retry"].default
WORKERS = 8
OPS = figures.scale(60, 600)
SPECS = tight(2 * OPS)
"""Binding about halfway through the run."""


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    ns = "c" + secrets.token_hex(6)
    yield ns
    delete_namespace(redis_url, ns)


def _client(url: str, namespace: str, default_retry: bool) -> RedisLedger:
    if not default_retry:  # what open_ledger configures (3 quick retries)
        store = open_ledger(f"{url}?namespace={namespace}")
        assert isinstance(store, RedisLedger)
        return store
    client = redis.Redis.from_url(url, decode_responses=True, retry=copy.deepcopy(REDIS_DEFAULT_RETRY))
    return RedisLedger(f"{url}?namespace={namespace}", client, namespace, JOURNAL_MAXLEN)


def test_chaos_proxy_loses_nothing_and_charges_nothing_twice(redis_url: str, namespace: str) -> None:
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    with ChaosProxy((parts.hostname, parts.port), drop=0.04, reset=0.03, delay=0.04, seed=7) as proxy:
        # half the workers on redis.Redis's own default retry policy, half on open_ledger's
        clients = [_client(proxy.url, namespace, default_retry=i % 2 == 0) for i in range(WORKERS)]
        options: dict[str, Any] = {"ops": OPS, "deadline": time.monotonic() + 300, "specs": SPECS}
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = [
                pool.submit(work, clients[i], Tally(), prefix=f"w{i}", seed=i, **options)
                for i in range(WORKERS)
            ]
            tallies = [f.result() for f in futures]
        proxy.calm()
        total = Tally()
        for tally in tallies:
            total.merge(tally)
        result = audit(clients[0], total, SPECS)
        for client in clients:
            client.close()
        faults = dict(proxy.faults)

    assert_exact(result, total)
    assert sum(faults.values()) > 0
    assert total.duplicates > 0  # some lost replies were retried into the first write's answer
    counts = states([total])
    assert counts["committed"] > 0 and counts["refused"] > 0

    section = "lost_replies"
    figures.record(section, "reservations", len(total.states))
    figures.record(section, "ledger calls acknowledged", total.calls)
    for fault, n in faults.items():
        figures.record(section, fault, n)
    figures.record(section, "retries that found the lost first write (duplicate answers)", total.duplicates)
    figures.record(section, "LedgerErrors seen by callers (then repeated with the same id)", total.errors)
    for state in ("committed", "released", "refused"):
        figures.record(section, f"reservations {state}", counts[state])
    figures.record(section, "double charges", result.double_charges)
    figures.record(section, "nano-USD lost", result.lost)
    figures.record(section, "leaked holds (nano-USD still held)", result.leaked)

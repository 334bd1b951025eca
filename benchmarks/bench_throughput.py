"""Redis throughput: reserve+commit pairs at 1, 8 and 32 concurrent clients against raw round trips.

Each client runs its share of a fixed number of operations, all clients started together; the figure
of a batch is its wall time per operation over all clients (the inverse of throughput). The candidate
is budgetguard's Redis ledger, one pair (``reserve`` on a 1-scope hold, ``user:client-<i>`` USD per
day, then ``commit`` with the returned ``Reservation``); the baseline is one ``EVALSHA`` of
``return 1``, registered on the very client the ledger uses, at the same concurrency. A pair is two
round trips, so the target is the ledger benchmark's ≤ 2.3.

* ``threads``: N threads share one sync ``RedisLedger`` (one redis-py client and its connection pool,
  as an application would), each thread released by a barrier; wall from the first start to the last
  end.
* ``asyncio``: N tasks share one ``AsyncRedisLedger`` (``open_async_ledger``) on one event loop,
  started with ``asyncio.gather``.

Trials alternate which side goes first; the ratio is the median of per-trial ratios. The Redis is the
ledger benchmark's (``BUDGETGUARD_BENCH_REDIS_URL``, else a private ``redis-server``/``valkey-server``),
in a fresh namespace that is deleted at the end. On a 2-vCPU machine the client process, not the server,
is the bottleneck (see ``bench_ledger``): more clients mostly share the same CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from statistics import median
from typing import Any

from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, open_async_ledger, open_ledger

from ._common import bench_redis, interleave, ratio_row, skipped
from ._harness import threads_batch
from .bench_ledger import ACTUAL, HOLD, LIMIT, PAIR_TARGET

CLIENTS = (1, 8, 32)


def _holds(clients: int) -> list[tuple[Hold, ...]]:
    return [
        (Hold(CounterSpec(Scope("user", f"client-{i}"), Unit.USD, Period.DAY, LIMIT), HOLD),)
        for i in range(clients)
    ]


def _per_client(total: int, clients: int) -> int:
    return max(2, total // clients)


async def _tasks_batch(work: Callable[[int], Awaitable[object]], clients: int, count: int) -> float:
    """Wall ns per operation: ``count`` awaits of ``work(i)`` in each of ``clients`` tasks."""

    async def worker(i: int) -> None:
        for _ in range(count):
            await work(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return (time.perf_counter() - started) * 1e9 / (count * clients)


def _row(kind: str, clients: int, pairs: list[float], raws: list[float], count: int) -> dict[str, Any]:
    name = f"redis {kind}: {clients} client{'s' if clients > 1 else ''}, reserve+commit vs EVALSHA"
    return ratio_row(
        name,
        pairs,
        raws,
        unit="us/op",
        scale=1000,
        target=PAIR_TARGET,
        iterations=count * clients,
        ops_per_s={"pairs": round(1e9 / median(pairs)), "raw_evalsha": round(1e9 / median(raws))},
    )


Batch = Callable[[Callable[[int], Any], int, int], float]


def _measure(
    kind: str, batch: Batch, pair_for: Callable[[list[tuple[Hold, ...]]], Callable[[int], Any]],
    evalsha: Callable[[int], Any], trials: int, total: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per concurrency: ``batch(work, clients, count)`` runs ``work(i)`` in each client."""
    rows = []
    for clients in CLIENTS:
        pair = pair_for(_holds(clients))
        pairs, raws = _per_client(total, clients), _per_client(4 * total, clients)
        batch(pair, clients, 2)  # warm-up: the pool's connections, the scripts
        batch(evalsha, clients, 2)
        cand, base = interleave(
            lambda: batch(pair, clients, pairs),  # noqa: B023 (called in this iteration)
            lambda: batch(evalsha, clients, raws),  # noqa: B023
            trials,
        )
        rows.append(_row(kind, clients, cand, base, pairs))
    return rows


def _threads_rows(url: str, namespace: str, trials: int, total: int) -> list[dict[str, Any]]:
    ledger: Any = open_ledger(url, namespace=namespace)
    try:
        raw = ledger.client.register_script("return 1")

        def pair_for(holds: list[tuple[Hold, ...]]) -> Callable[[int], object]:
            return lambda i: ledger.commit(ledger.reserve(holds[i]), ACTUAL)

        return _measure("threads", threads_batch, pair_for, lambda _: raw(), trials, total)
    finally:
        ledger.close()


def _asyncio_rows(url: str, namespace: str, trials: int, total: int) -> list[dict[str, Any]]:
    loop = asyncio.new_event_loop()
    ledger: Any = open_async_ledger(url, namespace=namespace)
    try:
        raw = ledger.client.register_script("return 1")

        def pair_for(holds: list[tuple[Hold, ...]]) -> Callable[[int], Awaitable[object]]:
            async def pair(i: int) -> object:
                return await ledger.commit(await ledger.reserve(holds[i]), ACTUAL)

            return pair

        def batch(work: Callable[[int], Awaitable[object]], clients: int, count: int) -> float:
            return loop.run_until_complete(_tasks_batch(work, clients, count))

        return _measure("asyncio", batch, pair_for, lambda _: raw(), trials, total)
    finally:
        loop.run_until_complete(ledger.aclose())
        loop.close()


def run(quick: bool) -> list[dict[str, Any]]:
    trials, total = (3, 48) if quick else (11, 320)
    with bench_redis() as redis:
        if redis is None:
            return [skipped("redis throughput", "no Redis: no redis-server/valkey-server, no URL set")]
        url, namespace, _ = redis
        rows = _threads_rows(url, namespace, trials, total)
        rows += _asyncio_rows(url, namespace, trials, total)
    return rows

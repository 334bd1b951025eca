"""Redis throughput: guarded reserve+commit pairs of concurrent callers against a raw loop of one simple
reserve script per call at the same concurrency (issue 17's group-commit target).

Each client runs its share of a fixed number of operations, all clients started together; the figure
of a batch is its wall time per operation over all clients (the inverse of throughput), and the ratio
is the pair's over the raw call's: ≤ 1.0 means the guarded pairs reach at least the raw loop's
throughput (issue 17: 32 callers at least 1.0x, from 0.22).

* candidate: budgetguard's Redis ledger, one pair per operation (``reserve`` on a 1-scope hold,
  ``user:client-<i>`` USD per day, then ``commit`` with the returned ``Reservation``), all clients of
  a process sharing one store (as an application would): their concurrent calls go out together
  (group commit, ``_redis_batch.py``).
* baseline: a raw loop of ``RAW_RESERVE`` (``HINCRBY`` of the amount, refused and undone past a
  limit: the simplest equivalent reserve), one ``EVALSHA`` per call on its own redis-py client shared
  by the same number of clients (its pool gives each thread a connection).

Rows: ``threads`` (1, 8, 32 threads of one process, released by a barrier), ``asyncio`` (1, 8, 32
tasks of one event loop, ``open_async_ledger`` and ``redis.asyncio``), ``processes`` (4 ``spawn``
processes x 8 threads, started once; each batch starts at one instant on the shared monotonic clock).
Trials alternate which side goes first; the ratio is the median of per-trial ratios. The Redis is the
ledger benchmark's (``BUDGETGUARD_BENCH_REDIS_URL``, else a private ``redis-server``), in a fresh
namespace deleted at the end. On a 2-vCPU machine client and server share the CPU.

``python -m benchmarks.bench_throughput --callgrind [PAIRS] [--keep DIR]`` counts the client's
instructions per pair (32 threads, 32 tasks) and per raw call under callgrind, with the operations a
script call carried (the server's ``EVALSHA`` count): timings wander on a shared host, counts do not.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Awaitable, Callable
from statistics import median
from typing import Any

from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, open_async_ledger, open_ledger

from ._common import bench_redis, interleave, ratio_row, skipped
from ._harness import threads_batch
from .bench_ledger import ACTUAL, HOLD, LIMIT

CLIENTS = (1, 8, 32)
PROCESSES, PROCESS_THREADS = 4, 8
TARGET = 1.0  # wall per pair over wall per raw reserve call: the pairs' throughput at least the raw loop's
RAW_RESERVE = """
local spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
if spent > tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'spent', -tonumber(ARGV[1]))
  return 0
end
return 1
"""


def _holds(clients: int, tag: str = "") -> list[tuple[Hold, ...]]:
    return [
        (Hold(CounterSpec(Scope("user", f"client{tag}-{i}"), Unit.USD, Period.DAY, LIMIT), HOLD),)
        for i in range(clients)
    ]


def _raw_keys(namespace: str, clients: int, tag: str = "") -> list[list[str]]:
    return [[f"bg:{{{namespace}}}:raw{tag}:{i}"] for i in range(clients)]


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


def _row(kind: str, clients: str, pairs: list[float], raws: list[float], count: int) -> dict[str, Any]:
    return ratio_row(
        f"redis {kind}: {clients}, reserve+commit vs raw reserve script",
        pairs,
        raws,
        unit="us/op",
        scale=1000,
        target=TARGET,
        iterations=count,
        ops_per_s={"pairs": round(1e9 / median(pairs)), "raw_reserve": round(1e9 / median(raws))},
        throughput_x=round(median(raws) / median(pairs), 3),
    )


Batch = Callable[[Callable[[int], Any], int, int], float]


def _cpu(run: Callable[[], object], ops: int, server: Any) -> dict[str, float]:
    """µs per operation of ``run()`` (``ops`` operations): this process's CPU, all its threads, and
    with ``server`` (a client of our private server) the server's (``INFO cpu``)."""

    def server_cpu() -> float:
        cpu = server.info("cpu")
        return float(cpu["used_cpu_user"] + cpu["used_cpu_sys"])

    before = server_cpu() if server is not None else 0.0
    started = time.process_time()
    run()
    out = {"client_cpu": round((time.process_time() - started) * 1e6 / ops, 1)}
    if server is not None:
        out["server_cpu"] = round((server_cpu() - before) * 1e6 / ops, 1)
    return out


def _measure(
    kind: str, batch: Batch, pair_for: Callable[[list[tuple[Hold, ...]]], Callable[[int], Any]],
    raw: Callable[[int], Any], trials: int, total: int, server: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per concurrency: ``batch(work, clients, count)`` runs ``work(i)`` in each client."""
    rows = []
    for clients in CLIENTS:
        pair = pair_for(_holds(clients))
        count = _per_client(total, clients)
        batch(pair, clients, 2)  # warm-up: connections, scripts
        batch(raw, clients, 2)
        cand, base = interleave(
            lambda: batch(pair, clients, count),  # noqa: B023 (called in this iteration)
            lambda: batch(raw, clients, count),  # noqa: B023
            trials,
        )
        name = f"{clients} thread{'s' if clients > 1 else ''}" if kind == "threads" else f"{clients} tasks"
        ops = count * clients
        cpu = {
            side: _cpu(lambda w=work: batch(w, clients, count), ops, server)  # noqa: B023
            for side, work in (("pair", pair), ("raw_reserve", raw))
        }
        rows.append(_row(kind, name, cand, base, ops) | {"cpu_us_per_op": cpu})
    return rows


def _threads_rows(url: str, namespace: str, trials: int, total: int, server: Any) -> list[dict[str, Any]]:
    import redis

    ledger: Any = open_ledger(url, namespace=namespace)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        script = client.register_script(RAW_RESERVE)
        keys = _raw_keys(namespace, max(CLIENTS))

        def pair_for(holds: list[tuple[Hold, ...]]) -> Callable[[int], object]:
            return lambda i: ledger.commit(ledger.reserve(holds[i]), ACTUAL)

        def raw(i: int) -> object:
            return script(keys=keys[i], args=[HOLD, LIMIT])

        return _measure("threads", threads_batch, pair_for, raw, trials, total, server)
    finally:
        ledger.close()
        client.close()


def _asyncio_rows(url: str, namespace: str, trials: int, total: int, server: Any) -> list[dict[str, Any]]:
    import redis.asyncio

    loop = asyncio.new_event_loop()
    ledger: Any = open_async_ledger(url, namespace=namespace)
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        script = client.register_script(RAW_RESERVE)
        keys = _raw_keys(namespace, max(CLIENTS))

        def pair_for(holds: list[tuple[Hold, ...]]) -> Callable[[int], Awaitable[object]]:
            async def pair(i: int) -> object:
                return await ledger.commit(await ledger.reserve(holds[i]), ACTUAL)

            return pair

        async def raw(i: int) -> object:
            return await script(keys=keys[i], args=[HOLD, LIMIT])

        def batch(work: Callable[[int], Awaitable[object]], clients: int, count: int) -> float:
            return loop.run_until_complete(_tasks_batch(work, clients, count))

        return _measure("asyncio", batch, pair_for, raw, trials, total, server)
    finally:
        loop.run_until_complete(ledger.aclose())
        loop.run_until_complete(client.aclose())
        loop.close()


# -- processes ---------------------------------------------------------------------------------------


def _process_worker(url: str, namespace: str, tag: str, conn: Any) -> None:
    """One process of the processes row: ``(side, count, start_at)`` in, ``(first start, last end)``
    of its threads out (``time.monotonic``: one clock for all processes); ``None`` ends it."""
    import redis

    ledger: Any = open_ledger(url, namespace=namespace)
    client = redis.Redis.from_url(url, decode_responses=True)
    script = client.register_script(RAW_RESERVE)
    holds, keys = _holds(PROCESS_THREADS, tag), _raw_keys(namespace, PROCESS_THREADS, tag)
    work = {
        "pair": lambda i: ledger.commit(ledger.reserve(holds[i]), ACTUAL),
        "raw": lambda i: script(keys=keys[i], args=[HOLD, LIMIT]),
    }
    try:
        while (order := conn.recv()) is not None:
            side, count, start_at = order
            spans: list[tuple[float, float]] = []

            def run(
                i: int, side: str = side, count: int = count, start_at: float = start_at,
                spans: list[tuple[float, float]] = spans,
            ) -> None:  # fmt: skip
                time.sleep(max(0.0, start_at - time.monotonic()))
                started = time.monotonic()
                for _ in range(count):
                    work[side](i)
                spans.append((started, time.monotonic()))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(PROCESS_THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            conn.send((min(s for s, _ in spans), max(e for _, e in spans)))
    finally:
        ledger.close()
        client.close()


def _processes_row(url: str, namespace: str, trials: int, total: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for p in range(PROCESSES):
        here, there = context.Pipe()
        proc = context.Process(target=_process_worker, args=(url, namespace, f"p{p}", there), daemon=True)
        proc.start()
        pipes.append(here)
        procs.append(proc)
    clients = PROCESSES * PROCESS_THREADS
    count = _per_client(total, clients)

    def batch(side: str, each: int) -> float:
        start_at = time.monotonic() + 0.05
        for pipe in pipes:
            pipe.send((side, each, start_at))
        spans = [pipe.recv() for pipe in pipes]
        elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
        return elapsed * 1e9 / (each * clients)

    try:
        batch("pair", 2)  # warm-up
        batch("raw", 2)
        cand, base = interleave(lambda: batch("pair", count), lambda: batch("raw", count), trials)
    finally:
        for pipe in pipes:
            pipe.send(None)
        for proc in procs:
            proc.join(30)
    return _row("processes", f"{PROCESSES} x {PROCESS_THREADS} threads", cand, base, count * clients)


def run(quick: bool) -> list[dict[str, Any]]:
    trials, total = (3, 96) if quick else (9, 640)
    with bench_redis() as redis:
        if redis is None:
            return [skipped("redis throughput", "no Redis: no redis-server/valkey-server, no URL set")]
        import redis as redis_py

        url, namespace, own = redis
        server = redis_py.Redis.from_url(url) if own else None  # nobody else's traffic: its CPU is ours
        try:
            rows = _threads_rows(url, namespace, trials, total, server)
            rows += _asyncio_rows(url, namespace, trials, total, server)
            rows.append(_processes_row(url, namespace, trials, total))
        finally:
            if server is not None:
                server.close()
    return rows


# -- instructions: python -m benchmarks.bench_throughput --callgrind [PAIRS] [--keep DIR] --------------

COUNTED = 32  # callers of the counted run
SIDES = ("threads", "tasks", "rawthreads", "rawtasks")


def _count_side(side: str, pairs: int) -> None:
    """In the valgrind child: 32 callers (threads or tasks of one store) each run ``pairs / 32`` pairs
    (``raw*``: raw reserve calls), counted after a warm-up; prints the server's ``EVALSHA`` calls
    during the counted run (pairs x 2 / calls: the operations a batch call carried)."""
    import redis

    from ._harness import callgrind_switch

    per = max(1, pairs // COUNTED)
    with bench_redis() as found:
        if found is None:
            raise SystemExit("no Redis server")
        url, namespace, _ = found
        server = redis.Redis.from_url(url)

        def evalshas() -> int:
            return int(server.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

        holds, keys = _holds(COUNTED), _raw_keys(namespace, COUNTED)
        if side in ("threads", "rawthreads"):
            ledger: Any = open_ledger(url, namespace=namespace)
            client = redis.Redis.from_url(url, decode_responses=True)
            script = client.register_script(RAW_RESERVE)
            if side == "threads":
                reserve, commit = ledger.reserve, ledger.commit
                work: Callable[[int], object] = lambda i: commit(reserve(holds[i]), ACTUAL)  # noqa: E731
            else:
                work = lambda i: script(keys=keys[i], args=[HOLD, LIMIT])  # noqa: E731
            gates = [threading.Barrier(COUNTED + 1) for _ in range(3)]

            def run(i: int) -> None:
                for _ in range(20):  # warm-up
                    work(i)
                gates[0].wait()
                gates[1].wait()
                for _ in range(per):
                    work(i)
                gates[2].wait()

            threads = [threading.Thread(target=run, args=(i,)) for i in range(COUNTED)]
            for thread in threads:
                thread.start()
            gates[0].wait()
            before = evalshas()
            callgrind_switch("on")
            gates[1].wait()
            gates[2].wait()
            callgrind_switch("off")
            after = evalshas()
            for thread in threads:
                thread.join()
            ledger.close()
            client.close()
        else:
            import redis.asyncio

            loop = asyncio.new_event_loop()
            aledger: Any = open_async_ledger(url, namespace=namespace)
            aclient = redis.asyncio.Redis.from_url(url, decode_responses=True)
            ascript = aclient.register_script(RAW_RESERVE)

            async def pair(i: int) -> object:
                return await aledger.commit(await aledger.reserve(holds[i]), ACTUAL)

            async def raw(i: int) -> object:
                return await ascript(keys=keys[i], args=[HOLD, LIMIT])

            awork = pair if side == "tasks" else raw
            loop.run_until_complete(_tasks_batch(awork, COUNTED, 20))
            before = evalshas()
            callgrind_switch("on")
            loop.run_until_complete(_tasks_batch(awork, COUNTED, per))
            callgrind_switch("off")
            after = evalshas()
            loop.run_until_complete(aledger.aclose())
            loop.run_until_complete(aclient.aclose())
            loop.close()
        server.close()
    print(f"evalsha={after - before} ops={per * COUNTED}")


def callgrind(pairs: int = 1920, keep: str | None = None) -> dict[str, dict[str, float]]:
    """Client instructions per pair (per raw call for ``raw*``) of each side, and the operations a
    script call carried on average (the server's ``EVALSHA`` count)."""
    import re
    import tempfile

    from ._harness import run_counted

    out: dict[str, dict[str, float]] = {}
    for side in SIDES:
        with tempfile.TemporaryDirectory() as tmp:
            counted, printed = run_counted("bench_throughput", side, pairs, f"{keep or tmp}/{side}.cg")
        stats = re.search(r"evalsha=(\d+) ops=(\d+)", printed)
        if stats is None:
            raise RuntimeError(f"no operation count from the counted side: {printed[-500:]}")
        ops, calls = int(stats.group(2)), int(stats.group(1))
        per_script_call = ops * (1 if side.startswith("raw") else 2) / max(1, calls)
        out[side] = {"instructions": counted / ops, "ops_per_script_call": per_script_call}
    return out


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--count-side"]:
        _count_side(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--callgrind"]:
        rest = sys.argv[2:]
        keep = rest[rest.index("--keep") + 1] if "--keep" in rest else None
        numbers = [int(a) for a in rest if a.isdigit()]
        for side, figures in callgrind(*numbers[:1], keep=keep).items():
            print(f"{side:>10}: {figures['instructions'] / 1000:8.1f}k client instructions per "
                  f"{'call' if side.startswith('raw') else 'pair'}, "
                  f"{figures['ops_per_script_call']:.1f} operations per script call")  # fmt: skip
    else:
        sys.exit("usage: python -m benchmarks.bench_throughput --callgrind [PAIRS] [--keep DIR]")

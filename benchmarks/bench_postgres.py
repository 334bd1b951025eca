"""The PostgreSQL ledger: a reserve + commit pair against one raw write transaction on the same server.

Every pair reserves on 1 counter or on 3 (``bench_ledger``'s holds) and commits with the
``Reservation`` that ``reserve`` returned; limits are never reached. The raw side is the least a
PostgreSQL write costs: ``BEGIN; UPDATE (1 row of a table of its own); COMMIT`` on one psycopg
connection to the same server, with the same durability (``synchronous_commit`` on: each commit waits
for its WAL flush). A pair is two such transactions (its reserve and its commit), each with its locks,
reads and writes, so a ratio of 2 is the floor.

* ``postgres: reserve+commit, N scopes vs 1 raw write transaction``: one client, timed with
  ``_harness.compare`` (interleaved trials, median of the per-trial ratios).
* ``postgres: 8 clients, ...``: 8 threads, each with its own ``PostgresLedger`` (its own pool), run
  pairs on the same counters at once (their locks make them take turns); against 8 threads each running
  the raw transaction on its own connection on the same row. Value and baseline are wall µs per
  operation over all threads (the inverse of throughput).

The server is ``BUDGETGUARD_BENCH_POSTGRES_URL`` (the benchmark then works in a fresh namespace and a
table of its own, and deletes both), else a private one started as the test suite starts it
(``tests/postgres_server.py``: ``initdb`` on PATH, Debian's, or the ``pgserver`` wheel), removed at the
end. Without any, the rows are skipped.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._common import interleave, ratio_row, row, skipped
from ._harness import compare, threads_batch
from .bench_ledger import _holds, _pair, _same, _scopes

URL_ENV = "BUDGETGUARD_BENCH_POSTGRES_URL"
THREADS = 8
TARGETS = {1: 4.0, 3: 5.0}
"""Proposed (the issue sets none): a pair within 4x (1 scope) / 5x (3 scopes) one raw write transaction."""


@contextmanager
def _server() -> Iterator[str | None]:
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    try:
        from tests.postgres_server import PostgresServer

        server = PostgresServer().start()
    except Exception as exc:  # (no PostgreSQL binaries, or psycopg missing)
        print(f"  postgres rows skipped: {exc}", flush=True)
        yield None
        return
    try:
        yield server.url
    finally:
        server.remove()


def _raw_tx(conn: Any, table: str) -> Callable[[object], None]:
    def transaction(_: object) -> None:
        with conn.transaction():
            conn.execute(f"UPDATE {table} SET v = v + 1 WHERE k = 1")

    return transaction


def _rows(quick: bool, url: str, namespace: str, table: str) -> list[dict[str, Any]]:
    import psycopg

    from budgetguard._ledger import open_ledger

    trials, iterations = (5, 40) if quick else (15, 200)
    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (k integer PRIMARY KEY, v bigint NOT NULL)")
        conn.execute(f"INSERT INTO {table} (k, v) VALUES (1, 0)")
        raw = _raw_tx(conn, table)
        with open_ledger(url, namespace=namespace) as ledger:
            for scopes in (1, 3):
                holds = _holds(scopes)
                _pair(ledger)(holds)  # (the counters' rows made)
                result = compare(
                    _pair(ledger), raw, functools.partial(_same, item=holds),
                    trials=trials, iterations=iterations,
                )  # fmt: skip
                rows.append(
                    row(
                        f"postgres: reserve+commit, {_scopes(scopes)} vs 1 raw write transaction",
                        result,
                        target=TARGETS[scopes],
                        target_is="proposed (the issue sets none)",
                        raw_is="BEGIN; UPDATE (1 row); COMMIT on one connection, synchronous_commit on",
                    )
                )
        rows += [_threads_row(quick, url, namespace, table, scopes) for scopes in (1, 3)]
    return rows


def _threads_row(quick: bool, url: str, namespace: str, table: str, scopes: int) -> dict[str, Any]:
    import psycopg

    from budgetguard._ledger import open_ledger

    trials, pairs, raws = (3, 10, 20) if quick else (9, 40, 80)
    ledgers = [open_ledger(url, namespace=namespace) for _ in range(THREADS)]
    conns = [psycopg.connect(url, autocommit=True) for _ in range(THREADS)]
    try:
        holds = _holds(scopes)
        pair_fns = [_pair(ledger) for ledger in ledgers]
        raw_fns = [_raw_tx(conn, table) for conn in conns]

        def pairs_batch() -> float:
            return threads_batch(lambda i: pair_fns[i](holds), THREADS, pairs)

        def raws_batch() -> float:
            return threads_batch(lambda i: raw_fns[i](None), THREADS, raws)

        pairs_batch()  # (warm-up: connections, prepared statements)
        raws_batch()
        cand, base = interleave(pairs_batch, raws_batch, trials)
    finally:
        for ledger in ledgers:
            ledger.close()
        for conn in conns:
            conn.close()
    return ratio_row(
        f"postgres: {THREADS} clients, reserve+commit, {_scopes(scopes)} vs 1 raw write transaction "
        "(wall per op)",
        cand, base, unit="us/op", scale=1000, target=None,
        raw_is=f"{THREADS} connections, each BEGIN; UPDATE (the same row); COMMIT",
    )  # fmt: skip


def run(quick: bool) -> list[dict[str, Any]]:
    try:
        import psycopg
    except ImportError:
        return [skipped("postgres", "psycopg not installed (pip install 'llm-budgetguard[postgres]')")]
    with _server() as url:
        if url is None:
            return [skipped("postgres", "no PostgreSQL server")]
        namespace = "bench" + secrets.token_hex(6)
        table = f"bench_raw_{secrets.token_hex(6)}"
        try:
            return _rows(quick, url, namespace, table)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                for name in ("counters", "leases", "reservations", "limits", "journal", "meta"):
                    conn.execute(f"DELETE FROM budgetguard_{name} WHERE ns = %s", (namespace,))

"""The PostgreSQL store's time bounds: a frozen lock holder and a hung server end in ``LedgerError``
after the operation's deadline (not never), and a history stream kept open pins no pooled
connection. No timing assertions: each test asserts what happened, not how fast."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from budgetguard._errors import LedgerError
from budgetguard._ledger import Hold, open_ledger
from budgetguard._ledger._engine import counter_key
from budgetguard._ledger._expiry import window_at
from budgetguard._ledger._postgres import PostgresLedger
from budgetguard._ledger._postgres_tx import LOCK, lock_id
from tests import postgres_server
from tests.postgres_server import PostgresServer, with_options

from .helpers import counter


@pytest.fixture
def namespace(postgres_url: str) -> Iterator[str]:
    ns = "time" + secrets.token_hex(4)
    yield ns
    postgres_server.delete_namespace(postgres_url, ns)


def test_a_frozen_lock_holder_is_a_ledger_error_then_freed_by_the_server(
    postgres_url: str, namespace: str
) -> None:
    spec = counter("user:frozen", 10_000)
    with open_ledger(with_options(postgres_url, namespace=namespace, deadline="0.5")) as store:
        assert isinstance(store, PostgresLedger)
        store.reserve([Hold(spec, 1)])
        with store._pool.connection() as conn:
            now = conn.execute(
                "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            ).fetchone()
        key = counter_key(spec, window_at(spec, now[0]).start)
        # a worker that took the counter's lock and froze mid-transaction (a pooled session: the
        # store's own settings, its idle-in-transaction timeout among them)
        holder = store._pool.getconn()
        holder.execute("BEGIN")
        holder.execute(LOCK, ([lock_id("c", namespace, key)],))
        with pytest.raises(LedgerError, match="timed out"):
            store.reserve([Hold(spec, 1)])
        # the server ends the frozen session (idle in transaction past 2 x deadline): the lock is free
        admitted = None
        for _ in range(200):
            try:
                admitted = store.reserve([Hold(spec, 1)])
                break
            except LedgerError:
                continue
        assert admitted is not None
        with pytest.raises(psycopg.Error, match="idle-in-transaction timeout"):
            holder.execute("SELECT 1")
        store._pool.putconn(holder)
        assert store.status([spec])[0].held == 2


def test_a_hung_server_is_a_ledger_error_at_the_deadline() -> None:
    server = PostgresServer().start()
    try:
        store = open_ledger(with_options(server.url, deadline="0.5"))
        spec = counter("user:hung", 1000)
        store.reserve([Hold(spec, 1)])  # (the pool warm)
        assert server.process is not None
        processes = _server_processes(server.process.pid)
        for pid in processes:  # (connections open, nothing answered)
            os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(LedgerError, match="did not answer"):
                store.reserve([Hold(spec, 1)])
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)
        assert isinstance(store, PostgresLedger)
        assert store._watchdog.cut >= 1
        store.reserve([Hold(spec, 1)])  # (a fresh connection once the server answers again)
        store.close()
    finally:
        server.remove()


def _server_processes(postmaster: int) -> list[int]:
    """The postmaster and its backends (which start sessions of their own: not its process group)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True)
    return [postmaster, *map(int, out.stdout.split())]


def test_history_streams_kept_open_pin_no_pooled_connection(postgres_url: str, namespace: str) -> None:
    spec = counter("user:h", 10**12)
    with PostgresLedger(postgres_server.libpq_url(postgres_url), namespace=namespace, pool_size=2) as store:
        for _ in range(3):
            store.commit(store.reserve([Hold(spec, 10)]), {"usd": 5})
        streams = [store.stream_history() for _ in range(4)]
        for stream in streams:
            next(stream)  # (read in part, kept)
        store.commit(store.reserve([Hold(spec, 10)]), {"usd": 5})  # (once: a PoolTimeout)
        assert [len(list(s)) for s in streams] == [2, 2, 2, 2]  # (each its own snapshot: 3 commits)
        assert store.status([spec])[0].spent == 20

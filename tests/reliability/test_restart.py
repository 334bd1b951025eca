"""kill -9 of the Redis server (or of PostgreSQL) under load, restarted from its append-only file (WAL).

With ``appendfsync always`` no acknowledged operation is lost, nothing is charged twice, and the Lua
scripts (gone with the old process) are reloaded without the caller noticing. With ``everysec`` the
same run measures what is lost. PostgreSQL with ``synchronous_commit`` on (its default) loses nothing
acknowledged either.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from budgetguard._ledger import Ledger, open_ledger
from tests.postgres_server import PostgresServer, with_options
from tests.redis_server import RedisServer

from . import figures
from .workload import ROOMY, Tally, assert_exact, audit, work

WORKERS = 6
RESTARTS = figures.scale(3, 25)
MIN_RESERVATIONS = 50  # the run goes on until the workers made more than this many reservations
RECOVERY = 60.0  # seconds the workers get to complete a call after a restart before the test fails


def _after_progress(tallies: list[Tally], last: int) -> int:
    """The calls acknowledged so far, once more than ``last`` (fails if none completes in ``RECOVERY``)."""
    deadline = time.monotonic() + RECOVERY
    while (done := sum(t.calls for t in tallies)) <= last:
        assert time.monotonic() < deadline, f"no call completed {RECOVERY} s after a restart"
        time.sleep(0.05)
    return done


TIMEOUTS = "socket_timeout=1&socket_connect_timeout=0.5"


def _run(fsync: str) -> tuple[Tally, Ledger, RedisServer | PostgresServer, int]:
    server: RedisServer | PostgresServer
    if fsync == "postgres":  # fsync and synchronous_commit on: PostgreSQL's defaults
        server = PostgresServer().start()
        url = with_options(server.url, namespace="restart", connect_timeout="1")
    else:
        server = RedisServer(extra=("--appendonly", "yes", "--appendfsync", fsync)).start()
        url = f"{server.url}?namespace=restart&{TIMEOUTS}"
    clients = [open_ledger(url) for _ in range(WORKERS)]
    stop = threading.Event()
    tallies = [Tally() for _ in range(WORKERS)]
    progress = []  # calls acknowledged when each kill happened: the load ran across every restart
    options: dict[str, Any] = {
        "deadline": time.monotonic() + 600,
        "stop": stop,
        "tolerate_loss": fsync == "everysec",
        "specs": ROOMY,
    }
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = [
                pool.submit(work, clients[i], tallies[i], prefix=f"r{i}", ops=10**9, seed=100 + i, **options)
                for i in range(WORKERS)
            ]
            restarts = 0
            try:
                for _ in range(RESTARTS):
                    time.sleep(0.4)  # under load
                    # each kill lands after the workers got calls through since the last restart: wait
                    # for that (a slow or loaded machine takes longer to reconnect), do not assume it
                    progress.append(_after_progress(tallies, progress[-1] if progress else 0))
                    server.kill()  # kill -9: no chance to save anything
                    time.sleep(0.1)
                    if isinstance(server, RedisServer):
                        server.repair_aof()  # (a server bug: see RedisServer.repair_aof)
                    server.start()  # same port, same directory: replays the AOF
                    restarts += 1
                _after_progress(tallies, progress[-1])  # the load goes on after the last restart too
                # and until enough reservations were made to audit, however slow the machine
                while sum(len(t.states) for t in tallies) <= MIN_RESERVATIONS:
                    _after_progress(tallies, sum(t.calls for t in tallies))
            finally:
                stop.set()
            for future in futures:
                future.result()
    finally:
        for client in clients[1:]:
            client.close()
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    progress.append(total.calls)
    assert all(a < b for a, b in itertools.pairwise(progress)), progress
    return total, clients[0], server, restarts


@pytest.mark.parametrize("fsync", ["always", "everysec", "postgres"])
def test_kill_and_restart_under_load(fsync: str) -> None:
    """Redis with ``appendfsync always`` or ``everysec``; PostgreSQL (``postgres``) with its defaults,
    ``fsync`` and ``synchronous_commit`` on: every server process killed at once, then restarted on
    its data directory (crash recovery from the WAL)."""
    total, ledger, server, restarts = _run(fsync)
    try:
        result = audit(ledger, total, ROOMY)
    finally:
        ledger.close()
        if isinstance(server, PostgresServer):
            server.remove()
        else:
            server.stop()
    section = f"restart_{fsync}"
    server_name = "PostgreSQL" if fsync == "postgres" else "Redis"
    assert "NoScriptError" not in total.causes  # the scripts came back by themselves
    assert restarts == RESTARTS
    assert len(total.states) > MIN_RESERVATIONS
    if fsync != "everysec":
        assert_exact(result, total)
        assert total.forgotten == 0
    figures.record(section, "kill -9 + restart cycles", restarts)
    figures.record(section, "reservations", len(total.states))
    figures.record(section, "ledger calls acknowledged", total.calls)
    figures.record(
        section, f"LedgerErrors while {server_name} was down (repeated with the same id)", total.errors
    )
    figures.record(section, "retries that found their lost first write (duplicate answers)", total.duplicates)
    if fsync != "postgres":
        figures.record(section, "NOSCRIPT errors seen by callers", total.causes["NoScriptError"])
    figures.record(section, "acknowledged reservations the store forgot", total.forgotten)
    figures.record(section, "nano-USD of acknowledged commits lost", result.lost)
    figures.record(section, "double charges", result.double_charges)
    figures.record(section, "leaked holds (nano-USD still held)", result.leaked)

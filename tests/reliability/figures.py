"""Figures the reliability tests collect from their own runs, and their rendering into docs/reliability.md.

A test calls ``record(section, name, value)`` (values of the same name add up across tests and runs)
or ``note(section, name, text)``. When ``BUDGETGUARD_FIGURES`` names a file, the session writes what was
recorded there as JSON (see ``conftest.py``); ``python -m tests.reliability`` runs the suite with it set
and renders the file. Nothing here is typed in: a figure exists only if a test that passed recorded it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

_lock = threading.Lock()
_figures: dict[str, dict[str, Any]] = {}

LONG = os.environ.get("BUDGETGUARD_LONG_TESTS", "") not in ("", "0")
"""The long tier: more operations, more faults, more examples (the same tests, scaled)."""


def scale(fast: int, long: int) -> int:
    return long if LONG else fast


def record(section: str, name: str, value: int) -> None:
    """Add ``value`` to the figure ``name`` of ``section``."""
    with _lock:
        figures = _figures.setdefault(section, {})
        figures[name] = figures.get(name, 0) + value


def peak(section: str, name: str, value: float) -> None:
    """Keep the largest ``value`` seen for ``name`` (e.g. the slowest fail-closed time)."""
    with _lock:
        figures = _figures.setdefault(section, {})
        figures[name] = max(figures.get(name, value), value)


def note(section: str, name: str, text: str) -> None:
    with _lock:
        _figures.setdefault(section, {})[name] = text


def dump(path: str) -> None:
    with _lock:
        data = {"long": LONG, "figures": _figures}
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)  # in the order the tests recorded them


# -- rendering ----------------------------------------------------------------------------------

TITLES: Mapping[str, str] = {
    "lost_replies": "Lost, delayed and reset Redis replies (chaos proxy, redis-py default retries)",
    "async_lost_replies": "The same faults under asyncio (redis.asyncio, `open_async_ledger`)",
    "async_guard": "Guarded async calls under the chaos proxy, some cancelled mid-call",
    "async_cancel": "An async call cancelled with its reserve in flight",
    "restart_always": "kill -9 and restart of Redis under load, `appendfsync always`",
    "restart_everysec": "kill -9 and restart of Redis under load, `appendfsync everysec`",
    "restart_no_aof": "kill -9 and restart of Redis under load, no persistence (for contrast)",
    "restart_postgres": "kill -9 and restart of PostgreSQL under load, `synchronous_commit` on",
    "postgres_faults": "PostgreSQL: connections cut mid-transaction, COMMIT replies lost",
    "store_down": "Redis down or hanging: fail closed and fail open",
    "worker_crash": "Worker processes killed after reserving",
    "sqlite_crash": "SQLite: processes killed in the middle of a transaction",
    "failover": "Replica promotion after the primary is killed (asynchronous replication)",
    "load": "Bank-style load: 32 workers across processes, tight overlapping limits",
    "hostile_scopes": "Hostile scope ids",
    "bad_amounts": "Bad amounts and limits",
    "provider_fuzz": "Malformed provider responses and streams",
    "abandoned_streams": "Abandoned streams under GC pressure",
    "prices": "Unknown and zero-priced models",
    "secrets": "Secrets in logs, events and the journal",
}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


NOTES: Mapping[str, str] = {
    "lost_replies": "A TCP proxy between each client and Redis closes connections before a request reaches "
    "the server, closes them after the server executed a command (the reply is lost), and delays replies. "
    "Half the clients use redis-py's default `Retry`, half `open_ledger`'s. A caller that still sees a "
    "`LedgerError` repeats the call with the same reservation id. Every id ends in the state its caller "
    "was told; the counters equal the acknowledged commits.",
    "async_lost_replies": "The lost-replies run on the async ledger: 32 asyncio tasks on one event loop "
    "share two `AsyncRedisLedger`s, one on redis.asyncio's default `Retry`, one on `open_async_ledger`'s, "
    "behind the same chaos proxy; a task reading statuses through the proxy checks `spent + held <= limit` "
    "at every read. Every id ends in the state its caller was told; the counters equal the acknowledged "
    "commits.",
    "async_guard": "24 asyncio tasks make guarded calls (`@guard.with_budget` on `async def`s calling the "
    "real `AsyncOpenAI` and `AsyncAnthropic` clients on `MockProvider`) against the async Redis ledger "
    "behind the chaos proxy; per-user and global budgets bind partway through. 30% of the calls run under "
    "`asyncio.wait_for` with a 1-30 ms timeout, which cancels them wherever they are. Afterwards no "
    "reservation is resolved twice, each counter equals the journal's commits, every call that returned "
    "is committed as its event said, every reservation an event announced is resolved (or, where an event "
    "said the store failed, expired after its 3 s lease), and nothing is held. A reserve that failed for "
    "its caller after Redis took it (the reply lost on every retry) is unknown to the caller and ends "
    "with its lease.",
    "async_cancel": "Every Redis reply delayed 0.4 s; `asyncio.wait_for(..., 0.2)` cancels the call after "
    "its reserve reached Redis and before the reply. The call waits for the reply, releases the hold, says "
    "so (a `released` event, reason `CancelledError`) and only then ends cancelled; the hold used to stay "
    "until its 120 s lease ended, with no event.",
    "restart_always": "Workers run the bank-style workload while the server is killed with SIGKILL and "
    "restarted from its append-only file, again and again. Lua scripts vanish with the process; the "
    "client reloads them (NOSCRIPT) without the caller noticing.",
    "restart_everysec": "The same run with `appendfsync everysec`. Killing the Redis *process* loses "
    "nothing Redis already handed to the kernel, but while a background fsync is still running "
    "`everysec` postpones the AOF write (up to 2 s, Redis's `aof_delayed_fsync`) and the replies still go "
    "out: a kill -9 then loses acknowledged writes, as the figures below may show; a *machine* or OS "
    "crash can lose about a second of them. What is lost is the tail: the store restarts as it was a "
    "moment earlier, so a hold whose commit was lost is still held until its lease ends, and a reservation "
    "it forgot is unknown to its commit (`ReservationError`). Use `always` where that matters.",
    "restart_postgres": "The same workload on the PostgreSQL store, its server (fsync and "
    "`synchronous_commit` on: the defaults) killed with SIGKILL, every server process at once, and "
    "restarted on its data directory (crash recovery from the WAL), again and again. A transaction cut "
    "short is rolled back by the server; the store runs it again on a fresh connection (twice at most), "
    "then the caller repeats it with the same id.",
    "postgres_faults": "A TCP proxy between psycopg and PostgreSQL closes the connection instead of "
    "passing on the server's reply to a chosen request: a journal or reservation insert (the transaction "
    "is cut in its middle and rolled back by the server) or the COMMIT (the server committed, the client "
    "never learned it). The store runs the operation again on a fresh connection; the caller repeats it "
    "with the same id. The counters and the journal are compared with one charge per reservation.",
    "store_down": "A Redis stopped with SIGSTOP (connections accepted, never answered) and a killed one. "
    "`open_ledger` defaults `socket_timeout` and `socket_connect_timeout` to 2 s (a hung server "
    "used to block forever), and each ledger operation has one deadline, retries included (`?deadline=`, "
    "default 1.5 x `socket_timeout`): a hung server used to hold a caller for four timeouts and the backoff "
    "(8.3 s at the defaults).",
    "worker_crash": "Worker processes holding up to three reservations each are killed with SIGKILL at "
    "random points; each logged every acknowledged call with one write(2) before going on.",
    "sqlite_crash": "As above on one SQLite file, plus one process per round that kills itself in the "
    "middle of a commit's transaction, after its first write and before COMMIT, holding the write lock.",
    "failover": "A primary and its replica; workers commit on the primary until it is killed with "
    "SIGKILL, the link to the replica is cut at the same moment (the host is gone), and the replica is "
    "promoted (`REPLICAOF NO ONE`, what Sentinel does). Replication is asynchronous: acknowledged "
    "commits still on their way to the replica are lost, and the reservation ids of lost commits are "
    "unknown to the new primary. What the new primary has is consistent (counters = journal).",
    "load": "4 processes of 8 worker threads share one store; the limits bind halfway through the run. "
    "A reader thread in each process checks every status it reads.",
    "hostile_scopes": "Scope ids with key syntax, JSON fragments, control characters, look-alike unicode, "
    "10 kB and 64 KiB; on Redis the keyspace is checked (every key in the namespace, in the documented "
    "shape, no id in a key name) and keys planted outside the namespace stay untouched.",
    "bad_amounts": "Negative, float, NaN, infinite, boolean, string, over-int64 and sub-nano amounts for "
    "holds, commits, run-time limits and budgets; the store is compared before and after.",
    "prices": "Through the guard and the real OpenAI client: a model with no price, the same with a "
    "configured default price, and a model priced at $0 under request and token budgets.",
    "secrets": "Canary strings in a prompt, in the API key, in a provider error message and in the Redis "
    "password; every log record of the `budgetguard` logger (DEBUG and up), every event, every journal "
    "entry and every error the guard raised is searched for them.",
    "provider_fuzz": "Hypothesis mutates real OpenAI and Anthropic payloads (fields changed, removed, "
    "replaced with junk) and cuts SSE streams at random bytes, with and without a connection error. "
    "Every guarded call is checked: nothing held afterwards, one journal line, charged from the usage or "
    "the worst case flagged `usage_missing`.",
    "abandoned_streams": "Streams from the real OpenAI client, read one chunk and dropped inside a reference "
    "cycle, so that the garbage collector frees them wherever an allocation triggers it; one worker process "
    "per run, killed (and the test failed) if it hangs. A stream's finalizer only queues its settlement; the "
    "guard settles the queue on its next operation, on `close()` and at exit. Before that change the "
    "finalizer settled in place: on `memory://` a collection inside the store's lock deadlocked the process "
    "(a `gc.collect()` forced there hung it every time; 3,000 streams under these thresholds happened "
    "not to collect there), on SQLite its "
    "`BEGIN IMMEDIATE` failed inside the interrupted transaction and the spend was lost (this run on the "
    "old code: 2,905 of 3,000 never charged; the issue counted 2,809), and async streams dropped as "
    "`asyncio.run` ended got a settlement task that the closing loop cancelled (Redis: half of them never "
    "charged, no event). "
    "`tests/guard/test_dropped_streams.py` forces a collection inside a store operation of the same "
    "thread (the memory store's clock, under its lock; SQLite's, inside its transaction; a Redis "
    "connection's `send_packed_command`) and drops async streams as `asyncio.run` ends, on each store.",
}


def render(data: Mapping[str, Any], command: str) -> str:
    figures: Mapping[str, Mapping[str, Any]] = data["figures"]
    tier = "the long tier, BUDGETGUARD_LONG_TESTS=1" if data["long"] else "the fast CI tier"
    lines = [
        "# Reliability figures",
        "",
        f"Generated by `{command}` from one run of `tests/reliability/` ({tier}); every number below was",
        "counted by the tests themselves while they ran, on real Redis and PostgreSQL servers, SQLite files",
        "and processes they started on loopback, through the real openai and anthropic SDK clients. Each",
        "section's tests passed; their assertions are what makes a zero below a zero (e.g. `double charges`",
        "is the number of reservations whose counters or journal showed more than one resolution).",
        "",
        f"Run on: {data.get('environment', 'unknown')}.",
        "",
    ]
    order = [s for s in TITLES if s in figures] + sorted(s for s in figures if s not in TITLES)
    for section in order:
        lines += [f"## {TITLES.get(section, section)}", ""]
        if section in NOTES:
            lines += [NOTES[section], ""]
        lines += ["| figure | value |", "|---|---|"]
        for name, value in figures[section].items():
            lines.append(f"| {name} | {_value(value)} |")
        lines.append("")
    return "\n".join(lines)

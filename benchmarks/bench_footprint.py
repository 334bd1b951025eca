"""Memory and disk footprint: what budgetguard stores per active scope and per call.

N scopes (``user:user-<i>``, USD per day; N = 10,000, or 500 with ``--quick``) each get one reserve +
commit (1 scope per call), so N calls in all. The baseline, measured on the same store in the same run,
is what a hand-rolled tracker keeps for the same N calls: one ``INCRBY`` counter per scope and day,
and an audit entry ``{ts, scope, usd}`` per call.

Redis (the ledger benchmark's server, a fresh namespace, deleted at the end):

* bytes per active scope: ``MEMORY USAGE key SAMPLES 0`` summed over the scope's counter keys (the
  counter hash and its lease set, which is gone once no lease is open), against the ``INCRBY`` string;
* journal bytes per call: ``MEMORY USAGE`` of the journal stream over its N entries, against a stream
  of N ``XADD ... ts <ms> scope <scope> usd <nano>`` entries;
* used_memory growth per call: ``INFO memory`` ``used_memory`` after minus before, over N, for
  everything the calls left (counters, reservation records, journal) against the tracker's keys.
  Exact on a private server; on a shared one (``BUDGETGUARD_BENCH_REDIS_URL``) others' traffic counts too.
* bytes per active scope-window (issue 17's target: at most 300 B in steady state): what one scope's
  window keeps on Redis for its call, by ``MEMORY USAGE``: its counter keys, its share of the journal
  and its reservation record, against the tracker's counter and audit entry. Two rows: with the record
  still kept (the first ``RECORD_RETENTION_MS`` after its lease: 15 minutes, a day before), and in
  steady state, once records past that horizon are dropped (the store's own PEXPIREAT: not waited for
  here, the record bytes are left out). Records alive at any time are ``calls/s x (lease + horizon)``
  whatever the number of scopes: the "records" figure of the used_memory row times that.
* with a guarded call's meta: N more calls on fresh scopes, each writing what one real guarded call
  passes its store (``guarded_call``: the reserve's and commit's journal meta, compact, and the commit's
  USD, tokens and requests amounts, the guard's own ``JournalData`` objects): the journal bytes per
  call, and the steady-state bytes per active scope-window (counter keys + journal entry) that issue
  17's 300 B target is about; beside it, the bytes of the namespace's names table (the interned model
  and function names: one table per namespace, not per scope-window).

SQLite (a temporary file each): journal bytes per call, from the ``dbstat`` table (the ``journal``
table and its index), against an ``audit (seq, ts, scope, usd)`` table with an index on ``ts``, written
one transaction per call like the ledger. Each row also carries the file growth per call (after a WAL
checkpoint), which includes the counters and reservation records.

The rows say how much budgetguard keeps beyond the minimum; issue 17's target is the steady-state row's
300 B (not checked: there is no ratio target).

``python -m benchmarks.bench_footprint --server-callgrind [CALLS]`` counts the other side of the scripts:
the instructions a private ``redis-server`` (under ``valgrind --tool=callgrind --instr-atstart=no``)
spends per reserve and per commit, 1 and 3 scopes (``calls`` reserves, then their commits), per pair
as a caller runs them (reserve, commit, reserve, ...: the counter hash stays small), and per pair when
16 callers' reserves, then their commits, go as one batch call each (group commit: ``lua/batch.lua``;
each caller on its own user counter, then also on a team's and the global counter they share),
against one ``EVALSHA`` of ``return 1``: server script time without the host's noise (``INFO
commandstats`` timings move with the neighbours' load).
"""

from __future__ import annotations

import functools
import glob
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, Ledger, SQLiteLedger, open_ledger
from budgetguard._ledger._expiry import RECORD_RETENTION_MS

from ._common import bench_redis, ratio_row, skipped
from .bench_ledger import ACTUAL, HOLD, LIMIT, _connect

BATCH = 1000


def _scope(i: int) -> str:
    return f"user-{i:05d}"


def summarize(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    """A guarded service function's model call (canned: its usage is under the estimate)."""
    return {"usage": {"prompt_tokens": 28, "completion_tokens": 345}}


@functools.cache
def guarded_call() -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    """What one real guarded call passes its store (``@with_budget(user=...)`` on ``summarize``, a USD
    budget per user and day, gpt-4o-mini): the reserve's meta, the commit's amounts (USD, tokens,
    requests) and its meta, as ``_flow.py`` and ``_settle.py`` build them (compact: ``_ledger/_meta.py``).
    The meta rows write these, so they follow what the guard journals."""
    import budgetguard as bg
    from budgetguard._ledger import MemoryLedger

    seen: dict[str, Any] = {}

    class Recording(MemoryLedger):
        def reserve(self, holds: Any, **options: Any) -> Any:
            seen["reserve"] = options["meta"]  # (as passed: the guard's JournalData)
            return super().reserve(holds, **options)

        def commit(self, reservation: Any, actual: Any, **options: Any) -> Any:
            seen["actual"] = {unit.value: amount for unit, amount in actual.items()}
            seen["commit"] = options["meta"]
            return super().commit(reservation, actual, **options)

    guard = bg.Guard(Recording(), budgets=[bg.Budget("user", usd="10", per="day")])
    try:
        messages = [{"role": "user", "content": "Summarize this support ticket in three sentences: ..."}]
        guard.with_budget(user=_scope(0))(summarize)(model="gpt-4o-mini", messages=messages, max_tokens=1000)
    finally:
        guard.close()
    return seen["reserve"], seen["actual"], seen["commit"]


def _calls(ledger: Ledger, n: int, first: int = 0, meta: bool = False) -> None:
    """One reserve + commit on each of ``n`` fresh scopes, numbered from ``first`` (with a guarded
    call's meta, ``meta``)."""
    for i in range(first, first + n):
        holds = (Hold(CounterSpec(Scope("user", _scope(i)), Unit.USD, Period.DAY, LIMIT), HOLD),)
        if meta:
            reserve_meta, actual, commit_meta = guarded_call()
            ledger.commit(ledger.reserve(holds, meta=reserve_meta), actual, meta=commit_meta)
        else:
            ledger.commit(ledger.reserve(holds), ACTUAL)


def _row(name: str, value: float, baseline: float, unit: str, **extra: Any) -> dict[str, Any]:
    return ratio_row(name, [value], [baseline], unit=unit, scale=1, target=None, **extra)


# -- Redis -------------------------------------------------------------------------------------------


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def _keys(client: Any, pattern: str) -> list[str]:
    return list(client.scan_iter(match=pattern, count=1000))


def _memory_usage(client: Any, keys: Iterable[str]) -> int:
    """Total ``MEMORY USAGE key SAMPLES 0`` (every element counted) of ``keys``, pipelined."""
    keys = list(keys)
    total = 0
    for start in range(0, len(keys), BATCH):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + BATCH]:
            pipe.memory_usage(key, samples=0)
        total += sum(size or 0 for size in pipe.execute())
    return total


def _tracker(client: Any, prefix: str, n: int) -> None:
    """The hand-rolled tracker: ``INCRBY`` a per-scope, per-day counter and ``XADD`` an audit entry."""
    day = time.strftime("%Y-%m-%d", time.gmtime())
    for start in range(0, n, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + BATCH)):
            pipe.incrby(f"{prefix}spend:user:{_scope(i)}:{day}", ACTUAL["usd"])
            fields = {"ts": int(time.time() * 1000), "scope": f"user:{_scope(i)}", "usd": ACTUAL["usd"]}
            pipe.xadd(f"{prefix}audit", fields)  # type: ignore[arg-type]
        pipe.execute()


def _redis_rows(url: str, namespace: str, own: bool, n: int) -> list[dict[str, Any]]:
    ledger: Any = open_ledger(url, namespace=namespace)
    client = ledger.client
    prefix = f"bg:{{{namespace}}}:"
    journal = f"{prefix}journal"

    def sizes() -> dict[str, int]:
        return {
            "counters": _memory_usage(client, _keys(client, f"{prefix}c:*")),
            "records": _memory_usage(client, _keys(client, f"{prefix}r:*")),
            "journal": _memory_usage(client, [journal]),
            "names": _memory_usage(client, [f"{prefix}names"]),  # (one per namespace: _redis_names)
            "counter_keys": len(_keys(client, f"{prefix}c:*")),
            "record_keys": len(_keys(client, f"{prefix}r:*")),
            "entries": int(client.xlen(journal)),
        }

    try:
        _calls(ledger, 1, first=n)  # warm-up (connection, scripts) on a scope of its own, not counted
        before, memory = sizes(), _used_memory(client)
        _calls(ledger, n)
        ours = _used_memory(client) - memory
        after = sizes()
        grown = {key: after[key] - before[key] for key in after}
        raw_prefix = f"{prefix}raw:"
        before = _used_memory(client)
        _tracker(client, raw_prefix, n)
        raw = _used_memory(client) - before
        raw_counters = _memory_usage(client, _keys(client, f"{raw_prefix}spend:*"))
        raw_journal = _memory_usage(client, [f"{raw_prefix}audit"])
        before = sizes()
        _calls(ledger, n, first=n + 1, meta=True)
        reserve_meta, actual, commit_meta = guarded_call()
        after = sizes()
        with_meta = {key: after[key] - before[key] for key in after}
    finally:
        ledger.close()
    if grown["entries"] != n:
        raise RuntimeError(f"{n} calls left {grown['entries']} journal entries; expected one per call")
    common = {"scopes": n, "calls": n, "own_server": own}
    kept = {k: round(grown[k] / n, 1) for k in ("counters", "records", "journal")}
    tracker = (raw_counters + raw_journal) / n
    return [
        _row(
            "redis: bytes per active scope-window, record kept vs INCRBY + XADD",
            (grown["counters"] + grown["records"] + grown["journal"]) / n,
            tracker,
            "bytes/scope",
            parts=kept,
            **common,
        ),
        _row(
            "redis: bytes per active scope-window, steady state (<= 300) vs INCRBY + XADD",
            (grown["counters"] + grown["journal"]) / n,
            tracker,
            "bytes/scope",
            record_bytes=kept["records"],
            retention_ms=RECORD_RETENTION_MS,
            **common,
        ),
        _row(
            "redis: bytes per active scope (counter keys) vs INCRBY counter",
            grown["counters"] / n,
            raw_counters / n,
            "bytes/scope",
            counter_keys_per_scope=round(grown["counter_keys"] / n, 3),
            **common,
        ),
        _row(
            "redis: journal bytes per call (stream) vs XADD {ts, scope, usd}",
            grown["journal"] / n,
            raw_journal / n,
            "bytes/call",
            **common,
        ),
        _row(
            "redis: journal bytes per call with a guarded call's meta vs XADD {ts, scope, usd}",
            with_meta["journal"] / n,
            raw_journal / n,
            "bytes/call",
            record_bytes=round(with_meta["records"] / n, 1),
            **common,
        ),
        _row(
            "redis: bytes per active scope-window of a guarded call, steady state (<= 300) vs INCRBY + XADD",
            (with_meta["counters"] + with_meta["journal"]) / n,
            tracker,
            "bytes/scope",
            parts={k: round(with_meta[k] / n, 1) for k in ("counters", "journal")},
            names_table_bytes=after["names"],
            reserve_meta=reserve_meta,
            commit_meta=commit_meta,
            amounts=actual,
            **common,
        ),
        _row(
            "redis: used_memory growth per call vs INCRBY + XADD",
            ours / n,
            raw / n,
            "bytes/call",
            memory_usage_per_call={k: round(grown[k] / n, 1) for k in ("counters", "records", "journal")},
            record_keys_per_call=round(grown["record_keys"] / n, 3),
            **common,
        ),
    ]


# -- SQLite ------------------------------------------------------------------------------------------


def _table_bytes(db: sqlite3.Connection, names: tuple[str, ...]) -> int:
    marks = ",".join("?" * len(names))
    sql = f"SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN ({marks})"
    return int(db.execute(sql, names).fetchone()[0])


def _audit(db: sqlite3.Connection, n: int, first: int = 0) -> None:
    """The hand-rolled audit log: one row per call, one transaction per call."""
    for i in range(first, first + n):
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO audit (ts, scope, usd) VALUES (?, ?, ?)",
            (int(time.time() * 1000), f"user:{_scope(i)}", ACTUAL["usd"]),
        )
        db.execute("COMMIT")


def _growth(
    path: Path, tables: tuple[str, ...], write: Callable[[int, int], object], n: int
) -> tuple[int, int]:
    """Bytes that ``write(n, first)`` adds to the file (after a WAL checkpoint) and to ``tables``; one
    call first, so the schema's first pages exist before measuring."""
    db = _connect(path)
    try:
        write(1, n)

        def sizes() -> tuple[int, int]:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return path.stat().st_size, _table_bytes(db, tables)

        file_before, tables_before = sizes()
        write(n, 0)
        file_after, tables_after = sizes()
    finally:
        db.close()
    return file_after - file_before, tables_after - tables_before


def _sqlite_row(folder: Path, n: int) -> dict[str, Any]:
    ledger = SQLiteLedger(folder / "ledger.db")
    try:
        file_growth, journal = _growth(
            folder / "ledger.db",
            ("journal", "journal_by_time"),
            lambda count, first: _calls(ledger, count, first),
            n,
        )
    finally:
        ledger.close()
    audit = _connect(folder / "audit.db")
    try:
        audit.execute(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, scope TEXT NOT NULL,"
            " usd INTEGER NOT NULL) STRICT"
        )
        audit.execute("CREATE INDEX audit_by_time ON audit (ts)")
        raw_growth, raw = _growth(
            folder / "audit.db",
            ("audit", "audit_by_time"),
            lambda count, first: _audit(audit, count, first),
            n,
        )
    finally:
        audit.close()
    return _row(
        "sqlite: journal bytes per call (table + index) vs an audit row",
        journal / n,
        raw / n,
        "bytes/call",
        file_growth_per_call={"budgetguard": round(file_growth / n, 1), "audit": round(raw_growth / n, 1)},
        calls=n,
    )


def run(quick: bool) -> list[dict[str, Any]]:
    n = 500 if quick else 10_000
    with bench_redis() as redis:
        if redis is None:
            rows = [skipped("redis footprint", "no Redis: no redis-server/valkey-server, no URL set")]
        else:
            rows = _redis_rows(*redis, n)
    with tempfile.TemporaryDirectory(prefix="bg-bench-footprint-") as folder:
        rows.append(_sqlite_row(Path(folder), n))
    return rows


# -- server instructions per script call -------------------------------------------------------------


def server_callgrind(calls: int = 300) -> dict[str, float]:
    """Instructions of a private redis-server per reserve / commit (thousands), and of ``return 1``."""
    import redis

    with tempfile.TemporaryDirectory(prefix="bg-bench-cg-") as folder:
        port = _port()
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={folder}/cg.%p",
             shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=port)
        try:
            for _ in range(300):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)

            def count(work: Callable[[], object]) -> float:
                before = set(glob.glob(f"{folder}/cg.*"))
                for action in (["-z"], ["-i", "on"]):
                    subprocess.run(
                        ["callgrind_control", *action, str(server.pid)], capture_output=True, check=True
                    )
                work()
                for action in (["-i", "off"], ["-d"]):
                    subprocess.run(
                        ["callgrind_control", *action, str(server.pid)], capture_output=True, check=True
                    )
                for _ in range(200):  # the dump is written by the server, in its own time
                    for dump in set(glob.glob(f"{folder}/cg.*")) - before:
                        with open(dump) as lines:
                            totals = [int(line.split()[1]) for line in lines if line.startswith("totals:")]
                        if totals:
                            return totals[0] / calls / 1000
                    time.sleep(0.1)
                raise RuntimeError("no callgrind dump from redis-server")

            sha = client.script_load("return 1")
            out = {"raw EVALSHA return 1": count(lambda: [client.evalsha(sha, 0) for _ in range(calls)])}
            ledger = open_ledger(f"redis://127.0.0.1:{port}/0", namespace="cg")
            scopes = [Scope("user", "u1"), Scope("team", "t"), Scope("global")]
            for n in (1, 3):
                holds = [Hold(CounterSpec(s, Unit.USD, Period.DAY, LIMIT), HOLD) for s in scopes[:n]]
                for _ in range(20):
                    ledger.commit(ledger.reserve(holds), ACTUAL)
                held: list[Any] = []
                out[f"reserve, {n} scope(s)"] = count(
                    lambda holds=holds, held=held: held.extend(ledger.reserve(holds) for _ in range(calls))
                )
                out[f"commit, {n} scope(s)"] = count(
                    lambda held=held: [ledger.commit(r, ACTUAL) for r in held]
                )
                out[f"pair as run, {n} scope(s)"] = count(
                    lambda holds=holds: [ledger.commit(ledger.reserve(holds), ACTUAL) for _ in range(calls)]
                )
            for shared, label in ((False, "1 scope"), (True, "3 scopes, 2 shared")):
                batched = _batched_pairs(ledger, BATCH, shared)
                batched(2)  # warm-up: loads the batch script
                rounds = calls // BATCH
                pairs = count(lambda batched=batched, rounds=rounds: batched(rounds))
                out[f"pair in batches of {BATCH}, {label}"] = pairs * calls / (rounds * BATCH)
            ledger.close()
        finally:
            client.close()
            server.terminate()
            server.wait(30)
    return out


BATCH = 16


def _batched_pairs(ledger: Any, size: int, shared: bool = False) -> Callable[[int], None]:
    """``rounds(k)``: k times, ``size`` callers' reserves (each on its own user scope; ``shared``: and
    on one team's and the global counter, which all of them share) as one batch call of the store's
    group commit, then their commits as another (as a leader sends a full queue)."""
    common = [Scope("team", "t"), Scope("global")] if shared else []
    holds = [
        tuple(
            Hold(CounterSpec(scope, Unit.USD, Period.DAY, LIMIT), HOLD)
            for scope in (Scope("user", f"b{i}"), *common)
        )
        for i in range(size)
    ]

    def together(flows: list[Any]) -> list[Any]:
        """The flows' calls as batch calls: their first calls in one, then the further calls of those
        that need one (a fast path's fallback: new counters, the first round) in the next."""
        out: list[Any] = [None] * len(flows)
        waiting = [(i, flow, next(flow)) for i, flow in enumerate(flows)]
        while waiting:
            replies: list[Any] = []
            ledger._batch._exchange([ledger._pack(call) for _, _, call in waiting], replies)
            after = []
            for (i, flow, _), reply in zip(waiting, replies, strict=True):
                try:
                    after.append((i, flow, flow.send(reply)))
                except StopIteration as done:
                    out[i] = done.value
            waiting = after
        assert len(out) == size, out
        assert all(r is not None for r in out), out
        return out

    def rounds(k: int) -> None:
        for _ in range(k):
            held = together([ledger._flows.checked_reserve(h, 120, None, None, True) for h in holds])
            together([ledger._flows.resolve(r, ACTUAL, "{}") for r in held])

    return rounds


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    if sys.argv[1:2] != ["--server-callgrind"]:
        sys.exit("usage: python -m benchmarks.bench_footprint --server-callgrind [CALLS]")
    counts = server_callgrind(*(int(a) for a in sys.argv[2:3]))
    raw = counts["raw EVALSHA return 1"]
    for name, k in counts.items():
        print(f"{name:24s} {k:8.1f}k instructions  ({k / raw:.1f}x return 1)")
    for n in (1, 3):
        pair = counts[f"reserve, {n} scope(s)"] + counts[f"commit, {n} scope(s)"]
        print(f"{f'pair, {n} scope(s)':24s} {pair:8.1f}k instructions  ({pair / raw:.1f}x return 1)")

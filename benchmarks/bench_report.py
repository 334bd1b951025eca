"""``budgetguard report`` and ``export`` over a SQLite journal of N entries, against a raw scan of it.

The journal is filled directly in the store's own table format (``SQLiteLedger``'s schema and its
journal insert, ``executemany``): N realistic entries (90% commits with usage, cost and an estimate,
6% refusals, 3% releases, 1% expiries; 5,000 users, 7 features, 6 models, 5 functions, some scopes
with quotes, spaces and colons in them) spread over the last 6 days. N = 1,000,000, or 5,000 with
``--quick`` (then only ``--by user``, ``--by model`` and a CSV export, after one shared baseline:
a few seconds).

Each measurement runs in a fresh process (``python -m benchmarks.bench_report --child ...``), which
reports its wall time and its peak RSS (``resource.getrusage``, the process's high-water mark) minus
its RSS before the measured part (after imports): what the report itself needed. The baseline is a
raw ``SELECT count(*), sum(length(data)) FROM journal`` over the same table, in a fresh process too:
the cost of merely reading the journal once. Each row also has ``cpu_seconds`` (the child's
``process_time``: what a loaded host inflates least). Rows: ``report --by`` each grouping the CLI offers
(``--format json`` to ``/dev/null``: the whole code path, rendering aside), and ``export`` as CSV
and as JSON lines. ``--child export-csv|export-jsonl URL`` measures one export of any store by hand
(a PostgreSQL URL: benchmarks/README.md, session 11). The issue's target is absolute (1M entries
under 3 s and 200 MB), so the rows have no ratio target: read ``seconds`` and ``peak_mb``.

The last rows stream a report by user from the memory store and from Redis (``summarize``: no
in-store aggregation there, the journal is read in chunks and summed as it comes) after N calls
made through the ledger (N = 50,000, or 2,000 with ``--quick``), against reading the same journal
whole with ``history()``; their ``peak_mb`` is the report's own Python allocations (``tracemalloc``).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SECONDS = 3.0
TARGET_MB = 200
GROUPINGS = ("user", "feature", "scope", "model", "function", "day")
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "claude-haiku-4-5", "o3-mini", "gemini-2.5-pro")
FUNCTIONS = ("app.chat", "app.search", "app.summarize", "jobs.nightly", "api.agent")
FEATURES = ("search", "chat", "summary", "agent", "odd 'quoted' \"name\"", "a:b:c", "ünïcode")


def fill(path: Path, n: int, *, now_ms: int | None = None, seed: int = 17) -> None:
    """A SQLite ledger at ``path`` whose journal holds ``n`` entries of the last 6 days."""
    from budgetguard._ledger._sqlite import SQLiteLedger

    rng = random.Random(seed)
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    start = now_ms - 6 * 86_400_000
    step = max(6 * 86_400_000 // max(n, 1), 1)
    store = SQLiteLedger(path)
    try:
        db = store._db()
        insert = store._sql.journal
        db.execute("BEGIN IMMEDIATE")
        batch: list[tuple[Any, ...]] = []
        for i in range(n):
            batch.append(_row(rng, i, start + i * step))
            if len(batch) == 10_000:
                db.executemany(insert, batch)
                batch.clear()
        if batch:
            db.executemany(insert, batch)
        db.execute("COMMIT")
    finally:
        store.close()


def _row(rng: random.Random, i: int, ts: int) -> tuple[Any, ...]:
    """One journal row as ``_SQLiteTx.journal`` writes it (scopes, amounts and data as JSON text)."""
    from budgetguard._ledger._sqlite import journal_row

    user = f"u{rng.randrange(5000)}" if i % 97 else 'o\'brien "the" user:x'
    feature = FEATURES[rng.randrange(len(FEATURES))]
    scopes = ["global", f"user:{user}", f"feature:{feature}"]
    charged = scopes[:2] if i % 3 else scopes
    model = MODELS[rng.randrange(len(MODELS))]
    inputs, outputs = rng.randrange(50, 8000), rng.randrange(10, 2000)
    estimate = rng.randrange(10_000, 5_000_000)
    data: dict[str, Any] = {
        "attempt": 1, "estimated_usd": f"{estimate / 1e9:.9f}".rstrip("0"), "function":
        FUNCTIONS[rng.randrange(len(FUNCTIONS))], "model": model, "scopes": scopes,
    }  # fmt: skip
    kind = rng.random()
    if kind < 0.90:
        event = "committed"
        cost = rng.randrange(1, estimate)
        usage: dict[str, int] = {"input_tokens": inputs, "output_tokens": outputs}
        if i % 5 == 0:
            usage["cache_read_tokens"] = inputs // 2
        data.update(usage=usage, cost_nano=cost)
        amounts = {"usd": cost, "tokens": inputs + outputs, "requests": 1}
    else:
        event = "refused" if kind < 0.96 else "released" if kind < 0.99 else "expired"
        amounts = {"usd": estimate, "tokens": inputs + outputs, "requests": 1}
    return journal_row(ts, event, f"r{i:08x}", charged, amounts, data)


def _rss_mb() -> float:
    """This process's resident set now (Linux: /proc), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _child(what: str, path: str) -> None:
    """Run one measurement in this (fresh) process; print its seconds and peak MB as JSON."""
    import sqlite3

    from budgetguard._cli import main

    url = path if "://" in path else f"sqlite:///{path}"  # (a PostgreSQL URL: ``--child`` by hand)
    before = _rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    if what == "raw":
        db = sqlite3.connect(path)
        db.execute("SELECT count(*), sum(length(data)) FROM journal").fetchone()
        db.close()
    elif what.startswith("export-"):
        code = main(["--url", url, "export", "--since", "30d", "--format", what[7:], "-o", os.devnull])
        assert code == 0, code
    else:
        args = ["--url", url, "report", "--since", "30d", "--by", what, "--format", "json", "-o", os.devnull]
        code = main(args)
        assert code == 0, code
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000  # (Linux: KiB)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mb": max(peak - before, 0.0)}))


def _streamed(url: str, n: int) -> None:
    """In this (fresh) process: ``n`` calls through the ledger at ``url`` (memory, Redis), then a report
    by user streamed from it (``summarize``) against reading its journal whole (``history()``); print
    both times and the report's peak of Python memory (``tracemalloc``, in a second run)."""
    import tracemalloc

    from budgetguard._budgets import Period, Scope, Unit
    from budgetguard._ledger import CounterSpec, Hold, open_ledger
    from budgetguard._report import summarize

    rng = random.Random(17)
    with open_ledger(url) as ledger:
        for i in range(n):
            user = f"u{rng.randrange(500)}"
            spec = CounterSpec(Scope.parse(f"user:{user}"), Unit.USD, Period.DAY, 10**15)
            estimate = rng.randrange(10_000, 5_000_000)
            scopes = ["global", f"user:{user}", f"feature:{FEATURES[i % len(FEATURES)]}"]
            text = f"{estimate / 1e9:.9f}".rstrip("0")
            meta = {"model": MODELS[i % len(MODELS)], "function": FUNCTIONS[i % len(FUNCTIONS)],
                    "estimated_usd": text, "attempt": 1, "scopes": scopes}  # fmt: skip
            reservation = ledger.reserve([Hold(spec, estimate)], meta=meta)
            cost = rng.randrange(1, estimate)
            usage = {"input_tokens": rng.randrange(50, 8000), "output_tokens": rng.randrange(10, 2000)}
            ledger.commit(reservation, {"usd": cost}, meta={"usage": usage, "cost_nano": cost})
        start = time.perf_counter()
        assert len(ledger.history()) == n
        raw = time.perf_counter() - start
        start = time.perf_counter()
        summary = summarize(ledger, "user", since=None)
        seconds = time.perf_counter() - start
        assert summary.total.calls == n
        tracemalloc.start()
        summarize(ledger, "user", since=None)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    print(json.dumps({"seconds": seconds, "raw_seconds": raw, "peak_mb": peak}))


def _measure(what: str, path: Path | str) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.bench_report", "--child", what, str(path)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return found


def run(quick: bool) -> list[dict[str, Any]]:
    n = 5_000 if quick else 1_000_000
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bg-bench-report-") as tmp:
        path = Path(tmp) / "ledger.db"
        started = time.perf_counter()
        fill(path, n)
        print(f"  filled {n:,} journal entries in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        measures = [*GROUPINGS, "export-csv", "export-jsonl"]
        if quick:  # (the CI smoke run: one grouping of each kind and one export)
            measures = ["user", "model", "export-csv"]
        base = _measure("raw", path)
        for what in measures:
            if not quick:
                base = _measure("raw", path)  # (back to back: the same cache state and load)
            found = _measure(what, path)
            name = f"report --by {what}" if not what.startswith("export") else f"export {what[7:]}"
            rows.append({
                "name": f"{name} ({n:,} entries) vs raw scan",
                "value": round(found["seconds"] * 1e3, 1),
                "baseline": round(base["seconds"] * 1e3, 1),
                "ratio": round(found["seconds"] / max(base["seconds"], 1e-9), 2),
                "target": None,
                "passed": None,
                "unit": "ms",
                "entries": n,
                "seconds": round(found["seconds"], 3),
                "cpu_seconds": round(found["cpu_seconds"], 3),
                "peak_mb": round(found["peak_mb"], 1),
                "target_seconds": TARGET_SECONDS if n >= 1_000_000 else None,
                "target_mb": TARGET_MB if n >= 1_000_000 else None,
            })  # fmt: skip
    rows.extend(_streamed_rows(2_000 if quick else 50_000))
    return rows


def _streamed_rows(n: int) -> list[dict[str, Any]]:
    """The streamed report on memory and Redis (``_streamed``), each in a fresh process."""
    from ._common import bench_redis, skipped

    rows = []
    with bench_redis() as found:
        urls = [("memory", f"memory://?journal_maxlen={n}")]
        if found is not None:
            urls.append(("redis", f"{found[0]}?namespace={found[1]}&journal_maxlen={n}"))
        for kind, url in urls:
            got = _measure(f"stream-{n}", url)
            rows.append({
                "name": f"report --by user streamed, {kind} ({n:,} entries) vs history()",
                "value": round(got["seconds"] * 1e3, 1),
                "baseline": round(got["raw_seconds"] * 1e3, 1),
                "ratio": round(got["seconds"] / max(got["raw_seconds"], 1e-9), 2),
                "target": None,
                "passed": None,
                "unit": "ms",
                "entries": n,
                "seconds": round(got["seconds"], 3),
                "us_per_entry": round(got["seconds"] / n * 1e6, 2),
                "peak_mb": round(got["peak_mb"], 1),
            })  # fmt: skip
        if found is None:
            rows.append(skipped("report streamed, redis", "no Redis server"))
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"] and sys.argv[2].startswith("stream-"):
        _streamed(sys.argv[3], int(sys.argv[2][7:]))
    elif sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3])
    else:
        for found in run("--quick" in sys.argv):
            print(found)

"""Worker processes killed at random (kill -9) while they hold reservations, on SQLite, Redis and
PostgreSQL; on
SQLite also a process killed in the middle of a transaction, holding the write lock.

After the leases end nothing is held; every acknowledged commit is in the counters and the journal
exactly once; a commit whose process died before the answer is either fully applied or not at all.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from budgetguard._ledger import Ledger, open_ledger

from . import figures
from .crashworker import LEASE
from .workload import RESOLVED, ROOMY

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
ROUNDS = figures.scale(1, 6)


STORES = ["sqlite", "redis", "postgres"]


@dataclass
class Logs:
    reserved: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)
    committed: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    """Commits sent whose answer the process did not live to log."""

    def read(self, path: Path) -> None:
        for line in path.read_text().splitlines():
            what, res_id, *amount = line.split()
            if what == "reserved":
                self.reserved.add(res_id)
            elif what == "released":
                self.released.add(res_id)
            elif what == "committing":
                self.in_flight[res_id] = int(amount[0])
            else:
                self.committed[res_id] = int(amount[0])
                del self.in_flight[res_id]


def _spawn(url: str, log: Path, seed: int, midtx: int | None = None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.reliability.crashworker", url, str(log), str(seed)]
    return subprocess.Popen([*args, *([str(midtx)] if midtx is not None else [])], cwd=ROOT)


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _round(url: str, tmp: Path, seed: int, midtx: bool) -> tuple[list[Path], int]:
    """PROCESSES workers; each is killed -9 once it has logged a random number of calls. With ``midtx``
    the first one kills itself inside a transaction instead."""
    logs = [tmp / f"worker-{seed}-{i}.log" for i in range(PROCESSES)]
    procs = [
        _spawn(url, log, seed * 100 + i, midtx=3 if midtx and i == 0 else None) for i, log in enumerate(logs)
    ]
    targets = [20 + (seed * 7 + i * 13) % 60 for i in range(PROCESSES)]
    deadline = time.monotonic() + 120
    killed_midtx = 0
    try:
        pending = set(range(PROCESSES))
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                if procs[i].poll() is not None:  # died by itself: only the mid-transaction one may
                    assert midtx and i == 0, f"worker {i} exited with {procs[i].returncode}"
                    assert procs[i].returncode == -9
                    killed_midtx += 1
                    pending.discard(i)
                elif _lines(logs[i]) >= targets[i] and not (midtx and i == 0):
                    procs[i].kill()
                    procs[i].wait(10)
                    pending.discard(i)
            time.sleep(0.01)
        assert not pending, "workers did not get going"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
    return logs, killed_midtx


def _check(ledger: Ledger, logs: Logs) -> dict[str, int]:
    time.sleep(LEASE + 0.2)  # every lease of a dead worker has ended
    statuses = ledger.status(ROOMY)  # ...and this reclaims them
    history: dict[str, list[tuple[str, int]]] = {}
    spent_by_journal = dict.fromkeys((str(s.scope) for s in ROOMY), 0)
    for entry in ledger.history():
        history.setdefault(entry.reservation_id, []).append((entry.event, entry.amounts.get("usd", 0)))
        if entry.event == "committed":
            for scope in entry.scopes:
                spent_by_journal[scope] += entry.amounts["usd"]
    leaked = sum(s.held for s in statuses)
    assert leaked == 0  # no hold outlives its lease
    assert [s.spent for s in statuses] == [spent_by_journal[str(s.scope)] for s in ROOMY]

    def resolved(res_id: str) -> list[tuple[str, int]]:
        return [e for e in history.get(res_id, []) if e[0] in RESOLVED]

    # acknowledged: there, once, with its amount
    wrong = [i for i, amount in logs.committed.items() if resolved(i) != [("committed", amount)]]
    wrong += [i for i in logs.released if [e for e, _ in resolved(i)] != ["released"]]
    assert wrong == []
    # in flight when the process died: all or nothing
    assert all(resolved(i) in ([], [("committed", a)]) for i, a in logs.in_flight.items())
    applied = sum(bool(resolved(i)) for i in logs.in_flight)
    open_at_kill = logs.reserved - logs.released - set(logs.committed)
    unlogged = set(history) - logs.reserved  # reserved by the store, the process died before logging it
    for res_id in open_at_kill | unlogged:
        events = [e for e, _ in history.get(res_id, [])]
        # a commit or release in flight may have landed, whole (amounts checked above)
        assert [e for e in events if e in RESOLVED] in ([], ["committed"], ["released"]), (res_id, events)
        assert resolved(res_id) or "expired" in events, (res_id, events)  # the lease gave it back
    assert all(not resolved(i) for i in unlogged)
    return {
        "reservations": len(logs.reserved | unlogged),
        "holds open when the process died": len(open_at_kill | unlogged),
        "commits in flight when the process died": len(logs.in_flight),
        "...of which applied whole (the rest not at all)": applied,
        "acknowledged commits": len(logs.committed),
        "acknowledged commits or releases lost, changed or doubled": len(wrong),
        "leaked holds after the leases (nano-USD held)": leaked,
    }


def test_killed_workers_leak_no_hold_and_lose_no_commit(store_url: str, tmp_path: Path) -> None:
    store = store_url.split(":", 1)[0].replace("postgresql", "postgres")
    logs, killed, midtx_kills = Logs(), 0, 0
    for r in range(ROUNDS):
        paths, midtx = _round(store_url, tmp_path, seed=r + 1, midtx=store == "sqlite")
        midtx_kills += midtx
        killed += PROCESSES
        for path in paths:
            logs.read(path)
    with open_ledger(store_url) as ledger:
        found = _check(ledger, logs)
    section = "sqlite_crash" if store == "sqlite" else "worker_crash"
    if store == "sqlite":
        assert midtx_kills == ROUNDS
        db = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        try:
            integrity = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
        assert integrity == [("ok",)]
        figures.record(section, "processes killed inside a transaction (write lock held)", midtx_kills)
        figures.note(section, "PRAGMA integrity_check", str(integrity[0][0]))
    assert found["holds open when the process died"] > 0
    figures.record(section, f"worker processes killed -9 ({store})", killed)
    for name, value in found.items():
        figures.record(section, f"{name} ({store})", value)

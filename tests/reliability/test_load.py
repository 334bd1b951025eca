"""Bank-style load: 32 workers in 4 processes reserve, commit and release on overlapping scopes with
tight limits while readers in every process check each status they read (Redis in CI; SQLite and
Redis Cluster too in the long tier). At every read
``spent + held <= limit``; at the end the counters equal the sum of acknowledged operations exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from budgetguard._ledger import open_ledger
from tests.ledger.cluster_close import close_ledger

from . import figures
from .loadworker import LOAD_SPECS, THREADS
from .workload import Tally, assert_exact, audit, states

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4


STORES = ["redis", "sqlite", "cluster"] if figures.LONG else ["redis"]
"""Stores several processes can share (``memory://`` lives in one)."""


def test_32_workers_across_processes(store_url: str, tmp_path: Path) -> None:
    store = store_url.split(":", 1)[0].replace("redis+cluster", "cluster")
    outs = [tmp_path / f"load-{i}.json" for i in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.loadworker", store_url, str(out), str(i)],
            cwd=ROOT,
        )
        for i, out in enumerate(outs)
    ]
    assert [proc.wait(600) for proc in procs] == [0] * PROCESSES
    total, reads, problems = Tally(), 0, []
    for out in outs:
        data = json.loads(out.read_text())
        part = Tally(charged=data["charged"], states=data["states"], calls=data["calls"])
        total.merge(part)
        reads += data["reads"]
        problems += data["problems"]
    time.sleep(0.4)  # the abandoned reservations' 0.3 s leases have ended
    ledger = open_ledger(store_url)
    try:
        result = audit(ledger, total, LOAD_SPECS)
    finally:
        close_ledger(ledger)
    assert problems == []  # no read ever saw spent + held above the limit
    assert reads > 0
    assert_exact(result, total)
    counts = states([total])
    assert counts["refused"] > 0 and counts["committed"] > 0  # tight enough to matter
    section = "load"
    figures.record(section, f"workers ({store})", PROCESSES * THREADS)
    figures.record(section, f"ledger calls acknowledged ({store})", total.calls)
    figures.record(section, f"status reads checked ({store})", reads)
    figures.record(section, f"reads with spent + held > limit ({store})", len(problems))
    for state in ("committed", "released", "refused", "abandoned"):
        figures.record(section, f"reservations {state} ({store})", counts[state])
    figures.record(section, f"counters off the acknowledged sum, nano-USD ({store})", result.lost)
    figures.record(section, f"double charges ({store})", result.double_charges)
    figures.record(section, f"leaked holds, nano-USD ({store})", result.leaked)

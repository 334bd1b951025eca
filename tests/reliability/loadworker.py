"""One process of the load test: ``python -m tests.reliability.loadworker URL OUT SEED``.

8 worker threads run the bank-style workload on LOAD_SPECS while a reader thread checks every status
it reads (``spent + held <= limit``, held never negative, spent never going down); the process writes
its acknowledged totals and read counts to OUT as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from budgetguard._ledger import open_ledger

from . import figures
from .workload import Tally, tight, work

THREADS = 8
OPS = figures.scale(12, 150)
"""Reservations per worker thread."""
LOAD_SPECS = tight(8 * OPS)
"""About half of what the workload would spend: the limits bind halfway through the run."""


def main(url: str, out: str, seed: int) -> None:
    ledgers = [open_ledger(url) for _ in range(THREADS + 1)]
    done = threading.Event()
    reads, problems = 0, []

    def read() -> None:
        nonlocal reads
        last = [0] * len(LOAD_SPECS)
        while not done.is_set():
            for j, s in enumerate(ledgers[-1].status(LOAD_SPECS)):
                if s.held < 0 or s.spent < last[j] or s.spent + s.held > s.limit:
                    problems.append(repr(s))
                last[j] = s.spent
            reads += 1

    reader = threading.Thread(target=read)
    reader.start()
    total = Tally()
    options: dict[str, Any] = {
        "ops": OPS,
        "deadline": time.monotonic() + 600,
        "abandon": 0.03,
        "specs": LOAD_SPECS,
    }
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [
                pool.submit(work, ledgers[i], Tally(), prefix=f"L{seed}-{i}", seed=seed * 100 + i, **options)
                for i in range(THREADS)
            ]
            for future in futures:
                total.merge(future.result())
    finally:
        done.set()
        reader.join()
        for ledger in ledgers:
            ledger.close()
    with open(out, "w") as f:
        json.dump(
            {"charged": total.charged, "states": total.states, "calls": total.calls, "reads": reads,
             "problems": problems},
            f,
        )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

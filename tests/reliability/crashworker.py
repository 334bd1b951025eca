"""A worker process for the crash tests: ``python -m tests.reliability.crashworker URL LOG SEED [MIDTX]``.

It reserves three holds at a time (2-second leases) on the shared counters, then commits or releases
each, and appends a line to LOG after every acknowledged call (one write(2) each, so the log survives
the kill -9 the test sends at a random moment). With MIDTX=k (SQLite), it kills itself with SIGKILL in the
middle of the k-th commit's transaction: after the first counter row is written, before COMMIT.
"""

from __future__ import annotations

import os
import random
import signal
import sys

from budgetguard._ledger import Hold, open_ledger

from .workload import ROOMY, log_line

LEASE = 2.0


def _die_inside_the_next_transaction() -> None:
    from budgetguard._ledger import _sqlite

    original = _sqlite._SQLiteTx.put_counter

    def put_counter(self: _sqlite._SQLiteTx, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGKILL)  # the write lock is held, the transaction is open

    _sqlite._SQLiteTx.put_counter = put_counter  # type: ignore[method-assign]


def main(url: str, log: str, seed: int, midtx: int | None) -> None:
    rng = random.Random(seed)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    commits = 0
    with open_ledger(url) as ledger:
        for batch in range(10**9):
            open_ids = []
            for k in range(3):
                res_id = f"s{seed}-{batch}-{k}"
                chosen = rng.sample(range(len(ROOMY)), rng.randint(2, 3))
                ledger.reserve([Hold(ROOMY[c], rng.randint(1, 9)) for c in chosen], id=res_id, lease=LEASE)
                log_line(fd, "reserved", res_id)
                open_ids.append(res_id)
            for res_id in open_ids:
                if rng.random() < 0.3:
                    ledger.release(res_id)
                    log_line(fd, "released", res_id)
                    continue
                amount = rng.randint(0, 9)
                if commits == midtx:
                    _die_inside_the_next_transaction()
                log_line(fd, "committing", res_id, amount)
                ledger.commit(res_id, {"usd": amount})
                log_line(fd, "committed", res_id, amount)
                commits += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else None)

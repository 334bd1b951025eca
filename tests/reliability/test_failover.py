"""Replica promotion after the primary is killed -9 under load: what asynchronous replication loses.

Workers commit as fast as they can on the primary and write down every acknowledged commit; the
primary is killed at a random moment and its replica promoted (``REPLICAOF NO ONE``, what Sentinel or
an operator does). The test counts the acknowledged commits the new primary does not have, and checks
that what it does have is consistent (counters equal the journal, every reservation in one state).
"""

from __future__ import annotations

import itertools
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from budgetguard import LedgerError
from budgetguard._ledger import Hold, Ledger, open_ledger
from tests.redis_server import RedisServer

from . import figures
from .chaos import ChaosProxy
from .workload import RESOLVED, ROOMY

FAILOVERS = figures.scale(1, 10)
WORKERS = 6
MIN_ACKED = 20


def _commit_until_down(ledger: Ledger, prefix: str, seed: int, acked: dict[str, int]) -> dict[str, int]:
    """Commit until the store fails; ``acked`` (the caller's, read as this runs) gets each acked one."""
    rng = random.Random(seed)
    deadline = time.monotonic() + 120  # the primary is killed within a second or two
    for k in itertools.count():
        if time.monotonic() > deadline:
            raise AssertionError("the primary never went down")
        res_id = f"{prefix}-{k}"
        chosen = rng.sample(range(len(ROOMY)), rng.randint(2, 3))
        amount = rng.randint(1, 9)
        try:
            ledger.reserve([Hold(ROOMY[c], amount) for c in chosen], id=res_id)
            ledger.commit(res_id, {"usd": amount})
        except LedgerError:
            return acked
        acked[res_id] = amount
    raise AssertionError("unreachable")  # pragma: no cover


def _failover(seed: int, lag: float) -> dict[str, int]:
    primary = RedisServer().start()
    link = ChaosProxy(("127.0.0.1", primary.port), delay=1.0 if lag else 0.0, delay_s=lag)
    replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(link.port))).start()
    raw = redis.Redis(port=replica.port, decode_responses=True)
    try:
        linked_by = time.monotonic() + 60
        while raw.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < linked_by, "the replica never linked to the primary"
            time.sleep(0.05)
        url = f"{primary.url}?namespace=fo&socket_timeout=0.2&socket_connect_timeout=0.2"
        clients = [open_ledger(url) for _ in range(WORKERS)]
        progress: list[dict[str, int]] = [{} for _ in range(WORKERS)]
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = [
                pool.submit(_commit_until_down, clients[i], f"f{i}", seed * 10 + i, progress[i])
                for i in range(WORKERS)
            ]
            # the kill comes after enough acknowledged commits however slow the machine, then at random
            enough_by = time.monotonic() + 60
            while sum(len(a) for a in progress) <= MIN_ACKED and time.monotonic() < enough_by:
                time.sleep(0.01)
            time.sleep(random.Random(seed).uniform(0.0, 0.5))
            link.close()  # the primary's host is gone: what is still on the way to the replica too
            primary.kill()  # kill -9, mid-stream
            acked = {k: v for f in futures for k, v in f.result().items()}
        for client in clients:
            client.close()
        raw.execute_command("REPLICAOF", "NO", "ONE")  # promote
        with open_ledger(f"{replica.url}?namespace=fo") as ledger:
            statuses = ledger.status(ROOMY)
            history = ledger.history()
    finally:
        raw.close()
        replica.stop()
        link.close()
        primary.stop()
    journal: dict[str, list[tuple[str, int]]] = {}
    spent = dict.fromkeys((str(s.scope) for s in ROOMY), 0)
    for entry in history:
        journal.setdefault(entry.reservation_id, []).append((entry.event, entry.amounts.get("usd", 0)))
        if entry.event == "committed":
            for scope in entry.scopes:
                spent[scope] += entry.amounts["usd"]
    # what the new primary has is consistent: its counters are its journal, each id resolved once
    assert [s.spent for s in statuses] == [spent[str(s.scope)] for s in ROOMY]
    assert all(len([e for e in events if e[0] in RESOLVED]) <= 1 for events in journal.values())
    lost = [k for k in acked if ("committed", acked[k]) not in journal.get(k, [])]
    return {
        "acknowledged commits before the kill": len(acked),
        "acknowledged commits missing after promotion": len(lost),
        "nano-USD of acknowledged commits missing after promotion": sum(acked[k] for k in lost),
        "commits on the new primary nobody saw acknowledged": len(
            [k for k, ev in journal.items() if k not in acked and any(e == "committed" for e, _ in ev)]
        ),
    }


@pytest.mark.parametrize("lag", [0.01, 0.0] if figures.LONG else [0.01])
def test_replica_promotion(lag: float) -> None:
    """``lag``: each chunk of the replication stream is held that long (a replica across a busy network);
    0 is loopback as is. At the kill the link is cut, as when the primary's host dies."""
    link = f"replication link delayed {lag * 1000:.0f} ms" if lag else "replication over loopback"
    worst = 0
    for seed in range(FAILOVERS):
        found = _failover(seed + 1, lag)
        assert found["acknowledged commits before the kill"] > MIN_ACKED
        worst = max(worst, found["acknowledged commits missing after promotion"])
        for name, value in found.items():
            figures.record("failover", f"{name} ({link})", value)
    figures.record("failover", f"failovers: kill -9 of the primary, replica promoted ({link})", FAILOVERS)
    figures.peak("failover", f"most acknowledged commits missing in one failover ({link})", worst)

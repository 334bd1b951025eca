"""Bank-style load: 32 workers in 4 processes reserve, commit and release on overlapping scopes with
tight limits while readers in every process check each status they read (Redis in CI; SQLite and
Redis Cluster too in the long tier). At every read
``spent + held <= limit``; at the end the counters equal the sum of acknowledged operations exactly.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from budgetguard._ledger import open_ledger
from tests.ledger.cluster_close import close_cluster_client, close_ledger
from tests.redis_server import delete_namespace

from . import figures
from .loadworker import LOAD_SPECS, THREADS
from .workload import Tally, assert_exact, audit, states

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4


@pytest.fixture(params=["redis", "sqlite", "cluster"] if figures.LONG else ["redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    ns = "L" + secrets.token_hex(6)
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        yield f"{url}?namespace={ns}"
        delete_namespace(url, ns)
    else:
        url = request.getfixturevalue("cluster_url")
        yield f"{url}?namespace={ns}"
        client = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
        try:
            for key in client.scan_iter(match=f"bg:{{{ns}}}:*", target_nodes=redis.RedisCluster.ALL_NODES):
                client.delete(key)
        finally:
            close_cluster_client(client)


def test_32_workers_across_processes(shared_url: str, tmp_path: Path) -> None:
    store = shared_url.split(":", 1)[0].replace("redis+cluster", "cluster")
    outs = [tmp_path / f"load-{i}.json" for i in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.loadworker", shared_url, str(out), str(i)],
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
    ledger = open_ledger(shared_url)
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

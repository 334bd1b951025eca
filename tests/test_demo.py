"""The README's first command: ``budgetguard demo`` drives the real SDK clients against the local mock
provider on an embedded ledger, and its report agrees with the ledger's counters to the nano-USD."""

from __future__ import annotations

import json
import subprocess
import sys

import budgetguard as bg
from tests.conftest import Demo


def budgetguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetguard", *args], capture_output=True, text=True, timeout=300, check=True
    )


def test_demo_runs_offline_and_its_report_matches_the_counters(demo: Demo) -> None:
    out = demo.stdout
    assert demo.stderr == ""
    assert "succeeded on attempt 2 after a 429" in out  # a retry
    assert "routed gpt-4o -> gpt-4o-mini: feature:research at 50%" in out  # routing at a threshold
    assert "refused dave (support): user:dave has" in out  # a refusal
    for title in ("spend by user", "spend by feature", "spend by model"):
        assert title in out
    assert "claude-haiku-4-5" in out  # the Anthropic stream was metered
    assert "nothing left held: $0." in out and str(demo.ledger) in out and "try next:" in out

    config = ["--url", f"sqlite:///{demo.ledger}", "--budgets", str(demo.budgets)]
    status = {r["scope"]: r for r in json.loads(budgetguard(*config, "status", "--json").stdout)}
    report = json.loads(budgetguard(*config, "report", "--by", "user", "--format", "json").stdout)
    users = {r["key"]: r for r in report["rows"]}
    assert set(users) == {"alice", "bob", "carol", "dave", "erin"}
    for user, row in users.items():
        assert bg.to_nano(row["cost_usd"]) == bg.to_nano(status[f"user:{user}"]["spent"])
        assert status[f"user:{user}"]["held"] == "0"
    assert bg.to_nano(report["total"]["cost_usd"]) == bg.to_nano(status["global"]["spent"]) > 0
    assert users["dave"]["refused"] >= 1

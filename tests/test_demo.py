"""The README's first command: ``budgetguard demo`` runs offline and shows a refusal."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_refuses_at_the_limit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "budgetguard", "demo"], capture_output=True, text=True, timeout=120, check=True
    )
    out = done.stdout
    assert "worst case of one gpt-4o-mini call" in out
    assert "reached 80% of its day usd budget" in out
    assert "refused: user:alice" in out
    assert "held $0" in out
    assert done.stderr == ""

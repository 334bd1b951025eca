"""``python -m tests.reliability``: run the reliability suite with its long tier and write the figures
the tests counted to docs/reliability.md. ``--fast`` runs the CI tier only; ``--out`` writes elsewhere.
Nothing is written when a test fails."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

from tests.redis_server import server_binary

from .figures import render

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "python -m tests.reliability"


def main() -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--fast", action="store_true", help="the CI tier only (smaller figures)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.json"
        env = {**os.environ, "BUDGETGUARD_FIGURES": str(figures)}
        env["BUDGETGUARD_LONG_TESTS"] = "0" if args.fast else "1"
        run = [
            sys.executable,
            "-m",
            "pytest",
            "tests/reliability",
            "-q",
            "-p",
            "no:cacheprovider",
            *pytest_args,
        ]
        code = subprocess.run(run, cwd=ROOT, env=env, check=False).returncode
        if code != 0:
            print(f"the reliability suite failed (exit {code}): {args.out} left as it was", file=sys.stderr)
            return code
        data = json.loads(figures.read_text())
    version = subprocess.run([server_binary(), "--version"], capture_output=True, text=True, check=True)
    data["environment"] = (
        f"Python {platform.python_version()}, redis-py {redis.__version__}, "
        f"{version.stdout.split(' sha=')[0].strip()}, {os.cpu_count()} CPUs"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(data, COMMAND + (" --fast" if args.fast else "")))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

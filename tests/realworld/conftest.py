"""The real-world tier: provider calls recorded in other projects' public HTTP cassettes, read in place.

The recordings live outside the repository, at ``<repo>/../shared/realworld/fixtures`` (CI has them
there; ``BUDGETGUARD_REALWORLD_DIR`` points elsewhere). They are data from other repositories: never copy
them into this one. Without the folder, every test of this tier skips, saying where it looked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def realworld_dir() -> Path:
    """The fixtures folder: ``$BUDGETGUARD_REALWORLD_DIR``, else ``<repo>/../shared/realworld/fixtures``."""
    override = os.environ.get("BUDGETGUARD_REALWORLD_DIR")
    return Path(override) if override else REPO.parent / "shared" / "realworld" / "fixtures"


def response_files() -> list[Path]:
    folder = realworld_dir() / "responses"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


ABSENT = (
    "real-world fixtures not found at {} (set BUDGETGUARD_REALWORLD_DIR, or check out the shared folder "
    "next to the repository as CI does)"
)


@pytest.fixture(scope="session")
def realworld() -> Path:
    """The fixtures folder; skips the test, saying where it looked, when the folder is absent."""
    folder = realworld_dir()
    if not (folder / "responses").is_dir():
        pytest.skip(ABSENT.format(folder))
    return folder


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``fixture_file``: one test per recorded response (one skipping test when there are none)."""
    if "fixture_file" in metafunc.fixturenames:
        files = response_files()
        params = [pytest.param(path, id=path.stem, marks=_marks(path)) for path in files] or [
            pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT.format(realworld_dir())))
        ]
        metafunc.parametrize("fixture_file", params)


def _marks(path: Path) -> list[pytest.MarkDecorator]:
    from tests.realworld.known import KNOWN_FAILURES

    reason = KNOWN_FAILURES.get(path.stem[:3])
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """After a run that checked the token pairs, print how far above the providers' counts the
    estimates run (``python -m tests.realworld.pairs`` prints the same)."""
    ran = any(
        "test_token_pairs" in getattr(report, "nodeid", "")
        for key in ("passed", "failed")
        for report in terminalreporter.stats.get(key, ())
    )
    if not ran:
        return
    from tests.realworld.pairs import load_pairs, ratios, spreads

    terminalreporter.section("estimate / provider-counted input tokens (token_pairs.jsonl)")
    for spread in spreads(ratios(load_pairs())):
        terminalreporter.write_line(str(spread))

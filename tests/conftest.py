from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import budgetguard
from budgetguard.testing import MockProvider


@pytest.fixture
def global_prices() -> Iterator[budgetguard.PriceBook]:
    """The process-wide price book, restored afterwards (overrides, Azure deployment types and default) so
    tests stay independent."""
    book = budgetguard.price_book
    overrides, deployments = dict(book._overrides), dict(book._deployments)
    default, azure = book._default, book._azure_default
    yield book
    with book._lock:
        book._overrides.clear()
        book._overrides.update(overrides)
        book._deployments.clear()
        book._deployments.update(deployments)
        book._default, book._azure_default = default, azure
        book._cache.clear()


@pytest.fixture
def api() -> Iterator[MockProvider]:
    """A running ``MockProvider`` (a test module may define its own ``api``)."""
    with MockProvider() as mock:
        yield mock


@dataclass(frozen=True)
class Demo:
    ledger: Path
    budgets: Path
    stdout: str
    stderr: str

    @property
    def env(self) -> dict[str, str]:
        return {"BUDGETGUARD_URL": f"sqlite:///{self.ledger}", "BUDGETGUARD_BUDGETS": str(self.budgets)}


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """``budgetguard demo`` run once, in a subprocess as a user runs it, on a ledger of its own."""
    ledger = tmp_path_factory.mktemp("demo") / "ledger.db"
    done = subprocess.run(
        [sys.executable, "-m", "budgetguard", "demo", "--ledger", str(ledger)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return Demo(ledger, ledger.parent / "budgets.toml", done.stdout, done.stderr)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of the tests' own (``tests/postgres_server.py``), or a schema of their own
    on the one ``BUDGETGUARD_TEST_POSTGRES_URL`` names. Without PostgreSQL the tests that need it are
    skipped, unless ``BUDGETGUARD_REQUIRE_POSTGRES`` is set (CI), where they fail. (Imported here: a venv
    without psycopg, such as CI's openai 2 job, runs the other tests.)"""
    try:
        from tests import postgres_server
    except ImportError as exc:
        if os.environ.get("BUDGETGUARD_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"psycopg is not installed (pip install 'llm-budgetguard[postgres]'): {exc}")
    url = postgres_server.configured_url()
    if url is not None:
        with postgres_server.private_schema(url) as private:
            yield private
        return
    try:
        postgres_server.bindir()
    except RuntimeError as exc:  # (CI requires it: never a silent skip there)
        if os.environ.get("BUDGETGUARD_REQUIRE_POSTGRES"):
            raise
        pytest.skip(str(exc))
    server = postgres_server.PostgresServer().start()
    try:
        yield server.url
    finally:
        server.remove()

"""Fixtures of the reliability suite: private Redis servers, and the figures file."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.ledger.conftest import cluster_url, redis_url, store_url  # noqa: F401 - store_url: every store

from . import figures

STORES = ["memory", "sqlite", "redis", "cluster", "postgres"]


@pytest.fixture(scope="session", autouse=True)
def _write_figures() -> Iterator[None]:
    """With ``BUDGETGUARD_FIGURES=path``, write what the tests recorded there at the end of the session."""
    yield
    path = os.environ.get("BUDGETGUARD_FIGURES")
    if path:
        figures.dump(path)


@pytest.fixture(autouse=True)
def _no_default_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let a test fall back to the user's real ledger file."""
    monkeypatch.setenv("BUDGETGUARD_URL", "memory://")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``store_url``: a fresh store of each kind in the module's ``STORES`` (default: all of them)."""
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", getattr(metafunc.module, "STORES", STORES), indirect=True)

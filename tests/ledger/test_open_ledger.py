"""Choosing a store by URL."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from budgetguard import ConfigurationError, LedgerError
from budgetguard._ledger import Hold, MemoryLedger, SQLiteLedger, open_async_ledger, open_ledger
from budgetguard._ledger._local import AsyncLocalLedger
from budgetguard._ledger._postgres import PostgresLedger
from budgetguard._ledger._redis import AsyncRedisLedger, RedisLedger
from tests.postgres_server import with_options
from tests.redis_server import free_port

from .helpers import counter


def test_memory_and_sqlite_urls(tmp_path: Path) -> None:
    assert isinstance(open_ledger("memory://"), MemoryLedger)
    db = tmp_path / "sub" / "ledger.db"
    with open_ledger(f"sqlite:///{db}?namespace=team-a") as store:
        assert isinstance(store, SQLiteLedger)
        assert store.namespace == "team-a"
        assert store.path == db
    assert db.exists()


def test_sqlite_persists_across_opens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spec = counter(limit=1000)
    with open_ledger(url) as first:
        first.commit(first.reserve([Hold(spec, 10)]), {"usd": 7})
        first.set_limit(spec, 5000)
    with open_ledger(url) as again:
        [status] = again.status([spec])
        assert (status.spent, status.limit, status.overridden) == (7, 5000, True)
        assert [e.event for e in again.history()] == ["committed"]


def test_relative_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_ledger("sqlite:///relative.db") as store:
        assert isinstance(store, SQLiteLedger)
    assert (tmp_path / "relative.db").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_sqlite_url_needs_a_path(url: str) -> None:
    with pytest.raises(ConfigurationError, match="needs a path"):
        open_ledger(url)


@pytest.mark.parametrize("url", ["mysql://x", "nothing", "file:///tmp/x"])
def test_unknown_scheme_lists_the_known_ones(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_ledger(url)
    for known in ("memory://", "sqlite:///", "redis://", "rediss://", "unix://", "redis+cluster://",
                  "postgresql://"):  # fmt: skip
        assert known in str(info.value)


def test_redis_urls_build_redis_stores() -> None:
    # Building a client does not connect; the scheme picks the class.
    store = open_ledger("redis://127.0.0.1:1/0?namespace=x&socket_timeout=0.5")
    assert isinstance(store, RedisLedger)
    assert store.namespace == "x"
    assert store.client.connection_pool.connection_kwargs["socket_timeout"] == 0.5
    store.close()
    assert isinstance(open_async_ledger("rediss://127.0.0.1:1/0"), AsyncRedisLedger)
    assert isinstance(open_ledger("unix:///tmp/nonexistent.sock"), RedisLedger)


def test_bad_namespace() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        open_ledger("redis://127.0.0.1:1/0", namespace="{evil}")


def test_missing_redis_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "redis" or name.startswith("redis."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigurationError, match=r"llm-budgetguard\[redis\]"):
        open_ledger("redis://localhost:6379/0")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_open_postgres_stores(postgres_url: str, scheme: str) -> None:
    url = with_options(postgres_url.replace("postgresql://", f"{scheme}://", 1), namespace="open-test")
    with open_ledger(url) as store:
        assert isinstance(store, PostgresLedger)
        assert store.namespace == "open-test"
        assert store.status([counter(limit=5)])[0].spent == 0


async def test_postgres_async_twin_runs_the_sync_store(postgres_url: str) -> None:
    store = open_async_ledger(with_options(postgres_url, namespace="open-test-async"))
    try:
        assert isinstance(store, AsyncLocalLedger) and isinstance(store.sync, PostgresLedger)
        assert store.sync_twin() is store.sync
        [status] = await store.status([counter(limit=5)])
        assert status.limit == 5
    finally:
        await store.aclose()


def test_postgres_server_down_is_a_ledger_error_with_its_cause() -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/db?connect_timeout=1"
    with pytest.raises(LedgerError, match="cannot open the PostgreSQL ledger") as info:
        open_ledger(url)
    assert "Connection refused" in str(info.value) or "connection" in str(info.value.__cause__)
    assert "secret" not in str(info.value)  # (the password is not printed)


def test_postgres_bad_namespace_and_options() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        open_ledger("postgresql://127.0.0.1:1/db?namespace=no%20spaces")
    with pytest.raises(ConfigurationError, match="journal_maxlen applies only to"):
        open_ledger("postgresql://127.0.0.1:1/db?journal_maxlen=5")
    with pytest.raises(ConfigurationError, match="journal_retention_days must be a whole number"):
        open_ledger("postgresql://127.0.0.1:1/db?journal_retention_days=0")


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("psycopg", "psycopg_pool"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigurationError, match=r"pip install 'llm-budgetguard\[postgres\]'"):
        open_ledger("postgresql://localhost/db")

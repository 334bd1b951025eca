"""Fixtures shared by every ledger test: one list of stores, each test runs against all of them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from budgetguard._ledger import AsyncLedger, Ledger, open_async_ledger, open_ledger
from tests import postgres_server
from tests.postgres_server import with_options
from tests.redis_server import RedisCluster, RedisServer, configured_url, delete_namespace

from .cluster_close import close_cluster_client

STORES = ["memory", "sqlite", "redis", "cluster", "postgres"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = configured_url()
    if url is not None:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    cluster = RedisCluster().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def _namespace() -> str:
    return "t" + secrets.token_hex(6)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty store of the kind the test is parametrized with."""
    kind = request.param
    ns = _namespace()
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    elif kind == "postgres":
        url = request.getfixturevalue("postgres_url")
        yield with_options(url, namespace=ns)
        postgres_server.delete_namespace(url, ns)
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
        yield f"{url}?namespace={ns}"
        delete_namespace(url, ns)
    else:
        url = request.getfixturevalue("cluster_url")
        yield f"{url}?namespace={ns}"
        plain = url.replace("redis+cluster://", "redis://")
        client = redis.RedisCluster.from_url(plain)
        try:
            for key in client.scan_iter(match=f"bg:{{{ns}}}:*", target_nodes=redis.RedisCluster.ALL_NODES):
                client.delete(key)
        finally:
            close_cluster_client(client)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" in metafunc.fixturenames:  # a module may name fewer kinds (STORE_KINDS)
        metafunc.parametrize("store_url", getattr(metafunc.module, "STORE_KINDS", STORES), indirect=True)


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    with open_ledger(store_url) as store:
        yield store


@pytest.fixture
async def async_ledger(store_url: str) -> AsyncIterator[AsyncLedger]:
    store = open_async_ledger(store_url)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def ledger_factory(store_url: str, ledger: Ledger) -> Iterator[Callable[[], Ledger]]:
    """Open more clients of the same store (another process would do the same; the memory store
    lives in one process, so its "other client" is the same object)."""
    opened: list[Ledger] = []

    def make() -> Ledger:
        if store_url.startswith("memory://"):
            return ledger
        store = open_ledger(store_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()

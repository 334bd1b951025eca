"""Namespaces: independent sets of budgets in one store (issue 13, item 5).

Two ledgers on the same location with different namespaces share nothing (counters, run-time limits,
reservations, journal); two with the same namespace share everything. Each ``memory://`` is a new,
empty store: its namespace is only a label, and its "same location" is the same object.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import redis

from budgetguard import ConfigurationError
from budgetguard._budgets import Unit
from budgetguard._ledger import Hold, Ledger, ReservationError, SQLiteLedger, open_async_ledger, open_ledger
from budgetguard._ledger._sqlite_report import COLUMNS as REPORT_COLUMNS
from tests.redis_server import delete_namespace

from .cluster_close import close_cluster_client
from .helpers import counter


def with_namespace(url: str, namespace: str) -> str:
    base, _, query = url.partition("?")
    options = [(k, v) for k, v in parse_qsl(query) if k != "namespace"]
    return f"{base}?{urlencode([*options, ('namespace', namespace)])}"


def _delete(url: str, namespace: str) -> None:
    if url.startswith("redis+cluster://"):
        client = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://").partition("?")[0])
        try:
            for key in client.scan_iter(match=f"bg:{{{namespace}}}:*", target_nodes=client.ALL_NODES):
                client.delete(key)
        finally:
            close_cluster_client(client)
    elif url.startswith("redis://"):
        delete_namespace(url.partition("?")[0], namespace)


@pytest.fixture
def other(store_url: str, ledger: Ledger) -> Iterator[Callable[[str], Ledger]]:
    """Open the store of ``ledger`` again under another namespace (deleted afterwards)."""
    opened: list[tuple[Ledger, str]] = []

    def make(namespace: str) -> Ledger:
        store = open_ledger(with_namespace(store_url, namespace))
        opened.append((store, namespace))
        return store

    yield make
    for store, namespace in opened:
        store.close()
        _delete(store_url, namespace)


def test_namespaces_share_nothing_and_the_same_namespace_shares_everything(
    ledger: Ledger, ledger_factory: Callable[[], Ledger], other: Callable[[str], Ledger]
) -> None:
    spec = counter("user:alice", limit=100)
    first = ledger.reserve([Hold(spec, 60)], id="r-1", meta={"model": "m"})
    ledger.commit(first, {Unit.USD: 50})
    held = ledger.reserve([Hold(spec, 30)], id="r-2", lease=600)
    ledger.set_limit(spec, 90)

    b = other(f"{ledger.namespace}-b")
    [status] = b.status([spec])
    assert (status.spent, status.held, status.limit, status.overridden) == (0, 0, 100, False)
    assert b.get_limit(spec) is None
    assert b.history() == []
    with pytest.raises(ReservationError, match="unknown reservation"):
        b.commit("r-2", {Unit.USD: 1})
    # the same ids are new here, and spending here leaves the first namespace alone
    mine = b.reserve([Hold(spec, 100)], id="r-1")
    assert not mine.duplicate and mine.held[0].limit == 100
    b.commit(mine, {Unit.USD: 100})
    b.set_limit(spec, 7)

    again = ledger_factory()  # the same namespace, another client (memory: the same store)
    [status] = again.status([spec])
    assert (status.spent, status.held, status.limit) == (50, 30, 90)
    assert again.get_limit(spec) == 90
    assert [(e.event, e.reservation_id) for e in again.history()] == [("committed", "r-1")]
    assert again.reserve([Hold(spec, 60)], id="r-1").duplicate
    assert again.commit(held.id, {Unit.USD: 30}).state == "committed"
    [status] = ledger.status([spec])
    assert (status.spent, status.held) == (80, 0)
    [status] = b.status([spec])
    assert (status.spent, status.held, status.limit) == (100, 0, 7)
    assert [(e.event, e.reservation_id) for e in b.history()] == [("committed", "r-1")]


async def test_async_ledgers_keep_namespaces_apart(store_url: str, other: Callable[[str], Ledger]) -> None:
    spec = counter("user:bob", limit=100)
    a = open_async_ledger(store_url)
    b_url = with_namespace(store_url, f"{a.namespace}-b")
    other(f"{a.namespace}-b").close()  # (registers the namespace for deletion)
    b = open_async_ledger(b_url)
    try:
        await a.commit(await a.reserve([Hold(spec, 10)]), {Unit.USD: 10})
        await a.set_limit(spec, 50)
        [status] = await b.status([spec])
        assert (status.spent, status.limit) == (0, 100)
        assert await b.history() == [] and await b.get_limit(spec) is None
    finally:
        await a.aclose()
        await b.aclose()


def test_each_memory_url_is_a_new_empty_store() -> None:
    spec = counter()
    a = open_ledger("memory://?namespace=x")
    a.commit(a.reserve([Hold(spec, 5)]), {Unit.USD: 5})
    [status] = open_ledger("memory://?namespace=x").status([spec])
    assert status.spent == 0


def test_sqlite_namespaces_differing_in_case_are_apart(tmp_path: Path) -> None:
    """SQLite's table names ignore case; namespaces, as on Redis, do not."""
    spec = counter()
    path = tmp_path / "l.db"
    with SQLiteLedger(path, namespace="team") as lower, SQLiteLedger(path, namespace="Team") as upper, \
            SQLiteLedger(path, namespace="TEAM") as shout:  # fmt: skip
        lower.commit(lower.reserve([Hold(spec, 5)]), {Unit.USD: 5})
        upper.set_limit(spec, 7)
        assert [s.status([spec])[0].spent for s in (lower, upper, shout)] == [5, 0, 0]
        assert [s.get_limit(spec) for s in (lower, upper, shout)] == [None, 7, None]
        assert [len(s.history()) for s in (lower, upper, shout)] == [1, 0, 0]


OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, spent INTEGER NOT NULL, held INTEGER NOT NULL,
    expires_at INTEGER, label TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS leases (
    counter TEXT NOT NULL, res_id TEXT NOT NULL, expires_at INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (counter, res_id)
) STRICT;
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (counter, expires_at);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS reservations_by_expiry ON reservations (expires_at);
CREATE INDEX IF NOT EXISTS counters_by_expiry ON counters (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, event TEXT NOT NULL,
    res_id TEXT NOT NULL, scopes TEXT NOT NULL, amounts TEXT NOT NULL, data TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS journal_by_time ON journal (ts);
"""
"""The schema of the SQLite files written before namespaces (release 0.1.0)."""


def _schema(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    db.close()
    return {(name, " ".join(sql.replace(")", " )").split())) for name, sql in rows}  # (spaces aside)


def test_a_file_from_before_namespaces_is_the_default_namespace(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.executescript(OLD_SCHEMA)
    db.close()
    path = tmp_path / "ledger.db"
    spec = counter("user:alice", limit=100)
    with SQLiteLedger(path) as store:
        store.commit(store.reserve([Hold(spec, 20)], id="old-1"), {Unit.USD: 20})
        store.reserve([Hold(spec, 5)], id="old-held", lease=600)
        store.set_limit(spec, 70)
    with sqlite3.connect(path) as db:  # make it exactly a file of 0.1.0: no table of its own, and
        # its leases and reservations as rowid tables (WITHOUT ROWID since schema 2), rows kept
        db.executescript(
            "ALTER TABLE leases RENAME TO leases_new; ALTER TABLE reservations RENAME TO reservations_new;"
            "DROP INDEX reservations_by_expiry;"
            + OLD_SCHEMA
            + "INSERT INTO leases (counter, res_id, expires_at, amount) "
            "SELECT counter, res_id, expires_at, amount FROM leases_new;"
            "INSERT INTO reservations (id, record, expires_at) SELECT id, record, expires_at "
            "FROM reservations_new; DROP TABLE leases_new; DROP TABLE reservations_new; DROP TABLE meta;"
        )
        db.execute("INSERT INTO leases VALUES ('user:gone@0', 'orphan', 0, 1)")  # a past window's lease
        for column in REPORT_COLUMNS:  # (added since: the journal's report columns, migrated on open)
            db.execute(f"ALTER TABLE journal DROP COLUMN {column}")
    db.close()
    assert _schema(path) == _schema(old)

    with SQLiteLedger(path) as store:  # the default namespace: the same data
        [status] = store.status([spec])
        assert (status.spent, status.held, status.limit) == (20, 5, 70)
        assert [e.reservation_id for e in store.history()] == ["old-1"]
        assert store.commit("old-held", {Unit.USD: 5}).state == "committed"
        with sqlite3.connect(path) as db:  # the lease rows of counters that are gone are dropped once
            assert db.execute("SELECT count(*) FROM leases WHERE res_id = 'orphan'").fetchone() == (0,)
            rebuilt = db.execute(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('leases', 'reservations') AND sql LIKE "
                "'%WITHOUT ROWID%'"
            )
            assert rebuilt.fetchone() == (2,)  # schema 2
        db.close()
    with open_ledger(f"sqlite:///{path}?namespace=team-b") as b:
        [status] = b.status([spec])
        assert (status.spent, status.held, status.limit) == (0, 0, 100)
        assert b.history() == [] and b.get_limit(spec) is None
    with open_ledger(f"sqlite:///{path}?namespace=default") as same:
        assert same.status([spec])[0].spent == 25


BAD = ["", "a b", "{x}", "x" * 65, "é", "a/b", 'a"b', "a@b", "a;DROP TABLE counters"]


@pytest.mark.parametrize("namespace", BAD)
@pytest.mark.parametrize("base", ["memory://", "sqlite:///{tmp}/l.db", "redis://127.0.0.1:1/0"])
def test_a_bad_namespace_is_a_configuration_error(tmp_path: Path, base: str, namespace: str) -> None:
    url = base.format(tmp=tmp_path)
    with pytest.raises(ConfigurationError, match=r"namespace .* must be 1-64 characters"):
        open_ledger(url, namespace=namespace)
    with pytest.raises(ConfigurationError, match=r"namespace .* must be 1-64 characters"):
        open_async_ledger(f"{url}?{urlencode({'namespace': namespace})}")
    assert not (tmp_path / "l.db").exists()


def test_namespace_in_the_url_and_the_argument_must_agree(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}?namespace=a"
    with pytest.raises(ConfigurationError, match="disagree"):
        open_ledger(url, namespace="b")
    with open_ledger(url, namespace="a") as store:
        assert store.namespace == "a" and urlsplit(store.url).query == "namespace=a"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///{tmp}/l.db?namspace=a", "unknown option"),
        ("memory://?journal_retention_days=3", "applies only to sqlite://"),
        ("sqlite:///{tmp}/l.db?journal_maxlen=3", "applies only to memory://"),
        ("redis://127.0.0.1:1/0?journal_retention_days=3", "applies only to sqlite://"),
        ("memory://?journal_maxlen=0", "journal_maxlen must be a whole number"),
        ("redis://127.0.0.1:1/0?journal_maxlen=lots", "journal_maxlen must be a whole number"),
        ("sqlite:///{tmp}/l.db?journal_retention_days=-1", "journal_retention_days must be a whole number"),
    ],
)
def test_url_options_are_checked(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_ledger(url.format(tmp=tmp_path))

"""The PostgreSQL store's migrations make the journal columns the writer fills (``_sqlite_report.
COLUMNS``): a column added to the shared list without a migration of its own fails here."""

from __future__ import annotations

import psycopg

from budgetguard._ledger import Hold
from budgetguard._ledger._postgres import PostgresLedger
from budgetguard._ledger._postgres_schema import VERSION, migrate
from budgetguard._ledger._sqlite_report import COLUMNS
from tests import postgres_server

from .helpers import counter


def test_the_migrations_make_every_report_column_the_writer_fills(postgres_url: str) -> None:
    schema = postgres_server.private_schema(postgres_server.libpq_url(postgres_url))
    with schema as url, psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn) == VERSION
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'budgetguard_journal' "
            "AND table_schema = current_schema() ORDER BY ordinal_position"
        ).fetchall()
    made = [name for (name,) in rows if name.startswith("r_")]
    assert made == list(COLUMNS)


def test_migration_2_keys_the_rows_a_version_1_store_wrote_by_their_digest(postgres_url: str) -> None:
    """Rows written, then taken back to version 1's shape (keyed by their names, no digests): the
    migration fills their digests and the store reads and resolves them as before."""
    spec = counter("user:" + "x" * 100, 10_000)
    schema = postgres_server.private_schema(postgres_server.libpq_url(postgres_url))
    with schema as url:
        with PostgresLedger(url, namespace="old") as store:
            store.commit(store.reserve([Hold(spec, 100)]), {"usd": 70})
            live = store.reserve([Hold(spec, 200)], id="kept-over-the-upgrade")
            store.set_limit(spec, 5000)
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            for table, key, digests in _VERSION_1_KEYS:
                for d in digests:
                    conn.execute(f"ALTER TABLE {table} DROP COLUMN {d}")  # (its primary key with it)
                conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY {key}")
            conn.execute("UPDATE budgetguard_version SET version = 1 WHERE component = 'ledger'")
        with PostgresLedger(url, namespace="old") as store:  # (migrates)
            assert store.get_limit(spec) == 5000
            assert (store.status([spec])[0].spent, store.status([spec])[0].held) == (70, 200)
            assert store.commit(live, {"usd": 150}).state == "committed"
            assert (store.status([spec])[0].spent, store.status([spec])[0].held) == (220, 0)
            with psycopg.connect(url) as conn:
                assert migrate(conn) == VERSION == 2


_VERSION_1_KEYS = (
    ("budgetguard_counters", "(ns, key)", ("kh",)),
    ("budgetguard_leases", "(ns, counter, expires_at, res_id)", ("ch", "rh")),
    ("budgetguard_reservations", "(ns, id)", ("ih",)),
    ("budgetguard_limits", "(ns, key)", ("kh",)),
)


def test_a_store_waits_for_another_s_migration_a_bounded_time_and_names_it(postgres_url: str) -> None:
    """A process holding the migration lock (a migration under way, or frozen): a store opening tables
    that need migrating waits ``wait`` seconds at most, then says which backend holds it and what to do;
    once the lock is free the same open migrates."""
    import pytest

    from budgetguard._errors import LedgerError
    from budgetguard._ledger._postgres_schema import _LOCK

    schema = postgres_server.private_schema(postgres_server.libpq_url(postgres_url))
    with schema as url, psycopg.connect(url, autocommit=True) as holder:
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        holder.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(LedgerError, match=rf"backend pid {pid}\).*pg_terminate_backend"):
                migrate(conn, wait=0.2)
            assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)  # (the wait was the migration's)
            holder.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
            assert migrate(conn, wait=0.2) == VERSION

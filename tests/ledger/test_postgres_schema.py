"""The PostgreSQL store's migrations make the journal columns the writer fills (``_sqlite_report.
COLUMNS``): a column added to the shared list without a migration of its own fails here."""

from __future__ import annotations

import psycopg

from budgetguard._ledger._postgres_schema import VERSION, migrate
from budgetguard._ledger._sqlite_report import COLUMNS
from tests import postgres_server


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

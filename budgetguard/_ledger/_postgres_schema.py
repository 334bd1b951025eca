"""The PostgreSQL store's tables, and their migration by the store itself (no migration tool needed).

``budgetguard_version`` holds the version of the tables (``component = 'ledger'``). Opening a store
reads it; when it is older than ``VERSION`` (or the tables are not there yet), the store runs the
missing ``MIGRATIONS`` in one transaction, under an advisory lock, so that processes opening the same
database at once migrate it once. Version 2 keys the rows by the digest of their names (a scope id
may be longer than a btree entry): a process of version 1 cannot write tables version 2 migrated, so
stop the older processes before the first newer one opens the database.

The tables live in the connection's ``search_path`` (``public`` by default; choose another schema with
libpq's ``options=-csearch_path%3Dname`` in the URL) and hold every namespace, each row keyed by its
namespace (``ns``).
"""

from __future__ import annotations

from typing import Any

from .._errors import LedgerError

__all__ = ["MIGRATIONS", "VERSION", "migrate"]

_REPORT_COLUMNS = (
    "r_calls bigint, r_in bigint, r_out bigint, r_cost bigint, r_estimate bigint, r_model text, "
    "r_function text, r_scopes text, r_attempt bigint, r_estimated text, r_flags text, r_export bigint"
)
"""The journal's report columns as version 1 made them: frozen (a migration never changes once
released); a column ``_sqlite_report.COLUMNS`` gains needs a migration of its own (a test compares)."""


def _by_digest(table: str, key: str, **digests: str) -> tuple[str, ...]:
    """Key ``table`` by ``key``, its columns ``digests`` (each the SHA-256 of the named column's
    UTF-8, filled for the rows there) in place of the names a btree entry may not hold."""
    return (
        *(f"ALTER TABLE {table} ADD COLUMN {d} bytea" for d in digests),
        f"UPDATE {table} SET "
        + ", ".join(f"{d} = sha256(convert_to({name}, 'UTF8'))" for d, name in digests.items()),
        *(f"ALTER TABLE {table} ALTER COLUMN {d} SET NOT NULL" for d in digests),
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
        f"ALTER TABLE {table} ADD PRIMARY KEY {key}",
    )


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE budgetguard_counters (
            ns text NOT NULL, key text NOT NULL, spent bigint NOT NULL, held bigint NOT NULL,
            expires_at bigint, label text NOT NULL, PRIMARY KEY (ns, key))""",  # (label: JSON)
        "CREATE INDEX budgetguard_counters_by_expiry ON budgetguard_counters (ns, expires_at) "
        "WHERE expires_at IS NOT NULL",
        """CREATE TABLE budgetguard_leases (
            ns text NOT NULL, counter text NOT NULL, expires_at bigint NOT NULL, res_id text NOT NULL,
            amount bigint NOT NULL, PRIMARY KEY (ns, counter, expires_at, res_id))""",
        """CREATE TABLE budgetguard_reservations (
            ns text NOT NULL, id text NOT NULL, record text NOT NULL, expires_at bigint NOT NULL,
            PRIMARY KEY (ns, id))""",
        "CREATE INDEX budgetguard_reservations_by_expiry ON budgetguard_reservations (ns, expires_at)",
        """CREATE TABLE budgetguard_limits (
            ns text NOT NULL, key text NOT NULL, value bigint NOT NULL, PRIMARY KEY (ns, key))""",
        f"""CREATE TABLE budgetguard_journal (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ns text NOT NULL, ts bigint NOT NULL,
            event text NOT NULL, res_id text NOT NULL, scopes text NOT NULL, amounts text NOT NULL,
            data text NOT NULL, {_REPORT_COLUMNS})""",
        "CREATE INDEX budgetguard_journal_by_time ON budgetguard_journal (ns, ts)",
        """CREATE TABLE budgetguard_meta (
            ns text NOT NULL, key text NOT NULL, value bigint NOT NULL, PRIMARY KEY (ns, key))""",
    ),
    (  # 2: rows keyed by the digest of their name (``_postgres_tx.digest``), the name beside it unindexed
        *_by_digest("budgetguard_counters", "(ns, kh)", kh="key"),
        *_by_digest("budgetguard_leases", "(ns, ch, expires_at, rh)", ch="counter", rh="res_id"),
        *_by_digest("budgetguard_reservations", "(ns, ih)", ih="id"),
        *_by_digest("budgetguard_limits", "(ns, kh)", kh="key"),
    ),
)
"""The statements that take the tables from version ``i`` to ``i + 1`` (``MIGRATIONS[i]``)."""
VERSION = len(MIGRATIONS)

_LOCK = 0x6267_6C65_6467_6572  # "bgledger": one advisory lock for every migration of a database
_READ = "SELECT version FROM budgetguard_version WHERE component = 'ledger'"


def current(conn: Any) -> int:
    """The tables' version (0: none yet), read in a transaction of its own."""
    from psycopg import errors

    try:
        with conn.transaction():
            row = conn.execute(_READ).fetchone()
    except errors.UndefinedTable:
        return 0
    return 0 if row is None else int(row[0])


MIGRATION_WAIT = 120.0
"""Seconds a process opening the store waits for another's migration (its lock) before it raises
``LedgerError`` naming that process: a migration of large tables takes a while; a frozen one, forever."""
MIGRATION_IDLE_MS = 60_000
"""A migrating session frozen this long inside its transaction is ended by the server (its work rolled
back, its lock released for the next process): the migration's statements follow each other at once."""


def migrate(conn: Any, wait: float | None = None) -> int:
    """Bring the tables to ``VERSION`` (nothing to do, the common case, costs one read); the version
    they have after. Waits ``wait`` seconds (``MIGRATION_WAIT``) at most for another process's migration."""
    from psycopg import errors

    version = current(conn)
    if version >= VERSION:
        return version
    wait = MIGRATION_WAIT if wait is None else wait
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = {max(1, round(wait * 1000))}")
            conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {MIGRATION_IDLE_MS}")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            return _migrate(conn)
    except errors.LockNotAvailable:
        holders = conn.execute(_HOLDERS, (_LOCK >> 32, _LOCK & 0xFFFF_FFFF)).fetchall()
        pids = ", ".join(str(pid) for (pid,) in holders) or "gone since"
        raise LedgerError(
            f"another process (PostgreSQL backend pid {pids}) held the budgetguard tables' migration lock "
            f"for over {wait:g} s: let its migration finish and open the store again; if it is stuck, end "
            "it (SELECT pg_terminate_backend(<pid>)) and open the store again"
        ) from None


_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s "
    "AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
"""The sessions holding the migration lock (a bigint advisory lock: its high and low 32 bits)."""


def _migrate(conn: Any) -> int:
    """The migration itself, under its lock (the version as another process may have left it)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS budgetguard_version "
        "(component text PRIMARY KEY, version integer NOT NULL)"
    )
    row = conn.execute(_READ).fetchone()  # (another process may have migrated meanwhile)
    version = 0 if row is None else int(row[0])
    for step in MIGRATIONS[version:]:
        for statement in step:
            conn.execute(statement)
    if version < VERSION:
        conn.execute(
            "INSERT INTO budgetguard_version (component, version) VALUES ('ledger', %s) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (VERSION,),
        )
    return max(version, VERSION)

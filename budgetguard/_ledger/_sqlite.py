"""``sqlite:///path/to/ledger.db``: the embedded, persistent store.

Safe for several processes on one machine: WAL mode, a busy timeout, and one ``BEGIN IMMEDIATE``
transaction per operation (the write lock is taken before anything is read, so two processes never
admit against the same stale totals). Amounts are SQLite INTEGERs (signed 64-bit), never REAL.

Each namespace has its own tables (``_sqlite_tx``: the tables, statements and one transaction). Every
512th operation prunes what has expired: resolved reservations 15 minutes after their lease
(``RECORD_RETENTION_MS``), past windows' counters (with their lease rows) a day after the window,
journal entries after ``journal_retention_days``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .._errors import LedgerError
from ._base import DEFAULT_NAMESPACE, JournalQuery, check_setting
from ._engine import Tx
from ._local import LocalLedger, journal_entry, wall_clock_ms
from ._sqlite_report import FACTS_VERSION, Aggregate, aggregate, migrate
from ._sqlite_tx import _SCHEMA_VERSION, _TABLES, _Redo, _Sql, _SQLiteTx, journal_row
from ._types import JournalEntry

__all__ = ["SQLiteLedger", "journal_row"]

R = TypeVar("R")

JOURNAL_RETENTION_DAYS = 400
"""The journal keeps this many days (``journal_complete_since`` says when it dropped older entries)."""


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (a class, not @contextmanager: this is the hot path)."""

    def __init__(self, store: SQLiteLedger, fast: bool = True) -> None:
        self.store = store
        self.cursor = store._cursor()
        self.db = self.cursor.connection
        self.fast = fast

    def __enter__(self) -> Tx:
        try:
            self.cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"the SQLite ledger at {self.store.path} is unavailable: {exc}") from exc
        return _SQLiteTx(self.cursor, self.store._sql, self.fast)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        db, store = self.db, self.store
        if kind is None:
            try:
                store._ops += 1
                if store._ops % 512 == 0:
                    store._prune(db)
                self.cursor.execute("COMMIT")
                return
            except sqlite3.Error as error:
                db.execute("ROLLBACK")
                raise LedgerError(f"SQLite ledger operation failed: {error}") from error
            except BaseException:
                db.execute("ROLLBACK")
                raise
        db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise LedgerError(f"SQLite ledger operation failed: {exc}") from exc


class SQLiteLedger(LocalLedger):
    """The embedded default store: one file, shared safely by the processes of one machine. Each
    namespace has its own tables in it; the journal keeps ``journal_retention_days`` days."""

    def __init__(
        self,
        path: str | Path,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        clock: Callable[[], int] = wall_clock_ms,
        timeout: float = 10.0,
        journal_retention_days: int = JOURNAL_RETENTION_DAYS,
    ) -> None:
        path = Path(path)
        query = "" if namespace == DEFAULT_NAMESPACE else f"?namespace={namespace}"
        super().__init__(namespace=namespace, url=f"sqlite:///{path}{query}", clock=clock)
        self.path = path
        self.timeout = timeout
        self.journal_retention_ms = (
            check_setting(journal_retention_days, "journal_retention_days") * 86_400_000
        )
        self._sql = _Sql(self.namespace)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._ops = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db()
            with db:
                db.executescript(self._sql.schema)
            self._migrate(db)
            self._migrate_journal(db)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the SQLite ledger at {path}: {exc}") from exc

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Once per namespace, in one transaction: drop the lease rows of past windows that earlier
        versions left behind (they now go with their counter row: schema 1), and rebuild the leases
        and reservations tables of a file made before schema 2 as ``WITHOUT ROWID`` tables."""
        sql = self._sql
        row = db.execute(sql.meta, ("schema",)).fetchone()
        if row is not None and row[0] >= _SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(sql.meta, ("schema",)).fetchone()  # (another process may have done it)
            if row is None or row[0] < _SCHEMA_VERSION:
                db.execute(sql.orphan_leases)
                for table in _TABLES:
                    self._rebuild(db, table)
                db.execute(sql.put_meta, ("schema", _SCHEMA_VERSION))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _rebuild(self, db: sqlite3.Connection, table: str) -> None:
        """Copy ``table`` into its ``_TABLES`` form, unless it has it (a file made since)."""
        n = self._sql.names
        bare = n[table].strip('"')
        found = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (bare,))
        if "WITHOUT ROWID" in found.fetchone()[0].upper():
            return
        columns = (
            "id, record, expires_at" if table == "reservations" else "counter, expires_at, res_id, amount"
        )
        db.execute(_TABLES[table].format(name=n[f"{table}_v2"]))
        db.execute(f"INSERT INTO {n[table + '_v2']} ({columns}) SELECT {columns} FROM {n[table]}")
        db.execute(f"DROP TABLE {n[table]}")  # (with its indexes)
        db.execute(f"ALTER TABLE {n[table + '_v2']} RENAME TO {n[table]}")
        if table == "reservations":
            db.execute(f"CREATE INDEX {n['reservations_by_expiry']} ON {n['reservations']} (expires_at)")

    def _migrate_journal(self, db: sqlite3.Connection) -> None:
        """Once per namespace: the journal's report columns on a table made before them (and filled)."""
        sql = self._sql

        def done() -> bool:
            row = db.execute(sql.meta, ("journal_facts",)).fetchone()
            return row is not None and row[0] >= FACTS_VERSION

        def mark() -> None:
            with db:
                db.execute(sql.put_meta, ("journal_facts", FACTS_VERSION))

        migrate(db, sql.report, done, mark)

    def _cursor(self) -> sqlite3.Cursor:
        """This thread's connection's cursor for the transactions (each statement is read to its end
        before the next one runs)."""
        cursor: sqlite3.Cursor | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._db().cursor()
        return cursor

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            _wal(db, self.timeout)
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
            self._local.cursor = db.cursor()
            with self._conn_lock:
                self._connections.append(db)
        return db

    def _atomic(self, op: Callable[..., R], *args: Any) -> R:
        try:
            with _Transaction(self) as tx:
                return op(tx, self._clock(), *args)
        except _Redo:
            with _Transaction(self, fast=False) as tx:
                return op(tx, self._clock(), *args)

    def _prune(self, db: sqlite3.Connection) -> None:
        now = self._clock()
        sql = self._sql
        for statement in sql.prune:
            db.execute(statement, (now,))
        cutoff = now - self.journal_retention_ms
        if db.execute(sql.prune_journal, (cutoff,)).rowcount:  # every entry from cutoff on is kept
            db.execute(sql.raise_meta, ("journal_complete_since", cutoff))

    def _journal(
        self, since: int | None, until: int | None, scope: str | None, limit: int | None
    ) -> Iterator[JournalEntry]:
        rows = self._db().execute(
            self._sql.history,
            (since if since is not None else -(2**62), until if until is not None else 2**62),
        )
        while chunk := rows.fetchmany(2000):  # (a long range is never all in memory)
            for row in chunk:
                yield journal_entry(*row)

    def stream_history(
        self, *, since: datetime | None = None, until: datetime | None = None, chunk: int = 5_000
    ) -> Iterator[JournalEntry]:
        """``Ledger.stream_history``, through a cursor on a connection of its own: a stream left open (a
        report read halfway, an export still writing) holds its read transaction there, not on the
        connection this thread's operations write through (whose next write would fail at once)."""
        query = JournalQuery.parse(since, until, None, None, None, None)
        return self._stream(query.since, query.until, max(1, chunk))

    def _stream(self, since: int | None, until: int | None, chunk: int) -> Iterator[JournalEntry]:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            rows = db.execute(
                self._sql.history,
                (since if since is not None else -(2**62), until if until is not None else 2**62),
            )
            while page := rows.fetchmany(chunk):
                for row in page:
                    yield journal_entry(*row)
        finally:
            db.close()

    def aggregate_journal(
        self, since: int | None, until: int | None, scope: str | None, by: str, *, ratios: bool = True
    ) -> Aggregate | None:
        """A report's sums over the journal from ``since`` to ``until`` (ms), in SQL (``_sqlite_report``),
        with the ratio distributions' rows if ``ratios``; ``None`` when the range holds an entry only
        Python reads."""
        try:
            return aggregate(self._db(), self._sql.report, since if since is not None else -(2**62),
                             until if until is not None else 2**62, scope, by, ratios=ratios)  # fmt: skip
        except sqlite3.OperationalError as exc:
            if "integer overflow" in str(exc):  # sums past int64: Python's integers add them
                return None
            raise LedgerError(f"SQLite ledger report failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger report failed: {exc}") from exc

    def _complete_since_ms(self) -> int | None:
        row = self._db().execute(self._sql.meta, ("journal_complete_since",)).fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        with self._conn_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()


def _wal(db: sqlite3.Connection, timeout: float) -> None:
    """Put ``db`` in WAL mode. Switching the journal mode can answer "database is locked" at once, without
    waiting the busy timeout (seen while another process recovers the WAL of a writer killed mid
    transaction): it is retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)

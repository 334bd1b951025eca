"""``sqlite:///path/to/ledger.db``: the embedded, persistent store.

Safe for several processes on one machine: WAL mode, a busy timeout, and one ``BEGIN IMMEDIATE``
transaction per operation (the write lock is taken before anything is read, so two processes never
admit against the same stale totals). Amounts are SQLite INTEGERs (signed 64-bit), never REAL.

Each namespace has its own tables (``_Sql``). Every 512th operation prunes what has expired: resolved
reservations 15 minutes after their lease (``RECORD_RETENTION_MS``), past windows' counters (with their
lease rows) a day after the window, journal entries after ``journal_retention_days``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .._cache import Bounded
from .._errors import LedgerError
from ._base import DEFAULT_NAMESPACE, JournalQuery, check_setting
from ._engine import Slot, Tx, resolved_record
from ._local import LocalLedger, journal_entry, wall_clock_ms
from ._sqlite_report import COLUMNS, FACTS_VERSION, Aggregate, JournalSql, aggregate, fact_columns, migrate
from ._sqlite_report import DDL as REPORT_COLUMNS
from ._stored import decode_held, decode_refusal, encode_held, encode_refusal
from ._types import HeldCounter, JournalEntry

Meta = dict[str, Any]

__all__ = ["SQLiteLedger", "journal_row"]

R = TypeVar("R")

JOURNAL_RETENTION_DAYS = 400
"""The journal keeps this many days (``journal_complete_since`` says when it dropped older entries)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {counters} (
    key TEXT PRIMARY KEY, spent INTEGER NOT NULL, held INTEGER NOT NULL,
    expires_at INTEGER, label TEXT NOT NULL
) STRICT;
{leases_table}
DROP INDEX IF EXISTS {leases_by_expiry};
{reservations_table}
CREATE INDEX IF NOT EXISTS {reservations_by_expiry} ON {reservations} (expires_at);
CREATE INDEX IF NOT EXISTS {counters_by_expiry} ON {counters} (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {limits} (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS {journal} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, event TEXT NOT NULL,
    res_id TEXT NOT NULL, scopes TEXT NOT NULL, amounts TEXT NOT NULL, data TEXT NOT NULL, {report_columns}
) STRICT;
CREATE INDEX IF NOT EXISTS {journal_by_time} ON {journal} (ts);
CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
"""
"""A namespace's tables (``{name}``: a table or index name, see ``_Sql``). ``meta`` holds ``schema`` (1:
past windows' lease rows are pruned with their counters; 2: leases and reservations are ``WITHOUT ROWID``
tables, ``_TABLES``), ``journal_complete_since`` (ms) and ``journal_facts`` (1: the journal's report
columns are filled, see ``_sqlite_report``)."""
_SCHEMA_VERSION = 2

_TABLES = {
    "leases": """CREATE TABLE IF NOT EXISTS {name} (
    counter TEXT NOT NULL, expires_at INTEGER NOT NULL, res_id TEXT NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (counter, expires_at, res_id)
) STRICT, WITHOUT ROWID;""",
    "reservations": """CREATE TABLE IF NOT EXISTS {name} (
    id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;""",
}
"""The tables a write transaction touches most, clustered on their key (schema 2): a lease row is one
b-tree (its counter's leases in expiry order: what reclaiming reads) where it was three (the table, its
primary key and an expiry index), a reservation two where it was three. A pair writes ~11 pages to the WAL
where it wrote 18. Files made before are rebuilt once (``SQLiteLedger._migrate``)."""


class _Sql:
    """A namespace's statements. Its tables and indexes are the plain names for the default namespace
    (a file made before namespaces holds the default namespace's data) and end in ``@namespace`` for
    another (validated: 1-64 of A-Z a-z 0-9 _ . -, so double quotes make it one identifier; ``Team`` is
    ``@^team``, apart from ``team``)."""

    NAMES = ("counters", "leases", "leases_by_expiry", "reservations", "reservations_by_expiry",
             "counters_by_expiry", "limits", "journal", "journal_by_time", "meta",
             "leases_v2", "reservations_v2")  # fmt: skip

    def __init__(self, namespace: str) -> None:
        # SQLite's names ignore case, namespaces do not: an upper-case letter is written ^ and its lower case
        suffix = "".join(f"^{c.lower()}" if "A" <= c <= "Z" else c for c in namespace)
        n = {name: name if namespace == DEFAULT_NAMESPACE else f'"{name}@{suffix}"' for name in self.NAMES}
        counters, leases, reservations = n["counters"], n["leases"], n["reservations"]
        limits, journal, meta = n["limits"], n["journal"], n["meta"]
        self.names = n
        tables = {f"{t}_table": sql.format(name=n[t]) for t, sql in _TABLES.items()}
        self.schema = _SCHEMA.format(**n, **tables, report_columns=REPORT_COLUMNS)
        self.report = JournalSql(journal)
        # a counter's spent and held, its limit override, and whether a lease of it has expired: what
        # each operation reads of a counter, in one statement
        self.read = (
            f"SELECT c.spent, c.held, c.expires_at, l.value, EXISTS (SELECT 1 FROM {leases} "
            f"WHERE counter = ?1 AND expires_at <= ?2) FROM (SELECT 1) "
            f"LEFT JOIN {counters} AS c ON c.key = ?1 LEFT JOIN {limits} AS l ON l.key = ?3"
        )
        self.put_counter = (
            f"INSERT INTO {counters} (key, spent, held, expires_at, label) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET spent = excluded.spent, held = excluded.held, "
            f"expires_at = coalesce(excluded.expires_at, {counters}.expires_at)"
        )
        # a counter row's totals alone: its expiry (indexed) is not rewritten
        self.set_counter = f"UPDATE {counters} SET spent = ?, held = ? WHERE key = ?"
        self.add_lease = f"INSERT INTO {leases} (counter, res_id, expires_at, amount) VALUES (?, ?, ?, ?)"
        self.pop_expired = (
            f"DELETE FROM {leases} WHERE counter = ? AND expires_at <= ? RETURNING res_id, amount"
        )
        self.pop_lease = (
            f"DELETE FROM {leases} WHERE counter = ? AND expires_at = ? AND res_id = ? RETURNING amount"
        )
        self.record = f"SELECT record, expires_at FROM {reservations} WHERE id = ?"
        self.set_record = f"UPDATE {reservations} SET record = ? WHERE id = ?"  # (its expiry kept)
        self.put_record = (
            f"INSERT INTO {reservations} (id, record, expires_at) VALUES (?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at"
        )
        self.limit = f"SELECT value FROM {limits} WHERE key = ?"
        self.clear_limit = f"DELETE FROM {limits} WHERE key = ?"
        self.put_limit = _upsert(limits, "excluded.value")
        self.journal = (
            f"INSERT INTO {journal} (ts, event, res_id, scopes, amounts, data, {', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * (6 + len(COLUMNS)))})"
        )
        self.history = (
            f"SELECT ts, event, res_id, scopes, amounts, data FROM {journal} "
            "WHERE ts >= ? AND ts < ? ORDER BY seq"
        )
        expired_counters = f"SELECT key FROM {counters} WHERE expires_at IS NOT NULL AND expires_at <= ?"
        self.prune = (
            f"DELETE FROM {reservations} WHERE expires_at <= ?",
            f"DELETE FROM {leases} WHERE counter IN ({expired_counters})",  # past windows' leases
            f"DELETE FROM {counters} WHERE expires_at IS NOT NULL AND expires_at <= ?",
        )
        self.prune_journal = f"DELETE FROM {journal} WHERE ts < ?"
        self.orphan_leases = f"DELETE FROM {leases} WHERE counter NOT IN (SELECT key FROM {counters})"
        self.meta = f"SELECT value FROM {meta} WHERE key = ?"
        self.put_meta = _upsert(meta, "excluded.value")
        self.raise_meta = _upsert(meta, "max(value, excluded.value)")


def _upsert(table: str, value: str) -> str:
    """Set a (key, value) row of ``table`` to ``value`` (SQL: ``excluded.value`` is the one given)."""
    return f"INSERT INTO {table} (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = {value}"


_decoded: Bounded[str, tuple[HeldCounter, ...]] = Bounded("ledger.sqlite.held", 10_000)
"""``decode_held``'s results: a record is read back by its commit, in this process or another one
(immutable values, safe to share)."""


def _decode_held(text: str) -> tuple[HeldCounter, ...]:
    found = _decoded.get(text)
    return _decoded.put(text, decode_held(text)) if found is None else found


class _SQLiteTx:
    """One transaction. What it reads of a counter (``_Sql.read``) is kept, and kept up to date by its
    writes (it holds the write lock: nobody else changes them meanwhile), and so is the stored form of
    the holds it read."""

    def __init__(self, db: sqlite3.Connection, sql: _Sql) -> None:
        self.db = db
        self.sql = sql
        self.rows: dict[str, tuple[int, int]] = {}
        self.ends: dict[str, int | None] = {}  # the expiry of each counter row read that exists
        self.record_end: tuple[str, int] | None = None  # the id and expiry of the record read
        self.limits: dict[str, int | None] = {}
        self.stale: set[str] = set()  # counters with an expired lease to reclaim
        self.held_text: tuple[tuple[HeldCounter, ...], str] | None = None

    def counter(self, slot: Slot, now: int) -> tuple[int, int]:
        found = self.rows.get(slot.key)
        if found is None:
            spent, held, ends, limit, stale = self.db.execute(
                self.sql.read, (slot.key, now, slot.field)
            ).fetchone()
            if spent is None:
                found = self.rows[slot.key] = (0, 0)
            else:
                found = self.rows[slot.key] = (spent, held)
                self.ends[slot.key] = ends
            self.limits[slot.field] = limit
            if stale:
                self.stale.add(slot.key)
        return found

    def put_counter(self, key: str, spent: int, held: int, expires_at: int | None, label: str) -> None:
        self.rows[key] = (spent, held)
        ends = self.ends
        if key in ends and (expires_at is None or expires_at == ends[key]):  # (the common case)
            self.db.execute(self.sql.set_counter, (spent, held, key))
        else:
            self.db.execute(self.sql.put_counter, (key, spent, held, expires_at, label))
            if key not in ends or expires_at is not None:
                ends[key] = expires_at

    def hold(self, res_id: str, lease_ends: int, holds: Sequence[tuple[Slot, int]]) -> None:
        for slot, amount in holds:
            spent, held = self.rows[slot.key]  # (read by live)
            self.put_counter(slot.key, spent, held + amount, slot.expires, slot.label)
            self.db.execute(self.sql.add_lease, (slot.key, res_id, lease_ends, amount))

    def settle(self, slot: Slot, res_id: str, charge: int, lease_ends: int) -> tuple[int, bool]:
        row = self.db.execute(self.sql.pop_lease, (slot.key, lease_ends, res_id)).fetchone()
        spent, held = self.rows[slot.key]  # (read by live)
        self.put_counter(
            slot.key, spent + charge, held if row is None else held - row[0], slot.expires, slot.label
        )
        return spent + charge, row is not None

    def live(self, slot: Slot, now: int) -> tuple[int, int, Sequence[tuple[str, int]]]:
        spent, held = self.counter(slot, now)
        if slot.key not in self.stale:
            return spent, held, ()
        self.stale.discard(slot.key)
        rows = self.db.execute(self.sql.pop_expired, (slot.key, now)).fetchall()
        return spent, held, [(r[0], r[1]) for r in rows]

    def record(self, res_id: str) -> dict[str, Any] | None:
        row = self.db.execute(self.sql.record, (res_id,)).fetchone()
        if row is None:
            return None
        self.record_end = (res_id, row[1])
        record: dict[str, Any] = json.loads(row[0])
        if "held" in record:
            text = record["held"]
            record["held"] = _decode_held(text)
            self.held_text = (record["held"], text)
        if "refusal" in record:
            record["refusal"] = decode_refusal(record["refusal"])
        return record

    def put_record(self, res_id: str, record: dict[str, Any], expires_at: int) -> None:
        stored = dict(record)
        if "held" in stored:
            known = self.held_text
            held = stored["held"]
            stored["held"] = known[1] if known is not None and known[0] is held else encode_held(held)
        if "refusal" in stored:
            stored["refusal"] = encode_refusal(stored["refusal"])
        if self.record_end == (res_id, expires_at):  # (a resolution within its lease: the common case)
            self.db.execute(self.sql.set_record, (json.dumps(stored), res_id))
        else:
            self.db.execute(self.sql.put_record, (res_id, json.dumps(stored), expires_at))

    def put_resolved(
        self, res_id: str, held: Mapping[str, Any], state: str, charged: dict[str, int], overrun: bool,
        expired: bool, spent: tuple[int, ...], expires_at: int,
    ) -> None:  # fmt: skip
        self.put_record(res_id, resolved_record(held, state, charged, overrun, expired, spent), expires_at)

    def limit(self, field: str) -> int | None:
        if field in self.limits:  # (read with its counter)
            return self.limits[field]
        row = self.db.execute(self.sql.limit, (field,)).fetchone()
        return None if row is None else int(row[0])

    def put_limit(self, field: str, value: int | None) -> None:
        self.limits.pop(field, None)
        if value is None:
            self.db.execute(self.sql.clear_limit, (field,))
        else:
            self.db.execute(self.sql.put_limit, (field, value))

    def journal(
        self, ts: int, event: str, res_id: str, scopes: Sequence[str], amounts: Meta, data: Meta
    ) -> None:
        self.db.execute(self.sql.journal, journal_row(ts, event, res_id, scopes, amounts, data))


def journal_row(
    ts: int, event: str, res_id: str, scopes: Sequence[str], amounts: Meta, data: Meta
) -> tuple[Any, ...]:
    """A journal entry as the journal table's insert (``_Sql.journal``) takes it: its JSON, then its
    report columns."""
    return (ts, event, res_id, json.dumps(scopes), json.dumps(amounts), json.dumps(data, sort_keys=True),
            *fact_columns(event, scopes, amounts, data, res_id))  # fmt: skip


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (a class, not @contextmanager: this is the hot path)."""

    def __init__(self, store: SQLiteLedger) -> None:
        self.store = store
        self.db = store._db()

    def __enter__(self) -> Tx:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"the SQLite ledger at {self.store.path} is unavailable: {exc}") from exc
        return _SQLiteTx(self.db, self.store._sql)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        db, store = self.db, self.store
        if kind is None:
            try:
                store._ops += 1
                if store._ops % 512 == 0:
                    store._prune(db)
                db.execute("COMMIT")
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
            with self._conn_lock:
                self._connections.append(db)
        return db

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def _atomic(self, op: Callable[..., R], *args: Any) -> R:
        with self._transaction() as tx:
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

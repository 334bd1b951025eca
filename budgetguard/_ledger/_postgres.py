"""``postgresql://user@host:5432/db``: the ledger in a PostgreSQL database a fleet already runs.

The contract is the engine's (``_engine.py``), the same Python that runs the memory and SQLite stores,
over one PostgreSQL transaction per operation (``_postgres_tx.PgTx``: psycopg 3, connections from
psycopg's pool). Before the engine reads anything, the transaction reads the store's clock (the
server's ``clock_timestamp()``: leases and windows are on the database's clock, shared by every
client) and takes advisory locks on the reservation id and the operation's counters in one fixed
order: operations on the same counters run one after the other, racers never deadlock, and all of an
operation's writes (every scope's counter, its record, its journal rows) commit together or not at
all. Commits are as durable as the server makes them (``synchronous_commit``, on by default: an
acknowledged operation survives a server crash).

A transaction the server or the network cut short is rolled back by the server: nothing of it was
applied, and the store runs it again on a fresh connection (twice at most) before it raises
``LedgerError``. A reply lost after the server committed is safe to repeat too: every operation is
idempotent by reservation id. A deadlock (none is expected: an operation this module does not know
may lock counters as it goes) or a serialization failure also runs the operation again.

Every operation has one deadline (``DEADLINE``, ``?deadline=``), runs again included: the pooled
sessions' ``lock_timeout`` and ``statement_timeout`` are the deadline (a lock held by a frozen client
is a ``LedgerError``, and the server ends that client's session after twice the deadline idle in its
transaction), and a server that stops answering has the operation's connection cut just after it
(``_postgres_watch``). Reports, exports and history streams (which hold no lock) have no deadline;
a stream or an export reads on a connection of its own, so one kept open pins none of the pool's.

The tables (``_postgres_schema``) are created and migrated by the store itself. Every 512th operation
prunes what has expired, as the SQLite store does; the journal keeps ``journal_retention_days``.
The async twin runs this store's operations in worker threads (``AsyncLocalLedger``), as SQLite's does.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .._errors import ConfigurationError, LedgerError
from ._admin import ADMIN_RECORD
from ._base import DEFAULT_NAMESPACE, check_setting
from ._engine import Slot, counter_key
from ._expiry import window_at
from ._local import LocalLedger, journal_entry
from ._postgres_export import postgres_export
from ._postgres_report import aggregate
from ._postgres_schema import migrate
from ._postgres_tx import CLOCK, COUNTERS, JOURNAL, LEASES, META, RESERVATIONS, UNBOUNDED, PgTx
from ._postgres_watch import KEEPALIVES, Watchdog, session_settings
from ._sqlite_report import Aggregate
from ._types import CounterSpec, JournalEntry

__all__ = ["JOURNAL_RETENTION_DAYS", "PostgresLedger"]

R = TypeVar("R")

JOURNAL_RETENTION_DAYS = 400
"""The journal keeps this many days (``journal_complete_since`` says when it dropped older entries)."""
RETRIES = 2
"""Times an operation runs again on a fresh connection after the server or the network cut it short."""
RERUNS = 10
"""Times an operation runs again after the server rolled it back (a deadlock, a serialization failure)."""
PRUNE_EVERY = 512
DEADLINE = 3.0
"""Seconds an operation may take, its waits and runs again included, before it raises ``LedgerError``
(``?deadline=`` in the URL): the server's lock, statement and idle-in-transaction timeouts follow it."""

_HISTORY = (
    f"SELECT ts, event, res_id, scopes, amounts, data FROM {JOURNAL} "
    "WHERE ns = %s AND ts >= %s AND ts < %s ORDER BY seq"
)
_META = f"SELECT value FROM {META} WHERE ns = %s AND key = %s"
_RAISE_META = (
    f"INSERT INTO {META} (ns, key, value) VALUES (%s, %s, %s) "
    f"ON CONFLICT (ns, key) DO UPDATE SET value = greatest({META}.value, excluded.value)"
)
_PRUNE = (
    f"DELETE FROM {RESERVATIONS} WHERE ns = %(ns)s AND expires_at <= %(now)s",
    f"DELETE FROM {LEASES} AS l USING {COUNTERS} AS c WHERE l.ns = %(ns)s AND c.ns = %(ns)s "
    "AND c.kh = l.ch AND c.expires_at <= %(now)s",
    f"DELETE FROM {COUNTERS} WHERE ns = %(ns)s AND expires_at <= %(now)s",
)
_PRUNE_JOURNAL = f"DELETE FROM {JOURNAL} WHERE ns = %s AND ts < %s"


def psycopg_modules() -> tuple[Any, Any]:
    """``psycopg`` and ``psycopg_pool``, or the ``ConfigurationError`` that says what to install."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise ConfigurationError(
            "the PostgreSQL store needs psycopg 3 and its pool: pip install 'llm-budgetguard[postgres]'"
        ) from None
    return psycopg, psycopg_pool


class PostgresLedger(LocalLedger):
    """The ledger in PostgreSQL: one transaction per operation, on connections from a pool of at most
    ``pool_size``. ``conninfo``: a libpq URL or connection string; ``url``: what the store reports as
    its URL (without a password) and names in its errors."""

    def __init__(
        self,
        conninfo: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        journal_retention_days: int = JOURNAL_RETENTION_DAYS,
        pool_size: int = 10,
        timeout: float | None = None,
        url: str | None = None,
        deadline: float = DEADLINE,
    ) -> None:
        psycopg, pool = psycopg_modules()
        super().__init__(namespace=namespace, url=url or conninfo)
        self.journal_retention_ms = (
            check_setting(journal_retention_days, "journal_retention_days") * 86_400_000
        )
        self.deadline = deadline
        """Seconds an operation may take (``DEADLINE``)."""
        self.timeout = deadline if timeout is None else timeout
        """Seconds an operation waits for a connection from the pool before it raises ``LedgerError``."""
        self._watchdog = Watchdog()
        self._conninfo = conninfo
        self._psycopg = psycopg
        self._ops = 0
        self._ops_lock = threading.Lock()
        self.rerun = 0
        """Operations run again after the server rolled them back (a deadlock, a serialization failure)."""
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:  # (a clear error when it is down)
                migrate(conn)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot open the PostgreSQL ledger at {self.url}: {exc}") from exc
        given = psycopg.conninfo.conninfo_to_dict(conninfo)
        kwargs = {"autocommit": True, **{k: v for k, v in KEEPALIVES.items() if k not in given}}
        self._kwargs = kwargs
        settings = session_settings(deadline)
        self._new_pool: Callable[[], Any] = functools.partial(
            pool.ConnectionPool, conninfo, min_size=1, max_size=pool_size, kwargs=kwargs,
            open=True, name="budgetguard", timeout=self.timeout,
            configure=lambda conn: conn.execute(settings),
        )  # fmt: skip
        self._pool_lock = threading.Lock()
        self._open_pool: Any = self._new_pool()

    @property
    def _pool(self) -> Any:
        """The connection pool (a new one after ``close``: a closed store reopens, as SQLite's does)."""
        found = self._open_pool
        if found.closed:
            with self._pool_lock:
                if self._open_pool.closed:
                    self._open_pool = self._new_pool()
                found = self._open_pool
        return found

    # -- one operation ----------------------------------------------------------------------------

    def _atomic(self, op: Callable[..., R], *args: Any) -> R:
        psycopg = self._psycopg
        from psycopg import errors
        from psycopg_pool import PoolTimeout

        failures = reruns = 0
        until = time.monotonic() + self.deadline
        while True:
            try:
                with self._pool.connection() as conn:
                    self._watchdog.watch(conn, until)
                    try:
                        result = self._transaction(conn, op, args)
                    finally:
                        self._watchdog.done(conn)
                break
            except PoolTimeout as exc:
                raise LedgerError(f"PostgreSQL ledger at {self.url} unavailable: {exc}") from exc
            except (errors.LockNotAvailable, errors.QueryCanceled) as exc:  # (rolled back: not applied)
                raise LedgerError(
                    f"PostgreSQL ledger operation timed out after {self.deadline} s (deadline=): {exc}"
                ) from exc
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:  # (rolled back)
                with self._ops_lock:
                    self.rerun += 1
                reruns += 1
                if reruns > RERUNS or time.monotonic() >= until:
                    raise LedgerError(f"PostgreSQL ledger operation failed: {exc}") from exc
            except psycopg.OperationalError as exc:  # (the connection or the server went away)
                failures += 1
                if time.monotonic() >= until:
                    raise LedgerError(
                        f"PostgreSQL ledger at {self.url} did not answer within {self.deadline} s "
                        f"(deadline=): {exc}"
                    ) from exc
                if failures > RETRIES:
                    raise LedgerError(f"PostgreSQL ledger operation failed: {exc}") from exc
                if getattr(op, "__name__", "") == "reserve":  # (an id drawn here: maybe stored already)
                    args = (*args[:-1], False)
                self._pool.check()  # (drop the pool's other connections to a server that went away)
            except psycopg.Error as exc:
                raise LedgerError(f"PostgreSQL ledger operation failed: {exc}") from exc
        with self._ops_lock:
            self._ops += 1
            prune = self._ops % PRUNE_EVERY == 0
        if prune:
            self._prune()
        return result

    def _transaction(self, conn: Any, op: Callable[..., R], args: tuple[Any, ...]) -> R:
        with conn.transaction(), conn.cursor() as cur:
            now = cur.execute(CLOCK).fetchone()[0]
            tx = PgTx(cur, self.namespace, now)
            _lock(tx, getattr(op, "__name__", ""), now, args)
            return op(tx, now, *args)

    def _prune(self) -> None:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                now = cur.execute(CLOCK).fetchone()[0]
                for statement in _PRUNE:
                    cur.execute(statement, {"ns": self.namespace, "now": now})
                cutoff = now - self.journal_retention_ms
                if cur.execute(_PRUNE_JOURNAL, (self.namespace, cutoff)).rowcount:
                    cur.execute(_RAISE_META, (self.namespace, "journal_complete_since", cutoff))
        except self._psycopg.Error:  # (the next prune does it: an operation never fails for it)
            pass

    # -- the journal --------------------------------------------------------------------------------

    def _journal(
        self, since: int | None, until: int | None, scope: str | None, limit: int | None
    ) -> Iterator[JournalEntry]:
        bounds = (since if since is not None else -(2**62), until if until is not None else 2**62)
        psycopg = self._psycopg
        try:
            # (a connection of its own, not the pool's: a caller may keep the stream open between
            # entries as long as it likes, and the pool's connections stay free for operations)
            with (
                psycopg.connect(self._conninfo, **self._kwargs) as conn,  # (no session timeouts)
                conn.transaction(),
                conn.cursor(name="budgetguard_history") as cur,  # (server side: read in pages)
            ):
                cur.itersize = 2000
                cur.execute(_HISTORY, (self.namespace, *bounds))
                for row in cur:
                    yield journal_entry(*row)
        except psycopg.Error as exc:
            raise LedgerError(f"PostgreSQL ledger history failed: {exc}") from exc

    def export_journal(
        self, since: int, until: int, fmt: str,
        layout: Callable[[Iterable[str]], tuple[str, Callable[[str], str]]] | None = None,
    ) -> Iterator[str | JournalEntry]:  # fmt: skip
        """The export of the journal from ``since`` to ``until`` (ms) rendered in SQL, on a connection of
        its own (``_postgres_export.postgres_export``, which says what ``layout`` is)."""
        psycopg = self._psycopg
        try:
            with psycopg.connect(self._conninfo, **self._kwargs) as conn:  # (no session timeouts)
                yield from postgres_export(conn, self.namespace, since, until, fmt, layout)
        except psycopg.Error as exc:
            raise LedgerError(f"PostgreSQL ledger export failed: {exc}") from exc

    def aggregate_journal(
        self, since: int | None, until: int | None, scope: str | None, by: str, *, ratios: bool = True
    ) -> Aggregate | None:
        """A report's sums over the journal from ``since`` to ``until`` (ms), in SQL
        (``_postgres_report``), as ``SQLiteLedger.aggregate_journal`` gives them; ``None`` when the
        range holds an entry only Python reads."""
        bounds = (since if since is not None else -(2**62), until if until is not None else 2**62)
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute(UNBOUNDED)  # (a report over a long journal may take its time)
                return aggregate(cur, self.namespace, *bounds, scope, by, ratios=ratios)
        except self._psycopg.Error as exc:
            raise LedgerError(f"PostgreSQL ledger report failed: {exc}") from exc

    def _complete_since_ms(self) -> int | None:
        try:
            with self._pool.connection() as conn:
                row = conn.execute(_META, (self.namespace, "journal_complete_since")).fetchone()
        except self._psycopg.Error as exc:
            raise LedgerError(f"PostgreSQL ledger operation failed: {exc}") from exc
        return None if row is None else int(row[0])

    def close(self) -> None:
        self._open_pool.close()


def _lock(tx: PgTx, name: str, now: int, args: tuple[Any, ...]) -> None:
    """Lock what the engine's operation (or ``_admin``'s) ``name`` will touch, before it reads anything
    (``PgTx.lock``: one id first, the rest in one sorted batch): a reservation or adjustment id, the
    counters in their windows at ``now`` with a rolling counter's earlier buckets (``Slot.prior``; a
    resolution's in the windows its record holds them in), and the run-time limit of each counter an
    operation may read and write back (``live_limit``: a raise that ended is restored by a reserve, a
    status or a read of the limit as much as by an operation on the limit itself)."""
    if name == "reserve":
        res_id, holds, *_, fresh = args
        counters = [h.counter for h in holds]
        tx.lock(None if fresh else res_id, _slot_keys(counters, now), _fields(counters))
    elif name == "resolve":
        res_id = args[0]
        tx.lock(res_id, ())
        record = tx.record(res_id)  # (read after its lock: kept for the engine)
        if record is not None and record["state"] == "held":
            tx.lock(None, [counter_key(h.counter, h.window_start) for h in record["held"]])
    elif name == "status":
        tx.lock(None, _slot_keys(args[0], now), _fields(args[0]))
    elif name == "adjust":  # (and a reset: ``adjust`` without an amount)
        counter, op_id = args[1], args[3]
        tx.lock(ADMIN_RECORD + op_id, _slot_keys([counter], now))
    elif name == "raise_limit":
        tx.lock(None, (), _fields([args[0]]))
    elif name == "set_limits":
        tx.lock(None, (), _fields(c for c, _ in args[0]))
    elif name in ("_put_limit", "_get_limit"):
        tx.lock(None, (), [args[0]])


def _slot_keys(counters: Iterable[CounterSpec], now: int) -> list[str]:
    """The counters' keys in their windows at ``now``: a rolling one's bucket and its earlier ones."""
    keys = []
    for counter in counters:
        slot = Slot(counter, window_at(counter, now))
        keys += [slot.key, *(s.key for s in slot.prior)]
    return keys


def _fields(counters: Iterable[CounterSpec]) -> list[str]:
    """The counters' run-time limit fields (``CounterSpec.limit_field``)."""
    return [c.limit_field for c in counters]

"""The SQLite pair's floor (issue 17): the leanest correct reserve + commit designs, prototyped apart
from budgetguard and counted by callgrind against the issue's raw write transaction in the same run.

```sh
python -m benchmarks.sqlite_floor --check        # each design's guarantees, without valgrind (~1 s)
python -m benchmarks.sqlite_floor [CALLS] [DESIGN...]   # instructions per pair, 1 and 3 scopes (minutes)
```

Not a ``bench_*`` module: ``python -m benchmarks`` does not run it. Every design keeps the ledger's
guarantees: a reservation holds on all its counters or none (``spent + held + amount <= limit`` on each,
the caller's limit), its hold has a lease whose expiry lets any later operation reclaim it, reserve and
commit repeat by id without a second effect (a refusal is recorded too), the commit charges each counter,
releases the hold and writes one journal row with the amount, amounts are SQLite integers (``STRICT``
tables: a sum past int64 becomes a REAL, which they refuse). A design has a fast path (what the counted
pair runs) and falls back, in a new transaction, to the general path (``_General``) for anything
unusual: an expired lease to reclaim, a counter without a row, a refusal, a repeat.

Designs (each a subclass of ``_Design``; the tables are ``_TABLES``):

- ``stmts``: one statement per step from Python: reserve = a guarded ``UPDATE`` per counter + the
  reservation's ``INSERT``; commit = the reservation's guarded ``UPDATE`` + an ``UPDATE`` per counter
  + the journal ``INSERT`` (the holds of a reservation this process made are known without a read).
- ``trigger``: one statement per transaction: an ``INSERT`` of the reservation whose trigger updates
  the counters from its holds (``json_each``) and ``RAISE(ABORT)``s unless every counter admitted; a
  commit ``UPDATE`` of its state whose trigger settles the counters and writes the journal row.
- ``trigger1``: ``trigger`` with the one-scope case's hold in columns (no ``json_each``).
- ``index`` suffix: the lease check is a global ``NOT EXISTS`` on a partial index of held
  reservations by expiry instead of a per-counter lower bound of its leases' ends (``lease_min``).
- ``implicit``: ``trigger`` through the ``sqlite3`` module's own transactions
  (``isolation_level="IMMEDIATE"`` and ``Connection.commit``) instead of explicit statements.
- ``script``: ``trigger`` with each transaction one ``executescript`` (literals in the SQL: no bound
  parameters there).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from ._harness import count_here
from .bench_ledger import _raw_write_tx

Holds = tuple[tuple[str, int, int], ...]
"""A reservation's holds: (counter key, amount, the counter's limit) each."""

NEVER = 2**62
"""``lease_min`` of a counter with no live lease."""

HELD, SETTLED, EXPIRED, REFUSED = 0, 1, 2, 3
"""A reservation's states."""

_COUNTERS = """CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, spent INTEGER NOT NULL, held INTEGER NOT NULL, lease_min INTEGER NOT NULL{extra}
) STRICT, WITHOUT ROWID"""
_RESERVATIONS = """CREATE TABLE IF NOT EXISTS res (
    id TEXT PRIMARY KEY, state INTEGER NOT NULL, expires_at INTEGER NOT NULL, at INTEGER NOT NULL,
    holds TEXT NOT NULL, charged INTEGER{extra}
) STRICT, WITHOUT ROWID"""
_JOURNAL = """CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, res_id TEXT NOT NULL, holds TEXT NOT NULL,
    charged INTEGER NOT NULL
) STRICT"""
_LIVE_INDEX = f"CREATE INDEX IF NOT EXISTS res_live ON res (expires_at) WHERE state = {HELD}"
"""The ``index`` designs' lease check (and every design's reclaim, when present)."""


def connect(path: Path, isolation_level: str | None = None) -> sqlite3.Connection:
    """A connection with the ledger's pragmas (``SQLiteLedger._db``)."""
    db = sqlite3.connect(path, timeout=10.0, isolation_level=isolation_level, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def holds_json(holds: Holds) -> str:
    """A reservation's holds as stored: ``[["key",amount,limit],...]`` (what ``json.dumps`` writes,
    without an encoder: the keys are str and the amounts int)."""
    return f"[{','.join([f'[{_quote(k)},{a},{lim}]' for k, a, lim in holds])}]"


class _Redo(Exception):
    """The fast path cannot finish: roll back and run the general path."""


class _General:
    """The general path, on any design's tables: reads, decides in Python, writes. It reclaims every
    expired lease first (so a design's fast path may refuse whenever a lease might have expired), makes
    missing counter rows, records a refusal, answers a repeat. ``apply`` is False where the design's
    triggers apply the holds and settlements themselves."""

    def __init__(self, cur: sqlite3.Cursor, apply: bool, spent: bool) -> None:
        self.cur, self.apply, self.spent = cur, apply, spent

    def reclaim(self, now: int) -> None:
        ex = self.cur.execute
        expired = ex(
            f"SELECT id, holds FROM res WHERE state = {HELD} AND expires_at <= ?", (now,)
        ).fetchall()
        keys: set[str] = set()
        for res_id, text in expired:
            for key, amount, _ in json.loads(text):
                keys.add(key)
                if self.apply:
                    ex("UPDATE counters SET held = held - ? WHERE key = ?", (amount, key))
            ex(f"UPDATE res SET state = {EXPIRED} WHERE id = ?", (res_id,))
        for key in keys:
            self.bound(key)

    def bound(self, key: str) -> None:
        """Set a counter's ``lease_min`` to the least lease end of its live holds (a full scan of the
        live reservations: the general path only)."""
        self.cur.execute(
            "UPDATE counters SET lease_min = coalesce((SELECT min(r.expires_at) FROM res AS r, "
            f"json_each(r.holds) AS j WHERE r.state = {HELD} AND j.value ->> 0 = ?1), {NEVER}) "
            "WHERE key = ?1",
            (key,),
        )

    def journal(self, ts: int, res_id: str, text: str, charged: int) -> None:
        self.cur.execute(
            "INSERT INTO journal (ts, res_id, holds, charged) VALUES (?, ?, ?, ?)", (ts, res_id, text, charged)
        )

    def reserve(self, res_id: str, holds: Holds, now: int, ends: int, insert: Callable[[], None]) -> bool:
        ex = self.cur.execute
        found = ex("SELECT state FROM res WHERE id = ?", (res_id,)).fetchone()
        if found is not None:
            return bool(found[0] != REFUSED)
        self.reclaim(now)
        rows = []
        for key, amount, limit in holds:
            ex(f"INSERT OR IGNORE INTO counters (key, spent, held, lease_min) VALUES (?, 0, 0, {NEVER})", (key,))
            self.bound(key)
            spent, held = ex("SELECT spent, held FROM counters WHERE key = ?", (key,)).fetchone()
            rows.append(spent + held + amount <= limit)
        if not all(rows):
            ex(
                f"INSERT INTO res (id, state, expires_at, at, holds) VALUES (?, {REFUSED}, ?, ?, ?)",
                (res_id, ends, now, holds_json(holds)),
            )
            return False
        if self.apply:
            for key, amount, _ in holds:
                ex(
                    "UPDATE counters SET held = held + ?, lease_min = min(lease_min, ?) WHERE key = ?",
                    (amount, ends, key),
                )
        insert()  # (the design's own insert: with triggers, they apply the holds)
        return True

    def commit(self, res_id: str, actual: int, now: int) -> Any:
        """The amount charged, or with ``spent``, each counter's spent after the commit (a repeat: the
        first commit's)."""
        ex = self.cur.execute
        found = ex(f"SELECT state, holds, charged, {'spent' if self.spent else 'NULL'} FROM res WHERE id = ?",
                   (res_id,)).fetchone()  # fmt: skip
        if found is None:
            raise KeyError(f"no reservation {res_id!r}")
        state, text, charged, spent = found
        if state == SETTLED:
            return tuple(json.loads(spent)) if self.spent else int(charged)
        if state == REFUSED:
            raise ValueError(f"reservation {res_id!r} was refused: nothing to commit")
        after = []
        if self.apply:
            for key, amount, _ in json.loads(text):
                release = amount if state == HELD else 0  # (an expired hold was given back)
                ex(
                    "UPDATE counters SET spent = spent + ?, held = held - ? WHERE key = ?",
                    (actual, release, key),
                )
                if self.spent:
                    after.append(ex("SELECT spent FROM counters WHERE key = ?", (key,)).fetchone()[0])
            self.journal(now, res_id, text, actual)
        if not self.spent:
            ex(f"UPDATE res SET state = {SETTLED}, charged = ?, at = ? WHERE id = ?", (actual, now, res_id))
            return actual
        ex(f"UPDATE res SET state = {SETTLED}, charged = ?, at = ?, spent = ? WHERE id = ?",
           (actual, now, spent_text(after), res_id))  # fmt: skip
        return tuple(after)


def spent_text(spent: Sequence[int]) -> str:
    """Each counter's spent after a commit, as the reservation's row keeps it (JSON)."""
    return f"[{','.join(map(str, spent))}]"


class _Design:
    """A reserve and a commit on one file; ``reserve`` and ``commit`` are the counted pair."""

    name = ""
    triggers: tuple[str, ...] = ()
    res_extra = ""  # more reservation columns
    counters_extra = ""  # more counter columns
    spent_column = False  # the commit returns each counter's spent after it, kept in ``res.spent``
    live_index = False
    isolation_level: str | None = None

    def __init__(self, path: Path) -> None:
        self.db = connect(path, self.isolation_level)
        self.cur = self.db.cursor()
        self.general = _General(self.cur, apply=not self.triggers, spent=self.spent_column)
        schema = [_COUNTERS.format(extra=self.counters_extra), _RESERVATIONS.format(extra=self.res_extra),
                  _JOURNAL, *self.triggers]  # fmt: skip
        if self.live_index:
            schema.append(_LIVE_INDEX)
        for statement in schema:
            self.db.execute(statement)
        if self.isolation_level is not None:
            self.db.commit()

    def atomic(self, fast: Callable[[], Any], slow: Callable[[], Any]) -> Any:
        """``fast`` in a write transaction; on ``_Redo`` (or a trigger's ``RAISE``), ``slow`` in a new
        one."""
        ex = self.cur.execute
        ex("BEGIN IMMEDIATE")
        try:
            out = fast()
        except (_Redo, sqlite3.IntegrityError):
            ex("ROLLBACK")
        except BaseException:
            ex("ROLLBACK")
            raise
        else:
            ex("COMMIT")
            return out
        ex("BEGIN IMMEDIATE")
        try:
            out = slow()
        except BaseException:
            ex("ROLLBACK")
            raise
        ex("COMMIT")
        return out

    def slow(self, general: Callable[[], Any]) -> Any:
        """``general`` in a write transaction of its own."""
        ex = self.cur.execute
        ex("BEGIN IMMEDIATE")
        try:
            out = general()
        except BaseException:
            ex("ROLLBACK")
            raise
        ex("COMMIT")
        return out

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        raise NotImplementedError

    def commit(self, res_id: str, actual: int, now: int) -> int:
        raise NotImplementedError


class Stmts(_Design):
    """A statement per step, from Python."""

    name = "stmts"
    admit = (
        "UPDATE counters SET held = held + ?2, lease_min = min(lease_min, ?4) "
        "WHERE key = ?1 AND held <= ?3 - spent AND lease_min > ?5"
    )
    insert = f"INSERT INTO res (id, state, expires_at, at, holds) VALUES (?, {HELD}, ?, ?, ?)"
    settle_res = f"UPDATE res SET state = {SETTLED}, charged = ?, at = ? WHERE id = ? AND state = {HELD}"
    settle = "UPDATE counters SET spent = spent + ?, held = held - ? WHERE key = ?"
    journal = "INSERT INTO journal (ts, res_id, holds, charged) VALUES (?, ?, ?, ?)"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.mine: dict[str, tuple[Holds, str]] = {}  # this process's held reservations: no read back

    def _admit(self, key: str, amount: int, limit: int, ends: int, now: int) -> int:
        return self.cur.execute(self.admit, (key, amount, limit - amount, ends, now)).rowcount

    def write_journal(self, now: int, res_id: str, holds: Holds, text: str, actual: int) -> None:
        self.cur.execute(self.journal, (now, res_id, text, actual))

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        ends = now + lease_ms
        text = holds_json(holds)
        ex = self.cur.execute

        def insert() -> None:
            ex(self.insert, (res_id, ends, now, text))

        def fast() -> bool:
            for key, amount, limit in holds:
                if not self._admit(key, amount, limit, ends, now):
                    raise _Redo
            insert()  # (a repeated id: IntegrityError, the general path answers)
            return True

        admitted: bool = self.atomic(fast, lambda: self.general.reserve(res_id, holds, now, ends, insert))
        if admitted:
            self.mine[res_id] = (holds, text)
        return admitted

    def commit(self, res_id: str, actual: int, now: int) -> int:
        ex = self.cur.execute

        def fast() -> int:
            if not ex(self.settle_res, (actual, now, res_id)).rowcount:
                raise _Redo  # (not held: settled, expired, refused, unknown)
            mine = self.mine.get(res_id)
            if mine is None:  # (another process's reservation)
                text = ex("SELECT holds FROM res WHERE id = ?", (res_id,)).fetchone()[0]
                mine = (tuple(tuple(h) for h in json.loads(text)), text)  # type: ignore[misc]
            holds, text = mine
            settle = self.settle
            for key, amount, _ in holds:
                ex(settle, (actual, amount, key))
            self.write_journal(now, res_id, holds, text, actual)
            return actual

        charged: int = self.atomic(fast, lambda: self.general.commit(res_id, actual, now))
        self.mine.pop(res_id, None)
        return charged


class StmtsIndex(Stmts):
    name = "stmts-index"
    live_index = True
    admit = (
        "UPDATE counters SET held = held + ?2 WHERE key = ?1 AND held <= ?3 - spent "
        f"AND NOT EXISTS (SELECT 1 FROM res WHERE state = {HELD} AND expires_at <= ?5)"
    )

    def _admit(self, key: str, amount: int, limit: int, ends: int, now: int) -> int:
        return self.cur.execute(self.admit, (key, amount, limit - amount, None, now)).rowcount


class Lean(Stmts):
    """``stmts`` with the least Python: no closures, the transaction's control flow inline."""

    name = "lean"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.ex = self.cur.execute

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        ex, ends = self.ex, now + lease_ms
        ex("BEGIN IMMEDIATE")
        try:
            for key, amount, limit in holds:
                if not ex(self.admit, (key, amount, limit - amount, ends, now)).rowcount:
                    break
            else:
                text = holds_json(holds)
                ex(self.insert, (res_id, ends, now, text))
                ex("COMMIT")
                self.mine[res_id] = (holds, text)
                return True
        except sqlite3.IntegrityError:
            pass
        except BaseException:
            ex("ROLLBACK")
            raise
        ex("ROLLBACK")
        return super().reserve(res_id, holds, now, lease_ms)  # (its fast path fails again: general)

    def commit(self, res_id: str, actual: int, now: int) -> int:
        ex = self.ex
        mine = self.mine.get(res_id)
        if mine is not None:
            ex("BEGIN IMMEDIATE")
            try:
                if ex(self.settle_res, (actual, now, res_id)).rowcount:
                    holds, text = mine
                    for key, amount, _ in holds:
                        ex(self.settle, (actual, amount, key))
                    self.write_journal(now, res_id, holds, text, actual)
                    ex("COMMIT")
                    del self.mine[res_id]
                    return actual
            except BaseException:
                ex("ROLLBACK")
                raise
            ex("ROLLBACK")
        return super().commit(res_id, actual, now)


class LeanSpent(Lean):
    """``lean`` whose commit returns each counter's spent after it, as the library's does
    (``Outcome.spent``: what threshold alerts read; a repeat returns the first commit's, kept in the
    reservation's row): a point ``SELECT`` after each counter's ``UPDATE``."""

    name = "lean-spent"
    res_extra = ", spent TEXT"
    spent_column = True
    settle_res = (
        f"UPDATE res SET state = {SETTLED}, charged = ?, at = ?, spent = ? WHERE id = ? AND state = {HELD}"
    )
    read_spent: str | None = "SELECT spent FROM counters WHERE key = ?"

    def commit(self, res_id: str, actual: int, now: int) -> Any:
        ex = self.ex
        mine = self.mine.get(res_id)
        if mine is not None:
            holds, text = mine
            settle, read = self.settle, self.read_spent
            ex("BEGIN IMMEDIATE")
            try:
                after = []
                for key, amount, _ in holds:
                    if read is None:  # (``RETURNING``)
                        after.append(ex(settle, (actual, amount, key)).fetchone()[0])
                    else:
                        ex(settle, (actual, amount, key))
                        after.append(ex(read, (key,)).fetchone()[0])
                if ex(self.settle_res, (actual, now, spent_text(after), res_id)).rowcount:
                    self.write_journal(now, res_id, holds, text, actual)
                    ex("COMMIT")
                    del self.mine[res_id]
                    return tuple(after)
            except sqlite3.IntegrityError:  # (past int64)
                pass
            except BaseException:
                ex("ROLLBACK")
                raise
            ex("ROLLBACK")
        return self.slow(lambda: self.general.commit(res_id, actual, now))


class LeanReturning(LeanSpent):
    """``lean-spent`` reading each counter's spent by its ``UPDATE ... RETURNING spent``."""

    name = "lean-returning"
    settle = "UPDATE counters SET spent = spent + ?, held = held - ? WHERE key = ? RETURNING spent"
    read_spent = None


class Proposal(LeanSpent):
    """What the library would run (``lean-spent`` plus the rest of today's contract that a pair pays
    for): counter rows with their window's end and label, the limit-override check (today's ``limits``
    table) in the admit, the journal with today's columns (report columns included; its index on
    ``ts``; no ``AUTOINCREMENT``), an empty-data commit's constant columns written in the statement's
    SQL (not bound)."""

    name = "proposal"
    counters_extra = ", expires_at INTEGER, label TEXT NOT NULL DEFAULT ''"
    admit = (
        "UPDATE counters SET held = held + ?2, lease_min = min(lease_min, ?4) "
        "WHERE key = ?1 AND held <= ?3 - spent AND lease_min > ?5 "
        "AND NOT EXISTS (SELECT 1 FROM limits WHERE key = ?6)"
    )
    journal3 = (
        "INSERT INTO journal3 (ts, event, res_id, scopes, amounts, data, r_calls, r_in, r_out, r_cost, "
        "r_model, r_function, r_export) VALUES (?, 'committed', ?, ?, ?, '{}', 1, 0, 0, ?, '(unknown)', "
        "'(unknown)', 3)"
    )

    def __init__(self, path: Path) -> None:
        from budgetguard._ledger._sqlite_report import DDL

        super().__init__(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS journal3 (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
            "event TEXT NOT NULL, res_id TEXT NOT NULL, scopes TEXT NOT NULL, amounts TEXT NOT NULL, "
            f"data TEXT NOT NULL, {DDL}) STRICT"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS journal3_by_time ON journal3 (ts)")
        self.fields: dict[str, str] = {}
        self.labels: dict[Holds, str] = {}
        self.general.journal = self._journal  # type: ignore[method-assign]

    def _admit(self, key: str, amount: int, limit: int, ends: int, now: int) -> int:
        field = self.fields.get(key)
        if field is None:
            field = self.fields[key] = key.rsplit("@", 1)[0]
        return self.ex(self.admit, (key, amount, limit - amount, ends, now, field)).rowcount

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        ex, ends, admit = self.ex, now + lease_ms, self._admit
        ex("BEGIN IMMEDIATE")
        try:
            for key, amount, limit in holds:
                if not admit(key, amount, limit, ends, now):
                    break
            else:
                text = holds_json(holds)
                ex(self.insert, (res_id, ends, now, text))
                ex("COMMIT")
                self.mine[res_id] = (holds, text)
                return True
        except sqlite3.IntegrityError:
            pass
        except BaseException:
            ex("ROLLBACK")
            raise
        ex("ROLLBACK")
        return Stmts.reserve(self, res_id, holds, now, lease_ms)  # (its fast path fails again: general)

    def _journal(self, ts: int, res_id: str, text: str, charged: int) -> None:
        holds = tuple(tuple(h) for h in json.loads(text))
        self.write_journal(ts, res_id, holds, text, charged)  # type: ignore[arg-type]

    def write_journal(self, now: int, res_id: str, holds: Holds, text: str, actual: int) -> None:
        labels = self.labels.get(holds)
        if labels is None:  # (the scopes, as the journal keeps them: ``["user:alice"]``; calls repeat them)
            labels = self.labels[holds] = json.dumps([key.rsplit("@", 1)[0] for key, _, _ in holds])
        self.ex(self.journal3, (now, res_id, labels, f'{{"usd": {actual}}}', actual))


class ProposalLean(Proposal):
    """``proposal`` with two of today's costs moved: a limit override is a column of its counter rows
    (``override``; set on every window's row of its field by ``put_limit``, a key-prefix range: the
    ``limits`` table stays its record) so the admit reads no other table; the journal has no index on
    ``ts``: its ``ts`` never decreases in ``seq`` order (the insert takes the later of its clock and the
    last row's), so a time range is a ``seq`` range found by bisection."""

    name = "proposal-lean"
    counters_extra = ", expires_at INTEGER, label TEXT NOT NULL DEFAULT '', override INTEGER"
    admit = (
        "UPDATE counters SET held = held + ?2, lease_min = min(lease_min, ?4) "
        "WHERE key = ?1 AND held <= ?3 - spent AND lease_min > ?5 AND override IS NULL"
    )
    journal3 = (
        "INSERT INTO journal3 (ts, event, res_id, scopes, amounts, data, r_calls, r_in, r_out, r_cost, "
        "r_model, r_function, r_export) VALUES (max(?, coalesce((SELECT ts FROM journal3 ORDER BY seq DESC "
        "LIMIT 1), 0)), 'committed', ?, ?, ?, '{}', 1, 0, 0, ?, '(unknown)', '(unknown)', 3)"
    )

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.db.execute("DROP INDEX journal3_by_time")

    def _admit(self, key: str, amount: int, limit: int, ends: int, now: int) -> int:
        return self.ex(self.admit, (key, amount, limit - amount, ends, now)).rowcount


class Ulid(Lean):
    """``lean`` with ids whose first 12 hex digits are the creation time in ms (then 12 random digits):
    reservations are inserted at the right edge of their b-tree, and the general path's search for
    expired leases could be the id range of reservations created more than a lease ago."""

    name = "ulid"


class TodayJournal(Lean):
    """``lean`` writing today's journal row: the library's journal table (``AUTOINCREMENT``, its index
    on ``ts``, the 12 report columns) and its Python (``journal_row``), with the benchmark's empty data."""

    name = "lean-journal"
    autoincrement, ts_index, library_row = True, True, True

    def __init__(self, path: Path) -> None:
        from budgetguard._ledger._sqlite_report import COLUMNS, DDL
        from budgetguard._ledger._sqlite_tx import journal_row

        super().__init__(path)
        auto = " AUTOINCREMENT" if self.autoincrement else ""
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS journal2 (seq INTEGER PRIMARY KEY{auto}, ts INTEGER NOT NULL, "
            "event TEXT NOT NULL, res_id TEXT NOT NULL, scopes TEXT NOT NULL, amounts TEXT NOT NULL, "
            f"data TEXT NOT NULL, {DDL}) STRICT"
        )
        if self.ts_index:
            self.db.execute("CREATE INDEX IF NOT EXISTS journal2_by_time ON journal2 (ts)")
        self.journal2 = (
            f"INSERT INTO journal2 (ts, event, res_id, scopes, amounts, data, {', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * (6 + len(COLUMNS)))})"
        )
        self.journal_row = journal_row
        self.general.journal = self._journal  # type: ignore[method-assign]
        self.scopes: dict[Holds, str] = {}
        self.facts = journal_row(0, "commit", "", ["s"], {"usd": 1}, {})[6:]  # (an empty-data commit's)

    def _journal(self, ts: int, res_id: str, text: str, charged: int) -> None:
        holds = tuple(tuple(h) for h in json.loads(text))
        self.write_journal(ts, res_id, holds, text, charged)  # type: ignore[arg-type]

    def write_journal(self, now: int, res_id: str, holds: Holds, text: str, actual: int) -> None:
        if self.library_row:
            scopes = [key for key, _, _ in holds]
            row = self.journal_row(now, "commit", res_id, scopes, {"usd": actual}, {})
        else:  # the same row, its scopes' JSON kept, its report columns those of every empty-data commit
            scopes_json = self.scopes.get(holds)  # (the benchmark's holds repeat)
            if scopes_json is None:
                scopes_json = self.scopes[holds] = json.dumps([key for key, _, _ in holds])
            row = (now, "commit", res_id, scopes_json, f'{{"usd": {actual}}}', "{}", *self.facts)
        self.ex(self.journal2, row)


class JournalSql(TodayJournal):
    """Today's journal table, its row made by the least Python (the SQL's share of ``lean-journal``)."""

    name = "journal-sql"
    library_row = False


class JournalNoAuto(JournalSql):
    """``journal-sql`` without ``AUTOINCREMENT`` (no ``sqlite_sequence`` row to update)."""

    name = "journal-noauto"
    autoincrement = False


class JournalNoIndex(JournalNoAuto):
    """``journal-noauto`` without the index on ``ts`` too."""

    name = "journal-noindex"
    ts_index = False


# -- triggers: one statement a transaction -------------------------------------------------------------

_SETTLE_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS res_settle AFTER UPDATE OF state ON res
    WHEN NEW.state = {SETTLED} AND OLD.state IN ({HELD}, {EXPIRED}) BEGIN
    UPDATE counters SET spent = spent + NEW.charged,
        held = held - iif(OLD.state = {HELD}, j.value ->> 1, 0)
        FROM json_each(NEW.holds) AS j WHERE counters.key = j.value ->> 0;
    INSERT INTO journal (ts, res_id, holds, charged) VALUES (NEW.at, NEW.id, NEW.holds, NEW.charged);
END""",
    f"""CREATE TRIGGER IF NOT EXISTS res_expire AFTER UPDATE OF state ON res
    WHEN NEW.state = {EXPIRED} AND OLD.state = {HELD} BEGIN
    UPDATE counters SET held = held - j.value ->> 1
        FROM json_each(NEW.holds) AS j WHERE counters.key = j.value ->> 0;
END""",
)
_HOLD_TRIGGER = f"""CREATE TRIGGER IF NOT EXISTS res_hold AFTER INSERT ON res WHEN NEW.state = {HELD} BEGIN
    UPDATE counters SET held = held + j.value ->> 1, lease_min = min(lease_min, NEW.expires_at)
        FROM json_each(NEW.holds) AS j
        WHERE counters.key = j.value ->> 0 AND counters.held <= (j.value ->> 2) - (j.value ->> 1) - counters.spent
        AND counters.lease_min > NEW.at;
    SELECT RAISE(ABORT, 'not admitted') WHERE changes() <> json_array_length(NEW.holds);
END"""


class Trigger(_Design):
    """One statement a transaction, its triggers do the rest."""

    name = "trigger"
    triggers = (_HOLD_TRIGGER, *_SETTLE_TRIGGERS)
    insert = f"INSERT INTO res (id, state, expires_at, at, holds) VALUES (?, {HELD}, ?, ?, ?)"
    settle_res = f"UPDATE res SET state = {SETTLED}, charged = ?, at = ? WHERE id = ? AND state = {HELD}"

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        ends = now + lease_ms
        params = (res_id, ends, now, holds_json(holds))
        ex, insert = self.cur.execute, self.insert

        def fast() -> bool:
            ex(insert, params)
            return True

        return bool(
            self.atomic(fast, lambda: self.general.reserve(res_id, holds, now, ends, lambda: ex(insert, params)))
        )

    def commit(self, res_id: str, actual: int, now: int) -> int:
        ex = self.cur.execute

        def fast() -> int:
            if not ex(self.settle_res, (actual, now, res_id)).rowcount:
                raise _Redo
            return actual

        return int(self.atomic(fast, lambda: self.general.commit(res_id, actual, now)))


class TriggerIndex(Trigger):
    name = "trigger-index"
    live_index = True
    triggers = (
        _HOLD_TRIGGER.replace(
            "AND counters.lease_min > NEW.at",
            f"AND NOT EXISTS (SELECT 1 FROM res WHERE state = {HELD} AND expires_at <= NEW.at)",
        ),
        *_SETTLE_TRIGGERS,
    )


class Trigger1(Trigger):
    """One scope's hold in columns (``k``, ``amount``, ``lim``), no ``json_each``: the cost of the JSON."""

    name = "trigger1"
    res_extra = ", k TEXT, amount INTEGER, lim INTEGER"
    triggers = (
        f"""CREATE TRIGGER IF NOT EXISTS res_hold1 AFTER INSERT ON res
    WHEN NEW.state = {HELD} AND NEW.k IS NOT NULL BEGIN
    UPDATE counters SET held = held + NEW.amount, lease_min = min(lease_min, NEW.expires_at)
        WHERE key = NEW.k AND held <= NEW.lim - NEW.amount - spent AND lease_min > NEW.at;
    SELECT RAISE(ABORT, 'not admitted') WHERE changes() = 0;
END""",
        _HOLD_TRIGGER.replace("res_hold", "res_holdn").replace(
            f"NEW.state = {HELD}", f"NEW.state = {HELD} AND NEW.k IS NULL"
        ),
        f"""CREATE TRIGGER IF NOT EXISTS res_settle1 AFTER UPDATE OF state ON res
    WHEN NEW.state = {SETTLED} AND OLD.state IN ({HELD}, {EXPIRED}) AND NEW.k IS NOT NULL BEGIN
    UPDATE counters SET spent = spent + NEW.charged, held = held - iif(OLD.state = {HELD}, NEW.amount, 0)
        WHERE key = NEW.k;
    INSERT INTO journal (ts, res_id, holds, charged) VALUES (NEW.at, NEW.id, NEW.holds, NEW.charged);
END""",
        _SETTLE_TRIGGERS[0]
        .replace("res_settle", "res_settlen")
        .replace(f"OLD.state IN ({HELD}, {EXPIRED})", f"OLD.state IN ({HELD}, {EXPIRED}) AND NEW.k IS NULL"),
        _SETTLE_TRIGGERS[1],
    )
    insert1 = (
        f"INSERT INTO res (id, state, expires_at, at, holds, k, amount, lim) VALUES (?, {HELD}, ?, ?, ?, ?, ?, ?)"
    )

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        if len(holds) != 1:
            return super().reserve(res_id, holds, now, lease_ms)
        ends = now + lease_ms
        (key, amount, limit), = holds
        params = (res_id, ends, now, holds_json(holds), key, amount, limit)
        ex, insert = self.cur.execute, self.insert1

        def fast() -> bool:
            ex(insert, params)
            return True

        return bool(
            self.atomic(fast, lambda: self.general.reserve(res_id, holds, now, ends, lambda: ex(insert, params)))
        )


class Implicit(Trigger):
    """``trigger`` with the ``sqlite3`` module's own ``BEGIN IMMEDIATE`` (issued before the ``INSERT`` /
    ``UPDATE``) and ``Connection.commit``."""

    name = "implicit"
    isolation_level = "IMMEDIATE"

    def atomic(self, fast: Callable[[], Any], slow: Callable[[], Any]) -> Any:
        db = self.db
        try:
            out = fast()
        except (_Redo, sqlite3.IntegrityError):
            db.rollback()
        except BaseException:
            db.rollback()
            raise
        else:
            db.commit()
            return out
        self.cur.execute("BEGIN IMMEDIATE")  # (the general path reads first)
        try:
            out = slow()
        except BaseException:
            db.rollback()
            raise
        db.commit()
        return out


def _literal(value: Any) -> str:
    if type(value) is int:
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class Script(Trigger):
    """``trigger`` with each transaction one ``executescript`` (its statements' literals inlined)."""

    name = "script"

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        ends = now + lease_ms
        values = ", ".join(map(_literal, (res_id, HELD, ends, now, holds_json(holds))))
        script = f"BEGIN IMMEDIATE; INSERT INTO res (id, state, expires_at, at, holds) VALUES ({values}); COMMIT"
        try:
            self.cur.executescript(script)
            return True
        except sqlite3.IntegrityError:
            if self.db.in_transaction:
                self.cur.execute("ROLLBACK")
        return super().reserve(res_id, holds, now, lease_ms)

    def commit(self, res_id: str, actual: int, now: int) -> int:
        before = self.db.total_changes
        self.cur.executescript(
            f"BEGIN IMMEDIATE; UPDATE res SET state = {SETTLED}, charged = {actual}, at = {now} "
            f"WHERE id = {_literal(res_id)} AND state = {HELD}; COMMIT"
        )
        if self.db.total_changes != before:  # (the UPDATE found it held: its triggers settled it)
            return actual
        return super().commit(res_id, actual, now)


DESIGNS: dict[str, type[_Design]] = {
    d.name: d
    for d in (Stmts, StmtsIndex, Lean, LeanSpent, LeanReturning, Proposal, ProposalLean, Ulid, TodayJournal, JournalSql, JournalNoAuto, JournalNoIndex,
              Trigger, TriggerIndex, Trigger1, Implicit, Script)
}


# -- the raw side and the counted pairs ----------------------------------------------------------------


def raw_transaction(db: sqlite3.Connection) -> Callable[[object], None]:
    """The raw side through one cursor (``rawcur``): ``bench_ledger._raw_write_tx`` (``raw``, the issue's
    baseline) runs each statement with ``Connection.execute``, which makes a cursor each time."""
    db.execute("CREATE TABLE IF NOT EXISTS bench_raw (k INTEGER PRIMARY KEY, v INTEGER NOT NULL) STRICT")
    db.execute("INSERT OR IGNORE INTO bench_raw (k, v) VALUES (1, 0)")
    cur = db.cursor()

    def transaction(_: object) -> None:
        cur.execute("BEGIN IMMEDIATE")
        cur.execute("UPDATE bench_raw SET v = v + 1 WHERE k = 1")
        cur.execute("COMMIT")

    return transaction


_KEYS = (
    '["user", "alice", "usd", "day", "UTC"]@1796601600000',
    '["feature", "search", "usd", "month", "UTC"]@1796083200000',
    '["global", "usd", "month", "UTC"]@1796083200000',
)
"""``bench_ledger``'s three counters, keyed as the library keys them (scope, unit, period, window)."""


def holds_for(scopes: int) -> Holds:
    """The benchmark's holds: ``bench_ledger``'s (its counters, 1,000,000 nano-USD each, limits far
    away); the commit charges 900,000."""
    return tuple((key, 1_000_000, 10**18) for key in _KEYS[:scopes])


LEASE_MS = 600_000


def pair_of(design: _Design, scopes: int) -> Callable[[object], object]:
    """One reserve + commit, as the library's would run: a random id (``new_id``), the wall clock in ms."""
    holds = holds_for(scopes)
    reserve, commit = design.reserve, design.commit
    for key, _, _ in holds:  # (a counter row exists: the first reservation of a window makes it)
        design.cur.execute(
            f"INSERT OR IGNORE INTO counters (key, spent, held, lease_min) VALUES (?, 0, 0, {NEVER})", (key,)
        )

    ulid = type(design) is Ulid

    def pair(_: object) -> object:
        res_id = f"{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}" if ulid else os.urandom(12).hex()
        if not reserve(res_id, holds, time.time_ns() // 1_000_000, LEASE_MS):
            raise AssertionError("refused")
        return commit(res_id, 900_000, time.time_ns() // 1_000_000)

    return pair


def today_pair(path: Path, scopes: int) -> tuple[Callable[[object], object], sqlite3.Connection]:
    """Today's SQL, as ``bench_ledger``'s pair sends it on its fast path (the library's tables and
    statements, bound parameters: 5 + 2N statements at the reserve, 5 + 3N at the commit), with the
    least Python around it: its record and journal texts are the library's, made by f-strings. What the
    store's statements cost apart from budgetguard's Python (``bench_ledger``'s ``replay`` inlines the
    parameters, so each statement is compiled again: not the floor of the same SQL)."""
    from budgetguard._ledger._sqlite import SQLiteLedger
    from budgetguard._ledger._sqlite_report import COLUMNS

    from .bench_ledger import _holds, _pair

    ledger = SQLiteLedger(path, namespace="bench")
    _pair(ledger)(_holds(scopes))  # (the counter rows, a record and a journal row to copy)
    sql, cur = ledger._sql, ledger._cursor()
    ex = cur.execute
    names = sql.names
    keys = [k for (k,) in ex(f"SELECT key FROM {names['counters']}")]
    record = json.loads(ex(f"SELECT record FROM {names['reservations']}").fetchone()[0])
    held_q = _quote(record["held"])
    journal = ex(f"SELECT scopes, amounts, data, {', '.join(COLUMNS)} FROM {names['journal']}").fetchone()
    slots = [(key, key.rsplit("@", 1)[0]) for key in keys]
    amount, charge, lease, keep = 1_000_000, 900_000, 120_000, 900_000

    def pair(_: object) -> object:
        res_id = os.urandom(12).hex()
        now = time.time_ns() // 1_000_000
        ends = now + lease
        ex("BEGIN IMMEDIATE")
        for key, field in slots:
            if not ex(sql.admit, (key, amount, 10**18 - amount, now, field)).rowcount:
                raise AssertionError("refused")
        for key, _ in slots:
            ex(sql.add_lease, (key, res_id, ends, amount))
        text = f'{{"state": "held", "created": {now}, "expires": {ends}, "held": {held_q}, "meta": {{}}}}'
        ex(sql.put_record, (res_id, text, ends + keep))
        ex("COMMIT")
        now = time.time_ns() // 1_000_000
        ex("BEGIN IMMEDIATE")
        ex(sql.record, (res_id,)).fetchone()
        spent = []
        for key, _ in slots:
            found = ex(sql.spent, (key, now)).fetchone()
            ex(sql.drop_lease, (key, ends, res_id))
            ex(sql.settle, (found[0] + charge, amount, key))
            spent.append(str(found[0] + charge))
        outcome = (
            f'{{"state": "committed", "charged": {{"usd": {charge}}}, "overrun": false, "expired": false, '
            f'"spent": [{", ".join(spent)}]}}'
        )
        text = f'{{"state": "committed", "created": {now}, "expires": {ends}, "held": {held_q}, "outcome": {outcome}}}'
        ex(sql.set_record, (text, res_id))
        ex(sql.journal, (now, "committed", res_id, *journal))
        ex("COMMIT")
        return None

    return pair, ledger._db()


def side_work(side: str, path: Path) -> tuple[Callable[[object], object], list[sqlite3.Connection]]:
    """One call of ``side`` on a new file at ``path`` (``raw``, ``rawcur``, ``today:N`` or
    ``DESIGN:N``), and the connections that write it."""
    if side in ("raw", "rawcur"):
        DESIGNS["stmts"](path).db.close()  # (the same kind of file)
        db = connect(path)
        return (_raw_write_tx(db) if side == "raw" else raw_transaction(db)), [db]
    if side.startswith("today:"):
        work, db = today_pair(path, int(side[-1]))
        return work, [db]
    name, scopes = side.split(":")
    design = DESIGNS[name](path)
    return pair_of(design, int(scopes)), [design.db]


def _count_side(side: str, calls: int) -> None:
    """In the valgrind child: ``side``, ``calls`` times after a warm-up."""
    with tempfile.TemporaryDirectory(prefix="bg-sqlite-floor-") as folder:
        count_here(side_work(side, Path(folder) / "ledger.db")[0], calls)


def wal_frames(side: str, pairs: int = 300) -> float:
    """WAL frames (4 KB pages) ``side`` writes a call: the WAL's growth with checkpoints off, after a
    warm-up (no valgrind)."""
    with tempfile.TemporaryDirectory(prefix="bg-sqlite-floor-") as folder:
        path = Path(folder) / "ledger.db"
        work, connections = side_work(side, path)
        for db in connections:  # (a per-connection setting)
            db.execute("PRAGMA wal_autocheckpoint = 0")
        wal = Path(f"{path}-wal")
        for i in range(100):
            work(i)
        before = wal.stat().st_size
        for i in range(pairs):
            work(i)
        return (wal.stat().st_size - before) / (4096 + 24) / pairs


_OBJECTS = {"libsqlite3": "SQLite", "libpython": "Python", "python3": "Python", "_sqlite3": "sqlite3 module"}


def counted(side: str, calls: int) -> dict[str, float]:
    """Instructions per call of ``side`` under callgrind, in all and by object (SQLite's library, the
    interpreter, the ``_sqlite3`` module, the rest: libc's memcpy, malloc, ...), and SQLite's part in its
    WAL frames' checksums (the function holding the most instructions of the WAL write)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/out",
             sys.executable, "-m", "benchmarks.sqlite_floor", "--count-side", side, str(calls)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None:
            raise RuntimeError(f"no instruction count from callgrind: {out.stderr[-500:]}")
        annotated = subprocess.run(
            ["callgrind_annotate", "--threshold=100", f"{tmp}/out"], capture_output=True, text=True, check=True
        ).stdout
    parts = {"all": int(found.group(1)) / calls}
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):(\S+) \[(\S+)\]", line)
        if m is None:
            continue
        count = int(m.group(1).replace(",", "")) / calls
        obj = Path(m.group(4)).name
        group = next((g for prefix, g in _OBJECTS.items() if obj.startswith(prefix)), "other")
        parts[group] = parts.get(group, 0.0) + count
    return parts


def check(folder: Path) -> None:
    """Each design's guarantees, asserted (no valgrind)."""
    for name, kind in DESIGNS.items():
        d = kind(folder / f"{name}.db")
        ex = d.cur.execute

        def counter(key: str) -> tuple[int, int]:
            return tuple(ex("SELECT spent, held FROM counters WHERE key = ?", (key,)).fetchone())  # type: ignore[return-value]

        a, b, c = "a", "b", "c"
        # a new counter (general path), then the fast path
        assert d.reserve("r1", ((a, 100, 1000),), 0, 50)
        assert counter(a) == (0, 100), (name, counter(a))
        assert d.reserve("r2", ((a, 100, 1000), (b, 100, 1000)), 1, 50)
        assert counter(a) == (0, 200) and counter(b) == (0, 100), name
        # a repeat holds nothing more
        assert d.reserve("r2", ((a, 100, 1000), (b, 100, 1000)), 2, 50)
        assert counter(a) == (0, 200), name
        # all or nothing: c over its limit, a and b untouched; the refusal is recorded and repeats
        assert not d.reserve("r3", ((a, 10, 1000), (b, 10, 1000), (c, 10, 5)), 3, 50)
        assert counter(a) == (0, 200) and counter(b) == (0, 100) and counter(c) == (0, 0), name
        assert not d.reserve("r3", ((a, 10, 1000),), 3, 50)
        # the limit counts spent + held + amount
        assert not d.reserve("r4", ((a, 801, 1000),), 4, 50)
        assert d.reserve("r4b", ((a, 800, 1000),), 4, 50)
        assert counter(a) == (0, 1000), name
        def committed(res_id: str, actual: int, now: int, spent: tuple[int, ...]) -> None:
            out = d.commit(res_id, actual, now)
            assert out == (spent if d.spent_column else actual), (name, res_id, out)

        # commit: charged, released, journaled once; a repeat answers the same
        committed("r2", 70, 5, (70, 70))
        committed("r2", 70, 6, (70, 70))
        assert counter(a) == (70, 900) and counter(b) == (70, 0), (name, counter(a), counter(b))
        # the leases of r1 and r4b (ends 50, 54) expire: the next reserve reclaims them
        assert d.reserve("r5", ((a, 900, 1000),), 60, 50)
        assert counter(a) == (70, 900), (name, counter(a))
        # a late commit charges, its hold was given back already
        committed("r1", 30, 61, (100,))
        assert counter(a) == (100, 900), (name, counter(a))
        committed("r5", 900, 62, (1000,))
        assert counter(a) == (1000, 0), (name, counter(a))
        # a commit past int64 is refused, nothing written
        assert d.reserve("r6", ((b, 1, 2**63 - 1),), 63, 50)
        try:
            d.commit("r6", 2**63 - 10, 64)
        except sqlite3.Error:
            pass
        else:
            raise AssertionError(f"{name}: a sum past int64 was stored")
        assert counter(b) == (70, 1), (name, counter(b))
        committed("r6", 1, 65, (71,))  # (it can still be committed)
        assert counter(b) == (71, 0), (name, counter(b))
        # the journal holds one row per commit, with the amount; the counters equal its sums
        table = "journal2" if isinstance(d, TodayJournal) else "journal3" if isinstance(d, Proposal) else "journal"
        rows = ex(f"SELECT res_id, {'charged' if table == 'journal' else 'amounts'} FROM {table} ORDER BY seq")
        rows = [(r, c if type(c) is int else json.loads(c)["usd"]) for r, c in rows.fetchall()]
        assert rows == [("r2", 70), ("r1", 30), ("r5", 900), ("r6", 1)], (name, rows)
        # the counted pair runs, and only its fast path (the general path starts by reading the state)
        pair = pair_of(d, 3)
        traced: list[str] = []
        d.db.set_trace_callback(traced.append)
        pair(None)
        d.db.set_trace_callback(None)
        assert not any(s.startswith(("ROLLBACK", "SELECT state")) for s in traced), (name, traced)
        print(f"{name:>14}: ok ({len(traced)} statements a 3-scope pair, a trigger's included)")
        d.db.close()


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--count-side"]:
        _count_side(argv[1], int(argv[2]))
        return
    if argv[:1] == ["--check"]:
        with tempfile.TemporaryDirectory(prefix="bg-sqlite-floor-") as folder:
            check(Path(folder))
        return
    calls = next((int(a) for a in argv if a.isdigit()), 500)
    names = [a for a in argv if a in DESIGNS] or list(DESIGNS)
    raw = counted("raw", calls)
    print(f"{calls} calls after 300 of warm-up; instructions a call (user space), by object: SQLite's library "
          "(its VM, b-trees, pager, WAL), the interpreter, the sqlite3 module, the rest (libc: locks, "
          "malloc, memcpy); WAL frames a call by the WAL's growth")
    print(f"{'side':>18} {'instr':>9} {'/raw':>6} {'/rawcur':>7} {'frames':>6} {'SQLite':>8} "
          f"{'Python':>8} {'sqlite3':>8} {'libc':>7}")  # fmt: skip

    def show(side: str, c: dict[str, float], raws: tuple[float, float]) -> None:
        print(f"{side:>18} {c['all'] / 1000:8.1f}k {c['all'] / raws[0]:6.2f} {c['all'] / raws[1]:7.2f} "
              f"{wal_frames(side):6.2f} {c.get('SQLite', 0) / 1000:7.1f}k {c.get('Python', 0) / 1000:7.1f}k "
              f"{c.get('sqlite3 module', 0) / 1000:7.1f}k {c.get('other', 0) / 1000:6.1f}k", flush=True)  # fmt: skip

    rawcur = counted("rawcur", calls)
    raws = (raw["all"], rawcur["all"])
    show("raw", raw, raws)
    show("rawcur", rawcur, raws)
    for scopes in (1, 3):
        show(f"today:{scopes}", counted(f"today:{scopes}", calls), raws)
    for name in names:
        for scopes in (1, 3):
            side = f"{name}:{scopes}"
            show(side, counted(side, calls), raws)


if __name__ == "__main__":
    main(sys.argv[1:])

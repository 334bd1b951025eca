"""The SQLite floor prototypes' common part (``sqlite_floor``): their tables, a connection with the
ledger's pragmas, the general path every design falls back to, and the ``Design`` base class."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any, Literal

Isolation = Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None
"""The ``sqlite3`` module's own transactions (``None``: off, explicit ``BEGIN IMMEDIATE``)."""

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


_FIELD = "rtrim(rtrim(?, '0123456789'), '@')"
"""SQL: a counter key's field (the key is the field, ``@`` and its window's start in ms): what a limit
override is keyed by."""


def connect(path: Path, isolation_level: Isolation = None) -> sqlite3.Connection:
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


class Redo(Exception):
    """The fast path cannot finish: roll back and run the general path."""


class General:
    """The general path, on any design's tables: reads, decides in Python, writes. It reclaims every
    expired lease first (so a design's fast path may refuse whenever a lease might have expired), makes
    missing counter rows, records a refusal, answers a repeat. ``apply`` is False where the design's
    triggers apply the holds and settlements themselves."""

    overrides = override_column = False  # (set by the designs that have them)

    def __init__(self, cur: sqlite3.Cursor, apply: bool, spent: bool) -> None:
        self.cur, self.apply, self.spent = cur, apply, spent

    def reclaim(self, now: int) -> None:
        ex = self.cur.execute
        expired = ex(f"SELECT id, holds FROM res WHERE state = {HELD} AND expires_at <= ?", (now,)).fetchall()
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
            "INSERT INTO journal (ts, res_id, holds, charged) VALUES (?, ?, ?, ?)",
            (ts, res_id, text, charged),
        )

    def reserve(self, res_id: str, holds: Holds, now: int, ends: int, insert: Callable[[], object]) -> bool:
        ex = self.cur.execute
        found = ex("SELECT state FROM res WHERE id = ?", (res_id,)).fetchone()
        if found is not None:
            return bool(found[0] != REFUSED)
        self.reclaim(now)
        rows = []
        for key, amount, limit in holds:
            ex(
                f"INSERT OR IGNORE INTO counters (key, spent, held, lease_min) VALUES (?, 0, 0, {NEVER})",
                (key,),
            )
            self.bound(key)
            spent, held = ex("SELECT spent, held FROM counters WHERE key = ?", (key,)).fetchone()
            if self.overrides:  # (a limit override of the counter's field: ``limits``, by key prefix)
                found = ex(f"SELECT value FROM limits WHERE key = {_FIELD}", (key,)).fetchone()
                if self.override_column:  # (a new row carries its field's override: the fast path's check)
                    ex("UPDATE counters SET override = ? WHERE key = ?", (found and found[0], key))
                limit = limit if found is None else found[0]
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


class Design:
    """A reserve and a commit on one file; ``reserve`` and ``commit`` are the counted pair."""

    name = ""
    triggers: tuple[str, ...] = ()
    res_extra = ""  # more reservation columns
    counters_extra = ""  # more counter columns
    spent_column = False  # the commit returns each counter's spent after it, kept in ``res.spent``
    journal_table, journal_amount = "journal", "charged"  # (where ``--check`` reads the journal)
    live_index = False
    isolation_level: Isolation = None

    def __init__(self, path: Path) -> None:
        self.db = connect(path, self.isolation_level)
        self.cur = self.db.cursor()
        self.general = General(self.cur, apply=not self.triggers, spent=self.spent_column)
        schema = [_COUNTERS.format(extra=self.counters_extra), _RESERVATIONS.format(extra=self.res_extra),
                  _JOURNAL, *self.triggers]  # fmt: skip
        if self.live_index:
            schema.append(_LIVE_INDEX)
        for statement in schema:
            self.db.execute(statement)
        if self.isolation_level is not None:
            self.db.commit()

    def atomic(self, fast: Callable[[], Any], slow: Callable[[], Any]) -> Any:
        """``fast`` in a write transaction; on ``Redo`` (or a trigger's ``RAISE``), ``slow`` in a new
        one."""
        ex = self.cur.execute
        ex("BEGIN IMMEDIATE")
        try:
            out = fast()
        except (Redo, sqlite3.IntegrityError):
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

    def put_limit(self, field: str, value: int) -> None:
        """A limit override of every window of ``field`` (the designs with ``general.overrides``)."""
        raise NotImplementedError

    def commit(self, res_id: str, actual: int, now: int) -> int:
        raise NotImplementedError

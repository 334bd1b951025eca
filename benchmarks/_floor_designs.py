"""The SQLite floor prototypes' designs (``sqlite_floor`` describes them): ``DESIGNS``, by name."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._floor_base import _FIELD, EXPIRED, HELD, SETTLED, Design, Holds, Redo, holds_json, spent_text


class Stmts(Design):
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
                    raise Redo
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
                raise Redo  # (not held: settled, expired, refused, unknown)
            mine = self.mine.get(res_id)
            if mine is None:  # (another process's reservation)
                text = ex("SELECT holds FROM res WHERE id = ?", (res_id,)).fetchone()[0]
                mine = (tuple(tuple(h) for h in json.loads(text)), text)
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
    journal_table, journal_amount = "journal3", "amounts"
    counters_extra = ", expires_at INTEGER, label TEXT NOT NULL DEFAULT ''"
    admit = f"{Stmts.admit} AND NOT EXISTS (SELECT 1 FROM limits WHERE key = {_FIELD.replace('?', '?1')})"
    journal3 = (
        "INSERT INTO journal3 (ts, event, res_id, scopes, amounts, data, r_calls, r_in, r_out, r_cost, "
        "r_model, r_function, r_export) VALUES ({ts}, 'committed', ?, ?, ?, '{{}}', 1, 0, 0, ?, '(unknown)', "
        "'(unknown)', 3)"
    ).format(ts="?")

    def __init__(self, path: Path) -> None:
        from budgetguard._ledger._sqlite_report import DDL

        super().__init__(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS journal3 (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
            "event TEXT NOT NULL, res_id TEXT NOT NULL, scopes TEXT NOT NULL, amounts TEXT NOT NULL, "
            f"data TEXT NOT NULL, {DDL}) STRICT"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS journal3_by_time ON journal3 (ts)")
        self.labels: dict[Holds, str] = {}
        self.general.journal = self._journal  # type: ignore[method-assign]
        self.general.overrides = True

    def put_limit(self, field: str, value: int) -> None:
        """A limit override of every window of ``field`` (``limits``; ``proposal-lean``: its rows too)."""
        ex = self.cur.execute
        ex("INSERT OR REPLACE INTO limits (key, value) VALUES (?, ?)", (field, value))
        if self.general.override_column:  # (the keys of a field's windows: ``field@...``, a range)
            ex(
                "UPDATE counters SET override = ? WHERE key > ? AND key < ?",
                (value, f"{field}@", f"{field}A"),
            )

    def _journal(self, ts: int, res_id: str, text: str, charged: int) -> None:
        holds = tuple(tuple(h) for h in json.loads(text))
        self.write_journal(ts, res_id, holds, text, charged)

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
    admit = f"{Stmts.admit} AND override IS NULL"
    journal3 = Proposal.journal3.replace(
        "VALUES (?,", "VALUES (max(?, coalesce((SELECT ts FROM journal3 ORDER BY seq DESC LIMIT 1), 0)),", 1
    )

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.db.execute("DROP INDEX journal3_by_time")
        self.general.override_column = True


class Trimmed(Lean):
    """``proposal-lean`` with the two contract trims that make room for the library's own code: the
    commit returns the amount charged, not each counter's spent (``lean``'s), and the journal row is
    ``lean``'s (report columns left to a fill before a report); the override column and the
    non-decreasing journal ``ts`` without an index are kept."""

    name = "trimmed"
    counters_extra = ProposalLean.counters_extra
    admit = ProposalLean.admit
    journal = (
        "INSERT INTO journal (ts, res_id, holds, charged) VALUES "
        "(max(?, coalesce((SELECT ts FROM journal ORDER BY seq DESC LIMIT 1), 0)), ?, ?, ?)"
    )
    put_limit = Proposal.put_limit

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT"
        )
        self.general.overrides = self.general.override_column = True


class Ulid(Lean):
    """``lean`` with ids whose first 12 hex digits are the creation time in ms (then 12 random digits):
    reservations are inserted at the right edge of their b-tree, and the general path's search for
    expired leases could be the id range of reservations created more than a lease ago."""

    name = "ulid"


class TodayJournal(Lean):
    """``lean`` writing today's journal row: the library's journal table (``AUTOINCREMENT``, its index
    on ``ts``, the 12 report columns) and its Python (``journal_row``), with the benchmark's empty data."""

    name = "lean-journal"
    journal_table, journal_amount = "journal2", "amounts"
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
        self.write_journal(ts, res_id, holds, text, charged)

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
        WHERE counters.key = j.value ->> 0 AND counters.lease_min > NEW.at
        AND counters.held <= (j.value ->> 2) - (j.value ->> 1) - counters.spent;
    SELECT RAISE(ABORT, 'not admitted') WHERE changes() <> json_array_length(NEW.holds);
END"""


class Trigger(Design):
    """One statement a transaction, its triggers do the rest."""

    name = "trigger"
    triggers: tuple[str, ...] = (_HOLD_TRIGGER, *_SETTLE_TRIGGERS)
    insert = f"INSERT INTO res (id, state, expires_at, at, holds) VALUES (?, {HELD}, ?, ?, ?)"
    settle_res = f"UPDATE res SET state = {SETTLED}, charged = ?, at = ? WHERE id = ? AND state = {HELD}"

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        ends = now + lease_ms
        return self._insert(res_id, holds, now, ends, self.insert, (res_id, ends, now, holds_json(holds)))

    def _insert(
        self, res_id: str, holds: Holds, now: int, ends: int, insert: str, params: tuple[Any, ...]
    ) -> bool:
        """The reservation's ``INSERT`` (its triggers hold), or the general path."""
        ex = self.cur.execute

        def fast() -> bool:
            ex(insert, params)
            return True

        return bool(
            self.atomic(
                fast, lambda: self.general.reserve(res_id, holds, now, ends, lambda: ex(insert, params))
            )
        )

    def commit(self, res_id: str, actual: int, now: int) -> int:
        ex = self.cur.execute

        def fast() -> int:
            if not ex(self.settle_res, (actual, now, res_id)).rowcount:
                raise Redo
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
        "INSERT INTO res (id, state, expires_at, at, holds, k, amount, lim) "
        f"VALUES (?, {HELD}, ?, ?, ?, ?, ?, ?)"
    )

    def reserve(self, res_id: str, holds: Holds, now: int, lease_ms: int) -> bool:
        if len(holds) != 1:
            return super().reserve(res_id, holds, now, lease_ms)
        ends = now + lease_ms
        ((key, amount, limit),) = holds
        params = (res_id, ends, now, holds_json(holds), key, amount, limit)
        return self._insert(res_id, holds, now, ends, self.insert1, params)


class Implicit(Trigger):
    """``trigger`` with the ``sqlite3`` module's own ``BEGIN IMMEDIATE`` (issued before the ``INSERT`` /
    ``UPDATE``) and ``Connection.commit``."""

    name = "implicit"
    isolation_level = "IMMEDIATE"

    def atomic(self, fast: Callable[[], Any], slow: Callable[[], Any]) -> Any:
        db = self.db
        try:
            out = fast()
        except (Redo, sqlite3.IntegrityError):
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
        script = (
            f"BEGIN IMMEDIATE; INSERT INTO res (id, state, expires_at, at, holds) VALUES ({values}); COMMIT"
        )
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


DESIGNS: dict[str, type[Design]] = {
    d.name: d
    for d in (
        Stmts,
        StmtsIndex,
        Lean,
        LeanSpent,
        LeanReturning,
        Proposal,
        ProposalLean,
        Trimmed,
        Ulid,
        TodayJournal,
        JournalSql,
        JournalNoAuto,
        JournalNoIndex,
        Trigger,
        TriggerIndex,
        Trigger1,
        Implicit,
        Script,
    )
}

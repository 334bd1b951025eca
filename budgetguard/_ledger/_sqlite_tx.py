"""The SQLite store's tables and statements (``_Sql``, one set per namespace) and one transaction over
them (``_SQLiteTx``: the engine's ``Tx``), with its shortcuts for the common reserve and commit and the
JSON it writes (what ``json.dumps`` writes, spelled out: records and journal entries)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from .._cache import Bounded, memo
from .._money import INT64_MAX
from ._base import DEFAULT_NAMESPACE
from ._engine import Slot
from ._expiry import expired
from ._sqlite_report import COLUMNS, JournalSql, fact_columns
from ._sqlite_report import DDL as REPORT_COLUMNS
from ._stored import decode_held, decode_refusal, encode_held, encode_refusal
from ._types import HeldCounter, Hold, JournalData

Meta = dict[str, Any]

__all__ = ["journal_row"]


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
tables, ``_TABLES``), ``journal_complete_since`` (ms) and ``journal_facts`` (``FACTS_VERSION``: the
journal's report columns are filled, see ``_sqlite_report``)."""
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
        # ``_SQLiteTx.admit``: add ?2 to a counter's held if spent + held + ?2 <= its code limit (?3 is
        # the limit minus ?2: no sum can pass int64), it has no expired lease (?4: now) and no override
        self.admit = (
            f"UPDATE {counters} SET held = held + ?2 WHERE key = ?1 AND held <= ?3 - spent AND NOT EXISTS "
            f"(SELECT 1 FROM {leases} WHERE counter = ?1 AND expires_at <= ?4) AND NOT EXISTS "
            f"(SELECT 1 FROM {limits} WHERE key = ?5)"
        )
        self.unadmit = f"UPDATE {counters} SET held = held - ? WHERE key = ?"
        # ``_SQLiteTx.settle_all``: a counter's spent and whether a lease of it has expired
        self.spent = (
            f"SELECT spent, EXISTS (SELECT 1 FROM {leases} WHERE counter = ?1 AND expires_at <= ?2) "
            f"FROM {counters} WHERE key = ?1"
        )
        self.drop_lease = f"DELETE FROM {leases} WHERE counter = ? AND expires_at = ? AND res_id = ?"
        self.settle = f"UPDATE {counters} SET spent = ?, held = held - ? WHERE key = ?"
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


_written: Bounded[str, tuple[dict[str, Any], str]] = Bounded("ledger.sqlite.written", 4096)
"""The held records this process wrote, by their JSON: the engine's dict and its holds' text, which
their commit reads back without parsing (records are never changed in place: a resolution writes a
new one)."""


def _decode_held(text: str) -> tuple[HeldCounter, ...]:
    found = _decoded.get(text)
    return _decoded.put(text, decode_held(text)) if found is None else found


class _SQLiteTx:
    """One transaction. What it reads of a counter (``_Sql.read``) is kept, and kept up to date by its
    writes (it holds the write lock: nobody else changes them meanwhile), and so is the stored form of
    the holds it read."""

    def __init__(self, db: sqlite3.Cursor, sql: _Sql, fast: bool = True) -> None:
        self.db = db  # (the connection's own cursor: ``Connection.execute`` makes a new one each time)
        self.sql = sql
        self.rows: dict[str, tuple[int, int]] = {}
        self.ends: dict[str, int | None] = {}  # the expiry of each counter row read that exists
        self.record_end: tuple[str, int] | None = None  # the id and expiry of the record read
        self.limits: dict[str, int | None] = {}
        self.stale: set[str] = set()  # counters with an expired lease to reclaim
        self.held_text: tuple[tuple[HeldCounter, ...], str] | None = None
        self.fast = fast  # (``admit`` and ``settle_all``; off when an operation runs again without them)

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
        execute, add_lease = self.db.execute, self.sql.add_lease
        for slot, amount in holds:
            spent, held = self.rows[slot.key]  # (read by live)
            self.put_counter(slot.key, spent, held + amount, slot.expires, slot.label)
            execute(add_lease, (slot.key, res_id, lease_ends, amount))

    def admit(
        self, res_id: str, now: int, lease_ends: int, holds: Sequence[Hold], slots: Sequence[Slot]
    ) -> bool:
        """One guarded ``UPDATE`` a counter (``_Sql.admit``) where ``live`` + ``limit`` + ``hold`` ran
        two statements and Python; a counter it cannot admit gives back what the earlier ones took."""
        execute, sql = self.db.execute, self.sql
        for i, slot in enumerate(slots):
            hold = holds[i]
            amount = hold.amount
            params = (slot.key, amount, hold.counter.limit - amount, now, slot.field)
            if not execute(sql.admit, params).rowcount:
                for taken, h in zip(slots[:i], holds, strict=False):
                    execute(sql.unadmit, (h.amount, taken.key))
                return False
        for slot, hold in zip(slots, holds, strict=True):
            execute(sql.add_lease, (slot.key, res_id, lease_ends, hold.amount))
        return True

    def settle_all(
        self, now: int, res_id: str, lease_ends: int, rows: Sequence[tuple[HeldCounter, Slot, int]]
    ) -> list[int] | None:
        """Three statements a counter, none with ``RETURNING`` (its temporary table costs SQLite more
        than a statement): the lease's amount is the hold's, so its ``DELETE`` need only say whether it
        was there. Anything unusual (a counter with an expired lease, no row, past int64; a lease
        gone) rolls the transaction back (``_Redo``): the engine's general path runs it again."""
        if not self.fast or expired(lease_ends, now):
            return None
        execute, sql = self.db.execute, self.sql
        out = []
        for h, slot, charge in rows:
            found = execute(sql.spent, (slot.key, now)).fetchone()
            if found is None or found[1] or found[0] > INT64_MAX - charge:
                raise _Redo
            if not execute(sql.drop_lease, (slot.key, lease_ends, res_id)).rowcount:
                raise _Redo
            spent = found[0] + charge
            execute(sql.settle, (spent, h.amount, slot.key))
            out.append(spent)
        return out

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
        written = _written.get(row[0])
        if written is not None:  # (a held record this process wrote: its commit, the common case)
            self.held_text = (written[0]["held"], written[1])
            return written[0]
        record: dict[str, Any] = json.loads(row[0])
        if "held" in record:
            text = record["held"]
            record["held"] = _decode_held(text)
            self.held_text = (record["held"], text)
        if "refusal" in record:
            record["refusal"] = decode_refusal(record["refusal"])
        return record

    def put_record(self, res_id: str, record: dict[str, Any], expires_at: int) -> None:
        if record["state"] == "held":  # (what the engine puts, spelled out: no dict copy, no encoder)
            meta = record["meta"]
            held = self._held_text(record["held"])
            text = (
                f'{{"state": "held", "created": {record["created"]}, "expires": {record["expires"]}, '
                f'"held": {_quote(held)}, "meta": {_json(meta) if meta else "{}"}}}'
            )
            if not meta or type(meta) is JournalData:  # (else a caller's nested value could change)
                _written.put(text, (record, held))
        else:
            stored = dict(record)
            if "refusal" in stored:
                stored["refusal"] = encode_refusal(stored["refusal"])
            if "held" in stored:
                stored["held"] = self._held_text(stored["held"])
            text = json.dumps(stored)
        self._put_text(res_id, text, expires_at)

    def _held_text(self, held: tuple[HeldCounter, ...]) -> str:
        known = self.held_text
        if known is None or known[0] is not held:
            known = self.held_text = (held, encode_held(held))
        return known[1]

    def _put_text(self, res_id: str, text: str, expires_at: int) -> None:
        if self.record_end == (res_id, expires_at):  # (a resolution within its lease: the common case)
            self.db.execute(self.sql.set_record, (text, res_id))
        else:
            self.db.execute(self.sql.put_record, (res_id, text, expires_at))

    def put_resolved(
        self, res_id: str, held: Mapping[str, Any], state: str, charged: dict[str, int], overrun: bool,
        expired: bool, spent: tuple[int, ...], expires_at: int,
    ) -> None:  # fmt: skip
        """``resolved_record``'s JSON, spelled out."""
        outcome = (
            f'{{"state": "{state}", "charged": {_amounts(charged)}, "overrun": {_JSON_BOOL[overrun]}, '
            f'"expired": {_JSON_BOOL[expired]}, "spent": [{", ".join(map(str, spent))}]}}'
        )
        text = (
            f'{{"state": "{state}", "created": {held["created"]}, "expires": {held["expires"]}, '
            f'"held": {_quote(self._held_text(held["held"]))}, "outcome": {outcome}}}'
        )
        self._put_text(res_id, text, expires_at)

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
    """A journal entry as the journal table's insert (``_Sql.journal``) takes it: its JSON (as
    ``json.dumps`` writes it), then its report columns."""
    text = _sorted_json(data) if data else "{}"
    return (ts, event, res_id, _scopes_json(tuple(scopes)), _amounts(amounts), text,
            *fact_columns(event, scopes, amounts, data, res_id))  # fmt: skip


_JSON_BOOL = {False: "false", True: "true"}


def _encoder(sort_keys: bool) -> Callable[[Any], str]:
    """``json.dumps`` (``sort_keys`` or not) of a dict, with its C encoder made once:
    ``JSONEncoder.encode`` makes one per call (~half its cost for a guarded call's data). Without the
    circular check (a shared ``markers`` dict would be one for every thread): what it encodes passed
    ``check_meta``, whose ``json.dumps`` refuses circles."""
    python = json.JSONEncoder(sort_keys=sort_keys)
    if c_make_encoder is None:  # pragma: no cover (CPython has it)
        return python.encode
    make = c_make_encoder(None, python.default, _quote, None, ": ", ", ", sort_keys, False, True)

    def encode(value: Any) -> str:
        return "".join(make(value, 0))

    return encode


_json = _encoder(sort_keys=False)
_sorted_json = _encoder(sort_keys=True)


@memo("ledger.sqlite.scopes", 4096)
def _scopes_json(scopes: tuple[str, ...]) -> str:
    """A journal entry's scopes as JSON (calls repeat their scopes)."""
    return json.dumps(scopes)


def _amounts(amounts: Mapping[str, Any]) -> str:
    """``json.dumps(amounts)`` for a mapping of str to int (what the engine journals and charges), without
    an encoder."""
    parts = []
    for k, v in amounts.items():
        if type(k) is not str or type(v) is not int:
            return json.dumps(amounts)
        parts.append(f"{_quote(k)}: {v}")
    return f"{{{', '.join(parts)}}}"


class _Redo(Exception):
    """``_SQLiteTx.settle_all`` found it cannot settle in one go: the transaction is rolled back and
    the operation runs again without the shortcuts (rare: an expired lease to reclaim, a lease pruned
    with its counter)."""

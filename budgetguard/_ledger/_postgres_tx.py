"""The PostgreSQL store's statements and one transaction over its tables (``_PgTx``: the engine's ``Tx``).

Every table has the namespace as the first column of its key: a namespace's rows are its data, and
nothing of one namespace is read or written by an operation of another. The tables themselves are
``_postgres_schema``'s. Amounts are ``bigint`` (int64), never ``numeric`` or floats; records are the
JSON the SQLite store writes (``_stored``), journal rows the same columns as its journal
(``journal_row``: the entry's JSON and its report columns).

Concurrency: before the engine reads anything, the store takes transaction-scoped advisory locks on
the reservation id and on every counter the operation touches, in one fixed order (``lock_ids``), so
two operations on the same counters run one after the other and racers never deadlock; a counter
that another operation touches without being named up front (an operation this module does not
know) is locked when first touched (``_PgTx._touch``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from hashlib import blake2b, sha256
from typing import Any

from .._cache import memo
from ._engine import NoShortcuts, Slot, resolved_record
from ._sqlite_report import _ODD_ROW as ODD_ROW
from ._sqlite_report import COLUMNS
from ._sqlite_tx import journal_row
from ._stored import decode_held, decode_refusal, encode_held, encode_refusal

Meta = dict[str, Any]

__all__ = ["CLOCK", "LOCK", "PgTx", "digest", "lock_id"]

COUNTERS, LEASES, RESERVATIONS = "budgetguard_counters", "budgetguard_leases", "budgetguard_reservations"
LIMITS, JOURNAL, META = "budgetguard_limits", "budgetguard_journal", "budgetguard_meta"

CLOCK = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
"""The store's clock: the database server's, in epoch milliseconds (read once per operation)."""
LOCK = "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k"
"""Take the advisory locks of an array of ids, in the array's order, until the transaction ends."""

_READ = (
    f"SELECT c.spent, c.held, c.expires_at, l.value, EXISTS (SELECT 1 FROM {LEASES} "
    "WHERE ns = %(ns)s AND ch = %(kh)s AND expires_at <= %(now)s) "
    f"FROM (SELECT 1) AS one LEFT JOIN {COUNTERS} AS c ON c.ns = %(ns)s AND c.kh = %(kh)s "
    f"LEFT JOIN {LIMITS} AS l ON l.ns = %(ns)s AND l.kh = %(fh)s"
)
"""A counter's spent and held, its limit override, and whether a lease of it has expired."""
_PUT_COUNTER = (
    f"INSERT INTO {COUNTERS} (ns, kh, key, spent, held, expires_at, label) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (ns, kh) DO UPDATE SET spent = excluded.spent, held = excluded.held, "
    f"expires_at = coalesce(excluded.expires_at, {COUNTERS}.expires_at)"
)
_ADD_LEASE = (
    f"INSERT INTO {LEASES} (ns, ch, counter, expires_at, rh, res_id, amount) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_POP_LEASE = (
    f"DELETE FROM {LEASES} WHERE ns = %s AND ch = %s AND expires_at = %s AND rh = %s RETURNING amount"
)
_POP_EXPIRED = f"DELETE FROM {LEASES} WHERE ns = %s AND ch = %s AND expires_at <= %s RETURNING res_id, amount"
_RECORD = f"SELECT record FROM {RESERVATIONS} WHERE ns = %s AND ih = %s"
_PUT_RECORD = (
    f"INSERT INTO {RESERVATIONS} (ns, ih, id, record, expires_at) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (ns, ih) DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at"
)
_LIMIT = f"SELECT value FROM {LIMITS} WHERE ns = %s AND kh = %s"
_PUT_LIMIT = (
    f"INSERT INTO {LIMITS} (ns, kh, key, value) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (ns, kh) DO UPDATE SET value = excluded.value"
)
_CLEAR_LIMIT = f"DELETE FROM {LIMITS} WHERE ns = %s AND kh = %s"
_JOURNAL = (
    f"INSERT INTO {JOURNAL} (ns, ts, event, res_id, scopes, amounts, data, {', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * (7 + len(COLUMNS)))})"
)


def lock_id(kind: str, namespace: str, name: str) -> int:
    """The advisory lock id (a signed 64-bit integer) of a reservation id (``kind`` ``r``), a counter
    key (``c``) or a run-time limit field (``l``) in a namespace: a hash, so two names may share one
    (they then wait for each other: slower, never wrong)."""
    digest = blake2b(f"{kind}\0{namespace}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def digest(name: str) -> bytes:
    """What a row is keyed by instead of its name (a counter key, a reservation id, a limit field):
    SHA-256 of its UTF-8, as migration 2 computes it in SQL. A name's length is then no key's: the
    full text sits beside it, unindexed (a btree entry holds at most about 2.7 kB)."""
    return sha256(name.encode()).digest()


def _record_text(record: Mapping[str, Any]) -> str:
    stored = dict(record)
    if "refusal" in stored:
        stored["refusal"] = encode_refusal(stored["refusal"])
    if "held" in stored:
        stored["held"] = encode_held(stored["held"])
    return json.dumps(stored)


def _record_of(text: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(text)
    if "held" in record:
        record["held"] = decode_held(record["held"])
    if "refusal" in record:
        record["refusal"] = decode_refusal(record["refusal"])
    return record


class PgTx(NoShortcuts):
    """One transaction (``cursor``'s connection, inside ``BEGIN`` ... ``COMMIT``). What it reads of a
    counter is kept, and kept up to date by its writes: it holds the counter's lock, so nobody else
    changes them meanwhile."""

    # (no ``admit`` / ``settle_all`` shortcuts, ``NoShortcuts``: a pair's time is its two commits)

    def __init__(self, cursor: Any, namespace: str, now: int) -> None:
        self.cur = cursor
        self.ns = namespace
        self.now = now
        self.locked: set[int] = set()
        self.rows: dict[str, tuple[int, int]] = {}
        self.limits: dict[str, int | None] = {}
        self.stale: set[str] = set()  # counters with an expired lease to reclaim
        self.records: dict[str, dict[str, Any] | None] = {}

    # -- locks ------------------------------------------------------------------------------------

    def lock(self, res_id: str | None, keys: Iterable[str], fields: Iterable[str] = ()) -> None:
        """Lock ``res_id`` (unless None), then the counters ``keys`` and the run-time limits ``fields``
        in ascending lock id order (every operation takes its locks so: no two wait for each other in
        a circle)."""
        ns = self.ns
        ids = [] if res_id is None else [lock_id("r", ns, res_id)]
        rest = {lock_id("c", ns, key) for key in keys} | {lock_id("l", ns, field) for field in fields}
        ids = [i for i in (*ids, *sorted(rest)) if i not in self.locked]
        if ids:
            self.cur.execute(LOCK, (ids,))
            self.locked.update(ids)

    def _touch(self, key: str) -> None:
        """Lock a counter that was not locked up front (an operation that named none)."""
        if lock_id("c", self.ns, key) not in self.locked:
            self.lock(None, (key,))

    # -- the engine's Tx ----------------------------------------------------------------------------

    def counter(self, slot: Slot, now: int) -> tuple[int, int]:
        found = self.rows.get(slot.key)
        if found is None:
            self._touch(slot.key)
            params = {"ns": self.ns, "kh": digest(slot.key), "now": now, "fh": digest(slot.field)}
            spent, held, _, limit, stale = self.cur.execute(_READ, params).fetchone()
            found = self.rows[slot.key] = (0, 0) if spent is None else (spent, held)
            self.limits[slot.field] = limit
            if stale:
                self.stale.add(slot.key)
        return found

    def put_counter(self, key: str, spent: int, held: int, expires_at: int | None, label: str) -> None:
        self._touch(key)
        self.rows[key] = (spent, held)
        row = (self.ns, digest(key), key, spent, held, expires_at, _label_json(label))
        self.cur.execute(_PUT_COUNTER, row)

    def hold(self, res_id: str, lease_ends: int, holds: Sequence[tuple[Slot, int]]) -> None:
        for slot, amount in holds:
            spent, held = self.counter(slot, self.now)  # (read by live)
            self.put_counter(slot.key, spent, held + amount, slot.expires, slot.label)
            lease = (self.ns, digest(slot.key), slot.key, lease_ends, digest(res_id), res_id, amount)
            self.cur.execute(_ADD_LEASE, lease)

    def settle(self, slot: Slot, res_id: str, charge: int, lease_ends: int) -> tuple[int, bool]:
        spent, held = self.counter(slot, self.now)  # (read by live)
        lease = (self.ns, digest(slot.key), lease_ends, digest(res_id))
        row = self.cur.execute(_POP_LEASE, lease).fetchone()
        after = held if row is None else held - row[0]
        self.put_counter(slot.key, spent + charge, after, slot.expires, slot.label)
        return spent + charge, row is not None

    def live(self, slot: Slot, now: int) -> tuple[int, int, Sequence[tuple[str, int]]]:
        spent, held = self.counter(slot, now)
        return spent, held, self._pop_expired(slot.key, now) if slot.key in self.stale else ()

    def _pop_expired(self, key: str, now: int) -> list[tuple[str, int]]:
        """Remove the counter's expired leases (read with it: ``stale``); their (res_id, amount)."""
        self.stale.discard(key)
        return [(r[0], r[1]) for r in self.cur.execute(_POP_EXPIRED, (self.ns, digest(key), now))]

    def record(self, res_id: str) -> dict[str, Any] | None:
        if res_id in self.records:  # (read when the store locked it)
            return self.records[res_id]
        row = self.cur.execute(_RECORD, (self.ns, digest(res_id))).fetchone()
        found = self.records[res_id] = None if row is None else _record_of(row[0])
        return found

    def put_record(self, res_id: str, record: dict[str, Any], expires_at: int) -> None:
        self.records[res_id] = record
        self.cur.execute(_PUT_RECORD, (self.ns, digest(res_id), res_id, _record_text(record), expires_at))

    def put_resolved(
        self, res_id: str, held: Mapping[str, Any], state: str, charged: dict[str, int], overrun: bool,
        expired: bool, spent: tuple[int, ...], expires_at: int,
    ) -> None:  # fmt: skip
        record = resolved_record(held, state, charged, overrun, expired, spent)
        self.put_record(res_id, record, expires_at)

    def limit(self, field: str) -> int | None:
        if field in self.limits:  # (read with its counter)
            return self.limits[field]
        row = self.cur.execute(_LIMIT, (self.ns, digest(field))).fetchone()
        return None if row is None else int(row[0])

    def put_limit(self, field: str, value: int | None) -> None:
        self.limits.pop(field, None)
        if value is None:
            self.cur.execute(_CLEAR_LIMIT, (self.ns, digest(field)))
        else:
            self.cur.execute(_PUT_LIMIT, (self.ns, digest(field), field, value))

    def journal(
        self, ts: int, event: str, res_id: str, scopes: Sequence[str], amounts: Meta, data: Meta
    ) -> None:
        row = journal_row(ts, event, res_id, scopes, amounts, data)
        if any(type(v) is str and "\0" in v for v in row[6:]):  # (a text PostgreSQL cannot hold)
            row = (*row[:6], *ODD_ROW)  # (its JSON, which escapes it, is read in Python instead)
        self.cur.execute(_JOURNAL, (self.ns, *row))


@memo("ledger.postgres.labels", 4096)
def _label_json(label: str) -> str:
    """A counter's label as its row keeps it: JSON (a scope id may hold a NUL, which text cannot)."""
    return json.dumps(label)


UNBOUNDED = "SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0"
"""A reader's transaction (a report, an export): no operation's deadline (it holds no lock; its reader
may take its time)."""

"""``memory://``: the ledger in this process's memory. Thread-safe; state is lost at exit.

What it keeps by the hundred thousand (resolved and refused records, journal entries) it keeps as flat
tuples of atomic values (str, int, bool, None, bytes), which CPython's garbage collector untracks: a
full collection does not walk them (``benchmarks/bench_gc.py``). Only held records (live leases) keep
the engine's objects.
"""

from __future__ import annotations

import copy
import heapq
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar

from ._base import check_setting
from ._engine import NoShortcuts, Slot, resolved_record
from ._expiry import expired
from ._local import LocalLedger, wall_clock_ms
from ._meta import expand
from ._stored import pack_held, pack_refusal, unpack_held, unpack_refusal
from ._types import JournalEntry

Meta = dict[str, Any]
R = TypeVar("R")

__all__ = ["MemoryLedger"]

JOURNAL_MAXLEN = 100_000
"""The journal keeps the newest this many entries (``journal_complete_since`` says when it dropped some)."""
MAX_RECORDS = 100_000
"""Resolved reservations kept for idempotent repeats (at most ``RECORD_RETENTION_MS`` after their
lease): the newest this many, so that a long-running process does not grow without bound (about 1 KB
each)."""


_COMPACT_AT = 1024
"""A counter's lease heap is cleaned lazily (a resolved lease stays in it until its end), and rebuilt
from its live leases once it holds this many more than twice as many entries: a busy counter's heap
stays about as long as its live leases (a collection walks every entry of it)."""


@dataclass
class _Counter:
    spent: int = 0
    held: int = 0
    expires_at: int | None = None
    leases: dict[str, tuple[int, int]] = field(default_factory=dict)  # res_id -> (expires_at, amount)
    heap: list[tuple[int, str]] = field(default_factory=list)  # (expires_at, res_id), lazily cleaned


class _MemoryTx(NoShortcuts):
    def __init__(self, store: MemoryLedger) -> None:
        self.s = store
        self.counters = store._counters
        self.records, self.record_ends, self.record_heap = (
            store._records,
            store._record_ends,
            store._record_expiry,
        )
        self.limit: Callable[[str], int | None] = store._limits.get
        self.entries = store._entries

    def _c(self, key: str) -> _Counter:
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = _Counter()
        return counter

    def counter(self, slot: Slot, now: int) -> tuple[int, int]:
        c = self.counters.get(slot.key)
        return (0, 0) if c is None else (c.spent, c.held)

    def put_counter(self, key: str, spent: int, held: int, expires_at: int | None, label: str) -> None:
        c = self._c(key)
        c.spent, c.held = spent, held
        if expires_at is not None:
            c.expires_at = expires_at

    # (``live``, ``limit`` and ``settle`` are dict operations here: no shortcuts, ``NoShortcuts``)

    def hold(self, res_id: str, lease_ends: int, holds: Sequence[tuple[Slot, int]]) -> None:
        counters = self.counters
        for slot, amount in holds:
            c = counters.get(slot.key) or self._c(slot.key)
            c.held += amount
            if slot.expires is not None:
                c.expires_at = slot.expires
            c.leases[res_id] = (lease_ends, amount)
            heapq.heappush(c.heap, (lease_ends, res_id))

    def settle(self, slot: Slot, res_id: str, charge: int, lease_ends: int) -> tuple[int, bool]:
        c = self.counters.get(slot.key) or self._c(slot.key)
        leases = c.leases
        lease = leases.pop(res_id, None)
        if lease is not None:
            c.held -= lease[1]
            if len(c.heap) > 2 * len(leases) + _COMPACT_AT:  # mostly resolved leases: rebuilt from the live
                c.heap = [(ends, r) for r, (ends, _) in leases.items()]
                heapq.heapify(c.heap)
        c.spent += charge
        if slot.expires is not None:
            c.expires_at = slot.expires
        return c.spent, lease is not None

    def live(self, slot: Slot, now: int) -> tuple[int, int, Sequence[tuple[str, int]]]:
        c = self.counters.get(slot.key)
        if c is None:
            return 0, 0, ()
        heap = c.heap
        if not heap or heap[0][0] > now:  # (the next lease ends later: none is expired)
            return c.spent, c.held, ()
        out: list[tuple[str, int]] = []
        while heap and expired(heap[0][0], now):
            ends, res_id = heapq.heappop(heap)
            lease = c.leases.get(res_id)
            if lease is not None and lease[0] == ends:  # (else resolved: the heap is cleaned lazily)
                del c.leases[res_id]
                out.append((res_id, lease[1]))
        return c.spent, c.held, out

    def record(self, res_id: str) -> dict[str, Any] | None:
        found = self.records.get(res_id)
        if type(found) is tuple:
            return _unpack_record(found)
        return found  # type: ignore[return-value]  # (None or a held record's dict)

    def put_record(self, res_id: str, record: dict[str, Any], expires_at: int) -> None:
        # a held record as the engine made it (it never changes one: it puts a new one), an adjustment's
        # (``_admin``: a few, short-lived) too; a refusal packed
        self._put(res_id, record if record["state"] != "refused" else _pack_refused(record), expires_at)

    def put_resolved(
        self, res_id: str, held: Mapping[str, Any], state: str, charged: dict[str, int], overrun: bool,
        expired: bool, spent: tuple[int, ...], expires_at: int,
    ) -> None:  # fmt: skip
        flat = (*charged, *charged.values()) if len(charged) == 1 else _flat(charged)
        packed = (
            state,
            held["created"],
            held["expires"],
            pack_held(held["held"]),
            flat,
            overrun,
            expired,
            spent,
        )
        self._put(res_id, packed, expires_at)

    def _put(self, res_id: str, record: dict[str, Any] | tuple[Any, ...], expires_at: int) -> None:
        if res_id not in self.records:  # a record's expiry only moves later: _prune re-queues it then
            heapq.heappush(self.record_heap, (expires_at, res_id))
        self.records[res_id] = record
        self.record_ends[res_id] = expires_at

    def put_limit(self, field: str, value: int | None) -> None:
        if value is None:
            self.s._limits.pop(field, None)
        else:
            self.s._limits[field] = value

    def journal(
        self, ts: int, event: str, res_id: str, scopes: Sequence[str], amounts: Meta, data: Meta
    ) -> None:
        # a flat tuple of atomic values (the entry is built when read); the deque drops the oldest
        # past its maxlen
        entries = self.entries
        if len(entries) == entries.maxlen:  # the oldest goes: the journal is complete after it
            self.s._dropped_ts = entries[0][0]
        packed = (*amounts, *amounts.values()) if len(amounts) == 1 else _flat(amounts)
        entries.append((ts, event, res_id, tuple(scopes), packed, _pack_data(data) if data else None))


class MemoryLedger(LocalLedger):
    """In-process store: dicts under one lock. Use it for tests and single-process tools."""

    def __init__(
        self,
        *,
        namespace: str = "default",
        clock: Callable[[], int] = wall_clock_ms,
        journal_maxlen: int = JOURNAL_MAXLEN,
        max_records: int = MAX_RECORDS,
    ) -> None:
        super().__init__(namespace=namespace, url="memory://", clock=clock)
        self.journal_maxlen = check_setting(journal_maxlen, "journal_maxlen")
        self.max_records = max_records
        self._lock = threading.Lock()
        self._counters: dict[str, _Counter] = {}
        self._records: dict[str, dict[str, Any] | tuple[Any, ...]] = {}  # held: a dict; else packed
        self._record_ends: dict[str, int] = {}  # res_id -> when its record expires
        self._record_expiry: list[tuple[int, str]] = []  # (expires_at, res_id), a heap: pruning is cheap
        self._limits: dict[str, int] = {}
        self._entries: deque[tuple[Any, ...]] = deque(maxlen=journal_maxlen)
        self._dropped_ts: int | None = None  # the time of the newest entry the journal dropped
        self._ops = 0
        self._tx = _MemoryTx(self)

    def _atomic(self, op: Callable[..., R], *args: Any) -> R:
        # The engine validates every input before its first write, so an operation that raises leaves
        # the state as it was: the lock is the whole transaction. Every 1,024th operation prunes.
        with self._lock:
            now = time.time_ns() // 1_000_000 if self._clock is wall_clock_ms else self._clock()  # (inline)
            result = op(self._tx, now, *args)
            self._ops += 1
            if self._ops % 1024 == 0:
                self._prune(now)
        return result

    def _prune(self, now: int) -> None:
        records, ends, expiry = self._records, self._record_ends, self._record_expiry
        while expiry and expired(expiry[0][0], now):
            _, res_id = heapq.heappop(expiry)
            end = ends.get(res_id)
            if end is None:
                continue
            if expired(end, now):
                del records[res_id], ends[res_id]
            else:  # put again since, with a later expiry
                heapq.heappush(expiry, (end, res_id))
        if len(records) > self.max_records:
            self._forget_oldest(len(records) - self.max_records)
        counters = self._counters
        for key in [
            k for k, c in counters.items() if c.expires_at is not None and expired(c.expires_at, now)
        ]:
            del counters[key]

    def _forget_oldest(self, count: int) -> None:
        """Drop ``count`` resolved (or refused) records, the soonest to expire first: a repeat of one of
        them is then an unknown reservation. Held ones stay: their leases are live."""
        records, expiry = self._records, self._record_expiry
        live: list[tuple[int, str]] = []
        while count and expiry:
            entry = heapq.heappop(expiry)
            found = records.get(entry[1])
            if found is None:
                continue
            if type(found) is dict:  # held
                live.append(entry)
            else:
                del records[entry[1]], self._record_ends[entry[1]]
                count -= 1
        for entry in live:
            heapq.heappush(expiry, entry)

    def _journal(
        self, since: int | None, until: int | None, scope: str | None, limit: int | None
    ) -> Iterator[JournalEntry]:
        with self._lock:
            entries = list(self._entries)
        for ts, event, res_id, scopes, amounts, data in entries:
            if (since is None or ts >= since) and (until is None or ts < until):
                # new objects: what a reader does with an entry never rewrites the journal
                parsed = _unflat(amounts)  # (data: the guard's compact form, _meta, expanded)
                yield JournalEntry(
                    ts, event, res_id, scopes, parsed, expand(_unpack_data(data), scopes, parsed, tuple)
                )

    def _complete_since_ms(self) -> int | None:
        dropped = self._dropped_ts
        return None if dropped is None else dropped + 1


# -- packed forms: flat tuples of atomic values (what the garbage collector untracks) -----------------


def _pack_refused(record: dict[str, Any]) -> tuple[Any, ...]:
    """A refused record (the engine's dict) as a flat tuple (``put_resolved`` packs a resolved one);
    ``_unpack_record`` reverses both."""
    assert record["state"] == "refused", "the engine puts held and refused records"
    return ("refused", pack_refusal(record["refusal"]))


def _unpack_record(packed: tuple[Any, ...]) -> dict[str, Any]:
    state = packed[0]
    if state == "refused":
        return {"state": state, "refusal": unpack_refusal(packed[1])}
    _, created, expires, held, charged, overrun, expired_, spent = packed
    record = {"created": created, "expires": expires, "held": unpack_held(held)}
    return resolved_record(record, state, _unflat(charged), overrun, expired_, spent)


def _flat(mapping: Meta) -> tuple[Any, ...]:
    """``{k1: v1, k2: v2, ...}`` as ``(k1, v1, k2, v2, ...)``."""
    return tuple(chain.from_iterable(mapping.items()))


def _unflat(flat: tuple[Any, ...]) -> dict[str, Any]:
    """``(k1, v1, k2, v2, ...)`` as ``{k1: v1, k2: v2, ...}``."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _pack_data(data: Meta) -> bytes | dict[str, Any]:
    """Journal data (JSON values, tuples kept as tuples) as one bytes object; a copy of the dict when
    pickle cannot take a value that JSON can (an instance of a class defined in a function): the entry
    is written after the counters, so packing it must not fail."""
    try:
        return pickle.dumps(data, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return copy.deepcopy(dict(data))


def _unpack_data(packed: bytes | dict[str, Any] | None) -> Meta:
    if packed is None:
        return {}
    if isinstance(packed, dict):  # (a reader may change what it gets: the journal keeps its own copy)
        return copy.deepcopy(packed)
    data: Meta = pickle.loads(packed)
    return data

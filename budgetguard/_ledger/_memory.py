"""``memory://``: the ledger in this process's memory. Thread-safe; state is lost at exit."""

from __future__ import annotations

import copy
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._budgets import Unit
from .._money import INT64_MAX
from ._base import check_setting
from ._engine import COUNTER_RETENTION_MS, Tx, counter_key, window_cached
from ._local import LocalLedger, wall_clock_ms
from ._types import HeldCounter, Hold, JournalEntry, Outcome, Refusal, Reservation

Meta = dict[str, Any]
R = TypeVar("R")

__all__ = ["MemoryLedger"]

JOURNAL_MAXLEN = 100_000
"""The journal keeps the newest this many entries (``journal_complete_since`` says when it dropped some)."""
MAX_RECORDS = 100_000
"""Resolved reservations kept for idempotent repeats (at most a day): the newest this many, so that a
long-running process does not grow without bound (about 1 KB each)."""


@dataclass
class _Counter:
    spent: int = 0
    held: int = 0
    expires_at: int | None = None
    leases: dict[str, tuple[int, int]] = field(default_factory=dict)  # res_id -> (expires_at, amount)
    heap: list[tuple[int, str]] = field(default_factory=list)  # (expires_at, res_id), lazily cleaned

    def settled(self, now: int) -> bool:
        """No expired lease waits to be reclaimed (drops the heap entries of resolved leases)."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            expires_at, res_id = heap[0]
            lease = self.leases.get(res_id)
            if lease is not None and lease[0] == expires_at:
                return False
            heapq.heappop(heap)
        return True


class _MemoryTx:
    def __init__(self, store: MemoryLedger) -> None:
        self.s = store

    def _c(self, key: str) -> _Counter:
        counter = self.s._counters.get(key)
        if counter is None:
            counter = self.s._counters[key] = _Counter()
        return counter

    def counter(self, key: str) -> tuple[int, int]:
        c = self.s._counters.get(key)
        return (0, 0) if c is None else (c.spent, c.held)

    def put_counter(self, key: str, spent: int, held: int, expires_at: int | None, label: str) -> None:
        c = self._c(key)
        c.spent, c.held = spent, held
        if expires_at is not None:
            c.expires_at = expires_at

    def add_lease(self, key: str, res_id: str, expires_at: int, amount: int) -> None:
        c = self._c(key)
        c.leases[res_id] = (expires_at, amount)
        heapq.heappush(c.heap, (expires_at, res_id))

    def pop_expired(self, key: str, now: int) -> list[tuple[str, int]]:
        c = self.s._counters.get(key)
        out: list[tuple[str, int]] = []
        while c is not None and c.heap and c.heap[0][0] <= now:
            expires_at, res_id = heapq.heappop(c.heap)
            lease = c.leases.get(res_id)
            if lease is not None and lease[0] == expires_at:
                del c.leases[res_id]
                out.append((res_id, lease[1]))
        return out

    def pop_lease(self, key: str, res_id: str) -> int | None:
        c = self.s._counters.get(key)
        lease = None if c is None else c.leases.pop(res_id, None)
        return None if lease is None else lease[1]

    def record(self, res_id: str) -> dict[str, Any] | None:
        found = self.s._records.get(res_id)  # the engine never changes a record: it puts a new one
        return None if found is None else found[0]

    def put_record(self, res_id: str, record: dict[str, Any], expires_at: int) -> None:
        records = self.s._records
        if res_id not in records:  # a record's expiry only moves later: _prune re-queues it then
            heapq.heappush(self.s._record_expiry, (expires_at, res_id))
        records[res_id] = (record, expires_at)

    def limit(self, field: str) -> int | None:
        return self.s._limits.get(field)

    def put_limit(self, field: str, value: int | None) -> None:
        if value is None:
            self.s._limits.pop(field, None)
        else:
            self.s._limits[field] = value

    def journal(
        self,
        ts: int,
        event: str,
        res_id: str,
        scopes: Sequence[str],
        amounts: dict[str, int],
        data: dict[str, Any],
    ) -> None:
        # a plain tuple (the entry is built when read, with copies); the deque drops the oldest past
        # its maxlen. The engine hands over new objects and never changes them: no copies here.
        entries = self.s._entries
        if len(entries) == entries.maxlen:  # the oldest goes: the journal is complete after it
            self.s._dropped_ts = entries[0][0]
        entries.append((ts, event, res_id, tuple(scopes), amounts, data))


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
        self._records: dict[str, tuple[dict[str, Any], int]] = {}
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

    # The common cases, specialised: a new reservation that every counter admits, and the resolution
    # of a live one, with no expired lease to reclaim. They make the engine's very writes (the
    # records are the engine's), so the engine handles everything else, repeats included, the same.

    def _reserve(
        self, tx: Tx, now: int, res_id: str, holds: tuple[Hold, ...], lease_ms: int, meta: Meta, enforce: bool
    ) -> Reservation | Refusal:
        if res_id in self._records:
            return self._engine.reserve(tx, now, res_id, holds, lease_ms, meta, enforce)
        counters, limits = self._counters, self._limits
        plan = []
        for hold in holds:
            spec = hold.counter
            window = window_cached(spec, now)
            key = counter_key(spec, window.start)
            c = counters.get(key)
            limit = limits.get(spec.limit_field, spec.limit)
            if c is None:
                c = _Counter()
            elif (c.heap and c.heap[0][0] <= now and not c.settled(now)) or (
                enforce and c.spent + c.held + hold.amount > limit
            ):
                return self._engine.reserve(tx, now, res_id, holds, lease_ms, meta, enforce)
            if enforce and hold.amount > limit:
                return self._engine.reserve(tx, now, res_id, holds, lease_ms, meta, enforce)
            plan.append((hold.amount, spec, window, key, c, limit))
        expires = now + lease_ms
        held = []
        for amount, spec, window, key, c, limit in plan:
            counters[key] = c
            c.held += amount
            if window.end is not None:
                c.expires_at = window.end + COUNTER_RETENTION_MS
            c.leases[res_id] = (expires, amount)
            heapq.heappush(c.heap, (expires, res_id))
            held.append(HeldCounter(spec, window.start, window.end, amount, limit))
        return self._engine.held(tx, res_id, tuple(held), now, expires, meta)

    def _resolve(
        self, tx: Tx, now: int, res_id: str, actual: Mapping[Unit, int] | None, meta: Meta
    ) -> Outcome:
        found = self._records.get(res_id)
        if found is None or found[0]["state"] != "held":
            return self._engine.resolve(tx, now, res_id, actual, meta)
        record = found[0]
        rows = []
        for h in record["held"]:
            c = self._counters.get(counter_key(h.counter, h.window_start))
            charge = 0 if actual is None else actual.get(h.counter.unit)
            if (
                c is None
                or charge is None
                or res_id not in c.leases
                or (c.heap and c.heap[0][0] <= now and not c.settled(now))
                or c.spent + charge > INT64_MAX
            ):
                return self._engine.resolve(tx, now, res_id, actual, meta)
            rows.append((c, charge, charge > h.amount))
        after = []
        overrun = False
        for c, charge, over in rows:
            c.held -= c.leases.pop(res_id)[1]
            c.spent += charge
            after.append(c.spent)
            overrun = overrun or over
        return self._engine.resolved(tx, now, res_id, record, actual, meta, overrun, False, tuple(after))

    def _prune(self, now: int) -> None:
        records, expiry = self._records, self._record_expiry
        while expiry and expiry[0][0] <= now:
            _, res_id = heapq.heappop(expiry)
            found = records.get(res_id)
            if found is None:
                continue
            if found[1] <= now:
                del records[res_id]
            else:  # put again since, with a later expiry
                heapq.heappush(expiry, (found[1], res_id))
        if len(records) > self.max_records:
            self._forget_oldest(len(records) - self.max_records)
        for key in [k for k, c in self._counters.items() if c.expires_at is not None and c.expires_at <= now]:
            del self._counters[key]

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
            if found[0]["state"] == "held":
                live.append(entry)
            else:
                del records[entry[1]]
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
                # copies: what a reader does with an entry never rewrites the journal
                yield JournalEntry(ts, event, res_id, scopes, dict(amounts), copy.deepcopy(data))

    def _journal_complete_since(self) -> int | None:
        dropped = self._dropped_ts
        return None if dropped is None else dropped + 1

"""The Redis ledger's operations as I/O-free flows: generators that yield the server calls they need.

The logic is written once; a ~10-line sync and async driver (``_redis.py``) performs the calls (the
httpx ``auth_flow`` pattern). Inputs are validated before the first call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Mapping
from typing import Any, NamedTuple

from .._budgets import Unit, Window
from .._cache import Bounded
from .._errors import LedgerError
from .._frozen import fast_new
from ._base import JournalQuery, ReservationRef
from ._expiry import RECORD_RETENTION_MS, window_at
from ._meta import trimmable
from ._redis_names import Names
from ._redis_wire import (
    XRANGE_BATCH,
    Call,
    CounterArgs,
    Keys,
    amounts_json,
    complete_since,
    journal_entry,
    label_json,
    scopes_json,
    server_time_outside,
    statuses,
)
from ._stored import decode_held
from ._types import (
    UNITS,
    Amounts,
    CounterSpec,
    Enforce,
    HeldCounter,
    Hold,
    JournalEntry,
    Outcome,
    Refusal,
    Reservation,
    check_actual,
    check_amount,
    check_reservation_id,
    check_reserve,
    unresolvable,
)

__all__ = ["Call", "Flow", "Flows"]


Flow = Generator[Call, Any, Any]

_new_call: Any = tuple.__new__
"""``_new_call(Call, (op, keys, args))``: a reserve's or commit's ``Call`` (all three fields) without the
named tuple's ``__new__`` frame and the class call."""
_new_held = fast_new(HeldCounter)
_new_reservation = fast_new(Reservation)
_new_outcome = fast_new(Outcome)
"""(The results of every reserve and commit, built without the class call's layers: ``_frozen``.)"""


class Flows:
    """The Redis ledger's logic, independent of sync or async I/O.

    A reserve (enforced, no rolling counter) and a commit first go to their FAST PATH script
    (``lua/_reserve_fast.lua``, ``lua/_commit_fast.lua``): the usual case in fewer commands, the same
    writes. It answers ``G`` having written nothing when anything is unusual, and the same call then goes
    to the GENERAL PATH (``reserve``, ``commit``), which handles every case."""

    fast = True
    """Whether reserves and commits try their fast path first (``False``: the general path only, as a
    client before it did; the two mix on one namespace)."""

    _issued: object = object()
    """The id of the latest reservation a reserve returned (checked, or made, by ``check_reserve``): the
    usual commit's, whose id then needs no check again (any other id is checked; a str is immutable,
    and another thread's reserve at most costs a check). Before any, an object no caller has: not
    ``None`` nor ``""``, which a hand-made ``Reservation`` may carry and must get the id's error for."""

    def __init__(self, namespace: str, journal_maxlen: int) -> None:
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.journal_maxlen = journal_maxlen
        self.names = Names(self.keys.names)
        self._slots: Bounded[tuple[str, int, int], CounterArgs] = Bounded(
            "ledger.redis.slots", 10_000, shared=False
        )
        self._plans: Bounded[tuple[tuple[str, int], ...], Plan] = Bounded(
            "ledger.redis.plans", 10_000, shared=False
        )

    def checked_reserve(self, *args: Any) -> Flow:
        """Check a reserve's arguments (``Ledger.reserve``'s, in order) now, before any I/O; its flow."""
        checked, lease_ms, res_id, meta, enforce = check_reserve(*args)
        text = self.names.known(meta)
        if text is None:  # a call name to intern first
            return self._reserve_named(checked, lease_ms, res_id, meta, enforce)
        return self.reserve(checked, lease_ms, res_id, text, enforce)

    def _reserve_named(
        self, holds: tuple[Hold, ...], lease_ms: int, res_id: str, meta: Mapping[str, Any] | None,
        enforce: Enforce,
    ) -> Flow:  # fmt: skip
        """``reserve``, its meta's call name interned first (``_redis_names``)."""
        text = yield from self.names.meta_json(meta)
        return (yield from self.reserve(holds, lease_ms, res_id, text, enforce))

    def slot(self, counter: CounterSpec, window: Window | HeldCounter) -> CounterArgs:
        start, end = (window.start, window.end) if isinstance(window, Window) else (
            window.window_start, window.window_end)  # fmt: skip
        key = (counter.limit_field, counter.limit, start)
        found = self._slots.get(key)
        return self._slots.put(key, CounterArgs(self.keys, counter, start, end)) if found is None else found

    def plan(self, holds: tuple[Hold, ...], now: int) -> Plan:
        """The reserve's parts that depend only on the holds' counters and their windows at ``now``:
        made once, reused while ``now`` stays in every one of those windows."""
        if len(holds) == 1:
            counter = holds[0].counter
            key: tuple[tuple[str, int], ...] = ((counter.limit_field, counter.limit),)
        else:
            key = tuple([(h.counter.limit_field, h.counter.limit) for h in holds])
        found = self._plans.get(key)
        if found is not None and found.since <= now < found.until:
            return found
        windows = tuple([window_at(h.counter, now) for h in holds])
        slots = [self.slot(h.counter, w) for h, w in zip(holds, windows, strict=True)]
        keys: list[str] = [self.keys.limits, self.keys.journal]
        earlier: list[str] = []  # the earlier buckets of rolling counters, after the holds' keys
        counts = ""  # per rolling counter 'i:n,': its earlier buckets
        for i, slot in enumerate(slots, 1):
            keys += slot.keys
            if slot.prior:
                counts = f"{counts}{i}:{len(slot.prior) // 2},"
                earlier += slot.prior
        since = max(w.start for w in windows)
        until = min((w.end for w in windows if w.end is not None), default=_NEVER)
        parts = [
            (s.held_json, f",{h.counter.limit}]", s.reserve_arg) for h, s in zip(holds, slots, strict=True)
        ]
        found = Plan(since, until, windows, (*keys, *earlier), counts, tuple(parts))
        return self._plans.put(key, found)

    def reserve(
        self, holds: tuple[Hold, ...], lease_ms: int, res_id: str, meta: str, enforce: Enforce
    ) -> Flow:
        now = time.time_ns() // 1_000_000  # a guess: the script checks it against the server's TIME
        mode = _mode(holds, enforce)
        record = self.keys.record(res_id)
        for _ in range(3):
            plan = self.plan(holds, now)
            windows = plan.windows
            if len(holds) == 1:
                amount = holds[0].amount
                held_json, limit, tail = plan.parts[0]
                packed = f"[{held_json}{amount}{limit}]"
                per_hold: tuple[str, ...] = (f"{amount}{tail}",)
            else:
                pairs = list(zip(holds, plan.parts, strict=True))
                packed = "[" + ",".join([f"{j}{h.amount}{lim}" for h, (j, lim, _) in pairs]) + "]"
                per_hold = tuple([f"{h.amount}{t}" for h, (_, _, t) in pairs])
            keys = (record, *plan.keys)
            args: tuple[str | int, ...] = (
                res_id, lease_ms, RECORD_RETENTION_MS, self.journal_maxlen, meta, packed, mode, plan.earlier,
                *per_hold,
            )  # fmt: skip
            if self.fast and mode == "1" and not plan.earlier:  # (rolling, shadow, off: the general path)
                reply = yield _new_call(Call, ("reserve_fast", keys, args))
                if reply[0] == "G":  # unusual (nothing written): the general path, the same call
                    reply = yield _new_call(Call, ("reserve", keys, args))
            else:
                reply = yield _new_call(Call, ("reserve", keys, args))
            server_now = server_time_outside(reply)
            if server_now is not None:
                now = server_now
                continue
            if reply[0] == "REFUSED":
                index, end = int(reply[1]), reply[6]
                refused = decode_held(reply[8])[index].counter  # as the first call with this id named it
                refusal = Refusal(index, int(reply[2]), int(reply[3]), int(reply[4]), int(reply[5]),
                                  int(end) if end else None, refused)  # fmt: skip
                raise refusal.error(holds)
            limits = list(map(int, reply[3].split(",")))
            if reply[4] == "1":  # a repeat returns the first call's holds
                held = tuple(
                    HeldCounter(h.counter, h.window_start, h.window_end, h.amount, limit)
                    for h, limit in zip(decode_held(reply[5]), limits, strict=True)
                )
            elif len(holds) == 1 == len(limits):
                hold, window = holds[0], windows[0]
                held = (_new_held(hold.counter, window.start, window.end, hold.amount, limits[0]),)
            else:
                held = tuple(
                    [
                        _new_held(h.counter, w.start, w.end, h.amount, limit)
                        for h, w, limit in zip(holds, windows, limits, strict=True)
                    ]
                )
            if len(reply) > 5 and reply[4] == "0":  # admitted in shadow past a limit
                index, limit, spent, now_held, asked, end = reply[5].split(" ")
                shadowed = Refusal(int(index), int(limit), int(spent), int(now_held), int(asked),
                                   int(end) if end else None, holds[int(index)].counter)  # fmt: skip
                return Reservation(res_id, held, int(reply[1]), int(reply[2]), False, shadowed)
            self._issued = res_id
            return _new_reservation(res_id, held, int(reply[1]), int(reply[2]), reply[4] == "1", None)
        raise _clock_moving()

    def _held(self, ref: ReservationRef) -> Flow:
        if isinstance(ref, Reservation):
            return ref.held
        res_id = check_reservation_id(ref)
        reply = yield Call("record", (self.keys.record(res_id),))
        if not reply:
            raise unresolvable(res_id)
        if reply[0] == "refused":
            raise unresolvable(res_id, refused=True)
        return decode_held(reply[1])

    def resolve(self, ref: ReservationRef, actual: Amounts | None, meta: str, usage: Any = None) -> Flow:
        """Commit ``actual`` (release when None); ``usage``: the meta's compact usage, whose commit on
        USD alone journals its USD amount only (``_meta.trimmable``)."""
        given = ref.id if isinstance(ref, Reservation) else ref
        res_id = given if given is self._issued else check_reservation_id(given)
        held: tuple[HeldCounter, ...] = (
            ref.held if isinstance(ref, Reservation) else (yield from self._held(ref))
        )
        parsed = None if actual is None else check_actual(actual, held)
        op = "release" if parsed is None else "commit"
        amounts = {h.counter.unit: h.amount for h in held} if parsed is None else parsed
        if (
            usage is not None and parsed is not None and all(h.counter.unit is Unit.USD for h in held)
            and trimmable({unit.value: v for unit, v in parsed.items()}, usage)
        ):  # fmt: skip
            amounts = {Unit.USD: parsed[Unit.USD]}
        keys: list[str] = [self.keys.record(res_id), self.keys.journal]
        args: list[str | int] = [
            res_id, RECORD_RETENTION_MS, self.journal_maxlen, meta, scopes_json(held),
            amounts_json(amounts),
        ]  # fmt: skip
        for h in held:
            slot = self.slot(h.counter, h)
            keys += slot.keys
            args.append(slot.commit_arg if parsed is None else f"{parsed[h.counter.unit]}{slot.commit_arg}")
        fast = self.fast and parsed is not None  # (a release: the general path)
        sent = tuple(keys), tuple(args)
        reply = yield _new_call(Call, ("commit_fast" if fast else op, *sent))
        if fast and reply[0] == "G":  # unusual (nothing written): the general path, the same call
            reply = yield _new_call(Call, (op, *sent))
        if reply[0] == "UNKNOWN":
            raise unresolvable(res_id)
        if reply[0] == "REFUSED":
            raise unresolvable(res_id, refused=True)
        state, charged, overrun, expired = reply[1], reply[2], reply[3], reply[4]
        if parsed is not None and reply[0] == "DONE":
            charges: Mapping[Unit, int] = parsed  # what the script charged: ours
        else:
            charges = {UNITS[k]: int(v) for k, v in json.loads(charged or "{}").items()}
            if parsed is not None and amounts is not parsed and charges == amounts:
                charges = parsed  # a repeat of this very commit (journaled trimmed): its tokens and requests
        return _new_outcome(
            res_id,
            state,
            charges,
            overrun == "1",
            expired == "1",
            reply[0] == "DUP",
            tuple(map(int, reply[5:])),  # a repeat's too: the record keeps them
        )

    def status(self, counters: list[CounterSpec]) -> Flow:
        now = time.time_ns() // 1_000_000
        for _ in range(3):
            windows = [window_at(c, now) for c in counters]
            keys: list[str] = [self.keys.limits, self.keys.journal]
            args: list[str | int] = [self.journal_maxlen, 0]
            read: list[int] = []  # per counter read, the counter asked it is part of
            for i, (counter, window) in enumerate(zip(counters, windows, strict=True)):
                earlier = self.slot(counter, window).prior  # a rolling counter's earlier buckets
                bucket_keys = [*self.keys.counter(counter, window.start), *earlier]
                keys += bucket_keys
                for _ in range(len(bucket_keys) // 2):  # (each bucket checked against the current one)
                    args += [
                        counter.limit, self.keys.limit_field(counter), window.start,
                        "" if window.end is None else window.end, label_json(counter), counter.unit.value,
                    ]  # fmt: skip
                    read.append(i)
            args[1] = len(read)
            reply = yield Call("status", tuple(keys), tuple(args))
            server_now = server_time_outside(reply)
            if server_now is not None:
                now = server_now
                continue
            return statuses(reply, counters, windows, read)
        raise _clock_moving()

    def set_limit(self, counter: CounterSpec, limit: int | None) -> Flow:
        value = "" if limit is None else check_amount(limit, "limit")
        yield Call("set_limit", (self.keys.limits,), (self.keys.limit_field(counter), value))

    def history(self, query: JournalQuery) -> Flow:
        start = "-" if query.since is None else str(query.since)
        end = "+" if query.until is None else f"({query.until}"
        out: list[JournalEntry] = []
        while True:
            batch = yield Call("xrange", (self.keys.journal,), (start, end))
            names = yield from self.names.learn(fields.get("data") or "" for _, fields in batch)
            entries = (journal_entry(fields, names) for _, fields in batch)
            if query.take(entries, out) or len(batch) < XRANGE_BATCH:
                return out
            start = "(" + batch[-1][0]

    def journal_complete_since(self) -> Flow:
        if not (yield Call("xlen", (self.keys.journal,))):  # no stream (XINFO would fail): nothing dropped
            return None
        info = yield Call("xinfo", (self.keys.journal,))
        return complete_since(info, self.journal_maxlen)


_NEVER = 2**63
"""Past any window's end (ms): a plan of total counters only is never stale."""


class Plan(NamedTuple):
    """A reserve's fixed parts for one tuple of counters (``Flows.plan``), valid for ``now`` in
    ``[since, until)``: the counters' windows, the keys after the record's, the earlier buckets'
    counts argument, and per hold its packed hold's text around the amount and its argument's tail."""

    since: int
    until: int
    windows: tuple[Window, ...]
    keys: tuple[str, ...]
    earlier: str
    parts: tuple[tuple[str, str, str], ...]


def _mode(holds: tuple[Hold, ...], enforce: Enforce) -> str:
    """The reserve script's enforce argument: one letter for every hold, or one per hold when some
    counters are checked in shadow and others not."""
    if enforce is False:
        return "0"
    if enforce == "shadow":
        return "s"
    for h in holds:  # (a loop, not any() of a generator: every reserve asks)
        if h.counter.shadow:
            break
    else:
        return "1"
    return "".join("s" if h.counter.shadow else "1" for h in holds)


def _clock_moving() -> LedgerError:
    return LedgerError("the Redis server's clock keeps moving across window boundaries; check its time")

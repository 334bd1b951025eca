"""The ledger contract in plain Python, over a small transactional storage interface (``Tx``).

The one Python implementation of the contract: the memory and SQLite stores (and any SQL store to
come) run it inside one lock / one ``BEGIN IMMEDIATE`` transaction, and only store what it says. The
Redis store runs the same steps in Lua (``lua/*.lua``); the shared contract and model tests hold both
to the same behaviour. Its time arithmetic is ``_expiry.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from .._budgets import Unit, Window
from .._cache import Bounded
from .._money import INT64_MAX
from ._expiry import (
    counter_expiry,
    in_window,
    lease_end,
    prior_windows,
    record_expiry,
    trailing_ms,
    window_at,
)
from ._types import (
    UNIT_TEXT,
    UNITS,
    CounterSpec,
    CounterStatus,
    Enforce,
    HeldCounter,
    Hold,
    Outcome,
    Refusal,
    Reservation,
    scope_labels,
    unresolvable,
)

Meta = dict[str, Any]

__all__ = [
    "BASE",
    "UNTIL",
    "Engine",
    "NoShortcuts",
    "Slot",
    "Tx",
    "counter_key",
    "end_raise",
    "live_limit",
    "resolved_record",
]

_SLOTS = 10_000
"""Counters whose slot an engine keeps (the counters recently used; a slot is ~300 bytes)."""


class Slot:
    """A counter in one window: its storage key, label and expiry (``Tx`` stores it under ``key``),
    derived once (counters repeat). A rolling counter's slot is its bucket holding now, and ``prior``
    the earlier buckets a check counts with it (``_expiry.prior_windows``; empty for a calendar one)."""

    __slots__ = ("end", "expires", "field", "key", "label", "prior", "start")

    def __init__(self, counter: CounterSpec, window: Window, prior: bool = True) -> None:
        self.start, self.end = window.start, window.end
        self.field = counter.limit_field
        self.key = counter_key(counter, window.start)
        self.label = counter.label
        counted = trailing_ms(counter) if counter.rolling else 0
        self.expires = counter_expiry(window.end, counted)
        self.prior: tuple[Slot, ...] = ()
        if counted and prior:
            self.prior = tuple(Slot(counter, w, prior=False) for w in prior_windows(counter, window))


def counter_key(counter: CounterSpec, window_start: int) -> str:
    return f"{counter.limit_field}@{window_start}"


class Tx(Protocol):
    """One atomic transaction on a store's state: storage only (what to store is the engine's)."""

    fast: bool
    """The store has the shortcuts ``admit`` and ``settle_all`` (else they are never called)."""

    def counter(self, slot: Slot, now: int) -> tuple[int, int]:
        """A counter's (spent, held); (0, 0) for one never written."""

    def put_counter(self, key: str, spent: int, held: int, expires_at: int | None, label: str) -> None:
        """Write a counter (``expires_at`` None keeps the one it has)."""

    def hold(self, res_id: str, lease_ends: int, holds: Sequence[tuple[Slot, int]]) -> None:
        """Add each (slot, amount) to its counter's held under ``res_id``'s lease (creating the counter,
        and setting its expiry to ``slot.expires`` unless that is None)."""

    def admit(
        self, res_id: str, now: int, lease_ends: int, holds: Sequence[Hold], slots: Sequence[Slot]
    ) -> bool:
        """A store's shortcut for the common reservation: when every counter's row exists, has no limit
        override and no expired lease to reclaim, and admits its hold under the engine's rule
        (``spent + held + amount <= limit``, the counter's code limit), ``hold`` them all and say
        True. Otherwise write nothing and say False: the engine reads each counter (``live``,
        ``limit``) and decides."""

    def settle_all(
        self, now: int, res_id: str, lease_ends: int, rows: Sequence[tuple[HeldCounter, Slot, int]]
    ) -> Sequence[int] | None:
        """A store's shortcut for ``settle`` on each (held counter, its slot, charge) of a resolution
        within its lease (``lease_ends`` after ``now``: else its leases are reclaimed first), whose
        leases are all there, none of whose
        counters has an expired lease to reclaim and whose spent stays within int64: the spent totals
        after. ``None`` (nothing written) from a store without it; a store that finds it cannot may
        also abort the transaction, to run the operation again without it."""

    def settle(self, slot: Slot, res_id: str, charge: int, lease_ends: int) -> tuple[int, bool]:
        """Drop ``res_id``'s lease (ending at ``lease_ends``) and its amount from the slot's counter's
        held, if the lease is there;
        add ``charge`` to spent; set its expiry as ``hold`` does (a late commit may find its counter
        dropped). Returns spent after, and whether the lease was there."""

    def live(self, slot: Slot, now: int) -> tuple[int, int, Sequence[tuple[str, int]]]:
        """A counter's (spent, held), and the (res_id, amount) of its leases that are ``expired`` at
        ``now``, which it removes (their amounts are still in held: the engine reclaims them). A
        ``limit(slot.field)`` may follow (a store can read both at once)."""

    def record(self, res_id: str) -> dict[str, Any] | None: ...
    def put_record(self, res_id: str, record: dict[str, Any], expires_at: int) -> None: ...

    def put_resolved(
        self, res_id: str, held: Mapping[str, Any], state: str, charged: dict[str, int], overrun: bool,
        expired: bool, spent: tuple[int, ...], expires_at: int,
    ) -> None:  # fmt: skip
        """Replace the ``held`` record of ``res_id`` with its resolution: ``resolved_record``'s fields
        (a store may keep them in another form, which its ``record`` turns back into that dict)."""

    def limit(self, field: str) -> int | None: ...
    def put_limit(self, field: str, value: int | None) -> None: ...
    def journal(self, ts: int, event: str, res_id: str, scopes: Sequence[str], amounts: dict[str, int],
                data: dict[str, Any]) -> None: ...  # fmt: skip


UNTIL, BASE = "~until", "~base"
"""A temporary raise of a counter's limit (``_admin``) is its run-time limit, with two entries beside it:
``<field>~until`` (when it ends) and ``<field>~base`` (the run-time limit it raised, if any)."""


def live_limit(tx: Tx, now: int, field: str, override: int) -> int | None:
    """The counter's run-time limit at ``now``, given its stored ``override``: a raised limit until the
    raise ends, then (written back here) the limit it raised. Called only for a counter with an
    override: one without pays nothing."""
    until = tx.limit(field + UNTIL)
    if until is None or now < until:
        return override
    base = tx.limit(field + BASE)
    tx.put_limit(field, base)
    end_raise(tx, field)
    return base


def end_raise(tx: Tx, field: str) -> None:
    """Forget a raise's entries (a limit set outright ends it)."""
    tx.put_limit(field + UNTIL, None)
    tx.put_limit(field + BASE, None)


class NoShortcuts:
    """A ``Tx``'s part for a store without the shortcuts (``fast`` False: the engine never calls them)."""

    fast = False

    def admit(
        self, res_id: str, now: int, lease_ends: int, holds: Sequence[Hold], slots: Sequence[Slot]
    ) -> bool:
        return False

    def settle_all(
        self, now: int, res_id: str, lease_ends: int, rows: Sequence[tuple[HeldCounter, Slot, int]]
    ) -> None:
        return None


class Engine:
    """The contract's steps over a ``Tx``. One per store: it keeps each recent counter's ``Slot``."""

    def __init__(self) -> None:
        self._slots: Bounded[str, Slot] = Bounded("ledger.slots", _SLOTS, shared=False)
        self._rolling = False
        """A rolling counter was seen: a reservation may need its earlier buckets (not the shortcut)."""

    def slot(self, counter: CounterSpec, now: int) -> Slot:
        """The counter in its window at ``now`` (``_admin``'s operations read it through this)."""
        return self._slot(counter, now)

    def _slot(self, counter: CounterSpec, now: int) -> Slot:
        """The counter in its window at ``now``."""
        slot = self._slots.get(counter.limit_field)
        if slot is None or not in_window(now, slot.start, slot.end):
            slot = self._slots.put(counter.limit_field, Slot(counter, window_at(counter, now)))
            self._rolling = self._rolling or bool(slot.prior)
        return slot

    def _held_slot(self, held: HeldCounter) -> Slot:
        """The counter in the window a reservation holds it in (an old one is not kept)."""
        slot = self._slots.get(held.counter.limit_field)
        if slot is not None and slot.start == held.window_start:
            return slot
        return Slot(held.counter, Window(held.window_start, held.window_end), prior=False)

    def _live(self, tx: Tx, slot: Slot, counter: CounterSpec, now: int) -> tuple[int, int]:
        """A counter's (spent, held) at ``now``, its expired leases reclaimed: a rolling counter's summed
        over its bucket and the earlier ones it counts (``Slot.prior``)."""
        spent, held, expired_leases = tx.live(slot, now)
        if expired_leases:
            held = self._reclaim(tx, slot, counter, now, spent, held, expired_leases)
        for earlier in slot.prior:
            more, more_held = self._live(tx, earlier, counter, now)
            spent, held = spent + more, held + more_held
        return spent, held

    @staticmethod
    def _reclaim(
        tx: Tx, slot: Slot, counter: CounterSpec, now: int, spent: int, held: int,
        expired: Sequence[tuple[str, int]],
    ) -> int:  # fmt: skip
        """Drop the holds of the counter's ``expired`` leases (a crashed worker leaks nothing); returns
        what it holds then."""
        for res_id, amount in expired:
            held -= amount
            tx.journal(now, "expired", res_id, [slot.label], {counter.unit.value: amount}, {})
        tx.put_counter(slot.key, spent, held, slot.expires, slot.label)
        return held

    # -- operations ----------------------------------------------------------------------------

    def reserve(
        self,
        tx: Tx,
        now: int,
        res_id: str,
        holds: Sequence[Hold],
        lease_ms: int,
        meta: dict[str, Any],
        enforce: Enforce = True,
        fresh: bool = False,
    ) -> Reservation | Refusal:
        """``fresh``: ``res_id`` was just drawn at random (96 bits), so no record has it: none is read.
        Every counter is checked by one rule unless ``enforce`` is False; a counter past its limit
        refuses the reservation, unless it is checked in shadow (``enforce="shadow"``, or its
        ``CounterSpec.shadow``): then the first such refusal is journaled (``shadow_refused``) and
        returned with the admitted reservation (``Reservation.shadowed``)."""
        record = None if fresh else tx.record(res_id)
        if record is not None:
            return self._repeat_reserve(res_id, record)
        expires = lease_end(now, lease_ms)
        shadowed: Refusal | None = None
        check = enforce is not False
        slots = [self._slot(hold.counter, now) for hold in holds] if check and tx.fast else None
        if self._rolling and slots is not None and any(s.prior for s in slots):
            slots = None  # (the shortcut reads one bucket of a rolling counter)
        if slots is not None and tx.admit(res_id, now, expires, holds, slots):  # (the code limits)
            admitted = tuple([HeldCounter(h.counter, s.start, s.end, h.amount, h.counter.limit)
                              for h, s in zip(holds, slots, strict=True)])  # fmt: skip
        else:
            plan: list[tuple[Slot, int]] = []
            held_counters: list[HeldCounter] = []
            cached = self._slots
            for hold in holds:
                counter = hold.counter
                slot = cached.get(counter.limit_field)  # (the hot path of _slot)
                if slot is None or not in_window(now, slot.start, slot.end):
                    slot = self._slot(counter, now)
                spent, held, expired_leases = tx.live(slot, now)  # (the hot path of _live: inline)
                if expired_leases:
                    held = self._reclaim(tx, slot, counter, now, spent, held, expired_leases)
                for earlier in slot.prior:  # a rolling counter: the whole trailing window
                    more, more_held = self._live(tx, earlier, counter, now)
                    spent, held = spent + more, held + more_held
                override = tx.limit(counter.limit_field)
                if override is not None:
                    override = live_limit(tx, now, counter.limit_field, override)
                limit = counter.limit if override is None else override
                if check and spent + held + hold.amount > limit:
                    refusal = Refusal(len(plan), limit, spent, held, hold.amount, slot.end, counter)
                    if enforce is True and not counter.shadow:
                        tx.put_record(
                            res_id, {"state": "refused", "refusal": refusal}, record_expiry(now, None)
                        )
                        return _journal_refusal(tx, now, "refused", res_id, refusal, meta)
                    if shadowed is None:
                        shadowed = refusal
                plan.append((slot, hold.amount))
                held_counters.append(HeldCounter(counter, slot.start, slot.end, hold.amount, limit))
            tx.hold(res_id, expires, plan)
            admitted = tuple(held_counters)
            if shadowed is not None:
                _journal_refusal(tx, now, "shadow_refused", res_id, shadowed, meta)
        stored = {"state": "held", "created": now, "expires": expires, "held": admitted, "meta": meta}
        tx.put_record(res_id, stored, record_expiry(now, expires))
        if shadowed is None:
            return Reservation(res_id, admitted, now, expires)
        return Reservation(res_id, admitted, now, expires, False, shadowed)

    @staticmethod
    def _repeat_reserve(res_id: str, record: dict[str, Any]) -> Reservation | Refusal:
        if record["state"] == "refused":
            refusal: Refusal = record["refusal"]
            return refusal
        return Reservation(res_id, record["held"], record["created"], record["expires"], duplicate=True)

    def resolve(
        self,
        tx: Tx,
        now: int,
        res_id: str,
        actual: Mapping[Unit, int] | None,
        meta: dict[str, Any],
    ) -> Outcome:
        """Commit (``actual`` given) or release (``actual`` None) a reservation, once."""
        record = tx.record(res_id)
        if record is None:
            raise unresolvable(res_id)
        state = record["state"]
        if state != "held":
            if state == "refused":
                raise unresolvable(res_id, refused=True)
            return _outcome(res_id, record["outcome"], duplicate=True)
        held_counters: tuple[HeldCounter, ...] = record["held"]
        cached = self._slots
        rows = []
        for h in held_counters:
            slot = cached.get(h.counter.limit_field)  # (the hot path of _held_slot)
            if slot is None or slot.start != h.window_start:
                slot = self._held_slot(h)
            charge = 0 if actual is None else actual.get(h.counter.unit)
            if charge is None:  # validate before the first write
                missing = {h.counter.unit for h in held_counters} - set(actual or ())
                raise ValueError(f"actual has no amount for {sorted(u.value for u in missing)}")
            rows.append((h, slot, charge))
        lease_ends: int = record["expires"]
        spent_after = tx.settle_all(now, res_id, lease_ends, rows) if tx.fast else None
        if spent_after is not None:
            overrun = any(charge > h.amount for h, _, charge in rows)
            return self._resolved(tx, now, res_id, record, actual, meta, overrun, False, tuple(spent_after))
        if actual is not None:
            for h, slot, charge in rows:
                if tx.counter(slot, now)[0] + charge > INT64_MAX:
                    raise ValueError(f"committing {charge} would overflow {h.counter.scope}")
        lost = False
        overrun = False
        after: list[int] = []
        for h, slot, charge in rows:
            spent, held, expired_leases = tx.live(slot, now)
            if expired_leases:
                self._reclaim(tx, slot, h.counter, now, spent, held, expired_leases)
            spent, had_lease = tx.settle(slot, res_id, charge, lease_ends)
            if not had_lease:
                lost = True
            if charge > h.amount:
                overrun = True
            after.append(spent)
        return self._resolved(tx, now, res_id, record, actual, meta, overrun, lost, tuple(after))

    @staticmethod
    def _resolved(
        tx: Tx,
        now: int,
        res_id: str,
        record: Mapping[str, Any],
        actual: Mapping[Unit, int] | None,
        meta: Meta,
        overrun: bool,
        expired: bool,
        after: tuple[int, ...],
    ) -> Outcome:
        """Store a resolution (the counters are updated already), journal it, and say how it went."""
        held_counters: tuple[HeldCounter, ...] = record["held"]
        state: Literal["committed", "released"] = "released" if actual is None else "committed"
        charged = {} if actual is None else {UNIT_TEXT[unit]: amount for unit, amount in actual.items()}
        tx.put_resolved(res_id, record, state, charged, overrun, expired, after,
                        record_expiry(now, record["expires"]))  # fmt: skip
        data = {**record.get("meta", {}), **meta}
        if overrun:
            data["overrun"] = True
        if expired:
            data["expired"] = True
        if actual is None:
            charged_or_held = {UNIT_TEXT[h.counter.unit]: h.amount for h in held_counters}
        else:
            charged_or_held = charged
        tx.journal(now, state, res_id, scope_labels(held_counters), charged_or_held, data)
        return Outcome(res_id, state, {} if actual is None else actual, overrun, expired, False, after)

    def status(self, tx: Tx, now: int, counters: Sequence[CounterSpec]) -> list[CounterStatus]:
        result = []
        for counter in counters:
            slot = self._slot(counter, now)
            spent, held = self._live(tx, slot, counter, now)
            override = tx.limit(counter.limit_field)
            if override is not None:
                override = live_limit(tx, now, counter.limit_field, override)
            result.append(
                CounterStatus(
                    counter=counter,
                    window_start=slot.prior[-1].start if slot.prior else slot.start,
                    window_end=slot.end,
                    limit=counter.limit if override is None else override,
                    spent=spent,
                    held=held,
                    overridden=override is not None,
                )
            )
        return result


def _journal_refusal(tx: Tx, now: int, event: str, res_id: str, refusal: Refusal, meta: Meta) -> Refusal:
    """Journal a refusal (``refused``) or a refusal in shadow (``shadow_refused``) on its counter."""
    counter = refusal.counter
    assert counter is not None  # (the engine's refusals name their counter)
    tx.journal(now, event, res_id, [counter.label], {counter.unit.value: refusal.requested}, meta)
    return refusal


def resolved_record(
    held: Mapping[str, Any], state: str, charged: dict[str, int], overrun: bool, expired: bool,
    spent: tuple[int, ...],
) -> dict[str, Any]:  # fmt: skip
    """A resolved reservation's record: its ``held`` record's fields without its meta (journaled:
    repeats are answered without it), and the outcome a repeat reports, with the counters' spent totals
    (a retry after a lost reply reports them, and so fires the thresholds this resolution crossed)."""
    outcome = {"state": state, "charged": charged, "overrun": overrun, "expired": expired, "spent": spent}
    return {"state": state, "created": held["created"], "expires": held["expires"], "held": held["held"],
            "outcome": outcome}  # fmt: skip


def _outcome(res_id: str, stored: Mapping[str, Any], *, duplicate: bool = False) -> Outcome:
    return Outcome(
        res_id,
        stored["state"],
        {UNITS[k]: v for k, v in stored["charged"].items()},
        stored["overrun"],
        stored["expired"],
        duplicate,
        tuple(stored.get("spent", ())),  # (records written before it was kept have none)
    )

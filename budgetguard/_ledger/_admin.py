"""Administration of the ledger: adjust (credit, refund, charge) or reset a counter's spent, raise its limit
for a while, set several limits at once (a plan); each journaled with who and why.

The value types (``Adjustment``, ``LimitRaise``), the checks every store runs before any I/O, and the
operations over the engine's ``Tx`` (memory and SQLite; Redis runs the same steps in ``lua/adjust.lua``,
``lua/raise_limit.lua`` and ``lua/set_limits.lua``).

How a temporary raise is stored, with no job to end it: the raised limit is the counter's run-time
limit (``set_limit``'s), so admission reads it as it reads any override, at no extra cost for a counter
without one; beside it, ``<field>~until`` (when the raise ends, ms on the store's clock) and
``<field>~base`` (the run-time limit it raised, absent when it raised the limit in code). The first read
of the limit at or after ``until`` (``_engine.live_limit``: reserve, status, get_limit, a new raise) restores
the base in the same transaction. ``set_limit`` and ``clear_limit`` end a raise (they set the limit
outright). An older release reads the raised limit as a plain override and never restores it (until a
release with this module reads it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from .._money import INT64_MAX
from ._engine import BASE, UNTIL, Tx, end_raise
from ._expiry import admin_record_expiry
from ._types import (
    CounterSpec,
    check_amount,
    check_reservation_id,
    new_reservation_id,
    to_datetime,
)

__all__ = [
    "ADMIN_EVENTS",
    "ADMIN_RECORD",
    "LONGEST_RAISE_MS",
    "Adjustment",
    "LimitRaise",
    "adjust",
    "admin_data",
    "check_adjust",
    "check_limits",
    "check_raise",
    "check_reset",
    "check_set_limits",
    "raise_limit",
    "reused",
    "set_limits",
    "too_long",
]

LONGEST_RAISE_MS = 366 * 86_400_000
"""A temporary raise ends at most this long after it is made (``--for`` or ``--until`` alike)."""
ADMIN_RECORD = "@"
"""An adjustment's record (for idempotent repeats: the change asked, and its outcome) is kept under
``@<id>`` as long as the counter it changed (``_expiry.admin_record_expiry``): no reservation id holds
an ``@``, so the two never meet."""
ADMIN_EVENTS = ("adjusted", "reset", "limit_raised", "limits_set")
"""The journal's administrative events (their data holds ``actor`` and ``reason``)."""


@dataclass(frozen=True, slots=True)
class Adjustment:
    """What ``adjust`` or ``reset`` did to a counter's spent in its current window (a rolling counter's:
    the trailing window a check counts)."""

    id: str
    counter: CounterSpec
    change: int
    """The signed change of spent (negative: a credit or refund). A credit larger than spent takes it
    to 0, not below: ``change`` is then ``-spent``."""
    spent: int
    """Spent after the change (in the window ``status`` reports)."""
    requested: int | None
    """The change asked for (``None`` for a reset)."""
    duplicate: bool = False
    """This call repeated an earlier one with the same id and changed nothing."""


@dataclass(frozen=True, slots=True)
class LimitRaise:
    """A temporary limit increase: ``limit`` until ``until``, then ``base`` again (``None``: the limit
    in code)."""

    counter: CounterSpec
    limit: int
    extra: int
    base: int | None
    until_ms: int

    @property
    def until(self) -> datetime:
        return to_datetime(self.until_ms)


# -- checks (every store, before any I/O) ------------------------------------------------------------


def admin_data(actor: object, reason: object, **more: Any) -> dict[str, Any]:
    """The journal data of an administrative change: who (``actor``) and why (``reason``), both required."""
    for what, value in (("actor", actor), ("reason", reason)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{what} must be a non-empty text (who made the change, and why), got {value!r}")
        if len(value) > 1000:
            raise ValueError(f"{what} is longer than 1000 characters")
    return {"actor": actor, "reason": reason, **more}


def _check_counter(counter: object) -> CounterSpec:
    if not isinstance(counter, CounterSpec):
        raise TypeError(f"counter must be a CounterSpec, got {counter!r}")
    return counter


def check_adjust(
    counter: object, amount: int | None, actor: object, reason: object, id: str | None
) -> tuple[CounterSpec, int | None, str, dict[str, Any]]:
    """``adjust``'s (``amount`` None: ``reset``'s) arguments: the counter, the signed amount, the id (a new
    one when none is given) and the journal data."""
    spec = _check_counter(counter)
    if amount is not None:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int (nano-USD, tokens or requests), got {amount!r}")
        check_amount(abs(amount), "amount")
    op_id = new_reservation_id() if id is None else check_reservation_id(id)
    data = admin_data(actor, reason, per=spec.period.value)
    if spec.tz != "UTC":
        data["tz"] = spec.tz
    return spec, amount, op_id, data


def check_raise(
    counter: object, extra: object, until: object, actor: object, reason: object
) -> tuple[CounterSpec, int, int, bool, dict[str, Any]]:
    """``raise_limit``'s arguments: the counter, the extra amount, ``until`` in ms (and whether it counts
    from the store's clock: a ``timedelta``) and the journal data."""
    spec = _check_counter(counter)
    check_amount(extra, "extra")
    if isinstance(until, timedelta):
        ms, relative = until // timedelta(milliseconds=1), True
        if not 0 < ms <= LONGEST_RAISE_MS:
            raise ValueError(f"a raise lasts more than 0 and at most a year, got {until}")
    elif isinstance(until, datetime):
        if until.tzinfo is None:
            raise ValueError("until must be an aware datetime (e.g. datetime.now(UTC) + timedelta(hours=2))")
        ms, relative = int(until.timestamp() * 1000), False
        if ms <= 0:  # (before 1970: the past on any store's clock)
            raise past(ms)
    else:
        raise TypeError(f"until must be a datetime or a timedelta, got {until!r}")
    data = admin_data(actor, reason, per=spec.period.value)
    return spec, extra, ms, relative, data  # type: ignore[return-value]


def check_reset(
    counter: object, actor: object, reason: object, id: str | None
) -> tuple[CounterSpec, int | None, str, dict[str, Any]]:
    """``reset``'s arguments, as ``check_adjust`` gives them (the amount None)."""
    return check_adjust(counter, None, actor, reason, id)


def check_set_limits(
    limits: object, actor: object, reason: object, plan: object
) -> tuple[list[tuple[CounterSpec, int | None]], dict[str, Any]]:
    """``set_limits``' arguments: the (counter, limit or None) pairs, and the journal data."""
    checked = check_limits(limits)
    return checked, limits_data(checked, admin_data(actor, reason, **plan_of(plan)))


def check_limits(limits: object) -> list[tuple[CounterSpec, int | None]]:
    """``set_limits``' mapping: counters to a limit, or ``None`` to clear one."""
    if not isinstance(limits, Mapping) or not limits:
        raise ValueError("set_limits needs a mapping of at least one counter to its limit (None clears it)")
    out = []
    for counter, value in limits.items():
        out.append((_check_counter(counter), None if value is None else check_amount(value, "limit")))
    return out


# -- the operations over a Tx (memory, SQLite) ---------------------------------------------------------


def adjust(
    tx: Tx, now: int, slot_of: Any, counter: CounterSpec, amount: int | None, op_id: str, data: dict[str, Any]
) -> Adjustment:
    """Add ``amount`` (signed) to the counter's spent in its window at ``now``, never below 0; ``amount``
    None: take spent to 0 (a reset). A rolling counter's window is the trailing one a check counts (its
    bucket holding now and ``Slot.prior``): a charge lands in the bucket holding now, a credit or reset
    takes spent off the buckets newest first. Holds stay. Once per ``op_id``: a repeat returns the first
    result; the id given again for a different change (another counter or amount) is an error."""
    key = ADMIN_RECORD + op_id
    asked = [counter.limit_field, amount]  # what a repeat must ask again
    record = tx.record(key)
    if record is not None:
        return _repeat(record, op_id, counter, record.get("asked") == asked)
    slot = slot_of(counter, now)
    buckets = [(s, *tx.counter(s, now)) for s in (slot, *slot.prior)]  # (slot, spent, held), newest first
    spent = sum(b[1] for b in buckets)
    if amount is None:
        change = -spent
    elif amount < 0:
        change = -min(-amount, spent)
    else:
        if spent > INT64_MAX - amount:
            raise ValueError(f"adding {amount} would overflow {counter.scope}'s spent ({spent})")
        change = amount
    left = max(-change, 0)  # what a credit or reset takes off, the newest bucket first
    for n, (bucket, bucket_spent, held) in enumerate(buckets):
        taken = min(left, bucket_spent)
        if n == 0:  # the bucket holding now: written as before (a charge lands here)
            tx.put_counter(
                bucket.key, bucket_spent - taken + max(change, 0), held, bucket.expires, slot.label
            )
        elif taken:
            tx.put_counter(bucket.key, bucket_spent - taken, held, bucket.expires, slot.label)
        left -= taken
    after = spent + change
    outcome = {"change": change, "spent": after, "requested": amount}
    tx.put_record(
        key, {"state": "admin", "outcome": outcome, "asked": asked}, admin_record_expiry(now, slot.expires)
    )
    if amount is not None and amount != change:
        data = {**data, "requested": amount}
    event: Literal["adjusted", "reset"] = "reset" if amount is None else "adjusted"
    tx.journal(now, event, op_id, [slot.label], {counter.unit.value: change}, data)
    return Adjustment(op_id, counter, change, after, amount)


def _repeat(record: Mapping[str, Any], op_id: str, counter: CounterSpec, same: bool) -> Adjustment:
    if record.get("state") != "admin":
        raise ValueError(f"id {op_id!r} names something else than an adjustment")
    if not same:
        raise reused(op_id)
    out = record["outcome"]
    return Adjustment(op_id, counter, out["change"], out["spent"], out["requested"], duplicate=True)


def reused(op_id: str) -> ValueError:
    return ValueError(f"id {op_id!r} was used for a different change (another counter, direction or amount); "
                      "nothing changed: give this change an id of its own")  # fmt: skip


def raise_limit(
    tx: Tx, now: int, counter: CounterSpec, extra: int, until: int, relative: bool, data: dict[str, Any]
) -> LimitRaise:
    """Raise the counter's limit by ``extra`` until ``until`` (ms; from ``now`` if ``relative``). A raise
    in force is replaced (on the same base: raises do not stack)."""
    ends = now + until if relative else until
    if ends <= now:
        raise past(ends)
    if ends - now > LONGEST_RAISE_MS:
        raise too_long(ends)
    field = counter.limit_field
    override = tx.limit(field)
    active = tx.limit(field + UNTIL)
    # a raise in force is replaced on the limit it raised; one that ended left that limit too
    base = override if active is None else tx.limit(field + BASE)
    raised = (counter.limit if base is None else base) + extra
    if raised > INT64_MAX:
        raise overflow(extra)
    tx.put_limit(field, raised)
    tx.put_limit(field + UNTIL, ends)
    tx.put_limit(field + BASE, base)
    data = {**data, "limit": raised, "until": ends}  # (ms since the epoch)
    tx.journal(now, "limit_raised", new_reservation_id(), [counter.label], {counter.unit.value: extra}, data)
    return LimitRaise(counter, raised, extra, base, ends)


def past(ends: int) -> ValueError:
    return ValueError(f"until ({to_datetime(ends).isoformat()}) is not in the future on the store's clock")


def too_long(ends: int) -> ValueError:
    when = to_datetime(ends).isoformat()
    return ValueError(f"until ({when}) is more than a year away on the store's clock: a raise lasts at most "
                      "a year (set_limit changes a limit for good)")  # fmt: skip


def overflow(extra: int) -> ValueError:
    return ValueError(f"raising the limit by {extra} would pass 2**63-1")


def set_limits(
    tx: Tx, now: int, limits: Sequence[tuple[CounterSpec, int | None]], data: dict[str, Any]
) -> None:
    """Set (or clear, ``None``) several counters' run-time limits at once, ending their raises; one
    journal entry (its data: the limits set, by counter)."""
    for counter, value in limits:
        tx.put_limit(counter.limit_field, value)
        end_raise(tx, counter.limit_field)
    labels = list(dict.fromkeys(c.label for c, _ in limits))
    tx.journal(now, "limits_set", new_reservation_id(), labels, {}, data)


def plan_of(plan: object) -> dict[str, str]:
    """The journal data naming the plan limits come from (none without one)."""
    if plan is None:
        return {}
    if not isinstance(plan, str) or not plan:
        raise ValueError(f"plan must be a plan's name, got {plan!r}")
    return {"plan": plan}


def limits_data(limits: Sequence[tuple[CounterSpec, int | None]], data: dict[str, Any]) -> dict[str, Any]:
    """``set_limits``' journal data: who, why, and each limit as ``[scope, unit, period, tz, value]``."""
    shown = [[str(c.scope), c.unit.value, c.period.value, c.tz, v] for c, v in limits]
    return {**data, "limits": shown}

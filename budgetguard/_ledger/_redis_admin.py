"""The Redis ledger's administration as I/O-free flows (``_redis_flows``' pattern): adjust and reset
(``lua/adjust.lua``), raise_limit (``lua/raise_limit.lua``), set_limits (``lua/set_limits.lua``) and the
run-time limit read that restores a raise that ended (``lua/get_limit.lua``). The steps are ``_admin``'s;
the arguments are checked by the same functions, before the first call."""

from __future__ import annotations

import json
import time
from typing import Any

from ._admin import ADMIN_RECORD, LONGEST_RAISE_MS, Adjustment, LimitRaise, overflow, past, reused, too_long
from ._expiry import ADMIN_TOTAL_RETENTION_MS, RECORD_RETENTION_MS, window_at
from ._redis_flows import Call, Flow, Flows, _clock_moving
from ._redis_wire import Keys, label_json, meta_json
from ._types import CounterSpec, new_reservation_id

__all__ = ["adjust", "get_limit", "raise_limit", "set_limits"]


def adjust(
    flows: Flows,
    counter: CounterSpec,
    amount: int | None,
    op_id: str,
    data: dict[str, Any],
    given: bool = True,
) -> Flow:
    """``given``: the caller gave ``op_id``; one this call generated answers a repeat (its own retry, by
    redis-py after a lost reply) as applied, not as a duplicate."""
    keys = (flows.keys.record(ADMIN_RECORD + op_id), flows.keys.journal)
    mode = "0" if amount is None else "-" if amount < 0 else "+"
    head = (op_id, ADMIN_TOTAL_RETENTION_MS, flows.journal_maxlen, mode, 0 if amount is None else abs(amount))
    tail = (counter.unit.value, label_json(counter), meta_json(data), Keys.limit_field(counter))
    now = time.time_ns() // 1_000_000  # a guess: the script checks it against the server's TIME
    for _ in range(3):
        window = window_at(counter, now)
        slot = flows.slot(counter, window)  # (a rolling counter: its earlier buckets' keys too)
        where = (window.start, "" if window.end is None else window.end, slot.expire_at)
        reply = yield Call("adjust", (*keys, slot.keys[0], *slot.prior[::2]), (*head, *where, *tail))
        if reply[0] == "WINDOW":
            now = int(reply[1])
            continue
        if reply[0] == "REUSED":
            raise reused(op_id)
        requested = None if reply[3] == "" else int(reply[3])
        return Adjustment(
            op_id, counter, int(reply[1]), int(reply[2]), requested, given and reply[0] == "DUP"
        )
    raise _clock_moving()


def raise_limit(
    flows: Flows, counter: CounterSpec, extra: int, until: int, relative: bool, data: dict[str, Any]
) -> Flow:
    how, op_id = "for" if relative else "at", new_reservation_id()
    args = (flows.journal_maxlen, op_id, Keys.limit_field(counter), counter.limit, extra, how, until,
            counter.unit.value, label_json(counter), meta_json(data), LONGEST_RAISE_MS,
            RECORD_RETENTION_MS)  # fmt: skip
    reply = yield Call("raise_limit", _op_keys(flows, op_id), args)
    if reply[0] == "PAST":
        raise past(int(reply[1]))
    if reply[0] == "LONG":
        raise too_long(int(reply[1]))
    if reply[0] == "OVERFLOW":
        raise overflow(extra)
    base = None if reply[3] == "" else int(reply[3])
    return LimitRaise(counter, int(reply[1]), extra, base, int(reply[2]))


def set_limits(flows: Flows, limits: list[tuple[CounterSpec, int | None]], data: dict[str, Any]) -> Flow:
    labels = list(dict.fromkeys(c.label for c, _ in limits))
    op_id = new_reservation_id()
    args: list[str | int] = [
        flows.journal_maxlen,
        op_id,
        json.dumps(labels),
        meta_json(data),
        RECORD_RETENTION_MS,
    ]
    for counter, value in limits:
        args += [Keys.limit_field(counter), "" if value is None else value]
    yield Call("set_limits", _op_keys(flows, op_id), tuple(args))


def _op_keys(flows: Flows, op_id: str) -> tuple[str, str, str]:
    """A limit change's keys: the limits hash, the journal, and the record of its (generated) id that
    makes redis-py's retry of a lost reply a repeat, kept for the retry horizon."""
    return flows.keys.limits, flows.keys.journal, flows.keys.record(ADMIN_RECORD + op_id)


def get_limit(flows: Flows, counter: CounterSpec) -> Flow:
    reply = yield Call("get_limit", (flows.keys.limits,), (Keys.limit_field(counter),))
    return None if reply is None else int(reply)

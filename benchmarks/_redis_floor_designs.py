"""``redis_floor``'s prototypes, their client side: each design's reserve and commit as the least Python
around one pre-encoded script call (``_redis_floor_lua`` holds the scripts), with its general path.

A hold is ``(counter, amount, limit)``; a design keeps the reservations this process made (their holds
and lease end: what a ``Reservation`` carries), so that a commit sends what its fast path checks. A
fast path answers ``G`` when anything is unusual, having written nothing; the design then sends its
general path (``lean``/``fold``: ``GENERAL_RESERVE``/``GENERAL_COMMIT``; ``compat``: today's store).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from budgetguard._budgets import Period, Scope, Unit
from budgetguard._errors import BudgetExceededError
from budgetguard._ledger import CounterSpec, Hold, open_ledger
from budgetguard._ledger._expiry import RECORD_RETENTION_MS, window_at
from budgetguard._ledger._redis_pack import _bulk, _Known
from budgetguard._ledger._redis_wire import amounts_json, scopes_json
from budgetguard._ledger._types import HeldCounter, Reservation

from . import _redis_floor_lua as lua

Holds = Sequence[tuple[str, int, int]]
MAXLEN = 1_000_000
SLOW = "?deadline=600&socket_timeout=300"
"""The library's store on a server under callgrind: slow, and stalled while it is toggled."""


class Wire:
    """One redis-py connection; script calls sent pre-encoded (as the store's ``Packer`` does)."""

    def __init__(self, port: int) -> None:
        import redis

        connection: Any = redis.Connection  # (redis-py's connections are untyped)
        self.conn = connection(port=port, decode_responses=True)
        self.conn.connect()
        self._heads: dict[tuple[bytes, int], bytes] = {}
        self._known = _Known("utf-8")  # (as the store's Packer keeps its bulk strings)

    def command(self, *args: str | int) -> Any:
        self.conn.send_command(*args)
        return self.conn.read_response()

    def load(self, text: str) -> bytes:
        """A script's ``EVALSHA`` head (its SHA), loaded."""
        return _bulk(b"EVALSHA") + _bulk(str(self.command("SCRIPT", "LOAD", text)).encode())

    def call(self, head: bytes, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        shape = (head, len(keys))
        found = self._heads.get(shape)
        if found is None:
            found = self._heads[shape] = b"%b$%d\r\n%d\r\n" % (head, len(str(len(keys))), len(keys))
        bulk_of = self._known.__getitem__
        data = b"*%d\r\n%b%b%b" % (3 + len(keys) + len(args), found, b"".join(map(bulk_of, keys)),
                                   b"".join(map(bulk_of, args)))  # fmt: skip
        self.conn.send_packed_command([data])
        return self.conn.read_response()


class Lean:
    """``lean`` and its variants, ``fold`` (``_redis_floor_lua``'s docstring): counter ``c:<name>``."""

    def __init__(self, wire: Wire, namespace: str, variant: str = "lean") -> None:
        self.name = variant
        self.wire = wire
        self.prefix = f"bgf:{{{namespace}}}:"
        self.fold = variant.startswith("fold")
        self.limits_arg = variant == "lean-limits"
        self.packed = variant == "lean-packed"
        self.xadd6 = variant == "lean-xadd6"
        self.journal_list = variant == "lean-rpush"
        reserve, commit = lua.lean_ops(variant)
        if variant.endswith("-fcall"):
            library = variant.replace("-", "_")
            wire.command("FUNCTION", "LOAD", "REPLACE", lua.functions(reserve, commit, library))
            fcall = _bulk(b"FCALL")
            self.heads = {op: fcall + _bulk(f"{library}_{op}".encode()) for op in ("reserve", "commit")}
        else:
            self.heads = {op: wire.load(text) for op, text in lua.scripts(reserve, commit).items()}
        self.general = {op: wire.load(text) for op, text in
                        (("reserve", lua.GENERAL_RESERVE), ("commit", lua.GENERAL_COMMIT))}  # fmt: skip
        self.mode = "fold" if self.fold else "list" if self.journal_list else "lean"
        """The general path's kind: the record in the first counter, the journal a list, or neither."""
        self.general_calls = 0
        self.mine: dict[str, tuple[Holds, int]] = {}
        self.limits, self.journal = self.prefix + "limits", self.prefix + "j"

    def counter_key(self, name: str) -> str:
        return f"{self.prefix}c:{name}"

    # -- the calls ------------------------------------------------------------------------------------

    def reserve_call(self, res_id: str, holds: Holds, lease: int) -> tuple[list[str], list[str | int]]:
        keys = [self.prefix + "r:" + res_id]
        if self.limits_arg:
            keys.append(self.limits)
        args: list[str | int] = [res_id, lease, 0, lua.NEVER, RECORD_RETENTION_MS, "{}\n" + json.dumps(holds)]
        for name, amount, limit in holds:
            keys.append(self.prefix + "c:" + name)
            if self.packed:
                args.append(f"{amount},{limit}")
            else:
                args += (amount, limit, name) if self.limits_arg else (amount, limit)
        return keys, args

    def commit_call(self, res_id: str, charge: int) -> tuple[list[str], list[str | int]]:
        holds, ends = self.mine[res_id]
        keys = [self.prefix + "r:" + res_id, self.journal]
        amounts = f'{{"usd":{charge}}}'
        overrun = int(any(charge > amount for _, amount, _ in holds))
        args: list[str | int] = [res_id, RECORD_RETENTION_MS, MAXLEN, ends, f"{overrun} {amounts}"]
        if self.xadd6:
            args += (res_id, '["user"]', amounts, "{}")
        else:
            args.append(f"{res_id} {charge} {{}}")
        for i, (name, amount, _) in enumerate(holds):
            keys.append(self.prefix + "c:" + name)
            args += (charge, amount, f"{amount} {ends} h" if self.fold and i == 0 else f"{amount} {ends}")
        return keys, args

    def admitted(self, res_id: str, holds: Holds, reply: Any) -> None:
        self.mine[res_id] = (holds, reply[1])

    def reserve(self, res_id: str, holds: Holds, lease: int = 120_000) -> bool:
        reply = self.wire.call(self.heads["reserve"], *self.reserve_call(res_id, holds, lease))
        if reply[0] in ("G", "W"):
            reply = self._general_reserve(res_id, holds, lease)
        if type(reply[0]) is int:
            self.mine[res_id] = (holds, reply[1])
            return True
        return False

    def commit(self, res_id: str, charge: int) -> tuple[tuple[int, ...], bool]:
        """Each counter's spent after the commit, and whether the lease had expired."""
        reply = self.wire.call(self.heads["commit"], *self.commit_call(res_id, charge))
        if reply[0] == "G":
            return self._general_commit(res_id, charge)
        return tuple(map(int, reply)), False

    def _general_reserve(self, res_id: str, holds: Holds, lease: int) -> Any:
        self.general_calls += 1
        keys = [self.prefix + "r:" + res_id, self.limits, self.journal]
        args: list[str | int] = [res_id, lease, 0, lua.NEVER, RECORD_RETENTION_MS, "{}\n" + json.dumps(holds)]
        for name, amount, limit in holds:
            keys.append(self.prefix + "c:" + name)
            args += (amount, limit, name, "")
        args.append(self.mode)
        reply = self.wire.call(self.general["reserve"], keys, args)
        if reply[0] == "R":  # a repeat: held or resolved is admitted, a refusal stays refused
            return [0, 0] if reply[1][0] != "x" else ["X"]
        return reply

    def _general_commit(self, res_id: str, charge: int) -> tuple[tuple[int, ...], bool]:
        self.general_calls += 1
        holds, _ = self.mine[res_id]
        keys = [self.prefix + "r:" + res_id, self.journal, *(self.counter_key(name) for name, _, _ in holds)]
        ctail, entry = f'0 {{"usd":{charge}}}', f"{res_id} {charge} {{}}"
        args: list[str | int] = [res_id, RECORD_RETENTION_MS, ctail, entry]
        for _ in holds:
            args += (charge, 0, "")
        args.append(self.mode)
        reply = self.wire.call(self.general["commit"], keys, args)
        if reply[0] == "D":  # a repeat: the first commit's spent ('c [now] spent expired ...')
            words = reply[1].split(" ")
            spent, expired = (words[2], words[3]) if self.fold else (words[1], words[2])
            return tuple(map(int, spent.split(","))), expired == "1"
        if reply[0] in ("U", "X"):
            raise LookupError(f"{res_id}: nothing to commit ({reply[0]})")
        return tuple(map(int, reply[:-1])), reply[-1] == "1"

    # -- what the check reads -------------------------------------------------------------------------

    def counter(self, name: str) -> tuple[int, int]:
        spent, held = self.wire.command("HMGET", self.counter_key(name), "spent", "held")
        return int(spent or 0), int(held or 0)

    def put_limit(self, name: str, limit: int) -> None:
        """A run-time limit: the limits hash, mirrored into the counter when it exists."""
        self.wire.command("HSET", self.limits, name, limit)
        if self.wire.command("EXISTS", self.counter_key(name)):
            self.wire.command("HSET", self.counter_key(name), "o", limit)

    def entries(self) -> list[tuple[str, str, int]]:
        """The journal: (event, reservation id, amount) per entry, in order."""
        if self.journal_list:
            texts = self.wire.command("LRANGE", self.journal, 0, -1)
        else:
            stream = self.wire.command("XRANGE", self.journal, "-", "+")
            texts = []
            for _, fields in stream:
                f = dict(zip(fields[::2], fields[1::2], strict=True))
                if "e" in f:
                    texts.append(f["e"])
                else:
                    texts.append(f"{f['event']} {f['ts']} {f['id']} {json.loads(f['amounts'])['usd']}")
        return [(t.split(" ")[0], t.split(" ")[2], int(t.split(" ")[3])) for t in texts]


class Compat:
    """Today's data model: a lean fast path, today's store (its scripts) as the general path. A hold's
    counter is ``user:<name>``, USD, in ``period`` (the check: ``total``)."""

    name = "compat"

    def __init__(self, wire: Wire, namespace: str, period: Period = Period.TOTAL) -> None:
        port = wire.conn.port
        self.wire = wire
        ledger: Any = open_ledger(f"redis://127.0.0.1:{port}/0{SLOW}", namespace=namespace)
        self.ledger = ledger
        self.flows = ledger._flows
        self.period = period
        self.heads = {op: wire.load(text) for op, text in
                      lua.scripts(lua.COMPAT_RESERVE, lua.COMPAT_COMMIT).items()}  # fmt: skip
        self.general_calls = 0
        self.mine: dict[str, Reservation] = {}
        self._specs: dict[tuple[str, int], CounterSpec] = {}
        self._held: dict[str, tuple[HeldCounter, ...]] = {}

    def spec(self, name: str, limit: int) -> CounterSpec:
        found = self._specs.get((name, limit))
        if found is None:
            found = CounterSpec(Scope("user", name), Unit.USD, self.period, limit)
            self._specs[(name, limit)] = found
        return found

    def reserve_call(self, res_id: str, holds: Holds, lease: int) -> tuple[list[str], list[str | int]]:
        keys = self.flows.keys
        now = time.time_ns() // 1_000_000  # (a guess, as the store's: the script checks the window)
        held, parts, per = [], [], []
        lo, hi = 0, lua.NEVER
        for name, amount, limit in holds:
            counter = self.spec(name, limit)
            window = window_at(counter, now)
            slot = self.flows.slot(counter, window)
            lo, hi = max(lo, window.start), min(hi, lua.NEVER if window.end is None else window.end)
            held.append(HeldCounter(counter, window.start, window.end, amount, limit))
            parts.append(f"{slot.held_json}{amount},{limit}]")
            per.append((slot.keys, (amount, limit, keys.limit_field(counter), slot.expire_at)))
        k: list[str] = [keys.record(res_id), keys.limits]
        args: list[str | int] = [res_id, lease, lo, hi, RECORD_RETENTION_MS, "{}", f"[{','.join(parts)}]"]
        for slot_keys, slot_args in per:
            k += slot_keys
            args += slot_args
        self._held[res_id] = tuple(held)
        return k, args

    def admitted(self, res_id: str, holds: Holds, reply: Any) -> None:
        self.mine[res_id] = Reservation(res_id, self._held.pop(res_id), reply[0], reply[1])

    def commit_call(self, res_id: str, charge: int) -> tuple[list[str], list[str | int]]:
        r = self.mine[res_id]
        keys = self.flows.keys
        k: list[str] = [keys.record(res_id), keys.journal]
        amounts = amounts_json({Unit.USD: charge})
        overrun = int(any(charge > h.amount for h in r.held))
        lims = ",".join(str(h.limit) for h in r.held)
        slots = [self.flows.slot(h.counter, h) for h in r.held]
        held_json = ",".join(
            f"{slot.held_json}{h.amount},{h.limit}]" for slot, h in zip(slots, r.held, strict=True)
        )
        args: list[str | int] = [
            res_id, r.expires_at - r.created_at + RECORD_RETENTION_MS, MAXLEN, r.expires_at,
            f"{r.created_at} {r.expires_at} {lims} {overrun}", f"\n{amounts}\n[{held_json}]",
            scopes_json(r.held), amounts, "{}",
        ]  # fmt: skip
        for slot, h in zip(slots, r.held, strict=True):
            k += slot.keys
            args += (charge, h.amount)
        return k, args

    def reserve(self, res_id: str, holds: Holds, lease: int = 120_000) -> bool:
        reply = self.wire.call(self.heads["reserve"], *self.reserve_call(res_id, holds, lease))
        if type(reply[0]) is int:
            self.admitted(res_id, holds, reply)
            return True
        self._held.pop(res_id)
        self.general_calls += 1
        return self.store_reserve(res_id, holds, lease)

    def commit(self, res_id: str, charge: int) -> tuple[tuple[int, ...], bool]:
        reply = self.wire.call(self.heads["commit"], *self.commit_call(res_id, charge))
        if reply[0] != "G":
            return tuple(map(int, reply)), False
        self.general_calls += 1
        return self.store_commit(res_id, charge)

    def store_reserve(self, res_id: str, holds: Holds, lease: int) -> bool:
        """The reserve by today's store (its scripts)."""
        specs = [Hold(self.spec(name, limit), amount) for name, amount, limit in holds]
        try:
            self.mine[res_id] = self.ledger.reserve(specs, id=res_id, lease=lease / 1000)
        except BudgetExceededError:
            return False
        return True

    def store_commit(self, res_id: str, charge: int) -> tuple[tuple[int, ...], bool]:
        outcome = self.ledger.commit(self.mine[res_id], {"usd": charge})
        return outcome.spent, outcome.expired

    def counter(self, name: str) -> tuple[int, int]:
        slot = self.flows.slot(self.spec(name, 1), window_at(self.spec(name, 1), 1))
        spent, held = self.wire.command("HMGET", slot.keys[0], "spent", "held")
        return int(spent or 0), int(held or 0)

    def put_limit(self, name: str, limit: int) -> None:
        self.ledger.set_limit(self.spec(name, 1), limit)

    def entries(self) -> list[tuple[str, str, int]]:
        out = []
        for _, fields in self.wire.command("XRANGE", self.flows.keys.journal, "-", "+"):
            f = dict(zip(fields[::2], fields[1::2], strict=True))
            out.append((f["event"], f["id"], json.loads(f["amounts"])["usd"]))
        return out


class Today(Compat):
    """Today's store alone (an older client on ``compat``'s namespace, for the check)."""

    name = "today"

    def reserve(self, res_id: str, holds: Holds, lease: int = 120_000) -> bool:
        return self.store_reserve(res_id, holds, lease)

    def commit(self, res_id: str, charge: int) -> tuple[tuple[int, ...], bool]:
        return self.store_commit(res_id, charge)


class Min:
    """``min``: the floor of a design of two script calls (no record, lease, override or repeat)."""

    name = "min"

    def __init__(self, wire: Wire, namespace: str) -> None:
        self.wire = wire
        self.prefix = f"bgf:{{{namespace}}}:"
        texts = lua.scripts(lua.MIN_RESERVE, lua.MIN_COMMIT)
        self.heads = {op: wire.load(text) for op, text in texts.items()}
        self.mine: dict[str, Holds] = {}
        self.journal = self.prefix + "j"

    def reserve_call(self, res_id: str, holds: Holds, lease: int) -> tuple[list[str], list[str | int]]:
        name, amount, limit = holds[0]
        return [self.prefix + "c:" + name], [amount, limit]

    def commit_call(self, res_id: str, charge: int) -> tuple[list[str], list[str | int]]:
        name, amount, _ = self.mine[res_id][0]
        return [self.journal, self.prefix + "c:" + name], [charge, amount, f"{res_id} {charge}"]

    def admitted(self, res_id: str, holds: Holds, reply: Any) -> None:
        self.mine[res_id] = holds

    def reserve(self, res_id: str, holds: Holds, lease: int = 120_000) -> bool:
        reply = self.wire.call(self.heads["reserve"], *self.reserve_call(res_id, holds, lease))
        self.mine[res_id] = holds
        return type(reply[0]) is int

    def commit(self, res_id: str, charge: int) -> tuple[tuple[int, ...], bool]:
        reply = self.wire.call(self.heads["commit"], *self.commit_call(res_id, charge))
        return tuple(map(int, reply)), False


DESIGNS = (
    "compat", "lean", "lean-trim", "lean-packed", "lean-limits", "lean-incr", "lean-xadd6", "lean-rpush",
    "lean-fcall", "lean-trim-fcall", "fold", "fold-fcall", "min",
)  # fmt: skip


def make(name: str, wire: Wire, namespace: str, period: Period = Period.TOTAL) -> Any:
    if name in ("compat", "today"):
        return (Compat if name == "compat" else Today)(wire, namespace, period)
    if name == "min":
        return Min(wire, namespace)
    return Lean(wire, namespace, name)


def new_id() -> str:
    return os.urandom(12).hex()

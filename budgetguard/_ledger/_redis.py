"""``redis://``, ``rediss://``, ``unix://`` and ``redis+cluster://``: the ledger for a fleet.

Each operation is one Lua script (``lua/*.lua``), loaded once with ``register_script`` and reloaded by
redis-py on NOSCRIPT (restart, failover, SCRIPT FLUSH). Scripts validate every input before their
first write, use the server's ``TIME`` for leases, and keep money in int64 decimal strings.

Every operation is idempotent by reservation id, so redis-py's retry after a lost reply returns the
first outcome instead of charging twice. Each operation, retries included, ends by one deadline
(``_deadline.py``; ``?deadline=`` in the URL). All keys of a namespace share the hash tag ``{namespace}``,
so Redis Cluster runs each script on one node.

The logic is written once as generator "flows" that yield the calls they need; a ~10-line sync and
async driver performs them (the httpx ``auth_flow`` pattern).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from .._budgets import Scope, Unit, Window
from .._cache import Bounded
from .._errors import LedgerError
from ._base import (
    AsyncLedger,
    Ledger,
    ReservationRef,
    Store,
    check_namespace,
    decode_held,
    held_fields,
    journal_matches,
    scope_labels,
)
from ._deadline import DEADLINE
from ._expiry import RECORD_RETENTION_MS, counter_expiry, window_at
from ._types import (
    UNITS,
    Amounts,
    CounterSpec,
    CounterStatus,
    HeldCounter,
    Hold,
    JournalEntry,
    Outcome,
    Refusal,
    Reservation,
    ReservationError,
    check_actual,
    check_amount,
    check_holds,
    check_lease,
    check_meta,
    check_reservation_id,
    new_reservation_id,
    to_datetime,
)

__all__ = ["AsyncRedisLedger", "RedisLedger"]

JOURNAL_MAXLEN = 1_000_000
"""The journal stream keeps about this many newest entries (``XADD MAXLEN ~``; ``?journal_maxlen=``);
``journal_complete_since`` says when it dropped some."""


def _lua(name: str) -> str:
    return resources.files("budgetguard._ledger").joinpath("lua", f"{name}.lua").read_text()


LIBRARY = _lua("_time") + "\n" + _lua("_lib")
"""What every script starts with: the time arithmetic (``_expiry.py``'s mirror), then the helpers."""


def _load_scripts() -> dict[str, str]:
    resolve = _lua("_resolve")
    scripts = {}
    for name in ("reserve", "commit", "release", "status", "set_limit"):
        prelude = LIBRARY + (resolve if name in ("commit", "release") else "")
        scripts[name] = prelude + "\n" + _lua(name)
    return scripts


SCRIPTS = _load_scripts()


@dataclass(frozen=True, slots=True)
class _Call:
    """One server call a flow needs: a script (``op`` names it) or a plain read command."""

    op: str
    keys: tuple[str, ...] = ()
    args: tuple[str | int, ...] = ()


Flow = Generator[_Call, Any, Any]


_digests: Bounded[str, str] = Bounded("ledger.redis.digests", 100_000)


def _digest(text: str) -> str:
    """A short, collision-free name for a counter's identity (memoized: counters repeat)."""
    found = _digests.get(text)
    if found is None:
        found = _digests.put(
            text, base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:18]).decode()
        )
    return found


class _Keys:
    """Key names. Scope ids are user data: they enter keys only as a hash of the counter's identity."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"bg:{{{check_namespace(namespace)}}}:"
        self.limits = self.prefix + "limits"
        self.journal = self.prefix + "journal"

    def record(self, res_id: str) -> str:
        return f"{self.prefix}r:{res_id}"

    def counter(self, counter: CounterSpec, window_start: int) -> tuple[str, str]:
        base = f"{self.prefix}c:{_digest(counter.limit_field)}:{window_start}"
        return base, base + ":l"

    @staticmethod
    def limit_field(counter: CounterSpec) -> str:
        return _digest(counter.limit_field)


def _label_json(counter: CounterSpec) -> str:
    scope = counter.scope
    return json.dumps([str(scope)]) if scope.id is not None else '["global"]'


def _amounts_json(amounts: Mapping[Unit, int]) -> str:
    return "{" + ",".join(f'"{u.value}":{v}' for u, v in amounts.items()) + "}"  # units are plain words


_scopes: Bounded[tuple[str, ...], str] = Bounded("ledger.redis.scopes", 10_000)


def _scopes_json(held: Sequence[HeldCounter]) -> str:
    labels = tuple(h.counter.label for h in held)
    found = _scopes.get(labels)
    return _scopes.put(labels, json.dumps(scope_labels(held))) if found is None else found


class _Slot:
    """What a call says about one counter in one window, encoded once (counters repeat)."""

    __slots__ = ("commit_arg", "held_json", "keys", "reserve_arg")

    def __init__(self, keys: _Keys, counter: CounterSpec, start: int, end: int | None) -> None:
        self.keys = keys.counter(counter, start)
        label, unit = _label_json(counter), counter.unit.value
        expiry = counter_expiry(end)
        expire_at = "" if expiry is None else expiry
        window_end = "" if end is None else end
        field = keys.limit_field(counter)
        self.reserve_arg = f",{counter.limit},{start},{window_end},{expire_at},{unit},{field},{label}"
        """Follows the amount: the packed per-hold argument of ``reserve.lua``."""
        self.held_json = json.dumps(held_fields(counter, start, end), separators=(",", ":"))[:-1] + ","
        """A hold on this counter as ``encode_held`` writes it, up to its amount and limit."""
        self.commit_arg = f",{expire_at},{unit},{label}"
        """Follows the charge: the packed per-counter argument of ``commit.lua`` and ``release.lua``."""


def _check_reply_window(reply: list[str]) -> int | None:
    return int(reply[1]) if reply[0] == "WINDOW" else None


class _Flows:
    """The Redis ledger's logic, independent of sync or async I/O."""

    def __init__(self, namespace: str, journal_maxlen: int) -> None:
        self.namespace = namespace
        self.keys = _Keys(namespace)
        self.journal_maxlen = journal_maxlen
        self._slots: Bounded[tuple[str, int, int], _Slot] = Bounded(
            "ledger.redis.slots", 10_000, shared=False
        )

    def checked_reserve(
        self,
        holds: Iterable[Hold],
        lease: float,
        res_id: str | None,
        meta: Mapping[str, Any] | None,
        enforce: bool,
    ) -> Flow:
        """Validate a reserve's inputs now (before any I/O), then return its flow."""
        checked = check_holds(holds)
        res_id = new_reservation_id() if res_id is None else check_reservation_id(res_id)
        return self.reserve(checked, check_lease(lease), res_id, _meta(meta), enforce)

    def slot(self, counter: CounterSpec, window: Window | HeldCounter) -> _Slot:
        start, end = (window.start, window.end) if isinstance(window, Window) else (
            window.window_start, window.window_end)  # fmt: skip
        key = (counter.limit_field, counter.limit, start)
        found = self._slots.get(key)
        return self._slots.put(key, _Slot(self.keys, counter, start, end)) if found is None else found

    def reserve(self, holds: tuple[Hold, ...], lease_ms: int, res_id: str, meta: str, enforce: bool) -> Flow:
        now = time.time_ns() // 1_000_000  # a guess: the script checks it against the server's TIME
        head: list[str | int] = [res_id, lease_ms, RECORD_RETENTION_MS, self.journal_maxlen, meta]
        for _ in range(3):
            windows = [window_at(h.counter, now) for h in holds]
            slots = [self.slot(h.counter, w) for h, w in zip(holds, windows, strict=True)]
            keys: list[str] = [self.keys.record(res_id), self.keys.limits, self.keys.journal]
            held_json = []
            args = [*head, "", "1" if enforce else "0"]
            for hold, slot in zip(holds, slots, strict=True):
                keys += slot.keys
                held_json.append(f"{slot.held_json}{hold.amount},{hold.counter.limit}]")
                args.append(f"{hold.amount}{slot.reserve_arg}")
            args[5] = f"[{','.join(held_json)}]"
            reply = yield _Call("reserve", tuple(keys), tuple(args))
            server_now = _check_reply_window(reply)
            if server_now is not None:
                now = server_now
                continue
            if reply[0] == "REFUSED":
                index, end = int(reply[1]), reply[6]
                refused = decode_held(reply[8])[index].counter  # as the first call with this id named it
                refusal = Refusal(index, int(reply[2]), int(reply[3]), int(reply[4]), int(reply[5]),
                                  int(end) if end else None, refused)  # fmt: skip
                raise refusal.error(holds)
            limits = [int(x) for x in reply[3].split(",")]
            if reply[4] == "1":  # a repeat returns the first call's holds
                held = tuple(
                    HeldCounter(h.counter, h.window_start, h.window_end, h.amount, limit)
                    for h, limit in zip(decode_held(reply[5]), limits, strict=True)
                )
            else:
                held = tuple(
                    HeldCounter(h.counter, w.start, w.end, h.amount, limit)
                    for h, w, limit in zip(holds, windows, limits, strict=True)
                )
            return Reservation(res_id, held, int(reply[1]), int(reply[2]), duplicate=reply[4] == "1")
        raise LedgerError("the Redis server's clock keeps moving across window boundaries; check its time")

    def _held(self, ref: ReservationRef) -> Flow:
        if isinstance(ref, Reservation):
            return ref.held
        res_id = check_reservation_id(ref)
        reply = yield _Call("hmget", (self.keys.record(res_id),), ("state", "held"))
        if reply[0] is None:
            raise ReservationError(
                f"unknown reservation {res_id!r}: never reserved here, or resolved long ago"
            )
        if reply[0] == "refused":
            raise ReservationError(f"reservation {res_id!r} was refused; it holds nothing to resolve")
        return decode_held(reply[1])

    def resolve(self, ref: ReservationRef, actual: Amounts | None, meta: str) -> Flow:
        res_id = check_reservation_id(ref.id if isinstance(ref, Reservation) else ref)
        held: tuple[HeldCounter, ...] = yield from self._held(ref)
        parsed = None if actual is None else check_actual(actual, held)
        op = "release" if parsed is None else "commit"
        amounts = {h.counter.unit: h.amount for h in held} if parsed is None else parsed
        keys: list[str] = [self.keys.record(res_id), self.keys.journal]
        args: list[str | int] = [
            res_id, RECORD_RETENTION_MS, self.journal_maxlen, meta, _scopes_json(held),
            _amounts_json(amounts),
        ]  # fmt: skip
        for h in held:
            slot = self.slot(h.counter, h)
            keys += slot.keys
            args.append(slot.commit_arg if parsed is None else f"{parsed[h.counter.unit]}{slot.commit_arg}")
        reply = yield _Call(op, tuple(keys), tuple(args))
        if reply[0] == "UNKNOWN":
            raise ReservationError(
                f"unknown reservation {res_id!r}: never reserved here, or resolved long ago"
            )
        if reply[0] == "REFUSED":
            raise ReservationError(f"reservation {res_id!r} was refused; it holds nothing to resolve")
        state, charged, overrun, expired = reply[1], reply[2], reply[3], reply[4]
        if parsed is not None and reply[0] == "DONE":
            charges: Mapping[Unit, int] = parsed  # what the script charged: ours
        else:
            charges = {UNITS[k]: int(v) for k, v in json.loads(charged or "{}").items()}
        return Outcome(
            res_id,
            state,
            charges,
            overrun == "1",
            expired == "1",
            reply[0] == "DUP",
            tuple(int(x) for x in reply[5:]),  # a repeat's too: the record keeps them
        )

    def status(self, counters: list[CounterSpec]) -> Flow:
        now = time.time_ns() // 1_000_000
        for _ in range(3):
            windows = [window_at(c, now) for c in counters]
            keys: list[str] = [self.keys.limits, self.keys.journal]
            args: list[str | int] = [self.journal_maxlen, len(counters)]
            for counter, window in zip(counters, windows, strict=True):
                keys.extend(self.keys.counter(counter, window.start))
                args += [
                    counter.limit, self.keys.limit_field(counter), window.start,
                    "" if window.end is None else window.end, _label_json(counter), counter.unit.value,
                ]  # fmt: skip
            reply = yield _Call("status", tuple(keys), tuple(args))
            server_now = _check_reply_window(reply)
            if server_now is not None:
                now = server_now
                continue
            return [
                CounterStatus(
                    counter=counter,
                    window_start=window.start,
                    window_end=window.end,
                    limit=int(reply[1 + 4 * i]),
                    spent=int(reply[2 + 4 * i]),
                    held=int(reply[3 + 4 * i]),
                    overridden=reply[4 + 4 * i] == "1",
                )
                for i, (counter, window) in enumerate(zip(counters, windows, strict=True))
            ]
        raise LedgerError("the Redis server's clock keeps moving across window boundaries; check its time")

    def set_limit(self, counter: CounterSpec, limit: int | None) -> Flow:
        value = "" if limit is None else check_amount(limit, "limit")
        yield _Call("set_limit", (self.keys.limits,), (self.keys.limit_field(counter), value))

    def get_limit(self, counter: CounterSpec) -> Flow:
        reply = yield _Call("hget", (self.keys.limits,), (self.keys.limit_field(counter),))
        return None if reply is None else int(reply)

    def history(
        self,
        since: datetime | None,
        until: datetime | None,
        scope: Scope | str | None,
        model: str | None,
        events: Iterable[str] | None,
        limit: int | None,
    ) -> Flow:
        start = "-" if since is None else str(int(since.timestamp() * 1000))
        end = "+" if until is None else f"({int(until.timestamp() * 1000)}"
        label = None if scope is None else str(Scope.parse(scope))
        wanted = None if events is None else frozenset(events)
        out: list[JournalEntry] = []
        while True:
            batch = yield _Call("xrange", (self.keys.journal,), (start, end))
            for _stream_id, fields in batch:
                entry = _journal_entry(fields)
                if journal_matches(entry, scope=label, model=model, events=wanted):
                    out.append(entry)
                    if limit is not None and len(out) >= limit:
                        return out
            if len(batch) < _XRANGE_BATCH:
                return out
            start = "(" + batch[-1][0]

    def journal_complete_since(self) -> Flow:
        if not (yield _Call("xlen", (self.keys.journal,))):  # no stream (XINFO would fail): nothing dropped
            return None
        info = yield _Call("xinfo", (self.keys.journal,))
        return _complete_since(info, self.journal_maxlen)


_XRANGE_BATCH = 1000


def _complete_since(info: Mapping[str, Any], maxlen: int) -> datetime | None:
    """From XINFO STREAM: the instant (a stream id's time) from which no entry was trimmed. Redis 7+
    counts the entries ever added; an older server only tells that the stream is at its cap."""
    added, length = info.get("entries-added"), int(info["length"])
    dropped = length >= maxlen if added is None else int(added) > length
    if not dropped:
        return None
    first = info.get("first-entry")
    first_id = str(first[0] if first else info.get("recorded-first-entry-id", "0-0"))
    ms, _, seq = first_id.partition("-")
    # entries of the first entry's millisecond with a lower sequence number were trimmed
    return to_datetime(int(ms) + (0 if seq in ("", "0") else 1))


def _journal_entry(fields: Mapping[str, str]) -> JournalEntry:
    data = json.loads(fields.get("rdata") or "{}")
    data.update(json.loads(fields.get("data") or "{}"))
    data.update({k: v for k, v in json.loads(fields.get("flags") or "{}").items() if v})
    return JournalEntry(
        ts=int(fields["ts"]),
        event=fields["event"],  # type: ignore[arg-type]
        reservation_id=fields["id"],
        scopes=tuple(json.loads(fields["scopes"])),
        amounts=json.loads(fields["amounts"]),
        data=data,
    )


def _meta(meta: Mapping[str, Any] | None) -> str:
    if not meta:
        return "{}"
    return json.dumps(check_meta(meta), separators=(",", ":"), sort_keys=True)


def _wrap_error(exc: Exception) -> Exception:
    import redis.exceptions as rex

    if isinstance(exc, rex.ResponseError) and "BGINVALID" in str(exc):
        return ValueError(f"the ledger refused invalid input: {exc}")
    if isinstance(exc, rex.RedisError | rex.RedisClusterException):
        return LedgerError(f"Redis ledger operation failed: {exc}")
    return exc


class _RedisBase(Store):
    def __init__(
        self, url: str, client: Any, namespace: str, journal_maxlen: int, deadline: float | None = None
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.client = client
        self.deadline = deadline
        """Seconds one operation may take, retries included, before it raises ``LedgerError`` (``None``:
        only the client's own timeouts). ``open_ledger`` sets it (``?deadline=`` in the URL)."""
        self._flows = _Flows(namespace, journal_maxlen)
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}

    def _late(self) -> LedgerError:
        return LedgerError(
            f"Redis ledger operation failed: no answer within its {self.deadline} s deadline "
            "(?deadline= in the ledger URL)"
        )

    def _run(self, flow: Flow, *, each_call: bool = False) -> Any:
        """Perform ``flow``'s calls (``RedisLedger``: the result; ``AsyncRedisLedger``: an awaitable)."""
        raise NotImplementedError

    # The operations, behind the public methods ``Store`` makes from ``Ledger``'s declarations; the
    # same for the sync and the async store, whose ``_run`` differs.

    def _reserve(
        self,
        holds: Iterable[Hold],
        lease: float,
        id: str | None,
        meta: Mapping[str, Any] | None,
        enforce: bool,
    ) -> Any:
        return self._run(self._flows.checked_reserve(holds, lease, id, meta, enforce))

    def _commit(self, reservation: ReservationRef, actual: Amounts, meta: Mapping[str, Any] | None) -> Any:
        return self._run(self._flows.resolve(reservation, actual, _meta(meta)))

    def _release(self, reservation: ReservationRef, meta: Mapping[str, Any] | None) -> Any:
        return self._run(self._flows.resolve(reservation, None, _meta(meta)))

    def _status(self, counters: Iterable[CounterSpec]) -> Any:
        return self._run(self._flows.status(list(counters)))

    def _set_limit(self, counter: CounterSpec, limit: int) -> Any:
        return self._run(self._flows.set_limit(counter, check_amount(limit, "limit")))

    def _get_limit(self, counter: CounterSpec) -> Any:
        return self._run(self._flows.get_limit(counter))

    def _clear_limit(self, counter: CounterSpec) -> Any:
        return self._run(self._flows.set_limit(counter, None))

    def _history(
        self,
        since: datetime | None,
        until: datetime | None,
        scope: Scope | str | None,
        model: str | None,
        events: Iterable[str] | None,
        limit: int | None,
    ) -> Any:
        return self._run(self._flows.history(since, until, scope, model, events, limit), each_call=True)

    def _journal_complete_since(self) -> Any:
        return self._run(self._flows.journal_complete_since())

    def _send(self, call: _Call) -> Any:
        """Issue one call on the client: a reply (sync client) or an awaitable (async client)."""
        if call.op == "hmget":
            return self.client.hmget(call.keys[0], list(call.args))
        if call.op == "hget":
            return self.client.hget(call.keys[0], call.args[0])
        if call.op == "xrange":
            return self.client.xrange(call.keys[0], call.args[0], call.args[1], count=_XRANGE_BATCH)
        if call.op == "xlen":
            return self.client.xlen(call.keys[0])
        if call.op == "xinfo":
            return self.client.xinfo_stream(call.keys[0])
        return self._scripts[call.op](keys=list(call.keys), args=list(call.args))


class RedisLedger(_RedisBase, Ledger):
    """Sync Redis (or Valkey, or Redis Cluster) ledger."""

    _stale_nodes = False
    """A cluster whose topology refresh a deadline cut short: redis-py 5 then forgets the node that
    hung (its slots still point at it, so scripts are never loaded there); refreshed next time."""

    def _run(self, flow: Flow, *, each_call: bool = False) -> Any:
        """Run ``flow`` within one deadline (a fresh one for each of its calls, with ``each_call``: a
        history reads as many pages as it needs); ``_deadline.py`` holds the connections to it."""
        seconds = self.deadline
        end = math.inf if seconds is None else time.monotonic() + seconds
        token = None if seconds is None else DEADLINE.set(end)
        reply: Any = None
        try:
            if self._stale_nodes:
                try:
                    self.client.nodes_manager.initialize()
                except Exception as exc:
                    wrapped = self._wrapped(exc, end)
                    if wrapped is exc:
                        raise
                    raise wrapped from exc
                self._stale_nodes = False
            while True:
                call = flow.send(reply)
                if each_call and seconds is not None:
                    end = time.monotonic() + seconds
                    DEADLINE.set(end)
                try:
                    reply = self._send(call)
                except Exception as exc:  # backend errors become LedgerError / ValueError
                    wrapped = self._wrapped(exc, end)
                    if wrapped is exc:
                        raise
                    raise wrapped from exc
        except StopIteration as done:
            return done.value
        finally:
            if token is not None:
                DEADLINE.reset(token)

    def _wrapped(self, exc: Exception, end: float) -> Exception:
        wrapped = _wrap_error(exc)
        if isinstance(wrapped, LedgerError) and time.monotonic() >= end:  # the deadline cut it short
            wrapped = self._late()
            self._stale_nodes = hasattr(self.client, "nodes_manager")
        return wrapped

    def close(self) -> None:
        nodes = self.client.get_nodes() if hasattr(self.client, "get_nodes") else []
        self.client.close()
        for node in nodes:  # redis-py's RedisCluster.close() leaves the node pools' sockets open
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()


class AsyncRedisLedger(_RedisBase, AsyncLedger):
    """Async Redis ledger (redis.asyncio), the same scripts and flows as ``RedisLedger``."""

    async def _run(self, flow: Flow, *, each_call: bool = False) -> Any:
        """Run ``flow`` within one deadline (see ``RedisLedger._run``): a command still running then is
        cancelled, and redis-py drops its connection."""
        seconds = self.deadline
        clock = asyncio.get_running_loop().time
        end = None if seconds is None else clock() + seconds
        reply: Any = None
        try:
            while True:
                call = flow.send(reply)
                if each_call and seconds is not None:
                    end = clock() + seconds
                try:
                    async with asyncio.timeout_at(end):
                        reply = await self._send(call)
                except TimeoutError as exc:  # the deadline's (redis-py raises its own TimeoutError)
                    raise self._late() from exc
                except Exception as exc:
                    wrapped = _wrap_error(exc)
                    if wrapped is exc:
                        raise
                    raise wrapped from exc
        except StopIteration as done:
            return done.value

    async def aclose(self) -> None:
        await self.client.aclose()

    twin: Callable[[], Ledger] | None = None
    """Opens a sync store on the same URL and namespace (``open_async_ledger`` sets it)."""

    def sync_twin(self) -> Ledger | None:
        """A new sync client on the same URL and namespace (the caller closes it)."""
        return None if self.twin is None else self.twin()

"""``redis://``, ``rediss://``, ``unix://`` and ``redis+cluster://``: the ledger for a fleet.

Each operation is one Lua script (``lua/*.lua``), loaded once with ``register_script`` and reloaded on
NOSCRIPT (restart, failover, SCRIPT FLUSH). Scripts validate every input before their first write, use
the server's ``TIME`` for leases, and keep money in int64 decimal strings. On one server, script calls
go out pre-encoded on one held connection, concurrent callers' together in one round trip, their
reserves, commits and releases as one call of ``lua/batch.lua`` (``_redis_batch.py``); redis-py's
cluster client routes a Redis Cluster's, one script call each. A usual reserve and commit run their
fast path script first and, when it answers ``G`` (anything unusual, an ended lease on any of its
counters included; nothing written), the general one, which reclaims and journals it
(``_redis_flows.Flows``): the same writes and journal either way.

Every operation is idempotent by reservation id, so redis-py's retry after a lost reply returns the
first outcome instead of charging twice. Each operation, retries included, ends by one deadline
(``_deadline.py``; ``?deadline=`` in the URL). All keys of a namespace share the hash tag ``{namespace}``,
so Redis Cluster runs each script on one node.

This module holds the store classes and their drivers (sync and async, Redis Cluster included); what
goes over the wire is ``_redis_wire.py``'s, the operations' logic ``_redis_flows.py``'s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._errors import LedgerError
from ._admin import check_adjust, check_raise, check_reset, check_set_limits
from ._base import AsyncLedger, JournalQuery, Ledger, ReservationRef, Store
from ._deadline import DEADLINE, Deadlines, LoopDeadlines, Wait, leave
from ._meta import USAGE
from ._redis_admin import adjust, get_limit, raise_limit, set_limits
from ._redis_batch import AsyncBatcher, Batcher
from ._redis_flows import Call, Flow, Flows
from ._redis_pack import Packer
from ._redis_wire import JOURNAL_MAXLEN, SCRIPTS, XRANGE_BATCH, meta_json
from ._types import Amounts, CounterSpec, JournalData, check_amount

__all__ = ["JOURNAL_MAXLEN", "AsyncRedisLedger", "RedisLedger"]


def _wrap_error(exc: Exception) -> Exception:
    import redis.exceptions as rex

    if isinstance(exc, rex.ResponseError) and "BGINVALID" in str(exc):
        return ValueError(f"the ledger refused invalid input: {exc}")
    if isinstance(exc, rex.RedisError | rex.RedisClusterException):
        return LedgerError(f"Redis ledger operation failed: {exc}")
    return exc


class _RedisBase(Store):
    _batcher: Callable[[Any, dict[str, str], Packer], Batcher | AsyncBatcher]

    def __init__(
        self, url: str, client: Any, namespace: str, journal_maxlen: int, deadline: float | None = None
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.client = client
        self.deadline = deadline
        """Seconds one operation may take, retries included, before it raises ``LedgerError`` (``None``:
        only the client's own timeouts). ``open_ledger`` sets it (``?deadline=`` in the URL)."""
        self._flows = Flows(namespace, journal_maxlen)
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
        encoding = getattr(client, "connection_pool", None)
        encoding = "utf-8" if encoding is None else encoding.connection_kwargs.get("encoding", "utf-8")
        shas = {name: script.sha for name, script in self._scripts.items()}
        self._pack = Packer(shas, encoding, SCRIPTS["batch"])
        cluster = hasattr(client, "nodes_manager")
        self._batch = None if cluster else self._batcher(client, SCRIPTS, self._pack)
        """Script calls go through it: pre-encoded, on one held connection, concurrent ones in one round
        trip (``_redis_batch.py``). Redis Cluster: redis-py's cluster client, which routes each call."""

    def _late(self) -> LedgerError:
        return LedgerError(
            f"Redis ledger operation failed: no answer within its {self.deadline} s deadline "
            "(?deadline= in the ledger URL)"
        )

    def _past(self, exc: Exception, now: float, end: float) -> Exception:
        """``exc`` as the store raises it: a backend error that ends an operation once its deadline
        (``end``) has passed is the deadline's, whichever of the client's timeout and the deadline fired
        first (on a stalled host both can be due at once)."""
        wrapped = _wrap_error(exc)
        return self._late() if isinstance(wrapped, LedgerError) and now >= end else wrapped

    def _run(self, flow: Flow, *, each_call: bool = False) -> Any:
        """Perform ``flow``'s calls (``RedisLedger``: the result; ``AsyncRedisLedger``: an awaitable)."""
        raise NotImplementedError

    # The operations, behind the public methods ``Store`` makes from ``Ledger``'s declarations; the
    # same for the sync and the async store, whose ``_run`` differs.

    def _reserve(self, *args: Any) -> Any:
        return self._run(self._flows.checked_reserve(*args))

    def _commit(self, reservation: ReservationRef, actual: Amounts, meta: Mapping[str, Any] | None) -> Any:
        # a guarded commit's compact usage (its reservation's meta has the model: _meta.restore)
        usage = meta.get(USAGE) if type(meta) is JournalData else None
        return self._run(self._flows.resolve(reservation, actual, meta_json(meta), usage))

    def _release(self, reservation: ReservationRef, meta: Mapping[str, Any] | None) -> Any:
        return self._run(self._flows.resolve(reservation, None, meta_json(meta)))

    def _status(self, counters: Iterable[CounterSpec]) -> Any:
        return self._run(self._flows.status(list(counters)))

    def _set_limit(self, counter: CounterSpec, limit: int) -> Any:
        return self._run(self._flows.set_limit(counter, check_amount(limit, "limit")))

    def _get_limit(self, counter: CounterSpec) -> Any:
        return self._run(get_limit(self._flows, counter))

    def _clear_limit(self, counter: CounterSpec) -> Any:
        return self._run(self._flows.set_limit(counter, None))

    def _adjust(self, *args: Any) -> Any:
        return self._run(adjust(self._flows, *check_adjust(*args), given=args[-1] is not None))

    def _reset(self, *args: Any) -> Any:
        return self._run(adjust(self._flows, *check_reset(*args), given=args[-1] is not None))

    def _raise_limit(self, *args: Any) -> Any:
        return self._run(raise_limit(self._flows, *check_raise(*args)))

    def _set_limits(self, *args: Any) -> Any:
        return self._run(set_limits(self._flows, *check_set_limits(*args)))

    def _history(self, *query: Any) -> Any:
        return self._run(self._flows.history(JournalQuery.parse(*query)), each_call=True)

    def _journal_complete_since(self) -> Any:
        return self._run(self._flows.journal_complete_since())

    def _send(self, call: Call) -> Any:
        """Issue one call on the client: a reply (sync client) or an awaitable (async client)."""
        batch = self._batch
        if batch is not None and call.op in SCRIPTS:
            return batch.call(call.op, self._pack(call))
        if call.op == "hmget":
            return self.client.hmget(call.keys[0], list(call.args))
        if call.op == "hget":
            return self.client.hget(call.keys[0], call.args[0])
        if call.op == "xrange":
            return self.client.xrange(call.keys[0], call.args[0], call.args[1], count=XRANGE_BATCH)
        if call.op == "xlen":
            return self.client.xlen(call.keys[0])
        if call.op == "xinfo":
            return self.client.xinfo_stream(call.keys[0])
        return self._scripts[call.op](keys=list(call.keys), args=list(call.args))


class RedisLedger(_RedisBase, Ledger):
    """Sync Redis (or Valkey, or Redis Cluster) ledger."""

    _batcher = Batcher

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
        now = time.monotonic()
        wrapped = self._past(exc, now, end)
        if now >= end and isinstance(wrapped, LedgerError):  # the deadline cut it short
            self._stale_nodes = hasattr(self.client, "nodes_manager")
        return wrapped

    def close(self) -> None:
        if isinstance(self._batch, Batcher):
            self._batch.close()
        nodes = self.client.get_nodes() if hasattr(self.client, "get_nodes") else []
        self.client.close()
        for node in nodes:  # redis-py's RedisCluster.close() leaves the node pools' sockets open
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()


class AsyncRedisLedger(_RedisBase, AsyncLedger):
    """Async Redis ledger (redis.asyncio), the same scripts and flows as ``RedisLedger``."""

    _batcher = AsyncBatcher

    async def _run(self, flow: Flow, *, each_call: bool = False) -> Any:
        """Run ``flow`` within one deadline (see ``RedisLedger._run``): a command still running then is
        cancelled, and redis-py drops its connection. ``asyncio.timeout_at``'s rule, by the loop's
        shared ``Deadlines`` (``_deadline.py``)."""
        loop = asyncio.get_running_loop()
        deadlines: Deadlines | None = None
        end = math.inf
        if self.deadline is not None:
            seconds = self.deadline
            current = asyncio.current_task(loop)
            if current is None:
                raise RuntimeError("the Redis ledger's deadline needs a task (as asyncio.timeout does)")
            task: asyncio.Task[Any] = current
            deadlines = self._deadlines.of(loop)
            end = loop.time() + seconds
        entry: Wait | None = None
        reply: Any = None
        try:
            while True:
                call = flow.send(reply)
                if deadlines is not None:
                    if each_call:
                        end = loop.time() + seconds
                    entry = deadlines.enter(task, end)
                try:
                    reply = await self._send(call)
                except BaseException as exc:
                    if leave(entry) and isinstance(exc, asyncio.CancelledError):
                        timeout = TimeoutError()  # (as asyncio.timeout_at raises it)
                        timeout.__cause__ = exc
                        raise self._late() from timeout
                    if isinstance(exc, TimeoutError):  # (redis-py raises its own TimeoutError)
                        raise self._late() from exc
                    if not isinstance(exc, Exception):
                        raise
                    wrapped = self._past(exc, loop.time(), end)
                    if wrapped is exc:
                        raise
                    raise wrapped from exc
                leave(entry)
        except StopIteration as done:
            return done.value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadlines = LoopDeadlines()
        """Its calls' deadlines on the loop it runs on (one timer for all of them)."""

    async def aclose(self) -> None:
        if isinstance(self._batch, AsyncBatcher):
            await self._batch.aclose()
        await self.client.aclose()

    twin: Callable[[], Ledger] | None = None
    """Opens a sync store on the same URL and namespace (``open_async_ledger`` sets it)."""

    def sync_twin(self) -> Ledger | None:
        """A new sync client on the same URL and namespace (the caller closes it)."""
        return None if self.twin is None else self.twin()

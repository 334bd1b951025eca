"""Group commit for the Redis stores: the held connections that carry the script calls of many
concurrent callers in shared round trips (their RESP bytes: ``_redis_pack``).

A caller that finds a lane free (``LANES`` round trips may be in flight, each on its own held
connection) leads at once (no timer: an uncontended call pays nothing); callers that arrive while the
lanes are busy queue up, and the next leader (the first of them, woken by a leader that is done) sends
them all in one write and hands each its own reply. Queued reserves, commits and releases go as ONE
``EVALSHA`` of ``lua/batch.lua``, which runs each as its own script would (its own outcome: one's
refusal or error never touches another's) and replies once per operation: the per-call prelude, script
dispatch, framing and decoding are paid once a batch. Other calls follow as their own commands in the
same write. An error reply reaches only its caller; a
connection error or a deadline reaches the callers whose replies were not read yet, and each retries on
its own (redis-py's ``Retry`` of the client: every script is idempotent by reservation id, so a
retry after a lost reply changes nothing). NOSCRIPT loads the script and sends the call again (the
batch script: its leader, on the same connection).

The held connections are made by the client's pool once (its connection class: ``_deadline.py`` bounds
their waits by the current deadline, which a leader sets to the latest of its batch's); a forked
child, or another event loop, makes fresh ones. A lone call on ``open_ledger``'s connections goes
straight on the socket (``_deadline.Connection.round_trip``), its first attempt outside the ``Retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import redis.exceptions as rex

from ._deadline import CONNECTIONS, DEADLINE, DeadlineExceeded
from ._redis_pack import BATCHED, Packed, Packer

__all__ = ["LANES", "MAX_BATCH", "AsyncBatcher", "Batcher"]

LANES = 1
"""Round trips in flight at once per store, each on its own held connection. More lanes let client and
server work overlap, at smaller batches and more client CPU per call: on a 2-vCPU host with client and
server on it, 2 or 3 lanes were no faster than 1 at 32 threads (benchmarks/README.md, session 7)."""

MAX_BATCH = 64
"""Calls one leader sends at most; the callers queued beyond wait for the next round trip. A batch call
runs its operations without a break (a pipeline's commands gave way to other clients at each 16 KB
the server read), so a crowd of callers holds the server for ~64 operations at a time at most."""


_DIRECT = frozenset(CONNECTIONS.values())
"""Connections with ``round_trip`` (``open_ledger``'s): one command's exchange straight on the socket."""


def _order(batch: list[_Slot]) -> list[_Slot]:
    """Other calls first, then the batchable ones (``Packer.wire`` sends those as one call, last)."""
    if all(slot.command[0] in BATCHED for slot in batch):
        return batch
    return [s for s in batch if s.command[0] not in BATCHED] + [s for s in batch if s.command[0] in BATCHED]


def _spread(reply: Any, count: int, replies: list[Any]) -> None:
    """The batch call's reply as ``count`` replies (an error reply of the whole call: each one's)."""
    if isinstance(reply, list) and len(reply) == count:
        replies.extend(reply)  # (an operation's error reply is a ResponseError in the list)
    elif isinstance(reply, rex.ResponseError):
        replies.extend([reply] + [_copy(reply) for _ in range(count - 1)])
    else:
        error = rex.ResponseError(f"BGINVALID the batch script replied {reply!r}")
        replies.extend([error] + [_copy(error) for _ in range(count - 1)])


class _Slot:
    """One caller's command in the queue, then its outcome."""

    __slots__ = ("command", "deadline", "done", "error", "lead", "reply", "waiter")

    def __init__(self, command: Packed, deadline: float | None) -> None:
        self.command = command
        self.deadline = deadline
        self.reply: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False
        self.waiter: Any = None  # a held lock (threads) or a future (asyncio) the caller waits on

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.reply


def _outcome(reply: Any) -> Any:
    if isinstance(reply, rex.ResponseError):
        raise reply
    return reply


def _copy(exc: BaseException) -> BaseException:
    """The same error for another caller (an exception object is raised in one thread only)."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        copy = rex.ConnectionError(str(exc))
    copy.__dict__.update(exc.__dict__)
    return copy


class _ConnectFailed(Exception):
    """Carries ``error``, raised while connecting, past the ``Retry``: redis-py's connection already
    retried the connect (as for a command of its own, whose retry does not repeat a failed connect)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _next(queue: deque[_Slot]) -> _Slot | None:
    """The first queued caller not yet told to lead (with several lanes, another may have been)."""
    for slot in queue:
        if not slot.lead:
            return slot
    return None


def _take(queue: deque[_Slot], mine: _Slot) -> list[_Slot]:
    """A leader's batch: its own call and the queued ones, up to ``MAX_BATCH``, but those of callers
    told to lead (they send theirs on their own lanes); ``queue`` keeps the others."""
    batch = [mine]
    kept: list[_Slot] = []
    for slot in queue:
        if slot is not mine:
            (kept if slot.lead or len(batch) >= MAX_BATCH else batch).append(slot)
    queue.clear()
    queue.extend(kept)
    return batch


def _latest(batch: list[_Slot]) -> float | None:
    """The batch's I/O deadline: the latest of its callers' (``None`` if one has none)."""
    latest = 0.0
    for slot in batch:
        if slot.deadline is None:
            return None
        latest = max(latest, slot.deadline)
    return latest


def _settle(batch: list[_Slot], replies: list[Any], exc: BaseException | None) -> None:
    """Give each slot its reply (an error reply is its caller's alone), or the error that cut the
    exchange short to those whose replies were not read."""
    for slot, reply in zip(batch, replies, strict=False):
        if isinstance(reply, rex.ResponseError):
            slot.error = reply
        else:
            slot.reply = reply
    rest = batch[len(replies) :]
    if rest and exc is None:
        exc = rex.ConnectionError("the connection closed before every reply of a batch was read")
    for i, slot in enumerate(rest):
        slot.error = exc if i == 0 and isinstance(exc, Exception) else _interrupted(exc)


def _interrupted(exc: BaseException | None) -> BaseException:
    if isinstance(exc, _ConnectFailed):
        return _ConnectFailed(_copy(exc.error))
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError):
        return _copy(exc)
    # the leader was interrupted (cancelled, KeyboardInterrupt): the others' commands were lost
    # with its connection, which redis-py dropped: a connection error, retried
    return rex.ConnectionError(f"the batch's connection was dropped: {exc!r}")


class Batcher:
    """Sync group commit over the held connections of ``client`` (threads of one process)."""

    def __init__(self, client: Any, scripts: dict[str, str], pack: Packer) -> None:
        self._client = client
        self._scripts = scripts
        self._pack = pack
        self._retry = client.get_retry()
        self._fork()

    def _fork(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: deque[_Slot] = deque()
        self._busy = 0  # lanes with a leader
        self._idle: list[Any] = []  # held connections no leader is using

    def call(self, op: str, command: Packed) -> Any:
        """The reply to ``command`` (a call of the script ``op``), retried as redis-py would."""
        loaded = False
        while True:
            try:
                try:
                    return self._submit(command)
                except Exception as error:  # the retry's first failure: it goes on from there
                    if self._retry is None:
                        raise
                    first = [error]
                    return self._retry.call_with_retry(
                        partial(_again, first, self._submit, command), _nothing
                    )
            except _ConnectFailed as failed:
                raise failed.error from None
            except rex.NoScriptError:
                if loaded:
                    raise
                self._client.script_load(self._scripts[op])  # (restart, failover, SCRIPT FLUSH)
                loaded = True

    def _submit(self, command: Packed) -> Any:
        if self._pid != os.getpid():
            self._fork()  # the parent's connection and lock are not ours
        deadline = DEADLINE.get()
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded("the ledger operation's deadline passed (?deadline= in the ledger URL)")
        with self._lock:
            if self._busy >= LANES:
                slot = _Slot(command, deadline)
                waiter = slot.waiter = threading.Lock()
                waiter.acquire()
                self._queue.append(slot)
            else:
                self._busy += 1
                slot = None
        if slot is None:  # lead with one's own command only (nobody was waiting); who queues then goes next
            replies: list[Any] = []
            try:
                self._exchange([command], replies)
            finally:
                with self._lock:
                    self._pass_lead()
            reply = replies[0]
            if isinstance(reply, rex.ResponseError):
                raise reply
            return reply
        try:
            if not slot.lead:
                timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
                woken = slot.waiter.acquire(timeout=timeout)
                if not woken and self._abandon(slot):
                    raise DeadlineExceeded("no reply within the ledger operation's deadline")
                if slot.done:
                    return slot.outcome()
            self._lead(slot)
        except BaseException:  # (KeyboardInterrupt in the main thread, even between two steps here)
            self._abandon(slot)  # withdrawn if unsent, and a lead it was handed passes on
            raise
        return slot.outcome()

    def _abandon(self, slot: _Slot) -> bool:
        """A follower gives up: its command is withdrawn if not sent yet (if sent, its reply will go
        unread), and the lead it may have just been handed passes on. False if it was done."""
        with self._lock:
            if slot.done:
                return False
            if slot in self._queue:
                self._queue.remove(slot)
                if slot.lead:
                    self._pass_lead()
            return True

    def _pass_lead(self) -> None:
        """(Under the lock.) The first queued caller not already leading next leads on this lane, or
        the lane is free."""
        queue = self._queue
        follower = _next(queue) if queue else None
        if follower is None:
            self._busy -= 1
        else:
            follower.lead = True
            follower.waiter.release()

    def _lead(self, mine: _Slot) -> None:
        with self._lock:
            batch = _order(_take(self._queue, mine))
        replies: list[Any] = []
        exc: BaseException | None = None
        token = DEADLINE.set(_latest(batch))
        try:
            self._exchange([slot.command for slot in batch], replies)
        except BaseException as error:
            exc = error
        finally:
            DEADLINE.reset(token)
            _settle(batch, replies, exc)
            with self._lock:
                for slot in batch:
                    slot.done = True
                self._pass_lead()
            for slot in batch:
                if not slot.lead:
                    slot.waiter.release()
        if exc is not None and not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and the like: the leader's own

    def _exchange(self, commands: list[Packed], replies: list[Any]) -> None:
        """Send ``commands`` in one write on an idle held connection (``Packer.wire``), append each reply
        (an error reply as its exception)."""
        pack = self._pack
        data, grouped = (pack.command(commands[0]), 0) if len(commands) == 1 else pack.wire(commands)
        try:
            conn = self._idle.pop()  # (atomic: no lock needed)
        except IndexError:
            conn = self._client.connection_pool.make_connection()
        try:
            if conn._sock is None:  # (redis-py 5's sync connections have no is_connected)
                try:
                    conn.connect()
                except (rex.ConnectionError, rex.TimeoutError) as exc:
                    raise _ConnectFailed(exc) from None
            if len(commands) == 1 and type(conn) in _DIRECT:
                replies.append(conn.round_trip(data))  # (_deadline: straight on the socket)
                return
            conn.send_packed_command([data])
            for _ in range(len(commands) - grouped):
                replies.append(_read(conn))
            if grouped:
                reply = _read(conn)
                if isinstance(reply, rex.NoScriptError):  # (restart, failover, SCRIPT FLUSH): nothing ran
                    conn.send_packed_command([pack.load_batch + pack.batch(commands[-grouped:])])
                    _outcome(_read(conn))
                    reply = _read(conn)
                _spread(reply, grouped, replies)
        except BaseException:
            conn.disconnect()  # replies may be on their way: never read them as another call's
            raise
        finally:
            if self._closed:
                conn.disconnect()  # (a call that ran across close(): its connection is not kept)
            else:
                self._idle.append(conn)  # (dropped by redis-py after an error: reconnects next time)

    _closed = False

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for conn in idle:
                conn.disconnect()


def _read(conn: Any) -> Any:
    """One reply (an error reply as its exception, returned: its caller's alone)."""
    try:
        return conn.read_response()
    except rex.ResponseError as error:
        return error


async def _aread(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except rex.ResponseError as error:
        return error


def _again(first: list[Exception], submit: Callable[[Packed], Any], command: Packed) -> Any:
    """A retried call's attempt: the first one's failure again (its attempt was made outside redis-py's
    ``Retry``, which saves an uncontended call its layers), then ``submit(command)`` anew."""
    if first:
        raise first.pop()
    return submit(command)


def _nothing(error: Exception) -> None:
    """redis-py's ``Retry`` failure hook: the connection that failed was already dropped."""


class AsyncBatcher:
    """Asyncio group commit over the held connections of ``client`` (tasks of one event loop)."""

    def __init__(self, client: Any, scripts: dict[str, str], pack: Packer) -> None:
        self._client = client
        self._scripts = scripts
        self._pack = pack
        self._retry = client.get_retry()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Slot] = deque()
        self._busy = 0
        self._idle: list[Any] = []

    async def call(self, op: str, command: Packed) -> Any:
        loaded = False
        while True:
            try:
                if self._retry is None:
                    return await self._submit(command)
                return await self._retry.call_with_retry(lambda: self._submit(command), _anothing)
            except _ConnectFailed as failed:
                raise failed.error from None
            except rex.NoScriptError:
                if loaded:
                    raise
                await self._client.script_load(self._scripts[op])
                loaded = True

    async def _submit(self, command: Packed) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._rebind(loop)
        if self._busy < LANES:  # lead alone: who queues meanwhile goes next
            self._busy += 1
            replies: list[Any] = []
            try:
                await self._exchange([command], replies)
            finally:
                self._promote()
            return _outcome(replies[0])
        slot = _Slot(command, None)
        self._queue.append(slot)
        slot.waiter = loop.create_future()
        try:
            await slot.waiter
        except BaseException:  # cancelled (the store's deadline, or the caller's own)
            if slot in self._queue:
                self._queue.remove(slot)  # not sent: nothing happens
                if slot.lead:
                    self._promote()  # it was to lead next: the next one does
            raise
        if slot.done:
            return slot.outcome()
        await self._lead(slot)
        return slot.outcome()

    def _promote(self) -> None:
        queue = self._queue
        follower = _next(queue) if queue else None
        if follower is None:
            self._busy -= 1
        else:
            follower.lead = True
            if not follower.waiter.done():
                follower.waiter.set_result(None)

    async def _lead(self, mine: _Slot) -> None:
        batch = _order(_take(self._queue, mine))
        replies: list[Any] = []
        exc: BaseException | None = None
        try:
            await self._exchange([slot.command for slot in batch], replies)
        except BaseException as error:
            exc = error
        finally:
            _settle(batch, replies, exc)
            for slot in batch:
                slot.done = True
                if not slot.lead and not slot.waiter.done():
                    slot.waiter.set_result(None)
            self._promote()
        if exc is not None and not isinstance(exc, Exception):
            raise exc  # the leader's cancellation: its own

    async def _exchange(self, commands: list[Packed], replies: list[Any]) -> None:
        pack = self._pack
        data, grouped = (pack.command(commands[0]), 0) if len(commands) == 1 else pack.wire(commands)
        conn = self._idle.pop() if self._idle else self._client.connection_pool.make_connection()
        try:
            if not conn.is_connected:
                try:
                    await conn.connect()
                except (rex.ConnectionError, rex.TimeoutError) as exc:
                    raise _ConnectFailed(exc) from None
            await _write(conn, data)
            for _ in range(len(commands) - grouped):
                replies.append(await _aread(conn))
            if grouped:
                reply = await _aread(conn)
                if isinstance(reply, rex.NoScriptError):  # (restart, failover, SCRIPT FLUSH): nothing ran
                    await _write(conn, pack.load_batch + pack.batch(commands[-grouped:]))
                    _outcome(await _aread(conn))
                    reply = await _aread(conn)
                _spread(reply, grouped, replies)
        except BaseException:
            await conn.disconnect(nowait=True)  # replies may be on their way: never read as another's
            raise
        finally:
            if self._closed:
                await conn.disconnect(nowait=True)  # (a call that ran across aclose(): not kept)
            else:
                self._idle.append(conn)

    async def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Another event loop: the held connections (their streams are the old loop's) are dropped."""
        idle, self._idle = self._idle, []
        self._loop, self._queue, self._busy = loop, deque(), 0
        for conn in idle:
            with contextlib.suppress(Exception):  # the old loop is closed: its transport is gone
                await conn.disconnect(nowait=True)

    _closed = False

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()


async def _write(conn: Any, data: bytes) -> None:
    """``conn.send_packed_command(data)``, without the task ``asyncio.wait_for`` makes per write when
    the client has a ``socket_timeout``: a write to an open transport is buffered, not awaited (the
    store's deadline bounds the whole call; a dead connection fails the read that follows)."""
    writer = getattr(conn, "_writer", None)  # (redis.asyncio's stream writer, once connected)
    if writer is None or writer.transport.is_closing() or writer.transport.get_write_buffer_size():
        await conn.send_packed_command([data], False)
    else:
        writer.write(data)


async def _anothing(error: Exception) -> None:
    """redis.asyncio's ``Retry`` failure hook (awaited): the failed connection was already dropped."""

"""One deadline per Redis store operation, however many waits and retries it takes.

redis-py bounds each blocking step (connect, send, read) by its socket timeouts, and retries a command
that failed on a connection error or a timeout: against a server that accepts and never answers, the
waits add up (4 timeouts and the backoff: 8.3 s at the default 2 s). The sync store sets ``DEADLINE``
around each operation; the connections ``open_ledger`` makes (``CONNECTIONS``) let each blocking step
wait at most what is left of it, the retries' backoff (``DeadlineBackoff``) too, and once it has passed
the next step raises ``DeadlineExceeded`` (a redis-py ``TimeoutError``, which the store wraps in
``LedgerError``). A lost reply's connection error is immediate, so its retry still runs, within the
deadline. The async store's waits end by ``Deadlines``: ``asyncio.timeout_at``'s rule, one timer per
store and event loop (below).
"""

from __future__ import annotations

import asyncio
import bisect
import socket
import time
from collections import deque
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import redis.connection
import redis.exceptions
from redis.backoff import ExponentialBackoff

__all__ = [
    "CONNECTIONS",
    "DEADLINE",
    "DeadlineBackoff",
    "DeadlineExceeded",
    "Deadlines",
    "RedisTimeout",
    "Wait",
    "LoopDeadlines",
    "leave",
]

RedisTimeout = redis.exceptions.TimeoutError
"""What redis-py raises when a wait times out (``DeadlineExceeded`` is one)."""

DEADLINE: ContextVar[float | None] = ContextVar("budgetguard_redis_deadline", default=None)
"""When the store operation running in this context must end (``time.monotonic()``), if one runs."""


def _timeout_attribute() -> str:
    """Where a connection keeps redis-py's ``socket_timeout``: redis-py 8's property returns
    ``_socket_timeout`` (read directly: no property frame a step), redis-py 5's is a plain attribute.
    Direct only when every connection class the store uses gets a property whose getter is the very
    code of ``return self._socket_timeout`` (one that reads the field and returns another value: not)."""
    classes = (redis.connection.Connection, redis.connection.SSLConnection,
               redis.connection.UnixDomainSocketConnection)  # fmt: skip
    for cls in classes:
        found = getattr(cls, "socket_timeout", None)
        code = getattr(found.fget, "__code__", None) if isinstance(found, property) else None
        if code is None or (code.co_code, code.co_names) != (_FIELD.co_code, _FIELD.co_names):
            return "socket_timeout"
    return "_socket_timeout"


def _field(self: Any) -> Any:
    return self._socket_timeout


_FIELD = _field.__code__


_TIMEOUT = _timeout_attribute()


class DeadlineExceeded(redis.exceptions.TimeoutError):
    """The store operation's deadline passed before this step (which was not started)."""


def _left(cap: float | None) -> float | None:
    """How long one blocking step may wait: ``cap`` (redis-py's timeout), or less when the operation's
    deadline comes first; raises once it has passed."""
    deadline = DEADLINE.get()
    return cap if deadline is None else _until(deadline, cap)


def _until(deadline: float, cap: float | None) -> float | None:
    """``_left`` for a ``deadline`` that is set."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the ledger operation's deadline passed (?deadline= in the ledger URL)")
    return left if cap is None or left < cap else cap


class DeadlineBackoff(ExponentialBackoff):
    """redis-py's exponential backoff, never sleeping past the operation's deadline."""

    def compute(self, failures: int) -> float:
        wait: float = super().compute(failures)
        deadline = DEADLINE.get()
        return wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic()))


if TYPE_CHECKING:
    _Base = redis.connection.AbstractConnection
else:
    _Base = object


class _Bounded(_Base):
    """A redis-py connection whose blocking steps end by the current operation's deadline."""

    def _connect(self) -> socket.socket:
        cap = self.socket_connect_timeout
        self.socket_connect_timeout = _left(cap)  # (a connection serves one thread at a time)
        try:
            sock: socket.socket = super()._connect()  # type: ignore[no-untyped-call, safe-super, unused-ignore]
        finally:
            self.socket_connect_timeout = cap
        return sock

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._bound()
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call, unused-ignore]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self._bound()
        return super().read_response(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]

    def _bound(self) -> None:
        sock: socket.socket | None = self._sock
        if sock is None:
            return  # connecting: _connect bounds it
        try:
            wait = _left(self.socket_timeout)
        except DeadlineExceeded:  # a reply may be on its way: the connection cannot be reused
            self.disconnect()  # type: ignore[no-untyped-call, unused-ignore]
            raise
        if sock.gettimeout() != wait:
            sock.settimeout(wait)

    def round_trip(self, data: bytes) -> Any:
        """Send ``data`` (one command's bytes) and read its reply (a reply error returned, not raised),
        as ``send_packed_command`` and ``read_response`` would, each step bounded by the deadline. When
        redis-py would only pass the bytes to the socket and the socket's to hiredis's reader (its
        hiredis parser, no health checks: ``open_ledger``'s connections; its private parts found as
        known, ``_check``, once a connect), that is done here
        without its layers (~20k instructions a call, benchmarks/README.md session 14): a socket's
        timeout is a ``TimeoutError``, its other errors and a closed connection a ``ConnectionError``,
        and any failure drops the connection (a reply may be on its way), as redis-py does."""
        sock: Any = self._sock
        fit = self._fit
        if fit is None or fit[0] is not sock:
            fit = self._fit = self._check(sock)
        if fit[1] is None or self.health_check_interval:  # type: ignore[attr-defined, unused-ignore]
            self.send_packed_command([data])
            try:
                return self.read_response()
            except redis.exceptions.ResponseError as error:
                return error
        _, parser, reader, buffer, push = fit
        cap = getattr(self, _TIMEOUT)
        try:
            # each blocking step waits at most what is left of the deadline (``_bound``, inlined)
            deadline = DEADLINE.get()
            wait = cap if deadline is None else _until(deadline, cap)
            if sock.gettimeout() != wait:
                sock.settimeout(wait)
            sock.sendall(data)
            reply = reader.gets()
            while True:
                while reply is _EMPTY:
                    if deadline is not None:
                        wait = _until(deadline, cap)
                        if sock.gettimeout() != wait:
                            sock.settimeout(wait)
                    read = sock.recv_into(buffer)
                    if not read:
                        raise redis.exceptions.ConnectionError(_CLOSED)
                    reader.feed(buffer, 0, read)
                    reply = reader.gets()
                if push is None or not isinstance(reply, push):
                    break
                parser.handle_push_response(reply)  # (as redis-py: then the reply it came before)
                cap = getattr(self, _TIMEOUT)  # (a maintenance notice's handler may have relaxed it)
                reply = reader.gets()
            if isinstance(reply, redis.exceptions.ConnectionError):  # (-LOADING: retried)
                raise reply
        except TimeoutError as exc:  # (socket.timeout; redis-py's own TimeoutError is no OSError)
            self.disconnect()  # type: ignore[no-untyped-call, unused-ignore]
            raise redis.exceptions.TimeoutError(f"Timeout talking to {self._host_error()}") from exc  # type: ignore[no-untyped-call, unused-ignore]
        except OSError as exc:
            self.disconnect()  # type: ignore[no-untyped-call, unused-ignore]
            raise redis.exceptions.ConnectionError(
                f"Error while talking to {self._host_error()}: {exc.args}"  # type: ignore[no-untyped-call, unused-ignore]
            ) from exc
        except BaseException:
            self.disconnect()  # type: ignore[no-untyped-call, unused-ignore]
            raise
        return reply

    _fit: tuple[Any, Any, Any, Any, Any] | None = None
    """What ``round_trip`` found on this connection (``_check``): its socket (a new one each connect),
    then the parser, its reader, buffer and push type, or ``None``s (redis-py's own path)."""

    def _check(self, sock: Any) -> tuple[Any, Any, Any, Any, Any]:
        """``round_trip``'s capability check, once a connect (at its first round trip): redis-py's
        internals it uses are there as it knows them (a hiredis parser and its reader, buffer, and
        ``_hiredis_PushNotificationType`` if hiredis can make pushes; a reader with no reply in whose
        ``gets()`` answers the module's "not enough data"), else ``None``s: redis-py's own path for
        this connection, however its internals were renamed or changed."""
        unfit = (sock, None, None, None, None)
        try:
            import hiredis

            parser = getattr(self, _PARSER)
            if sock is None or type(parser) is not _HIREDIS:
                return unfit
            reader, buffer = getattr(parser, _READER), getattr(parser, _BUFFER)
            made = getattr(hiredis, "PushNotification", None)  # (hiredis 3.2+; redis-py 5's parser: none)
            push = getattr(parser, _PUSH, None)
            if not (
                reader is not None
                and type(buffer) is bytearray
                and len(buffer)
                and callable(getattr(self, _HOST_ERROR))
                and push is made  # (redis-py hands hiredis's pushes to its handler, or neither has any)
                and (push is None or callable(parser.handle_push_response))
                and not reader.has_data()
                and reader.gets() is _EMPTY
            ):
                return unfit
        except Exception:  # (an attribute gone: redis-py's or hiredis's internals changed)
            return unfit
        return (sock, parser, reader, buffer, push)


_hiredis: Any
try:
    from redis._parsers import hiredis as _hiredis
except ImportError:  # (redis-py before 5: no direct round trips)
    _hiredis = None
_HIREDIS = getattr(_hiredis, "_HiredisParser", None)
_EMPTY = getattr(_hiredis, "NOT_ENOUGH_DATA", False)
"""What its reader's ``gets()`` returns until a whole reply is in (redis-py 5: ``False``)."""
_CLOSED = "Connection closed by server."  # (redis-py's words)
_PARSER, _READER, _BUFFER, _PUSH = "_parser", "_reader", "_buffer", "_hiredis_PushNotificationType"
_HOST_ERROR = "_host_error"
"""The private names of redis-py's connection and hiredis parser that ``round_trip`` uses (``_check``)."""


class Connection(_Bounded, redis.connection.Connection):
    pass


class SSLConnection(_Bounded, redis.connection.SSLConnection):
    pass


class UnixConnection(_Bounded, redis.connection.UnixDomainSocketConnection):
    pass


CONNECTIONS: dict[str, type[object]] = {
    "redis": Connection,
    "rediss": SSLConnection,
    "unix": UnixConnection,
    "redis+cluster": Connection,
}
"""The connection class for each URL scheme."""


# -- the async store: one timer per store and event loop ----------------------------------------------
# ``asyncio.timeout_at`` pushes a TimerHandle on the loop's heap per wait and cancels it when the wait
# ends; a cancelled handle stays in the heap until it reaches the top, and every push and pop compares
# handles in Python: at 32 tasks, ~1,000 dead handles and 79k instructions a guarded pair
# (benchmarks/README.md, session 11). ``Deadlines`` (a store's, per loop) keeps the same rule with one
# queue, sorted by time, and one TimerHandle armed at or before its earliest waiting entry: a wait
# still running at its deadline has its task cancelled; that cancellation, unless something else
# cancelled the task too, is the deadline's (``leave`` says so: the store raises its deadline error),
# and the task's ``cancelling()`` count is restored.

_WAITING, _EXPIRED, _LEFT = 0, 1, 2


class Wait:
    """One wait under a deadline (loop time): its task (``None`` once it left: an entry still queued
    behind a hung wait keeps no task alive), the task's cancel requests when it began."""

    __slots__ = ("cancelling", "owner", "state", "task", "when")

    def __init__(self, owner: Deadlines, task: asyncio.Task[Any], when: float) -> None:
        self.owner = owner
        self.task: asyncio.Task[Any] | None = task
        self.when = when
        self.cancelling = task.cancelling()
        self.state = _WAITING


def _when(entry: Wait) -> float:
    return entry.when


class Deadlines:
    """A store's deadlines on one event loop, in any order (its ``deadline`` changed meanwhile, a
    history's each call its own), served by one ``TimerHandle``.

    Invariant: while an entry waits, the timer is armed at or before its ``when``. ``enter`` arms it
    earlier when a new entry is the earliest; the timer's callback cancels every waiting entry whose
    time has come, drops the ones that left, and arms itself for the first one left, even if that one
    is due already (the loop may run a timer a clock tick early); ``leave`` only marks and trims, so a
    timer may fire for an entry that left: it then finds nothing due and re-arms (one spare callback
    per deadline's length at most). Only the loop's own thread touches the queue and the timer: an
    entry left from elsewhere (a coroutine closed by the garbage collector after its loop stopped) is
    only marked."""

    __slots__ = ("_at", "_handle", "_loop", "_queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[Wait] = deque()
        self._handle: asyncio.Handle | None = None
        self._at = 0.0  # when the timer fires

    def enter(self, task: asyncio.Task[Any], when: float) -> Wait:
        """A wait of ``task`` (the running one) that must end by ``when`` (``loop.time()``'s clock)."""
        entry = Wait(self, task, when)
        queue = self._queue
        if not queue or queue[-1].when <= when:
            queue.append(entry)  # (the usual case: the same seconds after a later now)
        else:
            bisect.insort_right(queue, entry, key=_when)
        if self._handle is None or when < self._at:
            self._arm(when)
        return entry

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        loop = self._loop
        if when <= loop.time():  # (as asyncio.timeout_at: at the loop's next turn)
            self._handle = loop.call_soon(self._fire)
        else:
            self._handle = loop.call_at(when, self._fire)
        self._at = when

    def _fire(self) -> None:
        self._handle = None
        queue = self._queue
        now = self._loop.time()
        while queue:
            entry = queue[0]
            if entry.state == _WAITING:
                if entry.when > now:
                    break
                entry.state = _EXPIRED
                if entry.task is not None:
                    entry.task.cancel()
            queue.popleft()
        if queue:
            self._arm(queue[0].when)

    def _trim(self) -> None:
        queue = self._queue
        while queue and queue[0].state == _LEFT:
            queue.popleft()


def leave(entry: Wait | None) -> bool:
    """The wait under ``entry`` ended (``None``: it had no deadline). True when its deadline cancelled
    the task and nothing else did since it began: a ``CancelledError`` is then the deadline's (what
    ``asyncio.timeout_at`` turns into ``TimeoutError``)."""
    if entry is None:
        return False
    state, task = entry.state, entry.task
    entry.state, entry.task = _LEFT, None
    if state == _EXPIRED and task is not None:  # (the timer took it off the queue)
        return task.uncancel() <= entry.cancelling
    owner = entry.owner
    queue = owner._queue
    if queue and queue[0] is entry and asyncio._get_running_loop() is owner._loop:
        owner._trim()
    return False


class LoopDeadlines:
    """A store's ``Deadlines`` for the loop it runs on, made anew when that loop changes (a store used
    from a new loop, after the old one closed with waits pending, never inherits its timer). Holds
    the last loop only, as the store's batcher does: nothing global keeps a loop alive."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[asyncio.AbstractEventLoop | None, Deadlines | None] = (None, None)

    def of(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        last = self._last  # (one read: another thread's loop may replace it meanwhile)
        found = last[1]
        if last[0] is not loop or found is None:
            found = Deadlines(loop)
            self._last = (loop, found)
        return found

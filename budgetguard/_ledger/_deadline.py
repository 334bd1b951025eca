"""One deadline per Redis store operation, however many waits and retries it takes.

redis-py bounds each blocking step (connect, send, read) by its socket timeouts, and retries a command
that failed on a connection error or a timeout: against a server that accepts and never answers, the
waits add up (4 timeouts and the backoff: 8.3 s at the default 2 s). The sync store sets ``DEADLINE``
around each operation; the connections ``open_ledger`` makes (``CONNECTIONS``) let each blocking step
wait at most what is left of it, the retries' backoff (``DeadlineBackoff``) too, and once it has passed
the next step raises ``DeadlineExceeded`` (a redis-py ``TimeoutError``, which the store wraps in
``LedgerError``). A lost reply's connection error is immediate, so its retry still runs, within the
deadline. The async store uses ``asyncio.timeout``.
"""

from __future__ import annotations

import socket
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import redis.connection
import redis.exceptions
from redis.backoff import ExponentialBackoff

__all__ = ["CONNECTIONS", "DEADLINE", "RedisTimeout", "DeadlineBackoff", "DeadlineExceeded"]

RedisTimeout = redis.exceptions.TimeoutError
"""What redis-py raises when a wait times out (``DeadlineExceeded`` is one)."""

DEADLINE: ContextVar[float | None] = ContextVar("budgetguard_redis_deadline", default=None)
"""When the store operation running in this context must end (``time.monotonic()``), if one runs."""


class DeadlineExceeded(redis.exceptions.TimeoutError):
    """The store operation's deadline passed before this step (which was not started)."""


def _left(cap: float | None) -> float | None:
    """How long one blocking step may wait: ``cap`` (redis-py's timeout), or less when the operation's
    deadline comes first; raises once it has passed."""
    deadline = DEADLINE.get()
    if deadline is None:
        return cap
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

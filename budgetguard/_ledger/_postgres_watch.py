"""Time bounds of the PostgreSQL store: the session settings that bound what the server waits for, and
a watchdog that cuts a connection whose operation outlived its deadline (a hung server).

The server bounds a lock wait (``lock_timeout``), a statement (``statement_timeout``) and a client that
stalls mid-transaction (``idle_in_transaction_session_timeout``: a frozen holder's locks are freed);
libpq's TCP keepalives find a peer that went away. None of them helps when the server itself stops
answering: the kernel keeps the connection open and a read waits forever. ``Watchdog`` then shuts the
operation's socket down once its deadline (and a grace) has passed: the blocked read returns an error
at once, the store raises ``LedgerError`` and the pool drops the connection.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

__all__ = ["KEEPALIVES", "Watchdog", "session_settings"]

KEEPALIVES = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "3"}
"""libpq's TCP keepalives (a peer gone silent found in about 11 s), unless the conninfo says otherwise."""
GRACE = 0.5
"""Seconds past an operation's deadline before the watchdog cuts its connection (the server's own
timeouts, at the deadline, answer first when the server is alive)."""


def session_settings(deadline: float) -> str:
    """The statement that bounds the server's waits of a session by ``deadline`` (seconds)."""
    ms = max(1, int(deadline * 1000))
    return (
        f"SET lock_timeout = {ms}; SET statement_timeout = {ms}; "
        f"SET idle_in_transaction_session_timeout = {2 * ms}"
    )


class Watchdog:
    """Connections in use by an operation and the time (``time.monotonic()``) each must be done by; one
    thread, running while any is, cuts those that are late (it waits on an event, not ``time.sleep``:
    a patched sleep in the caller's process is none of its business)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[int, tuple[Any, float]] = {}
        self._thread: threading.Thread | None = None
        self._tick = threading.Event()  # (never set: its wait is the thread's clock)
        self.cut = 0
        """Connections cut because their operation outlived its deadline."""

    def watch(self, conn: Any, until: float) -> None:
        with self._lock:
            self._busy[id(conn)] = (conn, until + GRACE)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="budgetguard-pg-watchdog", daemon=True)
                self._thread.start()

    def done(self, conn: Any) -> None:
        with self._lock:
            self._busy.pop(id(conn), None)

    def _run(self) -> None:
        while True:
            self._tick.wait(0.1)
            now = time.monotonic()
            with self._lock:
                if not self._busy:  # (nothing to watch: the next operation starts another thread)
                    self._thread = None
                    return
                late = [c for c, until in self._busy.values() if until <= now]
                for conn in late:
                    self._busy.pop(id(conn), None)
            for conn in late:
                self.cut += 1
                _shut(conn)


def _shut(conn: Any) -> None:
    """Shut the connection's socket down (its blocked read fails at once; libpq's own descriptor is
    left for psycopg to close)."""
    try:
        fd = os.dup(conn.fileno())
    except (OSError, ValueError, Exception):  # (closed meanwhile: nothing to cut)
        return
    try:
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

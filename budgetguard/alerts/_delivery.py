"""Delivering alerts off the guarded call's path: a bounded queue, one worker thread, retries with backoff.

A ``Sink`` is an ``on_event`` hook. Calling it only filters the event and puts it on a bounded queue
(never waits: a full queue drops the alert and counts it), so a guarded call is never slowed by a
receiver. A daemon thread delivers each alert with retries (exponential backoff with jitter, honouring
``Retry-After``); an alert that still fails is reported (logged, counted, ``on_failure``). ``flush()``
waits until the queue is delivered; ``close()`` flushes and stops the thread; queued alerts are flushed
at interpreter exit too. Repeats that ``quiet`` held back are never left untold: the next alert of their
kind and scopes says how many, and when none comes by the end of the quiet time, the worker sends the
last of them with the count (``close()`` does at once).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .._deferred import after_exit
from .._errors import ConfigurationError
from .._events import Event, EventKind

__all__ = ["DEFAULT_KINDS", "Alert", "DeliveryError", "Sink"]

logger = logging.getLogger("budgetguard.alerts")

DEFAULT_KINDS: tuple[EventKind, ...] = ("threshold", "refused", "overrun", "spend_lost", "store_unavailable")
"""What reaches people by default: thresholds crossed (``Guard(thresholds=...)``), refusals (a budget
exhausted: calls are being refused), calls that cost more than they reserved or were charged late,
spend that could not be recorded, and a store that is down."""

ONCE_PER_WINDOW: frozenset[str] = frozenset({"threshold"})
"""Kinds the ledger already emits once per window fleet-wide: never held back by ``quiet``."""


class Alert(NamedTuple):
    """One alert on its way: the event, how many like it ``quiet`` held back since the last one, and an
    id that its retries keep (a receiver tells a retry from a new alert by it)."""

    event: Event
    held: int
    id: str


class DeliveryError(Exception):
    """A delivery attempt failed; ``retry`` says whether another attempt may succeed, ``after`` how long
    the receiver asked to wait (``Retry-After``), if it did."""

    def __init__(self, message: str, *, retry: bool = True, after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.after = after


_open: weakref.WeakSet[Sink] = weakref.WeakSet()


def _flush_at_exit() -> None:
    """At exit, after the guard settled what it still owed (``_deferred.after_exit``): deliver the
    alerts those settlements told, for a few seconds at most per sink."""
    for sink in list(_open):
        sink.close(timeout=5.0)


after_exit.append(_flush_at_exit)


class Sink:
    """An ``on_event`` hook that delivers alerts in the background (see the module's docstring).

    ``kinds``: the event kinds it delivers. ``quiet``: seconds during which a repeat of the same kind on
    the same scopes is held back (counted, and said in the next alert that goes out, or at the end of
    the quiet time in an alert of the last one held back) - a store outage
    emits one ``store_unavailable`` per call; thresholds are never held back. ``max_queue``: alerts
    waiting at most (more are dropped and counted). ``attempts``, ``backoff``, ``max_backoff``: the
    retries of one alert. ``on_failure(event, error)``: told of an alert given up on."""

    def __init__(
        self,
        *,
        kinds: Iterable[EventKind] = DEFAULT_KINDS,
        quiet: float = 60.0,
        max_queue: int = 1000,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        on_failure: Callable[[Event, Exception], None] | None = None,
    ) -> None:
        whole = all(isinstance(n, int) and not isinstance(n, bool) for n in (attempts, max_queue))
        if not whole or attempts < 1 or max_queue < 1 or min(backoff, max_backoff, quiet) < 0:
            raise ConfigurationError(
                "alert sink: attempts and max_queue are whole numbers, 1 or more; backoff, max_backoff and "
                "quiet are seconds, 0 or more"
            )
        self.kinds = frozenset(kinds)
        self.quiet, self.attempts = quiet, attempts
        self.backoff, self.max_backoff = backoff, max_backoff
        self.on_failure = on_failure
        self.delivered = self.failed = self.dropped = 0
        """Alerts delivered, given up on after every attempt, and dropped because the queue was full."""
        self._queue: queue.Queue[Alert | None] = queue.Queue(max_queue)
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        self._held: dict[tuple[str, tuple[str, ...]], tuple[int, Event]] = {}
        """Per kind and scopes: the repeats held back since the last alert, and the last of them."""
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._stop = threading.Event()

    # -- the hook: never blocks ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if event.kind not in self.kinds or self._closed:
            return
        key = (event.kind, event.scopes)
        with self._lock:
            if event.kind not in ONCE_PER_WINDOW and self.quiet:
                now = time.monotonic()
                last = self._last.get(key)
                if last is not None and now - last < self.quiet:
                    self._held[key] = (self._held.get(key, (0, event))[0] + 1, event)
                    return
                self._last[key] = now
                if len(self._last) > 10_000:  # forget the keys whose quiet time has passed
                    self._last = {k: t for k, t in self._last.items() if now - t < self.quiet}
            held = self._held.pop(key, (0, event))[0]
            if not self._put(Alert(event, held, secrets.token_hex(8))):
                return
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name=f"budgetguard-alerts-{self}", daemon=True
                )
                self._worker.start()
                _open.add(self)

    def _put(self, alert: Alert) -> bool:
        """Queue ``alert`` (under the lock), or drop and count it when the queue is full."""
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning("%s: the alert queue is full; %d alerts dropped so far", self, self.dropped)
            return False
        return True

    def _tell_held(self, *, all_of_them: bool = False) -> float | None:
        """Queue an alert for each kind and scopes whose held-back repeats no later alert told by the end
        of their quiet time (``all_of_them``: every one, at once): the last repeat, with how many more were
        held back. Returns the seconds until the next such end, or None when nothing is held back."""
        with self._lock:
            now, due = time.monotonic(), None
            for key, (count, event) in list(self._held.items()):
                ends = self._last.get(key, now - self.quiet) + self.quiet
                if all_of_them or ends <= now:
                    del self._held[key]
                    self._last[key] = now  # (this alert starts a quiet time of its own)
                    self._put(Alert(event, count - 1, secrets.token_hex(8)))
                else:
                    due = ends - now if due is None else min(due, ends - now)
            return due

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert is delivered or given up on; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Deliver what is queued and what ``quiet`` held back (for at most ``timeout`` seconds), then stop;
        later events are ignored."""
        self._closed = True
        if self._worker is not None:
            self._tell_held(all_of_them=True)
        done = self.flush(timeout)
        self._stop.set()  # (ends a backoff wait of an alert still being retried)
        worker = self._worker
        if worker is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            worker.join(timeout if not done else 5.0)
        _open.discard(self)
        return done

    # -- the worker ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:  # (waking when the quiet time of repeats held back ends, to tell them)
                item = self._queue.get(timeout=self._tell_held())
            except queue.Empty:
                continue
            try:
                if item is None:
                    return
                self._deliver(item)
            except BaseException:  # (a bug: keep the worker alive for the next alert)
                logger.exception("%s: delivering an alert failed", self)
            finally:
                self._queue.task_done()

    def _deliver(self, alert: Alert) -> None:
        event = alert.event
        error: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self.send(alert)
            except DeliveryError as exc:
                error = exc
                if not exc.retry or attempt == self.attempts or self._stop.is_set():
                    break
                wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if exc.after is not None:
                    wait = max(wait, min(exc.after, self.max_backoff))
                if self._stop.wait(wait):
                    break
            except Exception as exc:  # a bug in formatting, or an unexpected error of the transport
                error = exc
                break
            else:
                self.delivered += 1
                return
        self.failed += 1
        logger.error("%s: could not deliver the %s alert (%s); gave up after %d attempts", self, event.kind,
                     error, attempt)  # fmt: skip
        if self.on_failure is not None:
            try:
                self.on_failure(event, error or DeliveryError("not delivered"))
            except Exception:
                logger.exception("%s: on_failure raised", self)

    def send(self, alert: Alert) -> None:
        """Deliver one alert (each attempt of it), or raise ``DeliveryError``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__

    __str__ = __repr__

"""When ledger state starts and ends: a counter's window and expiry, a lease's end, a record's retention.

The one definition of the ledger's time arithmetic, on epoch milliseconds of the store's clock. The
Python engine calls these functions (memory and SQLite); the Redis scripts use their mirror in
``lua/_time.lua``, function for function, and ``tests/ledger/test_time_mirror.py`` runs one table of
cases through both. A window's bounds come from ``_budgets.window_for`` (calendar and time-zone
maths, Python only): a Redis script receives them, and checks with ``in_window`` that its clock is
inside them. Everything stored ends at an instant ``t`` and is gone once ``expired(t, now)``:
SQLite's ``expires_at <= ?``, the memory heaps and Redis's ``PEXPIREAT`` / ``ZRANGEBYSCORE -inf now``
say the same.
"""

from __future__ import annotations

from .._budgets import ROLLING, ROLLING_BUCKETS, Window, rolling_bucket, rolling_span
from .._cache import Bounded
from ._types import CounterSpec

__all__ = [
    "ADMIN_TOTAL_RETENTION_MS",
    "COUNTER_RETENTION_MS",
    "RECORD_RETENTION_MS",
    "admin_record_expiry",
    "counter_expiry",
    "expired",
    "in_window",
    "lease_end",
    "prior_windows",
    "record_expiry",
    "trailing_ms",
    "window_at",
]

RECORD_RETENTION_MS = 900_000
"""A reservation is remembered this long after its lease ends (a refusal: after it was refused), for
idempotent repeats and late commits: the retry horizon. 15 minutes: longer than a client's retries of a
lost reply, a Redis failover (Sentinel or Cluster: seconds to a minute) and the guard's drain of a dropped
stream's settlement (its next operation, ``close()`` or exit), and it lets a stream outlive its lease by
that much and still be charged once. Later, a commit or release of it is refused as an unknown
reservation, and a reserve with its id starts afresh. The guard charges such a commit anyway, as a late
charge (``_settle.resolve``: a 0-hold reservation ``<id>.late`` committed at once, journaled ``late``,
an ``overrun`` event): a call that settles after that is charged, not lost. (It was a day: at 100
calls/s that kept ~8.6 million records.)"""
COUNTER_RETENTION_MS = 86_400_000
"""Counters of a finished window are kept this long after it ends, then dropped."""
ADMIN_TOTAL_RETENTION_MS = 366 * 86_400_000
"""An adjustment of a total (a window that never ends) is remembered by its id this long."""

_windows: Bounded[tuple[str, str], Window] = Bounded("ledger.windows", 1024)
"""The last window computed per (period, time zone)."""


def window_at(counter: CounterSpec, now: int) -> Window:
    """The counter's window at ``now``; calendar maths only when ``now`` leaves the last one.

    Reusing a window that contains ``now`` is exact because a (period, tz)'s windows partition time
    (``window_for``): the window holding an instant is the only one, whenever it was computed."""
    key = (counter.period, counter.tz)  # (a StrEnum hashes as its text, in C)
    found = _windows.get(key)
    if found is None or not in_window(now, found.start, found.end):
        found = _windows.put(key, counter.window(now))
    return found


def in_window(now: int, start: int, end: int | None) -> bool:
    """``now`` lies in the half-open window ``[start, end)`` (``end`` None: it never ends)."""
    return start <= now and (end is None or now < end)


def counter_expiry(window_end: int | None, counted_ms: int = 0) -> int | None:
    """When a counter of the window ending at ``window_end`` is dropped; ``None``: never (a total). A
    rolling window's bucket is counted ``counted_ms`` after it ends (``trailing_ms``), and kept as long
    again as a calendar window after that."""
    return None if window_end is None else window_end + counted_ms + COUNTER_RETENTION_MS


def trailing_ms(counter: CounterSpec) -> int:
    """How long after its bucket ends a rolling counter's bucket is still counted (the window's length:
    ``ROLLING_BUCKETS`` buckets); 0 for a calendar window."""
    return rolling_span(counter.period) if counter.tz == ROLLING else 0


def prior_windows(counter: CounterSpec, window: Window) -> list[Window]:
    """The buckets a check of a rolling counter counts besides the one holding now (``window``), newest
    first: together they cover the trailing window whatever the instant in ``window`` (at most one
    bucket more than it); none for a calendar window."""
    if counter.tz != ROLLING:
        return []
    step = rolling_bucket(counter.period)
    return [
        Window(window.start - k * step, window.start - (k - 1) * step) for k in range(1, ROLLING_BUCKETS + 1)
    ]


def lease_end(now: int, lease_ms: int) -> int:
    """When a hold taken at ``now`` for ``lease_ms`` expires (the reservation's ``expires_at``)."""
    return now + lease_ms


def record_expiry(now: int, lease_ends: int | None, retention_ms: int = RECORD_RETENTION_MS) -> int:
    """When a reservation's record is dropped: ``retention_ms`` after its lease ends, and never before
    ``retention_ms`` after ``now`` (a late resolution, or a refusal: ``lease_ends`` None)."""
    return now + retention_ms if lease_ends is None or lease_ends < now else lease_ends + retention_ms


def admin_record_expiry(
    now: int, counter_expires: int | None, total_ms: int = ADMIN_TOTAL_RETENTION_MS
) -> int:
    """When an adjustment's record (what makes its id idempotent) is dropped: with the counter it changed
    (``counter_expires``: its window's end plus ``COUNTER_RETENTION_MS``; a rolling bucket's, once no
    check counts it), so an id given again while that window's spent is kept is a repeat; ``total_ms``
    after ``now`` for a total (``counter_expires`` None). Ids are operators' ticket numbers, retried hours
    or days later: ``RECORD_RETENTION_MS`` (a client's retry horizon) is far too short for them."""
    return now + total_ms if counter_expires is None else counter_expires


def expired(ends: int, now: int) -> bool:
    """A lease, record or counter that ends at ``ends`` is over at ``now`` (the instant itself included)."""
    return ends <= now

"""The ledger: atomic, all-scope reservations. Stores are chosen by URL (``open_ledger``)."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, LedgerError
from ._base import DEFAULT_NAMESPACE, AsyncLedger, Ledger, check_namespace, check_setting
from ._local import AsyncLocalLedger, LocalLedger
from ._types import (
    CounterSpec,
    CounterStatus,
    HeldCounter,
    Hold,
    JournalEntry,
    Outcome,
    Reservation,
    ReservationError,
)

if TYPE_CHECKING:
    from ._memory import MemoryLedger
    from ._postgres import PostgresLedger
    from ._sqlite import SQLiteLedger

__all__ = [
    "AsyncLedger",
    "CounterSpec",
    "CounterStatus",
    "HeldCounter",
    "Hold",
    "JournalEntry",
    "Ledger",
    "MemoryLedger",
    "Outcome",
    "PostgresLedger",
    "Reservation",
    "ReservationError",
    "SQLiteLedger",
    "open_async_ledger",
    "open_ledger",
]

SCHEMES = ("memory://", "sqlite:///path", "redis://", "rediss://", "unix://", "redis+cluster://",
           "postgresql://")  # fmt: skip
_REDIS = ("redis", "rediss", "unix", "redis+cluster")
_POSTGRES = ("postgresql", "postgres")
_OURS = {
    "namespace": None,
    "journal_maxlen": ("memory", *_REDIS),
    "journal_retention_days": ("sqlite", *_POSTGRES),
    "deadline": (*_REDIS, *_POSTGRES),
}
"""Our URL options and the schemes each applies to (None: all); the rest of a Redis URL's query goes
to redis-py, of a PostgreSQL URL's to libpq, and memory and SQLite take nothing else."""
TIMEOUTS = {"socket_timeout": "2", "socket_connect_timeout": "2"}
"""Seconds redis-py waits to connect and for each reply, unless the URL says otherwise (without them a
hung server would block the caller forever)."""
PG_TIMEOUTS = {"connect_timeout": "5"}
"""Seconds libpq waits to connect to PostgreSQL, unless the URL says otherwise."""
DEADLINE_FACTOR = 1.5
"""An operation's deadline (``?deadline=`` seconds, retries included) defaults to this many
``socket_timeout``: one timeout, and room for a retry after a lost reply (``_deadline.py``)."""


def _split(url: str) -> tuple[str, str, dict[str, str]]:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"ledger URL {url!r} has no scheme; use one of: {', '.join(SCHEMES)}")
    from urllib.parse import parse_qsl, urlencode, urlsplit  # (at the first store opened, not at import)

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    ours = {k: query.pop(k) for k in _OURS if k in query}
    query = {k: v for k, v in query.items() if v}  # (a blank option is left out, as redis-py wants)
    for key in ours:
        schemes = _OURS[key]
        if schemes is not None and parts.scheme not in schemes:
            where = ", ".join(f"{s}://" for s in schemes)
            raise ConfigurationError(f"the ledger URL option {key} applies only to {where}; got {url!r}")
    if parts.scheme in ("memory", "sqlite") and query:
        known = ", ".join(k for k, schemes in _OURS.items() if schemes is None or parts.scheme in schemes)
        raise ConfigurationError(
            f"unknown option(s) {', '.join(query)} in the ledger URL {url!r}; {parts.scheme}:// takes {known}"
        )
    if parts.scheme in _POSTGRES:
        query = {**PG_TIMEOUTS, **query}
        ours["deadline"] = str(_pg_deadline(ours.get("deadline")))
    if parts.scheme in _REDIS:
        query = {**TIMEOUTS, **query}
        ours["deadline"] = str(_deadline_seconds(ours.get("deadline"), query["socket_timeout"]))
    base = url.split("?", 1)[0]
    rest = f"{base}?{urlencode(query)}" if query else base
    return parts.scheme, rest, ours


def _deadline_seconds(text: str | None, socket_timeout: str) -> float:
    try:
        value = DEADLINE_FACTOR * float(socket_timeout) if text is None else float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ConfigurationError(
            f"a Redis ledger URL's deadline must be a number of seconds above 0, got deadline={text!r} "
            f"(socket_timeout={socket_timeout!r}); e.g. ?socket_timeout=0.5&deadline=0.75"
        )
    return value


def _pg_deadline(text: str | None) -> float:
    from ._postgres import DEADLINE

    try:
        value = DEADLINE if text is None else float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ConfigurationError(
            f"a PostgreSQL ledger URL's deadline must be a number of seconds above 0, got deadline={text!r}"
        )
    return value


def _redacted(url: str) -> str:
    """``url`` without its password, for messages (errors end up in events and logs)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _sqlite_path(url: str) -> str:
    from urllib.parse import urlsplit

    path = urlsplit(url).path
    if not url.startswith("sqlite:///") or len(path) < 2:
        raise ConfigurationError(
            f"SQLite URL {url!r} needs a path: sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    return path[1:]


def _redis_module() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.retry
        import redis.cluster
        import redis.retry
    except ImportError:
        raise ConfigurationError(
            "the Redis store needs redis-py: pip install 'llm-budgetguard[redis]'"
        ) from None
    return redis


def _retry(redis: Any, *, asynchronous: bool = False) -> dict[str, Any]:
    """3 quick retries on connection errors and timeouts (``from_url`` alone gives none), within the
    operation's deadline. Safe: every ledger operation is idempotent by reservation id, so a retry
    after a lost reply changes nothing. (redis-py 5 retries only the errors ``retry_on_error`` names.)"""
    from ._deadline import DeadlineBackoff

    module = redis.asyncio.retry if asynchronous else redis.retry
    errors = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    return {"retry": module.Retry(DeadlineBackoff(cap=0.5, base=0.02), 3), "retry_on_error": errors}


def _namespace(given: str | None, ours: dict[str, str]) -> str:
    in_url = ours.get("namespace")
    if given is not None and in_url is not None and given != in_url:
        raise ConfigurationError(f"namespace={given!r} and the URL's ?namespace={in_url} disagree; give one")
    return check_namespace(
        given if given is not None else in_url if in_url is not None else DEFAULT_NAMESPACE
    )


def _settings(ours: dict[str, str]) -> dict[str, int]:
    return {
        key: check_setting(value, key) for key, value in ours.items() if key not in ("namespace", "deadline")
    }


def _local(scheme: str, url: str, namespace: str, ours: dict[str, str]) -> LocalLedger:
    settings = _settings(ours)
    if scheme == "memory":
        from ._memory import JOURNAL_MAXLEN, MemoryLedger  # (pickle at the first memory store)

        return MemoryLedger(
            namespace=namespace, journal_maxlen=settings.get("journal_maxlen", JOURNAL_MAXLEN)
        )
    from ._sqlite import JOURNAL_RETENTION_DAYS, SQLiteLedger  # (sqlite3 at the first SQLite store)

    days = settings.get("journal_retention_days", JOURNAL_RETENTION_DAYS)
    return SQLiteLedger(_sqlite_path(url.split("?", 1)[0]), namespace=namespace, journal_retention_days=days)


def _open_postgres(url: str, rest: str, namespace: str, ours: dict[str, str]) -> LocalLedger:
    from ._postgres import JOURNAL_RETENTION_DAYS, PostgresLedger, psycopg_modules

    psycopg_modules()  # (says what to install when psycopg is missing)
    days = _settings(ours).get("journal_retention_days", JOURNAL_RETENTION_DAYS)
    return PostgresLedger(
        rest, namespace=namespace, journal_retention_days=days, url=_redacted(url),
        deadline=float(ours["deadline"]),
    )  # fmt: skip


def __getattr__(name: str) -> Any:
    """``SQLiteLedger`` (with sqlite3), ``MemoryLedger`` and ``PostgresLedger``, imported when first
    asked for."""
    if name == "PostgresLedger":
        from ._postgres import PostgresLedger

        return PostgresLedger
    if name == "SQLiteLedger":
        from ._sqlite import SQLiteLedger

        return SQLiteLedger
    if name == "MemoryLedger":
        from ._memory import MemoryLedger

        return MemoryLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_ledger(url: str, *, namespace: str | None = None) -> Ledger:
    """Open the store at ``url``: ``memory://``, ``sqlite:///ledger.db``, ``redis://host:6379/0``,
    ``rediss://...``, ``unix:///run/redis.sock``, ``redis+cluster://host:7000``,
    ``postgresql://user@host:5432/db`` (or ``postgres://``).

    ``namespace`` (or ``?namespace=`` in the URL; 1-64 of A-Z a-z 0-9 _ . -) separates independent sets
    of budgets in one store: own counters, limits, reservations and journal (Redis: own keys; SQLite: own
    tables in the file; PostgreSQL: own rows in its tables). Each ``memory://`` opens a new, empty
    store, whatever its namespace.
    ``?journal_maxlen=`` (memory, Redis) and ``?journal_retention_days=`` (SQLite, PostgreSQL) bound
    the journal. PostgreSQL URLs take libpq's options in the query (``connect_timeout`` defaults to 5
    seconds; ``options=-csearch_path%3Dname`` puts the tables in another schema).
    Redis URLs take redis-py's options in the query; ``socket_timeout`` and ``socket_connect_timeout``
    default to 2 seconds (``TIMEOUTS``). ``?deadline=`` bounds each operation, retries included
    (default 1.5 x ``socket_timeout``): a hung server raises ``LedgerError`` then.
    """
    scheme, rest, ours = _split(url)
    ns = _namespace(namespace, ours)
    if scheme in ("memory", "sqlite"):
        return _local(scheme, url, ns, ours)
    if scheme in _POSTGRES:
        return _open_postgres(url, rest, ns, ours)
    if scheme in _REDIS:
        redis = _redis_module()
        from ._deadline import CONNECTIONS
        from ._redis import JOURNAL_MAXLEN as REDIS_MAXLEN
        from ._redis import RedisLedger

        maxlen = _settings(ours).get("journal_maxlen", REDIS_MAXLEN)
        bounded = CONNECTIONS[scheme]  # its blocking steps end by each operation's deadline
        if scheme == "redis+cluster":
            try:  # the cluster client discovers its nodes now: an unreachable cluster fails here
                client = redis.cluster.RedisCluster.from_url(
                    "redis" + rest[len("redis+cluster") :], decode_responses=True, connection_class=bounded
                )
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
                raise LedgerError(f"cannot reach the Redis Cluster at {_redacted(url)}: {exc}") from exc
        else:
            client = redis.Redis.from_url(
                rest, decode_responses=True, connection_class=bounded, **_retry(redis)
            )
        return RedisLedger(url, client, ns, maxlen, float(ours["deadline"]))
    raise ConfigurationError(f"unknown ledger URL scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def open_async_ledger(url: str, *, namespace: str | None = None) -> AsyncLedger:
    """The async twin of ``open_ledger``: the same URLs, an ``AsyncLedger``."""
    scheme, rest, ours = _split(url)
    ns = _namespace(namespace, ours)
    if scheme in ("memory", "sqlite"):
        return AsyncLocalLedger(_local(scheme, url, ns, ours), in_thread=scheme == "sqlite")
    if scheme in _POSTGRES:  # (the engine is sync: its transactions run in worker threads)
        return AsyncLocalLedger(_open_postgres(url, rest, ns, ours), in_thread=True)
    if scheme in _REDIS:
        redis = _redis_module()
        from ._redis import JOURNAL_MAXLEN as REDIS_MAXLEN
        from ._redis import AsyncRedisLedger

        maxlen = _settings(ours).get("journal_maxlen", REDIS_MAXLEN)
        if scheme == "redis+cluster":
            client = redis.asyncio.cluster.RedisCluster.from_url(
                "redis" + rest[len("redis+cluster") :], decode_responses=True
            )
        else:
            client = redis.asyncio.from_url(rest, decode_responses=True, **_retry(redis, asynchronous=True))
        ledger = AsyncRedisLedger(url, client, ns, maxlen, float(ours["deadline"]))
        ledger.twin = functools.partial(open_ledger, url, namespace=ns)
        return ledger
    raise ConfigurationError(f"unknown ledger URL scheme {scheme!r}; known: {', '.join(SCHEMES)}")

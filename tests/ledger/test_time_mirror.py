"""The ledger's time arithmetic: one table of cases through the Python definition (``_expiry.py``,
which the engine calls) and through its Lua mirror (``lua/_time.lua``, which the Redis scripts run),
on the suite's real Redis, loaded exactly as the scripts load it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from budgetguard._budgets import Period, window_for
from budgetguard._ledger import _expiry
from budgetguard._ledger._redis_wire import LIBRARY

DAY = 86_400_000
NOW = 1_733_526_000_123  # 2024-12-06, past 2^32 and 2^40: ms that need more than 32 bits
LATE = 2**53 - 10 * DAY  # the largest instants the Lua side must keep exact

HARNESS = """
local fn, a, b, c = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if fn == 'in_window' then return in_window(a, b, c) and 1 or 0 end
if fn == 'lease_end' then return lease_end(a, b) end  -- (an integer reply: exact below 2^53)
if fn == 'record_expiry' then return record_expiry(a, b, c) end
if fn == 'admin_record_expiry' then return admin_record_expiry(a, b, c) end
if fn == 'expired' then  -- a lease ending at a, on a real sorted set, looked at when b
  redis.call('ZADD', KEYS[1], ARGV[2], 'lease')
  local over = #expired_leases(KEYS[1], b) > 0
  redis.call('DEL', KEYS[1])
  return over and 1 or 0
end
return redis.error_reply('unknown function ' .. fn)
"""


def _paris_edges() -> list[tuple[int, int, int | None]]:
    """(now, start, end) at the edges of real windows, DST changes included."""
    cases = []
    for period in (Period.MINUTE, Period.HOUR, Period.DAY, Period.WEEK, Period.MONTH):
        for at in (1_711_846_800_000, 1_729_990_800_000, NOW):  # Paris spring forward, fall back, today
            w = window_for(period, "Europe/Paris", at)
            assert w.end is not None
            cases += [(n, w.start, w.end) for n in (w.start - 1, w.start, w.end - 1, w.end)]
    return cases


CASES: list[tuple[str, tuple[int | None, ...]]] = [
    *[("in_window", case) for case in _paris_edges()],
    ("in_window", (0, 0, 10)),
    ("in_window", (9, 0, 10)),
    ("in_window", (10, 0, 10)),
    ("in_window", (NOW, 0, None)),  # a total never ends
    ("in_window", (LATE, 0, None)),
    ("in_window", (LATE, LATE, LATE + 1)),
    ("lease_end", (NOW, 1)),
    ("lease_end", (NOW, 120_000)),
    ("lease_end", (NOW, 30 * DAY)),
    ("lease_end", (LATE, 30 * DAY)),
    ("record_expiry", (NOW, None, _expiry.RECORD_RETENTION_MS)),  # a refusal
    ("record_expiry", (NOW, NOW + 120_000, _expiry.RECORD_RETENTION_MS)),  # a live lease
    ("record_expiry", (NOW, NOW, _expiry.RECORD_RETENTION_MS)),  # resolved as the lease ends
    ("record_expiry", (NOW, NOW - 1, _expiry.RECORD_RETENTION_MS)),  # resolved after it
    ("record_expiry", (NOW, NOW - DAY, 1)),
    ("record_expiry", (LATE, LATE + 5, _expiry.RECORD_RETENTION_MS)),
    ("admin_record_expiry", (NOW, None, _expiry.ADMIN_TOTAL_RETENTION_MS)),  # a total's
    ("admin_record_expiry", (NOW, NOW + 2 * DAY, _expiry.ADMIN_TOTAL_RETENTION_MS)),  # with its counter
    ("admin_record_expiry", (LATE, None, 10 * DAY)),
    ("expired", (NOW, NOW - 1)),
    ("expired", (NOW, NOW)),  # the instant a lease ends, it is over
    ("expired", (NOW, NOW + 1)),
    ("expired", (LATE, LATE)),
    ("expired", (LATE + 1, LATE)),
]


def _python(fn: str, args: tuple[Any, ...]) -> int:
    if fn == "in_window":
        return int(_expiry.in_window(*args))
    if fn == "lease_end":
        return _expiry.lease_end(*args)
    if fn == "record_expiry":
        return _expiry.record_expiry(*args)
    if fn == "admin_record_expiry":
        return _expiry.admin_record_expiry(*args)
    return int(_expiry.expired(*args))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def test_the_table_covers_both_sides_of_every_edge() -> None:
    results = {fn: {_python(f, args) for f, args in CASES if f == fn} for fn, _ in CASES}
    assert results["in_window"] == {0, 1}
    assert results["expired"] == {0, 1}


@pytest.mark.parametrize(("fn", "args"), CASES, ids=[f"{fn}{args}" for fn, args in CASES])
def test_lua_mirrors_the_python_definition(
    client: redis.Redis, fn: str, args: tuple[int | None, ...]
) -> None:
    key = f"bg:{{t{secrets.token_hex(6)}}}:mirror"
    argv = [fn, *("" if a is None else str(a) for a in args)]
    reply = client.eval(LIBRARY + "\n" + HARNESS, 1, key, *argv)
    assert int(reply) == _python(fn, args)
    assert not client.exists(key)

"""The Redis scripts' int64 arithmetic at its boundaries: values of at most 15 digits are added and
compared as Lua numbers (doubles), longer ones as two base-1e9 limbs (lua/_lib.lua); both must agree
with Python's integers everywhere, around 10^15 (where one switches to the other), 2^53 (where doubles
stop being exact) and 2^63 - 1 (int64's end). Run against the suite's private Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetguard import BudgetExceededError
from budgetguard._ledger import Hold, open_ledger
from budgetguard._ledger._expiry import window_at
from budgetguard._ledger._redis import RedisLedger
from budgetguard._ledger._redis_wire import LIBRARY
from budgetguard._money import INT64_MAX
from tests.redis_server import delete_namespace

from .helpers import counter

EDGES = [0, 10**15, 2**53, INT64_MAX]
near_edge = st.builds(
    lambda edge, delta: min(max(edge + delta, 0), INT64_MAX), st.sampled_from(EDGES), st.integers(-3, 3)
)
values = st.one_of(near_edge, st.integers(0, 10**16), st.integers(0, INT64_MAX))

SCRIPT = (
    LIBRARY
    + """
local out = {}
for i = 1, #ARGV, 2 do
  local a, b = ARGV[i], ARGV[i + 1]
  out[#out + 1] = plus(a, b) or 'nil'
  out[#out + 1] = minus(a, b) or 'nil'
  out[#out + 1] = at_most(a, b) and '1' or '0'
end
return out
"""
)


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield c
    finally:
        c.close()


def _expected(a: int, b: int) -> list[str]:
    return [
        str(a + b) if a + b <= INT64_MAX else "nil",
        str(a - b) if a >= b else "nil",
        "1" if a <= b else "0",
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(values, values), min_size=1, max_size=20))
def test_plus_minus_at_most_agree_with_python_integers(
    client: redis.Redis, pairs: list[tuple[int, int]]
) -> None:
    got = client.eval(SCRIPT, 0, *(str(v) for pair in pairs for v in pair))
    assert got == [x for a, b in pairs for x in _expected(a, b)]


def test_the_edges_themselves(client: redis.Redis) -> None:
    """Every pair of edge values and their neighbours, once (the switch from numbers to limbs)."""
    edges = sorted({min(max(e + d, 0), INT64_MAX) for e in EDGES for d in (-1, 0, 1)})
    pairs = [(a, b) for a in edges for b in edges]
    got = client.eval(SCRIPT, 0, *(str(v) for pair in pairs for v in pair))
    assert got == [x for a, b in pairs for x in _expected(a, b)]


# a reservation's admission (spent + held + amount <= limit) and the held it leaves, with the counter's
# spent and held set directly: each below 10^15 takes the reserve's number path, larger ones its limbs
counter_values = st.one_of(near_edge, st.integers(0, 10**15 - 1), st.integers(0, 2**62))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spent=counter_values, held=counter_values, amount=counter_values, slack=st.integers(-2, 2))
def test_reserve_admits_exactly_up_to_the_limit(
    redis_url: str, spent: int, held: int, amount: int, slack: int
) -> None:
    total = spent + held + amount
    limit = min(max(total + slack, 0), INT64_MAX)
    namespace = "a" + secrets.token_hex(6)
    ledger = open_ledger(f"{redis_url}?namespace={namespace}")
    try:
        assert isinstance(ledger, RedisLedger)
        spec = counter("user:edge", limit=limit)
        key, _ = ledger._flows.slot(spec, window_at(spec, time.time_ns() // 1_000_000)).keys
        ledger.client.hset(key, mapping={"spent": spent, "held": held})
        if total <= limit:
            ledger.reserve([Hold(spec, amount)])
            assert int(ledger.client.hget(key, "held")) == held + amount
        else:
            with pytest.raises(BudgetExceededError):
                ledger.reserve([Hold(spec, amount)])
            assert int(ledger.client.hget(key, "held")) == held
    finally:
        ledger.close()
        delete_namespace(redis_url, namespace)

"""Hostile input on every store: scope ids built to collide or to reach other keys, and bad amounts.

Scope ids come from end users. Whatever they hold (key syntax, JSON, control characters, 10 kB, look-
alike unicode), each id gets its own counters, round-trips exactly, and on Redis every key stays inside
the namespace, in the documented shape. Bad amounts and limits are refused before anything is written.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetguard import Budget, ConfigurationError
from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, Ledger, open_ledger
from tests.ledger.cluster_close import close_cluster_client, close_ledger
from tests.ledger.test_contract import HOSTILE_IDS

from . import figures

LOOKALIKES = [
    "alice", "Alice", "alice ", " alice", "alic\u0435", "\uff41lice", "alice\u200b", "\u00e9", "e\u0301",
    "alice:global", "user:alice", "global", "user", "{alice}", "}{", "{", "alice*", "*", "?", "[a]",
    "alice\n", "\r\n", "alice\x00", "\x00", "\t", "%61lice", "alice\\", '"alice"', '", "usd', '"]',
    'alice", "usd", "day", "UTC"]', "alice\u2028", "\U0001f642", "\ud7ff", "a" * 10_000, "b" * 65_536,
    "bg:{t}:limits", "c:AAAA:0", "r:x", "-", ".", "..", "/", "0", "-1", "NaN", "null", "None", " ",
]  # fmt: skip
INCOMPRESSIBLE = [secrets.token_urlsafe(n) for n in (2_100, 6_000, 48_000)]
"""Random ids of about 2.8, 8 and 64 kB that no compression shortens (longer than a PostgreSQL btree
entry may be: rows keyed by a digest, ``_postgres_tx.digest``)."""
IDS = list(dict.fromkeys([*LOOKALIKES, *HOSTILE_IDS, *INCOMPRESSIBLE]))
KINDS = ["user", "team"]
REFUSED_IDS = ["", "\ud800", "x\udfff", "x" * (64 * 1024 + 1)]

KEY = re.compile(
    r"bg:\{[A-Za-z0-9_.-]+\}:(limits|journal|r:[A-Za-z0-9_.:-]{1,128}|c:[A-Za-z0-9_-]{24}:\d+(:l)?)"
)


def _spec(kind: str, ident: str | None, limit: int = 10**12) -> CounterSpec:
    return CounterSpec(Scope(kind, ident), Unit.USD, Period.TOTAL, limit)


def _raw(url: str) -> Any:
    base = url.split("?", 1)[0]
    if base.startswith("redis+cluster://"):
        return redis.RedisCluster.from_url(
            base.replace("redis+cluster://", "redis://"), decode_responses=True
        )
    return redis.Redis.from_url(base, decode_responses=True)


def _keys(raw: Any) -> set[str]:
    if isinstance(raw, redis.RedisCluster):
        return set(raw.scan_iter(match="*", target_nodes=redis.RedisCluster.ALL_NODES))
    return set(raw.scan_iter(match="*"))


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    store = open_ledger(store_url)
    yield store
    close_ledger(store)


def test_hostile_scope_ids_get_their_own_counters(store_url: str, ledger: Ledger) -> None:
    raw = _raw(store_url) if store_url.startswith("redis") else None
    canaries = {"user:alice": "untouched", "bg:{other}:limits": "untouched", "*": "untouched"}
    if raw is not None:
        for key, value in canaries.items():
            raw.set(key, value)
        before = _keys(raw)
    specs = [_spec(kind, ident) for kind in KINDS for ident in IDS] + [_spec("global", None)]
    for i, spec in enumerate(specs):  # a distinct amount per counter: any collision shows
        res = ledger.reserve([Hold(spec, i + 1)], id=f"h{i}")
        ledger.commit(res, {"usd": i + 1})
        ledger.set_limit(spec, 10**12 + i)
    statuses = ledger.status(specs)
    assert [s.spent for s in statuses] == [i + 1 for i in range(len(specs))]
    assert [s.limit for s in statuses] == [10**12 + i for i in range(len(specs))]
    labels = [entry.scopes[0] for entry in ledger.history()]
    assert labels == [str(s.scope) for s in specs]  # every id round-trips exactly
    assert [Scope.parse(label) for label in labels] == [s.scope for s in specs]
    if raw is not None:
        try:
            created = _keys(raw) - before
            assert all(raw.get(key) == value for key, value in canaries.items())
            for key in created:
                assert KEY.fullmatch(key), key[:200]
                assert len(key) < 200
            assert len({k for k in created if ":c:" in k and not k.endswith(":l")}) == len(specs)
        finally:
            raw.delete(*canaries)
            close_cluster_client(raw) if isinstance(raw, redis.RedisCluster) else raw.close()
    for ident in REFUSED_IDS:
        with pytest.raises(ConfigurationError):
            _spec("user", ident)
    store = store_url.split(":", 1)[0]
    figures.record("hostile_scopes", f"hostile scope ids written and read back ({store})", len(specs))
    refused = "ids refused with ConfigurationError: empty, lone surrogate, > 64 KiB (all stores)"
    figures.record("hostile_scopes", refused, len(REFUSED_IDS))
    collisions = len(specs) - len({(s.spent, s.limit) for s in statuses})
    figures.record("hostile_scopes", f"collisions ({store})", collisions)


@settings(max_examples=figures.scale(15, 500), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(ids=st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40), min_size=1, max_size=6))
def test_random_scope_ids_never_collide(store_url: str, ledger: Ledger, ids: list[str]) -> None:
    """Random unicode ids (control characters included), many examples into ONE store: every counter
    holds exactly what was committed to it across all examples."""
    expected = _expected.setdefault(store_url, {})
    specs = [_spec(kind, ident) for ident in dict.fromkeys(ids) for kind in KINDS]
    res = ledger.reserve([Hold(s, 1) for s in specs])
    ledger.commit(res, {"usd": 1})
    for spec in specs:
        expected[spec.scope] = expected.get(spec.scope, 0) + 1
    known = [_spec(scope.kind, scope.id) for scope in expected]
    assert [s.spent for s in ledger.status(known)] == list(expected.values())
    figures.record("hostile_scopes", "random unicode ids tried (Hypothesis)", len(specs))


_expected: dict[str, dict[Scope, int]] = {}


# -- amounts ------------------------------------------------------------------------------------------

BAD_INTS: list[Any] = [-1, -(2**63), 2**63, 2**64, 10**30, 1.5, 0.0, float("nan"), float("inf"), True, False,
                       "10", "abc", None, Decimal("5"), Decimal("NaN"), [1], {"usd": 1}]  # fmt: skip
BAD_USD: list[Any] = ["-1", -1, "-0.000000001", "NaN", "sNaN", "Infinity", "-inf", 1.5, float("nan"), True,
                      "abc", "", "1e-10", "0.0000000001", Decimal("1e-12"), "9223372037", 2**63, "1e30",
                      Decimal("1E+999999"), None, [1]]  # fmt: skip


def _state(ledger: Ledger, specs: list[CounterSpec]) -> Any:
    return ([(s.spent, s.held, s.limit) for s in ledger.status(specs)], ledger.history())


def test_bad_amounts_are_refused_before_any_write(ledger: Ledger, store_url: str) -> None:
    spec = _spec("user", "amounts", limit=1000)
    open_res = ledger.reserve([Hold(spec, 10)], id="open")
    before = _state(ledger, [spec])
    tried = 0
    for bad in BAD_INTS:
        attempts = [
            lambda bad=bad: ledger.reserve([Hold(spec, bad)]),
            lambda bad=bad: ledger.commit(open_res, {"usd": bad}),
            lambda bad=bad: ledger.set_limit(spec, bad),
            lambda bad=bad: CounterSpec(Scope("user", "x"), Unit.USD, Period.DAY, bad),
            lambda bad=bad: Budget("user", tokens=bad),
            lambda bad=bad: Budget("user", requests=bad),
        ]
        for attempt in attempts:
            with pytest.raises((TypeError, ValueError, ConfigurationError)):
                attempt()
            tried += 1
    for bad in BAD_USD:
        with pytest.raises((TypeError, ValueError, ConfigurationError)):
            Budget("user", usd=bad)
        tried += 1
    changed = int(_state(ledger, [spec]) != before or ledger.get_limit(spec) is not None)
    assert changed == 0  # nothing reached the store
    store = store_url.split(":", 1)[0]
    figures.record("bad_amounts", f"bad amounts and limits tried ({store})", tried)
    figures.record("bad_amounts", f"...after which the store had changed ({store})", changed)
    out = ledger.commit(open_res, {"usd": 0})  # zero is a real amount: a call that cost nothing
    assert out.charged == {Unit.USD: 0}
    assert Budget("user", usd="0").limit == 0  # and a zero limit refuses everything

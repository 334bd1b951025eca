"""The guard's compact journal data (``_ledger/_meta.py``): written short on every store, read back as
the dict reports, exports and ``history`` always saw; data in any other form reads as it was written."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import budgetguard as bg
from budgetguard import Budget, Guard
from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, open_ledger
from budgetguard._ledger._meta import expand
from budgetguard._money import to_usd
from budgetguard._report import summarize as summary

STORE_KINDS = ("memory", "sqlite", "redis")

RESPONSE = {"usage": {"prompt_tokens": 9, "completion_tokens": 5}}


def summarize(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return RESPONSE


def reply(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return {
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    }


HI = [{"role": "user", "content": "Hi"}]
FUNCTION = f"{__name__}.summarize"


@contextlib.contextmanager
def _guard(url: str, budgets: list[Budget]) -> Iterator[Guard]:
    made = Guard(url, budgets=budgets)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def guard(store_url: str) -> Iterator[Guard]:
    with _guard(store_url, [Budget("user", usd="1", per="day")]) as made:
        yield made


def _expected(cost: int, *, scopes: Any) -> dict[str, Any]:
    estimate = bg.estimate({"model": "gpt-4o-mini", "messages": HI, "max_tokens": 50})
    return {
        "model": "gpt-4o-mini",
        "attempt": 1,
        "estimated_usd": str(to_usd(estimate.cost_nano)),
        "scopes": scopes,
        "function": FUNCTION,
        "usage": {"input_tokens": 9, "output_tokens": 5},
        "cost_nano": cost,
    }


def _as_stored(store_url: str, labels: list[str]) -> Any:
    """Lists as the store gives them back: the memory store keeps the guard's tuples."""
    return tuple(labels) if store_url.startswith("memory") else labels


def test_a_guarded_call_reads_back_as_before(guard: Guard, store_url: str) -> None:
    guard.with_budget(user="alice")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
    (entry,) = guard.ledger.history()
    assert entry.event == "committed" and entry.scopes == ("user:alice",)
    cost = entry.amounts["usd"]
    assert cost > 0
    assert entry.data == _expected(cost, scopes=_as_stored(store_url, ["global", "user:alice"]))
    assert entry.model == "gpt-4o-mini"
    (streamed,) = guard.ledger.stream_history()
    assert streamed.data == entry.data


def test_scopes_the_entry_cannot_give_back_are_kept(store_url: str) -> None:
    """A call on two budgeted scopes: a refusal names only the failing one, so the call's scopes are
    journaled; a call on one scope with a second, unbudgeted, kind too."""
    budgets = [Budget("user", usd="1", per="day"), Budget("feature", usd="0.0000001", per="day")]
    with _guard(store_url, budgets) as guard:
        call = guard.with_budget(user="bob", feature="chat")(summarize)
        with pytest.raises(bg.BudgetExceededError):
            call(model="gpt-4o-mini", messages=HI, max_tokens=50)
        (refused,) = guard.ledger.history()
    assert refused.event == "refused" and refused.scopes == ("feature:chat",)
    labels = _as_stored(store_url, ["global", "user:bob", "feature:chat"])
    assert refused.data["scopes"] == labels and refused.data["attempt"] == 1
    assert "usage" not in refused.data and "cost_nano" not in refused.data
    with _guard(store_url, [Budget("user", usd="1", per="day")]) as guard:
        guard.with_budget(user="bob", team="red")(reply)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        entry = guard.ledger.history()[-1]
    assert entry.data["scopes"] == _as_stored(store_url, ["global", "user:bob", "team:red"])
    assert entry.data["usage"] == {"input_tokens": 9, "output_tokens": 5, "reasoning_tokens": 2}
    assert entry.data["function"] == f"{__name__}.reply" and entry.data["cost_nano"] == entry.amounts["usd"]


def test_a_refused_single_scope_call_gets_its_scopes_back(store_url: str) -> None:
    with _guard(store_url, [Budget("user", usd="0.0000001", per="day")]) as guard:
        with pytest.raises(bg.BudgetExceededError):
            guard.with_budget(user="carol")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        (refused,) = guard.ledger.history()
    assert refused.data["scopes"] == _as_stored(store_url, ["global", "user:carol"])
    assert refused.data["model"] == "gpt-4o-mini" and refused.data["attempt"] == 1


LONG = {
    "model": "gpt-4o",
    "attempt": 2,
    "estimated_usd": "0.0012",
    "scopes": ["global", "user:dan"],
    "function": "app.chat",
}
"""Journal data written before the compact form (and by anyone passing meta to a store): read as is."""


def test_data_in_any_other_form_reads_as_written(ledger: Any) -> None:
    counter = CounterSpec(Scope("user", "dan"), Unit.USD, Period.DAY, 10**12)
    odd = {"a": 5, "e": "x", "u": [1, 2], "s": "not scopes", "f": None}  # one-letter keys, no model marker
    for meta in (LONG, odd):
        reservation = ledger.reserve([Hold(counter, 1000)], meta=meta)
        ledger.commit(reservation, {"usd": 700}, meta={"usage": {"input_tokens": 1}, "cost_nano": 700})
    first, second = ledger.history()
    assert first.data == {**LONG, "usage": {"input_tokens": 1}, "cost_nano": 700}
    assert second.data == {**odd, "usage": {"input_tokens": 1}, "cost_nano": 700}


def test_sqlite_reports_read_the_compact_form(tmp_path: Any) -> None:
    """The SQLite journal's report columns (``GROUP BY`` in SQL) are computed from the expanded data."""
    with _guard(f"sqlite:///{tmp_path / 'l.db'}", [Budget("user", usd="1", per="day")]) as guard:
        for user in ("erin", "fay"):
            guard.with_budget(user=user)(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        by_function = summary(guard.ledger, "function", since=None)
        by_user = summary(guard.ledger, "user", since=None)
        costs = sum(e.amounts["usd"] for e in guard.ledger.history())
    rows = [(r.key, r.calls, r.input_tokens, r.output_tokens, r.cost_nano) for r in by_function.rows]
    assert rows == [(FUNCTION, 2, 18, 10, costs)]
    assert by_function.rows[0].estimated_nano == 2 * bg.estimate({"model": "gpt-4o-mini", "messages": HI,
                                                                  "max_tokens": 50}).cost_nano  # fmt: skip
    assert sorted(r.key for r in by_user.rows) == ["erin", "fay"]


def test_redis_keeps_the_compact_text(redis_url: str) -> None:
    namespace = "tmeta"
    with _guard(f"{redis_url}?namespace={namespace}", [Budget("user", usd="1", per="day")]) as guard:
        guard.with_budget(user="gil")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ((_, fields),) = client.xrange(f"bg:{{{namespace}}}:journal")
        for key in client.scan_iter(match=f"bg:{{{namespace}}}:*"):
            client.delete(key)
    finally:
        client.close()
    stored = json.loads(fields["data"])
    assert stored == {"": "gpt-4o-mini", "e": stored["e"], "f": FUNCTION, "u": [9, 5]}
    assert type(stored["e"]) is int


def test_expand_keeps_what_it_cannot_read() -> None:
    """A corrupt value stays as written; a usage of other counts stays a dict; no usd, no cost."""
    data = {"": None, "e": "0.5", "u": {"input_tokens": 3}, "late": True}
    assert expand(data, ("user:x",), {"tokens": 3}) == {
        "model": None,
        "estimated_usd": "0.5",
        "usage": {"input_tokens": 3},
        "late": True,
        "attempt": 1,
        "scopes": ["global", "user:x"],
    }
    plain = {"model": "m"}
    assert expand(plain, (), {}) is plain


def test_the_store_gets_the_compact_form(store_url: str) -> None:
    """Opened directly, a store of each kind reads what the guard wrote the same way."""
    with _guard(store_url, [Budget("user", usd="1", per="day")]) as guard:
        guard.with_budget(user="hal")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        expected = guard.ledger.history()[0].data
    if store_url.startswith("memory"):
        return  # (its journal lives in the guard's store object)
    with open_ledger(store_url) as other:
        assert other.history()[0].data == expected

"""Threshold events: once per window per threshold, fired by the commit that crosses it."""

from __future__ import annotations

import pytest

import budgetguard as bg
from budgetguard import Budget, Event

USAGE = {"prompt_tokens": 1000, "completion_tokens": 500}  # gpt-4o-mini: $0.00045 a call


def _guarded(store_url: str, events: list[Event], **kwargs: object) -> tuple[bg.Guard, object]:
    guard = bg.Guard(
        store_url, budgets=[Budget("user", usd="0.01", per="day")], on_event=events.append, **kwargs
    )  # type: ignore[arg-type]

    @guard.with_budget(user="alice")
    def call(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, object]:
        return {"usage": USAGE}

    return guard, call


def _ask(call: object, max_tokens: int = 500) -> None:
    call(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=max_tokens)  # type: ignore[operator]


def test_each_threshold_fires_once(store_url: str) -> None:
    events: list[Event] = []
    guard, call = _guarded(store_url, events)
    fired: list[tuple[int, str]] = []
    for i in range(23):
        # 22 calls reserve $0.0003 and cost $0.00045 each ($0.0099); the 23rd reserves less than the
        # $0.0001 left (max_tokens=100), costs $0.00045 and so carries the budget past 100%
        _ask(call, 500 if i < 22 else 100)
        fired += [(i, e.data["threshold"]) for e in events if e.kind == "threshold"]
        events.clear()
    # $0.00045 x 12 = $0.0054 (>= 50%), x 18 = $0.0081 (>= 80%), x 23 = $0.01035 (>= 100%)
    assert fired == [(11, "50%"), (17, "80%"), (22, "100%")]
    with pytest.raises(bg.BudgetExceededError):
        _ask(call, 100)
    assert [e for e in events if e.kind == "threshold"] == []
    guard.close()


def test_threshold_event_carries_the_counter(store_url: str) -> None:
    events: list[Event] = []
    guard, call = _guarded(store_url, events, thresholds=["0.0009"])
    _ask(call)  # $0.00045 = 4.5% of $0.01: crosses 0.09% at once
    _ask(call)  # already past it: no second event
    [event] = [e for e in events if e.kind == "threshold"]
    assert event.scopes == ("global", "user:alice")
    assert event.data == {
        "scope": "user:alice",
        "threshold": "0.09%",
        "spent": 450_000,
        "limit": 10_000_000,
        "unit": "usd",
        "period": "day",
    }
    guard.close()


def test_thresholds_must_be_fractions() -> None:
    with pytest.raises(bg.ConfigurationError):
        bg.Guard("memory://", thresholds=["0"])

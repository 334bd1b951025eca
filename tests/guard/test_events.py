"""Events: what the guard did and why, to ``on_event`` hooks and to the ``budgetguard`` logger."""

from __future__ import annotations

import dataclasses
import logging
from decimal import Decimal

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, Event, to_usd
from budgetguard._budgets import window_for
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    chat_completion,
    chat_request,
    mini_completion,
    nano,
    openai_client,
    openai_sse,
    serve,
    small_completion,
)
from tests.sdk_payloads import chat_stream_chunks

EST = budgetguard.estimate(chat_request())
COST = nano("gpt-4o", GPT4O_USAGE)


def test_committed_event(make_guard: MakeGuard) -> None:
    h = make_guard()
    create = h.guard.with_budget(
        openai_client(serve(small_completion(EST.input_tokens, 120))).chat.completions.create,
        user="alice",
        feature="chat",
    )

    create(**chat_request())

    (event,) = h.events
    cost = nano("gpt-4o", budgetguard.Usage(input_tokens=EST.input_tokens, output_tokens=120))
    (entry,) = h.history()
    assert event.reservation_id in (None, entry.reservation_id)
    assert dataclasses.replace(event, reservation_id=None, data={}) == Event(
        kind="committed",
        model="gpt-4o",
        scopes=("global", "user:alice", "feature:chat"),
        attempt=1,
        estimated=EST.cost,
        actual=to_usd(cost),
    )
    assert isinstance(event.actual, Decimal)
    assert event.data["usage"] == budgetguard.Usage(input_tokens=EST.input_tokens, output_tokens=120)
    assert 0 < event.data["duration"] < 60
    spent = {(c["scope"], c["period"]): (c["spent"], c["limit"]) for c in event.data["counters"]}
    assert spent == {
        (scope, "day"): (cost, budgetguard.to_nano(limit))
        for scope, limit in (("global", "100"), ("user:alice", "1"), ("feature:chat", "5"))
    }
    day = window_for(budgetguard.Period.DAY, "UTC", entry.ts)  # the window the store counted it in
    assert {(c["window_start"], c["window_end"]) for c in event.data["counters"]} == {(day.start, day.end)}


def test_overrun_event(make_guard: MakeGuard) -> None:
    """The response used more than the estimate (2006 prompt tokens for a one-line question)."""
    h = make_guard()
    create = h.guard.with_budget(
        openai_client(serve(chat_completion())).chat.completions.create, user="alice"
    )

    create(**chat_request())

    assert h.kinds() == ["committed", "overrun"]
    overrun = h.of("overrun")[0]
    assert (overrun.estimated, overrun.actual) == (EST.cost, to_usd(COST))
    assert overrun.actual > overrun.estimated
    (entry,) = h.history()
    assert entry.data["overrun"] is True


def test_refused_and_routed_events(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001")])
    create = h.guard.with_budget(
        openai_client(serve(mini_completion())).chat.completions.create,
        route=["gpt-4o", "gpt-4o-mini"],
        user="alice",
    )

    create(**chat_request())

    refused, routed, committed = (e for e in h.events if e.kind != "overrun")
    assert (refused.kind, refused.model, refused.reason, refused.attempt) == (
        "refused",
        "gpt-4o",
        "user:alice",
        1,
    )
    assert refused.estimated == EST.cost
    assert (routed.kind, routed.reason, routed.data) == (
        "routed",
        "refused on user:alice",
        {"to": "gpt-4o-mini"},
    )
    assert (committed.kind, committed.model) == ("committed", "gpt-4o-mini")


def test_usage_missing_event(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(openai_sse(chat_stream_chunks(include_usage=False)))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    for _ in create(**chat_request(stream=True)):
        pass

    assert h.kinds() == ["usage_missing", "committed"]
    assert "usage" in (h.events[0].reason or "")


def test_several_hooks_and_a_failing_call(make_guard: MakeGuard) -> None:
    other: list[Event] = []
    h = make_guard(budgets=[Budget("user", usd="0.000001")], on_event=[other.append])
    create = h.guard.with_budget(
        openai_client(serve(chat_completion())).chat.completions.create, user="alice"
    )

    with pytest.raises(BudgetExceededError):
        create(**chat_request())

    assert [e.kind for e in other] == h.kinds() == ["refused"]


def test_logging(make_guard: MakeGuard, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="budgetguard")
    h = make_guard(budgets=[Budget("user", usd="0.006")])
    create = h.guard.with_budget(
        openai_client(serve(chat_completion())).chat.completions.create, user="alice"
    )

    create(**chat_request())
    with pytest.raises(BudgetExceededError):
        create(**chat_request())

    records = [(r.name, r.levelno, r.getMessage().split()[1]) for r in caplog.records]
    assert records == [
        ("budgetguard", logging.DEBUG, "reserved"),
        ("budgetguard", logging.DEBUG, "committed"),
        ("budgetguard", logging.WARNING, "overrun"),
        # the one call carried alice's $0.006 budget past 50% and 80% at once
        ("budgetguard", logging.WARNING, "threshold"),
        ("budgetguard", logging.WARNING, "threshold"),
        ("budgetguard", logging.INFO, "refused"),
    ]
    committed = caplog.records[1].getMessage()
    assert "model=gpt-4o" in committed
    assert "user:alice" in committed
    assert f"actual=${to_usd(COST):f}" in committed
    assert "What is a budget" not in caplog.text  # prompts never reach the logs

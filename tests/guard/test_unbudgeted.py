"""Calls and jobs that no budget applies to: held on ``Guard.METERING`` (a counter with no limit), so
they are reserved, committed and journaled like any other, never refused, and never routed or warned
about. A call with a budget does not touch that counter."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

import budgetguard
from budgetguard import (
    Budget,
    BudgetExceededError,
    CounterSpec,
    Event,
    Guard,
    Hold,
    LedgerError,
    Period,
    Reservation,
    Scope,
    Unit,
    Usage,
    budget_context,
    to_usd,
)
from budgetguard import _default as guard_module
from budgetguard._money import INT64_MAX
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    async_openai_client,
    chat_completion,
    chat_request,
    mini_completion,
    nano,
    openai_client,
    serve,
)
from tests.redis_server import free_port

COST = nano("gpt-4o", GPT4O_USAGE)
METERING = Guard.METERING


def metering(guard: Guard) -> tuple[int, int]:
    """The metering counter's (spent, held)."""
    (status,) = guard.ledger.status([METERING])
    return status.spent, status.held


def test_the_metering_counter_has_no_limit() -> None:
    assert CounterSpec(Scope("global"), Unit.USD, Period.TOTAL, INT64_MAX) == METERING


def test_metered_and_enforced_calls_without_a_budget_are_journaled(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[])
    api = serve(chat_completion())
    client = openai_client(api)
    metered = h.guard.metered(client.chat.completions.create, user="alice")
    enforced = h.guard.with_budget(client.chat.completions.create, feature="search")

    metered(**chat_request())
    enforced(**chat_request())

    assert len(api.requests) == 2
    entries = h.history()
    assert [e.event for e in entries] == ["committed", "committed"]
    for entry, scopes in zip(entries, (["global", "user:alice"], ["global", "feature:search"]), strict=True):
        assert entry.model == "gpt-4o"
        assert entry.amounts["usd"] == COST
        assert entry.data["cost_nano"] == COST
        assert entry.data["usage"] == GPT4O_USAGE.to_dict()
        assert entry.data["attempt"] == 1
        assert list(entry.data["scopes"]) == scopes  # the call's scopes, for reports by user or feature
        assert tuple(entry.scopes) == ("global",)  # the counter charged
    assert metering(h.guard) == (2 * COST, 0)
    assert [e.actual for e in h.of("committed")] == [to_usd(COST)] * 2
    assert [e for e in h.events if e.kind in ("threshold", "routed", "refused", "spend_lost")] == []


async def test_async_calls_without_a_budget_are_journaled(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=[])
    client = async_openai_client(serve(chat_completion()))
    metered = h.guard.metered(client.chat.completions.create, user="alice")

    with budget_context(feature="chat"):
        await metered(**chat_request())

    (entry,) = h.history()
    assert (entry.event, entry.amounts["usd"], entry.data["cost_nano"]) == ("committed", COST, COST)
    assert entry.data["usage"] == GPT4O_USAGE.to_dict()
    assert list(entry.data["scopes"]) == ["global", "feature:chat", "user:alice"]
    assert metering(h.guard) == (COST, 0)


def test_a_failed_attempt_without_a_budget_is_released(make_guard: MakeGuard) -> None:
    """A 5xx is retried: its hold is released (journaled as such), the retry is committed."""
    from tests.guard.payloads import fail

    h = make_guard(budgets=[])
    api = serve(fail(500), chat_completion())
    h.guard.with_budget(openai_client(api).chat.completions.create)(**chat_request())

    assert [(e.event, e.data["attempt"]) for e in h.history()] == [("released", 1), ("committed", 2)]
    assert metering(h.guard) == (COST, 0)


class Recording:
    """The holds of every reservation a guard asks its store for, and what the store answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, guard: Guard) -> None:
        self.asked: list[tuple[Hold, ...]] = []
        self.held: list[Reservation] = []
        ledger = guard.ledger
        reserve = ledger.reserve

        def recording(holds: Iterable[Hold], **kwargs: Any) -> Reservation:
            holds = tuple(holds)
            self.asked.append(holds)
            reservation = reserve(holds, **kwargs)
            self.held.append(reservation)
            return reservation

        monkeypatch.setattr(ledger, "reserve", recording)


def test_a_call_with_budgets_holds_only_on_them(
    make_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_guard()  # user, feature and global budgets
    seen = Recording(monkeypatch, h.guard)
    create = h.guard.with_budget(
        openai_client(serve(chat_completion())).chat.completions.create, user="alice"
    )

    create(**chat_request())

    budgets = h.guard.counters_for([Scope("global"), Scope("user", "alice")])
    ((asked,),) = [seen.asked]
    assert [hold.counter for hold in asked] == budgets
    assert [held.counter for held in seen.held[0].held] == budgets
    assert METERING not in budgets
    assert metering(h.guard) == (0, 0)


def test_a_call_without_a_budget_holds_its_estimate_on_the_metering_counter(
    make_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guard with budgets, on a call that none of them applies to (a team budget, no team)."""
    h = make_guard(budgets=[Budget("team", usd="1", per="day")])
    seen = Recording(monkeypatch, h.guard)
    request = chat_request()
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create, user="bob")

    create(**request)

    (asked,) = seen.asked
    assert asked == (Hold(METERING, h.guard.estimator(request).cost_nano),)
    assert metering(h.guard) == (COST, 0)


def test_a_runtime_limit_on_the_metering_counter_caps_only_enforced_calls(make_guard: MakeGuard) -> None:
    """``limits set global 0 --per total`` puts a limit on this counter: ``with_budget`` calls without a
    budget are refused by it; metered calls are still only counted."""
    h = make_guard(budgets=[])
    h.ledger.set_limit(METERING, 0)
    api = serve(chat_completion())
    client = openai_client(api)
    h.guard.metered(client.chat.completions.create)(**chat_request())
    with pytest.raises(BudgetExceededError) as refused:
        h.guard.with_budget(client.chat.completions.create)(**chat_request())
    assert (refused.value.scope, refused.value.period, refused.value.limit) == ("global", "total", 0)
    assert len(api.requests) == 1
    assert metering(h.guard) == (COST, 0)


def test_no_threshold_or_routing_on_the_metering_counter(make_guard: MakeGuard) -> None:
    """Its limit is 2**63-1 nano-USD ($9.2 billion): with $1 million already metered, a threshold of
    0.01% and routing at 1% are still far off."""
    h = make_guard(budgets=[], thresholds=["0.0001", "0.5", "1"])
    prior = h.ledger.reserve([Hold(METERING, 0)])
    h.ledger.commit(prior, {"usd": budgetguard.to_nano("1000000")})
    api = serve(chat_completion(), mini_completion())
    client = openai_client(api)
    routed = h.guard.with_budget(client.chat.completions.create, route=["gpt-4o", "gpt-4o-mini"], at=0.01)

    routed(**chat_request())
    h.guard.metered(client.chat.completions.create)(**chat_request())

    assert [r["model"] for r in api.requests] == ["gpt-4o", "gpt-4o"]
    assert [e.kind for e in h.events if e.kind in ("threshold", "routed")] == []
    assert metering(h.guard)[1] == 0


def test_a_later_global_total_budget_counts_what_was_metered(make_guard: MakeGuard) -> None:
    """``Budget("global", usd=..., per="total")`` is the metering counter: the spend so far counts."""
    h = make_guard(budgets=[])
    h.guard.metered(openai_client(serve(chat_completion())).chat.completions.create)(**chat_request())

    later = Guard(h.ledger, budgets=[Budget("global", usd="1", per="total")])  # the same store
    assert later.counters_for([Scope("global")]) == [
        CounterSpec(Scope("global"), Unit.USD, Period.TOTAL, budgetguard.to_nano("1"))
    ]
    (status,) = later.ledger.status(later.counters_for([Scope("global")]))
    assert (status.spent, status.limit) == (COST, budgetguard.to_nano("1"))


def test_a_job_without_a_budget_is_journaled(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[])
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with h.guard.reserve(usd="0.50", feature="ingest") as job:
        assert metering(h.guard) == (0, budgetguard.to_nano("0.50"))  # the job's hold
        create(**chat_request())
        create(**chat_request())
        assert h.history() == []  # the calls drew on the job

    (entry,) = h.history()
    assert (entry.event, entry.amounts, tuple(entry.scopes)) == ("committed", {"usd": 2 * COST}, ("global",))
    assert entry.data["job"] == "ingest" and entry.data["calls"] == 2
    assert entry.data["cost_nano"] == 2 * COST and entry.data["model"] == "gpt-4o"
    assert entry.data["usage"] == (GPT4O_USAGE + GPT4O_USAGE).to_dict()
    assert list(entry.data["scopes"]) == ["global", "feature:ingest"]
    assert job.spent == to_usd(2 * COST)
    assert metering(h.guard) == (2 * COST, 0)
    assert [e.kind for e in h.events if e.data.get("job") == "ingest"] == ["committed"]


def test_a_job_of_tokens_without_a_budget_charges_the_metering_counter_its_cost(
    make_guard: MakeGuard,
) -> None:
    """No USD amount to hold: nothing is held while it runs; as it ends, what its calls cost is held and
    committed at once (no overrun: the hold is the cost)."""
    h = make_guard(budgets=[])
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)

    with h.guard.reserve(tokens=100_000, name="tokens-only"):
        assert metering(h.guard) == (0, 0)
        create(**chat_request())

    (entry,) = h.history()
    assert (entry.event, entry.amounts, entry.data["calls"]) == ("committed", {"usd": COST}, 1)
    assert "overrun" not in entry.data and entry.data["job"] == "tokens-only"
    assert Usage(**entry.data["usage"]) == GPT4O_USAGE
    assert metering(h.guard) == (COST, 0)
    job_events = [e for e in h.events if e.data.get("job") == "tokens-only"]
    assert [(e.kind, e.actual) for e in job_events] == [("committed", to_usd(COST))]  # no overrun event


@pytest.mark.parametrize("on_store_error", ["fail_closed", "fail_open"])
def test_a_store_outage_is_handled_as_for_budgeted_calls(on_store_error: str) -> None:
    events: list[Event] = []
    guard = Guard(f"redis://127.0.0.1:{free_port()}/0", on_event=events.append, on_store_error=on_store_error)  # type: ignore[arg-type]
    api = serve(chat_completion())
    metered = guard.metered(openai_client(api).chat.completions.create, user="alice")
    try:
        if on_store_error == "fail_closed":
            with pytest.raises(LedgerError):
                metered(**chat_request())
            assert api.requests == []
            assert [e.kind for e in events] == ["store_unavailable"]
            with pytest.raises(LedgerError), guard.reserve(usd="1"):
                pass
        else:
            metered(**chat_request())
            assert len(api.requests) == 1
            assert [e.kind for e in events] == ["store_unavailable", "spend_lost"]
            assert events[1].actual == to_usd(COST)
    finally:
        guard.close()


def test_the_default_guard_journals_before_configure(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Module-level ``metered`` / ``with_budget`` with no ``configure()``: no budgets, still journaled."""
    monkeypatch.setenv("BUDGETGUARD_URL", store_url)
    monkeypatch.setattr(guard_module, "_default", None)
    client = openai_client(serve(chat_completion()))
    metered = budgetguard.metered(client.chat.completions.create, user="a")
    guarded = budgetguard.with_budget(client.chat.completions.create, user="b")
    try:
        metered(**chat_request())
        guarded(**chat_request())
        guard = budgetguard.default_guard()
        entries = guard.ledger.history()
        assert [(e.event, e.data["cost_nano"], e.data["usage"]) for e in entries] == [
            ("committed", COST, GPT4O_USAGE.to_dict())
        ] * 2
        assert [e.data["scopes"][-1] for e in entries] == ["user:a", "user:b"]
        assert metering(guard) == (2 * COST, 0)
    finally:
        made: Guard | None = guard_module._default
        if made is not None:
            made.close()

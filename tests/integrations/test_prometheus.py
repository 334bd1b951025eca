"""The Prometheus hook against prometheus_client's real registry."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import budgetguard as bg
from budgetguard.integrations.prometheus import PrometheusHook

MESSAGES = [{"role": "user", "content": "Find the cheapest flight."}]
USAGE = {"prompt_tokens": 500, "completion_tokens": 100}
COST = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=500, output_tokens=100))


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(f"budgetguard_{name}", labels)
    assert found is not None, f"no sample {name} {labels}"
    return found


def label_values(registry: CollectorRegistry) -> set[str]:
    return {v for metric in registry.collect() for sample in metric.samples for v in sample.labels.values()}


def test_spend_holds_budgets_and_refusals_by_scope_kind_and_model() -> None:
    registry = CollectorRegistry()
    hook = PrometheusHook(registry, id_kinds=["feature"])
    guard = bg.Guard(
        "memory://",
        budgets=[
            bg.Budget("user", usd="0.001", per="day"),
            bg.Budget("feature", usd="10", per="day"),
            bg.Budget("global", usd="100", per="month"),
        ],
        on_event=hook,
    )
    seen_held: list[float] = []

    @guard.with_budget(user="{user_id}", feature="search")
    def search(*, model: str, messages: list[Any], max_tokens: int, user_id: str) -> Any:
        seen_held.append(value(registry, "held_usd", scope_kind="user", scope_id="", model=model))
        return {"usage": USAGE}

    search(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200, user_id="alice")
    search(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200, user_id="bob")
    with pytest.raises(bg.BudgetExceededError):
        search(model="gpt-4o", messages=MESSAGES, max_tokens=5_000, user_id="alice")

    est = bg.estimate({"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 200})
    assert seen_held == [pytest.approx(float(est.cost))] * 2  # held while the call runs
    user = {"scope_kind": "user", "scope_id": ""}
    assert value(registry, "held_usd", **user, model="gpt-4o-mini") == 0
    assert value(registry, "spent_usd_total", **user, model="gpt-4o-mini") == pytest.approx(float(2 * COST))
    feature = {"scope_kind": "feature", "scope_id": "search"}
    assert value(registry, "spent_usd_total", **feature, model="gpt-4o-mini") == pytest.approx(
        float(2 * COST)
    )
    assert value(registry, "refusals_total", **user, model="gpt-4o") == 1
    assert value(registry, "tokens_total", model="gpt-4o-mini", type="input") == 1000
    assert value(registry, "tokens_total", model="gpt-4o-mini", type="output") == 200

    left = value(registry, "remaining", **feature, unit="usd", period="day")
    assert left == pytest.approx(float(10 - 2 * COST))
    assert value(registry, "remaining", scope_kind="global", scope_id="", unit="usd", period="month") == (
        pytest.approx(float(100 - 2 * COST))
    )
    assert (
        registry.get_sample_value("budgetguard_remaining", {**user, "unit": "usd", "period": "day"}) is None
    )
    assert not {"alice", "bob", "user:alice"} & label_values(registry)  # no raw user ids


def test_routes_overruns_and_thresholds() -> None:
    registry = CollectorRegistry()
    guard = bg.Guard(
        "memory://", budgets=[bg.Budget("team", usd="0.001", per="day")], on_event=PrometheusHook(registry)
    )

    @guard.with_budget(team="core", route=["gpt-4o", "gpt-4o-mini"])
    def plan(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}  # more than max_tokens: overrun

    plan(model="gpt-4o", messages=MESSAGES, max_tokens=100)

    team = {"scope_kind": "team", "scope_id": ""}
    assert value(registry, "routes_total", from_model="gpt-4o", to_model="gpt-4o-mini") == 1
    assert value(registry, "refusals_total", **team, model="gpt-4o") == 1
    assert value(registry, "overruns_total", **team, model="gpt-4o-mini") == 1
    spent = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=1000, output_tokens=500))  # $0.00045 of $0.001
    assert value(registry, "spent_usd_total", **team, model="gpt-4o-mini") == pytest.approx(float(spent))
    crossed = {
        s.labels["threshold"] for m in registry.collect() for s in m.samples if m.name.endswith("thresholds")
    }
    assert crossed == set()  # 45% of the budget: no threshold yet
    plan(model="gpt-4o", messages=MESSAGES, max_tokens=100)
    assert value(registry, "thresholds_total", **team, threshold="50%") == 1
    assert value(registry, "thresholds_total", **team, threshold="80%") == 1


def test_two_hooks_can_share_a_process_with_their_own_registries() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    PrometheusHook(first)
    PrometheusHook(second, namespace="other")
    assert first.get_sample_value("budgetguard_held_usd", {}) is None  # nothing recorded yet
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusHook(first)
    with pytest.raises(TypeError):
        PrometheusHook(CollectorRegistry(), id_kinds="feature")


def test_a_job_is_counted_once() -> None:
    """The calls inside ``guard.reserve()`` report their spend; the job's own commit is not added again."""
    registry = CollectorRegistry()
    guard = bg.Guard("memory://", budgets=[bg.Budget("global", usd="100", per="month")],
                     on_event=PrometheusHook(registry))  # fmt: skip

    @guard.with_budget
    def summarise(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return {"usage": USAGE}

    with guard.reserve(usd="1", feature="ingest"):
        for _ in range(3):
            summarise(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)

    spent = sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "budgetguard_spent_usd_total" and sample.labels["scope_kind"] == "global"
    )
    assert spent == pytest.approx(float(3 * COST))
    [status] = guard.ledger.status(guard.counters_for([bg.Scope("global")]))
    assert status.spent == bg.to_nano(3 * COST)


def test_a_call_without_a_budget_is_counted_but_has_no_remaining_gauge() -> None:
    """It holds on the guard's metering counter, whose limit ($9.2 billion) is no budget to show."""
    registry = CollectorRegistry()
    guard = bg.Guard("memory://", on_event=PrometheusHook(registry))

    @guard.metered(user="alice")
    def search(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return {"usage": USAGE}

    search(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)

    spent = value(registry, "spent_usd_total", scope_kind="global", scope_id="", model="gpt-4o-mini")
    assert spent == pytest.approx(float(COST))
    assert [s for m in registry.collect() for s in m.samples if s.name == "budgetguard_remaining"] == []


def test_fitted_calls_are_counted() -> None:
    registry = CollectorRegistry()
    guard = bg.Guard(
        "memory://", budgets=[bg.Budget("team", usd="0.001", per="day")], on_event=PrometheusHook(registry)
    )

    @guard.with_budget(team="core", fit=10)
    def plan(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return {"usage": {"prompt_tokens": 10, "completion_tokens": max_tokens}}

    plan(model="gpt-4o", messages=MESSAGES, max_tokens=1000)  # $0.01 worst case: lowered to fit $0.001
    assert value(registry, "fits_total", scope_kind="team", scope_id="", model="gpt-4o") == 1
    assert registry.get_sample_value("budgetguard_refusals_total", {"scope_kind": "team", "scope_id": "",
                                                                    "model": "gpt-4o"}) is None  # fmt: skip


def test_the_forecast_gauges_follow_each_budget() -> None:
    """Beside ``remaining``: the window's burn rate so far, and when it runs out (+Inf: it lasts)."""
    registry = CollectorRegistry()
    guard = bg.Guard(
        "memory://",
        budgets=[bg.Budget("feature", usd="10", per="day"), bg.Budget("team", usd="0.0001", per="day")],
        on_event=PrometheusHook(registry, id_kinds=["feature", "team"]),
    )

    @guard.metered(feature="search", team="ops")  # (metered: may go past the team's small budget)
    def search(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return {"usage": USAGE}

    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    before = time.time()
    search(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)
    after = time.time()
    feature = {"scope_kind": "feature", "scope_id": "search", "unit": "usd", "period": "day"}
    burn = value(registry, "burn_per_hour", **feature)
    if after < midnight + 86_400:  # (the call did not straddle midnight UTC: the day's window is known)
        nano = 1e-9  # (the rate is rounded down to a nano-USD an hour)
        assert (
            float(COST) * 3600 / (after - midnight) - nano <= burn <= float(COST) * 3600 / (before - midnight)
        )
        assert (
            value(registry, "runs_out_timestamp_seconds", **feature) == midnight + 86_400
        )  # lasts: its reset
    team = {**feature, "scope_kind": "team", "scope_id": "ops"}
    ran_out = value(registry, "runs_out_timestamp_seconds", **team)
    assert math.floor(before * 1000) / 1000 <= ran_out <= time.time()  # used up: now (in whole ms)


def test_shadow_refusals_are_counted_apart() -> None:
    registry = CollectorRegistry()
    guard = bg.Guard(
        "memory://",
        budgets=[bg.Budget("user", usd="0.000001", per="day", mode="shadow")],
        on_event=PrometheusHook(registry),
    )
    ask = guard.with_budget(lambda **request: {"usage": USAGE}, user="alice")
    ask(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)  # past the limit: goes on in shadow
    user = {"scope_kind": "user", "scope_id": ""}
    assert value(registry, "shadow_refusals_total", **user, model="gpt-4o-mini") == 1
    assert registry.get_sample_value("budgetguard_refusals_total", {**user, "model": "gpt-4o-mini"}) is None

"""Shadow mode on a guard and on one budget, and refusals routed to a cheaper model as reports tell them
apart from those that reached the caller; on every store of the guard suite."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, ConfigurationError
from budgetguard._report import summarize
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

COST = nano("gpt-4o", GPT4O_USAGE)
MINI_COST = nano("gpt-4o-mini", GPT4O_USAGE)
ROUTE = ["gpt-4o", "gpt-4o-mini"]


def test_a_shadow_guard_records_what_it_would_refuse_and_refuses_nothing(make_guard: MakeGuard) -> None:
    estimate = budgetguard.estimate(chat_request("gpt-4o")).cost_nano
    h = make_guard(budgets=[Budget("user", usd="0.001"), Budget("global", usd="100")], mode="shadow")
    api = serve(chat_completion(), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request("gpt-4o"))  # past $0.001: an enforcing guard refuses it
    create(**chat_request("gpt-4o"))

    assert len(api.requests) == 2  # both sent
    h.assert_settled({"user:alice": 2 * COST, "global": 2 * COST})  # and charged exactly
    shadowed = h.of("shadow_refused")
    assert [e.data["scope"] for e in shadowed] == ["user:alice", "user:alice"]
    first = shadowed[0].data
    assert (first["limit"], first["spent"], first["held"]) == (Decimal("0.001"), 0, 0)
    assert first["requested"] == budgetguard.estimate(chat_request("gpt-4o")).cost
    assert shadowed[1].data["spent"] == budgetguard._money.to_usd(COST)
    assert "refused" not in h.kinds()
    entries = h.history(events=["shadow_refused"])
    assert [(e.scopes, dict(e.amounts), e.model) for e in entries] == [(("user:alice",), {"usd": estimate},
                                                                         "gpt-4o")] * 2  # fmt: skip
    summary = summarize(h.ledger, "user", since=None)
    assert (summary.total.calls, summary.total.refused, summary.total.shadow_refused) == (2, 0, 2)
    # the enforcing guard on the same store refuses: shadow lost no spend
    enforcing = make_guard(budgets=[Budget("user", usd="0.001"), Budget("global", usd="100")])
    with pytest.raises(BudgetExceededError):
        enforcing.guard.with_budget(openai_client(serve()).chat.completions.create, user="alice")(
            **chat_request("gpt-4o")
        )


def test_a_budget_in_shadow_beside_an_enforcing_one(make_guard: MakeGuard) -> None:
    """A tighter hourly limit tried on live traffic while the daily one enforces."""
    budgets = [Budget("user", usd="1", per="day"), Budget("user", usd="0.001", per="hour", mode="shadow")]
    h = make_guard(budgets=budgets)
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request("gpt-4o"))

    [event] = h.of("shadow_refused")
    assert (event.data["scope"], event.data["period"]) == ("user:alice", "hour")
    h.charge("user:alice", 999_000_000)  # the daily budget (the first USD counter) is nearly spent
    with pytest.raises(BudgetExceededError) as info:
        create(**chat_request("gpt-4o"))
    assert info.value.period == "day"  # the enforcing budget still refuses
    assert len(api.requests) == 1


def test_a_budget_in_shadow_never_routes_or_fits_a_call(make_guard: MakeGuard) -> None:
    """Only the enforcing budgets steer: a shadow budget past its threshold (or without room for the
    request) leaves the model and max tokens as sent, and records what it would have refused."""
    estimate = budgetguard.estimate(chat_request("gpt-4o", max_tokens=300)).cost
    budgets = [Budget("user", usd="10", per="day"), Budget("user", usd="0.002", per="hour", mode="shadow")]
    h = make_guard(budgets=budgets)
    api = serve(chat_completion(), chat_completion())
    routed = h.guard.with_budget(
        openai_client(api).chat.completions.create, route=ROUTE, at=0.5, user="alice"
    )
    routed(**chat_request("gpt-4o"))
    routed(**chat_request("gpt-4o"))  # the shadow hour is past 50% (and its limit): still gpt-4o
    assert [r["model"] for r in api.requests] == ["gpt-4o", "gpt-4o"]
    assert "routed" not in h.kinds() and len(h.of("shadow_refused")) == 2
    tight = [budgets[0], Budget("user", usd=str(estimate * 95 / 100), per="hour", mode="shadow")]
    f = make_guard(budgets=tight)
    api = serve(chat_completion())
    fitted = f.guard.with_budget(openai_client(api).chat.completions.create, fit=True, user="bob")
    fitted(**chat_request("gpt-4o", max_tokens=300))  # the shadow limit is 95% of its worst case
    assert [r["max_tokens"] for r in api.requests] == [300] and "fitted" not in f.kinds()
    [would] = f.of("shadow_refused")
    assert would.data["requested"] == estimate
    enforcing = make_guard(budgets=[budgets[0], Budget("user", usd=str(estimate * 95 / 100), per="hour")])
    api = serve(chat_completion())
    fitted = enforcing.guard.with_budget(openai_client(api).chat.completions.create, fit=True, user="carol")
    fitted(**chat_request("gpt-4o", max_tokens=300))  # the same limit enforcing: fitted
    assert [r["max_tokens"] for r in api.requests] == [284]


def test_a_shadow_guard_does_not_route_fit_or_refuse_a_missing_scope(make_guard: MakeGuard) -> None:
    h = make_guard(
        budgets=[Budget("user", usd="0.001"), Budget("global", usd="100")],
        mode="shadow",
        missing_scope="refuse",
    )
    api = serve(chat_completion(), chat_completion())
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, route=ROUTE, at=0.5, user="alice"
    )
    create(**chat_request("gpt-4o"))
    create(**chat_request("gpt-4o"))  # past the 50% threshold and the limit: still the primary model
    assert [r["model"] for r in api.requests] == ["gpt-4o", "gpt-4o"]
    assert "routed" not in h.kinds()
    bare = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)
    bare(**chat_request("gpt-4o"))  # no user id: recorded, not refused
    assert "scope_missing" in h.kinds()


def test_a_shadow_job(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("feature", usd="0.5")], mode="shadow")
    with h.guard.reserve(usd="2", feature="ingest"):
        pass
    [event] = h.of("shadow_refused")
    assert event.data["scope"] == "feature:ingest"
    assert h.spent("feature:ingest") == 0 and h.held("feature:ingest") == 0


def test_a_shadow_guard_records_a_job_that_names_no_id(make_guard: MakeGuard) -> None:
    """As a guarded call: a job without a user id goes on (without the user budgets), reported and
    flagged in its journal data; an enforcing guard refuses it."""
    budgets = [Budget("user", usd="5"), Budget("global", usd="100")]
    h = make_guard(budgets=budgets, mode="shadow", missing_scope="refuse")
    api = serve(chat_completion())
    with h.guard.reserve(usd="1", name="nightly"):
        h.guard.with_budget(openai_client(api).chat.completions.create)(**chat_request("gpt-4o"))
    assert len(api.requests) == 1
    [missing] = h.of("scope_missing")
    assert missing.data == {"missing_scope": ("user",), "job": "nightly"}
    assert "refused" not in h.kinds()
    assert h.spent("global") == COST
    [entry] = h.history(events=["committed"])
    assert list(entry.data["missing_scope"]) == ["user"] and entry.data["job"] == "nightly"
    enforcing = make_guard(budgets=budgets, missing_scope="refuse")
    with pytest.raises(budgetguard.MissingScopeError), enforcing.guard.reserve(usd="1"):
        pass


def test_modes_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="mode"):
        budgetguard.Guard("memory://", mode="warn")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="mode"):
        Budget("user", usd="1", mode="soft")  # type: ignore[arg-type]
    assert "mode='shadow'" in repr(Budget("user", usd="1", mode="shadow"))


def test_reports_tell_routed_refusals_from_those_that_reached_the_caller(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001"), Budget("global", usd="100")])
    api = serve(mini_completion())
    routed = h.guard.with_budget(openai_client(api).chat.completions.create, route=ROUTE, user="alice")
    routed(**chat_request("gpt-4o"))  # gpt-4o refused, routed to gpt-4o-mini
    plain = h.guard.with_budget(openai_client(serve()).chat.completions.create, user="alice")
    with pytest.raises(BudgetExceededError):
        plain(**chat_request("gpt-4o"))  # refused: raised to the caller

    refusals = h.history(events=["refused"])
    assert [(e.model, e.data.get("fallback")) for e in refusals] == [
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4o", None),
    ]
    for by in ("user", "model"):
        summary = summarize(h.ledger, by, since=None)
        assert (summary.total.refused, summary.total.routed, summary.total.calls) == (2, 1, 1)
        assert summary.total.as_dict()["routed"] == 1
    [row] = [r for r in summarize(h.ledger, "model", since=None).rows if r.key == "gpt-4o"]
    assert (row.refused, row.routed) == (2, 1)
    h.assert_settled({"user:alice": MINI_COST})


def test_a_rolling_budget_on_a_guard(make_guard: MakeGuard) -> None:
    """The last 24 hours (in hourly buckets): a refusal says when the oldest counted hour leaves."""
    h = make_guard(budgets=[Budget("user", usd="1", per="day", rolling=True)])
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    create(**chat_request("gpt-4o"))
    status = h.status("user:alice")
    assert status.counter.rolling and status.spent == COST
    assert status.window_end is not None and status.window_end - status.window_start == 25 * 3_600_000
    h.charge("user:alice", 1_000_000_000 - COST)  # the rest of the dollar
    with pytest.raises(BudgetExceededError) as info:
        create(**chat_request("gpt-4o"))
    assert info.value.period == "day" and info.value.spent == 1
    assert info.value.resets_at == status.resets_at  # the next hour: the window moves on then
    assert len(api.requests) == 1


def test_a_lease_never_outlives_a_rolling_window(make_guard: MakeGuard) -> None:
    """A hold is counted in a rolling window only a window long after its reservation: the guard's
    leases (calls: 2 minutes, jobs: an hour, by default) are cut to its shortest rolling window, and a
    longer one given is refused when it is given, saying what to set."""
    minute = Budget("user", usd="1", per="minute", rolling=True)
    h = make_guard(budgets=[Budget("user", usd="5", per="day", rolling=True), minute])
    assert h.guard.lease == 60
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    create(**chat_request("gpt-4o"))  # reserved with a 60 s lease: the store takes it
    assert h.spent("user:alice") == COST
    with h.guard.reserve(usd="0.01", user="alice") as job:
        assert job.lease == 60
    with pytest.raises(ConfigurationError, match=r"guard.reserve\(lease=...\) is 61 s.*at most 60 s"):
        h.guard.reserve(usd="0.01", user="alice", lease=61)
    with pytest.raises(ConfigurationError, match=r"Guard\(lease=...\) is 120 s.*at most 60 s"):
        make_guard(budgets=[minute], lease=120)
    hourly = make_guard(budgets=[Budget("user", usd="5", per="hour", rolling=True)])
    assert hourly.guard.lease == 120 and hourly.guard.reserve(usd="1", user="a").lease == 3600
    calendar = make_guard(budgets=[Budget("user", usd="5", per="minute")], lease=600)
    assert calendar.guard.lease == 600 and calendar.guard.reserve(usd="1", user="a", lease=7200).lease == 7200


def test_rolling_budgets_are_checked(tmp_path: Path) -> None:
    budget = Budget("user", usd="5", per="day", rolling=True)
    assert budget.rolling and budget.tz == "rolling" and "rolling=True" in repr(budget)
    assert not Budget("user", usd="5", per="day").rolling
    with pytest.raises(ConfigurationError, match="minute, hour, day or week"):
        Budget("user", usd="5", per="month", rolling=True)
    with pytest.raises(ConfigurationError, match="no time zone"):
        Budget("user", usd="5", per="day", rolling=True, tz="Europe/Paris")
    path = tmp_path / "budgets.toml"
    path.write_text('[[budgets]]\nscope = "user"\nusd = "5"\nper = "hour"\nrolling = true\nmode = "shadow"\n')
    [loaded] = budgetguard.load_budgets(path)
    assert loaded.rolling and loaded.mode == "shadow" and loaded.period == "hour"


async def test_an_async_shadow_guard(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=[Budget("user", usd="0.001"), Budget("global", usd="100")], mode="shadow")
    api = serve(chat_completion())
    create = h.guard.with_budget(async_openai_client(api).chat.completions.create, user="alice")

    await create(**chat_request("gpt-4o"))

    assert len(api.requests) == 1
    [event] = h.of("shadow_refused")
    assert event.data["scope"] == "user:alice"
    h.assert_settled({"user:alice": COST, "global": COST})

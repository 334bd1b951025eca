"""``fit=``: a request whose worst case does not fit what is left is sent with a lower max output tokens.

The expected values are worked out by hand from the published prices: gpt-4o is $2.50 per million input
tokens (2,500 nano-USD a token) and $10.00 per million output tokens (10,000 nano-USD a token);
claude-sonnet-4-6 is $3 / $15 per million (3,000 / 15,000 nano-USD).
"""

from __future__ import annotations

from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, ConfigurationError, Fit, Unit
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    anthropic_client,
    anthropic_message,
    async_openai_client,
    chat_request,
    openai_client,
    response,
    serve,
    small_completion,
)

IN, OUT = 2_500, 10_000  # gpt-4o, nano-USD per token
EST = budgetguard.estimate(chat_request())  # 17 input tokens, max_tokens=300
ONE_MILLI = 1_000_000  # $0.001 in nano-USD


def test_the_hand_arithmetic_holds() -> None:
    assert (EST.input_tokens, EST.output_tokens) == (17, 300)
    assert EST.cost_nano == 17 * IN + 300 * OUT == 3_042_500


def test_fit_lowers_max_tokens_to_the_largest_value_that_fits(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")])
    api = serve(small_completion(17, 90))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=50)

    create(**chat_request())

    # (1,000,000 - 17 x 2,500) / 10,000 = 95.75: 95 tokens fit (992,500), 96 do not (1,002,500)
    assert 17 * IN + 95 * OUT <= ONE_MILLI < 17 * IN + 96 * OUT
    assert api.requests[0]["max_tokens"] == 95  # what the SDK sent: the provider enforces it
    assert "max_completion_tokens" not in api.requests[0]
    (entry,) = h.committed()
    assert entry.data["fitted"] == {"from": 300, "to": 95}
    assert entry.data["estimated_usd"] == "0.0009925"
    (fitted,) = h.of("fitted")
    assert fitted.data == {"from": 300, "to": 95}
    assert fitted.estimated == budgetguard.to_usd(992_500)
    assert "refused" not in h.kinds()
    h.assert_settled({"user:alice": 17 * IN + 90 * OUT})


def test_a_request_that_fits_is_sent_unchanged(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="1", per="day")])
    api = serve(small_completion(17, 90))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=True)
    create(**chat_request())
    assert api.requests[0]["max_tokens"] == 300
    assert "fitted" not in h.committed()[0].data and not h.of("fitted")


def test_below_the_floor_the_call_is_refused_as_without_fit(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")])
    api = serve(small_completion(17, 90))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=96)

    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())  # 95 would fit, the floor asks for 96

    assert caught.value.requested == EST.cost  # refused at the request's own worst case
    assert api.requests == []
    (entry,) = h.history()
    assert (entry.event, entry.amounts) == ("refused", {"usd": EST.cost_nano})
    assert "fitted" not in entry.data and not h.of("fitted")


def test_the_default_floor_is_256_tokens(make_guard: MakeGuard) -> None:
    assert budgetguard.Fit().min_output_tokens == 256
    h = make_guard(budgets=[Budget("user", usd="0.003", per="day")])
    api = serve(small_completion(17, 90))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=True)
    create(**chat_request())  # (3,000,000 - 42,500) / 10,000 = 295.75
    assert api.requests[0]["max_tokens"] == 295
    h.set_limit("user:alice", 17 * IN + 90 * OUT + 17 * IN + 255 * OUT)  # after it: 255 left, < 256
    with pytest.raises(BudgetExceededError):
        create(**chat_request())
    assert len(api.requests) == 1


def test_input_that_does_not_fit_alone_is_refused(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.00004", per="day")])  # 40,000 < 17 x 2,500
    api = serve(small_completion(17, 90))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=1)
    with pytest.raises(BudgetExceededError):
        create(**chat_request())
    assert api.requests == []


def test_the_smallest_remaining_of_every_scope_and_unit_decides(make_guard: MakeGuard) -> None:
    budgets = [
        Budget("user", usd="0.01", per="day"),
        Budget("feature", usd="0.005", per="day"),
        Budget("user", tokens=1000, per="day"),
    ]
    h = make_guard(budgets=budgets)
    h.charge("feature:search", 4_000_000)  # feature: $0.001 left, the smallest USD remaining
    api = serve(small_completion(17, 40))
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, user="alice", feature="search", fit=10
    )

    create(**chat_request())
    assert api.requests[0]["max_tokens"] == 95  # the feature's $0.001, not the user's $0.01

    # the user's token budget: 57 spent (17 in, 40 out); a call holds 17 in + its output
    h.set_limit("user:alice", 57 + 17 + 60, Unit.TOKENS)  # 77 left: 17 in + 60 out
    h.set_limit("feature:search", 10_000_000)
    create(**chat_request())
    assert api.requests[1]["max_tokens"] == 60  # 17 + 60 tokens = 77
    assert h.committed()[-1].data["fitted"] == {"from": 300, "to": 60}


def test_per_choice_with_n(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")])
    api = serve(small_completion(17, 60))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=20)
    create(**chat_request(n=2))
    # two choices of k tokens: 42,500 + 2 x k x 10,000 <= 1,000,000 -> k = 47
    assert (api.requests[0]["max_tokens"], api.requests[0]["n"]) == (47, 2)
    assert h.committed()[0].data["fitted"] == {"from": 300, "to": 47}


def test_a_request_without_a_max_gets_the_apis_key(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")])
    api = serve(small_completion(17, 60))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=20)
    request = chat_request()
    del request["max_tokens"]
    create(**request)
    assert api.requests[0]["max_completion_tokens"] == 95 and "max_tokens" not in api.requests[0]
    assert h.committed()[0].data["fitted"] == {"from": None, "to": 95}


def test_responses_max_output_tokens(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")])
    api = serve(response())
    create = h.guard.with_budget(openai_client(api).responses.create, user="alice", fit=20)
    request = {"model": "gpt-4o", "input": "What is a budget?", "max_output_tokens": 500}
    est = budgetguard.estimate(request)
    create(**request)
    expected = (ONE_MILLI - est.input_tokens * IN) // OUT
    assert api.requests[0]["max_output_tokens"] == expected
    assert h.committed()[0].data["fitted"] == {"from": 500, "to": expected}


def test_anthropic_max_tokens(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.002", per="day")])
    api = serve(anthropic_message())
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice", fit=20)
    request = {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1024,
    }
    est = budgetguard.estimate(request)
    create(**request)
    expected = (2 * ONE_MILLI - est.input_tokens * 3_000) // 15_000
    assert api.requests[0]["max_tokens"] == expected < 1024


def test_racing_callers_shrink_what_is_left_and_the_fit_is_read_again(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")])
    ledger = h.ledger
    read = ledger.status
    reads: list[int] = []

    def status_then_a_racer_spends(counters: Any) -> Any:
        seen = read(counters)
        reads.append(seen[0].remaining)
        if len(reads) == 1:
            h.charge("user:alice", 500_000)  # after this caller read it: half is gone
        return seen

    ledger.status = status_then_a_racer_spends  # type: ignore[method-assign]
    api = serve(small_completion(17, 40))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=20)
    create(**chat_request())
    assert reads == [ONE_MILLI, 500_000]
    assert api.requests[0]["max_tokens"] == 45  # (500,000 - 42,500) / 10,000 = 45.75
    assert [e.kind for e in h.events][:2] == ["refused", "fitted"]


async def test_async_calls_are_fitted(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=[Budget("user", usd="0.001", per="day")])
    api = serve(small_completion(17, 90))
    create = h.guard.with_budget(async_openai_client(api).chat.completions.create, user="alice", fit=50)
    await create(**chat_request())
    assert api.requests[0]["max_tokens"] == 95
    assert h.committed()[0].data["fitted"] == {"from": 300, "to": 95}
    assert [e.data for e in h.of("fitted")] == [{"from": 300, "to": 95}]


def test_a_function_of_the_request_receives_the_lowered_value(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")])
    received: list[int] = []

    @h.guard.with_budget(user="alice", fit=Fit(min_output_tokens=10))
    def ask(model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        received.append(max_tokens)
        return small_completion(17, 5)

    request = chat_request()
    ask(request["model"], request["messages"], request["max_tokens"])  # positionally, too
    ask(**chat_request())
    assert received[0] == 95
    assert received[1] == (ONE_MILLI - (17 * IN + 5 * OUT) - 17 * IN) // OUT


def test_fit_needs_a_way_to_pass_the_value(make_guard: MakeGuard) -> None:
    h = make_guard()

    def ask(prompt: str) -> dict[str, Any]:
        return small_completion(17, 5)

    with pytest.raises(ConfigurationError, match="max_tokens"):
        h.guard.with_budget(ask, user="alice", fit=True, estimate=lambda prompt: chat_request())
    with pytest.raises(ConfigurationError, match="fit="):
        h.guard.with_budget(ask, fit="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Fit(min_output_tokens=0)
    # a guard-wide default fits what it can and leaves such functions alone
    guard = make_guard(fit=True).guard
    guard.with_budget(ask, user="alice", estimate=lambda prompt: chat_request())("hi")


def test_fit_inside_a_job_fits_the_jobs_hold(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="1", per="day")])
    api = serve(small_completion(17, 40))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", fit=20)
    with h.guard.reserve(usd="0.001", user="alice"):
        create(**chat_request())
    assert api.requests[0]["max_tokens"] == 95


ESTIMATOR = budgetguard.Estimator()


@pytest.mark.parametrize(
    "request_",
    [
        chat_request(),
        chat_request(n=3),
        {
            "model": "gpt-4o",
            "input": "hello",
            "max_output_tokens": 800,
            "tools": [{"type": "web_search"}],
            "max_tool_calls": 2,
        },
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 2000,
            "messages": [{"role": "user", "content": "Hi"}],
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "model": "gpt-4o-audio-preview",
            "modalities": ["text", "audio"],
            "max_tokens": 700,
            "messages": [{"role": "user", "content": "Say hi"}],
        },
    ],
)
def test_worst_cost_is_the_estimators_price_of_the_lowered_request(request_: dict[str, Any]) -> None:
    """One rule: the worst case at a lower max output equals the estimate of the request sent with it."""
    est = budgetguard.estimate(request_)
    key = "max_output_tokens" if "input" in request_ else "max_tokens"
    n = request_.get("n", 1)
    assert ESTIMATOR.priced(est, est.output_tokens) == est
    for per_choice in (1, 37, 256):
        lowered = budgetguard.estimate({**request_, key: per_choice})
        assert lowered.output_tokens == per_choice * n
        assert ESTIMATOR.priced(est, per_choice * n) == lowered  # tool passes re-read the lower output too


def test_routing_comes_first_and_the_last_model_is_fitted(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.0001", per="day")])  # 100,000 nano-USD
    api = serve(small_completion(17, 40))
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, user="alice", route=["gpt-4o", "gpt-4o-mini"], fit=20
    )
    create(**chat_request())
    # gpt-4o-mini: $0.15 / $0.60 per million; (100,000 - 17 x 150) / 600 = 162.4
    assert (api.requests[0]["model"], api.requests[0]["max_tokens"]) == ("gpt-4o-mini", 162)
    assert [e.kind for e in h.events][:3] == ["refused", "routed", "fitted"]
    assert h.events[0].model == "gpt-4o" and h.events[2].model == "gpt-4o-mini"


def test_a_guards_default_fit_applies_to_its_sdk_methods(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.001", per="day")], fit=Fit(min_output_tokens=50))
    api = serve(small_completion(17, 40))
    h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")(**chat_request())
    off = h.guard.with_budget(openai_client(api).chat.completions.create, user="bob", fit=False)
    with pytest.raises(BudgetExceededError):
        off(**chat_request())
    assert [r["max_tokens"] for r in api.requests] == [95]

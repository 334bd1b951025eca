"""Retries: every attempt is reserved before it is sent and reconciled after it; only what may have been
billed is charged; a refused reservation ends the retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import tenacity
from openai.types.chat import ChatCompletion
from tenacity import retry_if_exception_type, stop_after_attempt, wait_none

import budgetguard
from budgetguard import Budget, BudgetExceededError, ConfigurationError
from budgetguard.testing import MockProvider
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    CLAUDE_USAGE,
    GPT4O_USAGE,
    MESSAGES,
    anthropic_client,
    anthropic_message,
    async_openai_client,
    chat_completion,
    chat_request,
    claude_request,
    fail,
    input_nano,
    nano,
    openai_client,
    serve,
    timeout,
)

COST = nano("gpt-4o", GPT4O_USAGE)
EST = budgetguard.estimate(chat_request())


def outcomes(h: Any, scope: str = "user:alice") -> list[tuple[str, int, str | None]]:
    return [(e.event, e.data["attempt"], e.data.get("error")) for e in h.history(scope=scope)]


def test_429_then_500_then_200(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(429, "slow down"), fail(500), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    result = create(**chat_request())

    assert result.usage.total_tokens == 2306
    assert len(api.requests) == 3
    assert outcomes(h) == [
        ("released", 1, "RateLimitError"),
        ("released", 2, "InternalServerError"),
        ("committed", 3, None),
    ]
    entries = h.history()
    assert len({e.reservation_id for e in entries}) == 3  # one reservation per attempt
    assert [e.amounts["usd"] for e in entries] == [EST.cost_nano, EST.cost_nano, COST]
    h.assert_settled({"user:alice": COST, "global": COST})  # only the successful attempt is charged
    assert [(e.kind, e.attempt) for e in h.events if e.kind != "overrun"] == [
        ("released", 1),
        ("released", 2),
        ("committed", 3),
    ]


def test_custom_retrying(make_guard: MakeGuard) -> None:
    policy = tenacity.Retrying(
        stop=stop_after_attempt(3),
        wait=wait_none(),
        retry=retry_if_exception_type(openai.RateLimitError),
        reraise=True,
    )
    h = make_guard(retry=policy)
    api = serve(fail(429), fail(429), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())

    assert len(api.requests) == 3
    assert [e.event for e in h.history(scope="user:alice")] == ["released", "released", "committed"]
    h.assert_settled({"user:alice": COST})

    api.script[:] = [fail(500), chat_completion()]  # this policy does not retry 5xx
    api.requests.clear()
    with pytest.raises(openai.InternalServerError):
        create(**chat_request())
    assert len(api.requests) == 1
    h.assert_settled({"user:alice": COST})


def test_strategies_alone_replace_the_default_policys(make_guard: MakeGuard) -> None:
    """``Guard(retry=<a retry_* strategy>, stop=..., wait=...)``: tenacity's pieces without a Retrying;
    what is not given stays the default's (here: its jittered wait, replaced by none)."""
    h = make_guard(
        retry=retry_if_exception_type(openai.RateLimitError), stop=stop_after_attempt(2), wait=wait_none()
    )
    assert isinstance(h.guard.retry, tenacity.Retrying) and h.guard.retry.reraise
    api = serve(fail(429), fail(429), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(openai.RateLimitError):  # stopped after 2 attempts, the last error re-raised
        create(**chat_request())

    assert len(api.requests) == 2
    assert [e.event for e in h.history(scope="user:alice")] == ["released", "released"]
    h.assert_settled({"user:alice": 0})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"retry": stop_after_attempt(3)},
            r"retry= takes a tenacity\.Retrying or AsyncRetrying, or a tenacity retry_",
        ),
        ({"stop": wait_none()}, r"stop= takes a tenacity stop_\* strategy"),
        ({"wait": 2}, r"wait= takes a tenacity wait_\* strategy"),
        ({"retry": tenacity.Retrying(), "stop": stop_after_attempt(1)}, r"put stop= and wait= inside it"),
    ],
)
def test_a_misplaced_strategy_is_refused_when_the_guard_is_built(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        budgetguard.Guard("memory://", **options)


def test_the_guard_drives_tenacity_through_its_public_pieces_only(
    make_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenacity release may rework ``Retrying.iter`` and its statistics: budgeting does not use them."""

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the guard called a tenacity internal")

    monkeypatch.setattr(tenacity.BaseRetrying, "iter", gone)  # (its loop: DoAttempt, DoSleep, actions)
    h = make_guard()
    api = serve(fail(429), fail(500), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())

    assert outcomes(h) == [
        ("released", 1, "RateLimitError"),
        ("released", 2, "InternalServerError"),
        ("committed", 3, None),
    ]


def test_a_strategy_reads_the_calls_statistics_as_under_tenacity(make_guard: MakeGuard) -> None:
    """Each call runs on its own copy of the policy, whose ``statistics`` tenacity's strategies may read."""
    seen: list[tuple[int, int]] = []

    def wait(state: tenacity.RetryCallState) -> float:
        stats = state.retry_object.statistics
        seen.append((stats["attempt_number"], state.attempt_number))
        return 0

    h = make_guard(retry=tenacity.Retrying(stop=stop_after_attempt(3), wait=wait, reraise=True))
    api = serve(fail(500), fail(500), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())

    assert seen == [(1, 1), (2, 2)]
    assert "attempt_number" not in h.guard.retry.statistics  # the guard's own policy is left as it was


def test_a_policy_changed_in_place_applies_to_the_next_call(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(500), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    h.guard.retry.stop = stop_after_attempt(1)

    with pytest.raises(openai.InternalServerError):
        create(**chat_request())
    assert len(api.requests) == 1


def test_default_policy_waits_with_backoff(make_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    h = make_guard(retry=None)  # the default policy, backoff included
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    api = serve(fail(503), fail(503), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())

    assert len(api.requests) == 3
    assert len(slept) == 2  # one backoff between attempts, jittered and at most 8 s
    assert all(0 <= seconds <= 8 for seconds in slept)
    h.assert_settled({"user:alice": COST})


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_not_retried(make_guard: MakeGuard, status: int) -> None:
    h = make_guard()
    api = serve(fail(status, "no"), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(openai.APIStatusError) as caught:
        create(**chat_request())

    assert caught.value.status_code == status  # the SDK's own exception, unchanged
    assert len(api.requests) == 1
    assert [e.event for e in h.history()] == ["released"]
    h.assert_settled({"user:alice": 0, "global": 0})


def test_retries_run_out(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(502), fail(503), fail(500), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(openai.InternalServerError) as caught:
        create(**chat_request())

    assert caught.value.status_code == 500  # the last error, not a tenacity.RetryError
    assert len(api.requests) == 3
    assert outcomes(h) == [
        ("released", 1, "InternalServerError"),
        ("released", 2, "InternalServerError"),
        ("released", 3, "InternalServerError"),
    ]
    h.assert_settled({"user:alice": 0, "global": 0})


def test_connection_errors_are_retried(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(timeout(), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())

    assert len(api.requests) == 2


def test_anthropic_retries(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(429), fail(529, "Overloaded"), anthropic_message())
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")

    create(**claude_request())

    assert outcomes(h) == [
        ("released", 1, "RateLimitError"),
        ("released", 2, "OverloadedError"),
        ("committed", 3, None),
    ]
    h.assert_settled({"user:alice": nano("claude-sonnet-4-6", CLAUDE_USAGE)})


# -- timeouts: the provider may have billed the input ------------------------------------------------


def test_timeout_is_charged_its_input_estimate(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(timeout(), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())

    charged = input_nano("gpt-4o", chat_request())
    assert 0 < charged < EST.cost_nano
    assert outcomes(h) == [("committed", 1, "APITimeoutError"), ("committed", 2, None)]
    first = h.history()[0]
    assert first.amounts == {"usd": charged, "tokens": EST.input_tokens, "requests": 1}
    h.assert_settled({"user:alice": charged + COST, "global": charged + COST})
    assert next((e.kind, e.reason) for e in h.events) == ("committed", "APITimeoutError")


def test_timeouts_all_the_way(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(timeout())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(openai.APITimeoutError):
        create(**chat_request())

    assert len(api.requests) == 3
    charged = input_nano("gpt-4o", chat_request())
    h.assert_settled({"user:alice": 3 * charged})


def test_anthropic_timeout_is_charged_its_cache_write_estimate(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(timeout(), anthropic_message())
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")

    create(**claude_request())

    charged = input_nano("claude-sonnet-4-6", claude_request())
    est = budgetguard.estimate(claude_request(), provider="anthropic")
    assert charged == est.price.cost_nano(budgetguard.Usage(cache_write_1h_tokens=est.input_tokens))
    h.assert_settled({"user:alice": charged + nano("claude-sonnet-4-6", CLAUDE_USAGE)})


def test_charge_failed_policy(make_guard: MakeGuard) -> None:
    h = make_guard(charge_failed=lambda exc: False)
    api = serve(timeout(), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    create(**chat_request())

    assert outcomes(h) == [("released", 1, "APITimeoutError"), ("committed", 2, None)]
    h.assert_settled({"user:alice": COST})


# -- a refused reservation ends the retries -----------------------------------------------------------


def test_refused_attempt_ends_retries_after_a_timeout(make_guard: MakeGuard) -> None:
    # exactly one worst case fits; the timed-out attempt's input charge leaves too little for another
    h = make_guard(budgets=[Budget("user", usd=budgetguard.to_usd(EST.cost_nano))])
    api = serve(timeout(), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    assert isinstance(caught.value.__cause__, openai.APITimeoutError)
    assert len(api.requests) == 1
    charged = input_nano("gpt-4o", chat_request())
    assert caught.value.spent == budgetguard.to_usd(charged)
    assert outcomes(h) == [("committed", 1, "APITimeoutError"), ("refused", 2, None)]
    h.assert_settled({"user:alice": charged})


def test_refused_attempt_ends_retries_after_a_server_error(make_guard: MakeGuard) -> None:
    h = make_guard()
    # while the first attempt is in flight an operator cuts alice's limit to $0.001
    api = serve(fail(500, before=lambda: h.set_limit("user:alice", 1_000_000)), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    assert isinstance(caught.value.__cause__, openai.InternalServerError)
    assert caught.value.limit == budgetguard.to_usd(1_000_000)
    assert len(api.requests) == 1
    assert outcomes(h) == [("released", 1, "InternalServerError"), ("refused", 2, None)]
    h.assert_settled({"user:alice": 0, "global": 0})
    assert [e.kind for e in h.events] == ["released", "refused"]


def test_refused_first_attempt_has_no_cause(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="0.000001")])
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(BudgetExceededError) as caught:
        create(**chat_request())

    assert caught.value.__cause__ is None


# -- async ----------------------------------------------------------------------------------------------


async def test_async_function_retries(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(fail(429), timeout(), chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    await ask("alice", "gpt-4o", MESSAGES, 300)

    assert len(api.requests) == 3
    assert outcomes(h) == [
        ("released", 1, "RateLimitError"),
        ("committed", 2, "APITimeoutError"),
        ("committed", 3, None),
    ]
    h.assert_settled({"user:alice": input_nano("gpt-4o", chat_request()) + COST})


async def test_async_sdk_method_retries(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(fail(429), fail(500), chat_completion())
    create = h.guard.with_budget(async_openai_client(api).chat.completions.create, user="alice")

    await create(**chat_request())

    assert len(api.requests) == 3
    assert outcomes(h) == [
        ("released", 1, "RateLimitError"),
        ("released", 2, "InternalServerError"),
        ("committed", 3, None),
    ]
    h.assert_settled({"user:alice": COST})


async def test_async_refused_attempt_is_chained(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=[Budget("user", usd=budgetguard.to_usd(EST.cost_nano))])
    api = serve(timeout(), chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    with pytest.raises(BudgetExceededError) as caught:
        await ask("alice", "gpt-4o", MESSAGES, 300)

    assert isinstance(caught.value.__cause__, openai.APITimeoutError)
    assert len(api.requests) == 1


def test_policies_that_look_at_results_or_hook_attempts_still_run_through_tenacity(
    make_guard: MakeGuard,
) -> None:
    """The first attempt skips tenacity only when tenacity could not act on a success; a ``before`` hook
    and ``retry_if_result`` both see every attempt, each reserved and reconciled."""
    seen: list[int] = []
    policy = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda reply: reply["choices"][0]["message"]["content"] == "retry me"),
        before=lambda state: seen.append(state.attempt_number),
        stop=stop_after_attempt(3),
        wait=wait_none(),
    )
    h = make_guard(retry=policy)
    first = chat_completion()
    first["choices"][0]["message"]["content"] = "retry me"
    replies = iter([first, chat_completion()])

    @h.guard.with_budget(user="alice")
    def ask(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return next(replies)

    ask(**chat_request())
    assert seen == [1, 2]
    assert outcomes(h) == [("committed", 1, None), ("committed", 2, None)]
    h.assert_settled({"user:alice": 2 * COST})


# -- a tenacity.AsyncRetrying (or Retrying) as the policy, for sync and async calls alike ------------------


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    with MockProvider() as provider:
        yield provider


@pytest.fixture
def provider(mock: MockProvider) -> MockProvider:
    mock.reset()
    return mock


POLICIES = [tenacity.Retrying, tenacity.AsyncRetrying]
MINI = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}


def hooked(policy: type[tenacity.BaseRetrying], seen: list[str], **kw: Any) -> tenacity.BaseRetrying:
    """``policy`` with its stop, wait, retry, before and after: each records what it was asked."""

    def stop(state: tenacity.RetryCallState) -> bool:
        seen.append(f"stop {state.attempt_number}")
        return state.attempt_number >= 3

    def wait(state: tenacity.RetryCallState) -> float:
        seen.append(f"wait {state.attempt_number}")
        return 0

    settings: dict[str, Any] = {
        "stop": stop,
        "wait": wait,
        "retry": retry_if_exception_type(openai.InternalServerError),
        "before": lambda state: seen.append(f"before {state.attempt_number}"),
        "after": lambda state: seen.append(f"after {state.attempt_number}"),
        "reraise": True,
    }
    return policy(**{**settings, **kw})


def tenacity_order() -> list[str]:
    """The callbacks ``hooked`` records when tenacity itself retries a call that fails once with a 500."""
    seen: list[str] = []
    errors = [openai.InternalServerError("down", response=httpx.Response(500, request=REQUEST), body=None)]

    def call() -> str:
        if errors:
            raise errors.pop()
        return "ok"

    assert hooked(tenacity.Retrying, seen)(call) == "ok"
    return seen


REQUEST = httpx.Request("POST", "http://mock/v1/chat/completions")


def committed_attempts(h: Any) -> list[tuple[str, int]]:
    return [(e.event, e.data["attempt"]) for e in h.history(scope="user:alice")]


def check_retried(h: Any, provider: MockProvider, reply: Any, seen: list[str]) -> None:
    assert isinstance(reply, ChatCompletion)  # the response, not a coroutine object
    assert reply.usage is not None and len(provider.requests) == 2
    assert committed_attempts(h) == [("released", 1), ("committed", 2)]
    assert seen == tenacity_order()  # each callback as often, and in the order, as in tenacity's own loop
    cost = budgetguard.cost("gpt-4o-mini", budgetguard.Usage.from_response(reply))
    h.assert_settled({"user:alice": budgetguard.to_nano(cost)})


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.__name__)
async def test_a_tenacity_policy_drives_an_async_call(
    amake_guard: MakeGuard, provider: MockProvider, policy: type[tenacity.BaseRetrying]
) -> None:
    seen: list[str] = []
    h = amake_guard(retry=hooked(policy, seen))
    async with provider.async_openai(max_retries=0) as client:
        create = h.guard.with_budget(client.chat.completions.create, user="alice")
        provider.fail(500)

        reply = await create(**MINI)

    check_retried(h, provider, reply, seen)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.__name__)
def test_a_tenacity_policy_drives_a_sync_call(
    make_guard: MakeGuard, provider: MockProvider, policy: type[tenacity.BaseRetrying]
) -> None:
    seen: list[str] = []
    h = make_guard(retry=hooked(policy, seen))
    with provider.openai(max_retries=0) as client:  # (closed: its socket is not left to the collector)
        create = h.guard.with_budget(client.chat.completions.create, user="alice")
        provider.fail(500)

        reply = create(**MINI)

    check_retried(h, provider, reply, seen)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.__name__)
async def test_a_tenacity_policy_stops_as_tenacity_does(
    amake_guard: MakeGuard, provider: MockProvider, policy: type[tenacity.BaseRetrying]
) -> None:
    """Its stop ends the attempts: the last error re-raised (``reraise=True``), else tenacity's
    ``RetryError``; every failed attempt released."""
    h = amake_guard(retry=hooked(policy, []))
    provider.fail(500, times=6)
    async with provider.async_openai(max_retries=0) as client:
        create = h.guard.with_budget(client.chat.completions.create, user="alice")
        with pytest.raises(openai.InternalServerError):
            await create(**MINI)
        assert len(provider.requests) == 3

        h.guard.retry = hooked(policy, [], reraise=False)
        with pytest.raises(tenacity.RetryError):
            await create(**MINI)
    assert len(provider.requests) == 6
    assert [e.event for e in h.history()] == ["released"] * 6
    h.assert_settled({"user:alice": 0})


async def test_an_async_retrying_without_hooks(amake_guard: MakeGuard, provider: MockProvider) -> None:
    """No ``before`` hook: the first attempt runs without tenacity, which enters on the first failure."""
    policy = tenacity.AsyncRetrying(
        stop=stop_after_attempt(3),
        wait=wait_none(),
        retry=retry_if_exception_type(openai.InternalServerError),
    )
    h = amake_guard(retry=policy)
    async with provider.async_openai(max_retries=0) as client:
        create = h.guard.with_budget(client.chat.completions.create, user="alice")
        provider.fail(500)

        reply = await create(**MINI)

    assert isinstance(reply, ChatCompletion) and len(provider.requests) == 2
    assert committed_attempts(h) == [("released", 1), ("committed", 2)]


async def test_an_async_retrying_retries_results(amake_guard: MakeGuard, provider: MockProvider) -> None:
    """``retry_if_result`` sees each reply (each attempt charged), as it does in a Retrying."""
    replies: list[Any] = []
    policy = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_result(lambda reply: len(replies) < 2),
        stop=stop_after_attempt(5),
        wait=wait_none(),
    )
    h = amake_guard(retry=policy)
    client = provider.async_openai(max_retries=0)

    @h.guard.with_budget(user="alice")
    async def ask(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        replies.append(
            await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
        )
        return replies[-1]

    async with client:
        reply = await ask(**MINI)

    assert reply is replies[1] and len(provider.requests) == 2
    assert committed_attempts(h) == [("committed", 1), ("committed", 2)]


async def _async_hook(state: tenacity.RetryCallState) -> None:
    return None


class _AsyncStop:
    async def __call__(self, state: tenacity.RetryCallState) -> bool:
        return True


@pytest.mark.parametrize(
    ("hook", "policy"),
    [
        ("before", _async_hook),
        ("after", _async_hook),
        ("stop", _AsyncStop()),
        ("retry_error_callback", _async_hook),
    ],
)
def test_async_callbacks_are_refused_when_the_guard_is_built(hook: str, policy: Any) -> None:
    """The guard runs tenacity's decisions between attempts, where nothing is awaited."""
    for cls in POLICIES:
        with pytest.raises(ConfigurationError, match=rf"{hook} callback is async.*plain functions"):
            budgetguard.Guard("memory://", retry=cls(**{hook: policy}))
    with pytest.raises(ConfigurationError, match=r"tenacity\.Retrying or AsyncRetrying"):
        budgetguard.Guard("memory://", retry=stop_after_attempt(3))  # type: ignore[arg-type]

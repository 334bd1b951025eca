"""Requests as frameworks and wrappers send them: SDK "not given" sentinels, and wrappers that take the
request as ``**kwargs`` (issue 18)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

import budgetguard
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    CLAUDE_USAGE,
    GPT4O_USAGE,
    anthropic_client,
    anthropic_message,
    async_openai_client,
    chat_completion,
    chat_request,
    claude_request,
    mini_completion,
    nano,
    openai_client,
    serve,
)

SCOPES = ("global", "user:alice")


def without(request: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k not in keys}


OPENAI_SENTINELS = {"Omit": lambda: openai.Omit(), "NOT_GIVEN": lambda: openai.NOT_GIVEN}
"""(``openai.omit``, the instance, is newer than the oldest openai release admitted: its class is not.)"""
ANTHROPIC_SENTINELS = {"omit": lambda: anthropic.omit, "NOT_GIVEN": lambda: anthropic.NOT_GIVEN}


@pytest.mark.parametrize("sentinel", OPENAI_SENTINELS.values(), ids=OPENAI_SENTINELS.keys())
def test_an_openai_sentinel_means_absent(make_guard: MakeGuard, sentinel: Any) -> None:
    """The OpenAI Agents SDK passes ``max_tokens=omit``: the guard reserves what a request without
    max_tokens reserves (the model's own maximum output) instead of refusing the value."""
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    plain = without(chat_request(), "max_tokens")
    expected = h.guard.estimator(plain)

    create(**plain, max_tokens=sentinel(), tools=sentinel(), temperature=sentinel())

    assert api.requests == [plain]  # the SDK leaves them out, and so does the estimate
    (committed,) = h.of("committed")
    assert committed.estimated == expected.cost
    h.assert_settled(dict.fromkeys(SCOPES, nano("gpt-4o", GPT4O_USAGE)))


@pytest.mark.parametrize("sentinel", ANTHROPIC_SENTINELS.values(), ids=ANTHROPIC_SENTINELS.keys())
def test_an_anthropic_sentinel_means_absent(make_guard: MakeGuard, sentinel: Any) -> None:
    h = make_guard()
    api = serve(anthropic_message())
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")
    expected = h.guard.estimator(claude_request())

    create(**claude_request(), tools=sentinel(), temperature=sentinel(), stop_sequences=sentinel())

    assert api.requests == [claude_request()]
    (committed,) = h.of("committed")
    assert committed.estimated == expected.cost
    h.assert_settled(dict.fromkeys(SCOPES, nano("claude-sonnet-4-6", CLAUDE_USAGE)))


def test_the_public_estimate_reads_a_sentinel_as_absent() -> None:
    plain = without(chat_request("gpt-4o-mini"), "max_tokens")
    with_sentinels = {**plain, "max_tokens": openai.Omit(), "n": openai.NOT_GIVEN, "tools": anthropic.omit}
    assert budgetguard.estimate(with_sentinels) == budgetguard.estimate(plain)


def test_a_value_without_a_truth_value_is_not_a_sentinel() -> None:
    """A request value that refuses ``bool()`` (an array) is looked at, not dropped or raised on."""

    class Ambiguous:
        def __bool__(self) -> bool:
            raise ValueError("the truth value of an array is ambiguous")

    value = Ambiguous()
    request = {"model": "m", "input": value, "max_tokens": openai.Omit()}
    assert budgetguard._providers.as_sent(request) == {"model": "m", "input": value}
    kept = {"model": "m", "input": value}
    assert budgetguard._providers.as_sent(kept) is kept


def test_a_wrapper_that_takes_the_request_as_kwargs(make_guard: MakeGuard) -> None:
    """The most common wrapper there is: before issue 18 it raised "cannot see the LLM request"."""
    h = make_guard()
    api = serve(chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="alice")
    def call(**kwargs: Any) -> Any:
        return client.chat.completions.create(**kwargs)

    reply = call(**chat_request())

    assert reply.usage.prompt_tokens == 2006
    assert api.requests == [chat_request()]
    (committed,) = h.of("committed")
    assert committed.estimated == h.guard.estimator(chat_request()).cost
    h.assert_settled(dict.fromkeys(SCOPES, nano("gpt-4o", GPT4O_USAGE)))


def test_a_kwargs_wrapper_with_named_arguments_and_a_scope_from_them(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="{who}")
    def call(who: str, *, model: str = "gpt-4o", **kwargs: Any) -> Any:
        return client.chat.completions.create(model=model, **kwargs)

    call("alice", **without(chat_request(), "model"), max_completion_tokens=openai.NOT_GIVEN)

    assert api.requests == [chat_request()]
    h.assert_settled(dict.fromkeys(SCOPES, nano("gpt-4o", GPT4O_USAGE)))


def test_a_kwargs_wrapper_is_routed_to_a_cheaper_model(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[budgetguard.Budget("user", usd="0.001")])
    api = serve(mini_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="alice", route=["gpt-4o", "gpt-4o-mini"])
    def call(**kwargs: Any) -> Any:
        return client.chat.completions.create(**kwargs)

    call(**chat_request())

    assert [r["model"] for r in api.requests] == ["gpt-4o-mini"]
    assert [e.kind for e in h.events if e.kind in ("refused", "routed", "committed")] == [
        "refused",
        "routed",
        "committed",
    ]


async def test_an_async_kwargs_wrapper(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(user="alice")
    async def call(**kwargs: Any) -> Any:
        return await client.chat.completions.create(**kwargs)

    await call(**chat_request(), max_completion_tokens=openai.NOT_GIVEN)

    assert api.requests == [chat_request()]
    h.assert_settled(dict.fromkeys(SCOPES, nano("gpt-4o", GPT4O_USAGE)))


def test_a_collected_keyword_never_overrides_a_named_argument_scopes_read(make_guard: MakeGuard) -> None:
    """A request key named like a parameter (here ``user``, which OpenAI takes too) cannot move the
    charge to another scope: templates read the named arguments, and ``{kwargs[...]}`` still works."""
    h = make_guard()
    api = serve(chat_completion(), chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="{user}")
    def named(user: str, /, **kwargs: Any) -> Any:
        return client.chat.completions.create(**kwargs)

    @h.guard.with_budget(user="{kwargs[end_user]}")
    def collected(**kwargs: Any) -> Any:
        kwargs.pop("end_user")
        return client.chat.completions.create(**kwargs)

    named("alice", user="bob", **chat_request())
    collected(end_user="carol", **chat_request())

    assert [e.scopes for e in h.committed()] == [("global", "user:alice"), ("global", "user:carol")]

"""``guard.with_budget(...)(sdk_method)``: the request is read from the kwargs, the charge from the usage."""

from __future__ import annotations

import inspect

import openai
import pytest

import budgetguard
from budgetguard import Usage
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    CLAUDE_USAGE,
    GPT4O_USAGE,
    HAND_COSTS,
    O3_MINI_USAGE,
    O4_MINI_USAGE,
    anthropic_client,
    anthropic_message,
    async_anthropic_client,
    async_openai_client,
    chat_completion,
    chat_request,
    claude_request,
    embedding_response,
    fail,
    nano,
    openai_client,
    reasoning_chat_completion,
    response,
    serve,
)

SCOPES = ("global", "user:alice", "feature:chat")


@pytest.mark.parametrize(("model", "usage"), list(HAND_COSTS))
def test_reference_costs_match_published_prices(model: str, usage: Usage) -> None:
    """The independent cost reference the suite compares the ledger with is itself right."""
    assert budgetguard.cost(model, usage) == HAND_COSTS[model, usage]
    assert nano(model, usage) == budgetguard.to_nano(HAND_COSTS[model, usage])


def test_openai_chat_completion(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    client = openai_client(api)
    create = h.guard.with_budget(user="alice", feature="chat")(client.chat.completions.create)

    first = create(**chat_request())
    second = create(**chat_request())

    assert isinstance(first, openai.types.chat.ChatCompletion)
    assert second.usage is not None
    assert second.usage.prompt_tokens == 2006
    assert api.requests == [chat_request(), chat_request()]  # sent as given: nothing added or dropped
    cost = nano("gpt-4o", GPT4O_USAGE)
    h.assert_settled(dict.fromkeys(SCOPES, 2 * cost))
    entries = h.history()
    assert [e.event for e in entries] == ["committed", "committed"]
    for entry in entries:
        assert entry.model == "gpt-4o"
        assert entry.data["usage"] == GPT4O_USAGE.to_dict()
        assert entry.amounts == {"usd": cost, "tokens": GPT4O_USAGE.total_tokens, "requests": 1}
        assert set(entry.scopes) == set(SCOPES)
        assert entry.data["attempt"] == 1
    assert len({e.reservation_id for e in entries}) == 2


def test_openai_reasoning_tokens(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(reasoning_chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", feature="chat")

    create(**chat_request("o3-mini", max_tokens=None, max_completion_tokens=4000))

    cost = nano("o3-mini", O3_MINI_USAGE)
    h.assert_settled(dict.fromkeys(SCOPES, cost))
    (entry,) = h.committed()
    assert entry.model == "o3-mini"
    assert entry.data["usage"] == O3_MINI_USAGE.to_dict()
    assert entry.data["usage"]["reasoning_tokens"] == 1792


def test_openai_responses_api(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(response())
    create = h.guard.with_budget(openai_client(api).responses.create, user="alice", feature="chat")

    result = create(
        model="o4-mini", instructions="You are terse.", input="What is a budget?", max_output_tokens=2000
    )

    assert result.output_text == "Plans for money."
    assert api.paths == ["/v1/responses"]
    cost = nano("o4-mini", O4_MINI_USAGE)
    h.assert_settled(dict.fromkeys(SCOPES, cost))
    (entry,) = h.committed()
    assert entry.model == "o4-mini"
    assert entry.data["usage"] == O4_MINI_USAGE.to_dict()


def test_anthropic_messages_with_cache_writes(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(anthropic_message())
    create = h.guard.with_budget(user="alice", feature="chat")(anthropic_client(api).messages.create)

    message = create(**claude_request())

    assert message.usage.cache_creation_input_tokens == 2000
    assert api.requests == [claude_request()]
    cost = nano("claude-sonnet-4-6", CLAUDE_USAGE)
    h.assert_settled(dict.fromkeys(SCOPES, cost))
    (entry,) = h.committed()
    assert entry.model == "claude-sonnet-4-6"
    assert entry.data["usage"] == CLAUDE_USAGE.to_dict()
    assert entry.amounts == {"usd": cost, "tokens": CLAUDE_USAGE.total_tokens, "requests": 1}


def test_openai_embeddings(make_guard: MakeGuard) -> None:
    h = make_guard()
    request = {"model": "text-embedding-3-small", "input": ["What is a budget?", "Plans for money."]}
    prompt_tokens = budgetguard.estimate(request).input_tokens
    api = serve(embedding_response("text-embedding-3-small", prompt_tokens))
    create = h.guard.with_budget(user="alice", feature="chat")(openai_client(api).embeddings.create)

    result = create(**request)

    assert len(result.data) == 2
    usage = Usage(input_tokens=prompt_tokens)
    cost = nano("text-embedding-3-small", usage)
    assert cost > 0
    h.assert_settled(dict.fromkeys(SCOPES, cost))
    (entry,) = h.committed()
    assert entry.data["usage"] == usage.to_dict()
    assert "usage_missing" not in entry.data


def test_estimate_is_reserved_and_journaled(make_guard: MakeGuard) -> None:
    """The journal carries the estimate the reservation held (the request's worst case)."""
    h = make_guard()
    api = serve(anthropic_message())
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")

    create(**claude_request())

    est = budgetguard.estimate(claude_request(), provider="anthropic")
    assert est.cache_write == "1h"  # the system block asks for a 1-hour cache write
    (entry,) = h.committed()
    assert entry.data["estimated_usd"] == str(est.cost)


async def test_async_openai_chat_completion(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(user="alice", feature="chat")(
        async_openai_client(api).chat.completions.create
    )
    assert inspect.iscoroutinefunction(create), "an AsyncOpenAI method must stay a coroutine function"

    result = await create(**chat_request())

    assert isinstance(result, openai.types.chat.ChatCompletion)
    cost = nano("gpt-4o", GPT4O_USAGE)
    h.assert_settled(dict.fromkeys(SCOPES, cost))
    (entry,) = h.committed()
    assert entry.data["usage"] == GPT4O_USAGE.to_dict()
    assert "usage_missing" not in entry.data


async def test_async_anthropic_messages(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(anthropic_message())
    create = h.guard.with_budget(user="alice", feature="chat")(async_anthropic_client(api).messages.create)
    assert inspect.iscoroutinefunction(create), "an AsyncAnthropic method must stay a coroutine function"

    await create(**claude_request())

    cost = nano("claude-sonnet-4-6", CLAUDE_USAGE)
    h.assert_settled(dict.fromkeys(SCOPES, cost))
    (entry,) = h.committed()
    assert entry.data["usage"] == CLAUDE_USAGE.to_dict()


# -- the SDK's own retries are switched off: every attempt is one the guard reserved ----------------


def test_openai_sdk_retries_disabled(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(500), fail(500), fail(500), chat_completion())
    client = openai_client(api, max_retries=5)
    create = h.guard.with_budget(client.chat.completions.create, user="alice")

    with pytest.raises(openai.InternalServerError):
        create(**chat_request())

    assert len(api.requests) == 3  # the guard's 3 attempts, not 3 x 6 SDK tries
    assert client.max_retries == 5  # the user's client is left as it was
    assert [e.event for e in h.history()] == ["released"] * 3
    h.assert_settled({"user:alice": 0, "global": 0})


def test_anthropic_sdk_retries_disabled(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(529, "Overloaded"), anthropic_message())
    client = anthropic_client(api, max_retries=5)
    create = h.guard.with_budget(client.messages.create, user="alice")

    create(**claude_request())

    assert len(api.requests) == 2
    assert [(e.event, e.data["attempt"]) for e in h.history()] == [("released", 1), ("committed", 2)]
    h.assert_settled({"user:alice": nano("claude-sonnet-4-6", CLAUDE_USAGE)})


async def test_async_openai_sdk_retries_disabled(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(fail(503), fail(503), chat_completion())
    client = async_openai_client(api, max_retries=5)
    create = h.guard.with_budget(client.chat.completions.create, user="alice")

    await create(**chat_request())

    assert len(api.requests) == 3
    assert [(e.event, e.data["attempt"]) for e in h.history()] == [
        ("released", 1),
        ("released", 2),
        ("committed", 3),
    ]
    h.assert_settled({"user:alice": nano("gpt-4o", GPT4O_USAGE)})

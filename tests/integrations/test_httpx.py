"""``guard.wrap(client)`` and ``BudgetTransport`` over real HTTP: the SDK clients (and a plain ``httpx``
client) talk to ``MockProvider``'s local server through their own connection pools; the ledger is checked
to the nano-USD against the usage the server reported."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

import budgetguard as bg
from budgetguard import Usage
from budgetguard.integrations.httpx import AsyncBudgetTransport, BudgetTransport
from budgetguard.testing import MockProvider
from tests.sdk_http import ANTHROPIC_HTTP, ANTHROPIC_STREAM_CUT, OPENAI_HTTP

HI = [{"role": "user", "content": "Why reserve before calling?"}]


@pytest.fixture
def api() -> Iterator[MockProvider]:
    with MockProvider() as mock:
        yield mock


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")])
    yield made
    made.close()


def openai_usage(reported: dict[str, Any]) -> Usage:
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    return Usage(
        input_tokens=reported["prompt_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=reported["completion_tokens"],
    )


def claude_usage(reported: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=reported["input_tokens"],
        cache_read_tokens=reported.get("cache_read_input_tokens") or 0,
        cache_write_tokens=reported.get("cache_creation_input_tokens") or 0,
        output_tokens=reported["output_tokens"],
    )


def charges(guard: bg.Guard) -> list[tuple[str, int | None]]:
    """Each journal entry's event, with the amount charged when it is a commit."""
    return [(e.event, e.amounts["usd"] if e.event == "committed" else None) for e in guard.ledger.history()]


def price(model: str, usage: Usage) -> int:
    return bg.get_price(model).cost_nano(usage)


def test_wrapped_openai_retries_streams_and_refusal(
    api: MockProvider, guard: bg.Guard, request: pytest.FixtureRequest
) -> None:
    client = guard.wrap(api.openai(max_retries=2), user="alice")
    request.addfinalizer(client.close)
    api.fail(500, retry_after="0")
    api.fail(429, retry_after="0")

    client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=100)
    for _ in client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=100, stream=True):
        pass
    client.responses.create(model="gpt-4o-mini", input="Why reserve?", max_output_tokens=100)
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], 1)
    with pytest.raises(bg.BudgetExceededError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=100)

    chat, streamed, answered = api.usages
    expected = [
        price("gpt-4o-mini", openai_usage(chat)),
        price("gpt-4o-mini", openai_usage(streamed)),
        price(
            "gpt-4o-mini",
            Usage(input_tokens=answered["input_tokens"], output_tokens=answered["output_tokens"]),
        ),
    ]
    assert charges(guard) == [
        ("released", None),
        ("released", None),
        *(("committed", c) for c in expected),
        ("refused", None),
    ]
    assert len(api.requests) == 5  # two failures, three answers; the refused call never left
    assert api.requests[3].body["stream_options"] == {"include_usage": True}


def test_wrapped_anthropic_stream_helper_and_cut_stream(api: MockProvider, guard: bg.Guard) -> None:
    claude: dict[str, Any] = {"model": "claude-sonnet-4-6", "messages": HI, "max_tokens": 200}
    with guard.wrap(api.anthropic(), user="alice") as client:
        client.messages.create(**claude)
        with client.messages.stream(**claude) as stream:
            stream.until_done()
        api.cut(after=3)
        with pytest.raises(ANTHROPIC_STREAM_CUT):  # the SDK's error: the guard lets it through
            for _ in client.messages.create(**claude, stream=True):
                pass

    first, second = (price("claude-sonnet-4-6", claude_usage(u)) for u in api.usages[:2])
    history = guard.ledger.history()
    assert [(e.event, e.amounts["usd"]) for e in history[:2]] == [("committed", first), ("committed", second)]
    assert history[2].data["interrupted"] is True and history[2].amounts["usd"] > 0
    assert guard.ledger.status(guard.counters_for([bg.Scope("user", "alice")])[:1])[0].held == 0


async def test_wrapped_async_clients(api: MockProvider, guard: bg.Guard) -> None:
    api.fail(500, retry_after="0", path="/v1/chat/completions")
    async with guard.wrap(api.async_openai(max_retries=1), user="alice") as chat:
        await chat.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=100)
    async with guard.wrap(api.async_anthropic(), user="alice") as claude:
        stream = await claude.messages.create(
            model="claude-sonnet-4-6", messages=HI, max_tokens=200, stream=True
        )
        async for _ in stream:
            pass

    expected = [
        ("released", None),
        ("committed", price("gpt-4o-mini", openai_usage(api.usages[0]))),
        ("committed", price("claude-sonnet-4-6", claude_usage(api.usages[1]))),
    ]
    assert charges(guard) == expected


LIBRARIES = sorted({httpx, OPENAI_HTTP, ANTHROPIC_HTTP}, key=lambda lib: lib.__name__)
"""``httpx``, and ``httpx2`` when an installed SDK uses it: the transport serves the clients of both."""


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_transport_under_a_plain_client(api: MockProvider, guard: bg.Guard, lib: ModuleType) -> None:
    """The transport's own inner transport (the client library's ``HTTPTransport``), scopes from
    budget_context."""
    body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 100}
    http = lib.Client(transport=BudgetTransport(guard), base_url=api.openai_base_url)
    with http, bg.budget_context(user="alice"):
        reply = http.post("/chat/completions", json=body)

    assert reply.status_code == 200
    assert charges(guard) == [("committed", price("gpt-4o-mini", openai_usage(api.usages[0])))]


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
async def test_async_transport_under_a_plain_client(
    api: MockProvider, guard: bg.Guard, lib: ModuleType
) -> None:
    body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 100, "stream": True}
    transport = AsyncBudgetTransport(guard, user="alice")
    http = lib.AsyncClient(transport=transport, base_url=api.openai_base_url)
    async with http, http.stream("POST", "/chat/completions", json=body) as reply:
        lines = [line async for line in reply.aiter_lines() if line]

    assert lines[-1] == "data: [DONE]"
    assert charges(guard) == [("committed", price("gpt-4o-mini", openai_usage(api.usages[0])))]

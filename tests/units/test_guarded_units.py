"""The billed units through the guard and the real SDK clients: sync and async, streamed and not, each call
is committed at its full bill; the estimate reserves the tools' worst case and the journal says when a
tool was reserved at the default count; a unit that has no price is never charged $0."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from budgetguard import Budget, Estimator, Guard, estimate, to_nano
from tests.guard.one_call import committed
from tests.guard.payloads import (
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
    serve,
)
from tests.sdk_payloads import anthropic_sse, openai_sse
from tests.units.test_billed_units import (
    AUDIO_NANO,
    ITERATIONS_NANO,
    TOOLS_NANO,
    WEB_SEARCH_NANO,
    anthropic_events,
    payload,
    responses_events,
)

CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "Hi"}]}
CASES = {
    "anthropic_web_search": (
        {**CLAUDE, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]},
        WEB_SEARCH_NANO,
    ),
    "anthropic_iterations": (CLAUDE, ITERATIONS_NANO),
    "openai_responses_tools": ({"model": "gpt-5", "input": "Hi", "max_output_tokens": 1000}, TOOLS_NANO),
    "openai_chat_audio": (
        {
            "model": "gpt-audio",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1000,
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"},
        },
        AUDIO_NANO,
    ),
}


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    yield made
    made.close()


def body_for(name: str, stream: bool) -> Any:
    body = payload(name)
    if not stream:
        return body
    if name.startswith("anthropic"):
        return anthropic_sse(anthropic_events(body))
    if name == "openai_chat_audio":
        chunk = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
                 "model": body["model"], "choices": [], "usage": body["usage"]}  # fmt: skip
        return openai_sse([chunk])
    return openai_sse(responses_events(body), done=False)


def method(client: Any, name: str) -> Any:
    if name.startswith("anthropic"):
        return client.messages.create
    return client.chat.completions.create if name == "openai_chat_audio" else client.responses.create


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_sync_calls_are_charged_every_unit(guard: Guard, name: str, stream: bool) -> None:
    request, bill = CASES[name]
    api = serve(body_for(name, stream))
    client = (anthropic_client if name.startswith("anthropic") else openai_client)(api)
    reply = guard.with_budget(method(client, name))(**request, **({"stream": True} if stream else {}))
    if stream:
        for _ in reply:
            pass
    entry = committed(guard)
    assert entry.amounts["usd"] == bill
    assert "usage_missing" not in entry.data


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("name", sorted(CASES))
async def test_async_calls_are_charged_every_unit(guard: Guard, name: str, stream: bool) -> None:
    request, bill = CASES[name]
    api = serve(body_for(name, stream))
    client = (async_anthropic_client if name.startswith("anthropic") else async_openai_client)(api)
    reply = await guard.with_budget(method(client, name))(**request, **({"stream": True} if stream else {}))
    if stream:
        async for _ in reply:
            pass
    assert committed(guard).amounts["usd"] == bill


def test_the_journal_flags_tools_reserved_at_the_default(guard: Guard) -> None:
    request = {**CLAUDE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    api = serve(payload("anthropic_web_search"))
    guard.with_budget(anthropic_client(api).messages.create)(**request)
    entry = committed(guard)
    assert entry.data["tools_defaulted"] == ["web_search"]
    assert entry.data["tool_results_defaulted"] == ["web_search"]  # and their results at the default size
    assert entry.amounts["usd"] == WEB_SEARCH_NANO
    bounded = {**CLAUDE, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    guard.with_budget(anthropic_client(serve(payload("anthropic_web_search"))).messages.create)(**bounded)
    data = guard.ledger.history(events=["committed"])[-1].data
    assert "tools_defaulted" not in data and data["tool_results_defaulted"] == ["web_search"]


def test_the_journal_says_nothing_of_tool_results_the_caller_bounded() -> None:
    sized = Guard("memory://", budgets=[Budget("global", usd="100", per="day")],
                  estimator=Estimator(tool_result_tokens={"web_search": 30_000}))  # fmt: skip
    request = {**CLAUDE, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    sized.with_budget(anthropic_client(serve(payload("anthropic_web_search"))).messages.create)(**request)
    data = committed(sized).data
    sized.close()
    assert "tool_results_defaulted" not in data and "tools_defaulted" not in data


def test_a_reported_unit_without_a_price_is_charged_the_reservation_flagged(guard: Guard) -> None:
    """gpt-4o has no audio rate: audio tokens in its response are never priced as text, nor $0; the call
    is charged what was reserved, flagged."""
    body = payload("openai_chat_audio")
    body["model"] = "gpt-4o-2024-08-06"
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1000}
    guard.with_budget(openai_client(serve(body)).chat.completions.create)(**request)
    entry = committed(guard)
    assert entry.data["usage_missing"] is True
    assert "audio" in entry.data["unpriced"]  # the reason, as the journal keeps it
    assert entry.amounts["usd"] == to_nano(entry.data["estimated_usd"]) > 0


def test_the_journal_flags_server_side_history_reserved_at_its_bound(guard: Guard) -> None:
    """A Responses call that continues server-side state reserves the model's context window as its
    input (what the request shows is not what the model reads), says so, and is charged its usage."""
    request = {
        "model": "gpt-5",
        "input": "And 3+3?",
        "max_output_tokens": 1000,
        "previous_response_id": "resp_1",
    }
    create = guard.with_budget(openai_client(serve(payload("openai_responses_tools"))).responses.create)
    create(**request)
    entry = committed(guard)
    assert entry.data["unseen"] == ["previous_response_id"]
    assert Decimal(entry.data["estimated_usd"]) == estimate(request).cost
    assert estimate(request).input_tokens == 400_000  # gpt-5's context window
    assert entry.amounts["usd"] == TOOLS_NANO

"""Whatever goes wrong around a call, its reservation is resolved: nothing stays held after the call."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import openai
import pytest

import budgetguard
from budgetguard import Usage
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    MESSAGES,
    chat_completion,
    chat_request,
    input_nano,
    nano,
    openai_client,
    serve,
)

EST = budgetguard.estimate(chat_request())
COST = nano("gpt-4o", GPT4O_USAGE)


def test_user_exceptions_pass_through_unchanged(make_guard: MakeGuard) -> None:
    h = make_guard()
    boom = ValueError("the caller's own bug")
    calls: list[int] = []

    @h.guard.with_budget(user="{user_id}")
    def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        calls.append(1)
        raise boom

    with pytest.raises(ValueError, match="own bug") as caught:
        ask("alice", **chat_request())

    assert caught.value is boom
    assert calls == [1]  # not retried
    assert [(e.event, e.data["error"]) for e in h.history()] == [("released", "ValueError")]
    h.assert_settled({"user:alice": 0, "global": 0})


def test_custom_usage_reader(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    reader_usage = Usage(input_tokens=2006, output_tokens=300)  # ignores the cache discount, on purpose
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create, user="alice", usage=lambda response: reader_usage
    )

    create(**chat_request())

    h.assert_settled({"user:alice": nano("gpt-4o", reader_usage)})
    (entry,) = h.committed()
    assert entry.data["usage"] == reader_usage.to_dict()


def test_usage_reader_error_leaves_nothing_held(make_guard: MakeGuard) -> None:
    """The call was made (and billed); a usage hook that fails must not leave the hold to its lease."""
    h = make_guard()
    api = serve(chat_completion())

    def broken_reader(response: Any) -> Usage:
        raise KeyError("usage")

    guard = h.guard.with_budget(usage=broken_reader, user="alice")
    create = guard(openai_client(api).chat.completions.create)

    with pytest.raises(KeyError):
        create(**chat_request())

    assert len(api.requests) == 1
    h.assert_settled({"user:alice": EST.cost_nano, "global": EST.cost_nano})  # the worst case, charged once


async def test_cancelled_call_is_charged_its_input(amake_guard: MakeGuard) -> None:
    """The request was sent when the task was cancelled: the provider may bill it, as for a timeout."""
    h = amake_guard()
    started = asyncio.Event()

    async def slow(request: httpx2.Request) -> httpx2.Response:
        started.set()
        await asyncio.sleep(30)
        return httpx2.Response(200, json=chat_completion())  # pragma: no cover - cancelled first

    client = openai.AsyncOpenAI(
        base_url="http://openai.test/v1",
        api_key="sk-test",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(slow)),
    )

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    task = asyncio.create_task(ask("alice", "gpt-4o", MESSAGES, 300))
    await started.wait()
    assert h.held("user:alice") == EST.cost_nano
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert [(e.event, e.data["error"]) for e in h.history()] == [("committed", "CancelledError")]
    charged = input_nano("gpt-4o", {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 300})
    h.assert_settled({"user:alice": charged, "global": charged})


def test_a_raising_hook_is_logged_and_the_books_stay_right(
    make_guard: MakeGuard, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: budgetguard.Event) -> None:
        raise RuntimeError(f"metrics backend down ({event.kind})")

    h = make_guard(on_event=broken)
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    create(**chat_request())

    assert len(api.requests) == 1
    h.assert_settled({"user:alice": nano("gpt-4o", GPT4O_USAGE), "global": nano("gpt-4o", GPT4O_USAGE)})
    assert "the on_event hook" in caplog.text and "metrics backend down (reserved)" in caplog.text


def test_pricing_error_before_the_call(make_guard: MakeGuard, global_prices: budgetguard.PriceBook) -> None:
    """An unknown model is never charged $0: the call is stopped before it is sent."""
    h = make_guard()
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(budgetguard.PricingError):
        create(**chat_request("gpt-unknown-2099"))

    assert api.requests == []
    h.assert_settled({"user:alice": 0})
    global_prices.register("gpt-unknown-2099", input="1.00", output="2.00")
    create(**chat_request("gpt-unknown-2099"))
    assert len(api.requests) == 1
    h.assert_settled({"user:alice": nano("gpt-unknown-2099", GPT4O_USAGE)})

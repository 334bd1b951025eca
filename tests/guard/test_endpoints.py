"""Every endpoint teams pay for, through the real SDKs: the Responses API's stream helpers, price variants
(service tiers, batch, Anthropic fast mode and long-context tiers) and the optional exact Claude count.

Prices are written out from the providers' published per-million prices (genai-prices 0.2.3), so a
test compares the ledger with hand arithmetic, to the nano-USD.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

import budgetguard
from budgetguard import Estimator, Guard, Usage
from tests.guard.conftest import Harness, MakeGuard
from tests.guard.payloads import (
    CLAUDE_USAGE,
    O4_MINI_USAGE,
    Reply,
    anthropic_client,
    anthropic_message,
    async_anthropic_client,
    async_openai_client,
    chat_completion,
    chat_request,
    claude_request,
    cut_stream,
    embedding_response,
    openai_client,
    openai_sse,
    response,
    responses_stream_events,
    serve,
    timeout,
)
from tests.sdk_http import OPENAI_STREAM_CUT

# O4_MINI_USAGE (904 uncached, 4096 cached, 1200 output) at o4-mini's tiers, USD per million tokens:
O4_STANDARD = 7_400_800  # 904 x $1.10 + 4096 x $0.275 + 1200 x $4.40
O4_FLEX = 3_702_448  # 904 x $0.55 + 4096 x $0.138 + 1200 x $2.20
O4_PRIORITY = 13_456_000  # 904 x $2 + 4096 x $0.50 + 1200 x $8
RESPONSES_REQUEST = {"model": "o4-mini", "input": "What is a budget?", "max_output_tokens": 2000}


def helper_events(text: str = "Plans for money.", tier: str | None = None) -> list[dict[str, Any]]:
    """A complete Responses stream, as the SDK's ``responses.stream`` helper needs it (items announced
    before their content): created, output item / content part added, text delta, done events,
    ``response.completed`` with the usage."""
    final = response()
    message = final["output"][1]
    message["content"][0]["text"] = text
    final["output"] = [message]
    if tier is not None:
        final["service_tier"] = tier
    started = response(status="in_progress", with_usage=False)
    started["output"] = []
    ids = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**message, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **ids, "part": part},
        {"type": "response.output_text.delta", **ids, "delta": text, "logprobs": []},
        {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": final},
    ]  # fmt: skip
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


HELPER_SSE = openai_sse(helper_events(), done=False)


def served(tier: str) -> dict[str, Any]:
    body = response()
    body["service_tier"] = tier
    return body


def stream_served(tier: str) -> str:
    events = responses_stream_events()
    events[-1]["response"]["service_tier"] = tier
    return openai_sse(events, done=False)


def one_commit(h: Harness) -> budgetguard.JournalEntry:
    (entry,) = h.history()
    assert entry.event == "committed"
    return entry


# -- Responses API: stream helpers ---------------------------------------------------------------


def test_responses_stream_helper(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(HELPER_SSE)
    stream = h.guard.with_budget(openai_client(api).responses.stream, user="alice")

    with stream(**RESPONSES_REQUEST) as events:
        kinds = [event.type for event in events]
        final = events.get_final_response()

    assert kinds[-1] == "response.completed"
    assert final.output_text == "Plans for money."
    assert api.paths == ["/v1/responses"]
    assert api.requests[0]["stream"] is True
    entry = one_commit(h)
    assert entry.amounts["usd"] == O4_STANDARD
    assert entry.data["usage"] == O4_MINI_USAGE.to_dict()
    assert "usage_missing" not in entry.data


def test_responses_stream_get_final_response_without_iterating(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(HELPER_SSE)
    stream = h.guard.with_budget(openai_client(api).responses.stream)
    with stream(**RESPONSES_REQUEST) as events:
        assert events.get_final_response().usage.output_tokens == 1200
    assert one_commit(h).amounts["usd"] == O4_STANDARD


async def test_async_responses_stream_helper(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(HELPER_SSE)
    stream = h.guard.with_budget(async_openai_client(api).responses.stream, user="alice")

    async with stream(**RESPONSES_REQUEST) as events:
        final = await events.get_final_response()

    assert final.usage is not None
    assert one_commit(h).amounts["usd"] == O4_STANDARD


def test_responses_stream_left_early_is_charged_as_interrupted(make_guard: MakeGuard) -> None:
    """Leaving the block while the model generates (not read on: that would bill the rest): input
    estimate + the output it may have used. o4-mini reasons without streaming its reasoning (billed as
    output): the text received is not a bound of what it consumed, so it is charged its reserved output,
    flagged ``reasoning_worst_case``."""
    h = make_guard()
    text = "Budgets are plans for money, written down before it is spent. " * 10
    api = serve(openai_sse(helper_events(text), done=False))
    stream = h.guard.with_budget(openai_client(api).responses.stream)

    with stream(**RESPONSES_REQUEST) as received:
        for event in received:
            if event.type == "response.output_text.delta":
                break

    est = budgetguard.estimate(RESPONSES_REQUEST)
    assert budgetguard.count_text_tokens(text, "o4-mini") < est.output_tokens == 2000
    usage = Usage(input_tokens=est.input_tokens, output_tokens=est.output_tokens)
    entry = one_commit(h)
    assert entry.data["usage"] == usage.to_dict()
    assert entry.amounts["usd"] == budgetguard.get_price("o4-mini").cost_nano(usage) == est.cost_nano
    assert entry.data["interrupted"] is True
    assert entry.data["reasoning_worst_case"] is True


def test_responses_create_stream_cut_is_charged_its_reasoning_worst_case(make_guard: MakeGuard) -> None:
    """A reasoning model's stream cut after 4 tokens of text: not 4 tokens of output (its hidden
    reasoning is billed as output too) but the output bound it reserved, flagged."""
    h = make_guard()
    api = serve(Reply(body=cut_stream(openai_sse(responses_stream_events(), done=False), after_events=3)))
    create = h.guard.with_budget(openai_client(api).responses.create)

    stream = create(**RESPONSES_REQUEST, stream=True)
    with pytest.raises(OPENAI_STREAM_CUT):  # the SDK's error, whichever its release raises
        for _ in stream:
            pass
    stream.close()

    est = budgetguard.estimate(RESPONSES_REQUEST)
    usage = Usage(input_tokens=est.input_tokens, output_tokens=2000)
    assert budgetguard.count_text_tokens("Plans for money.", "o4-mini") == 4  # what it was charged before
    entry = one_commit(h)
    assert entry.data["usage"] == usage.to_dict()
    assert entry.data["interrupted"] is True
    assert entry.data["reasoning_worst_case"] is True


def test_responses_estimate_reads_items_instructions_tools_and_max_output() -> None:
    tools = [
        {
            "type": "function",
            "name": "get_balance",
            "description": "The balance of an account.",
            "parameters": {"type": "object", "properties": {"account": {"type": "string"}}},
        },
        {"type": "web_search"},
    ]
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "What is my balance?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_balance", "arguments": '{"account":"main"}'},
        {"type": "function_call_output", "call_id": "c1", "output": '{"balance": 1200}'},
    ]
    base = {"model": "o4-mini", "input": items, "max_output_tokens": 500, "reasoning": {"effort": "high"}}
    plain = budgetguard.estimate(base)
    with_all = budgetguard.estimate({**base, "instructions": "You are terse.", "tools": tools})
    assert plain.output_tokens == 500  # reasoning is output: bounded by max_output_tokens
    shown = with_all.input_tokens - with_all.tool_pass_tokens  # (less the passes web search may run)
    assert shown - plain.input_tokens == (
        budgetguard.count_message_tokens([{"role": "system", "content": "You are terse."}], "o4-mini")
        - budgetguard.count_message_tokens([], "o4-mini")
        + budgetguard.count_tool_tokens(tools, "o4-mini")
        + 3  # function tools: the margin measured above the cookbook's rule
        + 250  # web_search: the instructions the API adds (measured)
    )
    unbounded = budgetguard.estimate({**base, "max_output_tokens": None})
    assert unbounded.output_tokens == 100_000  # o4-mini's maximum output (its window is 200,000)
    assert budgetguard.get_price("o4-mini").max_output_tokens == 100_000


# -- price variants ------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "cost"), [("flex", O4_FLEX), ("priority", O4_PRIORITY)])
def test_service_tier_reserves_and_commits_at_its_variant(
    make_guard: MakeGuard, tier: str, cost: int
) -> None:
    h = make_guard()
    api = serve(served(tier))
    create = h.guard.with_budget(openai_client(api).responses.create)

    create(**RESPONSES_REQUEST, service_tier=tier)

    assert api.requests[0]["service_tier"] == tier
    est = budgetguard.estimate({**RESPONSES_REQUEST, "service_tier": tier})
    assert est.variant == {"service_tier": tier}
    entry = one_commit(h)
    assert entry.amounts["usd"] == cost
    assert entry.variant == {"service_tier": tier}
    assert entry.data["estimated_usd"] == str(est.cost)
    assert "served_tier" not in entry.data


def test_the_tier_the_response_reports_wins(make_guard: MakeGuard) -> None:
    """Asked for flex, served at default (no flex capacity): charged the standard price, and the
    journal says so. Asked for auto, served at priority: charged priority."""
    h = make_guard()
    create = h.guard.with_budget(openai_client(serve(served("default"), served("priority"))).responses.create)

    create(**RESPONSES_REQUEST, service_tier="flex")
    create(**RESPONSES_REQUEST, service_tier="auto")

    flex, auto = h.history()
    assert (flex.amounts["usd"], auto.amounts["usd"]) == (O4_STANDARD, O4_PRIORITY)
    assert flex.variant is None and flex.data["served_tier"] == "default"
    assert auto.variant == {"service_tier": "priority"} and auto.data["served_tier"] == "priority"


def test_streamed_tier_is_read_from_response_completed(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(stream_served("flex"))
    create = h.guard.with_budget(openai_client(api).responses.create)
    for _ in create(**RESPONSES_REQUEST, service_tier="flex", stream=True):
        pass
    entry = one_commit(h)
    assert entry.amounts["usd"] == O4_FLEX
    assert entry.variant == {"service_tier": "flex"}


def test_chat_service_tier_from_the_completion(make_guard: MakeGuard) -> None:
    h = make_guard()
    body = chat_completion()
    body["service_tier"] = "priority"
    create = h.guard.with_budget(openai_client(serve(body)).chat.completions.create)
    create(**chat_request(service_tier="priority"))
    # gpt-4o priority: 86 x $4.25 + 1920 x $2.125 + 300 x $17 per million
    entry = one_commit(h)
    assert entry.amounts["usd"] == 9_545_500
    assert entry.variant == {"service_tier": "priority"}


def test_anthropic_long_context_tier(make_guard: MakeGuard) -> None:
    """Claude Haiku 5.5 above 100k input tokens: $0.50 / $2.50 per million instead of $0.10 / $0.50."""
    h = make_guard()
    body = anthropic_message(
        input_tokens=150_000, cache_creation_input_tokens=0, cache_read_input_tokens=0, cache_creation=None,
        output_tokens=1000,
    )  # fmt: skip
    body["model"] = "claude-haiku-5-5"  # (the model that answered is the one charged)
    create = h.guard.with_budget(anthropic_client(serve(body)).messages.create)
    create(**claude_request("claude-haiku-5-5"))
    assert one_commit(h).amounts["usd"] == 77_500_000  # 150000 x $0.50 + 1000 x $2.50


def test_anthropic_fast_mode_variant(make_guard: MakeGuard) -> None:
    h = make_guard()
    body = anthropic_message(speed="fast")
    create = h.guard.with_budget(anthropic_client(serve(body)).messages.create)
    request = claude_request("claude-opus-4-8", speed="fast")
    assert budgetguard.estimate(request).variant == {"speed": "fast"}
    create(**request)
    # claude-opus-4-8 fast: 50 x $10 + 10000 x $1 + 1500 x $12.50 + 500 x $20 + 503 x $50 per million
    entry = one_commit(h)
    assert entry.amounts["usd"] == 64_400_000
    assert entry.variant == {"speed": "fast"}


def test_batch_estimate_is_the_batch_price() -> None:
    standard = budgetguard.estimate(claude_request())
    batch = budgetguard.estimate(claude_request(), batch=True)
    assert batch.variant == {"processing": "batch"}
    assert batch.input_tokens == standard.input_tokens
    assert batch.cost_nano * 2 == pytest.approx(standard.cost_nano, abs=1)
    assert budgetguard.get_price("claude-sonnet-4-6").cost_nano(CLAUDE_USAGE) == 19_320_000


# -- Anthropic count_tokens as the pre-estimate --------------------------------------------------

COUNT = {"input_tokens": 2345}


def count_guard(make: MakeGuard, client: Any, **estimator: Any) -> Harness:
    return make(estimator=Estimator(anthropic_count_tokens=client, **estimator))


def test_count_tokens_replaces_the_offline_estimate(make_guard: MakeGuard) -> None:
    counter = serve(COUNT)
    h = count_guard(make_guard, anthropic_client(counter))
    api = serve(anthropic_message())
    create = h.guard.with_budget(anthropic_client(api).messages.create)

    create(**claude_request())

    assert counter.paths == ["/v1/messages/count_tokens"]
    asked = counter.requests[0]
    assert asked["model"] == "claude-sonnet-4-6" and asked["messages"] == claude_request()["messages"]
    assert "max_tokens" not in asked
    exact = h.guard.estimator(claude_request(), input_tokens=2345)
    assert exact.counted and exact.input_tokens == 2345
    assert exact.input_tokens != budgetguard.estimate(claude_request()).input_tokens
    entry = one_commit(h)
    assert entry.data["estimated_usd"] == str(exact.cost)
    assert "estimate_fallback" not in h.kinds()


async def test_count_tokens_with_an_async_client(amake_guard: MakeGuard) -> None:
    counter = serve(COUNT)
    h = count_guard(amake_guard, async_anthropic_client(counter))
    create = h.guard.with_budget(async_anthropic_client(serve(anthropic_message())).messages.create)
    await create(**claude_request())
    assert counter.paths == ["/v1/messages/count_tokens"]
    exact = h.guard.estimator(claude_request(), input_tokens=2345)
    assert one_commit(h).data["estimated_usd"] == str(exact.cost)


def test_count_tokens_timeout_falls_back_to_the_offline_estimate(
    make_guard: MakeGuard, caplog: pytest.LogCaptureFixture
) -> None:
    counter = serve(timeout())
    h = count_guard(make_guard, anthropic_client(counter), count_tokens_timeout=0.5)
    create = h.guard.with_budget(anthropic_client(serve(anthropic_message())).messages.create)

    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        create(**claude_request())

    assert len(counter.paths) == 1  # no retries of the count
    offline = budgetguard.estimate(claude_request())
    assert offline.cost_nano > 0
    assert one_commit(h).data["estimated_usd"] == str(offline.cost)
    (fallback,) = h.of("estimate_fallback")
    assert fallback.estimated == offline.cost
    assert "count_tokens failed" in caplog.text and "APITimeoutError" in caplog.text


def test_estimator_counts_by_itself_with_a_sync_client() -> None:
    counter = serve(COUNT, Reply(500, {"type": "error", "error": {"type": "api_error", "message": "down"}}))
    estimator = Estimator(anthropic_count_tokens=anthropic_client(counter))
    assert estimator(claude_request()).input_tokens == 2345
    assert estimator(claude_request()).input_tokens == budgetguard.estimate(claude_request()).input_tokens
    gpt = estimator(chat_request())  # not a Claude request: never counted by Anthropic
    assert gpt.input_tokens == budgetguard.estimate(chat_request()).input_tokens
    assert len(counter.paths) == 2


def test_routing_from_claude_counts_each_claude_model(make_guard: MakeGuard) -> None:
    counter = serve(COUNT)
    h = count_guard(make_guard, anthropic_client(counter))
    h.charge("user:alice", 990_000_000)  # $0.99 of $1: the first model's hold is refused
    body = copy.deepcopy(anthropic_message())
    body["model"] = "claude-haiku-4-5"
    create = h.guard.with_budget(
        anthropic_client(serve(body)).messages.create,
        user="alice",
        route=["claude-sonnet-4-6", "claude-haiku-4-5"],
    )
    create(**claude_request())
    assert [r["model"] for r in counter.requests] == ["claude-sonnet-4-6", "claude-haiku-4-5"]


def test_estimator_rejects_a_non_client() -> None:
    with pytest.raises(budgetguard.ConfigurationError, match="client"):
        Estimator(anthropic_count_tokens="sk-ant-key")
    with pytest.raises(budgetguard.ConfigurationError, match="timeout"):
        Estimator(anthropic_count_tokens=anthropic_client(serve(COUNT)), count_tokens_timeout=0)


def test_guard_default_estimator_stays_offline() -> None:
    assert Guard("memory://").estimator.anthropic_count_tokens is None


# -- embeddings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "What is a budget?",
        ["What is a budget?", "Plans for money."],
        [3923, 374, 264, 8199, 30],  # one array of token ids
        [[3923, 374, 264, 8199, 30], [26040, 369, 3300, 13]],  # a batch of token arrays
    ],
)
async def test_async_embeddings_one_reservation_per_batch(amake_guard: MakeGuard, value: Any) -> None:
    h = amake_guard()
    count = budgetguard.estimate({"model": "text-embedding-3-large", "input": value}).input_tokens
    api = serve(embedding_response("text-embedding-3-large", count))
    create = h.guard.with_budget(async_openai_client(api).embeddings.create, user="alice")

    await create(model="text-embedding-3-large", input=value)

    assert api.requests[0]["input"] == value
    entry = one_commit(h)
    assert entry.amounts == {"usd": count * 130, "tokens": count, "requests": 1}  # $0.13 per million
    assert entry.data["usage"] == {"input_tokens": count}

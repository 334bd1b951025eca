"""Every endpoint through the real SDK clients against ``budgetguard.testing.MockProvider`` (real HTTP).

The ledger is compared with the usage the mock reported (by its own rule, ``count_input``), priced by
hand from the providers' published per-million rates written out below (not read back through
budgetguard's price book), to the nano-USD.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

import budgetguard
from budgetguard import Estimator, Event, Guard, JournalEntry
from budgetguard.testing import MockProvider, count_input
from tests.sdk_http import ANTHROPIC_STREAM_CUT, OPENAI_STREAM_CUT

# USD per million tokens (genai-prices 0.2.3, the providers' price pages)
EMBED_SMALL = "0.02"
O4_MINI = {"input": "1.10", "cached": "0.275", "output": "4.40"}
O4_MINI_FLEX = {"input": "0.55", "cached": "0.138", "output": "2.20"}
O4_MINI_PRIORITY = {"input": "2.00", "cached": "0.50", "output": "8.00"}  # openai.com/api-priority-processing
SONNET = {"input": "3", "read": "0.30", "write_5m": "3.75", "write_1h": "6", "output": "15"}

CHUNKS = [
    f"Section {i}. A budget is a plan for money: what comes in, what goes out, and what is kept back."
    for i in range(40)
]
LONG_SYSTEM = "You are the assistant of a personal finance app. Answer briefly and precisely. " * 90


def nano(*pairs: tuple[int, str]) -> int:
    """tokens x USD-per-million, summed, in nano-USD rounded up (as the providers' invoices add up)."""
    return math.ceil(sum(Decimal(tokens) * Decimal(rate) * 1000 for tokens, rate in pairs))


def responses_nano(usage: dict[str, Any], rates: dict[str, str]) -> int:
    cached = usage["input_tokens_details"]["cached_tokens"]
    return nano(
        (usage["input_tokens"] - cached, rates["input"]),
        (cached, rates["cached"]),
        (usage["output_tokens"], rates["output"]),
    )


def claude_nano(usage: dict[str, Any]) -> int:
    split = usage["cache_creation"]
    return nano(
        (usage["input_tokens"], SONNET["input"]),
        (usage["cache_read_input_tokens"], SONNET["read"]),
        (split["ephemeral_5m_input_tokens"], SONNET["write_5m"]),
        (split["ephemeral_1h_input_tokens"], SONNET["write_1h"]),
        (usage["output_tokens"], SONNET["output"]),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[MockProvider]:
    with MockProvider() as provider:
        yield provider


@pytest.fixture
def mock(server: MockProvider) -> Iterator[MockProvider]:
    server.reset()
    yield server
    server.reply_text, server.project_service_tier = None, "default"


class Clients:
    """The mock's SDK clients, closed at the end of the test (no unclosed sockets left to the GC)."""

    def __init__(self, mock: MockProvider) -> None:
        self.mock = mock
        self.made: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        def make(**kwargs: Any) -> Any:
            client = getattr(self.mock, name)(**kwargs)
            self.made.append(client)
            return client

        return make


@pytest.fixture
async def sdk(mock: MockProvider) -> AsyncIterator[Clients]:
    clients = Clients(mock)
    yield clients
    for client in clients.made:
        closed = client.close()
        if inspect.isawaitable(closed):
            await closed


def read_until_cut(stream: Any, kind: str) -> tuple[list[Any], Exception | None]:
    """The events of type ``kind`` a stream delivered before it failed, and the failure."""
    received = []
    try:
        for event in stream:
            if event.type == kind:
                received.append(event)
    except Exception as exc:
        return received, exc
    return received, None


def make_guard(events: list[Event] | None = None, **kwargs: Any) -> Guard:
    budgets = [
        budgetguard.Budget("feature", usd="5", per="day"),
        budgetguard.Budget("global", usd="50", per="day"),
    ]
    return Guard("memory://", budgets=budgets, on_event=None if events is None else events.append, **kwargs)


def committed(guard: Guard) -> list[JournalEntry]:
    return guard.ledger.history(events=["committed"])


def spent(guard: Guard, scope: str) -> int:
    counters = [
        c for c in guard.counters_for([budgetguard.Scope.parse(scope)]) if c.unit is budgetguard.Unit.USD
    ]
    (status,) = guard.ledger.status(counters)
    assert status.held == 0
    return status.spent


# -- embeddings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        CHUNKS[0],
        CHUNKS[:8],
        budgetguard.get_encoding("cl100k_base").encode(CHUNKS[0]),
        [budgetguard.get_encoding("cl100k_base").encode(chunk) for chunk in CHUNKS[:3]],
    ],
    ids=["str", "list[str]", "token array", "token arrays"],
)
def test_embeddings_estimate_is_exact_and_charged_per_input_token(
    mock: MockProvider, sdk: Clients, value: Any
) -> None:
    guard = make_guard()
    embed = guard.with_budget(sdk.openai().embeddings.create, feature="search")

    result = embed(model="text-embedding-3-small", input=value)

    (usage,) = mock.usages
    assert len(result.data) == (
        len(value) if isinstance(value, list) and not isinstance(value[0], int) else 1
    )
    request = {"model": "text-embedding-3-small", "input": value}
    # the mock's embeddings rule is OpenAI's own count (each input's raw encode, checked against the
    # recorded counts in tests/test_mock_provider.py): the estimate is that count, exactly
    assert usage["prompt_tokens"] == count_input("embeddings", request)
    assert budgetguard.estimate(request).input_tokens == usage["prompt_tokens"]
    (entry,) = committed(guard)
    assert entry.amounts["usd"] == nano((usage["prompt_tokens"], EMBED_SMALL))
    assert entry.amounts["requests"] == 1  # a batch of inputs is one call, one reservation


async def test_async_embeddings_base64(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    embed = guard.with_budget(sdk.async_openai().embeddings.create, feature="search")
    result = await embed(model="text-embedding-3-small", input=CHUNKS[:4], encoding_format="base64")
    assert len(result.data) == 4
    (usage,) = mock.usages
    assert spent(guard, "feature:search") == nano((usage["prompt_tokens"], EMBED_SMALL))


def test_ingestion_job_one_reservation(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    embed = guard.with_budget(sdk.openai().embeddings.create)

    with guard.reserve(usd="0.01", feature="ingest") as job:
        for start in range(0, len(CHUNKS), 10):
            embed(model="text-embedding-3-small", input=CHUNKS[start : start + 10])

    tokens = sum(u["prompt_tokens"] for u in mock.usages)
    assert len(mock.usages) == 4
    assert job.spent == budgetguard.to_usd(nano((tokens, EMBED_SMALL)))
    (entry,) = guard.ledger.history()
    assert (entry.event, entry.data["calls"], entry.model) == ("committed", 4, "text-embedding-3-small")
    assert spent(guard, "feature:ingest") == spent(guard, "global") == nano((tokens, EMBED_SMALL))


async def test_async_ingestion_job_refuses_past_its_hold(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    embed = guard.with_budget(sdk.async_openai().embeddings.create)
    per_call = nano((budgetguard.count_text_tokens(CHUNKS[0], "text-embedding-3-small"), EMBED_SMALL))

    async with guard.reserve(usd=budgetguard.to_usd(per_call * 5 // 2), feature="ingest"):
        results = await asyncio.gather(
            *(embed(model="text-embedding-3-small", input=CHUNKS[0]) for _ in range(4)),
            return_exceptions=True,
        )

    refused = [r for r in results if isinstance(r, budgetguard.BudgetExceededError)]
    assert len(refused) == 2 and all(r.scope == "job:ingest" for r in refused)
    assert len(mock.usages) == 2
    assert spent(guard, "feature:ingest") == 2 * per_call


# -- Responses API ----------------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "name": "get_balance",
        "description": "The balance of one of the user's accounts.",
        "parameters": {
            "type": "object",
            "properties": {"account": {"type": "string", "enum": ["main", "savings"]}},
            "required": ["account"],
        },
    }
]


def responses_request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "o4-mini",
        "instructions": LONG_SYSTEM,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "How much is in my main account?"}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_balance",
                "arguments": '{"account":"main"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"balance": "1200.00"}'},
            {"role": "user", "content": "And what should I keep back?"},
        ],
        "tools": TOOLS,
        "reasoning": {"effort": "low"},
        "max_output_tokens": 400,
        **extra,
    }


def test_responses_create_with_items_tools_reasoning_and_cache(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    create = guard.with_budget(sdk.openai().responses.create, feature="advice")

    create(**responses_request())
    create(**responses_request())  # the same long prefix: OpenAI's prompt cache serves it

    first, second = mock.usages
    assert first["input_tokens"] == count_input("responses", responses_request())  # the mock's own rule
    assert budgetguard.estimate(responses_request()).input_tokens >= first["input_tokens"]  # reserved >= used
    assert first["output_tokens_details"]["reasoning_tokens"] == 64
    assert second["input_tokens_details"]["cached_tokens"] >= 1024
    entries = committed(guard)
    assert [e.amounts["usd"] for e in entries] == [responses_nano(u, O4_MINI) for u in (first, second)]
    assert entries[1].data["usage"]["cache_read_tokens"] == second["input_tokens_details"]["cached_tokens"]
    assert entries[1].data["usage"]["reasoning_tokens"] == 64


def test_responses_flex_tier(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    create = guard.with_budget(sdk.openai().responses.create, feature="advice")
    create(**responses_request(service_tier="flex"))
    (usage,) = mock.usages
    (entry,) = committed(guard)
    assert mock.requests[0].body["service_tier"] == "flex"
    assert entry.amounts["usd"] == responses_nano(usage, O4_MINI_FLEX)
    assert entry.variant == {"service_tier": "flex"}
    est = budgetguard.estimate(responses_request(service_tier="flex"))
    assert entry.data["estimated_usd"] == str(est.cost)
    assert est.cost_nano < budgetguard.estimate(responses_request()).cost_nano


@pytest.mark.parametrize("named", [None, "auto"])
@pytest.mark.parametrize("how", ["with_budget", "wrap", "stream"])
def test_project_default_priority_tier_is_reserved(
    mock: MockProvider, sdk: Clients, named: str | None, how: str
) -> None:
    """A project whose default tier is Priority serves a request naming no tier (or "auto") at
    priority: with default_service_tier="priority" the reservation is at priority prices, never below
    the bill, and no unreserved_tier warning."""
    mock.project_service_tier = "priority"
    events: list[Event] = []
    guard = make_guard(events, default_service_tier="priority")
    request = responses_request(**({} if named is None else {"service_tier": named}))
    if how == "wrap":
        guard.wrap(sdk.openai(), feature="advice").responses.create(**request)
    else:
        create = guard.with_budget(sdk.openai().responses.create, feature="advice")
        if how == "stream":
            assert [event.type for event in create(**request, stream=True)][-1] == "response.completed"
        else:
            assert create(**request).service_tier == "priority"  # what the mock served
    (usage,) = mock.usages
    (entry,) = committed(guard)
    assert entry.amounts["usd"] == responses_nano(usage, O4_MINI_PRIORITY)
    est = Estimator(default_service_tier="priority")(request)
    assert est.variant == {"service_tier": "priority"}
    assert entry.data["estimated_usd"] == str(est.cost) and est.cost_nano >= entry.amounts["usd"]
    assert est.cost_nano > budgetguard.estimate(request).cost_nano  # (standard: what it reserved before)
    assert not {"overrun", "unreserved_tier"} & {e.kind for e in events}


def test_a_named_tier_is_kept_under_a_priority_default(mock: MockProvider, sdk: Clients) -> None:
    mock.project_service_tier = "priority"
    guard = make_guard(default_service_tier="priority")
    create = guard.with_budget(sdk.openai().responses.create, feature="advice")
    for tier in ("flex", "default"):
        create(**responses_request(service_tier=tier))
    flex, default = committed(guard)
    assert [r.body["service_tier"] for r in mock.requests] == ["flex", "default"]
    assert flex.variant == {"service_tier": "flex"} and default.variant is None
    assert flex.amounts["usd"] == responses_nano(mock.usages[0], O4_MINI_FLEX)
    assert default.amounts["usd"] == responses_nano(mock.usages[1], O4_MINI)
    assert default.data["estimated_usd"] == str(budgetguard.estimate(responses_request()).cost)


def test_an_unset_priority_default_is_charged_and_named(mock: MockProvider, sdk: Clients) -> None:
    """Without the setting the call reserves at standard; the bill (priority) is still charged as
    served, and an unreserved_tier event says which setting reserves it."""
    mock.project_service_tier = "priority"
    events: list[Event] = []
    guard = make_guard(events)
    guard.with_budget(sdk.openai().responses.create, feature="advice")(**responses_request())
    (usage,) = mock.usages
    (entry,) = committed(guard)
    assert entry.amounts["usd"] == responses_nano(usage, O4_MINI_PRIORITY)
    assert entry.data["estimated_usd"] == str(budgetguard.estimate(responses_request()).cost)
    (warned,) = [e for e in events if e.kind == "unreserved_tier"]
    assert warned.data == {"served_tier": "priority"}
    assert warned.reason is not None and "Guard(default_service_tier='priority')" in warned.reason


def test_responses_create_stream(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    create = guard.with_budget(sdk.openai().responses.create, feature="advice")
    kinds = [event.type for event in create(**responses_request(), stream=True)]
    assert kinds[-1] == "response.completed"
    (usage,) = mock.usages
    (entry,) = committed(guard)
    assert entry.amounts["usd"] == responses_nano(usage, O4_MINI)
    assert "usage_missing" not in entry.data


def test_responses_stream_helper(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    stream = guard.with_budget(sdk.openai().responses.stream, feature="advice")
    with stream(**responses_request()) as events:
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        final = events.get_final_response()
    assert final.output_text == text
    (usage,) = mock.usages
    assert spent(guard, "feature:advice") == responses_nano(usage, O4_MINI)


async def test_async_responses_stream_helper(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard()
    stream = guard.with_budget(sdk.async_openai().responses.stream, feature="advice")
    async with stream(**responses_request()) as events:
        final = await events.get_final_response()
    assert final.usage is not None
    (usage,) = mock.usages
    assert spent(guard, "feature:advice") == responses_nano(usage, O4_MINI)


def test_responses_stream_cut_is_charged_its_reasoning_worst_case(mock: MockProvider, sdk: Clients) -> None:
    """Cut after two text deltas of a reasoning model: the input estimate plus the output bound it
    reserved (its reasoning, billed as output, is not streamed), flagged interrupted and
    ``reasoning_worst_case``; not two deltas' worth of output."""
    guard = make_guard()
    create = guard.with_budget(sdk.openai().responses.create, feature="advice")
    mock.cut(after=8, path="/v1/responses")  # created, in_progress, reasoning x2, item, part, 2 deltas

    stream = create(**responses_request(), stream=True)
    deltas, error = read_until_cut(stream, "response.output_text.delta")
    stream.close()

    assert isinstance(error, OPENAI_STREAM_CUT)
    received = [event.delta for event in deltas]

    assert len(received) == 2
    est = budgetguard.estimate(responses_request())
    output = est.output_tokens
    assert budgetguard.count_text_tokens("".join(received), "o4-mini") < output
    (entry,) = committed(guard)
    assert entry.data["usage"] == {"input_tokens": est.input_tokens, "output_tokens": output}
    assert entry.amounts["usd"] == nano((est.input_tokens, O4_MINI["input"]), (output, O4_MINI["output"]))
    assert entry.data["interrupted"] is True
    assert entry.data["reasoning_worst_case"] is True


# -- Anthropic: cache writes, count_tokens ------------------------------------------------------------------


def claude_request(ttl: str = "1h") -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "system": [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": ttl}}],
        "messages": [{"role": "user", "content": "What is a budget?"}],
    }


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_claude_cache_writes_then_reads(mock: MockProvider, sdk: Clients, ttl: str) -> None:
    guard = make_guard()
    create = guard.with_budget(sdk.anthropic().messages.create, feature="chat")
    create(**claude_request(ttl))
    create(**claude_request(ttl))
    write, read = mock.usages
    assert write["cache_creation"][f"ephemeral_{ttl}_input_tokens"] > 1024
    assert read["cache_read_input_tokens"] == write["cache_creation_input_tokens"]
    assert [e.amounts["usd"] for e in committed(guard)] == [claude_nano(write), claude_nano(read)]
    assert budgetguard.estimate(claude_request(ttl)).cache_write == ttl


def test_count_tokens_is_the_exact_pre_estimate(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard(estimator=Estimator(anthropic_count_tokens=sdk.anthropic()))
    create = guard.with_budget(sdk.anthropic().messages.create, feature="chat")

    create(**claude_request())

    count, call = mock.requests
    assert (count.path, call.path) == ("/v1/messages/count_tokens", "/v1/messages")
    (usage,) = mock.usages
    billed_input = (
        usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    )
    exact = guard.estimator(claude_request(), input_tokens=billed_input)
    offline = budgetguard.estimate(claude_request())
    assert exact.input_tokens < offline.input_tokens  # the offline x1.4 factor is no longer needed
    (entry,) = committed(guard)
    assert entry.data["estimated_usd"] == str(exact.cost)
    # worst case = the exact input as 1-hour writes + max_tokens of output
    assert exact.cost_nano == nano((billed_input, SONNET["write_1h"]), (300, SONNET["output"]))


async def test_count_tokens_async(mock: MockProvider, sdk: Clients) -> None:
    guard = make_guard(estimator=Estimator(anthropic_count_tokens=sdk.async_anthropic()))
    create = guard.with_budget(sdk.async_anthropic().messages.create, feature="chat")
    await create(**claude_request())
    assert [r.path for r in mock.requests] == ["/v1/messages/count_tokens", "/v1/messages"]
    (usage,) = mock.usages
    assert spent(guard, "feature:chat") == claude_nano(usage)


@pytest.mark.parametrize("fault", ["error", "timeout"])
def test_count_tokens_failure_falls_back_to_the_offline_estimate(
    mock: MockProvider, sdk: Clients, fault: str
) -> None:
    events: list[Event] = []
    estimator = Estimator(anthropic_count_tokens=sdk.anthropic(), count_tokens_timeout=0.3)
    guard = make_guard(events, estimator=estimator)
    if fault == "error":
        mock.fail(529, path="/v1/messages/count_tokens")
    else:
        mock.delay(1.0, path="/v1/messages/count_tokens")
    create = guard.with_budget(sdk.anthropic().messages.create, feature="chat")

    create(**claude_request())

    offline = budgetguard.estimate(claude_request())
    (entry,) = committed(guard)
    assert entry.data["estimated_usd"] == str(offline.cost) != "0"
    assert [e.kind for e in events].count("estimate_fallback") == 1
    assert [r.path for r in mock.requests].count("/v1/messages/count_tokens") == 1  # no retry storm


def test_claude_stream_cut_after_an_interim_delta(mock: MockProvider, sdk: Clients) -> None:
    """Anthropic sends running output counts in interim ``message_delta`` events; a stream cut after one
    is still interrupted: charged at least the text received, flagged, never as complete.

    Whatever error the SDK raises for the cut passes through unchanged: the transport's own error up to
    anthropic 2.16, an ``APIConnectionError`` wrapping it from 2.17 (``.ci/run`` tests both ends)."""
    guard = make_guard()
    create = guard.with_budget(sdk.anthropic().messages.create, feature="chat")
    mock.reply_text = "Budgets are plans for money, written before it is spent, " * 6
    mock.cut(after=7, path="/v1/messages")  # start, block start, ping, 2 deltas, interim delta, 1 delta

    stream = create(**claude_request(), stream=True)
    deltas, error = read_until_cut(stream, "content_block_delta")
    stream.close()

    assert isinstance(error, ANTHROPIC_STREAM_CUT)
    text = [event.delta.text for event in deltas]

    (entry,) = committed(guard)
    assert entry.data["interrupted"] is True
    streamed = budgetguard.count_text_tokens("".join(text), "claude-sonnet-4-6")
    assert entry.data["usage"]["output_tokens"] == math.ceil(streamed * Decimal("1.4"))  # Claude's factor

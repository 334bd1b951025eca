"""The provider is the endpoint: real SDK clients pointed at each provider's API (served locally), priced
at that provider's prices; the model that answered is charged; variants the data does not price refuse.

Rates are written out from the providers' listings in genai-prices 0.2.5 (USD per million tokens), so
each test compares the ledger with hand arithmetic, to the nano-USD.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import budgetguard
from budgetguard import Budget, Guard, PriceBook, PricingError, Usage
from budgetguard._settle import input_only
from tests.guard.one_call import committed, nano
from tests.guard.payloads import (
    ScriptedAPI,
    anthropic_message,
    anthropic_sse,
    anthropic_stream_events,
    chat_stream_chunks,
    openai_sse,
    serve,
)
from tests.sdk_http import ANTHROPIC_HTTP, OPENAI_HTTP, chat_completions_stream

HI = [{"role": "user", "content": "What is a budget?"}]


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    yield made
    made.close()


def completion(model: str, prompt: int = 1000, completion: int = 200) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1754688908, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "A plan for money."}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }  # fmt: skip


def openai_at(base_url: str, api: ScriptedAPI) -> openai.OpenAI:
    http = OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(api))
    if base_url == AZURE:
        return openai.AzureOpenAI(
            azure_endpoint=base_url, api_key="k", api_version="2024-10-21", max_retries=0, http_client=http
        )
    return openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, http_client=http)


AZURE = "https://contoso.openai.azure.com"

# base URL, model (asked and answered), provider, input and output rates at that provider
OPENAI_ENDPOINTS = {
    "azure": (AZURE, "gpt-4o", "azure", "2.5", "10"),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.5-flash", "google",
               "0.3", "2.5"),
    "deepseek": ("https://api.deepseek.com", "deepseek-v3.2-exp", "deepseek", "0.27", "0.41"),
    "groq": ("https://api.groq.com/openai/v1", "openai/gpt-oss-120b", "groq", "0.15", "0.6"),
    "mistral": ("https://api.mistral.ai/v1", "mistral-large-latest", "mistral", "2", "6"),
    "xai": ("https://api.x.ai/v1", "grok-4", "x-ai", "3", "15"),
    "openrouter": ("https://openrouter.ai/api/v1", "anthropic/claude-sonnet-4", "openrouter", "3", "15"),
    "together": ("https://api.together.xyz/v1", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together",
                 "0.88", "0.88"),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "accounts/fireworks/models/llama-v3p1-8b-instruct",
                  "fireworks", "0.2", "0.2"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("base_url", "model", "provider", "input_rate", "output_rate"),
    list(OPENAI_ENDPOINTS.values()),
    ids=list(OPENAI_ENDPOINTS),
)
def test_an_openai_client_is_priced_at_the_endpoint_it_talks_to(
    guard: Guard,
    global_prices: PriceBook,
    base_url: str,
    model: str,
    provider: str,
    input_rate: str,
    output_rate: str,
) -> None:
    """Before: gemini, deepseek, mistral, x-ai, together and fireworks models raised PricingError on an
    OpenAI client; Groq's gpt-oss was charged OpenAI's listing (0.039 / 0.18: 3.4x under). Azure's listing
    is its Global deployments' price (a deployment of unknown type is charged as the dearest)."""
    global_prices.set_azure_deployment("global")
    api = serve(completion(model))
    create = guard.with_budget(openai_at(base_url, api).chat.completions.create)
    create(model=model, messages=HI, max_tokens=200)

    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, input_rate), (200, output_rate))
    assert "served_model" not in entry.data  # it answered as the model asked
    request = {"model": model, "messages": HI, "max_tokens": 1}
    assert budgetguard.estimate(request, provider=provider).provider == provider


def test_an_unknown_host_prices_by_the_model_name(guard: Guard) -> None:
    """A proxy or local server: the endpoint says nothing, the model's name finds its provider."""
    api = serve(completion("gemini-2.5-flash"))
    create = guard.with_budget(openai_at("http://llm-proxy.internal/v1", api).chat.completions.create)
    create(model="gemini-2.5-flash", messages=HI, max_tokens=200)
    assert committed(guard).amounts["usd"] == nano((1000, "0.3"), (200, "2.5"))


def claude_body(model: str) -> dict[str, Any]:
    body = anthropic_message(
        input_tokens=1000, cache_read_input_tokens=0, cache_creation_input_tokens=0, cache_creation=None,
        output_tokens=200,
    )  # fmt: skip
    body["model"] = model
    return body


def test_anthropic_bedrock_is_priced_at_bedrock(guard: Guard) -> None:
    """Bedrock's regional (``us.``) Claude Sonnet 4.5 costs 10% more than Anthropic's API: $3.30 / $16.50."""
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    api = serve(claude_body(model))
    client = anthropic.AnthropicBedrock(
        aws_region="us-east-1",
        api_key="k",
        max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )
    guard.with_budget(client.messages.create)(model=model, messages=HI, max_tokens=200)
    assert committed(guard).amounts["usd"] == nano((1000, "3.3"), (200, "16.5"))
    assert api.paths == [f"/model/{model}/invoke"]


def test_anthropic_vertex_is_priced_at_vertex(guard: Guard) -> None:
    model = "claude-sonnet-4@20250514"
    api = serve(claude_body(model))
    client = anthropic.AnthropicVertex(
        region="us-east5", project_id="p", access_token="t", max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip
    guard.with_budget(client.messages.create)(model=model, messages=HI, max_tokens=200)
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "3"), (200, "15"))
    assert entry.data["estimated_usd"] != "0"


@pytest.mark.parametrize(
    "model",
    [
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "eu.anthropic.claude-opus-4-6-v1",
        "claude-opus-4-1@20250805",
    ],
)
def test_bedrock_and_vertex_model_ids_are_known_and_read_as_claude_requests(model: str) -> None:
    est = budgetguard.estimate({"model": model, "messages": HI, "max_tokens": 10})
    assert est.cost_nano > 0
    assert est.input_tokens == budgetguard.count_anthropic_tokens(HI, model)  # Claude's counting


# -- the caller's provider wins over a prefix in the model's name ------------------------------------


def test_the_callers_provider_wins_over_the_name_prefix(global_prices: PriceBook) -> None:
    global_prices.set_azure_deployment("global")  # (Azure's listing: its Global deployments' price)
    million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert budgetguard.cost("openai/gpt-oss-120b", million, provider="groq") == Decimal("0.75")  # was 0.219
    assert budgetguard.cost("openai/gpt-oss-120b", million) == Decimal("0.219")  # no provider: the prefix's
    assert budgetguard.cost("gpt-4o", million, provider="azure") == Decimal("12.5")
    assert budgetguard.cost("claude-sonnet-4-5-20250929", million, provider="bedrock") == Decimal(
        "19.8"
    )  # an alias of aws


def test_a_model_the_provider_does_not_list_is_an_error_not_another_providers_price() -> None:
    with pytest.raises(PricingError, match="'groq'"):
        budgetguard.get_price("claude-sonnet-4-5", provider="groq")
    with pytest.raises(PricingError, match="unknown provider 'nowhere'"):
        budgetguard.get_price("gpt-4o", provider="nowhere")


# -- the model that answered --------------------------------------------------------------------------


def test_a_dearer_model_that_answered_is_charged_and_recorded(guard: Guard) -> None:
    """Asked ``gpt-4o`` ($2.50 / $10), answered by the older snapshot ``gpt-4o-2024-05-13`` ($5 / $15)."""
    api = serve(completion("gpt-4o-2024-05-13"))
    guard.with_budget(openai_at("https://api.openai.com/v1", api).chat.completions.create)(
        model="gpt-4o", messages=HI, max_tokens=200
    )
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "5"), (200, "15"))  # before: (1000 x 2.5 + 200 x 10) = 4500
    assert entry.model == "gpt-4o"
    assert entry.data["served_model"] == entry.data["priced_as"] == "gpt-4o-2024-05-13"


def test_an_alias_that_answered_costs_the_same(guard: Guard) -> None:
    api = serve(completion("gpt-4o-2024-08-06"))
    guard.with_budget(openai_at("https://api.openai.com/v1", api).chat.completions.create)(
        model="gpt-4o", messages=HI, max_tokens=200
    )
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "2.5"), (200, "10"))
    assert entry.data["served_model"] == "gpt-4o-2024-08-06"
    assert "priced_as" not in entry.data  # (charged as the model asked: the same price)


def test_a_configured_price_stands_whoever_answered() -> None:
    book = PriceBook()
    book.register("my-finetune", input="1", output="2")
    guard = Guard("memory://", budgets=[Budget("global", usd="100", per="day")], prices=book)
    api = serve(completion("ft:gpt-4o-mini:acme::abc123"))
    guard.with_budget(openai_at("http://proxy.internal/v1", api).chat.completions.create)(
        model="my-finetune", messages=HI, max_tokens=200
    )
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "1"), (200, "2"))
    assert entry.data["served_model"] == "ft:gpt-4o-mini:acme::abc123" and "priced_as" not in entry.data
    guard.close()


def test_an_unpriced_model_that_answered_is_charged_the_reserved_price_and_flagged(guard: Guard) -> None:
    api = serve(completion("gpt-4o-internal-canary"))
    guard.with_budget(openai_at("https://api.openai.com/v1", api).chat.completions.create)(
        model="gpt-4o", messages=HI, max_tokens=200
    )
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "2.5"), (200, "10"))
    assert "gpt-4o-internal-canary" in entry.data["unpriced"]


def test_the_model_a_stream_answered_is_charged(guard: Guard) -> None:
    chunks = chat_stream_chunks()
    for chunk in chunks:
        chunk["model"] = "gpt-4o-2024-05-13"
    api = serve(openai_sse(chunks))
    create = guard.with_budget(openai_at("https://api.openai.com/v1", api).chat.completions.create)
    for _ in create(model="gpt-4o", messages=HI, max_tokens=200, stream=True):
        pass
    entry = committed(guard)
    usage = chunks[-1]["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert entry.data["served_model"] == "gpt-4o-2024-05-13"
    assert entry.amounts["usd"] == nano(
        (usage["prompt_tokens"] - cached, "5"), (cached, "5"), (usage["completion_tokens"], "15")
    )  # (gpt-4o-2024-05-13 has no cache discount)


# -- variants the data does not price --------------------------------------------------------------------


def test_fast_mode_on_a_model_without_a_fast_price_is_refused_before_the_call(guard: Guard) -> None:
    api = serve(claude_body("claude-opus-4-6"))
    client = anthropic.Anthropic(
        base_url="https://api.anthropic.com", api_key="k", max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip
    create = guard.with_budget(client.messages.create)
    with pytest.raises(PricingError, match=r"speed='fast'.*claude-opus-4-6"):
        create(model="claude-opus-4-6", messages=HI, max_tokens=200, speed="fast")
    assert api.requests == []  # before: sent, and charged Opus 4.6's base price
    create(model="claude-opus-4-8", messages=HI, max_tokens=200, speed="fast")  # its fast price is known


def test_inference_geo_is_priced_only_when_configured() -> None:
    """A geo without a published price (US-only inference is: 1.1x, see tests/test_geo_prices.py) is
    refused unless the model's price is registered."""
    request = {"model": "claude-opus-4-6", "messages": HI, "max_tokens": 10, "inference_geo": "eu"}
    with pytest.raises(PricingError, match="inference_geo='eu'"):
        budgetguard.estimate(request)
    assert budgetguard.estimate({**request, "inference_geo": "global"}).variant is None
    book = PriceBook()
    book.register("claude-opus-4-6", input="6", output="30")  # (what such a geo would bill, say)
    assert budgetguard.Estimator(prices=book)(request).price.base.input == Decimal("6")


def test_a_response_served_at_an_unpriced_geo_is_flagged_not_silently_base(guard: Guard) -> None:
    body = claude_body("claude-sonnet-4-5")
    body["usage"]["inference_geo"] = "eu"  # (a geo without a published price)
    api = serve(body)
    client = anthropic.Anthropic(
        base_url="https://api.anthropic.com", api_key="k", max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip
    guard.with_budget(client.messages.create)(model="claude-sonnet-4-5", messages=HI, max_tokens=200)
    entry = committed(guard)
    assert entry.data["served_tier"] == "inference_geo:eu"
    assert "inference_geo='eu'" in entry.data["unpriced"]


# -- at= is an instant ----------------------------------------------------------------------------------


def test_at_prices_the_utc_instant_given() -> None:
    """gpt-5.6-sol drops from $5 to $4 input on 2026-08-21 (UTC). 01:00 on the 21st at UTC+5 is still
    the 20th in UTC: the old price, even after a lookup for the 21st (UTC) was cached."""
    book = PriceBook()
    assert book.get("gpt-5.6-sol", at=datetime(2026, 8, 21, 12, tzinfo=UTC)).base.input == Decimal("4")
    east = datetime(2026, 8, 21, 1, tzinfo=timezone(timedelta(hours=5)))
    assert book.get("gpt-5.6-sol", at=east).base.input == Decimal("5")  # before: $4, the cached 21st
    west = datetime(2026, 8, 20, 22, tzinfo=timezone(timedelta(hours=-5)))  # 03:00 UTC on the 21st
    assert PriceBook().get("gpt-5.6-sol", at=west).base.input == Decimal("4")
    # a naive datetime is read as UTC (as genai-prices reads it)
    assert book.get("gpt-5.6-sol", at=datetime(2026, 8, 20, 23)).base.input == Decimal("5")
    assert book.get("gpt-5.6-sol", at=datetime(2026, 8, 21, 0, 30)).base.input == Decimal("4")


# -- chat.completions.stream --------------------------------------------------------------------------------


def chat_helper_sse() -> tuple[str, dict[str, Any]]:
    chunks = chat_stream_chunks()
    return openai_sse(chunks), chunks[-1]["usage"]


def gpt4o_nano(usage: dict[str, Any]) -> int:
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return nano(
        (usage["prompt_tokens"] - cached, "2.5"), (cached, "1.25"), (usage["completion_tokens"], "10")
    )


def test_chat_completions_stream_is_a_stream_charged_its_usage(guard: Guard) -> None:
    sse, usage = chat_helper_sse()
    api = serve(sse)
    stream = guard.with_budget(chat_completions_stream(openai_at("https://api.openai.com/v1", api)))
    with stream(model="gpt-4o", messages=HI, max_tokens=300) as events:
        for _ in events:
            pass
    assert api.requests[0]["stream_options"] == {
        "include_usage": True
    }  # asked for, as for create(stream=True)
    entry = committed(guard)
    assert entry.amounts["usd"] == gpt4o_nano(usage)  # before: the worst case, flagged usage_missing
    assert "usage_missing" not in entry.data


def test_chat_completions_stream_get_final_completion(guard: Guard) -> None:
    sse, usage = chat_helper_sse()
    stream = guard.with_budget(chat_completions_stream(openai_at("https://api.openai.com/v1", serve(sse))))
    with stream(model="gpt-4o", messages=HI, max_tokens=300) as events:
        final = events.get_final_completion()
    assert final.usage is not None
    assert committed(guard).amounts["usd"] == gpt4o_nano(usage)


def test_async_chat_completions_stream(guard: Guard) -> None:
    sse, usage = chat_helper_sse()
    api = serve(sse)
    client = openai.AsyncOpenAI(
        base_url="https://api.openai.com/v1", api_key="k", max_retries=0,
        http_client=OPENAI_HTTP.AsyncClient(transport=OPENAI_HTTP.MockTransport(api)),
    )  # fmt: skip
    stream = guard.with_budget(chat_completions_stream(client))

    async def run() -> None:
        async with stream(model="gpt-4o", messages=HI, max_tokens=300) as events:
            async for _ in events:
                pass
        await client.close()

    asyncio.run(run())
    assert committed(guard).amounts["usd"] == gpt4o_nano(usage)


def test_an_interrupted_reasoning_chat_stream_is_charged_its_worst_output(guard: Guard) -> None:
    chunks = [copy.deepcopy(c) for c in chat_stream_chunks() if c.get("usage") is None]
    for chunk in chunks:
        chunk["model"] = "o3-mini-2025-01-31"
    api = serve(openai_sse(chunks))  # no usage chunk: the stream ends without it
    create = guard.with_budget(openai_at("https://api.openai.com/v1", api).chat.completions.create)
    for _ in create(model="o3-mini", messages=HI, max_completion_tokens=5000, stream=True):
        pass
    entry = committed(guard)
    assert entry.data["usage"]["output_tokens"] == 5000  # before: the few tokens of text it showed
    assert entry.data["reasoning_worst_case"] is True and entry.data["usage_missing"] is True


def test_an_interrupted_claude_thinking_stream_is_charged_its_worst_output(guard: Guard) -> None:
    """Claude 4 streams a summary of its thinking and bills the thinking itself: cut after the summary,
    the text received bounds nothing; the reserved output does (thinking counts in max_tokens)."""
    events = anthropic_stream_events()
    events[1]["content_block"] = {"type": "thinking", "thinking": "", "signature": ""}
    events[3]["delta"] = {"type": "thinking_delta", "thinking": "The user asks about budgets."}
    api = serve(anthropic_sse(events[:4]))  # message_start, the thinking block's start and one delta
    client = anthropic.Anthropic(
        base_url="https://api.anthropic.com", api_key="k", max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip
    create = guard.with_budget(client.messages.create)
    request = {"model": "claude-sonnet-4-5", "messages": HI, "max_tokens": 2000, "stream": True}
    for _ in create(**request, thinking={"type": "enabled", "budget_tokens": 1024}):
        pass
    entry = committed(guard)
    assert entry.data["usage"]["output_tokens"] == 2000  # before: ceil(6 x 1.4) of the summary
    assert entry.data["reasoning_worst_case"] is True


async def test_async_clients_are_priced_at_their_endpoint() -> None:
    guard = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    groq = openai.AsyncOpenAI(
        base_url="https://api.groq.com/openai/v1", api_key="k", max_retries=0,
        http_client=OPENAI_HTTP.AsyncClient(transport=OPENAI_HTTP.MockTransport(serve(completion("openai/gpt-oss-120b")))),
    )  # fmt: skip
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    bedrock = anthropic.AsyncAnthropicBedrock(
        aws_region="us-east-1", api_key="k", max_retries=0,
        http_client=ANTHROPIC_HTTP.AsyncClient(transport=ANTHROPIC_HTTP.MockTransport(serve(claude_body(model)))),
    )  # fmt: skip
    await guard.with_budget(groq.chat.completions.create)(
        model="openai/gpt-oss-120b", messages=HI, max_tokens=200
    )
    await guard.with_budget(bedrock.messages.create)(model=model, messages=HI, max_tokens=200)
    groq_entry, bedrock_entry = guard.ledger.history(events=["committed"])
    assert groq_entry.amounts["usd"] == nano((1000, "0.15"), (200, "0.6"))
    assert bedrock_entry.amounts["usd"] == nano((1000, "3.3"), (200, "16.5"))
    await groq.close()
    await bedrock.close()
    guard.close()


def test_an_azure_deployment_named_otherwise_is_reserved_as_the_model_it_serves() -> None:
    """gpt-5.6 writes the prompt cache unasked, billed at $5 per million against $4 input: its input is
    reserved at the write rate. An Azure deployment bears its owner's name: the rule read the name, so a
    deployment of gpt-5.6 named "chat-prod" was reserved at the input rate, below the bill of a call that
    wrote its whole prompt (a review). Registered with the model it serves, it follows that model."""
    book = PriceBook()
    rates = {"input": "4", "output": "20", "cache_read": "0.4", "cache_write": "5"}
    book.register("chat-prod", base_model="gpt-5.6-sol", provider="azure", **rates)
    events: list[budgetguard.Event] = []
    guard = Guard(
        "memory://", budgets=[Budget("global", usd="100", per="day")], prices=book, on_event=events.append
    )
    long_prompt = [{"role": "user", "content": "row " * 4000}]
    request = {"model": "chat-prod", "messages": long_prompt, "max_tokens": 1}
    est = guard.estimator(request, provider="azure")
    assert est.cache_write == "5m" and est.price.served == "gpt-5.6-sol"
    answer = completion("gpt-5.6-sol-2026-05-01", prompt=est.input_tokens, completion=1)
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 0, "cache_write_tokens": est.input_tokens}
    guard.wrap(openai_at(AZURE, serve(answer))).chat.completions.create(**request)  # type: ignore[call-overload]
    [reserved] = [e.estimated for e in events if e.kind == "reserved"]
    bill = committed(guard).amounts["usd"]
    assert bill == nano((est.input_tokens, "5"), (1, "20"))
    assert reserved is not None and budgetguard.to_nano(reserved) >= bill
    guard.close()


SEARCH_ANSWER = completion("gpt-4o-search-preview-2025-03-11")


def test_a_chat_search_is_billed_at_openai_s_fee_where_it_is_billed_and_only_there(
    global_prices: PriceBook,
) -> None:
    """gpt-4o-search-preview searches once a request, at OpenAI's fee per search context size. The
    estimate added that fee at every provider, the price only at OpenAI's (a review): Azure's answer, which
    carries its search, could not be priced (``cost``), and a provider that bills no such search was
    reserved for one. One rule now (``chat_search``'s providers: OpenAI, Azure OpenAI, OpenRouter)."""
    global_prices.set_azure_deployment("global")  # (Azure's listing: its Global deployments' price)
    usage = Usage(input_tokens=1000, output_tokens=200, web_search_calls=1)
    tokens = nano((1000, "2.5"), (200, "10"))
    for provider in ("openai", "azure"):
        price = budgetguard.get_price("gpt-4o-search-preview", provider=provider)
        assert price.cost_nano(usage) == tokens + budgetguard.to_nano(Decimal("0.035"))  # ($35 per 1k)
    guard = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    high = {"search_context_size": "high"}
    request = {"model": "gpt-4o-search-preview", "messages": HI, "web_search_options": high}
    guard.wrap(openai_at(AZURE, serve(SEARCH_ANSWER))).chat.completions.create(**request)  # type: ignore[call-overload]
    assert committed(guard).amounts["usd"] == tokens + budgetguard.to_nano(Decimal("0.05"))  # (high)
    guard.close()
    elsewhere = PriceBook()
    elsewhere.register("gpt-4o-search-preview", provider="together", input="2.5", output="10")
    est = Guard("memory://", budgets=[], prices=elsewhere).estimator(request, provider="together")
    assert est.usage.web_search_calls == 0 and est.price.base.web_search is None


@pytest.mark.parametrize("fee", [None, "35"])
def test_an_azure_search_deployment_named_otherwise_is_reserved_and_priced_as_its_model(
    fee: str | None,
) -> None:
    """A deployment of gpt-4o-search-preview named "search-prod": the estimate, the price's OpenAI fee
    and a call charged its input asked the search rule about the name, the usage reader about the answer's
    model: no search reserved, then its search unpriced or charged ($0.00013 reserved, $0.03535 charged,
    a review). The price's model decides everywhere."""
    book = PriceBook()
    fees = {} if fee is None else {"web_search": fee}
    book.register(
        "search-prod", base_model="gpt-4o-search-preview", provider="azure", input="2.5", output="10", **fees
    )
    events: list[budgetguard.Event] = []
    guard = Guard(
        "memory://", budgets=[Budget("global", usd="100", per="day")], prices=book, on_event=events.append
    )
    request = {"model": "search-prod", "messages": HI, "max_tokens": 10}
    est = guard.estimator(request, provider="azure")
    assert est.usage.web_search_calls == 1 and est.price.base.web_search == Decimal("35")
    listed = PriceBook()
    listed.set_azure_deployment("global")  # (the rates registered are the Global deployment's)
    as_named = budgetguard.Estimator(prices=listed)(
        {**request, "model": "gpt-4o-search-preview"}, provider="azure"
    )
    assert est.cost == as_named.cost  # (its search's content free, as the model's: a preview search)
    assert input_only(est).web_search_calls == 1
    answer = completion("gpt-4o-search-preview-2025-03-11", prompt=est.input_tokens, completion=10)
    guard.wrap(openai_at(AZURE, serve(answer))).chat.completions.create(**request)  # type: ignore[call-overload]
    assert [e.kind for e in events] == ["reserved", "committed"]
    bill = committed(guard).amounts["usd"]
    assert bill == nano((est.input_tokens, "2.5"), (10, "10")) + budgetguard.to_nano(Decimal("0.035"))
    assert budgetguard.to_nano(est.cost) >= bill
    guard.close()


@pytest.mark.parametrize(
    ("url", "provider"),
    [("https://api.together.xyz/v1", "together"), ("https://api.groq.com/openai/v1", "groq")],
)
def test_a_search_model_s_answer_elsewhere_is_charged_no_search(url: str, provider: str) -> None:
    """At a provider that bills no chat search, the usage reader counted the answer's search by its model
    name (it reads no provider): charged a $35 per 1k fee nobody reserved, or unpriced on every call (a
    review). The call is settled by the estimate's rule: no search there."""
    book = PriceBook()
    book.register("gpt-4o-search-preview", provider=provider, input="2.5", output="10", web_search="35")
    events: list[budgetguard.Event] = []
    guard = Guard(
        "memory://", budgets=[Budget("global", usd="100", per="day")], prices=book, on_event=events.append
    )
    request = {"model": "gpt-4o-search-preview", "messages": HI, "max_tokens": 10}
    shown = guard.estimator(request, provider=provider).input_tokens
    answer = completion("gpt-4o-search-preview-2025-03-11", prompt=shown, completion=10)
    guard.wrap(openai_at(url, serve(answer))).chat.completions.create(**request)  # type: ignore[call-overload]
    assert [e.kind for e in events] == ["reserved", "committed"]
    assert committed(guard).amounts["usd"] == nano((shown, "2.5"), (10, "10"))
    guard.close()

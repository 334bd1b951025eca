"""Where a call runs prices it: Azure OpenAI's deployment types and Anthropic's US-only inference.

Each test failed on main with the figure its docstring gives (charged -> billed, or refused though
priced); those of the last section failed on the branch's first version (its review). The published
figures are constants here, each with its source.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import budgetguard
from budgetguard import Budget, ConfigurationError, Event, Guard, PriceBook, PricingError
from tests.guard.one_call import committed, nano
from tests.guard.payloads import ScriptedAPI, anthropic_message, serve
from tests.sdk_http import ANTHROPIC_HTTP, OPENAI_HTTP

HI = [{"role": "user", "content": "What is a budget?"}]


def reserved(guard: Guard) -> Decimal:
    """The committed call's reservation, in nano-USD."""
    return Decimal(committed(guard).data["estimated_usd"]) * 10**9


# -- Azure OpenAI: Data Zone and Regional deployments bill above Global ones -----------------------------

# Azure's pricing page lists Global, Data Zone and Regional prices per model; its Retail Prices API
# (prices.azure.com, serviceName 'Foundry Models') has one meter per type: a Data Zone meter is 1.10x
# the Global one (gpt-4o-mini 0.15 -> 0.165 in, 0.60 -> 0.66 out; gpt-5-mini 0.25 -> 0.275), a Regional
# one depends on the region (East US 1.10x, Sweden Central 1.21x, West Europe 1.32x for gpt-4.1-mini;
# gpt-4o-2024-11-20 output 0.01375 / 1K against 0.01 / 1K Global: 1.375x). genai-prices lists Azure's
# Global prices: gpt-4o $2.50 / $10 per MTok.
AZURE = "https://contoso.openai.azure.com"
GLOBAL = ("2.5", "10")
DATA_ZONE = ("2.75", "11")
REGIONAL = ("3.4375", "13.75")  # (the dearest Regional meter seen: 1.375x)


@pytest.fixture
def book() -> PriceBook:
    return PriceBook()


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def guard(book: PriceBook, events: list[Event]) -> Iterator[Guard]:
    made = Guard(
        "memory://", budgets=[Budget("global", usd="100", per="day")], prices=book, on_event=events.append
    )
    yield made
    made.close()


def completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1754688908, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "A plan for money."}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
    }  # fmt: skip


def azure(api: ScriptedAPI) -> openai.AzureOpenAI:
    http = OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(api))
    return openai.AzureOpenAI(
        azure_endpoint=AZURE, api_key="k", api_version="2024-10-21", max_retries=0, http_client=http
    )


def azure_call(guard: Guard, deployment: str, *, wrapped: bool, answered: str = "gpt-4o") -> ScriptedAPI:
    api = serve(completion(answered))
    client = azure(api)
    if wrapped:
        guard.wrap(client).chat.completions.create(model=deployment, messages=HI, max_tokens=500)  # type: ignore[call-overload]
    else:
        guard.with_budget(client.chat.completions.create)(model=deployment, messages=HI, max_tokens=500)
    return api


def bill(rates: tuple[str, str]) -> int:
    return nano((1000, rates[0]), (200, rates[1]))


@pytest.mark.parametrize("wrapped", [False, True], ids=["decorated", "wrapped"])
@pytest.mark.parametrize(
    ("kind", "rates"), [("data_zone", DATA_ZONE), ("regional", REGIONAL), ("global", GLOBAL)]
)
def test_an_azure_deployment_is_charged_and_reserved_at_its_type(
    guard: Guard, book: PriceBook, wrapped: bool, kind: str, rates: tuple[str, str]
) -> None:
    """On main: a Data Zone deployment of gpt-4o was charged $0.0045 where Azure bills $0.00495 (1000 in,
    200 out), reserved at the Global output rate; ``deployment=`` was a TypeError."""
    book.register("gpt-4o", provider="azure", deployment=kind)
    api = azure_call(guard, "gpt-4o", wrapped=wrapped)
    assert "/deployments/gpt-4o/" in api.paths[0]
    entry = committed(guard)
    assert entry.amounts["usd"] == bill(rates)
    assert reserved(guard) >= nano((500, rates[1]))
    assert entry.variant == {"deployment": kind}  # (the journal says which type it was charged as)


def test_a_deployment_named_otherwise_takes_its_models_price_at_its_type(
    guard: Guard, book: PriceBook
) -> None:
    """The deployment's name is its owner's (``eu-chat``); the model it serves is priced at its type, and
    an answer naming the model's snapshot keeps that type. On main: no way to say it (TypeError)."""
    book.register("eu-chat", base_model="gpt-4o", provider="azure", deployment="data_zone")
    azure_call(guard, "eu-chat", wrapped=False, answered="gpt-4o-2024-11-20")
    entry = committed(guard)
    assert entry.amounts["usd"] == bill(DATA_ZONE)
    assert reserved(guard) >= nano((500, DATA_ZONE[1]))
    assert book.get("eu-chat", provider="azure").resolved == "gpt-4o"


def test_an_azure_deployment_of_unknown_type_is_charged_at_the_dearest(guard: Guard) -> None:
    """Azure's requests and responses do not say a deployment's type: one not declared may be Regional,
    so it is charged and reserved at the dearest type, which bounds the bill. On main: Global prices,
    $0.0045 charged for a call a Regional deployment bills $0.00619."""
    azure_call(guard, "gpt-4o", wrapped=False)
    entry = committed(guard)
    assert entry.amounts["usd"] == bill(REGIONAL)
    assert entry.variant == {"deployment": "unknown"}


def test_one_setting_declares_every_azure_deployment_global(guard: Guard, book: PriceBook) -> None:
    """The common case, all deployments Global, is one line and is charged Azure's Global price; a
    deployment registered with its own type keeps it. On main: no ``set_azure_deployment``."""
    book.set_azure_deployment("global")
    book.register("eu-chat", base_model="gpt-4o", provider="azure", deployment="data_zone")
    azure_call(guard, "gpt-4o", wrapped=True)
    assert committed(guard).amounts["usd"] == bill(GLOBAL)
    assert book.get("eu-chat", provider="azure").base.output == Decimal(DATA_ZONE[1])
    assert book.get("gpt-4o", provider="openai").base.output == Decimal("10")  # (OpenAI's own: no type)


def test_a_registered_deployment_price_is_charged_as_given(guard: Guard, book: PriceBook) -> None:
    """A deployment registered with its rates is charged them, whatever its type: they are what Azure
    bills. On main the same, but ``deployment=`` with rates is now refused as ambiguous."""
    book.register("chat-prod", base_model="gpt-4o", provider="azure", input="3", output="12")
    azure_call(guard, "chat-prod", wrapped=False)
    assert committed(guard).amounts["usd"] == bill(("3", "12"))
    with pytest.raises(ConfigurationError, match="deployment="):
        book.register("chat-eu", base_model="gpt-4o", provider="azure", deployment="data_zone", input="3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"provider": "azure", "deployment": "datazone"}, "'global', 'data_zone' or 'regional'"),
        ({"deployment": "data_zone"}, "provider='azure'"),
    ],
)
def test_a_bad_deployment_declaration_says_what_to_write(
    book: PriceBook, args: dict[str, Any], message: str
) -> None:
    """On main: a TypeError for ``deployment=``."""
    with pytest.raises(ConfigurationError, match=message):
        book.register("eu-chat", base_model="gpt-4o", **args)
    with pytest.raises(PricingError):
        book.register("eu-chat", base_model="no-such-model", provider="azure", deployment="data_zone")
    assert book.get("gpt-4o", provider="azure").base.output == Decimal(REGIONAL[1])  # (nothing registered)


# -- Anthropic: US-only inference (inference_geo="us") bills 1.1x --------------------------------------

# https://docs.aws.amazon.com/claude-platform/latest/userguide/data-residency.html: "US: Inference stays
# within US data centers. A 1.1x pricing multiplier applies. Global: ... Standard pricing applies"; the
# parameter "is supported on Claude Opus 4.6, Claude Sonnet 4.6, and later models" (older ones answer
# 400). Claude's API reference: "US-only inference is available at 1.1x pricing for models released after
# February 1, 2026". Opus 4.6: $5 / $25 per MTok, $5.50 / $27.50 US-only.
OPUS_4_6 = "claude-opus-4-6"


def claude(api: ScriptedAPI) -> anthropic.Anthropic:
    http = ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api))
    return anthropic.Anthropic(
        base_url="https://api.anthropic.com", api_key="k", max_retries=0, http_client=http
    )


def us_answer(model: str, geo: str = "us") -> dict[str, Any]:
    body = anthropic_message(
        input_tokens=1000, cache_read_input_tokens=400, cache_creation_input_tokens=0, cache_creation=None,
        output_tokens=200, inference_geo=geo,
    )  # fmt: skip
    body["model"] = model
    return body


@pytest.fixture
def claude_guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    yield made
    made.close()


@pytest.mark.parametrize("wrapped", [False, True], ids=["decorated", "wrapped"])
def test_us_only_inference_is_charged_and_reserved_at_its_premium(claude_guard: Guard, wrapped: bool) -> None:
    """On main: refused before the call (PricingError: no inference_geo='us' price), though Anthropic
    publishes it: 1.1x every token rate."""
    api = serve(us_answer(OPUS_4_6))
    client = claude(api)
    request = {"model": OPUS_4_6, "messages": HI, "max_tokens": 1024, "inference_geo": "us"}
    if wrapped:
        claude_guard.wrap(client).messages.create(**request)  # type: ignore[call-overload]
    else:
        claude_guard.with_budget(client.messages.create)(**request)
    assert len(api.paths) == 1
    entry = committed(claude_guard)
    assert entry.amounts["usd"] == nano((1000, "5.5"), (400, "0.55"), (200, "27.5"))
    assert reserved(claude_guard) >= nano((1024, "27.5"))
    assert entry.variant == {"inference_geo": "us"}


def test_a_workspace_default_us_geo_is_charged_as_served(guard: Guard, events: list[Event]) -> None:
    """A workspace whose default geo is US serves a request naming none there; the response says so and
    the call is charged US-only prices. On main: charged the reserved (Global) price, flagged unpriced.
    No ``unreserved_tier`` warning: the branch's first version gave one on every such call, advising
    ``Guard(default_service_tier='inference_geo:us')``, a setting that does not exist."""
    api = serve(us_answer(OPUS_4_6))
    guard.with_budget(claude(api).messages.create)(model=OPUS_4_6, messages=HI, max_tokens=1024)
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "5.5"), (400, "0.55"), (200, "27.5"))
    assert "unpriced" not in entry.data
    assert "unreserved_tier" not in {e.kind for e in events}


def test_a_geo_anthropic_publishes_no_price_for_is_still_refused() -> None:
    """Only the US premium is published: another geo is refused before the call, never the base price."""
    request = {"model": OPUS_4_6, "messages": HI, "max_tokens": 16, "inference_geo": "eu"}
    with pytest.raises(PricingError, match="inference_geo='eu'"):
        budgetguard.estimate(request, provider="anthropic")
    us = budgetguard.estimate({**request, "inference_geo": "us"}, provider="anthropic")
    assert us.price.base.output == Decimal("27.5")


# -- The review of the first version: each test failed on it with the figure its docstring gives --------


def test_us_only_fast_mode_is_reserved_at_the_fast_us_price(guard: Guard, events: list[Event]) -> None:
    """``inference_geo="us"`` with ``speed="fast"``: the request's variant kept the geo and dropped the
    speed, so the call was reserved at US standard ($27.50 / MTok out for claude-opus-4-8), $0.0282 for
    1024 out, and charged fast x 1.1 ($55 / MTok out) above its hold (an overrun)."""
    body = us_answer("claude-opus-4-8")
    body["usage"]["speed"] = "fast"
    api = serve(body)
    create = guard.with_budget(claude(api).messages.create)
    create(model="claude-opus-4-8", messages=HI, max_tokens=1024, inference_geo="us", speed="fast")
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "11"), (400, "1.1"), (200, "55"))
    assert reserved(guard) >= nano((1024, "55"))
    assert entry.variant == {"inference_geo": "us", "speed": "fast"}
    assert "overrun" not in {e.kind for e in events}


def test_a_vertex_location_keeps_a_fast_requests_speed() -> None:
    """The same code read a Vertex AI location: a fast request in us-east5 was reserved at the regional
    standard price ($27.50 / MTok out for claude-opus-4-6). Vertex publishes no fast price: refused
    before the call, as a fast request at Vertex's global endpoint is."""
    request = {"model": OPUS_4_6, "messages": HI, "max_tokens": 16, "speed": "fast"}
    with pytest.raises(PricingError, match="speed='fast'"):
        budgetguard.estimate({**request, "inference_geo": "us-east5"}, provider="google")
    with pytest.raises(PricingError, match="speed='fast'"):
        budgetguard.estimate(request, provider="google")


def test_a_fast_call_served_in_the_us_by_the_workspace_default_is_charged_the_us_premium(
    guard: Guard,
) -> None:
    """A workspace whose default geo is US serves a fast request naming no geo in the US; the response
    reports ``speed="fast"`` and ``inference_geo="us"``. The served tier was "fast-mode" alone, so it was
    charged fast at the global price ($0.0204 for 1000 in, 400 cache reads, 200 out), not $0.02244."""
    body = us_answer("claude-opus-4-8")
    body["usage"]["speed"] = "fast"
    api = serve(body)
    create = guard.with_budget(claude(api).messages.create)
    create(model="claude-opus-4-8", messages=HI, max_tokens=1024, speed="fast")
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "11"), (400, "1.1"), (200, "55"))
    assert entry.data["served_tier"] == "fast-mode,inference_geo:us"


def test_an_unknown_anthropic_geo_leaves_others_alone(guard: Guard) -> None:
    """Sound before (a guard on the fix of the fast US call): the US premium alone, no fast mode."""
    api = serve(us_answer("claude-opus-4-8"))
    guard.with_budget(claude(api).messages.create)(
        model="claude-opus-4-8", messages=HI, max_tokens=1024, inference_geo="us"
    )
    assert committed(guard).amounts["usd"] == nano((1000, "5.5"), (400, "0.55"), (200, "27.5"))


def test_an_azure_call_named_by_its_provider_prefix_is_priced_at_its_deployment_type(
    guard: Guard, book: PriceBook
) -> None:
    """A function calling an AzureOpenAI client inside says where it goes in its ``estimate=`` hook,
    ``azure/gpt-4o``: the deployment rule ran only for ``provider == "azure"``, so the call was reserved
    and charged Azure's Global price ($0.0045 for 1000 in, 200 out) though its type is unknown
    ($0.0061875 as Regional). ``provider="Azure"`` (genai-prices matches it) skipped it too."""
    api = serve(completion("gpt-4o-2024-11-20"))
    client = azure(api)

    def ask(question: str) -> Any:
        return client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": question}], max_tokens=500
        )

    request = {"model": "azure/gpt-4o", "messages": HI, "max_tokens": 500}
    guard.with_budget(ask, estimate=lambda question: request)("What is a budget?")
    entry = committed(guard)
    assert reserved(guard) >= nano((500, REGIONAL[1]))
    assert entry.amounts["usd"] == bill(REGIONAL)
    assert "unpriced" not in entry.data
    assert book.get("gpt-4o", provider="Azure").base.output == Decimal(REGIONAL[1])


@pytest.mark.parametrize("declared", [False, True], ids=["unknown", "data_zone"])
def test_langchain_azure_chat_openai_is_priced_at_its_deployment_type(
    guard: Guard, book: PriceBook, declared: bool
) -> None:
    """LangChain's ``AzureChatOpenAI`` (``ls_provider="azure"``) was estimated at provider ``"openai"``
    (the request *shape* returned as the provider): a deployment of unknown type was reserved $0.00503
    and charged $0.0045, Azure's Global price ($0.0061875 as Regional); one declared with
    ``deployment="data_zone"`` was refused (PricingError: no price for 'eu-chat' at provider 'openai')."""
    from langchain_openai import AzureChatOpenAI

    from budgetguard.integrations.langchain import BudgetCallbackHandler

    if declared:
        book.register("eu-chat", base_model="gpt-4o", provider="azure", deployment="data_zone")
    api = serve(completion("gpt-4o-2024-11-20"))
    llm = AzureChatOpenAI(
        azure_endpoint=AZURE, azure_deployment="eu-chat" if declared else "gpt-4o", api_version="2024-10-21",
        api_key="k", max_retries=0, max_tokens=500,  # type: ignore[arg-type]
        http_client=OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(api)),
        callbacks=[BudgetCallbackHandler(guard)],
    )  # fmt: skip
    llm.invoke("What is a budget?")
    rates = DATA_ZONE if declared else REGIONAL
    assert committed(guard).amounts["usd"] == bill(rates)
    assert reserved(guard) >= nano((500, rates[1]))


def test_a_regional_chat_search_is_charged_its_fee_at_the_deployment_premium(
    guard: Guard, book: PriceBook
) -> None:
    """The premium scales tool-call fees: the price gives gpt-4o-search-preview's search at $48.125 / 1k
    on a Regional deployment (35 x 1.375). The estimate's chat search fee (the request's context size)
    replaced it with the unscaled $35, so a call was reserved and charged $0.035 for its search."""
    book.register("gpt-4o-search-preview", provider="azure", deployment="regional")
    usage = budgetguard.Usage(input_tokens=1000, output_tokens=200, web_search_calls=1)
    own = book.cost_nano("gpt-4o-search-preview", usage, provider="azure")
    api = serve(completion("gpt-4o-search-preview-2025-03-11"))
    guard.wrap(azure(api)).chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-search-preview", messages=HI, max_tokens=500, web_search_options={}
    )
    assert committed(guard).amounts["usd"] == own
    assert book.get("gpt-4o-search-preview", provider="azure").fee_premium == Decimal("1.375")


def test_a_regional_web_search_preview_is_charged_its_fee_at_the_deployment_premium(
    guard: Guard, book: PriceBook
) -> None:
    """The same for the Responses ``web_search_preview`` tool: on a Regional deployment its published
    $25 / 1k replaced the scaled web search fee ($13.75) unscaled, so the search was reserved and charged
    $0.025, not $0.034375 (25 x 1.375)."""
    book.register("gpt-4o", provider="azure", deployment="regional")
    answer = {
        "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
        "model": "gpt-4o-2024-11-20", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "output": [
            {"type": "web_search_call", "id": "ws_1", "status": "completed",
             "action": {"type": "search", "query": "budget"}},
            {"type": "message", "id": "m", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        ],
        "usage": {"input_tokens": 1000, "output_tokens": 200, "total_tokens": 1200,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }  # fmt: skip
    api = serve(answer)
    guard.wrap(azure(api)).responses.create(  # type: ignore[call-overload]
        model="gpt-4o",
        input="What is a budget?",
        max_output_tokens=500,
        tools=[{"type": "web_search_preview"}],
    )
    assert committed(guard).amounts["usd"] == bill(REGIONAL) + nano((1, "34375"))


@pytest.mark.parametrize("named", ["prefix", "provider"])
def test_an_azure_batch_result_charged_to_a_job_is_priced_at_its_deployment_type(
    guard: Guard, book: PriceBook, named: str
) -> None:
    """``job.charge(line, batch=True)`` took no ``provider=`` (a TypeError) and ``azure/gpt-4o`` skipped
    the deployment type: with every deployment declared Data Zone, an Azure batch line (1000 in, 200
    out) was charged $0.00225, the Global batch price, where ``cost(..., provider="azure",
    variant={"processing": "batch"})`` says $0.002475."""
    book.set_azure_deployment("data_zone")
    line = {"custom_id": "r1", "response": {"status_code": 200, "body": completion("gpt-4o-2024-11-20")}}
    usage = budgetguard.Usage(input_tokens=1000, output_tokens=200)
    billed = book.cost("gpt-4o", usage, provider="azure", variant={"processing": "batch"})
    where: dict[str, Any] = {"model": "azure/gpt-4o"} if named == "prefix" else {"provider": "azure"}
    with guard.reserve(usd="1") as job:
        charged = job.charge(line, batch=True, **where)
    assert charged == billed


def test_an_unknown_azure_deployment_type_is_said_once_per_model(guard: Guard, events: list[Event]) -> None:
    """Every undeclared Azure deployment is charged 37.5% above Azure's Global price; nothing told the
    user (no event, no log) that ``set_azure_deployment`` would charge it right: 0 events, want one a
    model, a warning naming both ways to declare the type."""
    api = serve(completion("gpt-4o"))
    wrapped = guard.wrap(azure(api))
    for model in ("gpt-4o", "gpt-4o", "gpt-4o-mini"):
        wrapped.chat.completions.create(model=model, messages=HI, max_tokens=50)  # type: ignore[call-overload]
    told = [e for e in events if e.kind == "unknown_deployment"]
    assert [e.model for e in told] == ["gpt-4o", "gpt-4o-mini"]
    assert told[0].reason is not None and "budgetguard.set_azure_deployment('global')" in told[0].reason
    assert "register_price('gpt-4o', provider='azure', deployment=" in told[0].reason


def test_an_azure_call_served_at_a_dearer_tier_is_still_said(guard: Guard, events: list[Event]) -> None:
    """``unreserved_tier`` fired only for a call reserved at no variant: once every Azure call carried
    its deployment type, an Azure gpt-4o call reserved at standard and served (and charged) at priority
    was no longer said (it was on main)."""
    body = completion("gpt-4o-2024-11-20")
    body["service_tier"] = "priority"
    api = serve(body)
    guard.wrap(azure(api)).chat.completions.create(model="gpt-4o", messages=HI, max_tokens=50)  # type: ignore[call-overload]
    (warned,) = [e for e in events if e.kind == "unreserved_tier"]
    assert warned.data == {"served_tier": "priority"}
    assert committed(guard).variant == {"deployment": "unknown", "service_tier": "priority"}


def test_declaring_a_deployment_s_type_replaces_its_registered_rates(book: PriceBook) -> None:
    """``register(name, input=...)`` forgets the name's type, but ``register(name, deployment=...)`` kept
    the rates registered before: the declaration was silently ignored and returned the old price ($2 /
    MTok out, not gpt-4o's Data Zone $11). The last registration wins; a declaration refused (a model
    the data does not list) leaves the rates registered before."""
    book.register("eu-chat", base_model="gpt-4o", provider="azure", input="1", output="2")
    declared = book.register("eu-chat", base_model="gpt-4o", provider="azure", deployment="data_zone")
    assert declared.base.output == Decimal(DATA_ZONE[1])
    assert book.get("eu-chat", provider="azure").base.output == Decimal(DATA_ZONE[1])
    book.register("us-chat", base_model="no-such-model", provider="azure", input="1", output="2")
    with pytest.raises(PricingError):
        book.register("us-chat", base_model="no-such-model", provider="azure", deployment="data_zone")
    assert book.get("us-chat", provider="azure").base.output == Decimal("2")

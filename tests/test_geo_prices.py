"""Where a call runs prices it: Azure OpenAI's deployment types and Anthropic's US-only inference.

Each test failed on main with the figure its docstring gives (charged -> billed, or refused though
priced); the published figures are constants here, each with its source.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import budgetguard
from budgetguard import Budget, ConfigurationError, Guard, PriceBook, PricingError
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
def guard(book: PriceBook) -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")], prices=book)
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


def test_a_workspace_default_us_geo_is_charged_as_served(claude_guard: Guard) -> None:
    """A workspace whose default geo is US serves a request naming none there; the response says so and
    the call is charged US-only prices. On main: charged the reserved (Global) price, flagged unpriced."""
    api = serve(us_answer(OPUS_4_6))
    claude_guard.with_budget(claude(api).messages.create)(model=OPUS_4_6, messages=HI, max_tokens=1024)
    entry = committed(claude_guard)
    assert entry.amounts["usd"] == nano((1000, "5.5"), (400, "0.55"), (200, "27.5"))
    assert "unpriced" not in entry.data


def test_a_geo_anthropic_publishes_no_price_for_is_still_refused() -> None:
    """Only the US premium is published: another geo is refused before the call, never the base price."""
    request = {"model": OPUS_4_6, "messages": HI, "max_tokens": 16, "inference_geo": "eu"}
    with pytest.raises(PricingError, match="inference_geo='eu'"):
        budgetguard.estimate(request, provider="anthropic")
    us = budgetguard.estimate({**request, "inference_geo": "us"}, provider="anthropic")
    assert us.price.base.output == Decimal("27.5")

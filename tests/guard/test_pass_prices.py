"""Extra sampling passes (Anthropic ``usage.iterations``: compaction, advisor) are priced where the call
went: at the call's provider (the endpoint), with the call's variant only where the pass's model has it.

Rates from genai-prices 0.2.5 (USD per million tokens): on Bedrock (``aws``, regional) Claude Sonnet 4.5
is $3.30 / $16.50 and Claude Opus 4.6 $5.50 / $27.50; Anthropic's API lists Opus 4.6 at $5 / $25.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest

import budgetguard
from budgetguard import Budget, Guard, Pass, PriceBook, PricingError, Usage
from budgetguard._providers import api_of
from tests.guard.one_call import committed, nano
from tests.guard.payloads import anthropic_message, serve
from tests.sdk_http import ANTHROPIC_HTTP

HI = [{"role": "user", "content": "What is a budget?"}]
BEDROCK_SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    yield made
    made.close()


def body_with_passes(model: str, advisor: str) -> dict[str, Any]:
    body = anthropic_message(
        input_tokens=1000, cache_read_input_tokens=0, cache_creation_input_tokens=0, cache_creation=None,
        output_tokens=200,
    )  # fmt: skip
    body["model"] = model
    body["usage"]["iterations"] = [
        {"type": "compaction", "input_tokens": 5000, "output_tokens": 400,
         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
        {"type": "message", "input_tokens": 1000, "output_tokens": 200,
         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
        {"type": "advisor_message", "model": advisor, "input_tokens": 4000, "output_tokens": 300,
         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    ]  # fmt: skip
    return body


def bedrock(api: Any) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(
        aws_region="us-east-1",
        api_key="k",
        max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )


def test_an_advisor_pass_on_bedrock_is_charged_bedrocks_price(guard: Guard) -> None:
    """Before: the advisor pass was priced at the first provider listing the name (Anthropic's $5 / $25),
    $0.00275 under what Bedrock bills."""
    api = serve(body_with_passes(BEDROCK_SONNET, "claude-opus-4-6"))
    guard.with_budget(bedrock(api).messages.create)(model=BEDROCK_SONNET, messages=HI, max_tokens=200)
    entry = committed(guard)
    call = ((1000, "3.3"), (200, "16.5"))
    compaction = ((5000, "3.3"), (400, "16.5"))  # the call's own model, at the call's price
    advisor = ((4000, "5.5"), (300, "27.5"))  # Opus 4.6 on Bedrock
    assert entry.amounts["usd"] == nano(*call, *compaction, *advisor)
    assert "unpriced" not in entry.data


def test_an_advisor_the_provider_does_not_list_is_not_charged_another_providers_price(guard: Guard) -> None:
    """Bedrock lists no ``claude-opus-4-1`` by that name: the pass is unpriced there, so the call is
    charged its reservation and flagged (before: charged Anthropic's price as if it were Bedrock's)."""
    api = serve(body_with_passes(BEDROCK_SONNET, "claude-opus-4-1"))
    guard.with_budget(bedrock(api).messages.create)(model=BEDROCK_SONNET, messages=HI, max_tokens=200)
    entry = committed(guard)
    assert "'claude-opus-4-1' at provider 'aws'" in entry.data["unpriced"]
    assert entry.data["usage_missing"] is True


def test_the_estimate_prices_the_advisor_at_the_calls_provider() -> None:
    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-6", "max_uses": 1,
               "max_tokens": 500}  # fmt: skip
    request = {"model": BEDROCK_SONNET, "messages": HI, "max_tokens": 100, "tools": [advisor]}
    est = budgetguard.estimate(request, provider="aws")
    context = est.input_tokens - est.tool_pass_tokens + est.output_tokens + 500  # the advice included
    assert est.tool_pass_tokens == context  # the call reads the advice back in one more pass
    call = ((est.input_tokens, "3.3"), (est.output_tokens, "16.5"))
    assert est.cost_nano == nano(*call, (context, "5.5"), (500, "27.5"))  # before: Opus at $5 / $25


def test_fast_mode_with_an_advisor_prices_the_advisor_at_its_base_price() -> None:
    """``speed="fast"`` is a price of the call's model: an advisor without a fast price is priced at its
    base price (before: PricingError "no speed='fast' price for claude-opus-4-1"); one that has a
    fast price is charged it."""
    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-1", "max_uses": 1,
               "max_tokens": 500}  # fmt: skip
    request = {"model": "claude-opus-4-8", "messages": HI, "max_tokens": 100, "speed": "fast"}
    plain = budgetguard.estimate(request)
    est = budgetguard.estimate({**request, "tools": [advisor]})
    assert est.variant == {"speed": "fast"}
    context = est.input_tokens - est.tool_pass_tokens + est.output_tokens + 500  # the advice included
    call = ((est.input_tokens, "10"), (est.output_tokens, "50"))  # claude-opus-4-8 fast: $10 / $50
    assert est.cost_nano == nano(*call, (context, "15"), (500, "75"))  # claude-opus-4-1: $15 / $75
    assert plain.cost_nano < est.cost_nano
    unbounded = budgetguard.estimate({**request, "tools": [{**advisor, "max_tokens": None}]})
    assert unbounded.passes[0].usage.output_tokens > 0  # (its max_tokens looked up without the variant)
    fast = budgetguard.estimate({**request, "tools": [{**advisor, "model": "claude-opus-5"}]})
    context = fast.input_tokens - fast.tool_pass_tokens + fast.output_tokens + 500
    call = ((fast.input_tokens, "10"), (fast.output_tokens, "50"))
    assert fast.cost_nano == nano(*call, (context, "10"), (500, "50"))  # Opus 5 has a fast price: $10 / $50


def test_a_price_alone_refuses_a_pass_on_another_model() -> None:
    """A ``Price`` no longer looks passes up in a global price book: the book prices them, at a provider."""
    usage = Usage(1000, output_tokens=10, passes=(Pass("advisor_message", "claude-opus-4-6", Usage(1000)),))
    price = budgetguard.get_price("claude-sonnet-4-5")
    with pytest.raises(PricingError, match=r"price_book\.cost_nano"):
        price.cost_nano(usage)
    own = Usage(1000, passes=(Pass("compaction", None, Usage(1000)),))
    assert price.cost_nano(own) == nano((2000, "3"))
    assert budgetguard.price_book.cost_nano(price, usage, provider="aws") == nano(
        (1000, "3"), (10, "15"), (1000, "5.5")
    )
    book = PriceBook(use_data=False)
    book.register("m", input="1")
    book.register("adv", input="2")
    assert book.cost_nano("m", Usage(10, passes=(Pass("advisor_message", "adv", Usage(10)),))) == 30_000


# -- one rule for "is this a Claude model" ----------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [BEDROCK_SONNET, "anthropic.claude-opus-4-6-v1", "claude-opus-4-1@20250805", "anthropic/claude-sonnet-4"],
)
def test_every_spelling_of_a_claude_model_is_claude_everywhere(model: str) -> None:
    """Before: a price registered for a Bedrock id took OpenAI's published fees (a code interpreter
    container at $0.03, not Claude's code execution session at $0.00417)."""
    book = PriceBook(use_data=False)
    assert book.register(model, input="3").base.code_execution == Decimal("4.17")
    assert budgetguard.published_prices(model, None)["web_fetch"] == 0
    assert api_of(None, model) == "anthropic"


def test_published_prices_are_read_only() -> None:
    """An edit to ``PUBLISHED_PRICES`` would not reach prices already cached: it is refused instead."""
    with pytest.raises(TypeError):
        budgetguard.PUBLISHED_PRICES["anthropic"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        budgetguard.PUBLISHED_PRICES["anthropic"][0][1]["web_search"] = Decimal(0)  # type: ignore[index]
    assert budgetguard.published_prices("claude-sonnet-4-5", None)["web_search"] == Decimal(10)

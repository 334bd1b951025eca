"""Review 2 of geo: each test failed on main (4817189) with the figure its docstring gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from budgetguard import Budget, Guard
from tests.guard.one_call import committed, nano
from tests.guard.payloads import ScriptedAPI, anthropic_message, serve
from tests.sdk_http import ANTHROPIC_HTTP

HI = [{"role": "user", "content": "What is a budget?"}]


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    yield made
    made.close()


def claude(api: ScriptedAPI) -> anthropic.Anthropic:
    http = ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api))
    return anthropic.Anthropic(
        base_url="https://api.anthropic.com", api_key="k", max_retries=0, http_client=http
    )


def fast_us_answer_with_advice(advisor: str) -> dict[str, Any]:
    body = anthropic_message(
        input_tokens=1000, cache_read_input_tokens=0, cache_creation_input_tokens=0, cache_creation=None,
        output_tokens=200, inference_geo="us",
    )  # fmt: skip
    body["model"] = "claude-opus-4-8"
    body["usage"]["speed"] = "fast"
    body["usage"]["iterations"] = [
        {"type": "message", "input_tokens": 1000, "output_tokens": 200,
         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
        {"type": "advisor_message", "model": advisor, "input_tokens": 4000, "output_tokens": 300,
         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    ]  # fmt: skip
    return body


def test_an_advisor_pass_in_a_fast_us_only_call_is_charged_the_us_premium(guard: Guard) -> None:
    """US-only inference bills the whole request at 1.1x, the advisor's pass included. In a fast call
    the variant is {speed: fast, inference_geo: us}; an advisor with no fast price (claude-opus-4-6) was
    priced at its global base price ($5 / $25) on main: the pass charged $0.0275, billed $0.03025 (and
    reserved at the base price too)."""
    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-6", "max_uses": 1,
               "max_tokens": 300}  # fmt: skip
    api = serve(fast_us_answer_with_advice("claude-opus-4-6"))
    guard.with_budget(claude(api).messages.create)(
        model="claude-opus-4-8",
        messages=HI,
        max_tokens=1024,
        inference_geo="us",
        speed="fast",
        tools=[advisor],
    )
    entry = committed(guard)
    call = ((1000, "11"), (200, "55"))  # claude-opus-4-8 fast, US-only: $11 / $55
    advice = ((4000, "5.5"), (300, "27.5"))  # claude-opus-4-6 US-only: $5.50 / $27.50
    assert entry.amounts["usd"] == nano(*call, *advice)


def test_langchain_chat_openai_at_an_azure_v1_endpoint_is_priced_at_azure() -> None:
    """Azure's v1 API is called with ``ChatOpenAI(base_url="https://<resource>.openai.azure.com/openai/v1/")``
    (Microsoft's documented LangChain setup; ``guard.wrap(OpenAI(base_url=...))`` prices it at Azure from
    the URL). LangChain says ``ls_provider="openai"``: on main the run was priced at OpenAI, a deployment of
    unknown type charged $0.0045 (1000 in, 200 out of gpt-4o), not $0.0061875 (as Regional)."""
    from langchain_openai import ChatOpenAI

    from budgetguard import PriceBook
    from budgetguard.integrations.langchain import BudgetCallbackHandler
    from tests.sdk_http import OPENAI_HTTP
    from tests.test_geo_prices import REGIONAL, bill, completion

    guard = Guard("memory://", budgets=[Budget("global", usd="100", per="day")], prices=PriceBook())
    try:
        api = serve(completion("gpt-4o-2024-11-20"))
        llm = ChatOpenAI(
            model="gpt-4o", base_url="https://contoso.openai.azure.com/openai/v1/", api_key="k",  # type: ignore[arg-type]
            max_retries=0, max_tokens=500,  # type: ignore[call-arg]
            http_client=OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(api)),
            callbacks=[BudgetCallbackHandler(guard)],
        )  # fmt: skip
        llm.invoke("What is a budget?")
        assert committed(guard).amounts["usd"] == bill(REGIONAL)
    finally:
        guard.close()

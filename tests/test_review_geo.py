"""Review of branch geo (Azure deployment types, Anthropic US-only inference): a failing test per fault.

Each test drives real SDK clients on the branch's local transport (tests/guard/payloads.py) and states
the figures it found on geo.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, Event, Guard, PriceBook
from tests.guard.one_call import committed, nano
from tests.guard.payloads import serve
from tests.sdk_http import OPENAI_HTTP
from tests.test_geo_prices import (
    AZURE,
    DATA_ZONE,
    HI,
    REGIONAL,
    azure,
    bill,
    claude,
    completion,
    reserved,
    us_answer,
)


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


# -- (1) the hard limit -----------------------------------------------------------------------------


def test_us_only_fast_mode_is_reserved_at_the_fast_us_price(guard: Guard, events: list[Event]) -> None:
    """``inference_geo="us"`` with ``speed="fast"``: ``request_variant`` keeps the geo and drops the
    speed, so the call is reserved at US standard ($27.50 / MTok out for claude-opus-4-8) while the
    response reporting fast mode is charged fast x 1.1 ($55): reserved $0.0282 for 1024 out, charged
    above the hold (an overrun). On main the geo was refused: this path is new."""
    body = us_answer("claude-opus-4-8")
    body["usage"]["speed"] = "fast"
    api = serve(body)
    create = guard.with_budget(claude(api).messages.create)
    create(model="claude-opus-4-8", messages=HI, max_tokens=1024, inference_geo="us", speed="fast")
    entry = committed(guard)
    assert entry.amounts["usd"] == nano((1000, "11"), (400, "1.1"), (200, "55"))  # (charged right)
    assert reserved(guard) >= nano((1024, "55"))  # geo: 1024 x 27.5 only
    assert "overrun" not in {e.kind for e in events}


def test_a_fast_call_served_in_the_us_by_the_workspace_default_is_charged_the_us_premium(
    guard: Guard,
) -> None:
    """A workspace whose default geo is US serves a fast request naming no geo in the US; the response
    reports ``speed="fast"`` and ``inference_geo="us"``. ``served_tier`` returns "fast-mode" alone (the
    geo is read only when the speed is not fast), so it is charged fast at the global price ($0.0204
    for 1000 in, 400 cache reads, 200 out) where the US fast price is $0.02244. The branch charges the
    same response without fast mode at the US premium (``test_a_workspace_default_us_geo_...``)."""
    body = us_answer("claude-opus-4-8")
    body["usage"]["speed"] = "fast"
    api = serve(body)
    create = guard.with_budget(claude(api).messages.create)
    create(model="claude-opus-4-8", messages=HI, max_tokens=1024, speed="fast")
    assert committed(guard).amounts["usd"] == nano((1000, "11"), (400, "1.1"), (200, "55"))


def test_an_azure_call_named_by_its_provider_prefix_is_priced_at_its_deployment_type(
    guard: Guard, book: PriceBook
) -> None:
    """A function calling an AzureOpenAI client inside says where it goes in its ``estimate=`` hook,
    ``azure/gpt-4o``: the deployment rule runs only when ``provider == "azure"`` is passed, so the call
    is reserved and charged Azure's Global price ($0.0045 for 1000 in, 200 out) though its type is
    unknown ($0.0061875 as Regional). ``provider="Azure"`` (genai-prices matches it) skips it too."""
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
    price = book.get("gpt-4o", provider="Azure")
    assert price.base.output == Decimal(REGIONAL[1])


def test_a_regional_chat_search_is_charged_its_fee_at_the_deployment_premium(
    guard: Guard, book: PriceBook
) -> None:
    """The premium scales tool-call fees (``times(..., fees=True)``): ``get_price`` and ``cost`` give
    gpt-4o-search-preview's search at $48.125 / 1k on a Regional deployment (35 x 1.375). The estimate's
    chat search (``ServerTools.exact``, ``chat_search_fee``) sets the unscaled $35 in its place, so a
    call is reserved and charged $0.035 for its search, $0.013125 below its own price."""
    book.register("gpt-4o-search-preview", provider="azure", deployment="regional")
    usage = budgetguard.Usage(input_tokens=1000, output_tokens=200, web_search_calls=1)
    own = book.cost_nano("gpt-4o-search-preview", usage, provider="azure")
    api = serve(completion("gpt-4o-search-preview-2025-03-11"))
    guard.wrap(azure(api)).chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-search-preview", messages=HI, max_tokens=500, web_search_options={}
    )
    assert committed(guard).amounts["usd"] == own


@pytest.mark.parametrize("declared", [False, True], ids=["unknown", "data_zone"])
def test_langchain_azure_chat_openai_is_priced_at_its_deployment_type(
    guard: Guard, book: PriceBook, declared: bool
) -> None:
    """LangChain's ``AzureChatOpenAI`` (``ls_provider="azure"``) is estimated with provider ``"openai"``
    (``_langchain_requests._SHAPES`` maps azure to the OpenAI *shape* and returns it as the provider):
    a deployment of unknown type is reserved $0.00503 and charged $0.0045, Azure's Global price
    ($0.0061875 as Regional); a deployment declared with ``deployment="data_zone"`` is refused
    (PricingError: no price for 'eu-chat' at provider 'openai')."""
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


def test_an_azure_batch_result_charged_to_a_job_is_priced_at_its_deployment_type(
    guard: Guard, book: PriceBook
) -> None:
    """``job.charge(line, batch=True)`` prices a Batch API result line with no provider (it takes no
    ``provider=``) and ``azure/gpt-4o`` skips the deployment type (see above): with every deployment
    declared Data Zone, an Azure batch line (1000 in, 200 out) is charged $0.00225, the Global batch
    price; ``cost(..., provider="azure", variant={"processing": "batch"})`` says $0.002475."""
    book.set_azure_deployment("data_zone")
    line = {"custom_id": "r1", "response": {"status_code": 200, "body": completion("gpt-4o-2024-11-20")}}
    usage = budgetguard.Usage(input_tokens=1000, output_tokens=200)
    billed = book.cost("gpt-4o", usage, provider="azure", variant={"processing": "batch"})
    with guard.reserve(usd="1") as job:
        charged = job.charge(line, model="azure/gpt-4o", batch=True)
    assert charged == billed


def test_a_regional_web_search_preview_is_charged_its_fee_at_the_deployment_premium(
    guard: Guard, book: PriceBook
) -> None:
    """The same for the Responses ``web_search_preview`` tool (``ServerTools.preview_search``): on a
    Regional deployment its published $25 / 1k replaces the scaled web search fee ($13.75) unscaled, so
    the search is reserved and charged $0.025, not $0.034375 (25 x 1.375)."""
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


# -- (3) UX: the unknown type is said, once -----------------------------------------------------------


def test_an_unknown_azure_deployment_type_is_said_once(guard: Guard, events: list[Event]) -> None:
    """Every undeclared Azure deployment is now charged 37.5% above Azure's Global price; nothing tells
    the user (no event, no log) that ``set_azure_deployment`` would charge it right. Two calls: 0 events
    naming it, want 1."""
    api = serve(completion("gpt-4o"))
    wrapped = guard.wrap(azure(api))
    for _ in range(2):
        wrapped.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=50)  # type: ignore[call-overload]
    told = [e for e in events if "set_azure_deployment" in (e.reason or "")]
    assert len(told) == 1


def test_declaring_a_deployment_s_type_replaces_its_registered_rates(book: PriceBook) -> None:
    """``register(name, input=...)`` forgets the name's type, but ``register(name, deployment=...)``
    keeps the rates registered before: the declaration is silently ignored and its return value is
    the old price ($2 / MTok out, not gpt-4o's Data Zone $11). The last registration should win."""
    book.register("eu-chat", base_model="gpt-4o", provider="azure", input="1", output="2")
    declared = book.register("eu-chat", base_model="gpt-4o", provider="azure", deployment="data_zone")
    assert declared.base.output == Decimal(DATA_ZONE[1])
    assert book.get("eu-chat", provider="azure").base.output == Decimal(DATA_ZONE[1])


def test_an_unknown_anthropic_geo_leaves_others_alone(guard: Guard) -> None:
    """Sound (kept as a guard on the fix of the first test): the US premium alone, no fast mode."""
    api = serve(us_answer("claude-opus-4-8"))
    guard.with_budget(claude(api).messages.create)(
        model="claude-opus-4-8", messages=HI, max_tokens=1024, inference_geo="us"
    )
    assert committed(guard).amounts["usd"] == nano((1000, "5.5"), (400, "0.55"), (200, "27.5"))

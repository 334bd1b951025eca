"""LiteLLM (the real ``litellm``) through ``completion`` / ``acompletion`` on a guarded client, against
``MockProvider``: every HTTP attempt (SDK retries included) charged to the nano-USD, streams too, a
refusal raised as LiteLLM's ``BudgetExceededError`` with the refusal chained, and a model LiteLLM would
send with its own HTTP client refused rather than sent unguarded."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # (its bundled prices: no network)

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import litellm
import pytest

import budgetguard as bg
from budgetguard import Usage
from budgetguard.integrations.litellm import (
    BudgetExceeded,
    BudgetHTTP,
    acompletion,
    arouter_completion,
    completion,
    router_completion,
)
from budgetguard.testing import MockProvider

pytestmark = [  # what LiteLLM's own code makes pydantic warn about (its typed dicts, its stream chunks)
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

HI = [{"role": "user", "content": "Why reserve before calling?"}]


@pytest.fixture
def api() -> Iterator[MockProvider]:
    with MockProvider() as mock:
        yield mock


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")])
    yield made
    made.close()


@pytest.fixture(autouse=True)
def quiet_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(litellm, "suppress_debug_info", True)  # (its "Give Feedback" banner on errors)


def chat_cost(model: str, reported: dict[str, Any], provider: str | None = None) -> int:
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    usage = Usage(
        input_tokens=reported["prompt_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=reported["completion_tokens"],
    )
    return bg.get_price(model, provider=provider).cost_nano(usage)


def committed(guard: bg.Guard) -> list[tuple[str, int | None]]:
    return [(e.event, e.amounts["usd"] if e.event == "committed" else None) for e in guard.ledger.history()]


# The async test comes first: LiteLLM itself (1.110, with plain openai clients too) leaks an event loop
# when an acompletion follows a completion in one process (an unclosed-loop ResourceWarning at exit).
async def test_acompletion_is_charged(api: MockProvider, guard: bg.Guard) -> None:
    async with guard.wrap(api.async_openai(), user="alice") as client:
        await acompletion(client, model="gpt-4o-mini", messages=HI, max_tokens=100)

    assert committed(guard) == [("committed", chat_cost("gpt-4o-mini", api.usages[0]))]


def test_completion_retries_and_streams_are_charged(api: MockProvider, guard: bg.Guard) -> None:
    api.fail(500, retry_after="0")
    with guard.wrap(api.openai(max_retries=1), user="alice") as client:
        reply = completion(client, model="openai/gpt-4o-mini", messages=HI, max_tokens=100, max_retries=1)
        chunks = list(completion(client, model="gpt-4o-mini", messages=HI, max_tokens=100, stream=True))

    assert reply.choices[0].message.content and chunks
    assert api.requests[2].body["stream_options"] == {"include_usage": True}
    answered, streamed = api.usages
    assert committed(guard) == [
        ("released", None),  # the 500, retried by the SDK
        ("committed", chat_cost("gpt-4o-mini", answered)),
        ("committed", chat_cost("gpt-4o-mini", streamed)),
    ]


@pytest.mark.parametrize("num_retries", [0, 2])
def test_a_refusal_is_litellms_budget_error(api: MockProvider, guard: bg.Guard, num_retries: int) -> None:
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], 1)
    refused = pytest.raises(litellm.BudgetExceededError)
    with guard.wrap(api.openai(), user="alice") as client, refused as raised:
        completion(client, model="gpt-4o-mini", messages=HI, max_tokens=100, num_retries=num_retries)

    error = raised.value
    assert isinstance(error, BudgetExceeded) and isinstance(error, bg.BudgetExceededError)
    assert isinstance(error.__cause__, bg.BudgetExceededError) and error.scope == "user:alice"
    assert (error.max_budget, error.current_cost) == (error.limit, error.spent) == (Decimal("1e-9"), 0)
    assert api.requests == []  # nothing sent
    assert {e.event for e in guard.ledger.history()} == {"refused"}


def test_a_provider_litellm_sends_itself_is_refused(api: MockProvider, guard: bg.Guard) -> None:
    with guard.wrap(api.openai(), user="alice") as client:
        with pytest.raises(bg.ConfigurationError, match="does not guard: a guarded SDK client carries"):
            completion(client, model="anthropic/claude-sonnet-4-6", messages=HI, max_tokens=100)
        with pytest.raises(bg.ConfigurationError, match=r"guard\.wrap"):
            completion(api.openai(), model="gpt-4o-mini", messages=HI)
    assert api.requests == []


@pytest.mark.parametrize("key", ["fallbacks", "context_window_fallbacks", "content_policy_fallbacks"])
def test_per_call_fallbacks_are_refused_before_any_call(api: MockProvider, guard: bg.Guard, key: str) -> None:
    """LiteLLM sends a refused call on to a per-call fallback, with that provider's own HTTP client: the
    refusal would be routed around, unguarded (a review found deepseek, mistral and groq sent and unpaid)."""
    refused = pytest.raises(bg.ConfigurationError, match=f"{key}= would send a call the guard refused")
    with guard.wrap(api.openai(), user="alice") as client, refused:
        completion(client, model="gpt-4o-mini", messages=HI, **{key: [{"model": "deepseek/deepseek-chat"}]})
    assert api.requests == [] and guard.ledger.history() == []


CLAUDE = "claude-sonnet-4-5"


def claude_cost(reported: dict[str, Any]) -> int:
    return bg.get_price(CLAUDE).cost_nano(Usage.from_response(reported))


async def test_anthropic_through_litellms_own_http_client(api: MockProvider, guard: bg.Guard) -> None:
    """LiteLLM's Anthropic provider does not use the anthropic SDK: it posts with its HTTP handler, which
    ``BudgetHTTP`` puts on the transport (Anthropic's wire format, priced as genai-prices' anthropic)."""
    async with BudgetHTTP(guard, user="alice") as http:
        base = {"api_base": api.anthropic_base_url, "api_key": "k", "messages": HI, "max_tokens": 100}
        await acompletion(http, model=f"anthropic/{CLAUDE}", **base)
        completion(http, model=CLAUDE, **base)  # (LiteLLM finds the provider from the name too)
        with pytest.raises(bg.ConfigurationError, match=r"does not guard: a BudgetHTTP carries anthropic"):
            completion(http, model="cohere/command-r", messages=HI)
        with pytest.raises(litellm.BudgetExceededError) as raised:  # claude-opus-4-1's worst case: $2.40
            completion(http, **{**base, "model": "anthropic/claude-opus-4-1", "max_tokens": 32000})

    assert [r.path for r in api.requests] == ["/v1/messages", "/v1/messages"]
    error = raised.value
    assert isinstance(error, BudgetExceeded) and isinstance(error.__cause__, bg.BudgetExceededError)
    assert error.scope == "user:alice" and error.llm_provider == "anthropic"
    assert committed(guard) == [("committed", claude_cost(u)) for u in api.usages] + [("refused", None)]


def deployment(name: str, model: str, base: str | None = None) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": model, "api_key": "k", "api_base": base}}


async def test_a_router_is_guarded_when_the_client_carries_every_deployment(
    api: MockProvider, guard: bg.Guard
) -> None:  # (async: LiteLLM's sync Router leaves an event loop of its own unclosed)
    router = litellm.Router(
        model_list=[deployment("fast", "openai/gpt-4o-mini"), deployment("big", "openai/gpt-4o")],
        fallbacks=[{"big": ["fast"]}],
    )
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], bg.to_nano("0.01"))
    async with guard.wrap(api.async_openai(), user="alice") as client:
        await arouter_completion(router, client, model="fast", messages=HI, max_tokens=100)
        with pytest.raises(litellm.BudgetExceededError):  # $1 worst case; the fallback's $0.06
            await arouter_completion(router, client, model="big", messages=HI, max_tokens=100_000)

    assert [r.body["model"] for r in api.requests] == ["gpt-4o-mini"]
    events = committed(guard)
    assert events[0] == ("committed", chat_cost("gpt-4o-mini", api.usages[0]))
    assert {event for event, _ in events[1:]} == {"refused"}  # each routed attempt refused, none sent


def test_a_router_the_client_cannot_carry_is_refused_before_any_call(
    api: MockProvider, guard: bg.Guard
) -> None:
    elsewhere = litellm.Router(model_list=[deployment("fast", "openai/gpt-4o-mini", "http://other.test/v1")])
    mixed = litellm.Router(
        model_list=[deployment("fast", "openai/gpt-4o-mini"), deployment("claude", f"anthropic/{CLAUDE}")]
    )
    with guard.wrap(api.openai(), user="alice") as client, BudgetHTTP(guard, user="alice") as http:
        with pytest.raises(bg.ConfigurationError, match=r"sends to http://other\.test/v1"):
            router_completion(elsewhere, client, model="fast", messages=HI)
        with pytest.raises(bg.ConfigurationError, match=r"'anthropic/claude-sonnet-4-5' \(anthropic\)"):
            router_completion(mixed, client, model="fast", messages=HI)
        with pytest.raises(bg.ConfigurationError, match=r"'openai/gpt-4o-mini' \(openai\)"):
            router_completion(mixed, http, model="claude", messages=HI)
    assert api.requests == [] and guard.ledger.history() == []


async def test_a_router_of_anthropic_deployments_on_budget_http(api: MockProvider, guard: bg.Guard) -> None:
    router = litellm.Router(model_list=[deployment("claude", f"anthropic/{CLAUDE}", api.anthropic_base_url)])
    async with BudgetHTTP(guard, user="bo") as http:
        await arouter_completion(router, http, model="claude", messages=HI, max_tokens=100)
    [usage] = api.usages
    assert committed(guard) == [("committed", claude_cost(usage))]


# -- streams LiteLLM stops reading early ------------------------------------------------------------


def claude_stream_cost(api: MockProvider) -> int:
    [usage] = api.usages
    return claude_cost(usage)


async def test_an_anthropic_stream_litellm_closes_at_an_interim_count_is_charged_its_bill(
    api: MockProvider, guard: bg.Guard
) -> None:
    """LiteLLM ends an Anthropic stream at its first ``message_delta`` and closes it; the mock sends an
    interim (cumulative) one mid-way, as Anthropic does on long replies. The transport reads on to the
    final count before it settles: the bill, not the interim count."""
    base = {"api_base": api.anthropic_base_url, "api_key": "k", "messages": HI, "max_tokens": 300}
    async with BudgetHTTP(guard, user="alice") as http:
        stream = await acompletion(http, model=f"anthropic/{CLAUDE}", stream=True, **base)
        chunks = [chunk async for chunk in stream]

    assert chunks[-1].choices[0].finish_reason == "stop"
    [entry] = guard.ledger.history()
    assert (entry.event, entry.amounts["usd"]) == ("committed", claude_stream_cost(api))
    assert "interrupted" not in entry.data and "usage_missing" not in entry.data


def test_a_sync_anthropic_stream_litellm_closes_early_is_charged_its_bill(
    api: MockProvider, guard: bg.Guard
) -> None:
    base = {"api_base": api.anthropic_base_url, "api_key": "k", "messages": HI, "max_tokens": 300}
    with BudgetHTTP(guard, user="alice") as http:
        chunks = list(completion(http, model=f"anthropic/{CLAUDE}", stream=True, **base))

    assert chunks
    [entry] = guard.ledger.history()
    assert (entry.event, entry.amounts["usd"]) == ("committed", claude_stream_cost(api))
    assert "interrupted" not in entry.data


async def test_an_anthropic_stream_really_cut_is_charged_as_interrupted(
    api: MockProvider, guard: bg.Guard
) -> None:
    """A connection lost before the interim count: what was read (message_start's input, the text),
    flagged interrupted; never less than the input it reported."""
    api.cut(after=4)  # message_start, content_block_start, ping, one text delta
    base = {"api_base": api.anthropic_base_url, "api_key": "k", "messages": HI, "max_tokens": 300}
    async with BudgetHTTP(guard, user="alice") as http:
        stream = await acompletion(http, model=f"anthropic/{CLAUDE}", stream=True, **base)
        with pytest.raises(
            litellm.exceptions.MidStreamFallbackError
        ):  # (LiteLLM's error for a lost connection)
            [_ async for _ in stream]

    [entry] = guard.ledger.history()
    [usage] = api.usages
    input_only = Usage.from_response({"usage": {**usage, "output_tokens": 0}})
    assert entry.event == "committed" and entry.data["interrupted"] is True
    assert entry.amounts["usd"] > bg.get_price(CLAUDE).cost_nano(input_only)


# -- LiteLLM's OpenAI-compatible providers ------------------------------------------------------------

# LiteLLM provider, model, genai-prices' provider, and the client LiteLLM sends with (its HTTP handler, or
# an OpenAI SDK client): each priced as genai-prices prices the provider's model
COMPATIBLE = [
    ("groq", "llama-3.3-70b-versatile", "groq"),  # HTTP handler
    ("deepseek", "deepseek-chat", "deepseek"),
    ("mistral", "mistral-small-latest", "mistral"),
    ("xai", "grok-3", "x-ai"),
    ("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together"),
    ("fireworks_ai", "accounts/fireworks/models/deepseek-v3p2", "fireworks"),
    ("openrouter", "openai/gpt-4o-mini", "openrouter"),
    ("perplexity", "sonar", "perplexity"),  # OpenAI SDK client
    ("cerebras", "llama-3.3-70b", "cerebras"),
    ("moonshot", "kimi-k2", "moonshotai"),
    ("novita", "deepseek/deepseek-r1", "novita"),
    ("zai", "GLM-4.5", "zai"),
    ("baseten", "moonshotai/Kimi-K2.6", "baseten"),
]


def mock_base(api: MockProvider) -> dict[str, Any]:
    return {"api_base": api.openai_base_url, "api_key": "k", "messages": HI, "max_tokens": 50}


async def test_compatible_providers_async_and_streamed(api: MockProvider, guard: bg.Guard) -> None:
    """deepseek (LiteLLM's HTTP handler) and perplexity (an OpenAI SDK client BudgetHTTP makes), each
    answered and streamed, charged to the nano-USD at genai-prices' price of the provider's model."""
    async with BudgetHTTP(guard, user="alice") as http:
        for name in ("deepseek/deepseek-chat", "perplexity/sonar"):
            await acompletion(http, model=name, **mock_base(api))
            stream = await acompletion(http, model=name, stream=True, **mock_base(api))
            assert [chunk async for chunk in stream]

    assert [r.body["model"] for r in api.requests] == ["deepseek-chat"] * 2 + ["sonar"] * 2
    assert [r.body.get("stream_options") for r in api.requests[1::2]] == [{"include_usage": True}] * 2
    priced = [("deepseek-chat", "deepseek")] * 2 + [("sonar", "perplexity")] * 2
    costs = [chat_cost(model, usage, at) for (model, at), usage in zip(priced, api.usages, strict=True)]
    assert committed(guard) == [("committed", cost) for cost in costs]
    assert all("usage_missing" not in e.data for e in guard.ledger.history())


@pytest.mark.parametrize(("provider", "model", "priced_as"), COMPATIBLE)
def test_compatible_providers_are_priced_as_genai_prices_names_them(
    api: MockProvider, guard: bg.Guard, provider: str, model: str, priced_as: str
) -> None:
    with BudgetHTTP(guard, user="alice") as http:
        reply = completion(http, model=f"{provider}/{model}", **mock_base(api))

    assert reply.choices[0].message.content
    [request], [usage] = api.requests, api.usages
    assert (request.path, request.body["model"]) == ("/v1/chat/completions", model)
    assert committed(guard) == [("committed", chat_cost(model, usage, priced_as))]


def test_an_unpriced_model_is_an_error_and_nothing_is_sent(api: MockProvider, guard: bg.Guard) -> None:
    with BudgetHTTP(guard, user="alice") as http:
        with pytest.raises(
            bg.PricingError, match="no price known for model 'no-such-model' at provider 'groq'"
        ):
            completion(http, model="groq/no-such-model", **mock_base(api))
        with pytest.raises(bg.PricingError, match="at provider 'perplexity'"):
            completion(http, model="perplexity/no-such-model", **mock_base(api))
        with pytest.raises(bg.ConfigurationError, match=r"\(cohere\).*Guarded: openai, azure .*groq"):
            completion(http, model="cohere/command-r", **mock_base(api))
    assert api.requests == [] and guard.ledger.history() == []


async def test_a_router_of_a_compatible_provider_on_budget_http(api: MockProvider, guard: bg.Guard) -> None:
    router = litellm.Router(
        model_list=[
            deployment("fast", "groq/llama-3.1-8b-instant", api.openai_base_url),
            deployment("big", "groq/llama-3.3-70b-versatile", api.openai_base_url),
        ],
        fallbacks=[{"big": ["fast"]}],
    )
    async with BudgetHTTP(guard, user="bo") as http:
        await arouter_completion(router, http, model="big", messages=HI, max_tokens=100)
        await arouter_completion(router, http, model="fast", messages=HI, max_tokens=100)

    assert [r.body["model"] for r in api.requests] == ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"]
    big, fast = api.usages
    assert committed(guard) == [
        ("committed", chat_cost("llama-3.3-70b-versatile", big, "groq")),
        ("committed", chat_cost("llama-3.1-8b-instant", fast, "groq")),
    ]


def test_a_router_whose_deployments_need_two_clients_is_refused(api: MockProvider, guard: bg.Guard) -> None:
    """LiteLLM gives every deployment the one ``client=``: a deepseek call on groq's handler would be
    priced as groq's."""
    router = litellm.Router(
        model_list=[
            deployment("fast", "groq/llama-3.3-70b-versatile", api.openai_base_url),
            deployment("deep", "deepseek/deepseek-chat", api.openai_base_url),
        ]
    )
    with BudgetHTTP(guard, user="bo") as http, pytest.raises(bg.ConfigurationError, match="deepseek, groq"):
        router_completion(router, http, model="fast", messages=HI)
    assert api.requests == []


def test_a_refusal_through_a_client_budget_http_makes_is_litellms_budget_error(
    api: MockProvider, guard: bg.Guard
) -> None:
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], 1)
    with BudgetHTTP(guard, user="alice") as http:
        for name in ("perplexity/sonar", "groq/llama-3.3-70b-versatile"):
            with pytest.raises(litellm.BudgetExceededError) as raised:
                completion(http, model=name, **mock_base(api))
            assert isinstance(raised.value.__cause__, bg.BudgetExceededError)
    assert api.requests == []


def test_litellms_own_http_client_switch_is_refused(
    api: MockProvider, guard: bg.Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With this setting LiteLLM sends its OpenAI-compatible providers with an HTTP client of its own,
    ignoring the guarded SDK client it is given."""
    monkeypatch.setenv("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "true")
    with BudgetHTTP(guard, user="alice") as http, guard.wrap(api.openai(), user="alice") as client:
        with pytest.raises(bg.ConfigurationError, match="EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER is set"):
            completion(http, model="perplexity/sonar", **mock_base(api))
        with pytest.raises(bg.ConfigurationError, match="EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER is set"):
            completion(client, model="gpt-4o-mini", messages=HI)
        completion(http, model="groq/llama-3.3-70b-versatile", **mock_base(api))  # (its HTTP handler: ours)
    assert len(api.requests) == 1

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from budgetguard import (
    ConfigurationError,
    Estimate,
    Estimator,
    Guard,
    PriceBook,
    PricingError,
    Usage,
    cost,
    count_anthropic_tokens,
    count_message_tokens,
    count_openai_request,
    count_responses_tokens,
    estimate,
    get_encoding,
    price_book,
)
from tests.test_tokens import JARGON_MESSAGES, WEATHER_MESSAGES, WEATHER_TOOLS

QUESTION = [{"role": "user", "content": "What is a budget? Answer in one sentence."}]


def usd(micro: str | int) -> Decimal:
    """An amount given in millionths of a dollar (tokens x USD-per-million-tokens)."""
    return Decimal(micro) / 1_000_000


# -- chat completions ------------------------------------------------------------------------------


def test_chat_max_tokens_times_n() -> None:
    est = estimate({"model": "gpt-4o", "messages": JARGON_MESSAGES, "max_tokens": 100, "n": 3})
    assert (est.input_tokens, est.output_tokens) == (124, 300)
    assert est.cost == usd(124 * Decimal("2.5") + 300 * 10) == Decimal("0.00331")
    assert est.cost_nano == 3_310_000
    assert est.cache_write is None
    assert est.usage == Usage(input_tokens=124, output_tokens=300)


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    est = estimate(
        {"model": "gpt-4o-mini", "messages": QUESTION, "max_completion_tokens": 50, "max_tokens": 900}
    )
    assert est.output_tokens == 50


def test_chat_tools_are_counted() -> None:
    request = {"model": "gpt-4o-mini", "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS, "max_tokens": 10}
    # the cookbook's API-reported count is 101; recorded requests ran up to 3 tokens above the
    # cookbook's function rule, a margin the estimate adds to every request with tools
    assert estimate(request).input_tokens == 101 + 3


def test_legacy_functions_are_counted_as_tools() -> None:
    functions = [WEATHER_TOOLS[0]["function"]]
    request = {"model": "gpt-4o-mini", "messages": WEATHER_MESSAGES, "functions": functions, "max_tokens": 10}
    assert estimate(request).input_tokens == 101 + 3


def test_without_a_max_the_models_max_output_bounds_the_output() -> None:
    est = estimate({"model": "gpt-4o", "messages": JARGON_MESSAGES})
    assert est.output_tokens == 16_384  # gpt-4o's published maximum, not its 128k window - input
    est_n = estimate({"model": "gpt-4o", "messages": JARGON_MESSAGES, "n": 2})
    assert est_n.output_tokens == 2 * 16_384
    assert est_n.cost == cost("gpt-4o", Usage(input_tokens=124, output_tokens=2 * 16_384))
    responses = estimate({"model": "gpt-4.1", "input": "Hi"})
    assert responses.output_tokens == 32_768  # (was 1,047,576 - input: the window, far from tight)
    claude = estimate({"model": "claude-sonnet-4-5", "messages": QUESTION})  # (the API requires one)
    assert claude.output_tokens == 64_000


def test_output_bound_order() -> None:
    book = PriceBook(use_data=False)
    book.register("with-max", input="1", output="2", max_output_tokens=1000, context_window=8000)
    book.register("max-above-window", input="1", output="2", max_output_tokens=1000, context_window=900)
    book.register("max-only", input="1", output="2", max_output_tokens=1000)
    book.register("with-window", input="1", output="2", context_window=8000)
    book.register("bare", input="1", output="2")
    book.register("tiny-window", input="1", output="2", context_window=5)
    estimator = Estimator(prices=book)
    request: dict[str, Any] = {"messages": QUESTION}
    n_in = count_message_tokens(QUESTION, "bare")
    assert n_in > 10
    assert estimator({**request, "model": "with-max", "max_tokens": 5000}).output_tokens == 5000
    assert estimator({**request, "model": "with-max"}).output_tokens == 1000
    assert estimator({**request, "model": "max-above-window"}).output_tokens == 900
    assert estimator({**request, "model": "max-only"}).output_tokens == 1000
    # the window, not the window minus the input: an input estimate above the real input would leave
    # the provider room for more output than a (window - estimate) reservation holds
    assert estimator({**request, "model": "with-window"}).output_tokens == 8000
    assert estimator({**request, "model": "tiny-window"}).output_tokens == 5
    assert estimator({**request, "model": "bare", "max_tokens": 0}).output_tokens == 0
    opted_in = Estimator(prices=book, default_output_tokens=777)
    assert opted_in({**request, "model": "bare"}).output_tokens == 777


def test_no_known_limit_is_an_error_that_says_what_to_do() -> None:
    book = PriceBook(use_data=False)
    book.register("my-finetune", input="1", output="2")
    with pytest.raises(ConfigurationError) as caught:
        Estimator(prices=book)({"model": "my-finetune", "messages": QUESTION})
    message = str(caught.value)
    assert "max_completion_tokens / max_tokens" in message
    assert "register_price('my-finetune'" in message and "max_output_tokens=" in message
    assert "Estimator(default_output_tokens=N)" in message
    responses = {"model": "my-finetune", "input": "Hi"}
    with pytest.raises(ConfigurationError, match="sets no max_output_tokens"):
        Estimator(prices=book)(responses)
    assert Estimator(prices=book)({**responses, "max_output_tokens": 7}).output_tokens == 7


# -- input the request does not carry (server-side history) ----------------------------------------


@pytest.mark.parametrize("state", [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"}])
def test_server_side_history_is_bounded_by_the_context_window(state: dict[str, str]) -> None:
    request = {"model": "gpt-4o", "input": "And 3+3?", "max_output_tokens": 50}
    shown = estimate(request)
    assert shown.unseen == ()
    est = estimate({**request, **state})
    assert est.unseen == tuple(state)
    assert est.input_tokens == 128_000  # whatever the history holds, the input fits the window
    assert est.cost == cost("gpt-4o", Usage(input_tokens=128_000, output_tokens=50))


def test_server_side_history_bound_given_by_the_caller() -> None:
    request = {"model": "gpt-4o", "input": "And 3+3?", "previous_response_id": "resp_1"}
    shown = estimate({**request, "previous_response_id": None}).input_tokens
    assert Estimator(unseen_tokens=5000)(request).input_tokens == shown + 5000


def test_claude_documents_by_reference_are_bounded_like_server_side_history() -> None:
    document = {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}}
    request = _claude(messages=[{"role": "user", "content": [document, {"type": "text", "text": "Sum up."}]}])
    est = estimate(request)
    window = est.price.context_window
    assert est.unseen == ("document url",) and window is not None
    assert est.input_tokens == window  # the document may fill whatever the text leaves
    shown = estimate(_claude(messages=[{"role": "user", "content": "Sum up."}])).input_tokens
    bounded = Estimator(unseen_tokens=3000)(request)
    assert shown + 3000 <= bounded.input_tokens < shown + 3000 + 100  # + the document block's framing
    assert estimate(
        {**request, "messages": QUESTION, "mcp_servers": [{"type": "url", "url": "u"}]}
    ).unseen == ("mcp_servers",)


def test_server_side_history_without_a_window_is_an_error() -> None:
    book = PriceBook(use_data=False)
    book.register("no-window", input="1", output="2", max_output_tokens=100)
    request = {"model": "no-window", "input": "hi", "conversation": "conv_1"}
    with pytest.raises(ConfigurationError, match="unseen_tokens"):
        Estimator(prices=book)(request)
    assert Estimator(prices=book, unseen_tokens=10)(request).unseen == ("conversation",)
    with pytest.raises(ConfigurationError, match="unseen_tokens"):
        Estimator(unseen_tokens=-1)


def test_estimator_uses_its_own_price_book() -> None:
    book = PriceBook(use_data=False)
    book.register("gpt-4o", input="1", output="1")
    est = Estimator(prices=book)({"model": "gpt-4o", "messages": JARGON_MESSAGES, "max_tokens": 76})
    assert est.cost == usd(124 + 76)
    assert est.price.source == "override"


def test_service_tier_prices_the_variant() -> None:
    request = {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 100}
    standard = estimate(request)
    priority = estimate({**request, "service_tier": "priority"})
    expected = price_book.get("gpt-4o", variant={"service_tier": "priority"})
    assert priority.price.base == expected.base
    assert priority.price.base.input == Decimal("4.25")  # the data's priority price (from 2026-10-12)
    assert priority.cost > standard.cost
    assert estimate({**request, "service_tier": "auto"}).cost == standard.cost
    assert estimate({**request, "service_tier": "default"}).cost == standard.cost


def test_a_priority_project_default_reserves_unnamed_tiers_at_priority() -> None:
    request = {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 100}
    priority = estimate({**request, "service_tier": "priority"})
    on_priority = Estimator(default_service_tier="priority")
    for unnamed in (request, {**request, "service_tier": "auto"}, {**request, "service_tier": None}):
        est = on_priority(unnamed)
        assert (est.variant, est.cost) == ({"service_tier": "priority"}, priority.cost)
    # a request naming its tier keeps it
    assert on_priority({**request, "service_tier": "default"}).cost == estimate(request).cost
    o4_mini = {**request, "model": "o4-mini"}
    flex = on_priority({**o4_mini, "service_tier": "flex"})
    assert flex.variant == {"service_tier": "flex"} and flex.cost < estimate(o4_mini).cost
    assert on_priority(request, batch=True).variant == {"processing": "batch"}
    # an Anthropic request, or one sent elsewhere, has no OpenAI project tier
    groq = {"model": "llama-3.3-70b-versatile", "messages": QUESTION, "max_tokens": 100}
    assert on_priority(groq, provider="groq").cost == estimate(groq, provider="groq").cost
    claude = {"model": "claude-sonnet-4-5", "messages": QUESTION, "max_tokens": 100}
    assert on_priority(claude).variant is None and on_priority(claude).cost == estimate(claude).cost
    assert Estimator(default_service_tier="default")(request).cost == estimate(request).cost


def test_a_priority_project_default_leaves_a_model_without_priority_at_standard() -> None:
    """A model (or an embedding) with no priority price is served at standard on a Priority project:
    the project's default alone does not make it unpriced (a review found such calls refused); a
    request naming priority for it still is."""
    on_priority = Estimator(default_service_tier="priority")
    for request in (
        {"model": "gpt-5-nano", "messages": QUESTION, "max_tokens": 100},
        {"model": "text-embedding-3-small", "input": "hello"},
    ):
        est = on_priority(request)
        assert (est.variant, est.cost) == (None, estimate(request).cost)
    with pytest.raises(PricingError):
        on_priority(
            {"model": "gpt-5-nano", "messages": QUESTION, "max_tokens": 100, "service_tier": "priority"}
        )


@pytest.mark.parametrize("tier", ["flex", "auto", "scale", 2])
def test_default_service_tier_takes_priority_or_standard(tier: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"default_service_tier must be 'priority'.*got"):
        Estimator(default_service_tier=tier)
    with pytest.raises(ConfigurationError, match=r"default_service_tier must be 'priority'"):
        Guard("memory://", default_service_tier=tier)
    with pytest.raises(ConfigurationError, match=r"to your Estimator\(default_service_tier=\.\.\.\)"):
        Guard("memory://", estimator=Estimator(), default_service_tier="priority")


def test_models_filed_under_other_providers_are_priced() -> None:
    # the provider guess only picks the request shape; gemini's price lives under "google"
    est = estimate({"model": "gemini-2.5-pro", "messages": QUESTION, "max_tokens": 10})
    assert "google" in est.price.source
    assert est.cost == cost("gemini-2.5-pro", est.usage)


def test_unknown_model_cannot_be_estimated() -> None:
    with pytest.raises(PricingError, match="acme-unknown"):
        estimate({"model": "acme-unknown", "messages": QUESTION, "max_tokens": 10})


# -- Responses API ---------------------------------------------------------------------------------


def test_responses_request() -> None:
    request = {
        "model": "o4-mini",
        "input": "What is a budget?",
        "instructions": "You are terse.",
        "max_output_tokens": 500,
    }
    est = estimate(request)
    assert est.input_tokens == count_openai_request(request)
    # o-series Responses requests: up to 58 tokens of system text measured above the chat rules
    assert est.input_tokens == 58 + count_responses_tokens(
        "What is a budget?", "o4-mini", instructions="You are terse."
    )
    assert est.output_tokens == 500
    assert est.cost == usd(est.input_tokens * Decimal("1.1") + 500 * Decimal("4.4"))


def test_responses_without_max_uses_the_models_max_output() -> None:
    est = estimate({"model": "gpt-4.1", "input": [{"role": "user", "content": "Hi"}]})
    assert est.output_tokens == 32_768


def test_instructions_alone_are_a_responses_request() -> None:
    request = {"model": "gpt-4o", "instructions": "Say hi.", "max_output_tokens": 5}
    assert estimate(request).input_tokens == count_openai_request(request)
    # gpt-4o Responses requests: up to 18 tokens measured above the chat rules
    assert count_openai_request(request) == 18 + count_responses_tokens(
        None, "gpt-4o", instructions="Say hi."
    )


# -- Anthropic -------------------------------------------------------------------------------------


def _claude(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are terse.",
        "messages": QUESTION,
        **extra,
    }


def test_anthropic_request() -> None:
    est = estimate(_claude())
    assert est.input_tokens == count_anthropic_tokens(QUESTION, "claude-sonnet-4-5", system="You are terse.")
    assert est.output_tokens == 1024
    assert est.cache_write is None
    assert est.cost == usd(est.input_tokens * 3 + 1024 * 15)


def test_anthropic_cache_control_is_priced_as_5_minute_writes() -> None:
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    est = estimate(_claude(system=system))
    assert est.cache_write == "5m"
    assert est.usage == Usage(cache_write_tokens=est.input_tokens, output_tokens=1024)
    assert est.cost == usd(est.input_tokens * Decimal("3.75") + 1024 * 15)
    assert est.cost > estimate(_claude()).cost


def test_anthropic_1h_cache_control_is_priced_as_1_hour_writes() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "A long shared context.",
                    "cache_control": {"type": "ephemeral", "ttl": "5m"},
                },
                {
                    "type": "text",
                    "text": "What is a budget?",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
            ],
        }
    ]
    est = estimate(_claude(messages=messages))
    assert est.cache_write == "1h"
    assert est.usage == Usage(cache_write_1h_tokens=est.input_tokens, output_tokens=1024)
    assert est.cost == usd(est.input_tokens * 6 + 1024 * 15)


def test_anthropic_cache_control_on_tools_and_top_level() -> None:
    tool = {
        "name": "get_weather",
        "description": "Get the weather",
        "input_schema": {"type": "object", "properties": {}},
        "cache_control": {"type": "ephemeral"},
    }
    assert estimate(_claude(tools=[tool])).cache_write == "5m"
    assert estimate(_claude(cache_control={"type": "ephemeral"})).cache_write == "5m"


def test_anthropic_without_max_tokens_uses_the_models_max_output() -> None:
    request = _claude()
    del request["max_tokens"]
    est = estimate(request)
    assert est.output_tokens == 64_000  # claude-sonnet-4-5's published maximum
    old = estimate({**request, "model": "claude-3-haiku-20240307"})
    assert old.output_tokens == 4_096


def test_anthropic_large_prompt_is_priced_at_the_long_context_tier() -> None:
    text = "budget " * 150_000  # 150k o200k tokens, x 1.4 for Claude: over the 200k tier threshold
    est = estimate(
        {"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": [{"role": "user", "content": text}]}
    )
    assert est.input_tokens > 200_000
    assert est.cost == usd(est.input_tokens * 6 + 1000 * Decimal("22.5"))


def test_anthropic_factor_per_model_family_and_prefix() -> None:
    request = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": QUESTION}
    newer = {**request, "model": "claude-opus-4-8"}

    def at(factor: str, model: str = "claude-haiku-4-5") -> int:
        return count_anthropic_tokens(QUESTION, model, factor=Decimal(factor))

    assert at("2") > at("1")  # the factor scales the text, not Anthropic's fixed framing
    assert Estimator()(request).input_tokens == at("1.4")  # Claude 4.6 and earlier: one tokenizer
    assert Estimator()(newer).input_tokens == at("1.55", "claude-opus-4-8")  # Opus 4.7's new tokenizer
    tuned = Estimator(anthropic_factors={"claude-haiku": "1.1"})
    assert tuned(request).input_tokens == at("1.1")
    assert tuned(newer).input_tokens == at("1.55", "claude-opus-4-8")  # other models keep their family's
    flat = Estimator(anthropic_factor="2", anthropic_factors={"claude-haiku": "1.1"})
    assert flat(request).input_tokens == at("1.1")  # a prefix wins
    assert flat(newer).input_tokens == at("2", "claude-opus-4-8")


def test_provider_can_be_given() -> None:
    book = PriceBook(use_data=False)
    book.register("my-claude-proxy", input="3", output="15")
    request = {"model": "my-claude-proxy", "max_tokens": 10, "messages": QUESTION}
    as_anthropic = Estimator(prices=book)(request, provider="anthropic")
    as_openai = Estimator(prices=book)(request)
    assert as_anthropic.input_tokens == count_anthropic_tokens(QUESTION, "my-claude-proxy")
    assert as_openai.input_tokens == count_message_tokens(QUESTION, "my-claude-proxy")


# -- embeddings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("The food was delicious and the waiter was kind.", None),
        (["The food was delicious.", "The waiter was kind."], None),
        ([9906, 1917, 0], 3),
        ([[9906, 1917], [15339], [1, 2, 3, 4]], 7),
        ([], 0),
    ],
)
def test_embeddings_input_forms(value: Any, tokens: int | None) -> None:
    if tokens is None:
        texts = [value] if isinstance(value, str) else value
        tokens = sum(len(get_encoding("cl100k_base").encode(t)) for t in texts)
    est = estimate({"model": "text-embedding-3-small", "input": value})
    assert (est.input_tokens, est.output_tokens) == (tokens, 0)
    assert est.cost == usd(tokens * Decimal("0.02"))


# -- bad requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        {},
        {"messages": QUESTION},
        {"model": None, "messages": QUESTION},
        {"model": "", "messages": QUESTION},
        {"model": 4, "messages": QUESTION},
        {"model": "gpt-4o", "prompt": "completions API"},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": -1},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": "100"},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 1.5},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": True},
        {"model": "gpt-4o", "messages": QUESTION, "max_completion_tokens": -5},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 10, "n": 0},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 10, "n": -2},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 10, "n": "2"},
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 10, "n": True},
        {"model": "o4-mini", "input": "hi", "max_output_tokens": -1},
        {"model": "claude-sonnet-4-5", "messages": QUESTION, "max_tokens": "1024"},
        {"model": "text-embedding-3-small", "input": None},
        {"model": "text-embedding-3-small", "input": 42},
        {"model": "text-embedding-3-small", "input": {"text": "hi"}},
        {"model": "text-embedding-3-small", "input": [1, "mixed"]},
    ],
)
def test_bad_requests_are_configuration_errors(request_: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        estimate(request_)


@pytest.mark.parametrize(
    "settings",
    [
        {"default_output_tokens": 0},
        {"default_output_tokens": -10},
        {"default_output_tokens": 1.5},
        {"default_output_tokens": True},
        {"anthropic_factor": "0.9"},
        {"anthropic_factors": {"claude-haiku": "0.5"}},
    ],
)
def test_bad_estimator_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Estimator(**settings)


# -- the estimate prices exactly the usage it reports ----------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        {"model": "gpt-4o", "messages": JARGON_MESSAGES, "max_tokens": 333, "n": 2},
        {"model": "gpt-4o-mini", "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS},
        {"model": "o4-mini", "input": "What is a budget?", "max_output_tokens": 4000},
        {"model": "claude-sonnet-4-5", "max_tokens": 2048, "messages": QUESTION},
        _claude(
            system=[
                {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
            ]
        ),
        {"model": "anthropic/claude-haiku-4-5", "max_tokens": 64, "messages": QUESTION},
        {"model": "text-embedding-3-small", "input": ["a", "b", "c"]},
    ],
)
def test_estimate_cost_equals_the_cost_of_its_usage(request_: dict[str, Any]) -> None:
    est = estimate(request_)
    assert isinstance(est, Estimate)
    assert est.cost == cost(request_["model"], est.usage)
    assert est.cost_nano > 0
    assert est.usage.total_input_tokens == est.input_tokens
    assert est.usage.output_tokens == est.output_tokens


def test_repr_shows_the_cost() -> None:
    est = estimate({"model": "gpt-4o", "messages": JARGON_MESSAGES, "max_tokens": 100, "n": 3})
    assert repr(est) == "Estimate(model='gpt-4o', input_tokens=124, output_tokens=300, cost=$0.00331)"


def test_files_by_reference_are_bounded_by_the_context_window() -> None:
    part = {"type": "input_file", "file_id": "file-abc"}
    request = {"model": "gpt-4o", "input": [{"role": "user", "content": [part]}], "max_output_tokens": 10}
    est = estimate(request)
    assert est.unseen == ("file_id",)
    assert est.input_tokens == 128_000
    shown = count_openai_request(request)
    assert Estimator(unseen_tokens=2000)(request).input_tokens == shown + 2000


def test_structured_output_raises_the_estimate() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    request = {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 10}
    fmt = {"type": "json_schema", "json_schema": {"name": "Answer", "schema": schema}}
    with_format = estimate({**request, "response_format": fmt})
    assert with_format.input_tokens == count_openai_request({**request, "response_format": fmt})
    assert with_format.input_tokens > estimate(request).input_tokens + 10


def test_a_stored_prompt_is_input_the_request_does_not_carry() -> None:
    """Responses ``prompt=`` (a stored template): its text is server-side, bounded like history; a
    request with a prompt and no input is a Responses request (it was not recognised)."""
    with_input = estimate(
        {"model": "gpt-4.1", "prompt": {"id": "pmpt_abc"}, "input": "hi", "max_output_tokens": 10}
    )
    alone = estimate({"model": "gpt-4.1", "prompt": {"id": "pmpt_abc", "variables": {"city": "Paris"}}})
    for est in (with_input, alone):
        assert est.unseen == ("prompt",)
        assert est.input_tokens == est.price.context_window
    assert alone.output_tokens == est.price.max_output_tokens


def test_openai_sdk_objects_fed_back_are_counted_by_their_fields() -> None:
    """A chat's ``response.choices[0].message`` and a Responses ``response.output`` item sent back are
    SDK objects: counted as the dicts they dump to, never crashing or counting nothing."""
    from openai.types.chat import ChatCompletionMessage
    from openai.types.responses import ResponseOutputMessage, ResponseOutputText

    text = "word " * 500
    reply = ChatCompletionMessage(role="assistant", content=text)
    as_dict = {"role": "assistant", "content": text}
    question = {"role": "user", "content": "Go on"}
    chat = estimate({"model": "gpt-4o", "messages": [reply, question], "max_tokens": 5})
    assert (
        chat.input_tokens
        == estimate({"model": "gpt-4o", "messages": [as_dict, question], "max_tokens": 5}).input_tokens
    )
    part = ResponseOutputText(type="output_text", text=text, annotations=[])
    item = ResponseOutputMessage(
        id="msg_1", type="message", role="assistant", status="completed", content=[part]
    )
    responses = estimate(
        {"model": "gpt-4o", "input": [item, {"role": "user", "content": "Go on"}], "max_output_tokens": 5}
    )
    assert responses.input_tokens > count_message_tokens([as_dict], "gpt-4o")
    with pytest.raises(ConfigurationError, match="content part of type NoneType"):
        estimate({"model": "gpt-4o", "messages": [{"role": "user", "content": [None]}], "max_tokens": 5})

"""Billed units beyond text tokens: audio and image tokens, server-side tool calls, Anthropic's extra sampling
passes (``usage.iterations``) and per-request fees, read from responses and streams and priced each at its
own rate, exactly.

The payloads in ``payloads/`` are written for these tests, shaped like the providers' documented
responses. Expected charges are hand arithmetic from the published prices (genai-prices 0.2.5, and
``PUBLISHED_PRICES`` where it has none), in micro-USD (USD per million tokens x tokens) x 1000.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message
from anthropic.types.beta import BetaMessage
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

import budgetguard
from budgetguard import Estimator, Pass, PricingError, Usage
from budgetguard._providers import StreamFolder

PAYLOADS = Path(__file__).parent / "payloads"
JSON = dict[str, Any]


def payload(name: str) -> JSON:
    data: JSON = json.loads((PAYLOADS / f"{name}.json").read_text())
    return data


# -- the expected bills, by hand ---------------------------------------------------------------------

# claude-sonnet-4-5: $3 in, $0.30 cache read, $15 out, web search $10 / 1k, web fetch free.
WEB_SEARCH_NANO = (12000 * 3 + 2000 * 3 // 10 + 400 * 15 + 3 * 10_000 + 2 * 0) * 1000  # $0.0726
# the call itself (3000 in, 150 out) at the base tier; the compaction (190k + 20k cache read > 200k) at
# sonnet-4-5's long-context tier ($6 / $0.60 / $22.50); the advisor pass at claude-opus-4-1 ($15 / $75).
ITERATIONS_NANO = (
    (3000 * 3 + 150 * 15) + (190000 * 6 + 20000 * 6 // 10 + 2000 * 45 // 2) + (4000 * 15 + 300 * 75)
) * 1000  # $1.29075
ITERATIONS_TOP_LEVEL_ONLY_NANO = (3000 * 3 + 150 * 15) * 1000  # what the top-level usage alone costs
# gpt-audio: text $2.50 in / $10 out, audio $32 in / $64 out.
AUDIO_NANO = (200 * 5 // 2 + 800 * 32 + 100 * 10 + 400 * 64) * 1000  # $0.0527
AUDIO_AS_TEXT_NANO = (1000 * 5 // 2 + 500 * 10) * 1000  # $0.0075: every token at the text rates
# gpt-5: $1.25 in, $0.125 cached, $10 out; web search $10 / 1k, file search $2.50 / 1k (genai-prices);
# code interpreter $0.03 a container, image generation $0.80057 an image (PUBLISHED_PRICES: a tool that
# names nothing, at gpt-image-2's dearest, 24,019 image tokens at $30 / M and 8,000 text output tokens at
# $10 / M; see budgetguard._image_tool).
TOOLS_NANO = (
    4000 * 5 // 4 + 1000 // 8 + 700 * 10 + 2 * 10_000 + 1 * 2_500 + 2 * 30_000 + 1 * 800_570
) * 1000  # $0.895195


# -- reading: responses ------------------------------------------------------------------------------


def test_anthropic_server_tool_counts_are_read_from_usage() -> None:
    body = payload("anthropic_web_search")
    expected = Usage(
        input_tokens=12000, cache_read_tokens=2000, output_tokens=400, web_search_calls=3, web_fetch_calls=2
    )
    assert Usage.from_response(body) == expected
    assert Usage.from_response(Message.model_validate(body)) == expected
    assert expected.tool_calls == {"web_search_calls": 3, "web_fetch_calls": 2}


def test_anthropic_iterations_outside_the_top_level_are_passes() -> None:
    """``message`` iterations are what the top-level usage counts; the compaction and the advisor pass
    are billed on top, the advisor on its own model."""
    body = payload("anthropic_iterations")
    usage = Usage.from_response(BetaMessage.model_validate(body))  # (compaction is a beta feature)
    assert Usage.from_response(body) == usage
    assert (usage.input_tokens, usage.output_tokens) == (3000, 150)
    assert usage.passes == (
        Pass("compaction", None, Usage(input_tokens=190000, cache_read_tokens=20000, output_tokens=2000)),
        Pass("advisor_message", "claude-opus-4-1", Usage(input_tokens=4000, output_tokens=300)),
    )
    assert usage.total_input_tokens == 3000  # a pass is a request of its own: it picks no tier here
    assert usage.total_tokens == 3150 + 212000 + 4300


def test_anthropic_fallback_iteration_moves_its_tokens_to_its_model() -> None:
    body = payload("anthropic_iterations")
    body["usage"]["iterations"][3] = {
        "type": "fallback_message", "model": "claude-opus-4-1", "input_tokens": 2000, "output_tokens": 50,
        "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
    }  # fmt: skip
    usage = Usage.from_response(body)
    # (the declined hop's message iteration names no model: a pass of none, which the guard prices at the
    # chain's dearest model; it was left in the top level, priced at the serving model)
    assert (usage.input_tokens, usage.output_tokens) == (0, 0)
    assert usage.passes[1] == Pass("message", None, Usage(1000, output_tokens=100))
    assert usage.passes[-1] == Pass("fallback_message", "claude-opus-4-1", Usage(2000, output_tokens=50))


def test_openai_audio_and_image_tokens_are_their_own_buckets() -> None:
    usage = Usage.from_response(ChatCompletion.model_validate(payload("openai_chat_audio")))
    assert usage == Usage(
        input_tokens=200, output_tokens=100, input_audio_tokens=800, output_audio_tokens=400
    )
    assert (usage.total_input_tokens, usage.total_output_tokens) == (1000, 500)
    images = {
        "input_tokens": 1200,
        "output_tokens": 4160,
        "total_tokens": 5360,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 1150},
        "output_tokens_details": {"text_tokens": 0, "image_tokens": 4160},
    }  # fmt: skip  (an Images API usage, gpt-image-1)
    assert Usage.from_response({"usage": images}) == Usage(
        input_tokens=50, input_image_tokens=1150, output_image_tokens=4160
    )


def test_responses_built_in_tool_calls_are_counted_from_the_output() -> None:
    expected = Usage(
        input_tokens=4000,
        cache_read_tokens=1000,
        output_tokens=700,
        reasoning_tokens=500,
        web_search_calls=2,
        file_search_calls=1,
        code_execution_sessions=2,
        image_generation_calls=1,
    )  # fmt: skip  (three code interpreter calls in two containers: two sessions)
    body = payload("openai_responses_tools")
    assert Usage.from_response(body) == expected
    # built as the SDK client builds it (``construct``, not validated): an SDK release that predates an
    # item's type keeps the item, under a wrong class but with its ``type`` and fields
    assert Usage.from_response(Response.construct(**body)) == expected
    assert Usage.from_response({"type": "response.completed", "response": body}) == expected


def test_inconsistent_audio_counts_are_refused() -> None:
    body = payload("openai_chat_audio")
    body["usage"]["prompt_tokens_details"]["audio_tokens"] = 1001
    with pytest.raises(budgetguard.UsageError, match="exceed the input total"):
        Usage.from_response(body)


# -- reading: streams (the final event), sync and async clients fold the same events ---------------


def anthropic_events(body: JSON) -> list[JSON]:
    """``body`` as Anthropic streams it: ``message_start`` (input counts, one output token), then a
    ``message_delta`` with the cumulative final usage (server tools and iterations included)."""
    usage = body["usage"]
    start = {**copy.deepcopy(body), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": usage["input_tokens"], "output_tokens": 1,
                      "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0)}  # fmt: skip
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Budgets."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": copy.deepcopy(usage)},
        {"type": "message_stop"},
    ]  # fmt: skip


def responses_events(body: JSON) -> list[JSON]:
    started = {**copy.deepcopy(body), "status": "in_progress", "output": [], "usage": None}
    events = [
        {"type": "response.created", "response": started},
        {"type": "response.completed", "response": copy.deepcopy(body)},
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


@pytest.mark.parametrize(
    ("name", "events"),
    [
        ("anthropic_web_search", anthropic_events),
        ("anthropic_iterations", anthropic_events),
        ("openai_responses_tools", responses_events),
    ],
)
def test_streams_fold_every_unit(name: str, events: Any) -> None:
    body = payload(name)
    expected = Usage.from_response(body)
    assert Usage.from_stream(events(body)) == expected
    folder = StreamFolder()
    for event in events(body):
        folder.feed(event)
    assert folder.complete
    assert folder.usage == expected


def test_an_interim_anthropic_delta_keeps_the_tool_counts_it_had() -> None:
    """``message_delta`` counts are cumulative: a later delta without ``server_tool_use`` keeps them."""
    events = anthropic_events(payload("anthropic_web_search"))
    later = copy.deepcopy(events[4])
    later["usage"] = {"output_tokens": 450}
    assert Usage.from_stream([*events[:5], later]).web_search_calls == 3


# -- pricing ---------------------------------------------------------------------------------------


def test_web_search_fees_are_charged_and_web_fetch_is_free() -> None:
    usage = Usage.from_response(payload("anthropic_web_search"))
    assert budgetguard.get_price("claude-sonnet-4-5-20250929").cost_nano(usage) == WEB_SEARCH_NANO


def test_each_pass_is_priced_at_its_model_and_tier_rounded_once() -> None:
    usage = Usage.from_response(payload("anthropic_iterations"))
    price = budgetguard.get_price("claude-sonnet-4-5-20250929")
    assert budgetguard.price_book.cost_nano(price, usage) == ITERATIONS_NANO
    assert price.cost_nano(Usage(3000, output_tokens=150)) == ITERATIONS_TOP_LEVEL_ONLY_NANO
    book = budgetguard.PriceBook(use_data=False)
    book.register("m", input="0.0001")
    # five tokens of 0.1 nano-USD in five parts: 0.5 rounded up once is 1 (once per part would be 5)
    assert book.get("m").cost_nano(Usage(1, passes=(Pass("compaction", None, Usage(1)),) * 4)) == 1


def test_audio_tokens_are_charged_at_the_audio_rates() -> None:
    usage = Usage.from_response(payload("openai_chat_audio"))
    assert budgetguard.get_price("gpt-audio-2025-08-28").cost_nano(usage) == AUDIO_NANO
    assert AUDIO_NANO > 7 * AUDIO_AS_TEXT_NANO  # what charging them as text tokens missed


def test_audio_tokens_without_an_audio_price_are_a_pricing_error() -> None:
    with pytest.raises(PricingError, match="input_audio_tokens") as caught:
        budgetguard.get_price("gpt-4o").cost_nano(Usage(input_tokens=10, input_audio_tokens=5))
    assert "input_audio=" in str(caught.value)
    # the published table fills in what genai-prices lacks: gpt-4o-audio-preview at $40 / $80
    preview = budgetguard.get_price("gpt-4o-audio-preview")
    assert preview.cost_nano(Usage(input_audio_tokens=1000, output_audio_tokens=1000)) == 120_000_000


def test_image_tokens_fall_back_to_the_text_rates() -> None:
    """Vision input is billed as input tokens unless the model has an image rate (gpt-image-1: $10)."""
    assert budgetguard.get_price("gpt-4o").cost_nano(Usage(input_image_tokens=1000)) == 2_500_000
    assert (
        budgetguard.get_price("gpt-image-1").cost_nano(
            Usage(input_tokens=50, input_image_tokens=1150, output_image_tokens=4160)
        )
        == (50 * 5 + 1150 * 10 + 4160 * 40) * 1000
    )


def test_built_in_tools_are_charged_per_call_and_per_session() -> None:
    usage = Usage.from_response(payload("openai_responses_tools"))
    assert budgetguard.get_price("gpt-5").cost_nano(usage) == TOOLS_NANO


def test_a_tool_without_any_price_is_a_pricing_error() -> None:
    with pytest.raises(PricingError, match="web_fetch_calls"):
        budgetguard.get_price("gpt-5").cost_nano(Usage(input_tokens=1, web_fetch_calls=1))


def test_register_price_overrides_a_published_fee(global_prices: budgetguard.PriceBook) -> None:
    usage = Usage(input_tokens=1000, code_execution_sessions=2)
    budgetguard.register_price("claude-sonnet-4-5", input="3", output="15", code_execution="50")
    assert budgetguard.get_price("claude-sonnet-4-5").cost_nano(usage) == (3000 + 2 * 50_000) * 1000
    mine = budgetguard.register_price("claude-internal", input="3", provider="anthropic")
    assert mine.base.web_search == 10  # fees not given: the provider's published ones
    with pytest.raises(TypeError, match="unknown price"):
        budgetguard.register_price("my-model", input="1", web_searches="10")


def test_per_request_fees_are_charged_once_per_call() -> None:
    """genai-prices' ``requests_kcount``: Perplexity's sonar bills $12 per thousand requests."""
    price = budgetguard.get_price("sonar", provider="perplexity")
    assert price.cost_nano(Usage(input_tokens=1000, output_tokens=1000)) == (1000 + 1000 + 12_000) * 1000
    assert (
        budgetguard.estimate(
            {"model": "sonar", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10},
            provider="perplexity",
        ).cost_nano
        >= 12_000_000
    )


# -- the journal form --------------------------------------------------------------------------------


def test_to_dict_round_trips_and_reads_old_entries() -> None:
    usage = Usage.from_response(payload("anthropic_iterations")) + Usage.from_response(
        payload("openai_responses_tools")
    )
    stored = json.loads(json.dumps(usage.to_dict()))  # what a journal keeps
    assert Usage(**stored) == usage
    assert stored["passes"][1] == {"type": "advisor_message", "model": "claude-opus-4-1",
                                   "input_tokens": 4000, "output_tokens": 300}  # fmt: skip
    old = {"input_tokens": 10, "cache_read_tokens": 5, "output_tokens": 7, "reasoning_tokens": 2}
    assert Usage(**old).to_dict() == old  # entries written before these units read (and write) the same
    with pytest.raises(budgetguard.UsageError):
        Usage(passes=[3])  # type: ignore[list-item]
    with pytest.raises(budgetguard.UsageError):
        Usage(web_search_calls=-1)


# -- estimates: the tools' worst case ----------------------------------------------------------------

SEARCH = {"type": "web_search_20250305", "name": "web_search"}
CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
GPT = {"model": "gpt-5", "input": "Hi", "max_output_tokens": 100}


def test_anthropic_max_uses_bounds_the_searches_reserved() -> None:
    plain = budgetguard.estimate({**CLAUDE, "tools": []})
    bounded = budgetguard.estimate({**CLAUDE, "tools": [{**SEARCH, "max_uses": 3}]})
    assert bounded.tool_calls == (("web_search", 3),)
    assert bounded.tools_defaulted == ()
    assert bounded.usage.web_search_calls == 3
    tool_tokens = bounded.input_tokens - plain.input_tokens
    assert bounded.cost_nano - plain.cost_nano == tool_tokens * 3000 + 3 * 10_000_000
    assert bounded.cost_nano == budgetguard.get_price("claude-sonnet-4-5").cost_nano(bounded.usage)


def test_an_unbounded_tool_is_reserved_at_the_configured_default() -> None:
    est = budgetguard.estimate({**CLAUDE, "tools": [SEARCH]})
    assert est.tool_calls == (("web_search", 10),)
    assert est.tools_defaulted == ("web_search",)
    few = Estimator(tool_calls={"web_search": 2})({**CLAUDE, "tools": [SEARCH]})
    assert (few.usage.web_search_calls, few.tools_defaulted) == (2, ("web_search",))
    sonnet = budgetguard.get_price("claude-sonnet-4-5")  # few stays under its 200k-token tier
    assert few.cost_nano == few.input_tokens * 3000 + few.output_tokens * 15_000 + 2 * 10_000_000
    assert est.cost_nano == sonnet.cost_nano(est.usage) > few.cost_nano
    with pytest.raises(budgetguard.ConfigurationError, match="unknown tool"):
        Estimator(tool_calls={"web_searches": 2})


def test_max_tool_calls_bounds_all_built_in_calls_on_the_dearest() -> None:
    tools = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]},
             {"type": "code_interpreter", "container": {"type": "auto"}}]  # fmt: skip
    est = budgetguard.estimate({**GPT, "tools": tools, "max_tool_calls": 4})
    assert dict(est.tool_calls) == {"web_search": 4, "code_execution": 1}  # $10 / 1k > $2.50 / 1k
    assert est.tools_defaulted == ()
    unbounded = budgetguard.estimate({**GPT, "tools": tools})
    assert dict(unbounded.tool_calls) == {"web_search": 10, "file_search": 10, "code_execution": 1}
    # (code execution: one session's fee, and the default count of executions, each feeding a pass)
    assert unbounded.tools_defaulted == ("web_search", "file_search", "code_execution")


def test_audio_output_is_reserved_at_the_audio_rate() -> None:
    request = {"model": "gpt-audio", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100,
               "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}  # fmt: skip
    est = budgetguard.estimate(request)
    assert est.usage.output_audio_tokens == 100
    assert est.cost_nano == est.input_tokens * 2500 + 100 * 64_000
    with pytest.raises(PricingError, match="output_audio"):
        budgetguard.estimate({**request, "model": "gpt-4o"})


def test_anthropic_code_execution_is_one_container_session() -> None:
    """A message with a code execution result ran in a container: one session, at $0.05 an hour with
    a 5-minute minimum ($4.17 per thousand sessions, rounded up), in the body and in the stream."""
    body = payload("anthropic_web_search")
    body["content"][3:3] = [
        {"type": "server_tool_use", "id": "srvtoolu_01C", "name": "bash_code_execution",
         "input": {"command": "python -c 'print(1)'"}},
        {"type": "bash_code_execution_tool_result", "tool_use_id": "srvtoolu_01C",
         "content": {"type": "bash_code_execution_result", "stdout": "1", "stderr": "", "return_code": 0,
                     "content": []}},
    ]  # fmt: skip
    usage = Usage.from_response(body)
    assert usage.code_execution_sessions == 1
    price = budgetguard.get_price("claude-sonnet-4-5-20250929")
    assert price.cost_nano(usage) == WEB_SEARCH_NANO + 4_170_000
    events = anthropic_events(body)
    block = {"type": "content_block_start", "index": 1, "content_block": body["content"][4]}
    streamed = [*events[:4], block, *events[4:]]
    assert Usage.from_stream(streamed) == usage
    folder = StreamFolder()
    for event in streamed:
        folder.feed(event)
    assert folder.usage == usage


def test_advisor_uses_are_reserved_as_passes_on_the_advisor_model() -> None:
    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-1", "max_tokens": 500}
    est = budgetguard.estimate({**CLAUDE, "tools": [{**advisor, "max_uses": 2}]})
    shown = est.input_tokens - est.tool_pass_tokens
    context = shown + est.output_tokens + 2 * 500  # an advisor pass may read the whole conversation
    assert est.passes == (Pass("advisor_message", "claude-opus-4-1", Usage(context, output_tokens=500)),) * 2
    assert est.tool_pass_tokens == context - 500 + context  # the call reads each advice back
    assert est.tools_defaulted == ()
    one_use = context * 15_000 + 500 * 75_000  # claude-opus-4-1: $15 in, $75 out
    call = est.input_tokens * 3000 + est.output_tokens * 15_000  # the call itself: claude-sonnet-4-5
    assert est.cost_nano == call + 2 * one_use
    assert est.cost_nano == budgetguard.price_book.cost_nano("claude-sonnet-4-5", est.usage)
    unbounded = budgetguard.estimate({**CLAUDE, "tools": [advisor]})
    assert (len(unbounded.passes), unbounded.tools_defaulted) == (3, ("advisor",))

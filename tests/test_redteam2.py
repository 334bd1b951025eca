"""Red-team of the hard limit, second pass: what teams really send that was reserved below its bill or
charged below it (Vertex AI's regional endpoints, chat audio history by id, file search results asked
above the default count).

Each test failed on main with the figure its docstring gives (reserved or charged -> billed); the
providers' published prices are constants here, each with its source.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from anthropic import beta_tool

import budgetguard
from budgetguard import Budget, ConfigurationError, Estimator, Guard
from tests.guard.one_call import committed, nano
from tests.guard.payloads import anthropic_message, openai_client, serve
from tests.sdk_http import ANTHROPIC_HTTP
from tests.sdk_payloads import chat_completion

HI = [{"role": "user", "content": "What is a budget?"}]


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    yield made
    made.close()


# -- Vertex AI: a regional endpoint bills Claude Sonnet 4.5 and later 10% above the global one ------------

# https://docs.claude.com/en/docs/build-with-claude/claude-on-vertex-ai#global-vs-regional-endpoints:
# "Starting with Claude Sonnet 4.5 and all future models, Google Vertex AI offers two endpoint types";
# global endpoints have no pricing premium, regional ones "a 10% pricing premium"; older models (Sonnet 4,
# Opus 4 and earlier) keep their pricing. Sonnet 4.5: $3 / $15 per MTok global, $3.30 / $16.50 regional.
SONNET_4_5 = "claude-sonnet-4-5@20250929"
GLOBAL_RATES = ("3", "15")
REGIONAL_RATES = ("3.3", "16.5")


def claude_body(model: str) -> dict[str, Any]:
    body = anthropic_message(
        input_tokens=1000, cache_read_input_tokens=0, cache_creation_input_tokens=0, cache_creation=None,
        output_tokens=200,
    )  # fmt: skip
    body["model"] = model
    return body


def vertex(region: str, model: str) -> tuple[Any, anthropic.AnthropicVertex]:
    api = serve(claude_body(model))
    client = anthropic.AnthropicVertex(
        region=region, project_id="p", access_token="t", max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip
    return api, client


def bill(rates: tuple[str, str]) -> int:
    return nano((1000, rates[0]), (200, rates[1]))


@pytest.mark.parametrize("wrapped", [False, True], ids=["decorated", "wrapped"])
@pytest.mark.parametrize("region", ["us-east5", "europe-west1", "us"])
def test_a_vertex_regional_endpoint_is_charged_and_reserved_its_premium(
    guard: Guard, wrapped: bool, region: str
) -> None:
    """On main: charged $0.006 where Vertex bills $0.0066 (1000 in, 200 out), and reserved at the global
    rates ($0.0150 for 1024 out where the regional worst case is $0.0165)."""
    api, client = vertex(region, SONNET_4_5)
    if wrapped:
        guard.wrap(client).messages.create(model=SONNET_4_5, messages=HI, max_tokens=1024)
    else:
        guard.with_budget(client.messages.create)(model=SONNET_4_5, messages=HI, max_tokens=1024)
    assert f"/locations/{region}/" in api.paths[0]
    entry = committed(guard)
    assert entry.amounts["usd"] == bill(REGIONAL_RATES)
    assert Decimal(entry.data["estimated_usd"]) * 10**9 >= nano((1024, REGIONAL_RATES[1]))


def test_a_decorated_vertex_call_with_an_estimate_hook_keeps_its_premium(guard: Guard) -> None:
    """Before: the location was applied to the request read from the call only, so with ``estimate=`` the
    call was reserved and charged at the global price (6,000,000 nano-USD for a 6,600,000 bill)."""
    api, client = vertex("us-east5", SONNET_4_5)
    request = {"model": SONNET_4_5, "messages": HI, "max_tokens": 1024}
    guard.with_budget(client.messages.create, estimate=lambda **kw: request)(**request)
    assert len(api.paths) == 1
    entry = committed(guard)
    assert entry.amounts["usd"] == bill(REGIONAL_RATES)
    assert Decimal(entry.data["estimated_usd"]) * 10**9 >= nano((1024, REGIONAL_RATES[1]))


@pytest.mark.parametrize("hook", ["dict", "Estimate"])
def test_a_service_function_calling_vertex_says_where_in_its_estimate(guard: Guard, hook: str) -> None:
    """A function that calls ``AnthropicVertex`` inside is no SDK method: its ``estimate=`` names Vertex's
    prices (``google/`` or ``provider="google"``) and the client's region (``inference_geo``), as the
    README says."""
    api, client = vertex("us-east5", SONNET_4_5)

    def answer(question: str) -> Any:
        ask = [{"role": "user", "content": question}]
        return client.messages.create(model=SONNET_4_5, messages=ask, max_tokens=1024)

    def request(question: str) -> dict[str, Any]:
        ask = [{"role": "user", "content": question}]
        return {
            "model": f"google/{SONNET_4_5}",
            "messages": ask,
            "max_tokens": 1024,
            "inference_geo": "us-east5",
        }

    def as_estimate(question: str) -> budgetguard.Estimate:
        return budgetguard.estimate({**request(question), "model": SONNET_4_5}, provider="google")

    guard.with_budget(answer, estimate=request if hook == "dict" else as_estimate)("What is a budget?")
    assert len(api.paths) == 1
    entry = committed(guard)
    assert entry.amounts["usd"] == bill(REGIONAL_RATES)
    assert Decimal(entry.data["estimated_usd"]) * 10**9 >= nano((1024, REGIONAL_RATES[1]))


@pytest.mark.parametrize(
    ("region", "model", "rates"),
    [
        ("global", SONNET_4_5, GLOBAL_RATES),  # the global endpoint: no premium
        ("us-east5", "claude-sonnet-4@20250514", GLOBAL_RATES),  # a model before Sonnet 4.5 keeps its price
        ("us-east5", "claude-3-5-haiku@20241022", ("0.8", "4")),
    ],
)
def test_the_vertex_premium_is_the_regional_endpoints_of_newer_models_only(
    guard: Guard, region: str, model: str, rates: tuple[str, str]
) -> None:
    _, client = vertex(region, model)
    guard.with_budget(client.messages.create)(model=model, messages=HI, max_tokens=1024)
    assert committed(guard).amounts["usd"] == bill(rates)


# -- Chat Completions audio: an earlier audio answer, sent back by id, is read as audio input ------------

# https://platform.openai.com/docs/guides/audio (multi-turn): an assistant message carries a previous
# audio answer as {"audio": {"id": ...}}; the model reads that audio again, billed as audio input
# tokens. https://platform.openai.com/docs/pricing (audio tokens): gpt-4o-audio-preview $40 / M audio
# input ($2.50 / M text), $80 / M audio output; its answers run to 16,384 output tokens.
AUDIO_MODEL = "gpt-4o-audio-preview"
AUDIO_INPUT_RATE, AUDIO_OUTPUT_RATE, LONGEST_ANSWER = "40", "80", 16_384


def audio_chat(**extra: Any) -> dict[str, Any]:
    return {
        "model": AUDIO_MODEL,
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "messages": [
            {"role": "user", "content": "Tell me a story."},
            {"role": "assistant", "audio": {"id": "audio_abc123"}},
            {"role": "user", "content": "Tell it again, slower."},
        ],
        "max_completion_tokens": 100,
        **extra,
    }


def test_an_audio_answer_sent_back_by_id_is_reserved_as_audio_input() -> None:
    """On main: reserved $0.0081 (25 text tokens in, 100 audio tokens out) where reading back one
    answer of 16,384 audio tokens alone bills $0.655."""
    est = budgetguard.estimate(audio_chat())
    assert "audio id" in est.unseen
    least_bill = nano((LONGEST_ANSWER, AUDIO_INPUT_RATE), (100, AUDIO_OUTPUT_RATE))
    assert est.cost_nano >= least_bill, (est.cost, least_bill)
    usage = est.usage  # (what a call without usage is charged: the same worst case)
    assert usage.input_audio_tokens >= LONGEST_ANSWER
    assert budgetguard.price_book.cost_nano(AUDIO_MODEL, usage) == est.cost_nano


def test_the_unseen_audio_bound_is_the_configured_one_where_it_is_lower() -> None:
    shown = budgetguard.estimate(audio_chat(messages=[{"role": "user", "content": "Tell me a story."}]))
    est = Estimator(unseen_tokens=5_000)(audio_chat())
    assert est.usage.input_audio_tokens == 5_000
    assert est.cost_nano >= shown.cost_nano + nano((5_000, AUDIO_INPUT_RATE))
    assert Estimator(unseen_tokens=50_000)(audio_chat()).usage.input_audio_tokens == LONGEST_ANSWER


def spoken_answer(model: str, heard: int) -> dict[str, Any]:
    """A chat completion of ``model`` that heard ``heard`` audio tokens (25 text) and spoke 100."""
    body = chat_completion(
        prompt_tokens=heard + 25, completion_tokens=100, total_tokens=heard + 125,
        prompt_tokens_details={"cached_tokens": 0, "audio_tokens": heard},
        completion_tokens_details={"audio_tokens": 100, "reasoning_tokens": 0},
    )  # fmt: skip
    body["model"] = model
    return body


# https://platform.openai.com/docs/pricing (audio tokens, per M): audio input, then audio output
AUDIO_MODELS = {
    "gpt-4o-audio-preview": ("40", "80"), "gpt-audio": ("32", "64"),
    "gpt-4o-mini-audio-preview": ("10", "20"), "gpt-audio-mini": ("10", "20"),
}  # fmt: skip


@pytest.mark.parametrize("model", sorted(AUDIO_MODELS))
def test_a_follow_up_to_an_audio_answer_fits_a_small_budget(model: str) -> None:
    """Before: one answer by id reserved the whole context window at the audio input rate (127,971
    tokens: $5.20 a turn on gpt-4o-audio-preview, $4.16 on gpt-audio, $1.30 on the mini models), so a
    $2 / day budget could never continue an audio conversation. The id is an earlier answer of an
    audio model: at most its 16,384 output tokens, read back as audio input."""
    rates = AUDIO_MODELS[model]
    api = serve(spoken_answer(model, LONGEST_ANSWER))
    guarded = Guard("memory://", budgets=[Budget("global", usd="2", per="day")])
    try:
        guarded.with_budget(openai_client(api).chat.completions.create)(**audio_chat(model=model))
        entry = committed(guarded)
    finally:
        guarded.close()
    read_back = nano((LONGEST_ANSWER, rates[0]), (100, rates[1]))
    assert Decimal(entry.data["estimated_usd"]) * 10**9 >= read_back
    assert entry.amounts["usd"] >= read_back


def answers_by_id(count: int) -> dict[str, Any]:
    answers = [{"role": "assistant", "audio": {"id": f"audio_{n}"}} for n in range(count)]
    return audio_chat(messages=[{"role": "user", "content": "Tell me a story."}, *answers])


@pytest.mark.parametrize("count", [2, 5])
def test_each_audio_answer_by_id_reserves_one_answer(count: int) -> None:
    est = budgetguard.estimate(answers_by_id(count))
    assert est.usage.input_audio_tokens == count * LONGEST_ANSWER


def test_audio_answers_by_id_are_reserved_up_to_the_context_window() -> None:
    est = budgetguard.estimate(answers_by_id(10))  # (ten answers: more than the 128k window holds)
    assert est.input_tokens == 128_000 and est.usage.input_audio_tokens > 127_000


def test_audio_by_id_of_a_model_without_a_known_max_output_reserves_the_window() -> None:
    book = budgetguard.PriceBook()
    book.register(
        "my-audio", input="2.5", output="10", input_audio="40", output_audio="80", context_window=32_000
    )
    est = Estimator(prices=book)(audio_chat(model="my-audio"))
    assert est.input_tokens == 32_000 and est.usage.input_audio_tokens > 31_900


def test_a_chat_without_audio_by_id_reserves_no_audio_input() -> None:
    est = budgetguard.estimate(audio_chat(messages=[{"role": "user", "content": "Tell me a story."}]))
    assert est.unseen == () and est.usage.input_audio_tokens == 0


# -- Responses file search: a request that asks for more results than the default gets them ---------------

# https://platform.openai.com/docs/api-reference/responses/create (file_search tool): max_num_results
# "between 1 and 50 inclusive"; the default is 20 (gpt-4* models). Files are chunked into 800-token
# chunks by default, and each result is a chunk the next pass reads as input. DEFAULT_TOOL_RESULT_TOKENS'
# file_search (16,000) is the default's 20 chunks.
CHUNK = 800


def file_search(**tool: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4.1",
        "input": "Find the refund policy.",
        "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"], **tool}],
        "max_tool_calls": 1,
        "max_output_tokens": 500,
    }


def test_a_file_search_asking_for_50_results_reserves_50_chunks() -> None:
    """On main: one search's results reserved at 16,000 tokens, where its 50 results of default chunks
    add 40,000 input tokens to the pass that reads them (tool-pass input 16,923 -> 40,923; $0.0412 ->
    $0.0892 reserved)."""
    est = budgetguard.estimate(file_search(max_num_results=50))
    assert est.tool_results == ((50 * CHUNK, 1),)
    assert est.tool_pass_tokens >= 50 * CHUNK


@pytest.mark.parametrize("asked", [None, 5, 20])
def test_a_file_search_at_or_below_the_default_keeps_the_default_results(asked: int | None) -> None:
    tool = {} if asked is None else {"max_num_results": asked}
    assert budgetguard.estimate(file_search(**tool)).tool_results == ((16_000, 1),)


def test_a_larger_file_search_grows_a_configured_result_size_alike() -> None:
    est = Estimator(tool_result_tokens={"file_search": 4_000})(file_search(max_num_results=40))
    assert est.tool_results == ((8_000, 1),)
    unbounded = Estimator(tool_result_tokens={"file_search": None})(file_search(max_num_results=40))
    assert unbounded.tool_results == ((None, 1),)  # (the context window: already the most)


# -- Anthropic's tool runner: one SDK call that sends a request per turn of its loop ---------------------


@beta_tool
def budget_left(team: str) -> str:
    """How much budget a team has left."""
    return "$12"


def claude_turn(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    body = claude_body("claude-sonnet-4-5")
    body.update(content=content, stop_reason=stop)
    return body


def runner_turns() -> Any:
    """Two tool calls, then the answer: three requests, each 1000 in and 200 out ($0.006 at $3 / $15)."""
    calls = [{"type": "tool_use", "id": f"tu_{n}", "name": "budget_left", "input": {"team": n}} for n in "ab"]
    done = claude_turn([{"type": "text", "text": "Team a has $12, team b $12."}], "end_turn")
    return serve(*(claude_turn([call], "tool_use") for call in calls), done)


def anthropic_on(api: Any) -> anthropic.Anthropic:
    http = ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api))
    return anthropic.Anthropic(api_key="k", base_url="http://anthropic.test", max_retries=0, http_client=http)


def async_anthropic_on(api: Any) -> anthropic.AsyncAnthropic:
    http = ANTHROPIC_HTTP.AsyncClient(transport=ANTHROPIC_HTTP.MockTransport(api))
    return anthropic.AsyncAnthropic(
        api_key="k", base_url="http://anthropic.test", max_retries=0, http_client=http
    )


RUNNER_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": HI, "tools": [budget_left], "thread": False,
}  # fmt: skip


@pytest.mark.parametrize("method", ["tool_runner", "thread"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_decorated_tool_runner_is_refused_before_anything_is_sent(
    guard: Guard, asynchronous: bool, method: str
) -> None:
    """On main: the decorator reserved one call ($0.0171) and charged $0.00174 while the runner sent three
    requests billed $0.018, the two after the first unguarded (and as many more as its loop runs); a
    decorated ``thread`` sent nothing, was charged a call's worst case, and every turn it sent later went
    unguarded."""
    api = runner_turns()
    client: Any = async_anthropic_on(api) if asynchronous else anthropic_on(api)
    with pytest.raises(ConfigurationError, match=r"guard\.wrap\(client"):
        guard.with_budget(getattr(client.beta.messages, method))
    assert api.paths == []


def test_a_tool_runner_of_another_resource_is_not_refused_as_a_messages_runner(guard: Guard) -> None:
    """Before: refused by its name alone, with the Messages tool runner's message (sessions' event
    dispatcher, ``beta.sessions.events.tool_runner``, sends no message turns)."""
    events = async_anthropic_on(runner_turns()).beta.sessions.events
    if not hasattr(events, "tool_runner"):
        pytest.skip(f"anthropic {anthropic.__version__} has no beta.sessions.events.tool_runner")
    guard.with_budget(events.tool_runner)


def test_a_tool_runner_on_a_wrapped_client_reserves_and_charges_every_request(guard: Guard) -> None:
    api = runner_turns()
    for _ in guard.wrap(anthropic_on(api)).beta.messages.tool_runner(**RUNNER_REQUEST):
        pass
    assert len(api.paths) == 3
    entries = guard.ledger.history(events=["committed"])
    assert [entry.amounts["usd"] for entry in entries] == [bill(GLOBAL_RATES)] * 3


def test_a_threaded_tool_runner_on_a_wrapped_client_reserves_and_charges_every_turn(guard: Guard) -> None:
    """The runner's default: a server-held thread, each turn after the first sending its new messages
    alone (``thread={"type": "continue", ...}``): the history it reads is reserved as unseen input."""
    api = runner_turns()
    threaded = {key: value for key, value in RUNNER_REQUEST.items() if key != "thread"}
    for _ in guard.wrap(anthropic_on(api)).beta.messages.tool_runner(**threaded):
        pass
    assert [request["thread"]["type"] for request in api.requests] == ["create", "continue", "continue"]
    entries = guard.ledger.history(events=["committed"])
    assert [entry.amounts["usd"] for entry in entries] == [bill(GLOBAL_RATES)] * 3
    assert [entry.data.get("unseen") for entry in entries] == [None, ["thread"], ["thread"]]


# -- an interrupted chat stream that speaks: its audio is billed, and in no text delta --------------------

TRANSCRIPT = "Once upon a time, a team set a budget and kept to it, call after call. " * 20


def spoken_stream(**request: Any) -> Iterator[dict[str, Any]]:
    """A gpt-4o-audio-preview chat stream (audio output, pcm16) cut mid-answer: its transcript and
    audio were delivered (``delta.audio``), its content is empty, and no usage chunk came."""
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-audio-preview-2024-12-17",
    }
    yield {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
    for i in range(0, len(TRANSCRIPT), 50):
        audio = {"id": "audio_1", "transcript": TRANSCRIPT[i : i + 50]}
        yield {**chunk, "choices": [{"index": 0, "delta": {"audio": audio}}]}
        yield {**chunk, "choices": [{"index": 0, "delta": {"audio": {"data": "AAAAAAAAAAAAAAAA" * 64}}}]}
    raise ConnectionError("the connection dropped")


def test_an_interrupted_spoken_chat_stream_is_charged_its_audio() -> None:
    """On main: charged the input alone ($0.00003): the 381 transcript tokens it spoke (and the audio
    tokens of that speech, at least as many, at $80 / M: $0.034 at the least) went uncharged."""
    events: list[Any] = []
    guarded = Guard("memory://", budgets=[Budget("global", usd="5", per="day")], on_event=events.append)
    send = guarded.with_budget(spoken_stream)
    request = audio_chat(messages=HI, stream=True, max_completion_tokens=2000)
    stream = send(**request)
    with pytest.raises(ConnectionError):
        list(stream)
    stream.close()
    (entry,) = guarded.ledger.history(events=["committed"])
    assert entry.data["usage_missing"] is True and entry.data["audio_worst_case"] is True
    spoken = budgetguard.count_text_tokens(TRANSCRIPT, AUDIO_MODEL)
    least = nano((spoken, "10"), (spoken, AUDIO_OUTPUT_RATE))  # its transcript as text, its speech as audio
    assert entry.amounts["usd"] >= least, (entry.amounts["usd"], least)
    est = budgetguard.estimate(request)
    assert entry.amounts["usd"] == est.cost_nano  # (the speech is not counted: its bound, at the audio rate)

"""Red-team of the hard limit, third pass: LangChain runs reserved below the request ChatOpenAI sends
(audio output, a chat search's context size, a conversation's history) and charged below a broken
stream's bill (a model that reasons unseen); streams that ended without their usage charged without
what they streamed (chat ``refusal`` and legacy ``function_call`` deltas, Claude's compaction summary).

Each test failed on main with the figure its docstring gives (reserved or charged -> billed); the
providers' published prices are constants here, each with its source.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from budgetguard import Budget, Guard
from budgetguard._tokens import count_text_tokens
from budgetguard.integrations.langchain import BudgetCallbackHandler
from tests.guard.one_call import committed, nano
from tests.guard.payloads import (
    ScriptedAPI,
    anthropic_client,
    chat_completion,
    chat_stream_chunks,
    cut_stream,
    openai_client,
    openai_sse,
    response,
    responses_stream_events,
    serve,
)
from tests.sdk_http import ANTHROPIC_STREAM_CUT, OPENAI_HTTP, OPENAI_STREAM_CUT
from tests.sdk_payloads import anthropic_sse

ASK = [HumanMessage("Tell me about budgets.")]
HI = [{"role": "user", "content": "Tell me about budgets."}]


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
    yield made
    made.close()


def chat_openai(api: ScriptedAPI, model: str, **settings: Any) -> ChatOpenAI:
    """langchain-openai's real ChatOpenAI, on the real openai SDK, on a scripted transport."""
    client = OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(api))
    return ChatOpenAI(  # type: ignore[call-arg]
        model=model, api_key="sk-test", base_url="http://openai.test/v1", max_retries=0, http_client=client,
        **settings,
    )  # fmt: skip


def run(guard: Guard, model: ChatOpenAI, *, stream: bool = False) -> None:
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="alice")]}
    if stream:
        for _ in model.stream(ASK, config=config):
            pass
    else:
        model.invoke(ASK, config=config)


def reserved_usd(guard: Guard) -> Decimal:
    return Decimal(committed(guard).data["estimated_usd"])


def charged_usd(guard: Guard) -> Decimal:
    return Decimal(committed(guard).amounts["usd"]) / 10**9


# -- LangChain: the request ChatOpenAI sends, reserved as sent ------------------------------------------

# https://platform.openai.com/docs/pricing (gpt-4o-audio-preview): text $2.50 in / $10 out, audio out $80
# per MTok. A reply that speaks its whole max_tokens bills its audio at $80.
AUDIO_MODEL = "gpt-4o-audio-preview"


def spoken_completion(audio_tokens: int, text_tokens: int) -> dict[str, Any]:
    body = chat_completion(
        prompt_tokens=12, completion_tokens=audio_tokens + text_tokens,
        total_tokens=12 + audio_tokens + text_tokens,
        prompt_tokens_details={"cached_tokens": 0, "audio_tokens": 0},
        completion_tokens_details={"reasoning_tokens": 0, "audio_tokens": audio_tokens},
    )  # fmt: skip
    body["model"] = AUDIO_MODEL
    body["choices"][0]["message"]["audio"] = {
        "id": "audio_1", "data": "UklGRg==", "expires_at": 1741570283, "transcript": "Budgets are plans.",
    }  # fmt: skip
    return body


def test_a_langchain_model_that_speaks_is_reserved_its_audio_output(guard: Guard) -> None:
    """On main: ``modalities`` / ``audio`` (ChatOpenAI's ``model_kwargs``) were dropped from the run's
    request, so its 2,000 output tokens were reserved at the text rate, $0.0200, where a reply that
    speaks them bills $0.153 (1,900 audio tokens at $80 / M): charged above its reservation."""
    api = serve(spoken_completion(audio_tokens=1900, text_tokens=100))
    speaking = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
    run(guard, chat_openai(api, AUDIO_MODEL, max_tokens=2000, model_kwargs=speaking))
    assert api.requests[0]["modalities"] == ["text", "audio"]
    assert charged_usd(guard) == Decimal(nano((12, "2.5"), (100, "10"), (1900, "80"))) / 10**9
    assert reserved_usd(guard) >= Decimal(nano((12, "2.5"), (2000, "80"))) / 10**9


# https://platform.openai.com/docs/pricing#built-in-tools: gpt-4o-search-preview's search is $30 / $35 /
# $50 per 1k calls at search_context_size low / medium / high; tokens $2.50 / $10 per MTok.
SEARCH_MODEL = "gpt-4o-search-preview"


def test_a_langchain_search_model_is_charged_its_search_context_size(guard: Guard) -> None:
    """On main: ``web_search_options`` was dropped from the run's request, so a search asked at
    ``"high"`` was reserved and charged at the default medium fee: $0.0355 charged for a $0.0505 bill."""
    body = chat_completion(
        prompt_tokens=11, completion_tokens=50, total_tokens=61,
        prompt_tokens_details={"cached_tokens": 0, "audio_tokens": 0},
    )  # fmt: skip
    body["model"] = SEARCH_MODEL
    api = serve(body)
    options = {"web_search_options": {"search_context_size": "high"}}
    run(guard, chat_openai(api, SEARCH_MODEL, max_tokens=300, model_kwargs=options))
    assert api.requests[0]["web_search_options"] == {"search_context_size": "high"}
    bill = Decimal(nano((11, "2.5"), (50, "10"))) / 10**9 + Decimal("0.05")
    assert charged_usd(guard) == bill
    assert reserved_usd(guard) >= bill


@pytest.mark.parametrize(
    "state", [{"conversation": "conv_123"}, {"prompt": {"id": "pmpt_123"}}], ids=["conversation", "prompt"]
)
def test_a_langchain_run_on_server_side_input_reserves_it(guard: Guard, state: dict[str, Any]) -> None:
    """On main: ``conversation`` / ``prompt`` were dropped from the run's request, so a Responses call
    reading a 200k-token conversation (or stored prompt) was reserved $0.0161 (its new message and
    output) and charged $0.4008 (gpt-4.1: $2 / $8 per MTok)."""
    body = response()
    body["model"] = "gpt-4.1-2025-04-14"
    body["usage"] = {
        "input_tokens": 200_000, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 100, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 200_100,
    }  # fmt: skip
    api = serve(body)
    run(guard, chat_openai(api, "gpt-4.1", max_tokens=2000, use_responses_api=True, model_kwargs=state))
    assert state.keys() <= api.requests[0].keys()
    assert charged_usd(guard) == Decimal(nano((200_000, "2"), (100, "8"))) / 10**9
    assert reserved_usd(guard) >= charged_usd(guard)


def test_a_langchain_run_with_extra_body_is_reserved_as_sent(guard: Guard) -> None:
    """On main: ChatOpenAI's ``extra_body`` (which the SDK merges over the request) was dropped from the
    run's request: ``extra_body={"n": 3}`` sent three 500-token choices on one choice's reservation,
    $0.0050 reserved for a $0.0150 bill (gpt-4o: $2.50 / $10 per MTok)."""
    body = chat_completion(
        prompt_tokens=9, completion_tokens=1500, total_tokens=1509,
        prompt_tokens_details={"cached_tokens": 0, "audio_tokens": 0},
    )  # fmt: skip
    body["choices"] = [{**copy.deepcopy(body["choices"][0]), "index": i} for i in range(3)]
    api = serve(body)
    run(guard, chat_openai(api, "gpt-4o", max_tokens=500, extra_body={"n": 3}))
    assert api.requests[0]["n"] == 3
    assert charged_usd(guard) == Decimal(nano((9, "2.5"), (1500, "10"))) / 10**9
    assert reserved_usd(guard) >= charged_usd(guard)


# -- LangChain: a broken stream is charged as the guard charges any ----------------------------------


def gpt5_stream() -> str:
    chunks = chat_stream_chunks(include_usage=True)
    for chunk in chunks:
        chunk["model"] = "gpt-5-2025-08-07"
    return openai_sse(chunks)


def test_a_langchain_stream_of_a_hidden_reasoner_cut_off_is_charged_its_output_bound(guard: Guard) -> None:
    """On main: a gpt-5 stream cut after its first words was charged its input and those words,
    $0.00007, through LangChain, where ``guard.wrap`` charges the same cut stream its output bound,
    $0.0400: gpt-5 reasons before it answers, unseen, and bills its reasoning ($10 / M, 4,000 tokens)."""
    api = serve(cut_stream(gpt5_stream(), after_events=3))
    with pytest.raises(OPENAI_STREAM_CUT):
        run(guard, chat_openai(api, "gpt-5", max_tokens=4000, stream_usage=True), stream=True)
    langchain = charged_usd(guard)

    wrapped = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    try:
        client = wrapped.wrap(openai_client(serve(cut_stream(gpt5_stream(), after_events=3))))
        with pytest.raises(OPENAI_STREAM_CUT):
            for _ in client.chat.completions.create(
                model="gpt-5", messages=HI, max_completion_tokens=4000, stream=True
            ):
                pass
        assert langchain == charged_usd(wrapped)
    finally:
        wrapped.close()
    assert langchain >= Decimal(nano((4000, "10"))) / 10**9


def tool_call_stream() -> str:
    """A gpt-4o chat stream that calls a tool, its arguments in three deltas (and no usage yet)."""
    role, *_ = chat_chunks({"role": "assistant", "content": None}, "tool_calls")
    third = len(ARGUMENTS) // 3 + 1
    calls = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "report", "arguments": ""}}
    ]
    calls += [
        {"index": 0, "function": {"arguments": ARGUMENTS[at : at + third]}}
        for at in range(0, len(ARGUMENTS), third)
    ]
    chunks = [role]
    for call in calls:
        chunks.append(copy.deepcopy(role))
        chunks[-1]["choices"][0]["delta"] = {"tool_calls": [call]}
    return openai_sse(chunks, done=False)


def test_a_langchain_stream_cut_in_a_tool_call_is_charged_its_arguments(guard: Guard) -> None:
    """On main: a LangChain stream cut while gpt-4o wrote a tool call's arguments (1,674 tokens) counted
    the message text alone, none: the run was charged as a failed call, its input ($0.00009), where the
    arguments bill $0.0167 ($10 / M); ``guard.wrap`` charges them (the ``tool_calls`` deltas)."""
    api = serve(cut_stream(tool_call_stream(), after_events=5))
    tools = [{"type": "function", "function": {"name": "report", "parameters": {"type": "object"}}}]
    model = chat_openai(api, "gpt-4o", max_tokens=4000, stream_usage=True).bind_tools(tools)
    with pytest.raises(OPENAI_STREAM_CUT):
        run(guard, model, stream=True)  # type: ignore[arg-type]
    written = Decimal(nano((count_text_tokens(ARGUMENTS, "gpt-4o"), "10"))) / 10**9
    assert charged_usd(guard) >= written


def test_a_langchain_background_stream_cut_off_is_charged_its_worst_case(guard: Guard) -> None:
    """On main: a Responses stream with ``background=True`` (``model_kwargs``) cut after its first words
    was charged its input and those words through LangChain, $0.00009, where a background response runs
    on to its end server-side and bills it whole: ``guard.wrap`` charges its worst case, $0.0321 (gpt-4.1,
    4,000 output tokens at $8 / M)."""
    events = responses_stream_events()
    for event in events:
        if "response" in event:
            event["response"]["model"] = "gpt-4.1-2025-04-14"
    api = serve(cut_stream(openai_sse(events, done=False), after_events=3))
    settings = {"background": True}
    model = chat_openai(api, "gpt-4.1", max_tokens=4000, use_responses_api=True, model_kwargs=settings)
    with pytest.raises(OPENAI_STREAM_CUT):
        run(guard, model, stream=True)
    assert api.requests[0]["background"] is True
    assert charged_usd(guard) == reserved_usd(guard) >= Decimal(nano((4000, "8"))) / 10**9


# -- streams that end without usage: what they streamed, charged ----------------------------------------

ARGUMENTS = json.dumps(
    {"rows": [{"month": m, "spent": m * 113, "note": "rent and food " * 3} for m in range(60)]}
)
REFUSAL = "I can't help with moving money between these accounts without their owners' consent. " * 20


def chat_chunks(delta: dict[str, Any], finish: str) -> list[dict[str, Any]]:
    base = chat_stream_chunks(include_usage=False)[0]
    role = copy.deepcopy(base)
    role["choices"][0]["delta"] = {"role": "assistant", "content": None}
    body, end = copy.deepcopy(base), copy.deepcopy(base)
    body["choices"][0]["delta"] = delta
    end["choices"][0].update(delta={}, finish_reason=finish)
    return [role, body, end]


@pytest.mark.parametrize(
    ("delta", "written"),
    [
        ({"function_call": {"name": "report", "arguments": ARGUMENTS}}, ARGUMENTS),
        ({"refusal": REFUSAL}, REFUSAL),
    ],
    ids=["function_call", "refusal"],
)
def test_a_chat_stream_without_usage_is_charged_what_it_wrote(delta: dict[str, Any], written: str) -> None:
    """On main: a chat stream that asked for no usage (``include_usage: False``) was charged its input
    and its ``content`` and ``tool_calls`` deltas only: the arguments of a legacy ``functions=`` call
    (``delta.function_call``, 1,674 tokens) and a structured-output refusal (``delta.refusal``, 301
    tokens) were charged $0 ($0.0167 / $0.0030 billed at gpt-4o's $10 / M output)."""
    guard = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    try:
        finish = "function_call" if "function_call" in delta else "stop"
        client = guard.wrap(openai_client(serve(openai_sse(chat_chunks(delta, finish)))))
        functions = [{"name": "report", "parameters": {"type": "object", "properties": {}}}]
        for _ in client.chat.completions.create(
            model="gpt-4o", messages=HI, max_tokens=4000, stream=True, functions=functions,
            stream_options={"include_usage": False},
        ):  # fmt: skip
            pass
        assert committed(guard).data["usage_missing"] is True
        written_usd = Decimal(nano((count_text_tokens(written, "gpt-4o"), "10"))) / 10**9
        assert charged_usd(guard) >= written_usd
    finally:
        guard.close()


# A compaction pass (``context_management`` ``compact_*`` edit) streams its summary in ``compaction_delta``
# blocks: its output, billed at the model's output rate (Sonnet 4.6: $3 in, $0.30 cache reads, $15 out).
SUMMARY = "The user pasted a long ledger of monthly spending and asked for a summary by category. " * 40


def compaction_events() -> list[dict[str, Any]]:
    start = {
        "type": "message", "id": "msg_1", "role": "assistant", "model": "claude-sonnet-4-6", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 100, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 55_096,
                  "output_tokens": 7, "service_tier": "standard"},
    }  # fmt: skip
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "compaction", "content": None}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "compaction_delta", "content": SUMMARY},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ]


def test_a_claude_stream_cut_after_its_compaction_is_charged_the_summary() -> None:
    """On main: a Claude stream cut after its compaction pass streamed a 681-token summary (by tiktoken)
    was charged the 7 output tokens of ``message_start`` ($0.0169 for input and output), where the
    summary alone bills $0.0102 ($15 / M): $0.0270 at the least."""
    guard = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    try:
        edits = [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 50_000}}]
        client = guard.wrap(anthropic_client(serve(cut_stream(anthropic_sse(compaction_events()), 5))))
        with pytest.raises(ANTHROPIC_STREAM_CUT):
            for _ in client.beta.messages.create(
                model="claude-sonnet-4-6", messages=HI, max_tokens=4096, stream=True,
                context_management={"edits": edits},
            ):  # fmt: skip
                pass
        summary = count_text_tokens(SUMMARY, "claude-sonnet-4-6")
        bill = Decimal(nano((100, "3"), (55_096, "0.3"), (summary, "15"))) / 10**9
        assert charged_usd(guard) >= bill
    finally:
        guard.close()

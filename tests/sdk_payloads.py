"""Realistic provider payloads (JSON bodies and SSE streams) and real SDK clients that are served them.

The shapes follow the providers' API references: OpenAI chat completions (with ``prompt_tokens_details``
and ``completion_tokens_details``), chat streams with ``stream_options.include_usage`` (the usage rides on
a last chunk with no choices), the Responses API, Anthropic messages (``cache_creation`` with the
5-minute / 1-hour split) and Anthropic streams (``message_start`` then cumulative ``message_delta``).
Every function returns a fresh copy, so tests may mutate what they get.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai

from tests.sdk_http import ANTHROPIC_HTTP, OPENAI_HTTP, http_for

JSON = dict[str, Any]

# -- OpenAI chat completions -------------------------------------------------------------------

_CHAT_COMPLETION: JSON = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Budgets are plans for money.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def chat_completion(**usage_overrides: Any) -> JSON:
    """A gpt-4o chat completion: 2006 prompt tokens of which 1920 cached, 300 completion tokens."""
    body = copy.deepcopy(_CHAT_COMPLETION)
    body["usage"].update(usage_overrides)
    return body


def reasoning_chat_completion() -> JSON:
    """An o3-mini completion: 1500 prompt (1024 cached), 2048 completion of which 1792 reasoning."""
    body = copy.deepcopy(_CHAT_COMPLETION)
    body["model"] = "o3-mini-2025-01-31"
    body["usage"] = {
        "prompt_tokens": 1500,
        "completion_tokens": 2048,
        "total_tokens": 3548,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 1792,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    return body


def chat_stream_chunks(*, include_usage: bool = True) -> list[JSON]:
    """The chunks of a gpt-4o chat stream; with include_usage the last one has no choices, only usage."""
    base = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_fc9f1d7035",
        "service_tier": "default",
    }
    extra = {"usage": None} if include_usage else {}
    deltas: list[tuple[JSON, str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None),
        ({"content": "Budgets"}, None),
        ({"content": " are plans."}, None),
        ({}, "stop"),
    ]
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
        for delta, finish in deltas
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": copy.deepcopy(_CHAT_COMPLETION["usage"])})
    return chunks


# -- OpenAI Responses API ----------------------------------------------------------------------


def response(*, status: str = "completed", with_usage: bool = True) -> JSON:
    """An o4-mini Responses API response: 5000 input (4096 cached), 1200 output of which 1024 reasoning."""
    body: JSON = {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": "You are terse.",
        "max_output_tokens": None,
        "model": "o4-mini-2025-04-16",
        "output": [
            {"type": "reasoning", "id": "rs_67ccd2bf17f0819081ff3bb2cf6508e6", "summary": []},
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Plans for money.", "annotations": []}],
            },
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 5000,
            "input_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 0},
            "output_tokens": 1200,
            "output_tokens_details": {"reasoning_tokens": 1024},
            "total_tokens": 6200,
        },
        "user": None,
        "metadata": {},
    }
    if not with_usage:
        body["usage"] = None
    return body


def responses_stream_events() -> list[JSON]:
    """``response.created`` (no usage yet), text deltas, then ``response.completed`` with the usage."""
    in_progress = response(status="in_progress", with_usage=False)
    in_progress["output"] = []
    return [
        {"type": "response.created", "sequence_number": 0, "response": in_progress},
        {"type": "response.in_progress", "sequence_number": 1, "response": copy.deepcopy(in_progress)},
        {
            "type": "response.output_text.delta",
            "sequence_number": 2,
            "item_id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
            "output_index": 1,
            "content_index": 0,
            "delta": "Plans for money.",
            "logprobs": [],
        },
        {"type": "response.completed", "sequence_number": 3, "response": response()},
    ]


# -- Anthropic ---------------------------------------------------------------------------------

_ANTHROPIC_MESSAGE: JSON = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Budgets are plans for money."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500},
        "output_tokens": 503,
        "service_tier": "standard",
    },
}


def anthropic_message(**usage_overrides: Any) -> JSON:
    """A Claude message: 50 uncached input, 10000 cache reads, 2000 cache writes (1500 5m + 500 1h)."""
    body = copy.deepcopy(_ANTHROPIC_MESSAGE)
    body["usage"].update(usage_overrides)
    return body


def anthropic_stream_events(*, final_delta_usage: JSON | None = None) -> list[JSON]:
    """A Claude stream: message_start with the input counts, then two *cumulative* message_deltas.

    The first delta reports 15 output tokens, the last 503: the true output is 503, not 518.
    """
    start = anthropic_message(output_tokens=1)
    start["content"] = []
    start["stop_reason"] = None
    last_usage = final_delta_usage or {
        "input_tokens": 50,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
        "output_tokens": 503,
    }
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Budgets"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": None, "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " are plans."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": last_usage,
        },
        {"type": "message_stop"},
    ]


# -- wire formats and real clients --------------------------------------------------------------


def openai_sse(events: list[JSON], *, done: bool = True) -> str:
    """OpenAI's SSE framing: ``data: {json}`` per chunk; chat streams end with ``data: [DONE]``."""
    body = "".join(
        (f"event: {e['type']}\n" if "type" in e else "") + f"data: {json.dumps(e)}\n\n" for e in events
    )
    return body + ("data: [DONE]\n\n" if done else "")


def anthropic_sse(events: list[JSON]) -> str:
    """Anthropic's SSE framing: ``event: <type>`` then ``data: {json}``."""
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


Handler = Callable[[Any], Any]
"""A MockTransport handler of the SDK's ``httpx`` module (``tests.sdk_http``)."""


class FakeAPI:
    """An httpx MockTransport handler serving one canned body per path, recording the requests."""

    def __init__(self, routes: dict[str, JSON | str]) -> None:
        self.routes = routes
        self.requests: list[JSON] = []

    def __call__(self, request: Any) -> Any:
        http = http_for(request)
        self.requests.append(json.loads(request.content) if request.content else {})
        body = self.routes.get(request.url.path)
        if body is None:
            return http.Response(404, json={"error": {"message": f"no route {request.url.path}"}})
        if isinstance(body, str):
            return http.Response(200, headers={"content-type": "text/event-stream"}, text=body)
        return http.Response(200, json=body)


def openai_client(handler: Handler) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://openai.test/v1",
        api_key="x",
        max_retries=0,
        http_client=OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(handler)),
    )


def anthropic_client(handler: Handler) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url="http://anthropic.test",
        api_key="x",
        max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(handler)),
    )

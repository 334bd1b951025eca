"""Scripted provider APIs, real SDK clients on them, and the usage / cost each canned payload implies.

The usages below are written out by hand from the payloads in ``tests.sdk_payloads`` (not read back
through ``Usage.from_response``), so a test that compares the ledger with ``nano(model, usage)`` checks
the guard's reading of the response as well as its arithmetic. ``HAND_COSTS`` pins the same numbers in
dollars from the providers' published per-million prices.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from types import ModuleType
from typing import Any

import anthropic
import openai

import budgetguard
from budgetguard import Usage
from tests.sdk_http import ANTHROPIC_HTTP, OPENAI_HTTP, http_for
from tests.sdk_payloads import (
    anthropic_message,
    anthropic_sse,
    anthropic_stream_events,
    chat_completion,
    chat_stream_chunks,
    openai_sse,
    reasoning_chat_completion,
    response,
    responses_stream_events,
)

__all__ = [
    "anthropic_message",
    "anthropic_sse",
    "anthropic_stream_events",
    "chat_completion",
    "chat_stream_chunks",
    "openai_sse",
    "reasoning_chat_completion",
    "response",
    "responses_stream_events",
]

JSON = dict[str, Any]

# -- requests ----------------------------------------------------------------------------------

MESSAGES: list[JSON] = [{"role": "user", "content": "What is a budget? Answer in one sentence."}]
CLAUDE_SYSTEM: list[JSON] = [
    {
        "type": "text",
        "text": "You are a terse assistant for a personal finance app. " * 40,
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
]


def chat_request(model: str = "gpt-4o", **extra: Any) -> JSON:
    return {"model": model, "messages": copy.deepcopy(MESSAGES), "max_tokens": 300, **extra}


def claude_request(model: str = "claude-sonnet-4-6", **extra: Any) -> JSON:
    return {
        "model": model,
        "system": copy.deepcopy(CLAUDE_SYSTEM),
        "messages": copy.deepcopy(MESSAGES),
        "max_tokens": 1024,
        **extra,
    }


# -- usages written out from the payloads (disjoint buckets) -----------------------------------

GPT4O_USAGE = Usage(input_tokens=2006 - 1920, cache_read_tokens=1920, output_tokens=300)
"""``chat_completion()``: 2006 prompt tokens of which 1920 cached, 300 completion tokens."""

O3_MINI_USAGE = Usage(
    input_tokens=1500 - 1024, cache_read_tokens=1024, output_tokens=2048, reasoning_tokens=1792
)
"""``reasoning_chat_completion()``: 1500 prompt (1024 cached), 2048 completion of which 1792 reasoning."""

O4_MINI_USAGE = Usage(
    input_tokens=5000 - 4096, cache_read_tokens=4096, output_tokens=1200, reasoning_tokens=1024
)
"""``response()``: 5000 input (4096 cached), 1200 output of which 1024 reasoning."""

CLAUDE_USAGE = Usage(
    input_tokens=50,
    cache_read_tokens=10000,
    cache_write_tokens=1500,
    cache_write_1h_tokens=500,
    output_tokens=503,
)
"""``anthropic_message()``: 50 uncached, 10000 cache reads, 1500 5-minute + 500 1-hour writes, 503 out."""

HAND_COSTS: dict[tuple[str, Usage], Decimal] = {
    # 86 x $2.50 + 1920 x $1.25 + 300 x $10.00 per million
    ("gpt-4o", GPT4O_USAGE): Decimal("0.005615"),
    # 86 x $0.15 + 1920 x $0.075 + 300 x $0.60 per million
    ("gpt-4o-mini", GPT4O_USAGE): Decimal("0.0003369"),
    # 476 x $1.10 + 1024 x $0.55 + 2048 x $4.40 per million
    ("o3-mini", O3_MINI_USAGE): Decimal("0.010098"),
    # 50 x $3 + 10000 x $0.30 + 1500 x $3.75 + 500 x $6 + 503 x $15 per million
    ("claude-sonnet-4-6", CLAUDE_USAGE): Decimal("0.01932"),
}


def nano(model: str, usage: Usage) -> int:
    """The cost of ``usage`` on ``model`` in nano-USD, from the price book (rounded up)."""
    return budgetguard.get_price(model).cost_nano(usage)


def input_nano(model: str, request: JSON) -> int:
    """What a failed-but-maybe-billed attempt is charged: the request's estimated input."""
    est = budgetguard.estimate(request)
    usage = Usage(
        input_tokens=est.input_tokens if est.cache_write is None else 0,
        cache_write_tokens=est.input_tokens if est.cache_write == "5m" else 0,
        cache_write_1h_tokens=est.input_tokens if est.cache_write == "1h" else 0,
    )
    return nano(model, usage)


def exact_completion(request: JSON, model_id: str = "gpt-4o-2024-08-06") -> JSON:
    """A chat completion whose usage is exactly the request's worst case (so actual == estimate)."""
    est = budgetguard.estimate(request)
    body = chat_completion(
        prompt_tokens=est.input_tokens,
        completion_tokens=est.output_tokens,
        total_tokens=est.input_tokens + est.output_tokens,
        prompt_tokens_details={"cached_tokens": 0, "audio_tokens": 0},
    )
    body["model"] = model_id
    return body


def small_completion(prompt_tokens: int, completion_tokens: int) -> JSON:
    return chat_completion(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details={"cached_tokens": 0, "audio_tokens": 0},
    )


def mini_completion() -> JSON:
    body = chat_completion()
    body["model"] = "gpt-4o-mini-2024-07-18"
    return body


# -- a scripted API --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: JSON | str | Callable[[ModuleType], Iterator[bytes]] | None = None
    """A JSON body, an SSE text, or a function of the client's ``httpx`` module returning the chunks of a
    streamed body."""
    raise_: Callable[[ModuleType], Exception] | None = None
    """A function of the client's ``httpx`` module returning the transport error to raise."""
    before: Callable[[], None] | None = None
    """Runs when this reply is served (e.g. to change the ledger while a request is in flight)."""


def ok(body: JSON | str) -> Reply:
    return Reply(200, body)


def fail(status: int, message: str = "upstream error", **kw: Any) -> Reply:
    kinds = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}
    kind = kinds.get(status, "api_error")
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message, "code": None}}, **kw)


def timeout() -> Reply:
    return Reply(raise_=lambda http: http.ReadTimeout("the upstream took too long"))


@dataclass
class ScriptedAPI:
    """A MockTransport handler: serves ``script`` in order (the last reply repeats) and records bodies."""

    script: list[Reply]
    requests: list[JSON] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, request: Any) -> Any:
        http = http_for(request)
        with self._lock:
            self.requests.append(json.loads(request.content) if request.content else {})
            self.paths.append(request.url.path)
            index = min(len(self.requests) - 1, len(self.script) - 1)
            reply = self.script[index]
        if reply.before is not None:
            reply.before()
        if reply.raise_ is not None:
            raise reply.raise_(http)
        if callable(reply.body):
            return http.Response(
                reply.status, headers={"content-type": "text/event-stream"}, content=reply.body(http)
            )
        if isinstance(reply.body, str):
            return http.Response(reply.status, headers={"content-type": "text/event-stream"}, text=reply.body)
        return http.Response(reply.status, json=reply.body)


def cut_stream(sse: str, after_events: int) -> Callable[[ModuleType], Iterator[bytes]]:
    """A streamed body that sends ``after_events`` SSE events and then loses the connection."""
    events = [part + "\n\n" for part in sse.split("\n\n") if part]

    def chunks(http: ModuleType) -> Iterator[bytes]:
        for event in events[:after_events]:
            yield event.encode()
        raise http.ReadError("connection reset by peer")

    return chunks


def embedding_response(model: str, prompt_tokens: int, vectors: int = 2) -> JSON:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.0023064255, -0.009327292, 0.015797347]}
            for i in range(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def serve(*script: Reply | JSON | str) -> ScriptedAPI:
    return ScriptedAPI([item if isinstance(item, Reply) else ok(item) for item in script])


# -- real SDK clients on a handler ----------------------------------------------------------------


def openai_client(handler: ScriptedAPI, *, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://openai.test/v1",
        api_key="sk-test",
        max_retries=max_retries,
        http_client=OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(handler)),
    )


def async_openai_client(handler: ScriptedAPI, *, max_retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://openai.test/v1",
        api_key="sk-test",
        max_retries=max_retries,
        http_client=OPENAI_HTTP.AsyncClient(transport=OPENAI_HTTP.MockTransport(handler)),
    )


def anthropic_client(handler: ScriptedAPI, *, max_retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url="http://anthropic.test",
        api_key="sk-ant-test",
        max_retries=max_retries,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(handler)),
    )


def async_anthropic_client(handler: ScriptedAPI, *, max_retries: int = 0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url="http://anthropic.test",
        api_key="sk-ant-test",
        max_retries=max_retries,
        http_client=ANTHROPIC_HTTP.AsyncClient(transport=ANTHROPIC_HTTP.MockTransport(handler)),
    )

"""The local mock provider speaks to the real SDK clients with the usage the real services would report."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

import budgetguard
from budgetguard import Usage
from budgetguard.testing import MockProvider
from tests.sdk_http import OPENAI_STREAM_CUT

LONG_SYSTEM = "You are a careful assistant for a personal finance app. " * 200


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    with MockProvider() as provider:
        yield provider


def test_chat_usage_is_openais_count_and_the_prefix_cache_kicks_in(mock: MockProvider) -> None:
    client = mock.openai(max_retries=0)
    messages = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": "Hi"}]
    request = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 5}
    first = client.chat.completions.create(**request)
    assert first.usage is not None
    assert first.usage.prompt_tokens == budgetguard.estimate(request).input_tokens
    assert first.usage.completion_tokens == 5  # the reply is longer than 5 tokens: cut at the limit
    assert first.choices[0].finish_reason == "length"
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    messages[-1]["content"] = "Hello again"
    second = client.chat.completions.create(**request)
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and cached >= 1024 and cached % 128 == 0
    assert Usage.from_response(second).cache_read_tokens == cached


def test_chat_stream_reports_usage_only_when_asked(mock: MockProvider) -> None:
    client = mock.openai(max_retries=0)
    request = {"model": "o3-mini", "messages": [{"role": "user", "content": "Think"}], "stream": True}
    silent = list(client.chat.completions.create(**request))
    assert all(chunk.usage is None for chunk in silent)
    chunks = list(client.chat.completions.create(**request, stream_options={"include_usage": True}))
    usage = Usage.from_stream(chunks)
    assert usage.reasoning_tokens == 256 and usage.output_tokens > 256


def test_responses_stream_and_embeddings(mock: MockProvider) -> None:
    client = mock.openai(max_retries=0)
    with client.responses.stream(model="gpt-4o", input="Say hi", instructions="Be terse.") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.output_text == text and final.usage is not None
    assert final.usage.input_tokens == budgetguard.count_openai_request(
        {"model": "gpt-4o", "input": "Say hi", "instructions": "Be terse."}
    )
    reply = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert reply.usage.prompt_tokens == 3 and len(reply.data) == 2
    assert len(reply.data[0].embedding) == 8


def test_claude_cache_write_then_read_and_count_tokens(mock: MockProvider) -> None:
    client = mock.anthropic(max_retries=0)
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    request = {
        "model": "claude-sonnet-4-6",
        "system": system,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 64,
    }
    counted = client.messages.count_tokens(
        model=request["model"], system=system, messages=request["messages"]
    ).input_tokens
    first = client.messages.create(**request)
    second_usage = Usage.from_stream(list(client.messages.create(**request, stream=True)))
    written = first.usage.cache_creation
    assert written is not None and written.ephemeral_1h_input_tokens > 1024
    assert first.usage.input_tokens + first.usage.cache_creation_input_tokens == counted
    assert second_usage.cache_read_tokens == written.ephemeral_1h_input_tokens
    assert second_usage.output_tokens == first.usage.output_tokens
    # budgetguard's offline estimate (x 1.4 for Sonnet 4.6) stays above what the mock (x 1.2) reports
    assert budgetguard.estimate(request).input_tokens > counted


def test_claude_requires_max_tokens(mock: MockProvider) -> None:
    client = mock.anthropic(max_retries=0)
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):  # the SDK checks it too: go around it
        client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)


def test_scripted_faults(mock: MockProvider) -> None:
    client = mock.openai(max_retries=0)
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}
    mock.fail(429, retry_after="2", path="/v1/chat/completions")
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**request)
    assert info.value.response.headers["retry-after"] == "2"
    assert client.chat.completions.create(**request).usage is not None  # only one failure was scripted
    mock.cut(after=2)
    with pytest.raises(OPENAI_STREAM_CUT):
        list(client.chat.completions.create(**request, stream=True))
    mock.delay(1.0)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**request, timeout=0.2)
    before = len(mock.requests)
    client.chat.completions.create(**request)
    assert len(mock.requests) == before + 1 and mock.requests[-1].body["max_tokens"] == 20

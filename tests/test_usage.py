from __future__ import annotations

import copy
from typing import Any

import pytest
from anthropic.types import Message, RawMessageDeltaEvent, RawMessageStartEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseCompletedEvent

from budgetguard import Usage, UsageError
from tests.sdk_payloads import (
    FakeAPI,
    anthropic_client,
    anthropic_message,
    anthropic_sse,
    anthropic_stream_events,
    chat_completion,
    chat_stream_chunks,
    openai_client,
    openai_sse,
    reasoning_chat_completion,
    response,
    responses_stream_events,
)

# -- OpenAI chat: cached (and written) tokens are subsets of prompt_tokens -------------------------


def test_openai_chat_cached_tokens_are_a_subset_of_prompt_tokens() -> None:
    usage = Usage.from_response(ChatCompletion.model_validate(chat_completion()))
    assert usage == Usage(input_tokens=2006 - 1920, cache_read_tokens=1920, output_tokens=300)
    assert usage.total_input_tokens == 2006
    assert usage.total_tokens == 2306


def test_openai_chat_cache_write_tokens_are_also_a_subset() -> None:
    body = chat_completion(
        prompt_tokens=5000,
        total_tokens=5300,
        prompt_tokens_details={"cached_tokens": 1024, "cache_write_tokens": 3000, "audio_tokens": 0},
    )
    usage = Usage.from_response(ChatCompletion.model_validate(body))
    assert usage == Usage(
        input_tokens=976, cache_read_tokens=1024, cache_write_tokens=3000, output_tokens=300
    )
    assert usage.total_input_tokens == 5000


def test_openai_reasoning_tokens_are_inside_completion_tokens() -> None:
    usage = Usage.from_response(ChatCompletion.model_validate(reasoning_chat_completion()))
    assert usage == Usage(input_tokens=476, cache_read_tokens=1024, output_tokens=2048, reasoning_tokens=1792)
    assert usage.total_tokens == 1500 + 2048  # reasoning is not added on top of the output


def test_openai_chat_without_details_has_no_cache() -> None:
    body = chat_completion()
    del body["usage"]["prompt_tokens_details"]
    del body["usage"]["completion_tokens_details"]
    assert Usage.from_response(ChatCompletion.model_validate(body)) == Usage(
        input_tokens=2006, output_tokens=300
    )


def test_cached_plus_written_beyond_the_prompt_is_refused() -> None:
    body = chat_completion(prompt_tokens_details={"cached_tokens": 1900, "cache_write_tokens": 200})
    with pytest.raises(UsageError, match="exceed the input total"):
        Usage.from_response(ChatCompletion.model_validate(body))


# -- OpenAI Responses API ----------------------------------------------------------------------


def test_responses_api_usage() -> None:
    usage = Usage.from_response(Response.model_validate(response()))
    assert usage == Usage(input_tokens=904, cache_read_tokens=4096, output_tokens=1200, reasoning_tokens=1024)


def test_responses_completed_event_carries_the_usage() -> None:
    event = ResponseCompletedEvent.model_validate(responses_stream_events()[-1])
    assert Usage.from_response(event) == Usage(
        input_tokens=904, cache_read_tokens=4096, output_tokens=1200, reasoning_tokens=1024
    )


def test_responses_incomplete_event_is_still_billed() -> None:
    event = {"type": "response.incomplete", "sequence_number": 9, "response": response(status="incomplete")}
    assert Usage.from_response(event).output_tokens == 1200


def test_responses_usage_with_cache_writes() -> None:
    body = response()
    body["usage"]["input_tokens_details"] = {"cached_tokens": 1000, "cache_write_tokens": 2500}
    usage = Usage.from_response(Response.model_validate(body))
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (1500, 1000, 2500)


# -- Anthropic: input_tokens excludes cache reads and writes -------------------------------------


def test_anthropic_input_tokens_exclude_cache_reads_and_writes() -> None:
    usage = Usage.from_response(Message.model_validate(anthropic_message()))
    assert usage == Usage(
        input_tokens=50,
        cache_read_tokens=10000,
        cache_write_tokens=1500,
        cache_write_1h_tokens=500,
        output_tokens=503,
    )
    assert usage.total_input_tokens == 50 + 10000 + 2000


def test_anthropic_without_split_prices_all_writes_as_5_minute() -> None:
    body = anthropic_message()
    del body["usage"]["cache_creation"]
    usage = Usage.from_response(Message.model_validate(body))
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (2000, 0)


def test_anthropic_unsplit_remainder_counts_as_5_minute_writes() -> None:
    body = anthropic_message(
        cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 500}
    )
    usage = Usage.from_response(Message.model_validate(body))
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (1500, 500)
    assert usage.total_input_tokens == 12050


def test_anthropic_without_any_cache_fields() -> None:
    body = anthropic_message()
    for key in ("cache_creation", "cache_creation_input_tokens", "cache_read_input_tokens"):
        del body["usage"][key]
    assert Usage.from_response(Message.model_validate(body)) == Usage(input_tokens=50, output_tokens=503)


def test_anthropic_thinking_tokens_are_reasoning() -> None:
    body = anthropic_message(output_tokens_details={"thinking_tokens": 400})
    usage = Usage.from_response(Message.model_validate(body))
    assert (usage.output_tokens, usage.reasoning_tokens) == (503, 400)


def test_anthropic_message_start_event() -> None:
    event = RawMessageStartEvent.model_validate(anthropic_stream_events()[0])
    usage = Usage.from_response(event)
    assert usage.cache_read_tokens == 10000
    assert usage.cache_write_1h_tokens == 500
    assert usage.output_tokens == 1


# -- dict shapes: the same numbers as the SDK objects ---------------------------------------------


@pytest.mark.parametrize(
    ("payload", "model"),
    [
        (chat_completion, ChatCompletion),
        (reasoning_chat_completion, ChatCompletion),
        (response, Response),
        (anthropic_message, Message),
    ],
)
def test_dicts_read_like_sdk_objects(payload: Any, model: Any) -> None:
    from_dict = Usage.from_response(payload())
    assert from_dict == Usage.from_response(model.model_validate(payload()))
    assert from_dict.total_tokens > 0
    # the bare usage object, as a dict and as the SDK's usage model, reads the same
    assert Usage.from_response(payload()["usage"]) == from_dict
    assert Usage.from_response(model.model_validate(payload()).usage) == from_dict


def test_usage_instance_passes_through() -> None:
    usage = Usage(input_tokens=3, output_tokens=4)
    assert Usage.from_response(usage) is usage


# -- missing or broken usage: an error, never zero -------------------------------------------------


def test_chat_completion_without_usage_is_an_error() -> None:
    body = chat_completion()
    body["usage"] = None
    with pytest.raises(UsageError, match="no usage"):
        Usage.from_response(ChatCompletion.model_validate(body))


def test_chunk_without_usage_points_at_include_usage() -> None:
    chunk = ChatCompletionChunk.model_validate(chat_stream_chunks()[1])
    with pytest.raises(UsageError, match="include_usage"):
        Usage.from_response(chunk)


@pytest.mark.parametrize("thing", [{}, {"id": "x", "choices": []}, None, object(), {"usage": {"foo": 1}}])
def test_nothing_usable_is_an_error(thing: Any) -> None:
    with pytest.raises(UsageError):
        Usage.from_response(thing)


def test_response_without_usage_is_an_error() -> None:
    with pytest.raises(UsageError):
        Usage.from_response(Response.model_validate(response(with_usage=False)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt_tokens", -1),
        ("completion_tokens", -5),
        ("prompt_tokens", 10.0),
        ("completion_tokens", "300"),
        ("completion_tokens", True),
        ("completion_tokens", None),
    ],
)
def test_bad_openai_counts_are_refused(field: str, value: Any) -> None:
    body = chat_completion()
    body["usage"][field] = value
    with pytest.raises(UsageError):
        Usage.from_response(body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_tokens", -50),
        ("cache_read_input_tokens", -1),
        ("cache_creation_input_tokens", 2.5),
        ("output_tokens", "503"),
        ("output_tokens", None),
        ("cache_creation", {"ephemeral_5m_input_tokens": -1, "ephemeral_1h_input_tokens": 0}),
    ],
)
def test_bad_anthropic_counts_are_refused(field: str, value: Any) -> None:
    body = anthropic_message()
    body["usage"][field] = value
    with pytest.raises(UsageError):
        Usage.from_response(body)


def test_negative_cached_tokens_are_refused() -> None:
    body = chat_completion(prompt_tokens_details={"cached_tokens": -3})
    with pytest.raises(UsageError, match="negative"):
        Usage.from_response(body)


# -- the Usage value itself ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1.0, True, "1", None])
@pytest.mark.parametrize(
    "field", ["input_tokens", "cache_read_tokens", "cache_write_1h_tokens", "output_tokens"]
)
def test_usage_fields_must_be_non_negative_ints(field: str, bad: Any) -> None:
    with pytest.raises(UsageError, match=field):
        Usage(**{field: bad})


def test_reasoning_cannot_exceed_output() -> None:
    assert Usage(output_tokens=10, reasoning_tokens=10).reasoning_tokens == 10
    with pytest.raises(UsageError, match="reasoning_tokens"):
        Usage(output_tokens=10, reasoning_tokens=11)


def test_reported_reasoning_above_output_is_capped() -> None:
    body = chat_completion()
    body["usage"]["completion_tokens_details"]["reasoning_tokens"] = 999
    assert Usage.from_response(body).reasoning_tokens == 300


def test_add_and_to_dict() -> None:
    a = Usage(input_tokens=10, cache_read_tokens=5, output_tokens=7, reasoning_tokens=2)
    b = Usage(input_tokens=1, cache_write_tokens=3, cache_write_1h_tokens=4, output_tokens=1)
    assert a + b == Usage(
        input_tokens=11,
        cache_read_tokens=5,
        cache_write_tokens=3,
        cache_write_1h_tokens=4,
        output_tokens=8,
        reasoning_tokens=2,
    )
    assert (a + b).total_input_tokens == 23
    assert a.to_dict() == {
        "input_tokens": 10,
        "cache_read_tokens": 5,
        "output_tokens": 7,
        "reasoning_tokens": 2,
    }
    assert Usage().to_dict() == {}
    with pytest.raises(TypeError):
        a + 1  # type: ignore[operator]


# -- streams, folded from SDK event objects --------------------------------------------------------


def test_anthropic_message_delta_is_cumulative_not_additive() -> None:
    raw = anthropic_stream_events()
    events = [RawMessageStartEvent.model_validate(raw[0])] + [
        RawMessageDeltaEvent.model_validate(e) for e in raw if e["type"] == "message_delta"
    ]
    usage = Usage.from_stream(events)
    assert usage.output_tokens == 503  # not 1 + 15 + 503
    assert usage == Usage(
        input_tokens=50,
        cache_read_tokens=10000,
        cache_write_tokens=1500,
        cache_write_1h_tokens=500,  # message_delta has no split: message_start's 1h share is kept
        output_tokens=503,
    )


def test_anthropic_delta_with_only_output_keeps_the_start_counts() -> None:
    raw = anthropic_stream_events(final_delta_usage={"output_tokens": 77})
    usage = Usage.from_stream(raw)
    assert usage == Usage(
        input_tokens=50,
        cache_read_tokens=10000,
        cache_write_tokens=1500,
        cache_write_1h_tokens=500,
        output_tokens=77,
    )


def test_anthropic_delta_replaces_input_counts_it_reports() -> None:
    raw = anthropic_stream_events(
        final_delta_usage={
            "input_tokens": 60,
            "cache_read_input_tokens": 9000,
            "cache_creation_input_tokens": 300,
            "output_tokens": 90,
        }
    )
    usage = Usage.from_stream(raw)
    # the 1h share cannot exceed the new total; what is left is priced as 5-minute writes
    assert usage == Usage(
        input_tokens=60,
        cache_read_tokens=9000,
        cache_write_tokens=0,
        cache_write_1h_tokens=300,
        output_tokens=90,
    )


def test_anthropic_delta_with_thinking_tokens() -> None:
    raw = anthropic_stream_events(
        final_delta_usage={"output_tokens": 900, "output_tokens_details": {"thinking_tokens": 640}}
    )
    assert Usage.from_stream(raw).reasoning_tokens == 640


def test_message_delta_before_message_start_is_a_truncated_stream() -> None:
    raw = [e for e in anthropic_stream_events() if e["type"] != "message_start"]
    with pytest.raises(UsageError, match="truncated"):
        Usage.from_stream(raw)


def test_openai_include_usage_final_chunk() -> None:
    chunks = [ChatCompletionChunk.model_validate(c) for c in chat_stream_chunks()]
    assert chunks[-1].choices == []
    assert Usage.from_stream(chunks) == Usage(input_tokens=86, cache_read_tokens=1920, output_tokens=300)


def test_openai_stream_without_include_usage_is_an_error() -> None:
    chunks = [ChatCompletionChunk.model_validate(c) for c in chat_stream_chunks(include_usage=False)]
    with pytest.raises(UsageError, match="no usage"):
        Usage.from_stream(chunks)


def test_empty_stream_is_an_error() -> None:
    with pytest.raises(UsageError):
        Usage.from_stream([])


def test_interrupted_responses_stream_is_an_error() -> None:
    with pytest.raises(UsageError):
        Usage.from_stream(responses_stream_events()[:-1])


# -- streams served to the real SDK clients over HTTP ----------------------------------------------


def test_openai_client_chat_completion_roundtrip() -> None:
    api = FakeAPI({"/v1/chat/completions": reasoning_chat_completion()})
    client = openai_client(api)
    completion = client.chat.completions.create(
        model="o3-mini", messages=[{"role": "user", "content": "What is a budget?"}]
    )
    assert Usage.from_response(completion) == Usage(
        input_tokens=476, cache_read_tokens=1024, output_tokens=2048, reasoning_tokens=1792
    )


def test_openai_client_chat_stream_with_include_usage() -> None:
    api = FakeAPI({"/v1/chat/completions": openai_sse(chat_stream_chunks())})
    client = openai_client(api)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "What is a budget?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert api.requests[0]["stream_options"] == {"include_usage": True}
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Budgets are plans."
    assert Usage.from_stream(chunks) == Usage(input_tokens=86, cache_read_tokens=1920, output_tokens=300)


def test_openai_client_stream_without_usage() -> None:
    api = FakeAPI({"/v1/chat/completions": openai_sse(chat_stream_chunks(include_usage=False))})
    stream = openai_client(api).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(UsageError):
        Usage.from_stream(stream)


def test_openai_client_responses_stream() -> None:
    api = FakeAPI({"/v1/responses": openai_sse(responses_stream_events(), done=False)})
    stream = openai_client(api).responses.create(model="o4-mini", input="What is a budget?", stream=True)
    events = list(stream)
    assert events[0].type == "response.created"
    assert Usage.from_stream(events) == Usage(
        input_tokens=904, cache_read_tokens=4096, output_tokens=1200, reasoning_tokens=1024
    )


def test_anthropic_client_message_roundtrip() -> None:
    api = FakeAPI({"/v1/messages": anthropic_message()})
    message = anthropic_client(api).messages.create(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": "What is a budget?"}]
    )
    assert isinstance(message, Message)
    assert Usage.from_response(message) == Usage(
        input_tokens=50,
        cache_read_tokens=10000,
        cache_write_tokens=1500,
        cache_write_1h_tokens=500,
        output_tokens=503,
    )


def test_anthropic_client_stream_events() -> None:
    api = FakeAPI({"/v1/messages": anthropic_sse(anthropic_stream_events())})
    stream = anthropic_client(api).messages.create(
        model="claude-haiku-4-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": "What is a budget?"}],
        stream=True,
    )
    events = list(stream)
    assert sum(e.type == "message_delta" for e in events) == 2
    expected = Usage(
        input_tokens=50,
        cache_read_tokens=10000,
        cache_write_tokens=1500,
        cache_write_1h_tokens=500,
        output_tokens=503,
    )
    assert Usage.from_stream(events) == expected


def test_anthropic_stream_helper_final_message_agrees_with_the_fold() -> None:
    api = FakeAPI({"/v1/messages": anthropic_sse(anthropic_stream_events())})
    client = anthropic_client(api)
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": "What is a budget?"}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    folded = Usage.from_stream(events)
    assert folded == Usage.from_response(final)
    assert folded.output_tokens == 503


def test_from_stream_accepts_a_generator_once() -> None:
    raw = copy.deepcopy(anthropic_stream_events())
    assert Usage.from_stream(e for e in raw).output_tokens == 503


def test_an_anthropic_usage_without_input_tokens_is_an_error_not_zero() -> None:
    """A message whose usage lost its input count must not be read as 0 input tokens (an under-charge)."""
    with pytest.raises(UsageError, match="input_tokens"):
        Usage.from_response({"usage": {"output_tokens": 503, "cache_read_input_tokens": 10}})

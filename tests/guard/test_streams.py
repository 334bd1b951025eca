"""Streams: usage from the final chunk (OpenAI ``include_usage``, Anthropic cumulative ``message_delta``),
one commit per stream however it ends, and an interrupted stream charged input + what was received."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

import budgetguard
from budgetguard import GuardedAsyncStream, GuardedStream, Usage
from tests.guard.conftest import Harness, MakeGuard
from tests.guard.payloads import (
    CLAUDE_USAGE,
    GPT4O_USAGE,
    O4_MINI_USAGE,
    Reply,
    anthropic_client,
    anthropic_message,
    anthropic_sse,
    anthropic_stream_events,
    async_anthropic_client,
    async_openai_client,
    chat_request,
    chat_stream_chunks,
    claude_request,
    cut_stream,
    fail,
    input_nano,
    nano,
    openai_client,
    openai_sse,
    responses_stream_events,
    serve,
    timeout,
)
from tests.sdk_http import OPENAI_STREAM_CUT

COST = nano("gpt-4o", GPT4O_USAGE)
CLAUDE_COST = nano("claude-sonnet-4-6", CLAUDE_USAGE)
O200K = budgetguard.get_encoding("o200k_base")
CHAT_SSE = openai_sse(chat_stream_chunks())
CHAT_TEXT = "Budgets are plans."


def streamed_tokens(text: str) -> int:
    return len(O200K.encode(text))


def interrupted_cost(request: dict[str, Any], text: str) -> tuple[Usage, int]:
    """What a stream cut short is charged: the input estimate plus the tokens of the text received."""
    usage = Usage(
        input_tokens=budgetguard.estimate(request).input_tokens, output_tokens=streamed_tokens(text)
    )
    return usage, nano(request["model"], usage)


def assert_one_commit(h: Harness, usage: Usage, cost: int, **flags: Any) -> None:
    (entry,) = h.history()
    assert entry.event == "committed"
    assert entry.data["usage"] == usage.to_dict()
    assert entry.amounts["usd"] == cost
    for name, value in flags.items():
        assert entry.data.get(name) == value, name
    h.assert_settled({"user:alice": cost, "global": cost})
    assert [e.kind for e in h.events].count("committed") == 1


# -- OpenAI chat streams ----------------------------------------------------------------------------


def test_openai_stream_asks_for_usage_and_commits_once(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    stream = create(**chat_request(stream=True))
    assert isinstance(stream, GuardedStream)
    assert h.history() == []  # nothing is committed before the stream is read
    assert h.held("user:alice") == budgetguard.estimate(chat_request()).cost_nano
    chunks = list(stream)

    assert api.requests == [chat_request(stream=True, stream_options={"include_usage": True})]
    assert len(chunks) == 5
    assert chunks[-1].usage.prompt_tokens == 2006
    assert_one_commit(h, GPT4O_USAGE, COST)
    stream.close()  # closing (or collecting) a finished stream commits nothing more
    del stream
    gc.collect()
    assert_one_commit(h, GPT4O_USAGE, COST)


def test_openai_stream_keeps_the_callers_stream_options(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with create(**chat_request(stream=True, stream_options={"include_obfuscation": False})) as stream:
        for _ in stream:
            pass

    assert api.requests[0]["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert_one_commit(h, GPT4O_USAGE, COST)


def test_openai_stream_break_and_close(make_guard: MakeGuard) -> None:
    """A stream closed while the model still generates is not read on (closing is how a caller stops the
    generation: reading on would make the provider bill the rest): charged as interrupted."""
    h = make_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    stream = create(**chat_request(stream=True))
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if received:
            break
    stream.close()
    stream.close()

    assert received == "Budgets"
    usage, cost = interrupted_cost(chat_request(), received)
    assert_one_commit(h, usage, cost, usage_missing=True)
    assert "usage_missing" in h.kinds()


def read_to_finish(create: Callable[..., Any]) -> str:
    """A stream's text up to its ``finish_reason`` chunk, then closed (its usage chunk not read yet)."""
    stream = create(**chat_request(stream=True))
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if chunk.choices[0].finish_reason:
            break
    stream.close()
    return received


def test_openai_stream_closed_at_its_finish_reason_reads_on_to_its_usage(make_guard: MakeGuard) -> None:
    """A stream closed after the model finished (its ``finish_reason`` chunk) but before the usage chunk
    is read on to it (the rest of the body is in flight; the usage is the bill): charged its usage."""
    h = make_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    received = read_to_finish(create)

    assert received == CHAT_TEXT
    assert_one_commit(h, GPT4O_USAGE, COST, usage_missing=None, interrupted=None)
    assert "usage_missing" not in h.kinds()


def chunked(sse: str) -> Callable[[ModuleType], Iterator[bytes]]:
    """A streamed body sent one SSE event per chunk."""
    return lambda http: (part.encode() + b"\n\n" for part in sse.split("\n\n") if part)


@pytest.mark.parametrize("bound", [{"bytes": 0}, {"seconds": 0}])
def test_a_close_past_the_drain_bound_is_charged_as_interrupted(
    make_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch, bound: dict[str, Any]
) -> None:
    """Past ``DRAIN`` (no byte more, no time), a stream closed at its ``finish_reason`` is closed and
    charged as a cut one, from everything read."""
    monkeypatch.setattr(budgetguard._streams, "DRAIN", budgetguard._streams.Drain(**bound))
    h = make_guard()
    api = serve(Reply(body=chunked(CHAT_SSE)))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    received = read_to_finish(create)

    usage, cost = interrupted_cost(chat_request(), received)
    assert_one_commit(h, usage, cost, usage_missing=True, interrupted=True)


def test_openai_stream_dropped(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    stream = create(**chat_request(stream=True))
    next(stream)
    next(stream)
    del stream
    gc.collect()
    assert h.history() == []  # its finalizer only queued the settlement (no ledger I/O in __del__)
    h.guard.close()  # the guard settles it on close (or on its next operation)

    usage, cost = interrupted_cost(chat_request(), "Budgets")
    assert_one_commit(h, usage, cost, usage_missing=True, interrupted=True)
    assert h.kinds() == ["usage_missing", "committed"]


def test_openai_stream_without_usage(make_guard: MakeGuard) -> None:
    """A server that ignores include_usage: the whole text was received, usage never came."""
    h = make_guard()
    api = serve(openai_sse(chat_stream_chunks(include_usage=False)))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    for _ in create(**chat_request(stream=True)):
        pass

    usage, cost = interrupted_cost(chat_request(), CHAT_TEXT)
    assert_one_commit(h, usage, cost, usage_missing=True)


def test_openai_stream_error_before_the_stream_is_retried(make_guard: MakeGuard) -> None:
    from tests.guard.payloads import fail

    h = make_guard()
    api = serve(fail(429), CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    for _ in create(**chat_request(stream=True)):
        pass

    assert len(api.requests) == 2
    assert [(e.event, e.data["attempt"]) for e in h.history()] == [("released", 1), ("committed", 2)]
    h.assert_settled({"user:alice": COST})


def test_openai_stream_connection_lost_mid_stream(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(Reply(body=cut_stream(CHAT_SSE, after_events=2)))
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    stream = create(**chat_request(stream=True))
    received = [next(stream).choices[0].delta.content, next(stream).choices[0].delta.content]
    with pytest.raises(OPENAI_STREAM_CUT):  # the SDK's error, whichever its release raises
        next(stream)
    assert h.history() == []  # the stream is still the caller's to close
    stream.close()

    assert received == ["", "Budgets"]
    usage, cost = interrupted_cost(chat_request(), "Budgets")
    assert_one_commit(h, usage, cost, usage_missing=True, interrupted=True)


def test_responses_stream(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(openai_sse(responses_stream_events(), done=False))
    create = h.guard.with_budget(openai_client(api).responses.create, user="alice")

    events = list(create(model="o4-mini", input="What is a budget?", max_output_tokens=2000, stream=True))

    assert events[-1].type == "response.completed"
    assert "stream_options" not in api.requests[0]
    assert_one_commit(h, O4_MINI_USAGE, nano("o4-mini", O4_MINI_USAGE))


# -- Anthropic streams ------------------------------------------------------------------------------


def test_anthropic_stream_cumulative_usage(make_guard: MakeGuard) -> None:
    """message_delta counts are cumulative: 15 then 503 output tokens is 503, not 518."""
    h = make_guard()
    api = serve(anthropic_sse(anthropic_stream_events()))
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")

    stream = create(**claude_request(stream=True))
    kinds = [event.type for event in stream]

    assert kinds[0] == "message_start"
    assert kinds.count("message_delta") == 2
    assert_one_commit(h, CLAUDE_USAGE, CLAUDE_COST)


def test_anthropic_stream_interrupted_before_message_delta(make_guard: MakeGuard) -> None:
    """Cut off mid-text: the input is known from message_start, the output is what was streamed.

    message_start reports ``output_tokens: 1``; the text received after it must be charged too, counted
    as Claude counts it: o200k_base tokens times the Claude safety factor (x1.4), as estimates are.
    """
    h = make_guard()
    text = "Budgets are plans for money, written down before it is spent. " * 20
    events = anthropic_stream_events()
    events[3]["delta"]["text"] = text
    api = serve(Reply(body=cut_stream(anthropic_sse(events), after_events=4)))
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")

    stream = create(**claude_request(stream=True))
    for event in stream:  # (closed at once: the drain that reads on meets the cut)
        if event.type == "content_block_delta":
            break
    stream.close()

    start = anthropic_message()["usage"]
    usage = Usage(
        input_tokens=start["input_tokens"],
        cache_read_tokens=start["cache_read_input_tokens"],
        cache_write_tokens=1500,
        cache_write_1h_tokens=500,
        output_tokens=math.ceil(budgetguard.count_text_tokens(text, "claude-sonnet-4-6") * Decimal("1.4")),
    )
    assert usage.output_tokens > 100
    assert_one_commit(h, usage, nano("claude-sonnet-4-6", usage), interrupted=True)


def test_anthropic_stream_interrupted_is_never_charged_past_max_tokens(make_guard: MakeGuard) -> None:
    """The Claude factor bounds Claude's count of the streamed text from above, and so does max_tokens
    (the provider bills no more): the smaller of the two."""
    h = make_guard()
    text = "Budgets are plans for money, written down before it is spent. " * 20  # 281 o200k tokens
    events = anthropic_stream_events()
    events[3]["delta"]["text"] = text
    api = serve(Reply(body=cut_stream(anthropic_sse(events), after_events=4)))
    create = h.guard.with_budget(anthropic_client(api).messages.create, user="alice")

    stream = create(**claude_request(stream=True, max_tokens=300))
    for event in stream:
        if event.type == "content_block_delta":
            break
    stream.close()

    (entry,) = h.history()
    assert math.ceil(budgetguard.count_text_tokens(text, "claude-sonnet-4-6") * Decimal("1.4")) > 300
    assert entry.data["usage"]["output_tokens"] == 300


def test_anthropic_messages_stream_helper(make_guard: MakeGuard) -> None:
    """``client.messages.stream(...)`` returns a stream manager, used as a context manager."""
    h = make_guard()
    api = serve(anthropic_sse(anthropic_stream_events()))
    stream = h.guard.with_budget(anthropic_client(api).messages.stream, user="alice")

    with stream(**claude_request()) as events:
        text = "".join(events.text_stream)

    assert text == "Budgets are plans."
    assert_one_commit(h, CLAUDE_USAGE, CLAUDE_COST)


def left_mid_generation(h: Harness) -> None:
    """The one commit of an Anthropic helper's block left at its first text: charged as interrupted (not
    read on: the model still generated; a review found it read on for 5 s, the model billing the rest)."""
    (entry,) = h.history()
    assert entry.event == "committed" and entry.data["interrupted"] is True
    assert entry.data["usage"]["output_tokens"] < CLAUDE_USAGE.output_tokens


def test_anthropic_messages_stream_helper_left_early_is_charged_as_interrupted(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(anthropic_sse(anthropic_stream_events()))
    stream = h.guard.with_budget(anthropic_client(api).messages.stream, user="alice")

    with stream(**claude_request()) as events:
        for event in events:
            if event.type == "content_block_delta":
                break

    left_mid_generation(h)


async def test_async_anthropic_messages_stream_helper_left_early(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(anthropic_sse(anthropic_stream_events()))
    stream = h.guard.with_budget(async_anthropic_client(api).messages.stream, user="alice")

    async with stream(**claude_request()) as events:
        async for event in events:
            if event.type == "content_block_delta":
                break

    left_mid_generation(h)


# -- async streams ----------------------------------------------------------------------------------


async def test_async_openai_stream(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(async_openai_client(api).chat.completions.create, user="alice")

    stream = await create(**chat_request(stream=True))
    assert isinstance(stream, GuardedAsyncStream)
    chunks = [chunk async for chunk in stream]

    assert len(chunks) == 5
    assert api.requests[0]["stream_options"] == {"include_usage": True}
    assert_one_commit(h, GPT4O_USAGE, COST)


async def test_async_anthropic_stream(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(anthropic_sse(anthropic_stream_events()))
    create = h.guard.with_budget(async_anthropic_client(api).messages.create, user="alice")

    stream = await create(**claude_request(stream=True))
    assert isinstance(stream, GuardedAsyncStream)
    async for _ in stream:
        pass

    assert_one_commit(h, CLAUDE_USAGE, CLAUDE_COST)


def streaming_function(h: Harness, api: Any) -> Any:
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )

    return ask


async def test_async_function_stream(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(CHAT_SSE)
    ask = streaming_function(h, api)

    stream = await ask("alice", **chat_request())
    assert isinstance(stream, GuardedAsyncStream)
    async with stream:
        async for _ in stream:
            pass

    assert_one_commit(h, GPT4O_USAGE, COST)


@pytest.mark.parametrize("close", ["aclose", "close"])
async def test_async_stream_break_and_aclose(amake_guard: MakeGuard, close: str) -> None:
    """Closed while the model generates: not read on, charged as interrupted; closed twice, settled once.
    ``await stream.close()`` (the SDKs' async streams' own) settles it as ``aclose()`` does (a review
    found it passed to the SDK's stream: nothing settled, the hold kept)."""
    h = amake_guard()
    api = serve(CHAT_SSE)
    ask = streaming_function(h, api)

    stream = await ask("alice", **chat_request())
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    await getattr(stream, close)()
    await getattr(stream, close)()

    usage, cost = interrupted_cost(chat_request(), "Budgets")
    assert_one_commit(h, usage, cost, usage_missing=True, interrupted=True)


@pytest.mark.parametrize("bounded", [False, True])
async def test_async_stream_closed_at_its_finish_reason(
    amake_guard: MakeGuard, monkeypatch: pytest.MonkeyPatch, bounded: bool
) -> None:
    """Closed after its ``finish_reason``: read on to its usage and charged it; with no time to read on
    (``DRAIN.seconds`` 0), closed at once and charged as a cut stream."""
    if bounded:
        monkeypatch.setattr(budgetguard._streams, "DRAIN", budgetguard._streams.Drain(seconds=0))
    h = amake_guard()
    api = serve(CHAT_SSE)
    ask = streaming_function(h, api)

    stream = await ask("alice", **chat_request())
    received = ""
    async for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if chunk.choices[0].finish_reason:
            break
    await stream.aclose()

    assert received == CHAT_TEXT
    if bounded:
        usage, cost = interrupted_cost(chat_request(), received)
        assert_one_commit(h, usage, cost, usage_missing=True, interrupted=True)
    else:
        assert_one_commit(h, GPT4O_USAGE, COST, usage_missing=None, interrupted=None)


async def test_async_stream_dropped(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(CHAT_SSE)
    ask = streaming_function(h, api)

    stream = await ask("alice", **chat_request())
    await stream.__anext__()
    await stream.__anext__()
    del stream
    gc.collect()
    assert h.history() == []  # queued by its finalizer: no task that a closing loop could cancel
    await h.guard.aclose()  # settled on aclose (or on the guard's next operation), not after a delay

    usage, cost = interrupted_cost(chat_request(), "Budgets")
    assert_one_commit(h, usage, cost, usage_missing=True, interrupted=True)
    assert h.kinds() == ["usage_missing", "committed"]


@pytest.mark.parametrize("consumed", [0, 1, 5])
def test_stream_commits_exactly_once_however_it_ends(make_guard: MakeGuard, consumed: int) -> None:
    h = make_guard()
    api = serve(CHAT_SSE)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    stream = create(**chat_request(stream=True))
    for _ in range(consumed):
        next(stream)
    if consumed == 5:
        with pytest.raises(StopIteration):
            next(stream)
    stream.close()
    del stream
    gc.collect()

    assert len(h.history()) == 1
    assert h.held("user:alice") == 0


def test_a_stream_manager_never_entered_is_released(make_guard: MakeGuard) -> None:
    """``messages.stream(...)`` sends nothing until it is entered: dropping it unentered charges nothing."""
    h = make_guard()
    api = serve(anthropic_sse(anthropic_stream_events()))
    stream = h.guard.with_budget(anthropic_client(api).messages.stream, user="alice")
    manager = stream(**claude_request())
    assert h.held("user:alice") > 0
    del manager
    gc.collect()
    h.guard.close()
    assert api.requests == []
    h.assert_settled({"user:alice": 0, "global": 0})
    assert [(e.event, e.data.get("error")) for e in h.history()] == [("released", "never sent")]


# -- a stream manager whose request fails on entering -------------------------------------------------

RESPONSES_REQUEST = {"model": "o4-mini", "input": "What is a budget?", "max_output_tokens": 2000}


def stream_managers(api: Any, is_async: bool) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The SDKs' stream managers (``messages.stream``, ``responses.stream``) and a request for each."""
    anthropic_sdk = async_anthropic_client(api) if is_async else anthropic_client(api)
    openai_sdk = async_openai_client(api) if is_async else openai_client(api)
    return {
        "anthropic": (anthropic_sdk.messages.stream, claude_request()),
        "openai": (openai_sdk.responses.stream, RESPONSES_REQUEST),
    }


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("reply", "charged"), [(timeout(), True), (fail(400), False)], ids=["timeout", "4xx"]
)
def test_a_stream_manager_failing_on_enter_is_settled_as_a_failed_attempt(
    make_guard: MakeGuard, provider: str, reply: Reply, charged: bool
) -> None:
    """Entering sends the request: a read timeout may still be billed, so the input is charged (as for any
    attempt, per ``charge_failed``); an error response is released. Neither is settled as "never sent"."""
    h = make_guard()
    api = serve(reply)
    method, request = stream_managers(api, is_async=False)[provider]
    manager = h.guard.with_budget(method, user="alice")(**request)
    with pytest.raises(Exception) as caught:
        manager.__enter__()
    del manager
    gc.collect()

    error = type(caught.value).__name__
    assert error == ("APITimeoutError" if charged else "BadRequestError")
    (entry,) = h.history()
    assert (entry.event, entry.data["error"]) == ("committed" if charged else "released", error)
    cost = input_nano(request["model"], request) if charged else 0
    h.assert_settled({"user:alice": cost})


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("reply", "charged"), [(timeout(), True), (fail(400), False)], ids=["timeout", "4xx"]
)
async def test_an_async_stream_manager_failing_on_enter_is_settled_as_a_failed_attempt(
    amake_guard: MakeGuard, provider: str, reply: Reply, charged: bool
) -> None:
    h = amake_guard()
    api = serve(reply)
    method, request = stream_managers(api, is_async=True)[provider]
    manager = h.guard.with_budget(method, user="alice")(**request)
    with pytest.raises(Exception) as caught:
        await manager.__aenter__()
    del manager
    gc.collect()

    error = type(caught.value).__name__
    assert error == ("APITimeoutError" if charged else "BadRequestError")
    (entry,) = h.history()
    assert (entry.event, entry.data["error"]) == ("committed" if charged else "released", error)
    cost = input_nano(request["model"], request) if charged else 0
    h.assert_settled({"user:alice": cost})


def test_a_chat_stream_is_generated_when_every_choice_finished() -> None:
    """``StreamFolder.generated`` (what a drain waits for): with ``n`` > 1, one choice's ``finish_reason``
    is not the end of the generation; every choice seen must have finished."""
    from budgetguard._providers import StreamFolder

    def chunk(index: int, finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": index, "delta": {"content": "x"}, "finish_reason": finish}]}

    folder = StreamFolder()
    for event in (chunk(0), chunk(1), chunk(0, "stop")):
        folder.feed(event)
    assert not folder.generated  # (choice 1 still generates: closing now stops it)
    folder.feed(chunk(1, "length"))
    assert folder.generated and not folder.complete
    folder.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    assert folder.complete

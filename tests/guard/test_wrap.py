"""``guard.wrap(client)`` and the transport under it: real SDK clients whose HTTP requests run the guard's
flow, every billed method (raw and streaming-response variants, stream helpers) and every SDK retry
reserved and settled, the ledger checked to the nano-USD against the usage the server returned."""

from __future__ import annotations

import gc
import gzip
import json
from typing import Any

import anthropic
import openai
import pytest

import budgetguard
from budgetguard import BudgetExceededError, ConfigurationError, Usage
from budgetguard.integrations.httpx import BudgetTransport
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
    chat_completion,
    chat_request,
    chat_stream_chunks,
    claude_request,
    embedding_response,
    fail,
    nano,
    openai_client,
    openai_sse,
    response,
    responses_stream_events,
    serve,
)
from tests.sdk_http import ANTHROPIC_HTTP, OPENAI_HTTP, chat_completions_stream, http_for

COST = nano("gpt-4o", GPT4O_USAGE)
CLAUDE_COST = nano("claude-sonnet-4-6", CLAUDE_USAGE)
CHAT_SSE = openai_sse(chat_stream_chunks())
CLAUDE_SSE = anthropic_sse(anthropic_stream_events())


def settled(h: Harness, *costs: int, scope: str = "user:alice") -> None:
    """One committed journal entry per cost, in order, and the counters at their sum with nothing held."""
    assert [e.amounts["usd"] for e in h.history(events=["committed"])] == list(costs)
    h.assert_settled({scope: sum(costs), "global": sum(costs)})


def test_wrap_keeps_the_class_and_guards_chat(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    client = h.guard.wrap(openai_client(api), user="alice")

    completion = client.chat.completions.create(**chat_request())

    assert isinstance(client, openai.OpenAI)
    assert completion.usage is not None and completion.usage.prompt_tokens == 2006
    assert api.requests == [chat_request()]  # sent as given
    settled(h, COST)
    (entry,) = h.history()
    assert entry.data["usage"] == GPT4O_USAGE.to_dict()
    assert set(entry.scopes) == {"global", "user:alice"}


def test_azure_client_is_priced_at_azure(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    azure = openai.AzureOpenAI(
        azure_endpoint="http://azure.test", api_key="k", api_version="2024-10-21", max_retries=0,
        http_client=OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(api)),
    )  # fmt: skip
    client = h.guard.wrap(azure, user="alice")

    client.chat.completions.create(**chat_request())

    assert isinstance(client, openai.AzureOpenAI)
    assert api.paths == ["/openai/deployments/gpt-4o/chat/completions"]
    (entry,) = h.history()
    assert entry.amounts["usd"] == budgetguard.get_price("gpt-4o", provider="azure").cost_nano(GPT4O_USAGE)
    assert client._client._transport.provider == "azure"  # from the client's class, not its host


def vertex_client(api: Any) -> anthropic.AnthropicVertex:
    return anthropic.AnthropicVertex(
        region="us-east5", project_id="budgets", access_token="t", base_url="http://vertex.test/v1",
        max_retries=0, http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip


def test_vertex_messages_and_stream_priced_at_google(make_guard: MakeGuard) -> None:
    """Vertex AI names the model in the path (``...:rawPredict``, ``...:streamRawPredict``)."""
    h = make_guard()
    api = serve(anthropic_message(), CLAUDE_SSE)
    client = h.guard.wrap(vertex_client(api), user="alice")

    client.messages.create(**claude_request())
    for _ in client.messages.create(**claude_request(stream=True)):
        pass

    assert isinstance(client, anthropic.AnthropicVertex)
    model = "/v1/projects/budgets/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6"
    assert api.paths == [f"{model}:rawPredict", f"{model}:streamRawPredict"]
    assert "model" not in api.requests[0]  # sent as the SDK built it
    # (us-east5 is a regional endpoint: 10% above the global price, see tests/test_redteam2.py)
    regional = {"inference_geo": "us-east5"}
    price = budgetguard.get_price("claude-sonnet-4-6", provider="google", variant=regional)
    cost = price.cost_nano(CLAUDE_USAGE)
    assert cost > budgetguard.get_price("claude-sonnet-4-6", provider="google").cost_nano(CLAUDE_USAGE)
    settled(h, cost, cost)
    assert client._client._transport.provider == "google"


def test_foundry_messages_priced_at_azure(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(anthropic_message())
    foundry = anthropic.AnthropicFoundry(
        api_key="k", base_url="http://foundry.test/anthropic/", max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip
    client = h.guard.wrap(foundry, user="alice")

    client.messages.create(**claude_request())

    assert api.paths == ["/anthropic/v1/messages"]
    settled(h, budgetguard.get_price("claude-sonnet-4-6", provider="azure").cost_nano(CLAUDE_USAGE))


def test_responses_and_embeddings(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(response(), embedding_response("text-embedding-3-small", 1234))
    client = h.guard.wrap(openai_client(api), user="alice")

    client.responses.create(model="o4-mini", input="What is a budget?", max_output_tokens=2000)
    client.embeddings.create(model="text-embedding-3-small", input=["a budget", "a plan"])

    embedded = nano("text-embedding-3-small", Usage(input_tokens=1234))
    settled(h, nano("o4-mini", O4_MINI_USAGE), embedded)


def test_anthropic_messages_raw_and_streaming_response(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(anthropic_message())
    client = h.guard.wrap(anthropic_client(api), user="alice")

    assert isinstance(client, anthropic.Anthropic)
    client.messages.create(**claude_request())
    raw = client.messages.with_raw_response.create(**claude_request())
    assert raw.parse().usage.output_tokens == 503
    with client.messages.with_streaming_response.create(**claude_request()) as streamed:
        assert json.loads(streamed.read())["usage"]["output_tokens"] == 503

    assert len(api.requests) == 3
    settled(h, CLAUDE_COST, CLAUDE_COST, CLAUDE_COST)


def test_openai_stream_asks_for_usage(make_guard: MakeGuard) -> None:
    """The guard asks a chat stream for its usage; the chunk that carries it (no choices) reaches only a
    caller who asked for it too: the plain streaming loop runs on a wrapped client as on a plain one."""
    h = make_guard()
    api = serve(CHAT_SSE)
    client = h.guard.wrap(openai_client(api), user="alice")

    chunks = list(client.chat.completions.create(**chat_request(stream=True)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)  # (IndexError on a usage chunk)
    with chat_completions_stream(client)(**chat_request()) as stream:
        final = stream.get_final_completion()
    options = {"include_usage": True}
    asked = list(client.chat.completions.create(**chat_request(stream=True, stream_options=options)))

    assert text == "Budgets are plans."
    assert all(c.choices for c in chunks) and final.usage is None  # as the plain client gives them
    assert asked[-1].choices == [] and asked[-1].usage is not None
    assert asked[-1].usage.completion_tokens == 300
    assert [r["stream_options"] for r in api.requests] == [options] * 3
    settled(h, COST, COST, COST)


def test_responses_stream_and_anthropic_stream_helper(make_guard: MakeGuard) -> None:
    h = make_guard()
    openai_api = serve(openai_sse(responses_stream_events(), done=False))
    claude_api = serve(CLAUDE_SSE)
    chat = h.guard.wrap(openai_client(openai_api), user="alice")
    claude = h.guard.wrap(anthropic_client(claude_api), user="alice")

    events = chat.responses.create(
        model="o4-mini", input="What is a budget?", max_output_tokens=2000, stream=True
    )
    assert [event.type for event in events][-1] == "response.completed"
    with claude.messages.stream(**claude_request()) as stream:
        message = stream.get_final_message()

    assert message.usage.output_tokens == 503
    assert "stream_options" not in openai_api.requests[0]
    settled(h, nano("o4-mini", O4_MINI_USAGE), CLAUDE_COST)


def close_a_stream_early(h: Harness, finished: bool = False) -> None:
    """A guarded client's stream, left at its first text (or at its ``finish_reason``) and closed."""
    client = h.guard.wrap(openai_client(serve(CHAT_SSE)), user="alice")
    stream = client.chat.completions.create(**chat_request(stream=True))
    for chunk in stream:
        if chunk.choices and (chunk.choices[0].finish_reason if finished else chunk.choices[0].delta.content):
            break
    stream.close()


def test_stream_closed_at_its_finish_reason_is_read_on_to_its_usage(make_guard: MakeGuard) -> None:
    """The SDK closes the response when its consumer leaves after the model finished, before the usage
    chunk: the transport's body reads the rest of the stream (in flight already) to its usage chunk
    before it settles (``_streams.DRAIN``)."""
    h = make_guard()
    close_a_stream_early(h, finished=True)

    (entry,) = h.history()
    assert entry.data["usage"] == GPT4O_USAGE.to_dict()
    assert "usage_missing" not in entry.data and "interrupted" not in entry.data
    settled(h, COST)


def test_stream_closed_early_is_charged_what_it_showed(make_guard: MakeGuard) -> None:
    """Closed while the model generates: not read on (that would bill the rest), charged what it showed."""
    h = make_guard()
    close_a_stream_early(h)

    received = budgetguard.get_encoding("o200k_base").encode("Budgets")
    usage = Usage(input_tokens=budgetguard.estimate(chat_request()).input_tokens, output_tokens=len(received))
    (entry,) = h.history()
    assert entry.data["usage"] == usage.to_dict()
    assert entry.data["usage_missing"] is True and entry.data["interrupted"] is True
    settled(h, nano("gpt-4o", usage))


def test_stream_collected_unread_is_settled_by_the_guard(make_guard: MakeGuard) -> None:
    h = make_guard()
    client = h.guard.wrap(anthropic_client(serve(CLAUDE_SSE)), user="alice")

    stream = client.messages.create(**claude_request(stream=True))
    next(iter(stream))  # message_start: the input is known, the output is not
    stream.cycle = stream  # collected by the cyclic collector, which may run anywhere
    del stream
    gc.collect()
    assert h.history() == []  # its finalizer only queued the settlement
    h.guard.close()

    (entry,) = h.history()
    assert entry.data["interrupted"] is True
    assert h.held("user:alice") == 0
    assert entry.amounts["usd"] == h.spent("user:alice") > 0


def test_sdk_retries_are_each_an_attempt(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(500), fail(429), chat_completion())
    client = h.guard.wrap(openai_client(api, max_retries=2), user="alice")

    client.chat.completions.create(**chat_request())

    assert len(api.requests) == 3
    assert [e.event for e in h.history()] == ["released", "released", "committed"]
    assert [e.data.get("error") for e in h.history()] == ["HTTPStatusError", "HTTPStatusError", None]
    # the SDK numbers its retries (x-stainless-retry-count): the journal and the events say which try
    assert [e.data["attempt"] for e in h.history()] == [1, 2, 3]
    assert [e.attempt for e in h.events if e.kind in ("released", "committed")] == [1, 2, 3]
    settled(h, COST)


def test_anthropic_sdk_retries_journal_their_attempt_numbers(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(fail(529), anthropic_message())
    client = h.guard.wrap(anthropic_client(api, max_retries=1), user="alice")

    client.messages.create(**claude_request())

    assert [(e.event, e.data["attempt"]) for e in h.history()] == [("released", 1), ("committed", 2)]
    settled(h, CLAUDE_COST)


def test_a_retry_count_header_that_is_no_count_is_the_first_attempt(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve(chat_completion())
    client = h.guard.wrap(openai_client(api), user="alice")

    client.chat.completions.create(**chat_request(), extra_headers={"x-stainless-retry-count": "-3"})
    client.chat.completions.create(**chat_request(), extra_headers={"x-stainless-retry-count": "4"})

    assert [e.data["attempt"] for e in h.history()] == [1, 5]


def test_refusal_raises_and_sends_nothing(make_guard: MakeGuard) -> None:
    h = make_guard()
    h.set_limit("user:alice", 1000)
    openai_api, claude_api = serve(chat_completion()), serve(anthropic_message())
    chat = h.guard.wrap(openai_client(openai_api, max_retries=2), user="alice")
    claude = h.guard.wrap(anthropic_client(claude_api, max_retries=2), user="alice")

    with pytest.raises(BudgetExceededError) as refused:  # a copy of the wrapped client is guarded too
        chat.with_options(timeout=5).chat.completions.create(**chat_request())
    with pytest.raises(BudgetExceededError):
        claude.messages.create(**claude_request())

    assert str(refused.value.scope) == "user:alice"
    assert openai_api.requests == [] and claude_api.requests == []
    assert h.kinds() == ["refused", "refused"]  # not retried by the SDK
    h.assert_settled({"user:alice": 0})


def test_unknown_billed_path_is_refused_and_a_get_passes(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve({"object": "list", "data": []})
    client = h.guard.wrap(openai_client(api, max_retries=2), user="alice")

    with pytest.raises(ConfigurationError, match="cannot price POST /v1/images/generations"):
        client.images.generate(model="gpt-image-1", prompt="a piggy bank")
    with pytest.raises(ConfigurationError, match="/v1/batches"):
        client.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id="f")
    assert api.requests == []
    client.models.list()

    assert api.paths == ["/v1/models"]
    assert h.history() == []


def test_wrap_refuses_what_is_no_sdk_client(make_guard: MakeGuard) -> None:
    h = make_guard()
    with pytest.raises(ConfigurationError, match="takes an openai or anthropic SDK client"):
        h.guard.wrap(object())


def test_transport_under_a_plain_http_client(make_guard: MakeGuard) -> None:
    """No SDK: the transport reads the wire JSON; scopes from a callable of the request and the context."""
    h = make_guard()
    api = serve(chat_completion())
    transport = BudgetTransport(
        h.guard, OPENAI_HTTP.MockTransport(api), user=lambda request: request.headers["x-user"]
    )
    client = OPENAI_HTTP.Client(transport=transport, base_url="http://openai.test/v1")
    with client as http, budgetguard.budget_context(feature="chat"):
        reply = http.post("/chat/completions", json=chat_request(), headers={"x-user": "alice"})

    assert reply.json()["usage"]["prompt_tokens"] == 2006
    settled(h, COST)
    assert h.spent("feature:chat") == COST


# -- async -------------------------------------------------------------------------------------------


async def test_async_openai_chat_and_stream(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(chat_completion(), CHAT_SSE)
    client = h.guard.wrap(async_openai_client(api), user="alice")

    assert isinstance(client, openai.AsyncOpenAI)
    await client.chat.completions.create(**chat_request())
    stream = await client.chat.completions.create(**chat_request(stream=True))
    async for _ in stream:
        pass

    settled(h, COST, COST)


async def test_async_anthropic_messages_stream_closed_and_refused(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(anthropic_message(), CLAUDE_SSE)
    client = h.guard.wrap(async_anthropic_client(api, max_retries=2), user="alice")

    await client.messages.create(**claude_request())
    stream = await client.messages.create(**claude_request(stream=True))
    async for _ in stream:
        break
    await stream.close()
    h.set_limit("user:alice", h.spent("user:alice") + 1000)
    with pytest.raises(BudgetExceededError):
        await client.messages.create(**claude_request())

    first, second = h.history(events=["committed"])
    assert first.amounts["usd"] == CLAUDE_COST
    assert second.data["interrupted"] is True  # (closed while it generated: not read on)
    assert len(api.requests) == 2
    assert h.held("user:alice") == 0


async def test_async_transport_sdk_retries(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(fail(500), chat_completion())
    client = h.guard.wrap(async_openai_client(api, max_retries=1), user="alice")

    await client.chat.completions.create(**chat_request())

    assert [(e.event, e.data["attempt"]) for e in h.history()] == [("released", 1), ("committed", 2)]
    settled(h, COST)


def test_compressed_json_and_sse_are_read_and_passed_on(make_guard: MakeGuard) -> None:
    """A gzip-encoded JSON body and SSE stream: usage read from the decoded bytes, the client gets them."""
    h = make_guard()
    replies = iter([json.dumps(chat_completion()).encode(), CHAT_SSE.encode()])

    def handler(request: Any) -> Any:
        body = next(replies)
        kind = "text/event-stream" if b"data:" in body else "application/json"
        headers = {"content-type": kind, "content-encoding": "gzip"}
        return http_for(request).Response(200, headers=headers, content=gzip.compress(body))

    client = h.guard.wrap(
        openai.OpenAI(
            base_url="http://openai.test/v1", api_key="k", max_retries=0,
            http_client=OPENAI_HTTP.Client(transport=OPENAI_HTTP.MockTransport(handler)),
        ),
        user="alice",
    )  # fmt: skip
    completion = client.chat.completions.create(**chat_request())
    options = {"include_usage": True}  # (asked: passed on)
    chunks = list(client.chat.completions.create(**chat_request(stream=True, stream_options=options)))

    assert completion.usage is not None and completion.usage.completion_tokens == 300
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 300
    settled(h, COST, COST)


def test_free_posts_and_allowed_paths_pass_through(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = serve({"input_tokens": 12})
    transport = BudgetTransport(h.guard, OPENAI_HTTP.MockTransport(api), allow=("/v1/images/",))
    with OPENAI_HTTP.Client(transport=transport, base_url="http://api.test") as http:
        http.post("/v1/messages/count_tokens", json=claude_request())
        http.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "a piggy bank"})
        http.post("/v1/files", json={"purpose": "batch"})
        with pytest.raises(ConfigurationError, match="allow="):
            http.post("/v1/audio/speech", json={"model": "tts-1", "input": "hi"})

    assert api.paths == ["/v1/messages/count_tokens", "/v1/images/generations", "/v1/files"]
    assert h.history() == []


def test_a_bad_scope_kind_fails_when_wrapping(make_guard: MakeGuard) -> None:
    h = make_guard()
    with pytest.raises(ConfigurationError):
        h.guard.wrap(openai_client(serve(chat_completion())), **{"user:x": "alice"})
    with pytest.raises(ConfigurationError):
        BudgetTransport(h.guard, OPENAI_HTTP.MockTransport(serve(chat_completion())), **{"": "x"})


def test_a_body_cut_mid_read_settles_the_attempt(make_guard: MakeGuard) -> None:
    """The upstream sent its headers, then dropped the connection in the body: the attempt fails with
    that error (its input charged if it may have been billed, ``charge_failed``), nothing stays held."""
    h = make_guard()

    def cut(http: Any) -> Any:
        yield b'{"id": "chatcmpl-1", '
        raise http.ReadError("connection reset by peer")

    api = serve(Reply(200, cut), Reply(503, {"error": {"message": "down"}}))
    client = h.guard.wrap(openai_client(api), user="alice")
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(**chat_request())
    with pytest.raises(openai.APIStatusError):  # and a 5xx whose body read is fine: released
        client.chat.completions.create(**chat_request())
    assert h.held("user:alice") == 0
    cut_entry, failed = h.history()
    assert (cut_entry.event, failed.event, failed.data["error"]) == (
        "committed",
        "released",
        "HTTPStatusError",
    )
    assert set(cut_entry.data["usage"]) == {"input_tokens"}  # (the input: it may have been billed)


def test_only_free_endpoints_pass_unguarded(make_guard: MakeGuard) -> None:
    """``/v1/complete`` (Anthropic's text completions) bills: refused; an upload's ``complete`` and an
    Assistants thread's messages are free: sent as is."""
    h = make_guard()
    api = serve({"ok": True})
    transport = BudgetTransport(h.guard, OPENAI_HTTP.MockTransport(api))
    with OPENAI_HTTP.Client(transport=transport, base_url="http://api.test") as http:
        with pytest.raises(ConfigurationError, match="cannot price POST /v1/complete"):
            http.post("/v1/complete", json={"model": "claude-2.1", "prompt": "hi", "max_tokens_to_sample": 5})
        http.post("/v1/uploads/upload_1/complete", json={"part_ids": []})
        http.post("/v1/threads/thread_1/messages", json={"role": "user", "content": "hi"})
        http.post("/v1/batches/batch_1/cancel")
        http.post("/v1/threads", json={})  # (a thread made; its runs bill, and are refused)
        http.post("/v1/chat/completions/chatcmpl_1", json={"metadata": {"k": "v"}})  # (a stored one updated)
        with pytest.raises(ConfigurationError, match="/v1/threads/runs"):
            http.post("/v1/threads/runs", json={"assistant_id": "a"})
    assert api.paths == [
        "/v1/uploads/upload_1/complete",
        "/v1/threads/thread_1/messages",
        "/v1/batches/batch_1/cancel",
        "/v1/threads",
        "/v1/chat/completions/chatcmpl_1",
    ]
    assert h.history() == []

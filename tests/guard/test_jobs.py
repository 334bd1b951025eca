"""``guard.reserve(...)``: one reservation for a whole job; the guarded calls inside draw on it.

Embedding calls use the real openai SDK on a transport that reports, as OpenAI does, the tokens of the
input counted with the model's encoding (cl100k_base for text-embedding-3-*): $0.02 per million tokens
is exactly 20 nano-USD per token, so every amount below is checked to the nano-USD.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, ConfigurationError, Usage
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    anthropic_message,
    chat_completion,
    embedding_response,
    openai_sse,
    responses_stream_events,
)
from tests.sdk_http import OPENAI_HTTP

MODEL = "text-embedding-3-small"
NANO_PER_TOKEN = 20  # $0.02 per million tokens
CL100K = budgetguard.get_encoding("cl100k_base")
CHUNKS = [f"Chunk {i}: budgets are plans for money, written down before it is spent." for i in range(12)]
HOLD = "0.002"  # 2_000_000 nano-USD


def tokens(value: Any) -> int:
    if isinstance(value, str):
        return len(CL100K.encode(value))
    if value and all(isinstance(v, int) for v in value):
        return len(value)
    return sum(tokens(v) for v in value)


class EmbeddingsAPI:
    """/v1/embeddings with OpenAI's usage: prompt_tokens = the input's tokens in the model's encoding."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.requests.append(body)
        count = tokens(body["input"])
        vectors = len(body["input"]) if isinstance(body["input"], list) else 1
        return OPENAI_HTTP.Response(200, json=embedding_response(body["model"], count, vectors))


def clients(api: Any) -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    transport = OPENAI_HTTP.MockTransport(api)
    common: dict[str, Any] = {"base_url": "http://openai.test/v1", "api_key": "sk-test", "max_retries": 0}
    return (
        openai.OpenAI(http_client=OPENAI_HTTP.Client(transport=transport), **common),
        openai.AsyncOpenAI(http_client=OPENAI_HTTP.AsyncClient(transport=transport), **common),
    )


def test_a_job_reserves_once_and_commits_what_its_calls_cost(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = EmbeddingsAPI()
    embed = h.guard.with_budget(clients(api)[0].embeddings.create)

    with h.guard.reserve(usd=HOLD, feature="ingest") as job:
        assert h.held("feature:ingest") == 2_000_000  # the job's hold, on the store
        for start in range(0, len(CHUNKS), 4):
            embed(model=MODEL, input=CHUNKS[start : start + 4])  # a batch of inputs: one draw
        assert h.held("feature:ingest") == 2_000_000  # calls drew on the job, not on the store
        assert h.history() == []
        expected = tokens(CHUNKS) * NANO_PER_TOKEN
        assert job.spent == budgetguard.to_usd(expected)
        assert job.remaining == budgetguard.to_usd(2_000_000 - expected)
        assert job.calls == 3

    assert len(api.requests) == 3
    h.assert_settled({"feature:ingest": expected, "global": expected})
    (entry,) = h.history()
    assert entry.event == "committed"
    assert set(entry.scopes) == {"global", "feature:ingest"}
    assert entry.amounts["usd"] == expected
    assert entry.data["job"] == "ingest"
    assert entry.data["calls"] == 3
    assert entry.data["models"] == {MODEL: 3}
    assert entry.data["usage"] == Usage(input_tokens=tokens(CHUNKS)).to_dict()
    kinds = [e.kind for e in h.events if e.reservation_id == entry.reservation_id]
    assert kinds == ["committed"]


def test_a_call_with_a_budget_the_job_does_not_hold_is_an_error(make_guard: MakeGuard) -> None:
    """Drawing on the job would bypass the call's own user budget: refused before anything is sent."""
    h = make_guard()
    api = EmbeddingsAPI()
    embed = h.guard.with_budget(clients(api)[0].embeddings.create, user="alice")
    outside = r"budgets on user:alice, which the job does not hold"
    with h.guard.reserve(usd=HOLD, feature="ingest"), pytest.raises(ConfigurationError, match=outside):
        embed(model=MODEL, input=CHUNKS[0])
    with h.guard.reserve(usd=HOLD, feature="ingest", user="alice") as job:  # a job that holds alice's
        embed(model=MODEL, input=CHUNKS[0])
        assert job.calls == 1
    assert api.requests and len(api.requests) == 1
    assert h.spent("user:alice") == tokens(CHUNKS[0]) * NANO_PER_TOKEN


def test_a_call_that_does_not_fit_in_the_job_is_refused(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = EmbeddingsAPI()
    embed = h.guard.with_budget(clients(api)[0].embeddings.create)
    per_chunk = tokens(CHUNKS[0]) * NANO_PER_TOKEN
    hold = 3 * per_chunk + per_chunk // 2  # room for three chunks, not four

    with h.guard.reserve(usd=budgetguard.to_usd(hold), feature="ingest") as job:
        for chunk in CHUNKS[:3]:
            embed(model=MODEL, input=chunk)
        with pytest.raises(BudgetExceededError) as refused:
            embed(model=MODEL, input=CHUNKS[3])
        assert job.calls == 3

    assert refused.value.scope == "job:ingest"
    assert refused.value.period == "total"
    assert refused.value.limit == budgetguard.to_usd(hold)
    assert refused.value.spent == budgetguard.to_usd(3 * per_chunk)
    assert refused.value.requested == budgetguard.to_usd(per_chunk)
    assert len(api.requests) == 3  # the refused call was never sent
    h.assert_settled({"feature:ingest": 3 * per_chunk})
    assert [e.kind for e in h.events].count("refused") == 1


async def test_async_job_with_concurrent_calls(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = EmbeddingsAPI()
    embed = h.guard.with_budget(clients(api)[1].embeddings.create)

    async with h.guard.reserve(usd=HOLD, feature="ingest") as job:
        await asyncio.gather(*(embed(model=MODEL, input=chunk) for chunk in CHUNKS))
        assert job.calls == len(CHUNKS)

    expected = tokens(CHUNKS) * NANO_PER_TOKEN
    h.assert_settled({"feature:ingest": expected, "global": expected})
    assert [e.event for e in h.history()] == ["committed"]


def test_decorated_job_function_sync_and_a_user_function_inside(make_guard: MakeGuard) -> None:
    """``@guard.reserve(...)`` on the job: every call is one job. The embedding call inside is a
    user function whose arguments carry the request (model, input as token arrays)."""
    h = make_guard()
    api = EmbeddingsAPI()
    client = clients(api)[0]

    @h.guard.with_budget
    def embed(model: str, input: list[list[int]]) -> Any:
        return client.embeddings.create(model=model, input=input)

    @h.guard.reserve(usd=HOLD, feature="ingest")
    def ingest(chunks: list[str]) -> int:
        return len(embed(MODEL, [CL100K.encode(chunk) for chunk in chunks]).data)

    assert ingest(CHUNKS[:5]) == 5
    assert ingest(CHUNKS[5:]) == 7
    expected = tokens(CHUNKS) * NANO_PER_TOKEN
    h.assert_settled({"feature:ingest": expected})
    assert [e.amounts["usd"] for e in h.history()] == [
        tokens(CHUNKS[:5]) * NANO_PER_TOKEN,
        tokens(CHUNKS[5:]) * NANO_PER_TOKEN,
    ]


async def test_decorated_async_job_function(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = EmbeddingsAPI()
    embed = h.guard.with_budget(clients(api)[1].embeddings.create)

    @h.guard.reserve(usd=HOLD, feature="ingest")
    async def ingest(chunks: list[str]) -> None:
        await embed(model=MODEL, input=chunks)

    await ingest(CHUNKS)
    h.assert_settled({"feature:ingest": tokens(CHUNKS) * NANO_PER_TOKEN})


def test_a_job_the_budget_cannot_hold_is_refused_up_front(make_guard: MakeGuard) -> None:
    h = make_guard()
    with pytest.raises(BudgetExceededError) as refused, h.guard.reserve(usd="6", feature="ingest"):
        raise AssertionError("the block must not run")
    assert refused.value.scope == "feature:ingest"
    h.assert_settled({"feature:ingest": 0, "global": 0})
    assert [e.event for e in h.history()] == ["refused"]


def test_an_error_inside_the_job_commits_what_was_spent(make_guard: MakeGuard) -> None:
    h = make_guard()
    embed = h.guard.with_budget(clients(EmbeddingsAPI())[0].embeddings.create)

    def ingest() -> None:
        with h.guard.reserve(usd=HOLD, feature="ingest"):
            embed(model=MODEL, input=CHUNKS[0])
            raise KeyError("the job's own bug")

    with pytest.raises(KeyError):
        ingest()
    h.assert_settled({"feature:ingest": tokens(CHUNKS[0]) * NANO_PER_TOKEN})


def test_a_job_needs_an_amount_in_every_unit_its_budgets_count(make_guard: MakeGuard) -> None:
    h = make_guard([Budget("feature", usd="5", per="day"), Budget("feature", tokens=10_000, per="day")])
    with (
        pytest.raises(ConfigurationError, match=r"pass tokens=\.\.\."),
        h.guard.reserve(usd="1", feature="ingest"),
    ):
        pass
    with h.guard.reserve(usd="1", tokens=5_000, feature="ingest") as job:
        h.guard.with_budget(clients(EmbeddingsAPI())[0].embeddings.create)(model=MODEL, input=CHUNKS[0])
    count = tokens(CHUNKS[0])
    assert job.usage == Usage(input_tokens=count)
    h.assert_settled({"feature:ingest": count * NANO_PER_TOKEN})
    h.assert_settled({"feature:ingest": count}, unit=budgetguard.Unit.TOKENS)
    with pytest.raises(ConfigurationError, match="amount"):
        h.guard.reserve(feature="ingest")


def test_nested_jobs_draw_on_the_outer_job(make_guard: MakeGuard) -> None:
    h = make_guard()
    embed = h.guard.with_budget(clients(EmbeddingsAPI())[0].embeddings.create)
    with h.guard.reserve(usd=HOLD, feature="ingest") as outer:
        with h.guard.reserve(usd="0.001", name="pass-1") as inner:
            embed(model=MODEL, input=CHUNKS[:6])
        assert outer.spent == inner.spent > 0
        embed(model=MODEL, input=CHUNKS[6:])
        with pytest.raises(BudgetExceededError, match="job:ingest"), h.guard.reserve(usd="0.002"):
            pass  # the outer job cannot hold another 0.002
    h.assert_settled({"feature:ingest": tokens(CHUNKS) * NANO_PER_TOKEN})
    assert len(h.history(events=["committed"])) == 1


def test_stream_left_open_at_the_end_of_the_job_is_charged_at_its_hold(make_guard: MakeGuard) -> None:
    h = make_guard()
    api = lambda request: OPENAI_HTTP.Response(  # noqa: E731
        200, headers={"content-type": "text/event-stream"}, text=openai_sse(responses_stream_events())
    )
    create = h.guard.with_budget(clients(api)[0].responses.create)
    request = {"model": "o4-mini", "input": "What is a budget?", "max_output_tokens": 2000}
    hold = budgetguard.estimate(request).cost_nano
    with h.guard.reserve(usd="0.05", feature="ingest"):
        stream = create(**request, stream=True)
    (entry,) = h.history()
    assert entry.amounts["usd"] == hold
    assert entry.data["unsettled_calls"] == 1
    stream.close()  # a late settlement changes nothing
    h.assert_settled({"feature:ingest": hold})


def test_batch_results_charged_to_a_job_at_batch_prices(make_guard: MakeGuard) -> None:
    """Batch API output is charged with ``job.charge(line, batch=True)``: half the standard price."""
    h = make_guard()
    openai_line = {
        "id": "batch_req_123",
        "custom_id": "request-1",
        "response": {"status_code": 200, "request_id": "req_123", "body": chat_completion()},
        "error": None,
    }
    anthropic_line = {
        "custom_id": "request-2",
        "result": {"type": "succeeded", "message": anthropic_message()},
    }
    with h.guard.reserve(usd="0.1", feature="nightly") as job:
        # gpt-4o batch: 86 x $1.25 + 1920 x $1.25 (no batch cache price) + 300 x $5 per million
        assert job.charge(openai_line, batch=True) == budgetguard.to_usd(4_007_500)
        # Anthropic reports service_tier "batch" itself: 50 x $1.50 + 10000 x $0.15 + 1500 x $1.875
        # + 500 x $3 + 503 x $7.50 per million
        anthropic_line["result"]["message"]["usage"]["service_tier"] = "batch"
        assert job.charge(anthropic_line, model="claude-sonnet-4-6") == budgetguard.to_usd(9_660_000)
        assert job.usage.output_tokens == GPT4O_USAGE.output_tokens + 503
    h.assert_settled({"feature:nightly": 4_007_500 + 9_660_000})
    with pytest.raises(ConfigurationError, match="ended"):
        job.charge(openai_line, batch=True)


def test_a_job_takes_the_scopes_of_budget_context(make_guard: MakeGuard) -> None:
    h = make_guard()
    embed = h.guard.with_budget(clients(EmbeddingsAPI())[0].embeddings.create)
    with budgetguard.budget_context(user="alice"), h.guard.reserve(usd="0.5", feature="ingest") as job:
        assert h.held("user:alice") == h.held("feature:ingest") == 500_000_000
        embed(model=MODEL, input=CHUNKS[0])
    cost = tokens(CHUNKS[0]) * NANO_PER_TOKEN
    h.assert_settled({"user:alice": cost, "feature:ingest": cost, "global": cost})
    (entry,) = h.history()
    assert set(entry.scopes) == {"global", "user:alice", "feature:ingest"} == set(job.labels)

"""The store is unreachable: fail closed by default (raise, the SDK is not called); fail open only when
configured, and then say so in events (``store_unavailable``, ``spend_lost``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import budgetguard
from budgetguard import AsyncLedger, Budget, Event, Guard, LedgerError, to_usd, track
from tests.guard.payloads import (
    GPT4O_USAGE,
    Reply,
    ScriptedAPI,
    async_openai_client,
    chat_completion,
    chat_request,
    mini_completion,
    nano,
    openai_client,
    openai_sse,
    serve,
)
from tests.redis_server import RedisServer, free_port
from tests.sdk_payloads import chat_stream_chunks

COST = nano("gpt-4o", GPT4O_USAGE)
BUDGETS = [Budget("user", usd="1"), Budget("global", usd="100")]
MakeDownGuard = Callable[..., tuple[Guard, list[Event]]]


@pytest.fixture
def down_url() -> str:
    """A Redis URL on a loopback port nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
async def make_down_guard(down_url: str) -> AsyncIterator[MakeDownGuard]:
    made: list[Guard] = []

    def make(**kwargs: Any) -> tuple[Guard, list[Event]]:
        events: list[Event] = []
        guard = Guard(kwargs.pop("url", down_url), budgets=BUDGETS, on_event=events.append, **kwargs)
        made.append(guard)
        return guard, events

    yield make
    for guard in made:
        guard.close()
        store = guard.async_ledger
        if isinstance(store, AsyncLedger):
            await store.aclose()


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_fail_closed_by_default(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard()
    api = serve(chat_completion())
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(LedgerError) as caught:
        create(**chat_request())

    assert caught.value.__cause__ is not None  # the backend's error, chained
    assert api.requests == []  # no reservation, no call
    assert kinds(events) == ["store_unavailable"]
    assert events[0].scopes == ("global", "user:alice")


async def test_fail_closed_async(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard(on_store_error="fail_closed")
    api = serve(chat_completion())
    client = async_openai_client(api)

    @guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    with pytest.raises(LedgerError):
        await ask("alice", **chat_request())

    assert api.requests == []
    assert kinds(events) == ["store_unavailable"]


def test_fail_open(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard(on_store_error="fail_open")
    api = serve(chat_completion())
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with track() as t:
        result = create(**chat_request())

    assert result.usage.total_tokens == 2306
    assert len(api.requests) == 1
    assert kinds(events) == ["store_unavailable", "spend_lost"]
    unavailable, lost = events
    assert (unavailable.reason or "").startswith("fail_open")
    assert lost.actual == to_usd(COST)  # what the ledger did not record
    assert lost.model == "gpt-4o"
    assert t.cost == to_usd(COST)  # the tracker still counts it


async def test_fail_open_async(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard(on_store_error="fail_open")
    api = serve(chat_completion())
    client = async_openai_client(api)

    @guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    await ask("alice", **chat_request())

    assert len(api.requests) == 1
    assert kinds(events) == ["store_unavailable", "spend_lost"]
    assert events[1].actual == to_usd(COST)


def test_fail_open_stream(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard(on_store_error="fail_open")
    api = serve(openai_sse(chat_stream_chunks()))
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    for _ in create(**chat_request(stream=True)):
        pass

    assert kinds(events) == ["store_unavailable", "spend_lost"]
    assert events[1].actual == to_usd(COST)


def test_fail_open_with_routing(make_down_guard: MakeDownGuard) -> None:
    """Routing reads the counters first; with the store down and fail_open the call must still proceed."""
    guard, events = make_down_guard(on_store_error="fail_open")
    api = serve(chat_completion())
    create = guard.with_budget(
        openai_client(api).chat.completions.create, route=["gpt-4o", "gpt-4o-mini"], at=0.8, user="alice"
    )

    create(**chat_request())

    assert len(api.requests) == 1
    assert "store_unavailable" in kinds(events)
    assert kinds(events)[-1] == "spend_lost"


def test_fail_closed_with_routing(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard()
    api = serve(mini_completion())
    create = guard.with_budget(
        openai_client(api).chat.completions.create, route=["gpt-4o", "gpt-4o-mini"], at=0.8, user="alice"
    )

    with pytest.raises(LedgerError):
        create(**chat_request())

    assert api.requests == []
    assert kinds(events) == ["store_unavailable"]  # as without routing


# -- the store dies while the call is in flight ----------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_fail_open_store_dies_during_the_call(
    make_down_guard: MakeDownGuard, private_redis: RedisServer
) -> None:
    """The call was made and billed; with fail_open its response is returned and the lost charge reported."""
    guard, events = make_down_guard(url=private_redis.url, on_store_error="fail_open")
    api: ScriptedAPI = serve(Reply(200, chat_completion(), before=private_redis.kill))
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    result = create(**chat_request())

    assert result.usage.total_tokens == 2306
    assert len(api.requests) == 1
    assert "spend_lost" in kinds(events)
    assert [e.actual for e in events if e.kind == "spend_lost"] == [to_usd(COST)]


def test_fail_closed_store_dies_during_the_call(
    make_down_guard: MakeDownGuard, private_redis: RedisServer
) -> None:
    guard, _ = make_down_guard(url=private_redis.url)
    api = serve(Reply(200, chat_completion(), before=private_redis.kill))
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")

    with pytest.raises(LedgerError):
        create(**chat_request())

    assert len(api.requests) == 1  # not retried: a retry would be another billed call


def test_on_store_error_is_validated() -> None:
    with pytest.raises(budgetguard.ConfigurationError):
        Guard("memory://", on_store_error="ignore")  # type: ignore[arg-type]


def test_a_job_fails_closed_when_the_store_is_down(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard()
    with pytest.raises(LedgerError), guard.reserve(usd="0.5", user="alice"):
        raise AssertionError("the job must not start")
    assert kinds(events) == ["store_unavailable"]


def test_a_job_fails_open_on_its_own_hold_and_reports_the_lost_spend(make_down_guard: MakeDownGuard) -> None:
    guard, events = make_down_guard(on_store_error="fail_open")
    api = serve(chat_completion())
    create = guard.with_budget(openai_client(api).chat.completions.create)
    hold = budgetguard.estimate(chat_request()).cost_nano * 3 // 2  # room for one call, not two

    with guard.reserve(usd=to_usd(hold), user="alice") as job:
        create(**chat_request())
        with pytest.raises(budgetguard.BudgetExceededError, match="job:job"):
            create(**chat_request())  # the job's own limit still holds without the store

    assert len(api.requests) == 1
    assert job.spent == to_usd(COST)
    lost = [e for e in events if e.kind == "spend_lost"]
    assert [e.actual for e in lost] == [to_usd(COST)]
    assert kinds(events)[0] == "store_unavailable"

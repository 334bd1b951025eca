"""The Django middleware through Django's real test clients (WSGI and ASGI handlers), with guarded
functions and a real OpenAI client streaming from ``MockProvider``; the ledger checked to the nano-USD."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import django
import pytest
from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

import budgetguard as bg
from budgetguard.integrations.django import BudgetMiddleware, ResponseCost
from budgetguard.testing import MockProvider
from tests.integrations.web_helpers import COST, REQUEST, TOO_BIG, make_guard, streamed_as_told, usage_reply
from tests.integrations.web_helpers import user_spent as spent

if not settings.configured:
    settings.configure()
django.setup()

MIDDLEWARE = ["budgetguard.integrations.django.BudgetMiddleware"]
APP: dict[str, Any] = {}  # what the views call: the guarded functions of the test's guard
TOLD: list[ResponseCost] = []  # what on_settled was told


def chat(request: HttpRequest) -> JsonResponse:
    for _ in range(int(request.GET.get("times", 1))):
        APP["ask"](**(TOO_BIG if "big" in request.GET else REQUEST))
    return JsonResponse({"ok": True})


async def achat(request: HttpRequest) -> JsonResponse:
    await APP["aask"](**(TOO_BIG if "big" in request.GET else REQUEST))
    return JsonResponse({"ok": True})


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    APP["ask"](**REQUEST)  # before the headers
    chunks = APP["client"].chat.completions.create(**REQUEST, stream=True)  # reserved now, settled at its end

    def body() -> Iterator[str]:
        for chunk in chunks:
            if chunk.choices:
                yield chunk.choices[0].delta.content or ""
        APP["ask"](**REQUEST)  # after the headers went out: still this request's user

    return StreamingHttpResponse(body())


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def body() -> Any:
        yield "one "
        await APP["aask"](**REQUEST)  # read by the ASGI handler after the middleware returned
        yield "two"

    return StreamingHttpResponse(body())


urlpatterns = [
    path("chat", chat), path("achat", achat), path("health", health), path("stream", stream),
    path("astream", astream),
]  # fmt: skip


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = make_guard()
    APP["ask"] = made.with_budget(feature="chat")(usage_reply)

    async def aask(**request: Any) -> dict[str, Any]:
        return usage_reply()

    APP["aask"] = made.with_budget()(aask)
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        BUDGETGUARD={"guard": made, "scopes": {"user": "x-user-id"}, "on_settled": TOLD.append},
    ):
        TOLD.clear()
        yield made
    made.close()


def test_responses_carry_the_cost_tokens_and_remaining_budget(guard: bg.Guard) -> None:
    client = Client()
    first = client.get("/chat", {"times": 2}, headers={"x-user-id": "alice"})
    second = client.get("/chat", headers={"x-user-id": "alice"})
    assert first.status_code == 200 and first.json() == {"ok": True}
    assert Decimal(first.headers["X-Budget-Cost-USD"]) == 2 * COST
    assert (first.headers["X-Budget-Input-Tokens"], first.headers["X-Budget-Output-Tokens"]) == ("400", "100")
    assert Decimal(first.headers["X-Budget-Remaining-USD"]) == Decimal("0.01") - 2 * COST
    assert Decimal(second.headers["X-Budget-Cost-USD"]) == COST  # per request
    assert Decimal(second.headers["X-Budget-Remaining-USD"]) == Decimal("0.01") - 3 * COST
    assert spent(guard, "alice") == bg.to_nano(3 * COST)


def test_a_refusal_is_a_429_with_retry_after_and_the_fastapi_body(guard: bg.Guard) -> None:
    client = Client()
    refused = client.get("/chat", {"big": 1}, headers={"x-user-id": "bob"})
    other = client.get("/chat", headers={"x-user-id": "carol"})
    assert refused.status_code == 429 and other.status_code == 200
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(refused.headers["Retry-After"]) - (tomorrow - datetime.now(UTC)).total_seconds()) <= 5
    body = refused.json()
    assert (body["error"], body["scope"], body["period"], body["unit"]) == (
        "budget_exceeded",
        "user:bob",
        "day",
        "usd",
    )
    assert body["left"] == "0.01" == refused.headers["X-Budget-Remaining-USD"]
    assert datetime.fromisoformat(body["resets_at"]) == tomorrow and body["retry_after"] > 0
    assert refused.headers["X-Budget-Cost-USD"] == "0"
    assert spent(guard, "bob") == 0 and spent(guard, "carol") == bg.to_nano(COST)


def test_402_and_scopes_from_a_function_of_the_request(guard: bg.Guard) -> None:
    options = {"guard": guard, "scopes": {"user": lambda r: r.GET.get("who")}, "status_code": 402}
    with override_settings(BUDGETGUARD=options):
        client = Client()
        ok = client.get("/chat", {"who": "dana"})
        refused = client.get("/chat", {"who": "dana", "big": 1})
    assert (ok.status_code, refused.status_code) == (200, 402)
    assert spent(guard, "dana") == bg.to_nano(COST)


def test_a_request_without_the_user_id_is_a_400_and_spends_nothing(guard: bg.Guard) -> None:
    client = Client()
    missing = client.get("/chat")
    empty = client.get("/chat", headers={"x-user-id": ""})
    too_long = client.get("/chat", headers={"x-user-id": "x" * 70_000})
    healthy = client.get("/health")  # no guarded call: no id needed
    for response in (missing, empty):
        assert response.status_code == 400
        assert (response.json()["error"], response.json()["kinds"]) == ("missing_scope", ["user"])
        assert "x-user-id header" in response.json()["message"]
    assert too_long.status_code == 400 and too_long.json()["error"] == "bad_scope"
    assert healthy.status_code == 200
    [status] = guard.ledger.status([guard.counters_for([bg.Scope("global")])[0]])
    assert (status.spent, status.held) == (0, 0)


def test_a_streamed_response_charges_its_stream_and_later_calls_to_the_request_user(guard: bg.Guard) -> None:
    with MockProvider() as api:
        APP["client"] = guard.wrap(api.openai())
        response = Client().get("/stream", headers={"x-user-id": "erin"})
        assert TOLD == []  # not before the body has ended
        text = b"".join(response.streaming_content).decode()
        response.close()
    assert text
    streamed_as_told(guard, response.headers, TOLD, api.usages[0])


async def test_async_views_and_async_streams(guard: bg.Guard) -> None:
    client = AsyncClient()
    ok = await client.get("/achat", headers={"x-user-id": "finn"})
    refused = await client.get("/achat", {"big": 1}, headers={"x-user-id": "finn"})
    streamed = await client.get("/astream", headers={"x-user-id": "finn"})
    text = b"".join([chunk async for chunk in streamed.streaming_content])
    assert ok.status_code == 200 and Decimal(ok.headers["X-Budget-Cost-USD"]) == COST
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert text == b"one two" and "X-Budget-Cost-USD" not in streamed.headers  # its call came later
    assert (streamed.headers["X-Budget-Settled-USD"], streamed.headers["X-Budget-Held-USD"]) == ("0", "0")
    assert spent(guard, "finn") == 2 * bg.to_nano(COST)
    assert [(t.streamed, t.cost) for t in TOLD] == [(False, COST), (False, 0), (True, COST)]


def test_bad_settings_fail_at_start_up() -> None:
    with pytest.raises(bg.ConfigurationError, match="unknown settings"):
        BudgetMiddleware(health, scopes={}, statuscode=402)
    with pytest.raises(bg.ConfigurationError):
        BudgetMiddleware(health, scopes={"global": "x-anything"})
    with pytest.raises(TypeError):
        BudgetMiddleware(health, scopes={"user": 42})


def test_an_async_scope_function_is_awaited_in_async_views_and_refused_in_sync_resolvers() -> None:
    """An ``async def`` id function (``await request.auser()``) is awaited by the async middleware; a
    resolver that cannot await it says so instead of charging a coroutine's repr as the id."""
    import asyncio

    from budgetguard.integrations._http import resolve_ids, resolve_ids_sync

    async def user_of(request: Any) -> str:
        return "alice"

    def no_header(request: Any, name: str) -> None:
        return None

    assert asyncio.run(resolve_ids({"user": user_of}, object(), no_header)) == {"user": "alice"}
    with pytest.raises(bg.ConfigurationError, match="async"):
        resolve_ids_sync({"user": user_of}, object(), no_header)

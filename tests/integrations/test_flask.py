"""The Flask extension through Flask's real test client, with guarded functions and a real OpenAI
client streaming from ``MockProvider``; the ledger checked to the nano-USD."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask, Response, request

import budgetguard as bg
from budgetguard.integrations.flask import BudgetGuard, ResponseCost
from budgetguard.testing import MockProvider
from tests.integrations.web_helpers import COST, REQUEST, TOO_BIG, make_guard, streamed_as_told, usage_reply
from tests.integrations.web_helpers import user_spent as spent


def build(guard: bg.Guard, api: MockProvider | None = None, **options: Any) -> Flask:
    ask = guard.with_budget(feature="chat")(usage_reply)
    app = Flask(__name__)
    BudgetGuard(app, guard=guard, **{"scopes": {"user": "X-User-Id"}, **options})

    @app.get("/chat")
    def chat() -> dict[str, Any]:
        for _ in range(int(request.args.get("times", 1))):
            ask(**(TOO_BIG if "big" in request.args else REQUEST))
        return {"ok": True}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/stream")
    def stream() -> Response:
        ask(**REQUEST)  # before the headers
        assert api is not None
        chunks = guard.wrap(api.openai()).chat.completions.create(**REQUEST, stream=True)

        def body() -> Iterator[str]:
            for chunk in chunks:  # the stream is settled at its end, after the headers went out
                if chunk.choices:
                    yield chunk.choices[0].delta.content or ""
            ask(**REQUEST)  # after the request was torn down: still this request's user

        return Response(body())

    return app


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = make_guard()
    yield made
    made.close()


def test_responses_carry_the_cost_tokens_and_remaining_budget(guard: bg.Guard) -> None:
    client = build(guard).test_client()
    first = client.get("/chat?times=2", headers={"X-User-Id": "alice"})
    second = client.get("/chat", headers={"X-User-Id": "alice"})
    assert first.status_code == 200 and first.json == {"ok": True}
    assert Decimal(first.headers["X-Budget-Cost-USD"]) == 2 * COST
    assert (first.headers["X-Budget-Input-Tokens"], first.headers["X-Budget-Output-Tokens"]) == ("400", "100")
    assert Decimal(first.headers["X-Budget-Remaining-USD"]) == Decimal("0.01") - 2 * COST
    assert Decimal(second.headers["X-Budget-Cost-USD"]) == COST  # per request
    assert Decimal(second.headers["X-Budget-Remaining-USD"]) == Decimal("0.01") - 3 * COST
    assert spent(guard, "alice") == bg.to_nano(3 * COST)


def test_a_refusal_is_a_429_with_retry_after_and_the_fastapi_body(guard: bg.Guard) -> None:
    client = build(guard).test_client()
    refused = client.get("/chat?big=1", headers={"X-User-Id": "bob"})
    other = client.get("/chat", headers={"X-User-Id": "carol"})
    assert refused.status_code == 429 and other.status_code == 200
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(refused.headers["Retry-After"]) - (tomorrow - datetime.now(UTC)).total_seconds()) <= 5
    body = refused.json
    assert body is not None
    assert (body["error"], body["scope"], body["period"], body["unit"]) == (
        "budget_exceeded", "user:bob", "day", "usd",
    )  # fmt: skip
    assert body["left"] == "0.01" == refused.headers["X-Budget-Remaining-USD"]
    assert datetime.fromisoformat(body["resets_at"]) == tomorrow and body["retry_after"] > 0
    assert refused.headers["X-Budget-Cost-USD"] == "0"
    assert spent(guard, "bob") == 0 and spent(guard, "carol") == bg.to_nano(COST)


def test_402_and_scopes_from_a_function_of_the_request(guard: bg.Guard) -> None:
    app = build(guard, scopes={"user": lambda r: r.args.get("who")}, status_code=402)
    client = app.test_client()
    ok = client.get("/chat?who=dana")
    refused = client.get("/chat?who=dana&big=1")
    assert (ok.status_code, refused.status_code) == (200, 402)
    assert spent(guard, "dana") == bg.to_nano(COST)


def test_a_request_without_the_user_id_is_a_400_and_spends_nothing(guard: bg.Guard) -> None:
    client = build(guard).test_client()
    missing = client.get("/chat")
    empty = client.get("/chat", headers={"X-User-Id": ""})
    too_long = client.get("/chat", headers={"X-User-Id": "x" * 70_000})
    healthy = client.get("/health")  # no guarded call: no id needed
    for response in (missing, empty):
        assert response.status_code == 400 and response.json is not None
        assert (response.json["error"], response.json["kinds"]) == ("missing_scope", ["user"])
        assert "X-User-Id header" in response.json["message"]
    assert too_long.status_code == 400 and too_long.json == {
        "error": "bad_scope",
        "message": too_long.json["message"],
    }
    assert healthy.status_code == 200
    [status] = guard.ledger.status([guard.counters_for([bg.Scope("global")])[0]])
    assert (status.spent, status.held) == (0, 0)


def test_a_streamed_response_charges_its_stream_and_later_calls_to_the_request_user(guard: bg.Guard) -> None:
    with MockProvider() as api:
        told: list[ResponseCost] = []
        client = build(guard, api, on_settled=told.append).test_client()
        response = client.get("/stream", headers={"X-User-Id": "erin"}, buffered=False)
        assert told == []  # not before the body has ended
        text = response.get_data(as_text=True)
        response.close()
    assert text
    streamed_as_told(guard, response.headers, told, api.usages[0])


def test_bad_settings_fail_at_start_up() -> None:
    with pytest.raises(bg.ConfigurationError):
        BudgetGuard(scopes={"global": "X-Anything"})
    with pytest.raises(TypeError):
        BudgetGuard(scopes={"user": 42})  # type: ignore[dict-item]

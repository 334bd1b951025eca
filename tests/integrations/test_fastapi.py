"""The ASGI middleware and the FastAPI dependency, through FastAPI's real TestClient."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from starlette.background import BackgroundTask

import budgetguard as bg
from budgetguard.integrations.fastapi import (
    BudgetMiddleware,
    ResponseCost,
    budget_exceeded_handler,
    budget_scope,
    refusal_response,
)
from budgetguard.testing import MockProvider
from tests.integrations.web_helpers import REQUEST, TOO_BIG, make_guard, stream_cost, usage_reply

USAGE = bg.Usage(input_tokens=200, output_tokens=50)
COST = bg.cost("gpt-4o-mini", USAGE)


async def auth_user(request: Request) -> str | None:
    """The user of a request, as an auth layer would find it."""
    token = request.headers.get("authorization", "")
    return token.removeprefix("Bearer user-") or None


UserSpend = Annotated[bg.Tracker, Depends(budget_scope(user=auth_user))]


def build(
    status_code: int = 429, options: dict[str, Any] | None = None, **scopes: Any
) -> tuple[FastAPI, bg.Guard]:
    guard = bg.Guard(
        "memory://",
        budgets=[bg.Budget("user", usd="0.01", per="day"), bg.Budget("global", usd="100", per="day")],
        **(options or {}),
    )

    @guard.with_budget(feature="chat")
    async def ask(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": USAGE.input_tokens, "completion_tokens": USAGE.output_tokens}}

    @guard.with_budget()
    def ask_sync(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": USAGE.input_tokens, "completion_tokens": USAGE.output_tokens}}

    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60}
    app = FastAPI()
    app.add_middleware(
        BudgetMiddleware, guard=guard, scopes=scopes or {"user": "x-user-id"}, status_code=status_code
    )

    @app.get("/chat")
    async def chat(times: int = 1, tokens: int = 60) -> dict[str, Any]:
        app.state.runs = getattr(app.state, "runs", 0) + 1
        for _ in range(times):
            await ask(**{**request, "max_tokens": tokens})
        return {"ok": True}

    @app.get("/sync")
    def chat_sync() -> dict[str, Any]:
        ask_sync(**request)
        return {"ok": True}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        await ask(**request)

        async def body() -> Any:
            yield b"one "
            await ask(**request)  # charged, after the headers went out
            yield b"two"

        return StreamingResponse(body())

    return app, guard


def user_spent(guard: bg.Guard, user: str) -> int:
    [spec] = guard.counters_for([bg.Scope("user", user)])
    [status] = guard.ledger.status([spec])
    return status.spent


def test_responses_carry_the_cost_tokens_and_remaining_budget() -> None:
    app, guard = build()
    with TestClient(app) as client:
        first = client.get("/chat", params={"times": 2}, headers={"x-user-id": "alice"})
        second = client.get("/sync", headers={"x-user-id": "alice"})

    assert first.status_code == 200 and first.json() == {"ok": True}
    assert Decimal(first.headers["x-budget-cost-usd"]) == 2 * COST
    assert first.headers["x-budget-input-tokens"] == "400"
    assert first.headers["x-budget-output-tokens"] == "100"
    assert Decimal(first.headers["x-budget-remaining-usd"]) == Decimal("0.01") - 2 * COST
    assert Decimal(second.headers["x-budget-cost-usd"]) == COST  # per request, sync endpoints too
    assert Decimal(second.headers["x-budget-remaining-usd"]) == Decimal("0.01") - 3 * COST
    assert user_spent(guard, "alice") == bg.to_nano(3 * COST)


def test_a_refusal_becomes_a_429_with_retry_after_at_the_reset() -> None:
    app, guard = build()
    with TestClient(app) as client:
        refused = client.get("/chat", params={"tokens": 100_000}, headers={"x-user-id": "bob"})
        other = client.get("/chat", headers={"x-user-id": "carol"})  # another user is unaffected

    assert refused.status_code == 429
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = (tomorrow - datetime.now(UTC)).total_seconds()
    assert abs(int(refused.headers["retry-after"]) - expected) <= 5
    body = refused.json()
    assert body["error"] == "budget_exceeded"
    assert (body["scope"], body["period"], body["unit"]) == ("user:bob", "day", "usd")
    assert datetime.fromisoformat(body["resets_at"]) == tomorrow
    assert refused.headers["x-budget-cost-usd"] == "0"
    assert other.status_code == 200
    assert user_spent(guard, "bob") == 0
    # money is left, but not the call's worst case: the body says so, and agrees with the header
    assert body["left"] == "0.01" == refused.headers["x-budget-remaining-usd"]
    assert Decimal(body["needed"]) > Decimal(body["left"])
    assert body["message"] == (
        f"the day budget of user:bob has $0.01 left, and this call needs up to ${body['needed']} "
        "(its worst case): ask for less (max tokens, a cheaper model) or wait for the reset"
    )


@pytest.mark.parametrize(
    ("unit", "amounts", "message", "left"),
    [
        ("usd", ("0.01", "0.008", "0.002", "0.0004"),
         "the day budget of user:gus is used up: $0.01 ($0.002 of it held by calls in flight)", "0"),
        ("usd", ("0.01", "0.01", "0", "0.0004"), "the day budget of user:gus is used up: $0.01", "0"),
        ("usd", ("0.01", "0.012", "0", "0.0004"), "the day budget of user:gus is used up: $0.01", "0"),
        ("tokens", (1000, 400, 0, 900),
         "the day budget of user:gus has 600 left, and this call needs up to 900 (its worst case): ask for "
         "less (max tokens, a cheaper model) or wait for the reset", 600),
    ],
)  # fmt: skip
def test_a_refusal_says_whether_the_budget_is_used_up_or_the_call_too_big(
    unit: str, amounts: tuple[Any, ...], message: str, left: Any
) -> None:
    limit, spent, held, requested = (Decimal(a) if unit == "usd" else a for a in amounts)
    refused = bg.BudgetExceededError(
        scope="user:gus", unit=unit, period="day", limit=limit, spent=spent, held=held, requested=requested,
        resets_at=None,
    )  # fmt: skip
    body = json.loads(refusal_response(refused).body)
    assert (body["message"], body["left"]) == (message, left)
    assert body["needed"] == (f"{requested:f}" if unit == "usd" else requested)


def test_the_status_code_is_configurable_and_scopes_can_come_from_a_callable() -> None:
    app, guard = build(status_code=402, user=lambda request: request.query_params.get("who"))
    with TestClient(app) as client:
        ok = client.get("/chat", params={"who": "dana"})
        refused = client.get("/chat", params={"who": "dana", "tokens": 100_000})
    assert ok.status_code == 200 and refused.status_code == 402
    assert user_spent(guard, "dana") == bg.to_nano(COST)


def test_a_request_without_the_user_id_is_a_400_and_spends_nothing() -> None:
    """A budget applies to every user: a request that names none would have no per-user limit (50 large
    requests spent twice the limit). Its guarded call is refused, and the request answered 400, telling
    the client which header to send; routes that make no guarded call need no id."""
    app, guard = build()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    with TestClient(app) as client:
        responses = [client.get("/chat", params={"tokens": 2000}) for _ in range(50)]
        empty = client.get("/chat", headers={"x-user-id": ""})
        healthy = client.get("/health")

    for response in [*responses, empty]:  # (an empty header names no id)
        assert response.status_code == 400
        body = response.json()
        assert (body["error"], body["kinds"]) == ("missing_scope", ["user"])
        assert "x-user-id header" in body["message"] and "Guard(" not in body["message"]
    assert healthy.status_code == 200
    [status] = guard.ledger.status([guard.counters_for([bg.Scope("global")])[0]])
    assert status.spent == 0 and status.held == 0


@pytest.mark.parametrize(
    ("options", "charged"),
    [({"missing_scope": "skip"}, None), ({"default_scopes": {"user": "anonymous"}}, "anonymous")],
)
def test_without_the_user_id_a_request_is_skipped_or_charged_to_the_default_id(
    options: dict[str, Any], charged: str | None
) -> None:
    app, guard = build(options=options)
    with TestClient(app) as client:
        response = client.get("/chat")
    assert response.status_code == 200
    left = Decimal("0.01") if charged else Decimal("100")  # the user budget of the shared id, or global's
    assert Decimal(response.headers["x-budget-remaining-usd"]) == left - COST
    if charged:
        assert user_spent(guard, charged) == bg.to_nano(COST)


def test_a_scope_kind_without_a_budget_is_not_required() -> None:
    app, guard = build(user="x-user-id", team="x-team-id")
    with TestClient(app) as client:
        response = client.get("/chat", headers={"x-user-id": "gil"})
    assert response.status_code == 200
    assert user_spent(guard, "gil") == bg.to_nano(COST)


def test_a_scope_id_no_store_can_hold_is_a_400() -> None:
    app, _ = build()
    with TestClient(app) as client:
        response = client.get("/chat", headers={"x-user-id": "x" * 70_000})
    assert response.status_code == 400 and response.json()["error"] == "bad_scope"


def test_a_streamed_body_gets_no_cost_header_before_its_calls_are_made() -> None:
    """The body makes a guarded call after the headers went: no cost header (a 0, or the first call's
    cost, would be false), but what was settled and held when they went."""
    app, guard = build()
    with TestClient(app) as client:
        response = client.get("/stream", headers={"x-user-id": "erin"})
    assert response.text == "one two"
    assert "x-budget-cost-usd" not in response.headers and "trailer" not in response.headers
    assert Decimal(response.headers["x-budget-settled-usd"]) == COST  # the call before the body
    assert response.headers["x-budget-held-usd"] == "0"
    assert user_spent(guard, "erin") == bg.to_nano(2 * COST)


def sse_app(api: MockProvider, told: list[ResponseCost]) -> tuple[FastAPI, bg.Guard]:
    """An endpoint streaming a guarded SSE call to the local provider as its own SSE response."""
    guard = make_guard()
    ask = guard.with_budget(feature="chat")(usage_reply)
    client = guard.wrap(api.async_openai())
    app = FastAPI()
    app.add_middleware(BudgetMiddleware, guard=guard, scopes={"user": "x-user-id"}, on_settled=told.append)

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        ask(**REQUEST)  # settled before the headers
        chunks = await client.chat.completions.create(**REQUEST, stream=True)  # held: settled at its end

        async def body() -> Any:
            async for chunk in chunks:
                if chunk.choices:
                    yield f"data: {chunk.choices[0].delta.content or ''}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    @app.get("/whole")
    async def whole() -> dict[str, Any]:
        ask(**REQUEST)
        return {"ok": True}

    @app.get("/open")
    async def still_open() -> JSONResponse:  # a whole body, sent while its guarded stream is still open
        chunks = await client.chat.completions.create(**REQUEST, stream=True)
        return JSONResponse({"ok": True}, background=BackgroundTask(chunks.close))

    return app, guard


def test_a_streamed_guarded_sse_call_reports_its_hold_then_its_cost_to_the_hook() -> None:
    told: list[ResponseCost] = []
    with MockProvider() as api:
        app, guard = sse_app(api, told)
        with TestClient(app) as client:
            streamed = client.get("/sse", headers={"x-user-id": "erin"})
            whole = client.get("/whole", headers={"x-user-id": "erin"})

    stream_nano = stream_cost(api.usages[0])
    _, stream_entry, _ = guard.ledger.history(events=["committed"])
    assert streamed.text.startswith("data: ") and "x-budget-cost-usd" not in streamed.headers
    assert Decimal(streamed.headers["x-budget-settled-usd"]) == COST
    # what the stream held when the headers went: its reservation, the journaled estimate
    assert Decimal(streamed.headers["x-budget-held-usd"]) == Decimal(stream_entry.data["estimated_usd"]) > 0
    assert Decimal(whole.headers["x-budget-cost-usd"]) == COST and "x-budget-held-usd" not in whole.headers
    first, second = told
    assert (first.streamed, first.held, first.calls, first.scopes) == (True, 0, 2, {"user": "erin"})
    assert (
        bg.to_nano(first.cost)
        == bg.to_nano(COST) + stream_nano
        == stream_entry.amounts["usd"] + bg.to_nano(COST)
    )
    assert (second.streamed, second.cost) == (False, COST)
    assert user_spent(guard, "erin") == 2 * bg.to_nano(COST) + stream_nano
    assert [s.held for s in guard.ledger.status(guard.counters_for([bg.Scope("user", "erin")]))] == [0]


def test_the_dependency_scopes_one_route() -> None:
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="0.01", per="day")])

    @guard.with_budget()
    async def ask(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": USAGE.input_tokens, "completion_tokens": USAGE.output_tokens}}

    app = FastAPI()
    app.add_exception_handler(bg.BudgetExceededError, budget_exceeded_handler)
    app.add_exception_handler(bg.MissingScopeError, budget_exceeded_handler)

    @app.get("/ask")
    async def route(spend: UserSpend, tokens: int = 60) -> dict[str, str]:
        await ask(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=tokens)
        return {"cost": str(spend.cost)}

    with TestClient(app) as client:
        ok = client.get("/ask", headers={"authorization": "Bearer user-finn"})
        refused = client.get(
            "/ask", params={"tokens": 100_000}, headers={"authorization": "Bearer user-finn"}
        )
        anonymous = client.get("/ask")  # the guarded call names no user: refused, 400
    assert anonymous.status_code == 400 and anonymous.json()["kinds"] == ["user"]
    assert ok.status_code == 200 and Decimal(ok.json()["cost"]) == COST
    assert refused.status_code == 429 and refused.json()["scope"] == "user:finn"
    assert "retry-after" in refused.headers
    assert user_spent(guard, "finn") == bg.to_nano(COST)


def test_bad_scope_settings_fail_at_start_up() -> None:
    with pytest.raises(bg.ConfigurationError):
        BudgetMiddleware(FastAPI(), scopes={"global": "x-anything"})
    with pytest.raises(TypeError):
        budget_scope(user=42)  # type: ignore[arg-type]


def h2_get(
    port: int, path: str, headers: list[tuple[str, str]]
) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """One GET over HTTP/2 without TLS (prior knowledge), as gRPC-style clients send it: the response's
    headers, body and trailers (h2, the library hypercorn itself speaks HTTP/2 with)."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    head: dict[str, str] = {}
    trailers: dict[str, str] = {}
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(conn.data_to_send())
        request = [
            (":method", "GET"),
            (":path", path),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{port}"),
        ]
        conn.send_headers(1, [*request, *headers], end_stream=True)
        sock.sendall(conn.data_to_send())
        ended = False
        while not ended:
            data = sock.recv(65536)
            assert data, "the server closed the connection before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    head = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    return head, body, trailers


@contextmanager
def hypercorn_serving(app: FastAPI) -> Iterator[int]:
    """``app`` served by hypercorn on a free loopback port, in a thread, until the block ends."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve(app, config, shutdown_trigger=stop.wait),)
    )  # type: ignore[arg-type]
    thread.start()
    try:
        for _ in range(200):  # until it listens (bounded: 10 s)
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            threading.Event().wait(0.05)
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def test_over_http2_the_cost_follows_as_trailers_when_the_client_asks() -> None:
    """hypercorn offers ASGI's http.response.trailers over HTTP/2: the headers announce the trailers
    (``Trailer``) and hold no cost; the trailers carry it once the stream has settled."""
    told: list[ResponseCost] = []
    with MockProvider() as api:
        app, guard = sse_app(api, told)
        with hypercorn_serving(app) as port:
            head, body, trailers = h2_get(port, "/sse", [("te", "trailers"), ("x-user-id", "erin")])
            plain, _, none = h2_get(port, "/sse", [("x-user-id", "erin")])  # no TE: trailers

    stream_nano = stream_cost(api.usages[0])
    assert head[":status"] == "200" and body.startswith(b"data: ")
    assert "x-budget-cost-usd" not in head and Decimal(head["x-budget-settled-usd"]) == COST
    assert (
        head["trailer"]
        == "X-Budget-Cost-USD, X-Budget-Input-Tokens, X-Budget-Output-Tokens, X-Budget-Held-USD"
    )
    assert bg.to_nano(Decimal(trailers["x-budget-cost-usd"])) == bg.to_nano(COST) + stream_nano
    assert trailers["x-budget-held-usd"] == "0"
    assert int(trailers["x-budget-input-tokens"]) == USAGE.input_tokens + api.usages[0]["prompt_tokens"]
    assert "trailer" not in plain and none == {} and "x-budget-cost-usd" not in plain
    assert [t.cost for t in told] == [Decimal(trailers["x-budget-cost-usd"])] * 2
    assert user_spent(guard, "erin") == 2 * (bg.to_nano(COST) + stream_nano)


def test_a_whole_body_sent_while_a_guarded_call_is_open_gets_no_cost_header() -> None:
    """The stream is opened (reserved) and closed unread after the response went: the headers could not
    know its cost; on_settled, told after the close, has the charge the ledger made."""
    told: list[ResponseCost] = []
    with MockProvider() as api:
        app, guard = sse_app(api, told)
        with TestClient(app) as client:
            response = client.get("/open", headers={"x-user-id": "erin"})

    (entry,) = guard.ledger.history()
    assert response.json() == {"ok": True} and "x-budget-cost-usd" not in response.headers
    assert Decimal(response.headers["x-budget-held-usd"]) == Decimal(entry.data["estimated_usd"]) > 0
    assert response.headers["x-budget-settled-usd"] == "0"
    [message] = told
    assert (message.streamed, message.held, message.calls) == (False, 0, 1)
    assert bg.to_nano(message.cost) == entry.amounts["usd"] == user_spent(guard, "erin")


def test_on_settled_is_told_once_of_every_response_a_body_that_raises_too() -> None:
    """A streamed body that raises after its headers went (a refusal of a call made while streaming, an
    upstream error) and an endpoint that raises before answering: each response's charged call is told
    to ``on_settled``, once."""
    told: list[ResponseCost] = []
    guard = make_guard()
    ask = guard.with_budget()(usage_reply)
    app = FastAPI()
    app.add_middleware(BudgetMiddleware, guard=guard, scopes={"user": "x-user-id"}, on_settled=told.append)

    def streaming(then: Any) -> StreamingResponse:
        async def body() -> Any:
            ask(**REQUEST)  # charged
            yield b"one "
            then()
            yield b"two"

        return StreamingResponse(body())

    def upstream_gone() -> None:
        raise RuntimeError("upstream went away")

    @app.get("/refused")
    async def refused() -> StreamingResponse:
        return streaming(lambda: ask(**TOO_BIG))  # refused after the headers went: too late for a 429

    @app.get("/upstream")
    async def upstream() -> StreamingResponse:
        return streaming(upstream_gone)

    @app.get("/early")
    async def early() -> None:
        ask(**REQUEST)
        upstream_gone()

    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [client.get(path, headers={"x-user-id": "erin"}) for path in ("/refused", "/upstream")]
        early_answer = client.get("/early", headers={"x-user-id": "erin"})

    assert [a.text for a in answers] == ["one ", "one "] and early_answer.status_code == 500
    assert [(t.streamed, t.cost, t.calls, t.held) for t in told] == [
        (True, COST, 1, 0), (True, COST, 1, 0), (False, COST, 1, 0),
    ]  # fmt: skip
    assert user_spent(guard, "erin") == 3 * bg.to_nano(COST)
    assert [e.event for e in guard.ledger.history(events=["refused"])] == ["refused"]

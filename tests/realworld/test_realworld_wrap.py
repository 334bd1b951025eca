"""Every recorded call, through ``guard.wrap(client)`` (sync) and through the bare transport under a plain
``httpx`` client (async, the wire JSON only), is charged exactly what the provider's reported usage costs
(``bills.billed_nano``, computed apart from budgetguard), streamed and not. Read in place, never copied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from budgetguard.integrations.httpx import AsyncBudgetTransport
from tests.guard.payloads import serve
from tests.realworld.bills import billed_nano
from tests.realworld.conftest import load
from tests.realworld.test_realworld_units import _arguments, _charged, _client, _guard, _method
from tests.sdk_http import OPENAI_HTTP

PATHS = {
    "messages": "/v1/messages",
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
}


def _body(fx: dict[str, Any]) -> Any:
    return fx["response_sse"] if fx["stream"] else fx["response"]


def test_wrapped_client_charge_is_the_bill(fixture_file: Path, realworld: Path) -> None:
    fx = load(fixture_file)
    guard = _guard()
    client = guard.wrap(_client(fx, _body(fx), sync=True))
    method = _method(client, fx["endpoint"])
    reply = method(**_arguments(method, fx["request"]))
    if fx["stream"]:
        for _ in reply:
            pass
    charged, data = _charged(guard)
    guard.close()
    assert charged == billed_nano(fx), data


async def test_transport_charge_is_the_bill(fixture_file: Path, realworld: Path) -> None:
    fx = load(fixture_file)
    guard = _guard()
    api = serve(_body(fx))
    transport = AsyncBudgetTransport(guard, OPENAI_HTTP.MockTransport(api))
    http = OPENAI_HTTP.AsyncClient(transport=transport, base_url="http://api.test")
    async with http, http.stream("POST", PATHS[fx["endpoint"]], json=fx["request"]) as response:
        received = b"".join([chunk async for chunk in response.aiter_bytes()])
    charged, data = _charged(guard)
    guard.close()
    assert charged == billed_nano(fx), data
    if fx["stream"]:
        assert received == fx["response_sse"].encode()  # passed on byte for byte
    else:
        assert json.loads(received) == fx["response"]

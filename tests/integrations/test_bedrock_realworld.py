"""Every recorded Anthropic call (the real-world tier, read in place) whose model Bedrock lists, replayed as
Bedrock answers it (the same JSON; the stream's events in AWS event-stream frames) through
``guard.wrap(AnthropicBedrock())``: charged exactly what its reported usage costs at Bedrock's prices,
computed by genai-prices apart from budgetguard. Calls with per-call fees or extra sampling passes
(server tools, ``usage.iterations``) are left out: Bedrock's listing has no price for those (the guard
refuses such a request with a ``PricingError`` before sending it)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import genai_prices
import pytest

import budgetguard as bg
from tests.integrations.test_bedrock import Bedrock, chunk, client
from tests.realworld.bills import _priced, _sse_events, final_body
from tests.realworld.conftest import ABSENT, load, realworld_dir, response_files
from tests.realworld.test_realworld_units import _arguments

JSON = dict[str, Any]


def _bedrock_id(fx: JSON) -> str | None:
    """The Bedrock id of the recorded call's model, if Bedrock's listing prices it and the call bills
    nothing but tokens; else ``None``."""
    if fx["provider"] != "anthropic" or fx["endpoint"] != "messages":
        return None
    body = final_body(fx)
    usage = body.get("usage") or {}
    server_tools = [t for t in fx["request"].get("tools") or () if t.get("type") not in (None, "custom")]
    if usage.get("iterations") or usage.get("server_tool_use") or server_tools:
        return None
    model = f"anthropic.{body.get('model') or fx['request']['model']}-v1:0"
    try:
        bg.get_price(model, provider="aws")
    except bg.PricingError:
        return None
    return model


def _cases() -> list[Any]:
    cases = []
    for path in response_files():
        model = _bedrock_id(load(path))
        if model is not None:
            cases.append(pytest.param(path, model, id=path.stem))
    absent = pytest.mark.skip(reason=ABSENT.format(realworld_dir()))
    return cases or [pytest.param(None, None, id="absent", marks=absent)]


def _billed(fx: JSON, model: str) -> int:
    """Bedrock's bill for the call: genai-prices reads the usage and prices it at the aws id."""
    body = final_body(fx)
    usage = genai_prices.extract_usage({**body, "model": body.get("model") or model}, provider_id="anthropic")
    return math.ceil(_priced(model, "aws", None, usage.usage) * 10**9)


@pytest.mark.parametrize(("path", "model"), _cases())
def test_a_recorded_call_replayed_on_bedrock_is_charged_its_bill(path: Path, model: str) -> None:
    fx = load(path)
    if fx["stream"]:
        reply: JSON | bytes = b"".join(chunk(event) for event in _sse_events(fx["response_sse"]))
    else:
        reply = fx["response"]
    api = Bedrock(reply)
    guard = bg.Guard("memory://", budgets=[bg.Budget("global", usd="1000", per="day")])
    wrapped = guard.wrap(client(api))
    request = {**fx["request"], "model": model}
    request.pop("stream", None)
    method = wrapped.messages.create
    answer = method(**_arguments(method, request), **({"stream": True} if fx["stream"] else {}))
    if fx["stream"]:
        for _ in answer:
            pass
    (entry,) = guard.ledger.history(events=["committed"])
    guard.close()
    assert api.paths[0].endswith("/invoke-with-response-stream" if fx["stream"] else "/invoke")
    assert "usage_missing" not in entry.data, entry.data
    assert entry.amounts["usd"] == _billed(fx, model), json.dumps(entry.data, default=str)

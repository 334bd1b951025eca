"""Every recorded call, served to the real SDK clients through ``with_budget``, is charged exactly what the
provider's reported usage costs: every billed unit (tokens by bucket, audio tokens, server-side tool calls,
Anthropic's extra sampling passes), to the nano-USD, sync and async, streamed and not.

The expected charge is computed apart from budgetguard's own reading of usage: genai-prices extracts the
usage from the final response body (its own extractors) and prices it (its own unit decomposition). What
genai-prices does not read or price is added here from the body: the Responses API's built-in tool calls
(one output item per call, code interpreter sessions per container), Anthropic ``usage.iterations`` that
the top-level usage leaves out (each at its own model), and the units genai-prices has no price for, at
the providers' published prices (``budgetguard.PUBLISHED_PRICES``, documented in the README).
"""

from __future__ import annotations

import inspect
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import data_snapshot, types

import budgetguard
from budgetguard import Budget, Guard
from tests.guard.payloads import (
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
    serve,
)
from tests.realworld.conftest import load

JSON = dict[str, Any]

# budgetguard's unit names -> genai-prices price keys, for the published prices genai-prices lacks
_PRICE_KEYS = {
    "input_audio": "input_audio_mtok",
    "output_audio": "output_audio_mtok",
    "web_search": "web_searches_kcount",
    "file_search": "storage_searches_kcount",
    "code_execution": "code_executions_kcount",
}
_TIERS = {"flex", "priority"}


# -- the final body a call answered with --------------------------------------------------------------


def _sse_events(text: str) -> list[JSON]:
    events = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                events.append(json.loads(line[5:]))
    return events


def final_body(fx: JSON) -> JSON:
    """The response body, or the final state a stream reports (Anthropic: ``message_start`` with the
    cumulative ``message_delta`` counts over it; OpenAI chat: the usage chunk; Responses: the
    ``response.completed`` event's response)."""
    if not fx["stream"]:
        body: JSON = fx["response"]
        return body
    events = _sse_events(fx["response_sse"])
    if fx["provider"] == "anthropic":
        message = next(e["message"] for e in events if e.get("type") == "message_start")
        usage = dict(message["usage"])
        for event in events:
            if event.get("type") == "message_delta":
                usage.update({k: v for k, v in event["usage"].items() if v is not None})
        return {**message, "usage": usage}
    if fx["endpoint"] == "responses":
        done = next(e for e in events if e.get("type") in ("response.completed", "response.incomplete"))
        response: JSON = done["response"]
        return response
    final = next(e for e in reversed(events) if e.get("usage"))
    return {"model": final.get("model"), "usage": final["usage"], "service_tier": final.get("service_tier")}


# -- what the provider bills for it -------------------------------------------------------------------


def _model_price(model: str, provider: str, tier: str | None) -> types.ModelPrice:
    snapshot = data_snapshot.get_snapshot()
    gp_provider, info = snapshot.find_provider_model(model, None, provider, None)
    variant = {"service_tier": tier} if tier in _TIERS else None
    price = info.get_prices(datetime.now(UTC), variant)
    keys = {k: v for k, v in price.__dict__.items() if v is not None and not k.startswith("_")}
    for name, rate in budgetguard.published_prices(model, gp_provider.id).items():
        if name in _PRICE_KEYS:
            keys.setdefault(_PRICE_KEYS[name], rate)
    return types.ModelPrice(**keys)


def _priced(model: str, provider: str, tier: str | None, usage: genai_prices.Usage) -> Decimal:
    total: Decimal = _model_price(model, provider, tier).calc_price(usage)["total_price"]
    return total


def billed_nano(fx: JSON) -> int:
    """What the provider bills for the recorded call, in nano-USD rounded up once (see the docstring)."""
    body = final_body(fx)
    provider, endpoint = fx["provider"], fx["endpoint"]
    flavor = {"messages": "default", "chat": "chat", "responses": "responses", "embeddings": "embeddings"}
    model = body.get("model") or fx["request"]["model"]
    usage = genai_prices.extract_usage(
        {**body, "model": model}, provider_id=provider, api_flavor=flavor[endpoint]
    ).usage
    tier = body.get("service_tier") if provider == "openai" else None
    extra = Decimal(0)
    if endpoint == "responses":
        items = body.get("output") or []
        kinds = [item.get("type") for item in items]
        usage.web_searches = kinds.count("web_search_call") or None
        usage.storage_searches = kinds.count("file_search_call") or None
        containers = {i.get("container_id") for i in items if i.get("type") == "code_interpreter_call"}
        usage.code_executions = len(containers) or None
        images = kinds.count("image_generation_call")
        extra += images * budgetguard.published_prices(model, "openai")["image_generation"] / 1000
    total = _priced(model, provider, tier, usage) + extra
    for iteration in body.get("usage", {}).get("iterations") or ():
        if iteration["type"] == "message":
            continue  # the top-level usage already counts these
        pass_model = iteration.get("model") or model
        pass_usage = genai_prices.extract_usage(
            {"model": pass_model, "usage": iteration}, provider_id="anthropic"
        ).usage
        total += _priced(pass_model, "anthropic", None, pass_usage)
    return math.ceil(total * 10**9)


# -- serving a recording to the real SDK clients ------------------------------------------------------


def _client(fx: JSON, body: JSON | str, *, sync: bool) -> Any:
    api = serve(body)
    if fx["provider"] == "anthropic":
        return (anthropic_client if sync else async_anthropic_client)(api)
    return (openai_client if sync else async_openai_client)(api)


def _method(client: Any, endpoint: str) -> Any:
    if endpoint == "messages":
        return client.messages.create
    if endpoint == "chat":
        return client.chat.completions.create
    return client.responses.create if endpoint == "responses" else client.embeddings.create


def _arguments(method: Any, request: JSON) -> JSON:
    """The recorded request as SDK keyword arguments: fields the installed SDK does not name go in
    ``extra_body``, as a caller on this SDK version would send them."""
    known = inspect.signature(method).parameters
    arguments = {k: v for k, v in request.items() if k in known}
    extra = {k: v for k, v in request.items() if k not in known}
    if extra:
        arguments["extra_body"] = extra
    return arguments


def _guard() -> Guard:
    return Guard("memory://", budgets=[Budget("global", usd="1000", per="day")])


def _charged(guard: Guard) -> tuple[int, JSON]:
    (entry,) = guard.ledger.history(events=["committed"])
    assert "usage_missing" not in entry.data, entry.data
    return entry.amounts["usd"], entry.data


def test_sync_charge_is_the_bill(fixture_file: Path, realworld: Path) -> None:
    fx = load(fixture_file)
    guard = _guard()
    client = _client(fx, fx["response_sse"] if fx["stream"] else fx["response"], sync=True)
    method = _method(client, fx["endpoint"])
    reply = guard.with_budget(method)(**_arguments(method, fx["request"]))
    if fx["stream"]:
        for _ in reply:
            pass
    charged, data = _charged(guard)
    guard.close()
    assert charged == billed_nano(fx), data


async def test_async_charge_is_the_bill(fixture_file: Path, realworld: Path) -> None:
    fx = load(fixture_file)
    guard = _guard()
    client = _client(fx, fx["response_sse"] if fx["stream"] else fx["response"], sync=False)
    method = _method(client, fx["endpoint"])
    reply = await guard.with_budget(method)(**_arguments(method, fx["request"]))
    if fx["stream"]:
        async for _ in reply:
            pass
    charged, data = _charged(guard)
    guard.close()
    assert charged == billed_nano(fx), data


def test_the_recordings_exercise_every_unit_read(realworld: Path) -> None:
    """The tier is not vacuous: the recordings hold each kind of billed unit that budgetguard reads."""
    from tests.realworld.conftest import response_files

    seen: set[str] = set()
    for path in response_files():
        usage = budgetguard.Usage.from_response(final_body(load(path)))
        seen.update(k for k, v in usage.to_dict().items() if v)
    assert {
        "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "input_audio_tokens",
        "web_search_calls", "file_search_calls", "code_execution_sessions", "passes",
    } <= seen  # fmt: skip

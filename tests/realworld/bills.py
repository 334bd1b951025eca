"""What the provider billed for a recorded call, computed apart from budgetguard: genai-prices reads the
usage from the final body (its own extractors) and prices it at the model that answered; server tools
and Anthropic iterations are added from the body; the published prices fill genai-prices' gaps."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
from genai_prices import data_snapshot, types

import budgetguard

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
# OpenAI's fee per search of the gpt-4o chat search models, by the request's search_context_size (USD per
# 1k calls; medium when not set): gpt-4o-search-preview $30 / $35 / $50, the mini $25 / $27.50 / $30.
_CHAT_SEARCH_FEES = {
    "gpt-4o-mini-search-preview": {"low": Decimal(25), "medium": Decimal("27.5"), "high": Decimal(30)},
    "gpt-4o-search-preview": {"low": Decimal(30), "medium": Decimal(35), "high": Decimal(50)},
}


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
    if endpoint == "chat" and "-search-" in model:  # a chat search model: one search a request
        options = fx["request"].get("web_search_options") or {}
        size = options.get("search_context_size", "medium")
        sized = next((fees for prefix, fees in _CHAT_SEARCH_FEES.items() if model.startswith(prefix)), None)
        fee = sized[size] if sized else budgetguard.published_prices(model, "openai")["web_search"]
        extra += fee / 1000
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

"""The mock's OpenAI routes: chat completions, the Responses API and embeddings, as JSON or SSE answers,
with the usage of the mock's own rule (``_rule``) and OpenAI's prompt cache."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from typing import Any

from .._limits import UNKNOWN, model_limits
from ._rule import (
    REASONING_EFFORT_TOKENS,
    embedding_inputs,
    embeddings_input,
    is_reasoning,
    openai_input,
    openai_items,
    reply,
)
from ._wire import CACHE_MIN_TOKENS, JSON, Answer, Context, Events, last_text, pieces


def _output(body: JSON, ctx: Context, prompt: str, limit: int | None) -> tuple[str, int, int]:
    """(visible text, output tokens, reasoning tokens within them) for an OpenAI request."""
    model = body["model"]
    reasoning = 0
    if limit is None:  # no maximum on the request: the model stops at its own, as a provider's does
        limit = (model_limits(model) or UNKNOWN).max_output_tokens
    if is_reasoning(model):
        effort = (body.get("reasoning") or {}).get("effort") or body.get("reasoning_effort") or "medium"
        reasoning = REASONING_EFFORT_TOKENS.get(effort, 256)
        if limit is not None:
            reasoning = min(reasoning, limit)
            limit -= reasoning
    text, visible = reply(model, prompt, limit, ctx.reply_text)
    return text, visible + reasoning, reasoning


def _cached(ctx: Context, key: Any, prompt_tokens: int, tail_tokens: int) -> int:
    """OpenAI's prompt cache: a prefix seen before, >= 1024 tokens, counted in 128-token steps."""
    prefix_tokens = prompt_tokens - tail_tokens
    if prefix_tokens < CACHE_MIN_TOKENS or not ctx.seen(json.dumps(key, sort_keys=True)):
        return 0
    return prefix_tokens // 128 * 128


def chat(body: JSON, ctx: Context) -> Answer:
    model, messages = body["model"], body["messages"]
    prompt_tokens = openai_input(body)
    tail = openai_items(messages[-1:], model)
    key = {"m": messages[:-1], "t": body.get("tools"), "model": model}
    cached = _cached(ctx, key, prompt_tokens, tail)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    n = int(body.get("n") or 1)
    text, output, reasoning = _output(body, ctx, last_text(messages), limit)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output * n,
        "total_tokens": prompt_tokens + output * n,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning * n,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    finish = "length" if limit is not None and output >= limit else "stop"
    base = {
        "id": ctx.new_id("chatcmpl"),
        "created": int(time.time()),
        "model": model,
        "service_tier": ctx.served_tier(body),
        "system_fingerprint": "fp_mock",
    }
    if not body.get("stream"):
        message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish} for i in range(n)
        ]
        return Answer(usage, {**base, "object": "chat.completion", "choices": choices, "usage": usage})
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    chunk: JSON = {**base, "object": "chat.completion.chunk"}
    if include_usage:
        chunk["usage"] = None
    deltas: list[tuple[JSON, str | None]] = [({"role": "assistant", "content": "", "refusal": None}, None)]
    deltas += [({"content": piece}, None) for piece in pieces(text)]
    deltas.append(({}, finish))
    events: Events = [
        (None, {**chunk, "choices": [{"index": i, "delta": d, "logprobs": None, "finish_reason": f}]})
        for d, f in deltas
        for i in range(n)
    ]
    if include_usage:
        events.append((None, {**chunk, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return Answer(usage, events=events)


def responses(body: JSON, ctx: Context) -> Answer:
    model, items = body["model"], body.get("input")
    tools, instructions = body.get("tools"), body.get("instructions")
    input_tokens = openai_input(body)
    earlier = items[:-1] if isinstance(items, list) and items else None
    tail = openai_items(items[-1:], model) if isinstance(items, list) and items else input_tokens
    key = {"i": earlier, "s": instructions, "t": tools, "model": model}
    cached = _cached(ctx, key, input_tokens, tail)
    limit = body.get("max_output_tokens")
    text, output, reasoning = _output(body, ctx, last_text(items), limit)
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output,
    }
    response_id, message_id = ctx.new_id("resp"), ctx.new_id("msg")
    incomplete = limit is not None and output >= limit
    part = {"type": "output_text", "text": text, "annotations": []}
    message: JSON = {"type": "message", "id": message_id, "status": "completed", "role": "assistant"}
    message["content"] = [part]
    output_items: list[JSON] = []
    if reasoning:
        output_items.append({"type": "reasoning", "id": ctx.new_id("rs"), "summary": []})
    if _offers_web_search(tools):  # the model searches once before it answers (billed per call)
        search = {"type": "web_search_call", "id": ctx.new_id("ws"), "status": "completed"}
        output_items.append({**search, "action": {"type": "search", "query": last_text(items)}})
    image = _image_call(tools, ctx)
    if image is not None:  # the model draws once with the image_generation tool it was offered
        output_items.append(image[0])
    output_items.append(message)
    done: JSON = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "background": body.get("background") is True,  # (a stream says so in response.created)
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": instructions,
        "max_output_tokens": limit,
        "model": model,
        "output": output_items,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": ctx.served_tier(body),
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": tools or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }
    if image is not None:  # the image model's usage, apart from the response's own
        done["tool_usage"] = {"image_gen": image[1], "web_search": {"num_requests": 0}}
    if not body.get("stream"):
        return Answer(usage, done)
    started = {**done, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    started.pop("tool_usage", None)
    index = len(output_items) - 1
    empty_message = {**message, "status": "in_progress", "content": []}
    events: list[JSON] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    for n, item in enumerate(output_items[:index]):  # reasoning, a web search: whole items
        events += [
            {"type": "response.output_item.added", "output_index": n, "item": item},
            {"type": "response.output_item.done", "output_index": n, "item": item},
        ]
    where = {"item_id": message_id, "output_index": index, "content_index": 0}
    events += [
        {"type": "response.output_item.added", "output_index": index, "item": empty_message},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
    ]
    events += [
        {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        for piece in pieces(text)
    ]
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": message},
        {"type": "response.incomplete" if incomplete else "response.completed", "response": done},
    ]
    return Answer(usage, events=[(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)])


_IMAGE_TOKENS = {
    # OpenAI's image generation guide: image output tokens of one 1024x1024 image (low, medium, high), of
    # gpt-image-1 / -1-mini / -1.5 (their other standard sizes: 1024x1536, 1536x1024) and gpt-image-2.
    # (Copied from the guide, not imported from budgetguard._image_tool: the mock stands for the
    # provider and reads none of budgetguard's counting rules, test_mock_provider checks.)
    "gpt-image-1": {
        "1024x1024": (272, 1056, 4160), "1024x1536": (408, 1584, 6240), "1536x1024": (400, 1568, 6208)
    },
    "gpt-image-2": {"1024x1024": (196, 1756, 7024)},
}  # fmt: skip


def _image_call(tools: Any, ctx: Context) -> tuple[JSON, JSON] | None:
    """The ``image_generation_call`` item and the image model's usage when ``tools`` offers the tool:
    one image, of the size the tool names if the mock knows it (else 1024x1024), at its quality (auto:
    high); a prompt of 40 text tokens."""
    tool = next((t for t in tools or () if isinstance(t, dict) and t.get("type") == "image_generation"), None)
    if tool is None:
        return None
    model = str(tool.get("model") or "gpt-image-2.6-sunburst")
    table = _IMAGE_TOKENS["gpt-image-1" if model.startswith("gpt-image-1") else "gpt-image-2"]
    size = str(tool["size"]) if tool.get("size") in table else "1024x1024"
    quality = str(tool["quality"]) if tool.get("quality") in ("low", "medium") else "high"
    tokens = table[size][("low", "medium", "high").index(quality)]
    item = {"type": "image_generation_call", "id": ctx.new_id("ig"), "status": "completed",
            "result": "iVBORw0KGgo=", "size": size, "quality": quality, "output_format": "png"}  # fmt: skip
    usage = {
        "input_tokens": 40, "input_tokens_details": {"image_tokens": 0, "text_tokens": 40},
        "output_tokens": tokens, "output_tokens_details": {"image_tokens": tokens, "text_tokens": 0},
        "total_tokens": 40 + tokens,
    }  # fmt: skip
    return item, usage


def _offers_web_search(tools: Any) -> bool:
    return isinstance(tools, list) and any(
        isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search") for tool in tools
    )


def embeddings(body: JSON, ctx: Context) -> Answer:
    model = body["model"]
    inputs = embedding_inputs(body["input"])
    if not inputs:
        raise ValueError("input must not be empty")
    tokens = embeddings_input(body)
    dims = int(body.get("dimensions") or 8)
    data = []
    for index, item in enumerate(inputs):
        seed = hashlib.sha256(json.dumps(item).encode()).digest()
        vector = [(seed[i % 32] - 128) / 128 for i in range(dims)]
        value: Any = vector
        if body.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return Answer(usage, {"object": "list", "data": data, "model": model, "usage": usage})

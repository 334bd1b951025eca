"""OpenAI request token counts: chat messages, tool definitions, Responses input and images.

Counting follows OpenAI's published rules (the "How to count tokens with tiktoken" cookbook):
3 tokens per message, 1 more per ``name``, 3 to prime the reply, and the cookbook's per-function
overheads for tool definitions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import tiktoken

from ._tokens import _cache, encoding_for_model

__all__ = [
    "count_message_tokens",
    "count_responses_tokens",
    "count_tool_tokens",
    "image_tokens",
]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

# Images (OpenAI's published vision rules). Tile models: base + per 512px tile after scaling to fit
# 2048x2048 and the short side to 768 (at most 2 x 4 tiles). Without the image's size offline we
# charge the largest image: 8 tiles. "low" detail costs the base only.
_IMAGE_TILE_RULES: tuple[tuple[str, int, int], ...] = (
    ("gpt-4o-mini", 2833, 5667),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("gpt-5", 70, 140),
    ("", 85, 170),  # gpt-4o, gpt-4.1, gpt-4-turbo and the default
)
# Patch models count 32px patches, capped at 1536, times a multiplier (worst case: the cap).
_IMAGE_PATCH_RULES: tuple[tuple[str, Decimal], ...] = (
    ("gpt-4.1-mini", Decimal("1.62")),
    ("gpt-4.1-nano", Decimal("2.46")),
    ("o4-mini", Decimal("1.72")),
)
MAX_IMAGE_TILES = 8
MAX_IMAGE_PATCHES = 1536


def image_tokens(model: str, detail: str = "auto") -> int:
    """A safe upper bound on the input tokens of one image for ``model``."""
    bare = model.rsplit("/", 1)[-1]
    for prefix, multiplier in _IMAGE_PATCH_RULES:
        if bare.startswith(prefix):
            return math.ceil(MAX_IMAGE_PATCHES * multiplier)
    for prefix, base, tile in _IMAGE_TILE_RULES:
        if bare.startswith(prefix):
            return base if detail == "low" else base + tile * MAX_IMAGE_TILES
    raise AssertionError("unreachable: the last rule matches every model")


def _content_tokens(content: Any, encoding: tiktoken.Encoding, model: str) -> int:
    """Tokens of a message's content: a string or a list of parts (text, image, others as JSON)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return _cache.count(encoding, content)
    if isinstance(content, Mapping):
        content = [content]
    total = 0
    for part in content:
        if isinstance(part, str):
            total += _cache.count(encoding, part)
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            total += _cache.count(encoding, part.get("text") or "")
        elif kind in ("image_url", "input_image", "image"):
            image = part.get("image_url")
            detail = (image.get("detail") if isinstance(image, Mapping) else None) or part.get("detail")
            total += image_tokens(model, detail or "auto")
        else:  # audio, files, refusals...: count their JSON, a documented over-estimate
            total += _cache.count(encoding, json.dumps(part, sort_keys=True, default=str))
    return total


def _value_tokens(key: str, value: Any, encoding: tiktoken.Encoding, model: str) -> int:
    if key == "content":
        return _content_tokens(value, encoding, model)
    if isinstance(value, str):
        return _cache.count(encoding, value)
    if value is None:
        return 0
    # tool_calls, function_call, audio...: the serialized arguments are what the model reads
    return _cache.count(encoding, json.dumps(value, sort_keys=True, default=str))


def count_message_tokens(
    messages: Iterable[Mapping[str, Any]],
    model: str,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Input tokens of an OpenAI chat request, by OpenAI's published counting rules."""
    encoding = encoding_for_model(model)
    count = _cache.count
    shorts = _cache.shorts(encoding)
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            # plain strings (role, content, name) are the common case: count them inline, and look the
            # short ones (roles above all) up without a call
            if type(value) is str:
                n = shorts.get(value)
                total += count(encoding, value) if n is None else n
            else:
                total += _value_tokens(key, value, encoding, model)
            if key == "name":
                total += TOKENS_PER_NAME
    if tools:
        total += count_tool_tokens(tools, model)
    return total


# The cookbook's per-function overheads: (func_init, prop_init, prop_key, enum_init, enum_item, func_end)
_TOOL_OVERHEAD_CL100K = (10, 3, 3, -3, 3, 12)
_TOOL_OVERHEAD_O200K = (7, 3, 3, -3, 3, 12)


def count_tool_tokens(tools: Sequence[Mapping[str, Any]], model: str) -> int:
    """Tokens of OpenAI tool / function definitions (chat ``tools`` or Responses ``tools``)."""
    encoding = encoding_for_model(model)
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = (
        _TOOL_OVERHEAD_CL100K if encoding.name == "cl100k_base" else _TOOL_OVERHEAD_O200K
    )
    total = 0
    for tool in tools:
        function = tool.get("function", tool)  # chat nests it; Responses API tools are flat
        if "name" not in function:  # built-in tools (web_search, file_search...): their JSON
            total += _cache.count(encoding, json.dumps(tool, sort_keys=True, default=str))
            continue
        total += func_init
        description = (function.get("description") or "").removesuffix(".")
        total += _cache.count(encoding, f"{function['name']}:{description}")
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            total += prop_init
            for key, spec in properties.items():
                total += prop_key
                if "enum" in spec:
                    total += enum_init
                    for item in spec["enum"]:
                        total += enum_item + _cache.count(encoding, str(item))
                p_desc = (spec.get("description") or "").removesuffix(".")
                nested = {k: v for k, v in spec.items() if k not in ("type", "description", "enum")}
                line = f"{key}:{spec.get('type', '')}:{p_desc}"
                if nested:  # nested objects, arrays, defaults: not in the cookbook; count their JSON
                    line += json.dumps(nested, sort_keys=True, default=str)
                total += _cache.count(encoding, line)
    if tools:
        total += func_end
    return total


# -- OpenAI Responses API --------------------------------------------------------------------


def count_responses_tokens(
    input: str | Sequence[Mapping[str, Any]] | None,
    model: str,
    *,
    instructions: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Input tokens of a Responses API request, counted with the chat rules.

    ``instructions`` count as a system message; each input item as a message (function calls and
    their outputs by their arguments / output text).
    """
    messages: list[Mapping[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    elif input is not None:
        for item in input:
            kind = item.get("type", "message")
            if kind == "message":
                messages.append({"role": item.get("role", "user"), "content": item.get("content")})
            else:  # function_call, function_call_output, reasoning...: their visible fields
                messages.append(
                    {k: v for k, v in item.items() if k not in ("type", "id", "call_id", "status")}
                )
    return count_message_tokens(messages, model, tools=tools)


_STATE_KEYS = ("previous_response_id", "conversation")


def unseen_inputs(request: Mapping[str, Any]) -> tuple[str, ...]:
    """What an OpenAI request makes the model read without carrying it: the server-side history of
    ``previous_response_id`` / ``conversation``."""
    return tuple(key for key in _STATE_KEYS if request.get(key))

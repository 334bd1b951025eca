"""Claude request token counts: an upper estimate, since Claude has no public offline tokenizer.

Anthropic requests are counted with o200k_base times a safety factor (``ANTHROPIC_SAFETY_FACTOR``),
plus what Anthropic adds around them (per message, the tool-use system prompt).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import tiktoken

from ._tokens import _cache, get_encoding

__all__ = ["ANTHROPIC_SAFETY_FACTOR", "count_anthropic_tokens"]

ANTHROPIC_SAFETY_FACTOR = Decimal("1.4")
"""o200k_base tokens x this factor bound Claude's own count for English prose and code.

Claude's tokenizer is not public. Anthropic's token counting endpoint and published comparisons put
Claude 3/4 at roughly 1.1-1.3x the tokens of OpenAI's encoders on English and source code, and
Anthropic documents that the Claude Opus 4.7 tokenizer yields up to ~1.35x more than its
predecessor. 1.4 keeps the reservation above the real count; lower it per model when your own
traffic (the ``usage`` in responses) shows a smaller ratio. Text in scripts other than Latin can
exceed it: use the token counting endpoint for such workloads.
"""
ANTHROPIC_TOKENS_PER_MESSAGE = 4
ANTHROPIC_TOOL_SYSTEM_PROMPT = 346  # Anthropic's published tool-use system prompt size (auto/none)


def count_anthropic_tokens(
    messages: Iterable[Mapping[str, Any]],
    model: str,
    *,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    factor: Decimal = ANTHROPIC_SAFETY_FACTOR,
) -> int:
    """A safe upper estimate of a Claude request's input tokens (messages, system and tools)."""
    encoding = get_encoding("o200k_base")
    raw = _anthropic_content_tokens(system, encoding, model) if system else 0
    for message in messages:
        raw += ANTHROPIC_TOKENS_PER_MESSAGE + _anthropic_content_tokens(
            message.get("content"), encoding, model
        )
    for tool in tools or ():
        raw += _cache.count(encoding, json.dumps(tool, sort_keys=True, default=str))
    return math.ceil(raw * factor) + (ANTHROPIC_TOOL_SYSTEM_PROMPT if tools else 0)


def _anthropic_content_tokens(content: Any, encoding: tiktoken.Encoding, model: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return _cache.count(encoding, content)
    total = 0
    for block in content:
        kind = block.get("type")
        if kind == "text":
            total += _cache.count(encoding, block.get("text") or "")
        elif kind == "image":
            total += ANTHROPIC_MAX_IMAGE_TOKENS
        elif kind == "tool_result":
            total += _anthropic_content_tokens(block.get("content"), encoding, model)
        else:  # tool_use, documents, thinking...: their JSON
            total += _cache.count(encoding, json.dumps(block, sort_keys=True, default=str))
    return total


ANTHROPIC_MAX_IMAGE_TOKENS = (
    1600  # Anthropic: images are resized to stay within ~1.15 megapixels ~ 1600 tokens
)


def unseen_inputs(request: Mapping[str, Any]) -> tuple[str, ...]:
    """What a Claude request makes the model read without carrying it (none known yet)."""
    return ()

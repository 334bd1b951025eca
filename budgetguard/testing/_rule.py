"""The mock provider's own usage rule: raw tiktoken encodes of a request's strings plus fixed figures read
off real recorded responses; it never calls budgetguard's counting code (the estimator's rules).

Input tokens, by endpoint (every figure is a constant below):

* OpenAI chat completions and Responses: every string a message or input item carries (its text, a
  name, a function call's name and arguments, a function output; not its role, type or ids) encoded raw
  with the model's tiktoken encoding, plus ``MESSAGE_TOKENS`` (4) per message or item (``instructions``
  count as one message) and ``REQUEST_TOKENS`` (3) per request. On the plain requests recorded in
  ``../shared/realworld`` OpenAI counted a gpt-4o or gpt-4.1 request's text + 7 for one message, + 11
  for two, + 15 for three (o3-mini and gpt-5 models one less).
* Tools (and chat ``functions``): the strings of each definition (name, description, property names,
  enum values) plus ``TOOL_TOKENS`` (10) per tool and ``TOOLS_TOKENS`` (12) once: a rough fit of the
  recorded gpt-4o requests with tools, not any model's exact rendering.
* An image, audio, file or document part: ``MEDIA_TOKENS`` (85, OpenAI's low-detail image).
* Embeddings: each input's raw encode (a token array: its length), as OpenAI counts them.
* Claude (its tokenizer is not public): the same strings' o200k_base tokens x ``CLAUDE_FACTOR`` (1.2),
  rounded up, plus ``CLAUDE_MESSAGE_TOKENS`` (3) per message and ``CLAUDE_REQUEST_TOKENS`` (4) per
  request, tools as above (one-message Claude requests of 4 and 7 o200k_base tokens were recorded
  at 11 and 17 tokens; the rule says 12 and 16).

Output tokens: the reply text's raw encode (Claude: o200k_base x 1.2, rounded up), cut at the request's
maximum, plus ``REASONING_EFFORT_TOKENS`` for OpenAI reasoning models (o1, o3, o4, gpt-5).

budgetguard's estimate reserves at least this much for a plain request (text messages, no tools), so
``reserved >= actual`` holds in tests that use the mock; whether the estimate bounds what the providers
really count is checked against their recorded counts (``tests/realworld``), never against this rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import tiktoken.model

from .._cache import memo
from .._pricing import is_claude
from .._tokens import get_encoding

__all__ = ["count_input"]

MESSAGE_TOKENS = 4
REQUEST_TOKENS = 3
TOOL_TOKENS = 10
TOOLS_TOKENS = 12
MEDIA_TOKENS = 85
CLAUDE_FACTOR = Decimal("1.2")
CLAUDE_MESSAGE_TOKENS = 3
CLAUDE_REQUEST_TOKENS = 4
REASONING_EFFORT_TOKENS = {"minimal": 16, "low": 64, "medium": 256, "high": 1024}

MEDIA = frozenset({"image", "image_url", "input_image", "input_audio", "input_file", "file", "document"})
"""Content part types that count ``MEDIA_TOKENS`` whatever they hold."""
SKIPPED = frozenset(
    {
        "type",
        "role",
        "id",
        "call_id",
        "tool_use_id",
        "cache_control",
        "signature",
        "encrypted_content",
        "status",
    }
)
"""Keys whose strings are wire syntax, not text the model reads."""

_CLAUDE_NUM, _CLAUDE_DEN = CLAUDE_FACTOR.as_integer_ratio()
_TEXT = (
    "budgets keep spending honest because every call reserves its worst case before it runs and gives back "
    "what it did not use so that many workers sharing one limit can never pass it together while the "
    "ledger stays exact to the nano dollar across retries streams and restarts"
)
_WORDS = _TEXT.split(" ")


@memo("testing.encodings", 256)
def encoding_name(model: str) -> str:
    """tiktoken's encoding for ``model`` (o200k_base for Claude and for models tiktoken does not know)."""
    try:
        return "o200k_base" if is_claude(model) else tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base"


@memo("testing.tokens", 4096)
def encoded(text: str, name: str) -> int:
    """``text``'s tokens in the encoding ``name``, special-token strings as plain text."""
    # the offline, hash-verified loader gives the encoding file, not a counting rule
    return len(get_encoding(name).encode(text, disallowed_special=()))


def raw(text: str, model: str) -> int:
    """``text``'s tokens in ``model``'s encoding."""
    return encoded(text, encoding_name(model))


def strings(value: Any, model: str) -> int:
    """The raw tokens of every string in ``value`` (keys aside, but property names), media parts fixed."""
    if isinstance(value, str):
        return raw(value, model)
    if isinstance(value, Mapping):
        if value.get("type") in MEDIA:
            return MEDIA_TOKENS
        total = 0
        for key, item in value.items():
            if key in SKIPPED:
                continue
            if key == "properties" and isinstance(item, Mapping):
                total += sum(raw(str(name), model) for name in item)
            total += strings(item, model)
        return total
    if isinstance(value, list | tuple):
        return sum(strings(item, model) for item in value)
    return 0


def claude_scaled(tokens: int) -> int:
    """o200k_base tokens as the mock's Claude tokens: x 1.2, rounded up."""
    return -(-tokens * _CLAUDE_NUM // _CLAUDE_DEN)


def tools_tokens(tools: Iterable[Any] | None, model: str) -> int:
    tools = list(tools or [])
    return sum(strings(t, model) + TOOL_TOKENS for t in tools) + (TOOLS_TOKENS if tools else 0)


def openai_items(items: Any, model: str) -> int:
    """Chat messages or Responses input items (a string is one user message): text + 4 each."""
    if isinstance(items, str):
        return raw(items, model) + MESSAGE_TOKENS
    return sum(strings(item, model) + MESSAGE_TOKENS for item in items or [])


def openai_input(body: Mapping[str, Any]) -> int:
    """A chat completions or Responses request's input tokens by the rule."""
    model = body["model"]
    items = body["messages"] if "messages" in body else body.get("input")
    total = openai_items(items, model) + REQUEST_TOKENS
    if body.get("instructions"):
        total += openai_items([{"content": body["instructions"]}], model)
    schema = body.get("response_format") or (body.get("text") or {}).get("format")
    return (
        total
        + strings(schema, model)
        + tools_tokens((body.get("tools") or []) + (body.get("functions") or []), model)
    )


def embedding_inputs(given: Any) -> list[Any]:
    """An embeddings request's inputs, one per vector."""
    if isinstance(given, str) or (given and isinstance(given[0], int)):
        return [given]
    return list(given)


def embeddings_input(body: Mapping[str, Any]) -> int:
    """Each input's raw encode, a token array's length: OpenAI's count for embeddings."""
    model = body["model"]
    return sum(len(x) if isinstance(x, list) else raw(str(x), model) for x in embedding_inputs(body["input"]))


def claude_blocks(body: Mapping[str, Any]) -> list[tuple[int, Any]]:
    """A Claude request's blocks in cache order (tools, system, messages) as (message index or -1 for a
    tool, -2 for system, block); a string is one text block."""
    system = body.get("system")
    blocks: list[tuple[int, Any]] = [(-1, t) for t in body.get("tools") or []]
    blocks += [(-2, b) for b in ([system] if isinstance(system, str) else system or [])]
    for i, message in enumerate(body["messages"]):
        content = message.get("content")
        blocks += [(i, b) for b in ([content] if isinstance(content, str) else content or [])]
    return blocks


def claude_count(model: str, blocks: list[tuple[int, Any]]) -> int:
    """Claude input tokens of ``blocks`` (from :func:`claude_blocks`) by the rule."""
    text = sum(strings(block, model) for i, block in blocks if i != -1)
    tools = tools_tokens([block for i, block in blocks if i == -1], model)
    turns = len({i for i, _ in blocks if i >= 0})
    return claude_scaled(text + tools) + CLAUDE_MESSAGE_TOKENS * turns + CLAUDE_REQUEST_TOKENS


def count_input(endpoint: str, body: Mapping[str, Any]) -> int:
    """The input tokens the mock reports for ``body`` at ``endpoint`` ("chat", "responses",
    "embeddings" or "messages"; cached and cache-written tokens included), by its own rule."""
    if endpoint == "embeddings":
        return embeddings_input(body)
    if endpoint == "messages":
        return claude_count(body["model"], claude_blocks(body))
    if endpoint in ("chat", "responses"):
        return openai_input(body)
    raise ValueError(f"unknown endpoint {endpoint!r}: chat, responses, embeddings or messages")


def reply(model: str, prompt: str, limit: int | None, fixed: str | None) -> tuple[str, int]:
    """The visible reply text (``fixed``, else a deterministic text chosen from ``prompt``) and its
    tokens, cut at ``limit`` tokens as a provider stopping at max tokens does."""
    if fixed is not None:
        text = fixed
    else:
        seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
        words = 12 + seed % 60
        text = " ".join(_WORDS[(seed + i) % len(_WORDS)] for i in range(words)).capitalize() + "."
    tokens = claude_scaled(raw(text, model)) if is_claude(model) else raw(text, model)
    if limit is not None and tokens > limit:
        text = text[: int(len(text) * limit / tokens)]
        tokens = limit
    return text, tokens


def is_reasoning(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4", "gpt-5"))

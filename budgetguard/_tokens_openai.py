"""OpenAI request token counts: chat messages, tool definitions, Responses input items, structured
output formats and the per-family overheads the API adds to them.

Messages follow OpenAI's published rules (the "How to count tokens with tiktoken" cookbook): 3 tokens
per message, 1 more per ``name``, 3 to prime the reply, and the cookbook's per-function overheads for
tool definitions. Plain chat is exact. What the cookbook does not cover was measured on recorded
requests whose input OpenAI counted (see ``_FAMILIES``): the text the API adds for tools, strict
tools, structured output, built-in tools and reasoning models. Those constants are upper bounds of
what was measured, so an estimate may run above OpenAI's count but not below it. Images and files
are bounded in ``_tokens_media``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

from ._cache import Bounded
from ._tokens import _cache, as_mapping, encoding_for_model
from ._tokens_media import file_data_countable, file_data_tokens, image_size, image_tokens

__all__ = [
    "audio_ids",
    "count_message_tokens",
    "count_openai_request",
    "count_responses_tokens",
    "count_tool_tokens",
    "image_tokens",
    "read_openai_request",
    "unseen_inputs",
]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


# The cookbook's per-function overheads: (func_init, prop_init, prop_key, enum_init, enum_item, func_end)
_TOOL_OVERHEAD_CL100K = (10, 3, 3, -3, 3, 12)
_TOOL_OVERHEAD_O200K = (7, 3, 3, -3, 3, 12)


@dataclass(frozen=True, slots=True)
class _Family:
    """Tokens a model family's API adds to a request beyond the cookbook's rules."""

    tools: int = 0  # a request with function tools
    preamble: int = 0  # function tools on Chat Completions, or added by an ``additional_tools`` item
    strict: int = 0  # a Responses request with a strict function tool (constrained-decoding text)
    schema: int = 0  # a structured-output format, beyond its name, description and schema
    item: int = 0  # a Responses input item that is not a message (function call, output...)
    system: int = 0  # every request: the system text reasoning models are given
    responses: int = 0  # every Responses API request
    assistant: int = 0  # an assistant message (the channel it was written in)


# By model-name prefix, first match wins. Each constant is the largest excess over the cookbook's
# rules measured on recorded requests (the input tokens OpenAI reported, 2025-2026 recordings in
# pydantic-ai and openllmetry test cassettes), so every recorded request is bounded; a family
# without a measurement of its own takes the gpt-4o value.
_GPT4 = _Family(
    # gpt-3.5-turbo, gpt-4, gpt-4o chat with tools: up to 3 above the cookbook's function rule
    tools=3,
    # gpt-4o Responses, one one-property strict tool: 255 counted vs 46 (4 of 6 such requests;
    # the other 2 counted none of it)
    strict=205,
    # gpt-4o and gpt-4.1-nano json_schema formats: up to 7 above the schema's compact JSON
    schema=8,
    # gpt-4o Responses: one request counted 42 and, recorded later, 24 (the chat rules' count)
    responses=18,
)
# o-series: o3-mini Responses +58 (o3-mini chat: the cookbook's count); o1-mini chat +7 (its system
# prompt sent as a first user message); tools, strict tools and schemas as gpt-4o (not measured)
_O_SERIES = _Family(tools=3, strict=205, schema=8, responses=58)
_O1 = _Family(tools=3, strict=205, schema=8, system=7, responses=51)
# gpt-5, -mini, -nano, gpt-5.2 to 5.6: Chat Completions adds 82 to a request with function tools
# whatever their number (gpt-5-mini: 126 counted vs 44; the Responses API: none), and so does a
# Responses ``additional_tools`` item; a function call / output / reasoning item +9 over the
# cookbook's message (gpt-5.4: 7 items, one adding tools: +141); an assistant message +2 (gpt-5:
# two assistant messages, +3 over the cookbook's count, which runs 1 above on plain requests)
_GPT5 = _Family(preamble=82, schema=8, item=9, assistant=2)
_FAMILIES: tuple[tuple[str, _Family], ...] = (
    ("gpt-3.5", _GPT4),
    ("gpt-4", _GPT4),  # gpt-4, gpt-4-turbo, gpt-4o, gpt-4.1, gpt-4.5
    ("chatgpt-4o", _GPT4),
    ("o1", _O1),
    ("o3", _O_SERIES),
    ("o4", _O_SERIES),
    ("codex", _O_SERIES),
    ("gpt-5", _GPT5),
    ("", _GPT4),
)


def _family(model: str) -> _Family:
    """``model``'s family, kept in ``_families`` (hot callers look there first: ``_find_family``)."""
    found = _find_family(model)
    if found is None:
        bare = model.rsplit("/", 1)[-1].removeprefix("ft:")
        found = _families.put(model, next(family for prefix, family in _FAMILIES if bare.startswith(prefix)))
    return found


_families: Bounded[str, _Family] = Bounded("tokens.families", 4096)
_find_family = _families.get
"""``_families.get``, bound once: CPython specializes the call of a bound C method, but not a method call
on a dict subclass (about 170 instructions more a lookup, on every request)."""
_find_model = _cache.models.get  # (the count cache's encoding and counter by model name, bound once too)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _image_part(part: Mapping[str, Any], model: str) -> int:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    detail = (image.get("detail") if isinstance(image, Mapping) else None) or part.get("detail")
    size = image_size(url) if isinstance(url, str) else None
    return image_tokens(model, detail or "auto", size)


def _file_of(part: Mapping[str, Any]) -> Mapping[str, Any]:
    """A file part's fields: chat nests them under ``file``, Responses ``input_file`` is flat."""
    nested = part.get("file")
    return nested if isinstance(nested, Mapping) else part


def _file_part(part: Mapping[str, Any], encoding: tiktoken.Encoding, model: str) -> int:
    """A file part: its base64 ``file_data`` bounded (its name counted); by id or URL it is unseen
    input (``unseen_inputs``) and counts its name only."""
    file = _file_of(part)
    name = file.get("filename")
    total = _cache.count(encoding, name) if isinstance(name, str) else 0
    data = file.get("file_data")
    if isinstance(data, str):
        total += file_data_tokens(data, model) or 0  # None: unseen (pages not countable offline)
    return total


def _content_tokens(content: Any, encoding: tiktoken.Encoding, model: str) -> int:
    """Tokens of a message's content: a string or a list of parts (text, image, file, others as JSON)."""
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
        if not isinstance(part, Mapping):
            part = as_mapping(part, "a content part")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            total += _cache.count(encoding, part.get("text") or "")
        elif kind in ("image_url", "input_image", "image"):
            total += _image_part(part, model)
        elif kind in ("file", "input_file"):
            total += _file_part(part, encoding, model)
        else:  # audio, refusals...: count their JSON, a documented over-estimate
            total += _cache.count(encoding, _json(part))
    return total


def _value_tokens(key: str, value: Any, encoding: tiktoken.Encoding, model: str) -> int:
    if key in ("content", "output"):
        return _content_tokens(value, encoding, model)
    if isinstance(value, str):
        return _cache.count(encoding, value)
    if value is None:
        return 0
    # tool_calls, function_call, audio...: the serialized arguments are what the model reads
    return _cache.count(encoding, _json(value))


def count_message_tokens(
    messages: Iterable[Mapping[str, Any]],
    model: str,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Input tokens of OpenAI chat messages (and ``tools``), by OpenAI's published counting rules."""
    return _count_messages(messages, model, tools)[0]


def _count_messages(
    messages: Iterable[Mapping[str, Any]], model: str, tools: Sequence[Mapping[str, Any]] | None
) -> tuple[int, bool]:
    """``count_message_tokens``, and whether the messages are plain: strings only, no item ``type``
    (nothing ``unseen_inputs`` looks for can be in them)."""
    encoding, count = _find_model(model) or _cache.for_model(model)
    total = REPLY_PRIMING
    plain = True
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if type(value) is str:  # role, content, name: the common case, counted in one call
                total += count(value)
            else:
                total += _value_tokens(key, value, encoding, model)
                plain = False
        if "name" in message:
            total += TOKENS_PER_NAME
        if "type" in message:
            plain = False
    if tools:
        total += count_tool_tokens(tools, model)
    return total, plain


# -- tool definitions --------------------------------------------------------------------------------


def count_tool_tokens(tools: Sequence[Mapping[str, Any]], model: str) -> int:
    """Tokens of OpenAI tool definitions (chat ``tools`` or Responses ``tools``) by the cookbook's
    rules: functions by name, description and parameters, built-in tools by their JSON."""
    encoding = encoding_for_model(model)
    cookbook = _TOOL_OVERHEAD_CL100K if encoding.name == "cl100k_base" else _TOOL_OVERHEAD_O200K
    total = 0
    for tool in tools:
        function = tool.get("function", tool)  # chat nests it; Responses API tools are flat
        if "name" not in function or tool.get("type", "function") not in _CLIENT_TOOLS:
            total += _cache.count(encoding, _json(tool))  # built-in tools: their JSON
            continue
        total += _function_tokens(function, encoding, cookbook)
    if tools:
        total += cookbook[5]
    return total


def _function_tokens(
    function: Mapping[str, Any], encoding: tiktoken.Encoding, cookbook: tuple[int, ...]
) -> int:
    func_init, prop_init, prop_key, enum_init, enum_item, _ = cookbook
    total = func_init
    description = (function.get("description") or "").removesuffix(".")
    total += _cache.count(encoding, f"{function['name']}:{description}")
    parameters = function.get("parameters") or function.get("format") or {}
    properties = parameters.get("properties") or {} if isinstance(parameters, Mapping) else {}
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
            if nested:  # nested objects, arrays, anyOf, defaults: not in the cookbook; their JSON
                line += _json(nested)
            total += _cache.count(encoding, line)
    if isinstance(parameters, Mapping):
        # $defs, a schema-level description, a custom tool's grammar: the model reads them too
        rest = {k: v for k, v in parameters.items() if k not in _PLAIN_SCHEMA_KEYS}
        if rest:
            total += _cache.count(encoding, _json(rest))
    return total


_PLAIN_SCHEMA_KEYS = frozenset({"type", "properties", "required", "additionalProperties", "title"})


# -- OpenAI Responses API --------------------------------------------------------------------


def count_responses_tokens(
    input: str | Sequence[Mapping[str, Any]] | None,
    model: str,
    *,
    instructions: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Input tokens of a Responses API input (and ``instructions``, ``tools``), by the chat rules.

    ``instructions`` count as a system message; each input item as a message (function calls and
    their outputs by their name, arguments and output; tools an ``additional_tools`` item adds as
    tool definitions).
    """
    messages: list[Mapping[str, Any]] = []
    extra = 0
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    elif input is not None:
        for item in input:
            kind = item.get("type", "message")
            if kind == "message":
                messages.append({"role": item.get("role", "user"), "content": item.get("content")})
            elif kind == "additional_tools" and isinstance(item.get("tools"), list):
                extra += count_tool_tokens(item["tools"], model)
                messages.append({"role": item.get("role", "developer")})
            else:  # function_call, function_call_output, reasoning...: their visible fields
                messages.append({k: v for k, v in item.items() if k not in _ITEM_IDS})
    return count_message_tokens(messages, model, tools=tools) + extra


_ITEM_IDS = frozenset({"type", "id", "call_id", "status"})


# -- whole requests ----------------------------------------------------------------------------------


def _response_format(request: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The structured-output format of a chat (``response_format``) or Responses (``text.format``)
    request, flattened to ``{"type", "name", "description", "schema"}``; ``None`` for plain text."""
    fmt = request.get("response_format")
    if not isinstance(fmt, Mapping):
        text = request.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return None
    inner = fmt.get("json_schema")
    return {**fmt, **inner} if isinstance(inner, Mapping) else fmt


def _format_tokens(fmt: Mapping[str, Any], encoding: tiktoken.Encoding, family: _Family) -> int:
    """A structured-output format: its name, description and schema as JSON, plus the family's overhead."""
    total = family.schema
    for key in ("name", "description"):
        value = fmt.get(key)
        if isinstance(value, str):
            total += _cache.count(encoding, value)
    schema = fmt.get("schema")
    if schema is not None:
        total += _cache.count(encoding, json.dumps(schema, separators=(",", ":"), default=str))
    return total


# Built-in (server-side) tools: the instructions the API adds when one is offered, measured as the
# largest excess over the request's other tokens. A built-in tool not measured yet is charged the
# largest measured one.
_BUILTIN_TOOLS = {
    "web_search": 250,  # gpt-4.1: 329 counted vs 62 (one request)
    "tool_search": 355,  # gpt-5.4 / 5.4-mini / 5.6: up to 583 counted vs 213 (20 requests)
}
_UNMEASURED_BUILTIN = max(_BUILTIN_TOOLS.values())
_CLIENT_TOOLS = ("function", "custom")  # tools the caller runs: counted by the cookbook's rules
# A reasoning "pro" mode adds its own system text (gpt-5.6-sol: 1,549 counted vs 19).
_REASONING_MODES = {"pro": 1600}


def count_openai_request(request: Mapping[str, Any]) -> int:
    """Input tokens of a chat (``messages``) or Responses (``input`` / ``instructions``) request: its
    messages or items and tools by the cookbook's rules, its structured-output format, and what the
    API adds for its model's family (``_FAMILIES``), built-in tools and reasoning modes.

    Content the request references without carrying (``unseen_inputs``) is not in this count."""
    return read_openai_request(request, references=False)[0]


def read_openai_request(request: Mapping[str, Any], references: bool = True) -> tuple[int, tuple[str, ...]]:
    """``count_openai_request`` and ``unseen_inputs`` of ``request`` in one reading (``()`` for the
    latter with ``references`` off): plain chat messages (``_count_messages``) are not walked again
    for references."""
    model = request["model"]
    family = _find_family(model) or _family(model)
    key = "messages" if "messages" in request else "input"
    entries = request.get(key)
    if type(entries) is list or type(entries) is tuple:
        for entry in entries:
            if type(entry) is not dict:  # SDK objects (a response's output fed back): read by their fields
                read = [
                    e if isinstance(e, Mapping) else as_mapping(e, "a message or input item") for e in entries
                ]
                request = {**request, key: read}
                break
    listed = request.get("tools") or request.get("functions")
    tools: Sequence[Mapping[str, Any]] = ()
    functions: Sequence[Mapping[str, Any]] = ()
    builtin: Iterable[str] = ()
    if listed:
        tools = [tool for tool in listed if isinstance(tool, Mapping)]
        functions = [tool for tool in tools if tool.get("type", "function") in _CLIENT_TOOLS]
        builtin = {
            str(tool.get("type")) for tool in tools if tool.get("type", "function") not in _CLIENT_TOOLS
        }
    total = family.system
    if functions:
        total += family.tools
    plain = False
    if "messages" in request:
        messages = request["messages"]
        counted, plain = _count_messages(messages, model, tools)
        total += counted
        if functions:
            total += family.preamble
        if not messages:  # (unseen_inputs reads the input items then)
            plain = False
    else:
        items = request.get("input")
        total += family.responses
        total += count_responses_tokens(items, model, instructions=request.get("instructions"), tools=tools)
        if any(tool.get("strict") for tool in functions):
            total += family.strict
        for item in items if isinstance(items, list | tuple) else ():
            kind = item.get("type", "message") if isinstance(item, Mapping) else "message"
            if kind != "message":
                total += family.item + (family.preamble if kind == "additional_tools" else 0)
    for kind in builtin:
        name = "web_search" if kind.startswith("web_search") else kind
        total += _BUILTIN_TOOLS.get(name, _UNMEASURED_BUILTIN)
    if family.assistant:
        entries = request.get("messages") or request.get("input")
        if isinstance(entries, list | tuple):
            total += family.assistant * sum(
                1 for entry in entries if isinstance(entry, Mapping) and entry.get("role") == "assistant"
            )
    if "response_format" in request or "text" in request:
        fmt = _response_format(request)
        if fmt is not None:
            total += _format_tokens(fmt, encoding_for_model(model), family)
    if "reasoning" in request:
        reasoning = request["reasoning"]
        mode = reasoning.get("mode") if isinstance(reasoning, Mapping) else None
        total += _REASONING_MODES.get(mode, 0) if isinstance(mode, str) else 0
    if not references or (plain and "tools" not in request and _STATE.isdisjoint(request)):
        return total, ()
    return total, unseen_inputs(request)


# -- input the request does not carry ----------------------------------------------------------------

_STATE_KEYS = ("previous_response_id", "conversation", "prompt")  # (a stored prompt's text is server-side)
_STATE = frozenset(_STATE_KEYS)


def unseen_inputs(request: Mapping[str, Any]) -> tuple[str, ...]:
    """What an OpenAI request makes the model read without carrying it: the server-side history of
    ``previous_response_id`` / ``conversation``, a stored prompt (``prompt``), items by reference
    (``item_reference``), files by ``file_id`` or URL (their pages are not in the request), a PDF whose
    pages cannot be counted offline (``file_data``), MCP servers' tool lists, and a chat's earlier audio
    answers by id (``"audio id"``: audio input, see ``Estimate.input_audio_tokens``)."""
    found = [key for key in _STATE_KEYS if request.get(key)] if not _STATE.isdisjoint(request) else []
    tools = request.get("tools")
    if tools and any(isinstance(tool, Mapping) and tool.get("type") == "mcp" for tool in tools):
        found.append("mcp_tools")
    entries = request.get("messages") or request.get("input")
    if type(entries) is list or isinstance(entries, list | tuple):
        for entry in entries:
            if type(entry) is dict and type(entry.get("content")) is str and "type" not in entry:
                continue  # a plain message
            if isinstance(entry, Mapping):
                if "type" in entry:
                    _unseen_parts(entry, found)
                audio = entry.get("audio")  # an earlier audio answer by id: read again as audio input
                if isinstance(audio, Mapping) and audio.get("id") and "audio id" not in found:
                    found.append("audio id")
                for key in ("content", "output"):  # message content, a tool's output
                    parts = entry.get(key)
                    if isinstance(parts, list | tuple):
                        for part in parts:
                            if isinstance(part, Mapping):
                                _unseen_parts(part, found)
    return tuple(found) if found else ()


def audio_ids(request: Mapping[str, Any]) -> int:
    """How many earlier audio answers a chat sends back by id (assistant ``{"audio": {"id": ...}}``):
    each is read again as audio input, at most one answer of the model (its maximum output)."""
    entries = request.get("messages") or request.get("input")  # (where ``unseen_inputs`` finds them)
    if not isinstance(entries, list | tuple):
        return 0
    return sum(
        1
        for entry in entries
        if isinstance(entry, Mapping) and isinstance(audio := entry.get("audio"), Mapping) and audio.get("id")
    )


def _unseen_parts(part: Mapping[str, Any], found: list[str]) -> None:
    kind = part.get("type")
    if kind == "item_reference" and kind not in found:
        found.append(kind)
    elif kind in ("file", "input_file"):
        file = _file_of(part)
        for key in ("file_id", "file_url"):
            if file.get(key) and key not in found:
                found.append(key)
        data = file.get("file_data")
        if isinstance(data, str) and "file_data" not in found and not file_data_countable(data):
            found.append("file_data")  # a PDF whose pages cannot be counted offline

"""Adapters for the openai and anthropic SDKs: find the request, read usage, fold streams.

Nothing here imports an SDK: objects are recognised by their module and shape, so budgetguard works
with whichever SDK versions are installed (and with none).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ._usage import Usage, _get, _is_code_block, _merge_anthropic_delta, _reader

__all__ = ["StreamFolder", "request_variant", "response_variant", "sdk_provider", "without_sdk_retries"]

Variant = Mapping[str, str]
"""A price variant in genai-prices' terms: ``{"service_tier": "flex"}``, ``{"processing": "batch"}``."""

_STANDARD_TIERS = frozenset({"auto", "default", "standard", "standard_only"})
_REQUEST_KEYS = frozenset(("messages", "input", "instructions", "system", "tools", "prompt"))


def sdk_provider(fn: Callable[..., Any]) -> str | None:
    """``"openai"`` / ``"anthropic"`` when ``fn`` is a bound SDK resource method, else ``None``."""
    owner = getattr(fn, "__self__", None)
    module = type(owner).__module__ if owner is not None else ""
    for provider in ("openai", "anthropic"):
        if module.startswith(f"{provider}.resources"):
            return provider
    return None


def without_sdk_retries(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same SDK method on a copy of its client with ``max_retries=0``.

    The guard's own retries count every attempt against the budget; SDK-internal retries would send
    attempts nobody reserved. Methods we cannot rebuild are returned unchanged.
    """
    owner = getattr(fn, "__self__", None)
    client = getattr(owner, "_client", None)
    if client is None or not hasattr(client, "with_options"):
        return fn
    quiet = client.with_options(max_retries=0)
    resource = _find_resource(quiet, type(owner), depth=3)
    if resource is None:
        return fn
    rebuilt: Callable[..., Any] = getattr(resource, fn.__name__)
    return rebuilt


def _find_resource(root: Any, cls: type, depth: int) -> Any:
    frontier = [root]
    for _ in range(depth):
        nxt = []
        for node in frontier:
            for name in dir(type(node)):
                if name.startswith("_") or name in ("with_options", "with_raw_response", "copy"):
                    continue
                attr = inspect.getattr_static(type(node), name, None)
                if not isinstance(attr, property) and type(attr).__name__ != "cached_property":
                    continue
                try:
                    value = getattr(node, name)
                except Exception:  # a lazily imported resource that fails: not ours
                    continue
                if type(value) is cls:
                    return value
                if type(value).__module__.split(".")[0] == type(root).__module__.split(".")[0]:
                    nxt.append(value)
        frontier = nxt
    return None


def is_request(arguments: Mapping[str, Any]) -> bool:
    """Whether a user function's arguments are an SDK request: they carry a model and its input."""
    return isinstance(arguments.get("model"), str) and not _REQUEST_KEYS.isdisjoint(arguments)


def request_variant(request: Mapping[str, Any], provider: str, *, batch: bool = False) -> Variant | None:
    """The price variant a request asks for, in genai-prices' terms, or ``None`` for standard.

    ``service_tier`` ``"flex"`` / ``"priority"`` (OpenAI), ``speed="fast"`` (Anthropic) and batch
    processing (``batch=True``: the request goes through the provider's Batch API)."""
    if batch:
        return {"processing": "batch"}
    if provider == "anthropic":
        return {"speed": "fast"} if request.get("speed") == "fast" else None
    tier = request.get("service_tier")
    if isinstance(tier, str) and tier not in _STANDARD_TIERS:
        return {"processing": "batch"} if tier == "batch" else {"service_tier": tier}
    return None


def served_tier(response: Any) -> str | None:
    """The service tier a response (or stream event) reports, as the provider names it, or ``None``.

    OpenAI responses and chunks carry ``service_tier`` (``"flex"``, ``"priority"``, ``"default"``...);
    Anthropic reports ``usage.service_tier`` (``"standard"``, ``"priority"``, ``"batch"``) and
    ``usage.speed`` (reported here as the tier ``"fast"``)."""
    get = _reader(response, _TIER_FIELDS)
    usage = get("usage")
    if usage is None:
        for name in ("response", "message"):  # a Responses API event, an Anthropic message_start
            nested = get(name)
            if nested is not None and (tier := served_tier(nested)) is not None:
                return tier
        tier = get("service_tier")
        return tier if isinstance(tier, str) else None
    get_usage = _reader(usage, _TIER_FIELDS)
    if get_usage("speed") == "fast":
        return "fast-mode"
    tier = get("service_tier")
    if not isinstance(tier, str):
        tier = get_usage("service_tier")
    return tier if isinstance(tier, str) else None


_TIER_FIELDS = ("usage", "speed", "service_tier", "response", "message")


def response_variant(tier: str | None, requested: Variant | None) -> Variant | None:
    """The variant to charge at: the one the response reports it was served at, else the requested one.

    A Batch API line is charged at batch prices whatever tier its body names."""
    if tier is None or (requested is not None and requested.get("processing") == "batch"):
        return requested
    if tier == "fast-mode":
        return {"speed": "fast"}
    if tier in _STANDARD_TIERS:
        return None
    return {"processing": "batch"} if tier == "batch" else {"service_tier": tier}


def prepare_openai_stream(request: dict[str, Any]) -> None:
    """Ask an OpenAI chat stream for its usage (``include_usage``), unless the caller said otherwise."""
    if request.get("stream") is True and "messages" in request:
        options = dict(request.get("stream_options") or {})
        options.setdefault("include_usage", True)
        request["stream_options"] = options


def is_stream(result: Any) -> bool:
    if type(result) is dict or hasattr(result, "model_dump") or isinstance(result, str | bytes | Mapping):
        return False  # (the common replies first: an SDK object or a dict)
    return hasattr(result, "__next__") or hasattr(result, "__anext__") or is_stream_manager(result)


_STREAM_MANAGERS = frozenset(
    {
        "MessageStreamManager",
        "AsyncMessageStreamManager",
        "ResponseStreamManager",
        "AsyncResponseStreamManager",
    }
)


def is_stream_manager(result: Any) -> bool:
    """Anthropic's ``client.messages.stream(...)`` and OpenAI's ``client.responses.stream(...)``: context
    managers that yield the SDK's stream object."""
    return type(result).__name__ in _STREAM_MANAGERS


_TIER_EVENTS = frozenset(
    {None, "message_start", "response.created", "response.completed", "response.incomplete"}
)


class StreamFolder:
    """Accumulates usage and streamed text from stream events, one event at a time.

    ``complete`` turns true when the provider's final usage arrived (OpenAI's usage chunk, Anthropic's
    ``message_delta``, the Responses API's ``response.completed``). Before that, ``usage`` may hold a
    partial count (Anthropic's ``message_start`` has the input but only a token or so of output).
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.complete = False
        self.text: list[str] = []
        self.tier: str | None = None
        """The service tier the stream reported (``served_tier``), if any."""
        self.ran_code = False
        """An Anthropic stream showed a code execution result: a container session is billed."""

    def feed(self, event: Any) -> None:
        kind = _get(event, "type")
        if kind in _TIER_EVENTS:
            self.tier = served_tier(event) or self.tier
        if kind == "message_delta":
            if self.usage is not None:
                self.usage = _merge_anthropic_delta(self.usage, _get(event, "usage"))
                if self.ran_code and not self.usage.code_execution_sessions:
                    self.usage = dataclasses.replace(self.usage, code_execution_sessions=1)
                # an interim message_delta (no stop_reason yet) carries a running count, not the final
                self.complete = _get(_get(event, "delta"), "stop_reason") is not None
            return
        if kind == "content_block_start" and _is_code_block(_get(event, "content_block")):
            self.ran_code = True
        if kind == "message_start":
            self.usage = Usage.from_response(event)
            return
        if kind in ("response.completed", "response.incomplete"):
            self.usage = Usage.from_response(event)
            self.complete = True
            return
        if _get(event, "usage") is not None and kind is None:  # OpenAI chat chunk with include_usage
            self.usage = Usage.from_response(event)
            self.complete = True
        text = _delta_text(event, kind)
        if text:
            self.text.append(text)


def _delta_text(event: Any, kind: Any) -> str | None:
    if kind == "content_block_delta":
        delta = _get(event, "delta")
        text = _get(delta, "text") or _get(delta, "partial_json") or _get(delta, "thinking")
        return text if isinstance(text, str) else None
    if kind == "response.output_text.delta":
        value = _get(event, "delta")
        return value if isinstance(value, str) else None
    choices = _get(event, "choices")
    if choices:
        parts = []
        for choice in choices:
            delta = _get(choice, "delta")
            content = _get(delta, "content")
            if isinstance(content, str):
                parts.append(content)
            for call in _get(delta, "tool_calls") or ():
                arguments = _get(_get(call, "function"), "arguments")
                if isinstance(arguments, str):
                    parts.append(arguments)
        return "".join(parts) or None
    return None

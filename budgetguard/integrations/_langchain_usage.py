"""LangChain runs' usage: the bill of an ``LLMResult`` or an ``AIMessage``, and of a stream that broke off."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import reduce
from operator import add
from typing import Any

from .._errors import UsageError
from .._estimate import Estimate
from .._settle import received
from .._usage import Usage, with_tool_items

try:
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult
    from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from . import missing_extra

    raise missing_extra("langchain", exc) from exc

__all__ = [
    "event_chunks",
    "from_cache",
    "partial_usage",
    "read_usage",
    "usage_from_message",
    "usage_from_result",
]


def usage_from_result(result: LLMResult) -> Usage:
    """The usage of one model run: the first generation's message with ``usage_metadata``
    (``usage_from_message``; with ``n`` > 1 every generation carries the run's total), else
    ``llm_output["token_usage"]`` or ``["usage"]``."""
    for generations in result.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if getattr(message, "usage_metadata", None):
                return usage_from_message(message)
    output = result.llm_output or {}
    for key in ("token_usage", "usage"):
        if output.get(key):
            return Usage.from_response(output[key])
    raise UsageError(
        "the LangChain result carries neither usage_metadata nor llm_output token usage; "
        "for streams enable the model's usage reporting (ChatOpenAI(stream_usage=True))"
    )


def from_cache(result: LLMResult) -> bool:
    """Whether LangChain answered the run from its LLM cache, sending nothing: it marks the usage of each
    cached message ``total_cost: 0`` (``_convert_cached_generations``), which no provider's usage has."""
    messages = [getattr(g, "message", None) for generations in result.generations for g in generations]
    usages = [getattr(message, "usage_metadata", None) or {} for message in messages]
    return bool(usages) and all(usage.get("total_cost") == 0 for usage in usages)


def usage_from_message(message: Any) -> Usage:
    """The usage of an ``AIMessage``: the bill, billed units that are not tokens included.

    ``usage_metadata`` carries tokens only, so the provider's own usage is read when the message carries
    it, by the parser of its wire format (``Usage.from_response``): OpenAI chat's
    ``response_metadata["token_usage"]`` (audio and image tokens), Anthropic's
    ``response_metadata["usage"]`` (``server_tool_use`` requests, ``iterations``); one whose token
    totals disagree with ``usage_metadata`` (stream chunks merged into it) is not used. A Responses API
    message adds its built-in tool calls, each billed (``web_search_call``...), from its output items:
    content blocks (``output_version="responses/v1"``, the default), ``additional_kwargs["tool_outputs"]``
    (``"v0"``) or ``server_tool_call`` blocks (``"v1"``)."""
    metadata = getattr(message, "usage_metadata", None)
    response = getattr(message, "response_metadata", None) or {}
    found = _wire_usage(response, metadata)
    if found is None:
        if not metadata:
            raise UsageError(
                f"the model's {type(message).__name__} carries no usage_metadata; for streams enable the "
                "model's usage reporting (ChatOpenAI(stream_usage=True))"
            )
        found = _from_usage_metadata(metadata)
    if response.get("object") == "response":  # (a Responses API response)
        items = _output_items(message)
        if items:
            return with_tool_items(found, items)
    return found


def _wire_usage(response: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> Usage | None:
    """The provider's own usage in ``response_metadata``, when it is there and agrees with
    ``usage_metadata``'s token totals."""
    wire = response.get("token_usage") or response.get("usage")
    if not isinstance(wire, Mapping):
        return None
    try:
        found = Usage.from_response(wire)
    except UsageError:
        return None
    if metadata and (found.total_input_tokens, found.total_output_tokens) != (
        metadata.get("input_tokens"),
        metadata.get("output_tokens"),
    ):
        return None
    return found


def _output_items(message: Any) -> list[Any]:
    """A Responses API message's output items, in any of langchain-openai's output versions."""
    content = message.content if isinstance(message.content, list) else []
    items = [block for block in content if isinstance(block, Mapping)]
    items += (getattr(message, "additional_kwargs", None) or {}).get("tool_outputs") or []
    for block in content:  # v1: standard blocks, a server tool call named by its tool
        if isinstance(block, Mapping) and block.get("type") == "server_tool_call":
            extras = block.get("extras") or {}
            call = {"type": f"{block.get('name')}_call", "id": block.get("id")}
            items.append({**call, "container_id": extras.get("container_id")})
    return items


def read_usage(result: LLMResult | Usage) -> Usage:
    return result if isinstance(result, Usage) else usage_from_result(result)


def partial_usage(
    response: LLMResult,
    est: Estimate,
    factor: Decimal,
    background: bool = False,
    shown: Sequence[ChatGenerationChunk | GenerationChunk] = (),
    events: Sequence[Mapping[str, Any]] = (),
) -> Usage | None:
    """What a broken-off stream is charged: its usage if the usage chunk came once the model finished,
    else what the guard charges any stream that ended without it (``received``: the usage a chunk carried,
    Anthropic's ``message_start`` input on langchain-aws's Claude, or the input estimate; the streamed
    text and tool call arguments counted with tiktoken, a hidden-reasoning model's or a speaking one's
    whole output bound); ``None`` when nothing was received (no chunk: the request may not have been served).
    A chunk without text counts: a model that reasons unseen (gpt-5) streams its role chunk, then thinks
    before it writes, billed as it goes (a review found such a stream cut before its text charged its
    input alone). ``factor``: the Claude safety factor of the model; ``background``: the request runs in
    the background (billed whole, its worst case, once its stream showed a chunk). ``shown``: the chunks
    the run's ``on_llm_new_token`` showed, read when ``response`` carries none: langchain-core ends a run
    that streams inside ``invoke`` (``streaming=True``, ``astream_events``, LangGraph's
    ``stream_mode="messages"``) with the error's generation alone (a second review found such a cut
    stream charged its input). ``events``: the protocol events its ``on_stream_event`` showed
    (``stream_events(version="v3")``), read as chunks when no ``on_llm_new_token`` showed one (a model
    whose ``_stream`` reports its chunks shows each twice, once each way: ``event_chunks``)."""
    shown = shown or event_chunks(events)
    generations = [g for listed in response.generations for g in listed]
    if shown and not any(isinstance(g, ChatGenerationChunk | GenerationChunk) for g in generations):
        chats = [chunk for chunk in shown if isinstance(chunk, ChatGenerationChunk)]
        chat = merge_chat_generation_chunks(chats) if len(chats) == len(shown) else None
        merged = chat or reduce(add, shown)
        response = LLMResult(generations=[[merged], *response.generations], llm_output=response.llm_output)
        generations.insert(0, merged)
    texts = [g.text for g in generations if g.text]
    texts += [args for g in generations for args in _arguments(getattr(g, "message", None))]
    thinking = any(_thought(getattr(g, "message", None)) for g in generations)
    streamed = any(isinstance(g, ChatGenerationChunk | GenerationChunk) for g in generations)
    if not texts and not thinking and not streamed:
        return None
    try:
        usage: Usage | None = usage_from_result(response)
    except UsageError:
        usage = None
    if usage is not None and any(_finished(g) for g in generations):
        return usage
    text, whole = "".join(texts), background and streamed
    return received(est, usage, text, est.model, thinking=thinking, factor=factor, background=whole)[0]


def event_chunks(events: Sequence[Mapping[str, Any]]) -> list[ChatGenerationChunk]:
    """The chunks langchain-core 1.8's protocol events (``MessagesData``) stand for, as ``on_llm_new_token``
    shows them: ``message-start`` a role chunk; a block's start and deltas its text, reasoning or tool call
    arguments, at the block's index (merged as chunks merge); ``message-finish`` its usage and metadata
    (its finish reason). A review found a v3 stream cut after Claude's thinking charged as a failed call.
    An event off the protocol (a native producer's: a string for a delta, arguments not a string) is an
    empty chunk: read in ``on_llm_error``, it must not raise there (``raise_error``: the model's error
    replaced, the hold never settled, a review of lcv3 found)."""
    return [ChatGenerationChunk(message=_event_message(event)) for event in events]


def _event_message(event: Mapping[str, Any]) -> AIMessageChunk:
    try:
        return _read_event(event)
    except (AttributeError, TypeError, ValueError):  # (pydantic's ValidationError is a ValueError)
        return AIMessageChunk(content="")


_DELTAS: dict[Any, str] = {"text-delta": "text", "reasoning-delta": "reasoning", "tool-call-delta": "args"}
"""The protocol's deltas read, by the one string each carries (an extra field is not read: two deltas of a
block with an extra float would not merge)."""


def _read_event(event: Mapping[str, Any]) -> AIMessageChunk:
    kind, index = event.get("event"), event.get("index")
    if kind == "message-finish":
        usage = event.get("usage") or {}
        whole = all(isinstance(usage.get(key), int) for key in ("input_tokens", "output_tokens"))
        total = {"total_tokens": usage["input_tokens"] + usage["output_tokens"]} if whole else {}
        metadata: Any = {**usage, **total} if whole else None
        return AIMessageChunk(
            content="", usage_metadata=metadata, response_metadata=dict(event.get("metadata") or {})
        )
    block = dict(event.get("content") or {}) if kind == "content-block-start" else {}
    delta = event.get("delta") or {} if kind == "content-block-delta" else {}
    if (field := _DELTAS.get(delta.get("type"))) is not None and isinstance(delta.get(field), str):
        kind = "tool_call_chunk" if field == "args" else field
        block = {"type": kind, field: delta.get(field)}
    if block.get("type") in ("tool_call_chunk", "server_tool_call_chunk"):
        call = {
            "name": block.get("name"),
            "args": block.get("args") or "",
            "id": block.get("id"),
            "index": index,
        }
        return AIMessageChunk(content="", tool_call_chunks=[call])  # type: ignore[list-item]
    return AIMessageChunk(content=[{**block, "index": index}] if block else "")


_FINISHED = ("finish_reason", "stop_reason", "stopReason", "done_reason")
"""The keys a streamed message's ``response_metadata`` says the model finished with (OpenAI chat and most
OpenAI-shaped models, Anthropic, Bedrock Converse, Ollama); a Responses API message says ``status``."""


def _finished(generation: Any) -> bool:
    """Whether a streamed message says its model finished: then the usage it carries is the bill, else a
    part of it (a review found a stream cut after ``message_start``'s usage charged no output at all)."""
    metadata = getattr(getattr(generation, "message", None), "response_metadata", None) or {}
    status = metadata.get("status")
    return status in ("completed", "incomplete") or any(metadata.get(key) for key in _FINISHED)


def _arguments(message: Any) -> list[str]:
    """The tool call arguments a streamed message wrote (its ``tool_call_chunks``, which its text leaves
    out): output the model was billed for."""
    chunks = getattr(message, "tool_call_chunks", None) or ()
    return [args for chunk in chunks if isinstance(args := chunk.get("args"), str) and args]


def _thought(message: Any) -> bool:
    """Whether a message streamed a Claude thinking block: ``thinking`` / ``redacted_thinking`` (Anthropic's
    own), LangChain's standard ``reasoning`` block (``output_version="v1"``) or Bedrock Converse's
    ``reasoning_content`` (a review found the last two charged as a Claude that did not think)."""
    content = getattr(message, "content", None)
    blocks = content if isinstance(content, list) else ()
    return any(isinstance(b, Mapping) and b.get("type") in _THOUGHT for b in blocks)


_THOUGHT = frozenset(("thinking", "redacted_thinking", "reasoning", "reasoning_content"))


def _from_usage_metadata(metadata: Mapping[str, Any]) -> Usage:
    """LangChain's ``UsageMetadata``: ``input_tokens`` is all input, cache reads and writes included."""
    inputs = metadata.get("input_token_details") or {}
    outputs = metadata.get("output_token_details") or {}
    read = _ending(inputs, "cache_read")  # service-tier-prefixed too ("priority_cache_read")
    written = _ending(inputs, "cache_creation")
    written_1h = min(int(inputs.get("ephemeral_1h_input_tokens") or 0), written)
    total_in, output = metadata.get("input_tokens"), metadata.get("output_tokens")
    if not isinstance(total_in, int) or not isinstance(output, int) or read + written > total_in:
        raise UsageError(f"unusable LangChain usage_metadata: {dict(metadata)!r}")
    return Usage(
        input_tokens=total_in - read - written,
        cache_read_tokens=read,
        cache_write_tokens=written - written_1h,
        cache_write_1h_tokens=written_1h,
        output_tokens=output,
        reasoning_tokens=min(_ending(outputs, "reasoning"), output),
    )


def _ending(details: Mapping[str, Any], suffix: str) -> int:
    return sum(int(value or 0) for key, value in details.items() if key.endswith(suffix))

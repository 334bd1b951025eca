"""LangChain runs as the SDK requests budgetguard estimates: a run's messages, ``invocation_params`` and
``metadata`` in the wire shape its chat model sends (OpenAI chat completions, the Responses API, Anthropic
messages)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.utils.function_calling import convert_to_openai_tool

from .._errors import ConfigurationError
from .._price_data import provider_for_url
from .._providers import api_of

__all__ = ["request_from_run", "request_shape"]

_SHAPES = {"openai": "openai", "azure": "openai", "anthropic": "anthropic"}
"""LangChain's ``ls_provider`` -> the request shape its chat model sends (others: guessed from the model).
The provider priced is the ``ls_provider`` itself: ``AzureChatOpenAI`` sends OpenAI's shape to Azure,
priced at its deployment's type."""


def request_from_run(
    messages: Sequence[BaseMessage | Mapping[str, Any]],
    params: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """A LangChain run (its messages, ``invocation_params`` and ``metadata``) as the SDK request to
    estimate, with the provider it is priced at (``None``: by the model's name); its shape is
    ``request_shape``'s.

    An OpenAI run that goes to the Responses API is a Responses request (input items,
    ``max_output_tokens``), counted by that API's rules: langchain-openai's choice, made from the chat
    model's constructor arguments (``model_kwargs``, the run's ``serialized["kwargs"]``:
    ``use_responses_api``, ``output_version="responses/v1"``), its model, or the call's parameters
    (a built-in tool, ``reasoning``, ``include``...)."""
    model = params.get("model") or params.get("model_name") or metadata.get("ls_model_name")
    if not isinstance(model, str) or not model:
        raise ConfigurationError(
            f"cannot tell the model of this LangChain run (invocation params: {sorted(params)}); "
            "budgetguard needs a model name to price it: set model= on the chat model"
        )
    named = str(metadata.get("ls_provider"))
    provider = named if named in _SHAPES else None
    endpoint = (model_kwargs or {}).get("openai_api_base")
    if provider == "openai" and isinstance(endpoint, str) and provider_for_url(endpoint) == "azure":
        provider = "azure"  # (Azure's v1 API through ChatOpenAI: priced where it goes, as guard.wrap does)
    shape = request_shape(provider, model)
    request: dict[str, Any] = {"model": model}
    most = next(
        (
            params[key]
            for key in ("max_completion_tokens", "max_tokens", "max_output_tokens")
            if params.get(key) is not None
        ),
        metadata.get("ls_max_tokens"),
    )
    settings = model_kwargs or {}
    responses = provider is not None and shape == "openai" and _uses_responses(model, params, settings)
    if responses and settings.get("use_previous_response_id"):
        messages, previous = _after_last_response(messages)
        request.update({"previous_response_id": previous} if previous else {})
    openai_messages = convert_to_openai_messages(list(messages))
    tools = list(params.get("tools") or ())
    if shape == "anthropic":
        system, request["messages"] = _anthropic_messages(openai_messages)
        request.update({"system": system} if system else {})
        request.update({"tools": tools} if tools else {})
        request.update({"max_tokens": most} if most is not None else {})
        return _with_params(request, params), provider
    if tools:
        try:
            request["tools"] = [convert_to_openai_tool(tool) for tool in tools]
        except Exception:  # a tool format only its provider knows: count its JSON as text
            openai_messages.append({"role": "system", "content": json.dumps(tools, default=str)})
    if responses:
        request["input"] = _responses_input(openai_messages)
        if "tools" in request:  # (flat, as the Responses API takes them: a strict tool's flag counts)
            request["tools"] = [_flat_tool(tool) for tool in request["tools"]]
        request.update({"max_output_tokens": most} if most is not None else {})
    else:
        request["messages"] = openai_messages
        request.update({"max_completion_tokens": most} if most is not None else {})
    return _with_params(request, params), provider


def _with_params(request: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``request`` with the rest of the run's invocation params as sent (audio output, a conversation,
    Claude's ``thinking``, fast mode...): ``model_kwargs`` merged in where a chat model nests them there
    (ChatAnthropic: it sends them merged into the request; a review found them unread), below the call's
    own parameters, as it sends them (``{**self.model_kwargs, **kwargs}``; a second review found a call's
    ``speed="fast"`` reserved at the base price its ``model_kwargs`` named)."""
    nested = params.get("model_kwargs")
    given = {key: value for key, value in params.items() if value is not None}
    merged = {**nested, **given} if isinstance(nested, Mapping) else params
    for key, value in merged.items():
        if value is not None and key not in _WRITTEN and not key.startswith(("_", "ls_")):
            request.setdefault(key, value)
    return request


_WRITTEN = frozenset(
    ("model", "model_name", "messages", "input", "tools", "max_tokens", "max_completion_tokens",
     "max_output_tokens", "stop", "stream", "model_kwargs")
)  # fmt: skip
"""Invocation params a request does not take as they are: the ones ``request_from_run`` writes in the
wire shape itself, LangChain's own (and ``_type``, ``ls_*``, a nested ``model_kwargs``, merged). Every
other one is a request key the chat model sends (langchain-openai's invocation params are its request's,
``model_kwargs`` included), copied: the estimate reads what bills (``modalities`` / ``audio``,
``web_search_options``, ``conversation``, ``prompt``, ``background``, ``extra_body``, ``n``,
``service_tier``; Claude's ``thinking``, ``speed``, ``mcp_servers``, ``context_management``...)."""


def request_shape(provider: str | None, model: str) -> str:
    """The wire format (``"openai"`` / ``"anthropic"``) of a run ``request_from_run`` read: its chat
    model's (``_SHAPES``), else guessed from the model's name."""
    return _SHAPES.get(provider or "") or api_of(None, model)


_RESPONSES_ONLY = ("context_management", "include", "previous_response_id", "reasoning", "text", "truncation")
"""Call parameters only the Responses API takes: langchain-openai sends a call that has one there."""
_RESPONSES_MODELS = ("gpt-5-pro", "gpt-5.2-pro", "gpt-5.4-pro")
"""Models langchain-openai always calls through the Responses API (and any "codex" model)."""
_RESPONSES_SETTINGS = ("reasoning", "include", "truncation", "context_management")
"""Chat model settings that make langchain-openai call the Responses API."""


def _uses_responses(model: str, params: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """Whether langchain-openai sends this run to the Responses API (as its ``_use_responses_api``)."""
    chosen = settings.get("use_responses_api")
    if isinstance(chosen, bool):
        return chosen
    if settings.get("output_version") == "responses/v1" or settings.get("use_previous_response_id"):
        return True
    if model.startswith(_RESPONSES_MODELS) or "codex" in model:
        return True
    if any(
        settings.get(key) is not None for key in ("reasoning", "include", "truncation", "context_management")
    ):
        return True
    tools = params.get("tools") or ()
    builtin = any(isinstance(tool, Mapping) and tool.get("type", "function") != "function" for tool in tools)
    return builtin or any(key in params for key in _RESPONSES_ONLY)


def _after_last_response(
    messages: Sequence[BaseMessage | Mapping[str, Any]],
) -> tuple[Sequence[BaseMessage | Mapping[str, Any]], str | None]:
    """What langchain-openai sends with ``use_previous_response_id=True`` (its ``_get_last_messages``):
    the messages after the last AI message that a Responses API response answered, and that response's
    id (the server's history, which the estimate bounds); all of them, and ``None``, without one."""
    for at in range(len(messages) - 1, -1, -1):
        message = messages[at]
        if isinstance(message, AIMessage):
            answered = message.response_metadata.get("id")
            if isinstance(answered, str) and answered.startswith("resp_"):
                return messages[at + 1 :], answered
    return messages, None


def _flat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A chat tool definition as the Responses API takes it: its function's fields at the top."""
    function = tool.get("function")
    if not isinstance(function, Mapping):
        return dict(tool)
    return {**{key: value for key, value in tool.items() if key != "function"}, **function}


def _responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages as Responses input items: tool calls as ``function_call`` items, tool
    results as ``function_call_output`` items."""
    items: list[dict[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls") or ()
        if message.get("role") == "tool":
            output = message.get("content")
            items.append(
                {"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": output}
            )
            continue
        if message.get("content") or not calls:
            items.append({"role": message.get("role"), "content": message.get("content") or ""})
        for call in calls:
            function = call.get("function") or {}
            items.append(
                {"type": "function_call", "call_id": call.get("id"), "name": function.get("name"),
                 "arguments": function.get("arguments")}
            )  # fmt: skip
    return items


def _anthropic_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI-shaped messages as Anthropic's (system blocks, messages with tool_use / tool_result)."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        role, blocks = message.get("role"), _blocks(message.get("content"))
        if role in ("system", "developer"):
            system += blocks
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": blocks}
            out.append({"role": "user", "content": [result]})
        else:
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                blocks.append(
                    {"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                     "input": function.get("arguments")}
                )  # fmt: skip
            out.append({"role": "assistant" if role == "assistant" else "user", "content": blocks})
    return system, out


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{"type": "image"} if block.get("type") == "image_url" else dict(block) for block in content]

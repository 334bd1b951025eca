"""Adapters for the openai and anthropic SDKs: find the request, read usage, fold streams.

Nothing here imports an SDK: objects are recognised by their module and shape, so budgetguard works
with whichever SDK versions are installed (and with none).

Two names are kept apart: the *API* (``"openai"`` or ``"anthropic"``: the SDK, hence the request's wire
format) and the *provider* (where the request goes, hence its prices: ``endpoint_provider`` reads it
from the client, e.g. ``"groq"`` for an ``openai.OpenAI`` client on ``https://api.groq.com/openai/v1``,
``"aws"`` for ``AnthropicBedrock``).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any, overload

from ._cache import Bounded, memo
from ._errors import ConfigurationError
from ._price_data import is_claude, provider_for_url, where_it_runs
from ._tool_items import BILLED_TOOL_ITEMS
from ._usage import Usage, _get, _is_code_block, _merge_anthropic_delta, _reader, with_tool_items

__all__ = [
    "RUNNERS", "VARIANT_KEYS", "StreamFolder", "api_of", "as_read", "as_sent", "at_location",
    "client_provider", "endpoint_provider", "is_not_given", "may_reason", "project_tier", "request_variant",
    "response_variant", "runner_refused", "sdk_provider", "served_model", "vertex_location",
    "without_sdk_retries",
]  # fmt: skip

Variant = Mapping[str, str]
"""A price variant in genai-prices' terms: ``{"service_tier": "flex"}``, ``{"processing": "batch"}``."""

_STANDARD_TIERS = frozenset({"auto", "default", "standard", "standard_only"})
_STANDARD_GEOS = frozenset({"global", "not_available"})
"""Anthropic ``inference_geo`` values billed at the standard price."""
_REQUEST_KEYS = frozenset(("messages", "input", "instructions", "system", "tools", "prompt"))


RUNNERS = frozenset({"tool_runner", "thread"})
"""SDK methods whose result sends requests of its own, later and one per turn (Anthropic's
``beta.messages.tool_runner`` and ``beta.messages.thread``, sync and async): a decorator guards one call,
so it refuses them (``runner_refused``); a client ``guard.wrap`` made guards each request they send."""
_RUNNER_OWNERS = frozenset({"Messages", "AsyncMessages"})
"""The resources (of ``anthropic.resources.beta``) whose ``RUNNERS`` send message turns: another
resource's method of that name (``beta.sessions.events.tool_runner``) is not one."""


def runner_refused(fn: Callable[..., Any], provider: str) -> None:
    """Refuse to guard ``fn`` (an SDK method of ``provider``) as one call when it is one of ``RUNNERS``
    of Anthropic's ``beta.messages``."""
    name, owner = getattr(fn, "__name__", ""), type(getattr(fn, "__self__", None))
    if name in RUNNERS and owner.__name__ in _RUNNER_OWNERS and ".beta." in owner.__module__:
        raise ConfigurationError(
            f"{provider}'s {getattr(fn, '__qualname__', name)} returns an object that sends a request "
            "for every turn, each billed: a decorator reserves one call and cannot guard them. Guard the "
            f"client instead: guard.wrap(client, ...) and call {name} on the wrapped client, which reserves "
            "and settles every request it sends"
        )


def sdk_provider(fn: Callable[..., Any]) -> str | None:
    """``"openai"`` / ``"anthropic"`` when ``fn`` is a bound SDK resource method, else ``None``."""
    owner = getattr(fn, "__self__", None)
    module = type(owner).__module__ if owner is not None else ""
    for provider in ("openai", "anthropic"):
        if module.startswith(f"{provider}.resources"):
            return provider
    return None


_CLIENT_PROVIDERS = {
    "AzureOpenAI": "azure", "AsyncAzureOpenAI": "azure",
    "AnthropicBedrock": "aws", "AsyncAnthropicBedrock": "aws",
    "AnthropicVertex": "google", "AsyncAnthropicVertex": "google",
    "AnthropicFoundry": "azure", "AsyncAnthropicFoundry": "azure",
}  # fmt: skip
"""SDK clients whose class names their cloud, whatever base URL (a private endpoint) they were given."""


def endpoint_provider(fn: Callable[..., Any]) -> str | None:
    """The provider a bound SDK method's client talks to, as genai-prices names it: from the client's
    class (``AzureOpenAI``, ``AnthropicBedrock``, ``AnthropicVertex``) or its base URL (OpenAI's,
    Anthropic's, Gemini's OpenAI-compatible endpoint, Groq, DeepSeek, Mistral, xAI, OpenRouter,
    Together, Fireworks...). ``None`` when the host is not one genai-prices knows (a proxy, a local
    server): the model's name decides then."""
    client = getattr(getattr(fn, "__self__", None), "_client", None)
    return None if client is None else client_provider(client)


def client_provider(client: Any) -> str | None:
    """The provider an SDK client talks to (see ``endpoint_provider``)."""
    known = _CLIENT_PROVIDERS.get(type(client).__name__)
    if known is not None:
        return known
    base_url = getattr(client, "base_url", None)
    return None if base_url is None else provider_for_url(str(base_url))


def at_location(request: Mapping[str, Any], location: object) -> Mapping[str, Any]:
    """``request`` as read at a Vertex AI ``location`` (``us-east5``, ``eu``, ``global``): with it as the
    ``inference_geo`` it is served in (``request_variant`` prices a location other than ``global`` at
    the regional price, see ``_price_data.regional_premium``), unless the request names one itself.
    Read only: nothing is sent."""
    if not isinstance(location, str) or not location or "inference_geo" in request:
        return request
    return {**request, "inference_geo": location}


def vertex_location(fn: Callable[..., Any]) -> str | None:
    """The location a bound method of an ``AnthropicVertex`` client (or its async twin) sends to: its
    ``region`` (``global`` for the global endpoint), else ``None``."""
    client = getattr(getattr(fn, "__self__", None), "_client", None)
    if type(client).__name__ not in ("AnthropicVertex", "AsyncAnthropicVertex"):
        return None
    region = getattr(client, "region", None)
    return region if isinstance(region, str) else None


def api_of(provider: str | None, model: str) -> str:
    """The wire format (``"openai"`` / ``"anthropic"``) of a request for ``model`` at ``provider``
    when no SDK says it: the provider's own for OpenAI and Anthropic, else Anthropic's for a Claude
    model (Bedrock's ``anthropic.claude-...``, Vertex's ``claude-...@date``), else OpenAI's."""
    if provider in ("openai", "anthropic"):
        return provider
    found = _find_api(model)
    if found is None:
        found = _apis.put(model, "anthropic" if is_claude(model) else "openai")
    return found


_apis: Bounded[str, str] = Bounded("providers.apis", 4096)
_find_api = _apis.get  # (bound once, for the hot path: see _cache.Bounded)


_HIDDEN_REASONING = re.compile(
    r"(?:^|\.)(o\d|gpt-5|gpt-oss|codex|computer-use|deepseek-r|deepseek-reasoner|qwq|qwen3|magistral"
    r"|grok-3-mini|grok-4|gemini-2\.5|gemini-[3-9]|sonar-reasoning|kimi-k2-thinking)"
)


def may_reason(model: str) -> bool:
    """Whether ``model`` may think before it answers without streaming its thinking (billed as output),
    so that an interrupted stream may have consumed more output than it showed."""
    return _HIDDEN_REASONING.search(model.rsplit("/", 1)[-1].lower()) is not None


def without_sdk_retries(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same SDK method on a copy of its client with ``max_retries=0``.

    The guard's own retries count every attempt against the budget; SDK-internal retries would send
    attempts nobody reserved. The resource is built anew on the quiet client (the SDKs' resources take
    their client as their only argument), so that nothing but this method's own resource is imported;
    methods we cannot rebuild are returned unchanged.
    """
    owner: Any = getattr(fn, "__self__", None)
    client = getattr(owner, "_client", None)
    if client is None or not hasattr(client, "with_options"):
        return fn
    # (its own HTTP client passed on: some SDK releases' Bedrock copy() drops a custom one)
    http = getattr(client, "_client", None)
    try:
        quiet = client.with_options(max_retries=0, **({} if http is None else {"http_client": http}))
        resource = type(owner)(quiet)
    except TypeError:  # a resource that does not take its client alone: not the SDKs' shape
        return fn
    rebuilt: Callable[..., Any] = getattr(resource, fn.__name__, fn)
    return rebuilt


_SDKS = ("openai", "anthropic")
_NOT_GIVEN = ("NotGiven", "Omit")


def is_not_given(value: Any) -> bool:
    """Whether ``value`` is an SDK's "not given" sentinel (``openai.omit``, ``openai.NOT_GIVEN`` and
    their Anthropic twins): a request key set to one is absent, as the SDK itself sends it."""
    kind = type(value)
    return kind.__name__ in _NOT_GIVEN and kind.__module__.partition(".")[0] in _SDKS


@overload
def as_sent(request: dict[str, Any]) -> dict[str, Any]: ...
@overload
def as_sent(request: Mapping[str, Any]) -> Mapping[str, Any]: ...
def as_sent(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """``request`` without its keys set to an SDK's "not given" sentinel (``request`` itself when it has
    none: the sentinels are falsy, so a request whose values are all truthy holds none)."""
    try:
        if all(request.values()):
            return request
    except Exception:  # a value without a truth value (an array): look at each
        pass
    if not any(map(is_not_given, request.values())):
        return request
    return {key: value for key, value in request.items() if not is_not_given(value)}


_READ_KEYS = frozenset(("extra_body", "response_format", "text_format", "output_format"))


def as_read(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """``request`` as the provider receives it, for counting: ``as_sent``, then ``extra_body`` merged over
    the named keys (the SDKs merge it into the JSON body, its keys winning: ``extra_body={"n": 4}`` is
    sent as ``n=4``), and a parse helper's class turned into the schema the SDK sends for it
    (``response_format=Model`` of ``chat.completions.parse``, ``text_format=Model`` of
    ``responses.parse``, ``output_format=Model`` of Anthropic's ``messages.parse``). ``request`` itself
    when it has none of these. An ``extra_body`` that is not a dict is refused (it cannot be read), and
    a class whose schema the SDK's own function cannot make."""
    request = as_sent(request)
    if _READ_KEYS.isdisjoint(request):
        return request
    read = dict(request)
    extra = read.pop("extra_body", None)
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise ConfigurationError(
                f"extra_body must be a dict of keys sent in the request body, got {type(extra).__name__}: "
                "budgetguard reads it as part of the request (the SDK sends its keys over the named ones)"
            )
        read = as_sent({**read, **extra})
    fmt = read.get("response_format")
    if isinstance(fmt, type):
        read["response_format"] = _parse_format("response_format", fmt)
    fmt = read.pop("text_format", None)
    if isinstance(fmt, type):
        text = read.get("text")
        read["text"] = {
            **(text if isinstance(text, Mapping) else {}),
            "format": _parse_format("text_format", fmt),
        }
    fmt = read.get("output_format")
    if fmt is not None and not isinstance(fmt, str | Mapping):  # any type: the SDK runs TypeAdapter on it
        del read["output_format"]  # (list[Model], Model | None, Annotated[...]: not classes, still sent)
        config = read.get("output_config")
        schema = _parse_format("output_format", fmt)
        read["output_config"] = {**(config if isinstance(config, Mapping) else {}), "format": schema}
    return read


_PARSE_HELPERS = {
    "response_format": ("openai.lib._parsing._completions", "type_to_response_format_param"),
    "text_format": ("openai.lib._parsing._responses", "type_to_text_format_param"),
    "output_format": ("anthropic.lib._parse._transform", "transform_schema"),
}
"""The SDK function that turns a parse helper's class into the format it sends, by the helper's key
(Anthropic's transforms the type's ``pydantic.TypeAdapter`` schema: every release the pyproject admits
has ``transform_schema``; its newer ``transformed_json_schema`` is a cached copy of the same)."""


def _parse_format(key: str, cls: Any) -> Mapping[str, Any]:
    """The structured-output format a parse helper sends for ``cls`` given as ``key``, made by the SDK's
    own function (``_PARSE_HELPERS``), so that the schema counted is the one sent; memoized when ``cls``
    can be (an ``Annotated[...]`` whose metadata is a dict cannot)."""
    try:
        hash(cls)
    except TypeError:
        return _made_format(key, cls)
    return _memo_format(key, cls)


def _made_format(key: str, cls: Any) -> Mapping[str, Any]:
    module, name = _PARSE_HELPERS[key]
    try:
        made: Any = getattr(importlib.import_module(module), name)
        if key != "output_format":
            return dict(made(cls))
        import pydantic  # (the SDKs' dependency: loaded with them)

        return {"type": "json_schema", "schema": made(pydantic.TypeAdapter(cls).json_schema())}
    except (ImportError, AttributeError, TypeError) as exc:
        named = cls.__qualname__ if isinstance(cls, type) else repr(cls)
        raise ConfigurationError(
            f"budgetguard cannot read the schema {key}={named} sends "
            f"({exc!r}): pass the format as the SDK's dict (response_format, text.format, "
            "output_config.format) instead"
        ) from exc


_memo_format = memo("providers.parse_formats", 256)(_made_format)


def is_request(arguments: Mapping[str, Any]) -> bool:
    """Whether a user function's arguments are an SDK request: they carry a model and its input."""
    return isinstance(arguments.get("model"), str) and not _REQUEST_KEYS.isdisjoint(arguments)


VARIANT_KEYS = frozenset({"service_tier", "speed", "inference_geo"})
"""The request keys ``request_variant`` reads: a request with none of them, not batched, is standard."""


def request_variant(
    request: Mapping[str, Any], provider: str, *, batch: bool = False, default_tier: str | None = None
) -> Variant | None:
    """The price variant a request asks for, in genai-prices' terms, or ``None`` for standard.

    ``service_tier`` ``"flex"`` / ``"priority"`` (OpenAI), ``speed="fast"`` (Anthropic) and batch
    processing (``batch=True``: the request goes through the provider's Batch API); it reads no other
    key than ``VARIANT_KEYS``. An Anthropic-shaped request's ``inference_geo`` (US-only inference, a
    Vertex AI location) goes with its speed: ``{"inference_geo": "us", "speed": "fast"}`` is priced
    fast, times the location's premium (or refused where that speed has no price). ``default_tier``:
    the tier an OpenAI-shaped request that names none (or ``"auto"``) is served at, its project's
    default (``Estimator(default_service_tier=...)``)."""
    if batch:
        return {"processing": "batch"}
    if provider == "anthropic":
        geo = request.get("inference_geo")  # (data residency: priced apart, or refused as unpriced)
        located = {"inference_geo": geo} if isinstance(geo, str) and geo not in _STANDARD_GEOS else {}
        return {**located, "speed": "fast"} if request.get("speed") == "fast" else located or None
    tier = request.get("service_tier")
    if tier is None or tier == "auto":  # (served at the project's tier)
        tier = default_tier
    if isinstance(tier, str) and tier not in _STANDARD_TIERS:
        return {"processing": "batch"} if tier == "batch" else {"service_tier": tier}
    return None


def project_tier(tier: str | None) -> str | None:
    """``Estimator(default_service_tier=...)`` checked: ``"priority"``, or ``None`` for standard. Only a
    project default dearer than standard needs saying (standard over-reserves a cheaper one)."""
    if tier not in (None, "default", "priority"):
        raise ConfigurationError(
            "default_service_tier must be 'priority' (your OpenAI project's default service tier is "
            f"Priority) or None / 'default' (standard), got {tier!r}"
        )
    return None if tier == "default" else tier


def served_tier(response: Any) -> str | None:
    """The service tier a response (or stream event) reports, as the provider names it, or ``None``.

    OpenAI responses and chunks carry ``service_tier`` (``"flex"``, ``"priority"``, ``"default"``...);
    Anthropic reports ``usage.service_tier`` (``"standard"``, ``"priority"``, ``"batch"``),
    ``usage.speed`` (reported here as ``"fast-mode"``) and ``usage.inference_geo`` (``"inference_geo:us"``
    where it is not standard): both, comma-separated, for a fast call served in the US
    (``"fast-mode,inference_geo:us"``), which ``response_variant`` reads."""
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
    geo = get_usage("inference_geo")
    fast = "fast-mode" if get_usage("speed") == "fast" else ""
    if isinstance(geo, str) and geo not in _STANDARD_GEOS:
        return f"{fast},inference_geo:{geo}" if fast else f"inference_geo:{geo}"
    if fast:
        return fast
    tier = get("service_tier")
    if not isinstance(tier, str):
        tier = get_usage("service_tier")
    return tier if isinstance(tier, str) else None


_TIER_FIELDS = ("usage", "speed", "service_tier", "response", "message", "inference_geo")


def served_model(response: Any) -> str | None:
    """The model that answered, as the response (or a stream's first event) names it: ``model`` of
    an OpenAI completion, chunk or response, of an Anthropic message (or ``message_start``'s)."""
    model = _get(response, "model")
    if isinstance(model, str):
        return model or None
    for name in ("response", "message"):
        nested = _get(response, name)
        if nested is not None:
            model = _get(nested, "model")
            if isinstance(model, str):
                return model or None
    return None


def response_variant(tier: str | None, requested: Variant | None) -> Variant | None:
    """The variant to charge at: the one the response reports it was served at, else the requested one.

    A Batch API line is charged at batch prices whatever tier its body names. Where the call ran (the
    requested ``LOCATION_KEYS``: a Vertex AI location, an Azure deployment's type) stays with the tier
    served, unless the response reports it (Anthropic's ``inference_geo``): ``served_tier``'s parts
    combine, ``"fast-mode,inference_geo:us"`` is ``{"speed": "fast", "inference_geo": "us"}``."""
    if tier is None or (requested is not None and requested.get("processing") == "batch"):
        return requested
    served = where_it_runs(requested)
    for part in tier.split(","):
        if part.startswith("inference_geo:"):
            served["inference_geo"] = part.partition(":")[2]
        elif part == "fast-mode":
            served["speed"] = "fast"
        elif part not in _STANDARD_TIERS:
            served.update({"processing": "batch"} if part == "batch" else {"service_tier": part})
    return served or None


def prepare_openai_stream(request: dict[str, Any], *, streaming: bool = False) -> None:
    """Ask an OpenAI chat stream for its usage (``include_usage``), unless the caller said otherwise.
    ``streaming``: the method streams by itself (``client.chat.completions.stream(...)``). Also in
    ``extra_body``'s ``stream_options`` when it has them: the SDK sends those over the named ones, whole."""
    if (streaming or request.get("stream") is True) and "messages" in request:
        options = dict(request.get("stream_options") or {})
        options.setdefault("include_usage", True)
        request["stream_options"] = options
        extra = request.get("extra_body")
        if isinstance(extra, Mapping) and isinstance(extra.get("stream_options"), Mapping):
            request["extra_body"] = {
                **extra,
                "stream_options": {"include_usage": True, **extra["stream_options"]},
            }


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
        "ChatCompletionStreamManager",
        "AsyncChatCompletionStreamManager",
    }
)


def is_stream_manager(result: Any) -> bool:
    """Anthropic's ``client.messages.stream(...)``, OpenAI's ``client.responses.stream(...)`` and
    ``client.chat.completions.stream(...)``: context managers that yield the SDK's stream object."""
    return type(result).__name__ in _STREAM_MANAGERS


_THINKING = ("thinking", "redacted_thinking")

_PER_USE = {"web_search": "web_search_calls", "web_fetch": "web_fetch_calls"}
"""Anthropic server tools billed per use, by the name of their ``server_tool_use`` block."""

_TIER_EVENTS = frozenset(
    {None, "message_start", "response.created", "response.completed", "response.incomplete"}
)


class StreamFolder:
    """Accumulates usage and streamed text from stream events, one event at a time.

    ``complete`` turns true when the provider's final usage arrived (OpenAI's usage chunk, Anthropic's
    ``message_delta``, the Responses API's ``response.completed``). Before that, ``usage`` may hold a
    partial count (Anthropic's ``message_start`` has the input but only a token or so of output).
    ``generated`` turns true when the model finished generating and only its usage may still be in
    flight (every chat choice's ``finish_reason``, an Anthropic ``message_delta``, interim ones included).
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.complete = False
        self.generated = False
        self._choices: set[Any] = set()  # (the chat choices seen, and those that finished)
        self._finished: set[Any] = set()
        self.text: list[str] = []
        self.tier: str | None = None
        """The service tier the stream reported (``served_tier``), if any."""
        self.ran_code = False
        """An Anthropic stream showed a code execution result: a container session is billed."""
        self.model: str | None = None
        """The model that answered, as the stream named it (``served_model``), if it did."""
        self.thinking = False
        """A Claude thinking block started: Claude 4 streams a summary of the thinking it bills."""
        self.background = False
        """A Responses API background response (the request or the stream said so): it runs on when its
        stream is cut or closed."""
        self._items: dict[Any, Any] = {}
        """The Responses API's built-in tool call items the stream showed (added or done), by id."""
        self._uses: dict[Any, str] = {}
        """Anthropic's per-use server tools the stream showed (``server_tool_use``): id -> unit."""

    def block(self, block: Any) -> None:
        """An Anthropic content block that started (or a message snapshot's): thinking, a code execution
        result, a per-use server tool's call, or its result that reports an error (not billed)."""
        kind = _get(block, "type")
        if kind in _THINKING:
            self.thinking = True
        elif kind == "server_tool_use":
            unit = _PER_USE.get(_get(block, "name"))
            if unit is not None:
                self._uses[_get(block, "id") or len(self._uses)] = unit
        elif isinstance(kind, str) and kind.endswith("_tool_result"):
            if _is_code_block(block):
                self.ran_code = True
            failed = _get(_get(block, "content"), "type")
            if isinstance(failed, str) and failed.endswith("_error"):
                self._uses.pop(_get(block, "tool_use_id"), None)

    def with_tool_calls(self, usage: Usage) -> Usage:
        """``usage`` with at least the server-side tool calls the stream showed: each one it started is
        charged (it ran, or runs on), as a final usage counts them (``with_tool_items``)."""
        if self._items:
            usage = with_tool_items(usage, list(self._items.values()))
        if self._uses:
            counts: dict[str, int] = {}
            for unit in self._uses.values():
                counts[unit] = counts.get(unit, 0) + 1
            usage = dataclasses.replace(
                usage, **{unit: max(n, getattr(usage, unit)) for unit, n in counts.items()}
            )
        return usage

    def feed(self, event: Any) -> None:
        kind = _get(event, "type")
        if kind == "chunk":  # the chat completions stream helper's event: the raw chunk inside
            event, kind = _get(event, "chunk"), None
        elif kind == "content_block_start":
            self.block(_get(event, "content_block"))
        elif kind == "response.output_item.added" or kind == "response.output_item.done":
            item = _get(event, "item")
            if _get(item, "type") in BILLED_TOOL_ITEMS:  # (kept whole: ``with_tool_items`` bills it)
                self._items[_get(item, "id") or _get(event, "output_index")] = item
        if kind in _TIER_EVENTS:
            self.tier = served_tier(event) or self.tier
            self.model = self.model or served_model(event)
            if kind == "response.created":  # (a background response says so: the request may not)
                self.background = self.background or _get(_get(event, "response"), "background") is True
        if kind == "message_delta":
            self.generated = True
            if self.usage is not None:
                self.usage = _merge_anthropic_delta(self.usage, _get(event, "usage"))
                if self.ran_code and not self.usage.code_execution_sessions:
                    self.usage = dataclasses.replace(self.usage, code_execution_sessions=1)
                # an interim message_delta (no stop_reason yet) carries a running count, not the final
                self.complete = _get(_get(event, "delta"), "stop_reason") is not None
            return
        if kind == "message_start":
            self.usage = Usage.from_response(event)
            return
        if kind in ("response.completed", "response.incomplete"):
            self.usage = Usage.from_response(event)
            self.complete = True
            return
        if kind is None:  # an OpenAI chat chunk: has every choice seen finished (n > 1: each its own)?
            for choice in _get(event, "choices") or ():
                index = _get(choice, "index")
                self._choices.add(index)
                if _get(choice, "finish_reason"):
                    self._finished.add(index)
            self.generated = self.generated or (bool(self._choices) and self._finished >= self._choices)
        if _get(event, "usage") is not None and kind is None:  # OpenAI chat chunk with include_usage
            self.usage = Usage.from_response(event)
            self.complete = True
        text = _delta_text(event, kind)
        if text:
            self.text.append(text)


_NOT_TEXT = frozenset({"response.audio.delta"})
"""Responses stream deltas that are not text the model wrote (audio, base64)."""


def _delta_text(event: Any, kind: Any) -> str | None:
    if kind == "content_block_delta":
        delta = _get(event, "delta")
        text = (  # (a compaction pass's summary too: ``compaction_delta``'s content, billed as its output)
            _get(delta, "text")
            or _get(delta, "partial_json")
            or _get(delta, "thinking")
            or _get(delta, "content")
        )
        return text if isinstance(text, str) else None
    if kind == "response.output_text.delta" or (
        type(kind) is str
        and kind.endswith(".delta")
        and kind.startswith("response.")
        and kind not in _NOT_TEXT
    ):  # what the model wrote: text, function / custom / MCP tool input, code, commands, refusals, reasoning
        value = _get(event, "delta")
        return value if isinstance(value, str) else None
    choices = _get(event, "choices")
    if choices:
        parts = []
        for choice in choices:
            delta = _get(choice, "delta")
            for key in ("content", "refusal"):  # (a refusal streams apart from the content)
                text = _get(delta, key)
                if isinstance(text, str):
                    parts.append(text)
            calls = [_get(call, "function") for call in _get(delta, "tool_calls") or ()]
            for function in (*calls, _get(delta, "function_call")):  # (``functions=``: ``function_call``)
                arguments = _get(function, "arguments")
                if isinstance(arguments, str):
                    parts.append(arguments)
        return "".join(parts) or None
    return None

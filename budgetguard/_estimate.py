"""Request -> worst-case cost: input tokens counted with tiktoken, output at the request's maximum.

``estimate(request)`` takes the keyword arguments of an SDK call (``chat.completions.create``,
``responses.create``, ``messages.create``, ``embeddings.create``) and returns what a reservation must
hold so that the call cannot cost more:

* input: counted with the model's encoding (OpenAI's published rules), or o200k_base x a safety factor
  for Claude; priced as cache writes when an Anthropic request asks for caching (dearer than input);
* output: ``max_completion_tokens`` / ``max_tokens`` / ``max_output_tokens`` times ``n``; without one,
  the model's output limit, else its context window minus the input (a true upper bound), else
  ``default_output_tokens``;
* price: the prompt-size tier the estimated input falls in, and the price variant the request asks
  for (``service_tier`` flex / priority, Anthropic ``speed="fast"``, batch processing with
  ``batch=True``), see ``request_variant``.

* server-side tools: each billed tool the request offers (Anthropic ``web_search`` / ``web_fetch`` /
  ``code_execution``, Responses ``web_search`` / ``file_search`` / ``code_interpreter`` /
  ``image_generation``) at its worst count: Anthropic's ``max_uses``, the Responses API's
  ``max_tool_calls`` (all of them on the dearest tool), else ``Estimator(tool_calls=...)``'s default per
  tool (``DEFAULT_TOOL_CALLS``), which the journal flags as ``tools_defaulted``;
* Anthropic's advisor tool: each use is a pass on the advisor's model that may read the whole
  conversation (the input plus the output bound) and write up to the tool's ``max_tokens``, reserved
  ``max_uses`` times, else the ``advisor`` default;
* audio: a request that asks for audio output reserves its output at the model's audio rate;
* unseen input: a request that continues server-side state (``previous_response_id``, ``conversation``)
  or references content it does not carry reserves the model's context window as its input, or
  ``Estimator(unseen_tokens=...)`` more than what it shows; ``Estimate.unseen`` names the references.

Anthropic's ``messages.count_tokens`` can replace the offline Claude estimate: pass a client as
``Estimator(anthropic_count_tokens=client)``. A timeout or an error falls back to the offline estimate
(never to zero) and is logged; the guard also reports it as an ``estimate_fallback`` event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._errors import ConfigurationError
from ._events import logger
from ._frozen import fast_init
from ._money import to_usd
from ._pricing import _FEE_UNITS, Price, PriceBook, Rates, price_book
from ._providers import Variant, api_of, request_variant
from ._tokens import count_text_tokens, encoding_for_model
from ._tokens_claude import ANTHROPIC_SAFETY_FACTOR, count_anthropic_tokens
from ._tokens_claude import unseen_inputs as claude_unseen
from ._tokens_openai import count_openai_request
from ._tokens_openai import unseen_inputs as openai_unseen
from ._usage import Pass, Usage

__all__ = ["DEFAULT_TOOL_CALLS", "Estimate", "Estimator", "estimate"]

DEFAULT_TOOL_CALLS: Mapping[str, int] = {
    "web_search": 10,
    "web_fetch": 10,
    "file_search": 10,
    "code_execution": 1,
    "image_generation": 1,
    "advisor": 3,
}
"""Calls reserved per server-side tool that the request does not bound (``max_uses``, ``max_tool_calls``).
Code execution counts sessions (containers): one per call. Override with ``Estimator(tool_calls=...)``."""


@fast_init
@dataclass(frozen=True, slots=True)
class Estimate:
    """The worst case of one call: what a reservation holds before the call is sent."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_nano: int
    price: Price
    cache_write: str | None = None
    """``"5m"`` or ``"1h"`` when the input was priced as prompt-cache writes."""
    variant: Variant | None = None
    """The price variant reserved at (``{"service_tier": "flex"}``, ``{"processing": "batch"}``)."""
    counted: bool = False
    """The input count came from the provider's token counting endpoint (exact, no safety factor)."""
    tool_calls: tuple[tuple[str, int], ...] = ()
    """The server-side tool calls reserved, by fee name: ``(("web_search", 5),)``."""
    tools_defaulted: tuple[str, ...] = ()
    """The tools the request left unbounded, reserved at the configured default count."""
    audio_output: bool = False
    """The request asks for audio output: the output is reserved at the audio rate."""
    passes: tuple[Pass, ...] = ()
    """Worst-case extra sampling passes (Anthropic advisor uses), priced at their own models."""
    unseen: tuple[str, ...] = ()
    """What the request references but does not carry (``"previous_response_id"``, ...): its input
    was reserved at the model's context window, or the configured ``unseen_tokens`` on top."""
    provider: str | None = None
    """The provider the price was looked up at (``None``: found by the model's name): a response
    served by another model or at another tier is priced at the same provider."""

    @property
    def cost(self) -> Decimal:
        """The reserved amount in USD."""
        return to_usd(self.cost_nano)

    @property
    def usage(self) -> Usage:
        """The worst-case usage this estimate priced."""
        usage = _worst_usage(self.input_tokens, self.output_tokens, self.cache_write)
        if not self.tool_calls and not self.audio_output and not self.passes:
            return usage
        units: dict[str, Any] = {_FEE_UNITS[name]: count for name, count in self.tool_calls}
        if self.audio_output:
            units.update(output_tokens=0, output_audio_tokens=self.output_tokens)
        return dataclasses.replace(usage, **units, passes=self.passes)

    def __repr__(self) -> str:
        return (
            f"Estimate(model={self.model!r}, input_tokens={self.input_tokens}, "
            f"output_tokens={self.output_tokens}, cost=${self.cost:f})"
        )


def _worst_usage(input_tokens: int, output_tokens: int, cache_write: str | None) -> Usage:
    if cache_write == "1h":
        return Usage(cache_write_1h_tokens=input_tokens, output_tokens=output_tokens)
    if cache_write == "5m":
        return Usage(cache_write_tokens=input_tokens, output_tokens=output_tokens)
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens)


class Estimator:
    """Turns SDK request kwargs into an ``Estimate``; holds the settings estimation needs."""

    def __init__(
        self,
        *,
        prices: PriceBook | None = None,
        default_output_tokens: int = 4096,
        anthropic_factor: Decimal | str = ANTHROPIC_SAFETY_FACTOR,
        anthropic_factors: Mapping[str, Decimal | str] | None = None,
        anthropic_count_tokens: Any = None,
        count_tokens_timeout: float = 2.0,
        tool_calls: Mapping[str, int] | None = None,
        unseen_tokens: int | None = None,
    ) -> None:
        """``unseen_tokens`` bounds the input a request references without carrying it (server-side
        history, files by id): reserved on top of what it shows. ``None``: the model's context window
        bounds the whole input (a model without a known window is then an error)."""
        if unseen_tokens is not None and (
            isinstance(unseen_tokens, bool) or not isinstance(unseen_tokens, int) or unseen_tokens < 0
        ):
            raise ConfigurationError(
                f"unseen_tokens must be a non-negative int or None, got {unseen_tokens!r}"
            )
        self.unseen_tokens = unseen_tokens
        if default_output_tokens <= 0:
            raise ConfigurationError("default_output_tokens must be positive")
        self.tool_calls = {**DEFAULT_TOOL_CALLS, **(tool_calls or {})}
        for name, count in self.tool_calls.items():
            if name not in DEFAULT_TOOL_CALLS:
                known = ", ".join(DEFAULT_TOOL_CALLS)
                raise ConfigurationError(f"tool_calls: unknown tool {name!r}; known: {known}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigurationError(f"tool_calls[{name!r}] must be a non-negative int, got {count!r}")
        self.prices = prices if prices is not None else price_book
        self.default_output_tokens = default_output_tokens
        self.anthropic_factor = Decimal(anthropic_factor)
        self.anthropic_factors = {k: Decimal(v) for k, v in (anthropic_factors or {}).items()}
        if self.anthropic_factor < 1 or any(f < 1 for f in self.anthropic_factors.values()):
            raise ConfigurationError("an Anthropic safety factor below 1 would under-reserve")
        if anthropic_count_tokens is not None and not hasattr(anthropic_count_tokens, "messages"):
            raise ConfigurationError(
                "anthropic_count_tokens takes an anthropic.Anthropic or AsyncAnthropic client"
            )
        if count_tokens_timeout <= 0:
            raise ConfigurationError("count_tokens_timeout must be a positive number of seconds")
        self.anthropic_count_tokens = anthropic_count_tokens
        self.count_tokens_timeout = count_tokens_timeout

    def __call__(
        self,
        request: Mapping[str, Any],
        *,
        provider: str | None = None,
        api: str | None = None,
        batch: bool = False,
        input_tokens: int | None = None,
        count: bool = True,
    ) -> Estimate:
        """The worst case of ``request``. ``batch=True`` prices it at the batch-processing variant;
        ``input_tokens`` is an exact input count (from ``count_tokens``) to use instead of counting.

        ``provider`` is where the request goes, as genai-prices names it (``"openai"``, ``"azure"``,
        ``"groq"``, ``"aws"``...): the model is priced there, whatever prefix its name has. ``api`` is
        the request's wire format (``"openai"`` / ``"anthropic"``), by default the provider's own, or
        Anthropic's for a Claude model, else OpenAI's.

        With ``anthropic_count_tokens`` set to a sync client, no ``input_tokens`` and ``count`` on, a
        Claude request is counted by the endpoint here (the guard counts before it estimates, sync or
        async, and passes ``count=False``)."""
        if input_tokens is None and count and self.anthropic_count_tokens is not None:
            ask = self.count_request(request, provider=provider, api=api)
            if ask is not None and not _is_async_client(self.anthropic_count_tokens):
                input_tokens = self.count_tokens(ask)
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(
                "the request has no 'model'; pass the SDK call's keyword arguments, or an Estimate"
            )
        # The API picks the request shape; the price is the provider's (without one: found by name).
        shape = api or api_of(provider, model)
        variant = request_variant(request, shape, batch=batch)
        price = self.prices.get(model, provider=provider, variant=variant)
        cache_write = None
        counted = input_tokens is not None and shape == "anthropic"
        if shape == "anthropic":
            if input_tokens is None:
                input_tokens = count_anthropic_tokens(
                    request.get("messages") or (),
                    model,
                    system=request.get("system"),
                    tools=request.get("tools"),
                    factor=self._factor(model),
                )
            cache_write = _anthropic_cache_ttl(request)
            output_tokens = self._output(request, price, input_tokens, ("max_tokens",))
        elif "messages" in request:
            input_tokens = count_openai_request(request)
            output_tokens = self._output(
                request, price, input_tokens, ("max_completion_tokens", "max_tokens")
            )
            if "n" in request:  # several choices: each may be as long
                output_tokens *= _n(request)
        elif _is_embedding(model):
            input_tokens = _embedding_tokens(request.get("input"), model)
            output_tokens = 0
        elif "input" in request or "instructions" in request:
            input_tokens = count_openai_request(request)
            output_tokens = self._output(request, price, input_tokens, ("max_output_tokens",))
        else:
            raise ConfigurationError(
                f"cannot tell what kind of request this is (keys: {sorted(request)}); expected "
                "'messages' (chat / Anthropic) or 'input' (Responses / embeddings)"
            )
        unseen = (claude_unseen if shape == "anthropic" else openai_unseen)(request) if not counted else ()
        if unseen:
            input_tokens = self._unseen_bound(input_tokens, price, unseen)
        write_5m = input_tokens if cache_write == "5m" else 0
        write_1h = input_tokens if cache_write == "1h" else 0
        uncached = input_tokens - write_5m - write_1h
        rates = price.rates_for(input_tokens)
        audio = _wants_audio(request)  # audio output: every output token may be audio, the dearer rate
        calls, defaulted = self._tool_calls(request, shape, rates, model)
        passes: tuple[Pass, ...] = ()
        if shape == "anthropic" and request.get("tools"):
            passes, advised = self._advisor_passes(request, input_tokens + output_tokens, provider, variant)
            defaulted += advised
        if audio or calls or passes:  # every unit in one sum, rounded up once
            worst = Usage(
                uncached, 0, write_5m, write_1h, 0 if audio else output_tokens,
                output_audio_tokens=output_tokens if audio else 0, passes=passes,
                **{_FEE_UNITS[name]: count for name, count in calls},
            )  # fmt: skip
            cost_nano = self.prices.cost_nano(price, worst, provider=provider, variant=variant)
        else:
            cost_nano = rates.cost_nano_of(uncached, 0, write_5m, write_1h, output_tokens)
        return Estimate(
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_nano=cost_nano,
            price=price,
            cache_write=cache_write,
            variant=variant,
            counted=counted,
            tool_calls=calls,
            tools_defaulted=defaulted,
            audio_output=audio,
            passes=passes,
            unseen=unseen,
            provider=provider,
        )

    def _advisor_passes(
        self, request: Mapping[str, Any], context: int, provider: str | None, variant: Variant | None
    ) -> tuple[tuple[Pass, ...], tuple[str, ...]]:
        """The worst case of Anthropic advisor tools: ``max_uses`` (else the default) passes on the
        advisor's model, each reading ``context`` tokens and writing the tool's ``max_tokens``. The
        advisor is priced as the call will be charged: at its provider (``PriceBook.pass_price``)."""
        passes: list[Pass] = []
        defaulted: tuple[str, ...] = ()
        for tool in request.get("tools") or ():
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            if not isinstance(kind, str) or not kind.startswith("advisor_"):
                continue
            advisor = tool.get("model")
            if not isinstance(advisor, str) or not advisor:
                raise ConfigurationError(f"an advisor tool names its model: {dict(tool)!r}")
            uses = tool.get("max_uses")
            if isinstance(uses, bool) or not isinstance(uses, int) or uses < 0:
                uses, defaulted = self.tool_calls["advisor"], ("advisor",)
            written = tool.get("max_tokens")
            if isinstance(written, bool) or not isinstance(written, int) or written < 0:
                advisor_price = self.prices.pass_price(advisor, provider=provider, variant=variant)
                written = advisor_price.max_output_tokens or self.default_output_tokens
            one = Pass("advisor_message", advisor, Usage(input_tokens=context, output_tokens=written))
            passes.extend([one] * uses)
        return tuple(passes), defaulted

    def _tool_calls(
        self, request: Mapping[str, Any], api: str, rates: Rates, model: str
    ) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
        """The worst-case server-side tool calls of ``request`` and the tools reserved at a default."""
        tools = request.get("tools")
        if not tools or not isinstance(tools, list | tuple):
            return (), ()
        calls: dict[str, int] = {}
        defaulted: list[str] = []
        bounded = request.get("max_tool_calls") if api != "anthropic" else None
        for tool in tools:
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            name = _server_tool(kind, api) if isinstance(kind, str) else None
            if name is None:
                continue
            limit = tool.get("max_uses") if api == "anthropic" else None
            if name == "code_execution":
                count = 1  # a session (container) per call, however many executions run in it
            elif isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
                count = limit
            elif isinstance(bounded, int) and not isinstance(bounded, bool) and bounded >= 0:
                count = bounded
            else:
                count = self.tool_calls[name]
                defaulted.append(name)
            calls[name] = max(calls.get(name, 0), count)
        per_call = [name for name in calls if name != "code_execution"]  # (sessions: one at most)
        if len(per_call) > 1 and isinstance(bounded, int) and not isinstance(bounded, bool):
            # max_tool_calls bounds all built-in calls together: the worst is all of them on the dearest
            dearest = max(per_call, key=lambda name: rates.fees_nano({name: 1}, model))
            calls = {name: count for name, count in calls.items() if name in (dearest, "code_execution")}
        return tuple(calls.items()), tuple(defaulted)

    # -- Anthropic's token counting endpoint ----------------------------------------------------

    def count_request(
        self, request: Mapping[str, Any], *, provider: str | None = None, api: str | None = None
    ) -> dict[str, Any] | None:
        """The ``messages.count_tokens`` arguments for ``request`` when exact counting is on and
        ``request`` is a Claude request, else ``None``."""
        model = request.get("model")
        if self.anthropic_count_tokens is None or not isinstance(model, str) or not model:
            return None
        if (api or api_of(provider, model)) != "anthropic" or "messages" not in request:
            return None
        return {key: request[key] for key in _COUNT_KEYS if request.get(key) is not None}

    def count_tokens(self, ask: Mapping[str, Any]) -> int | None:
        """Input tokens by the endpoint (sync client); ``None`` (logged) when it fails or times out."""
        try:
            return _counted(self._count_client().messages.count_tokens(**ask))
        except Exception as exc:
            return _count_failed(ask, exc)

    async def acount_tokens(self, ask: Mapping[str, Any]) -> int | None:
        """``count_tokens`` for async callers: awaits an async client, runs a sync one in a thread."""
        if not _is_async_client(self.anthropic_count_tokens):
            return await asyncio.to_thread(self.count_tokens, ask)
        try:
            return _counted(await self._count_client().messages.count_tokens(**ask))
        except Exception as exc:
            return _count_failed(ask, exc)

    def _count_client(self) -> Any:
        return self.anthropic_count_tokens.with_options(timeout=self.count_tokens_timeout, max_retries=0)

    def _factor(self, model: str) -> Decimal:
        for prefix, factor in self.anthropic_factors.items():
            if model.startswith(prefix):
                return factor
        return self.anthropic_factor

    def _unseen_bound(self, shown: int, price: Price, unseen: tuple[str, ...]) -> int:
        """The input of a request that references ``unseen`` content: what it shows plus
        ``unseen_tokens``, else the model's context window (the most any input can be)."""
        if self.unseen_tokens is not None:
            return shown + self.unseen_tokens
        if price.context_window is None:
            raise ConfigurationError(
                f"the request references input it does not carry ({', '.join(unseen)}) and "
                f"{price.model!r} has no known context window to bound it; pass "
                "Estimator(unseen_tokens=...) or register the model's context_window"
            )
        return max(shown, price.context_window)

    def _output(
        self, request: Mapping[str, Any], price: Price, input_tokens: int, keys: tuple[str, ...]
    ) -> int:
        for key in keys:
            value = request.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigurationError(f"{key} must be a non-negative int, got {value!r}")
                return value
        if price.max_output_tokens is not None:
            return price.max_output_tokens
        if price.context_window is not None:
            return max(price.context_window - input_tokens, 0)
        return self.default_output_tokens


def _server_tool(kind: str, provider: str) -> str | None:
    """The fee a server-side tool of type ``kind`` is billed at, or ``None`` (client-side tools)."""
    if provider == "anthropic":
        for prefix in ("web_search", "web_fetch", "code_execution"):
            if kind.startswith(prefix + "_"):
                return prefix
        return None
    if kind.startswith("web_search"):  # web_search, web_search_preview, dated versions
        return "web_search"
    return {"file_search": "file_search", "code_interpreter": "code_execution"}.get(
        kind, "image_generation" if kind == "image_generation" else None
    )


def _wants_audio(request: Mapping[str, Any]) -> bool:
    modalities = request.get("modalities")
    return isinstance(modalities, list | tuple) and "audio" in modalities


_COUNT_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "speed")


def _is_async_client(client: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(getattr(client, "messages", None), "count_tokens", None))


def _counted(result: Any) -> int:
    value = getattr(result, "input_tokens", None)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"count_tokens returned no usable input_tokens: {result!r}")
    return value


def _count_failed(ask: Mapping[str, Any], exc: BaseException) -> int | None:
    logger.warning(
        "budgetguard count_tokens failed for %s (%s: %s); using the offline estimate",
        ask.get("model"), type(exc).__name__, exc,
    )  # fmt: skip
    return None


def _n(request: Mapping[str, Any]) -> int:
    n = request.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n must be a positive int, got {n!r}")
    return n


def _is_embedding(model: str) -> bool:
    return "embedding" in model


def _embedding_tokens(value: Any, model: str) -> int:
    if isinstance(value, str):
        return count_text_tokens(value, encoding_for_model(model))
    if not isinstance(value, list | tuple):
        raise ConfigurationError(
            f"embeddings input must be a str, a list of str or token-id arrays, got {type(value).__name__}"
        )
    if value and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return len(value)  # one array of token ids
    return sum(_embedding_tokens(item, model) for item in value)


def _anthropic_cache_ttl(request: Mapping[str, Any]) -> str | None:
    """``"1h"``/``"5m"`` if any block of the request asks for prompt caching, else ``None``."""
    ttl: str | None = None
    blocks: list[Any] = []
    for key in ("system", "tools"):
        value = request.get(key)
        if isinstance(value, list):
            blocks.extend(value)
    for message in request.get("messages") or ():
        content = message.get("content")
        if isinstance(content, list):
            blocks.extend(content)
    if isinstance(request.get("cache_control"), Mapping):
        blocks.append(request)
    for block in blocks:
        control = block.get("cache_control") if isinstance(block, Mapping) else None
        if isinstance(control, Mapping):
            if control.get("ttl") == "1h":
                return "1h"
            ttl = "5m"
    return ttl


_default_estimator = Estimator()


def estimate(
    request: Mapping[str, Any], *, provider: str | None = None, api: str | None = None, batch: bool = False
) -> Estimate:
    """Worst-case tokens and cost of an SDK request (its keyword arguments), with default settings.

    ``provider`` prices it where it goes (``"groq"``, ``"azure"``, ``"aws"``...); ``batch=True`` prices
    the request as one line of a Batch API job (OpenAI or Anthropic)."""
    return _default_estimator(request, provider=provider, api=api, batch=batch)

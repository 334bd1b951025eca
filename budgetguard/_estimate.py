"""Request -> worst-case cost: input tokens counted with tiktoken, output at the request's maximum.

``estimate(request)`` takes the keyword arguments of an SDK call (``chat.completions.create``,
``responses.create``, ``messages.create``, ``embeddings.create``) and returns what a reservation must
hold so that the call cannot cost more:

* input: counted with the model's encoding (OpenAI's published rules), or by Claude's rules
  (``_tokens_claude``: o200k_base x the model family's factor, plus what Anthropic adds); priced as
  cache writes when an Anthropic request asks for caching (dearer than input);
* output: ``max_completion_tokens`` / ``max_tokens`` / ``max_output_tokens`` times ``n``; without one,
  the model's maximum output (``budgetguard.model_limits``, or the one registered with its price),
  within its context window; else that context window (never the window minus the input estimate); else
  ``Estimator(default_output_tokens=N)`` when configured, and otherwise a ``ConfigurationError``;
* price: the prompt-size tier the estimated input falls in, and the price variant the request asks
  for (``service_tier`` flex / priority, Anthropic ``speed="fast"``, batch processing with
  ``batch=True``), see ``request_variant``; a request naming no tier (or ``"auto"``) at the project's
  default, ``Estimator(default_service_tier="priority")`` when it is Priority (else standard).
* server-side tools: each billed tool the request offers (Anthropic ``web_search`` / ``web_fetch`` /
  ``code_execution``, Responses ``web_search`` / ``file_search`` / ``code_interpreter`` /
  ``image_generation``: its prompts once too) at its worst count: Anthropic's ``max_uses``, the
  Responses API's ``max_tool_calls`` (all of them on the dearest tool), else ``Estimator(tool_calls=...)``'s
  default per tool (``DEFAULT_TOOL_CALLS``), which the journal flags as ``tools_defaulted``;
* server-side tool passes: the provider feeds every server-side tool's result (tool search and MCP
  too) back into a further pass of the call, which re-reads the request: the input of ``c + 1``
  passes for ``c`` calls, each capped at the context window (the hard bound), each result at
  ``Estimator(tool_result_tokens=...)`` (calibrated, see ``budgetguard._passes``); the input reserved
  includes it (``Estimate.tool_pass_tokens`` says how much);
* Anthropic's advisor tool: each use is a pass on the advisor's model that may read the whole
  conversation (the input, the output bound and the tool results, within the context window) and write
  up to the tool's ``max_tokens``, reserved ``max_uses`` times, else the ``advisor`` default;
* audio: a request that asks for audio output reserves its output at the model's audio rate;
* unseen input: a request that continues server-side state (``previous_response_id``, ``conversation``,
  an Anthropic ``thread`` continued) or references content it does not carry reserves the model's
  context window as its input, or ``Estimator(unseen_tokens=...)`` more than what it shows;
  ``Estimate.unseen`` names the references. A chat's earlier audio answers sent back by id are audio
  input, each at most the model's maximum output (``Estimate.input_audio_tokens``).

Anthropic's ``messages.count_tokens`` can replace the offline Claude estimate: pass a client as
``Estimator(anthropic_count_tokens=client)``. A timeout or an error falls back to the offline estimate
(never to zero) and is logged; the guard also reports it as an ``estimate_fallback`` event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._errors import ConfigurationError, PricingError
from ._fallbacks import chain_cost, fallback_passes, fallback_requests
from ._frozen import fast_init, fast_new
from ._money import to_usd
from ._passes import DEFAULT_TOOL_CALLS, NO_TOOLS, ServerTools, largest_read, pass_input
from ._pricing import PriceBook, is_azure, price_book
from ._providers import VARIANT_KEYS, Variant, api_of, as_read, project_tier, request_variant
from ._rates import _FEE_UNITS, Price
from ._tokens import count_embedding_input
from ._tokens_claude import (
    COUNT_KEYS,
    cache_ttl,
    claude_factor,
    compaction_trigger,
    count_claude_request,
    count_failed,
    counted,
    is_async_counter,
)
from ._tokens_claude import unseen_inputs as claude_unseen
from ._tokens_openai import audio_ids, read_openai_request
from ._tokens_openai import unseen_inputs as openai_unseen
from ._usage import Pass, Usage

__all__ = ["DEFAULT_TOOL_CALLS", "Estimate", "Estimator", "estimate"]


@fast_init
@dataclass(frozen=True, slots=True)
class Estimate:
    """The worst case of one call: what a reservation holds before the call is sent."""

    model: str
    input_tokens: int
    """The worst-case input of the call: what the request shows, the unseen input it references and
    the input of the passes its server-side tools run (``tool_pass_tokens``)."""
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
    was reserved at the model's context window, or the configured ``unseen_tokens`` on top (audio
    answers by id alone: each one answer of the model, see ``input_audio_tokens``)."""
    provider: str | None = None
    """The provider the price was looked up at (``None``: by name); another model or tier is priced there."""
    tool_pass_tokens: int = 0
    """The part of ``input_tokens`` the passes after server-side tool calls re-read (see ``_passes``)."""
    tool_results_defaulted: tuple[str, ...] = ()
    """The tools whose results were reserved at the calibrated ``DEFAULT_TOOL_RESULT_TOKENS``."""
    tool_results: tuple[tuple[int | None, int], ...] = ()
    """The server-side tool results the passes may read, as ``(tokens, calls)`` groups."""
    advisors: tuple[tuple[str, int], ...] = ()
    """Anthropic advisor uses, as ``(model, most tokens written)``: passes, and results read back."""
    fees: tuple[tuple[str, Decimal], ...] = ()
    """Call fees (USD per 1k) the request's tools set, in ``price``: charged whichever model answers."""
    fallbacks: tuple[tuple[Estimate, bool], ...] = ()
    """Anthropic server-side fallbacks: each hop's own worst case, and whether it keeps the request's
    max output (see ``budgetguard._fallbacks``); reserved as ``fallback_message`` passes."""
    compaction: int | None = None
    """The input at which the request's ``context_management`` compacts (its trigger): when a pass may
    read that much, a ``compaction`` pass (that input read, a summary of the output bound written) is
    reserved, and the summary the message reads back (in ``tool_pass_tokens``)."""
    input_audio_tokens: int = 0
    """Of ``input_tokens``, those reserved at the audio input rate: the unseen input of a chat that sends
    earlier audio answers back by id (``unseen`` names ``"audio id"``)."""

    @property
    def cost(self) -> Decimal:
        """The reserved amount in USD."""
        return to_usd(self.cost_nano)

    @property
    def total_tokens(self) -> int:
        """Every token of the worst case, the passes' included (what a token budget holds)."""
        tokens = self.input_tokens + self.output_tokens
        for extra in self.passes:  # (none on most calls: the hot path adds nothing)
            tokens += extra.usage.total_tokens
        return tokens

    @property
    def usage(self) -> Usage:
        """The worst-case usage this estimate priced."""
        heard = self.input_audio_tokens
        usage = _worst_usage(self.input_tokens - heard, self.output_tokens, self.cache_write)
        if not self.tool_calls and not self.audio_output and not self.passes and not heard:
            return usage
        units: dict[str, Any] = {_FEE_UNITS[name]: count for name, count in self.tool_calls}
        if heard:
            units.update(input_audio_tokens=heard)
        if self.audio_output:
            units.update(output_tokens=0, output_audio_tokens=self.output_tokens)
        return dataclasses.replace(usage, **units, passes=self.passes)

    def __repr__(self) -> str:
        return (
            f"Estimate(model={self.model!r}, input_tokens={self.input_tokens}, "
            f"output_tokens={self.output_tokens}, cost=${self.cost:f})"
        )


_new_estimate = fast_new(Estimate)


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
        default_output_tokens: int | None = None,
        anthropic_factor: Decimal | str | None = None,
        anthropic_factors: Mapping[str, Decimal | str] | None = None,
        anthropic_count_tokens: Any = None,
        count_tokens_timeout: float = 2.0,
        tool_calls: Mapping[str, int] | None = None,
        unseen_tokens: int | None = None,
        tool_result_tokens: Mapping[str, int | None] | None = None,
        default_service_tier: str | None = None,
    ) -> None:
        """``default_service_tier``: the tier your OpenAI project serves (and bills) a request at when it
        names no ``service_tier`` or ``"auto"``: ``"priority"`` when the project's default tier is
        Priority; ``None`` or ``"default"``, standard. A request that names its tier keeps it, and one
        sent to another provider (``provider="groq"``...) has none.

        ``unseen_tokens`` bounds the input a request references without carrying it (server-side
        history, files by id): reserved on top of what it shows. ``None``: the model's context window
        bounds the whole input (a model without a known window is then an error).

        ``default_output_tokens`` is the output reserved for a request that sets no maximum on a model
        whose limits are unknown; ``None`` (the default) makes that an error instead, since no fixed
        number bounds what such a model may write.

        ``tool_result_tokens`` bounds what one server-side tool call feeds back, by tool kind, over
        ``DEFAULT_TOOL_RESULT_TOKENS`` (calibrated); ``None`` for a kind reserves the context window
        for every pass after its calls (the hard bound)."""
        if unseen_tokens is not None and (
            isinstance(unseen_tokens, bool) or not isinstance(unseen_tokens, int) or unseen_tokens < 0
        ):
            raise ConfigurationError(
                f"unseen_tokens must be a non-negative int or None, got {unseen_tokens!r}"
            )
        self.unseen_tokens = unseen_tokens
        if default_output_tokens is not None and (
            isinstance(default_output_tokens, bool)
            or not isinstance(default_output_tokens, int)
            or default_output_tokens <= 0
        ):
            raise ConfigurationError(
                f"default_output_tokens must be a positive int or None, got {default_output_tokens!r}"
            )
        self.default_service_tier = project_tier(default_service_tier)
        self.server_tools = ServerTools(tool_calls, tool_result_tokens)
        self.tool_calls, self.tool_result_tokens = self.server_tools.calls, self.server_tools.results
        self.prices = prices if prices is not None else price_book
        self.default_output_tokens = default_output_tokens
        self.anthropic_factor = None if anthropic_factor is None else Decimal(anthropic_factor)
        self.anthropic_factors = {k: Decimal(v) for k, v in (anthropic_factors or {}).items()}
        if (self.anthropic_factor is not None and self.anthropic_factor < 1) or any(
            f < 1 for f in self.anthropic_factors.values()
        ):
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
        async, and passes ``count=False``). The request is read as sent (``as_read``: no "not given"
        sentinels, ``extra_body`` merged over the named keys, a parse helper's class as its schema)."""
        request = as_read(request)
        if self.anthropic_count_tokens is not None and input_tokens is None and count:
            ask = self.count_request(request, provider=provider, api=api)
            if ask is not None and not is_async_counter(self.anthropic_count_tokens):
                input_tokens = self.count_tokens(ask)
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(
                "the request has no 'model'; pass the SDK call's keyword arguments, or an Estimate"
            )
        shape = api or api_of(provider, model)  # (the API picks the shape; the provider, the price)
        provider = "azure" if is_azure(model, provider) else provider  # (Azure however named: one rule)
        if shape == "anthropic" and request.get("fallbacks") is not None:
            alone, hops = fallback_requests(request)  # (budgetguard._fallbacks)
            est = self(alone, provider=provider, api=api, batch=batch, input_tokens=input_tokens, count=False)
            chain = tuple((self(hop, provider=provider, api=api, batch=batch, count=False), keeps)
                          for hop, keeps in hops)  # fmt: skip
            return self.priced(dataclasses.replace(est, fallbacks=chain), est.output_tokens) if chain else est
        tier = self.default_service_tier if provider in (None, "openai") else None  # (an OpenAI project's)
        asks = batch or tier or not VARIANT_KEYS.isdisjoint(request)
        variant = request_variant(request, shape, batch=batch, default_tier=tier) if asks else None
        variant = self.prices.deployment_variant(model, variant, provider)  # (an Azure deployment's type)
        try:
            price = self.prices.get(model, provider=provider, variant=variant)
        except PricingError:
            if batch or not tier or request.get("service_tier") not in (None, "auto"):
                raise
            # (the project's default tier alone asked for it: a model with no such tier is served at standard)
            variant, price = None, self.prices.get(model, provider=provider)
        cache_write, compaction, heard = None, None, 0  # (heard: audio input, see _unseen_bound)
        counted = False
        # the input, and what the request references without carrying (unseen)
        if shape == "anthropic":
            if input_tokens is None:
                input_tokens = count_claude_request(request, model, self._factor(model))
            else:
                counted = True
            cache_write, compaction = cache_ttl(request), compaction_trigger(request)
            output_tokens = self._output(request, price, CLAUDE_OUTPUT_KEYS)
            unseen = claude_unseen(request, counted=counted)
        elif "messages" in request:
            input_tokens, unseen = read_openai_request(request)
            output_tokens = self._output(request, price, CHAT_OUTPUT_KEYS)
            if "n" in request:  # several choices: each may be as long
                output_tokens *= _n(request)
        elif _is_embedding(model):
            input_tokens = count_embedding_input(request.get("input"), model)
            output_tokens = 0
            unseen = openai_unseen(request)
        elif "input" in request or "instructions" in request or isinstance(request.get("prompt"), Mapping):
            input_tokens, unseen = read_openai_request(request)
            output_tokens = self._output(request, price, RESPONSES_OUTPUT_KEYS)
        else:
            raise ConfigurationError(
                f"cannot tell what kind of request this is (keys: {sorted(request)}); expected "
                "'messages' (chat / Anthropic) or 'input' (Responses / embeddings)"
            )
        if shape != "anthropic":  # (OpenAI's own writes; where the request asks: Claude's, any wire format)
            cache_write = price.dearer_write or cache_ttl(request)
        if unseen:
            input_tokens, heard = self._unseen_bound(input_tokens, price, unseen, audio_ids(request))
        tools = (
            self.server_tools.read(request, shape, price, input_tokens, model, provider, output_tokens)
            if "tools" in request or "mcp_servers" in request or price.chat_search(provider) is not None
            else NO_TOOLS
        )
        price = price.with_fees(tools.rates, tools.image)  # (the fees its tools set: a container's size...)
        advisors: tuple[tuple[str, int], ...] = ()
        defaulted = tools.defaulted
        if shape == "anthropic" and request.get("tools"):
            found, advised = self._advisor_passes(request, provider, variant)
            advisors, defaulted = tuple(found), defaulted + advised
        audio = "modalities" in request and _wants_audio(request)
        results = tools.results
        input_tokens, passes, extra, cost_nano = self._worst(
            model, price, provider, variant, input_tokens, output_tokens, cache_write, audio, tools.fees,
            results, advisors, (), compaction, heard,
        )  # fmt: skip
        return _new_estimate(
            model, input_tokens, output_tokens, cost_nano, price, cache_write, variant, counted, tools.fees,
            defaulted, audio, passes, unseen, provider, extra, tools.sized, results, advisors, tools.rates,
            (), compaction, heard,
        )  # fmt: skip

    def priced(self, est: Estimate, output_tokens: int) -> Estimate:
        """``est`` with its input, passes and cost recomputed at ``output_tokens`` of output (``fit=``)."""
        price = est.price.with_output(output_tokens)  # (an image tool's prompts: at most the output)
        input_tokens, passes, extra, cost_nano = self._worst(
            est.model, price, est.provider, est.variant, est.input_tokens - est.tool_pass_tokens,
            output_tokens, est.cache_write, est.audio_output, est.tool_calls, est.tool_results, est.advisors,
            est.fallbacks, est.compaction, est.input_audio_tokens,
        )  # fmt: skip
        return _new_estimate(
            est.model, input_tokens, output_tokens, cost_nano, price, est.cache_write, est.variant,
            est.counted, est.tool_calls, est.tools_defaulted, est.audio_output, passes, est.unseen,
            est.provider, extra, est.tool_results_defaulted, est.tool_results, est.advisors, est.fees,
            est.fallbacks, est.compaction, est.input_audio_tokens,
        )  # fmt: skip

    def _worst(
        self, model: str, price: Price, provider: str | None, variant: Variant | None, shown: int,
        output_tokens: int, cache_write: str | None, audio: bool, calls: tuple[tuple[str, int], ...],
        results: tuple[tuple[int | None, int], ...], advisors: tuple[tuple[str, int], ...],
        chain: tuple[tuple[Estimate, bool], ...], compaction: int | None = None, heard: int = 0,
    ) -> tuple[int, tuple[Pass, ...], int, int]:  # fmt: skip
        """The worst case of a call that shows ``shown`` input tokens and writes ``output_tokens``:
        ``(input tokens, advisor and fallback passes, tool-pass input, cost in nano-USD)``.

        Each advice is read back as a tool result; every pass after a server-side tool call reads the
        request again; the whole call's input picks the price tier; every unit is summed and rounded
        up once. Fallback hops (``chain``): see ``budgetguard._fallbacks``. A compaction (at input
        ``compaction``) is a pass on the call's model; it writes a summary, at most the output bound (the
        call's own: Anthropic documents no other), which the message reads instead of what it summed up.
        ``heard``: of ``shown``, the tokens priced as audio input."""
        input_tokens, extra = shown, 0
        passes: tuple[Pass, ...] = ()
        if results or advisors:
            window = price.context_window
            read = [*results, *((written, 1) for _, written in advisors)]
            if advisors:
                seen = largest_read(shown, output_tokens, read, window)
                passes = tuple(Pass("advisor_message", m, Usage(seen, output_tokens=w)) for m, w in advisors)
            extra = pass_input(shown, output_tokens, read, window, model)
            input_tokens += extra
        if compaction is not None:  # (with tools, the trigger is checked at every pass: the largest read)
            seen = largest_read(shown, output_tokens, results, price.context_window) if results else shown
            if seen >= compaction:
                passes += (Pass("compaction", None, Usage(seen, output_tokens=output_tokens)),)
                extra, input_tokens = extra + output_tokens, input_tokens + output_tokens
        hops: tuple[Pass, ...] = ()
        if chain:  # (each hop re-priced at its output and the input it may read)
            advised, hops = fallback_passes(output_tokens, chain, lambda e, out, read: self.priced(
                dataclasses.replace(e, input_tokens=read), out))  # fmt: skip
            passes += advised
        if cache_write is None:
            uncached, write_5m, write_1h = input_tokens, 0, 0
        else:
            write_5m = input_tokens if cache_write == "5m" else 0
            write_1h = input_tokens if cache_write == "1h" else 0
            uncached = input_tokens - write_5m - write_1h
        if heard:  # (audio input, at its own rate: out of the one bucket the input is in)
            uncached, write_5m, write_1h = (b - heard if b else 0 for b in (uncached, write_5m, write_1h))
        if audio or calls or passes or chain or heard:  # every unit in one sum, rounded up once
            worst = Usage(
                uncached, 0, write_5m, write_1h, 0 if audio else output_tokens, input_audio_tokens=heard,
                output_audio_tokens=output_tokens if audio else 0, passes=passes,
                **{_FEE_UNITS[name]: count for name, count in calls},
            )  # fmt: skip
            cost_nano = price.image_prompts_nano(calls)  # (an image tool's, where its calls do not hold them)
            cost_nano += self.prices.cost_nano(price, worst, provider=provider, variant=variant)
            if chain:
                cost_nano = chain_cost(self.prices, cost_nano, worst, hops, price, chain, provider)
                passes += hops
        else:  # the passes' input too picks the tier: the whole call's
            rates = price.rates_for(input_tokens) if price.tiers else price.base
            cost_nano = rates.cost_nano_of(uncached, 0, write_5m, write_1h, output_tokens)
        return input_tokens, passes, extra, cost_nano

    def _advisor_passes(
        self, request: Mapping[str, Any], provider: str | None, variant: Variant | None
    ) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
        """The worst case of Anthropic advisor tools: ``max_uses`` (else the default) passes on the
        advisor's model, each writing the tool's ``max_tokens`` (else the advisor's own limit), as
        ``(model, written)`` per use; each reads the whole conversation (set by the caller). The advisor
        is priced as the call will be charged: at its provider (``PriceBook.pass_price``)."""
        uses: list[tuple[str, int]] = []
        defaulted: tuple[str, ...] = ()
        for tool in request.get("tools") or ():
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            if not isinstance(kind, str) or not kind.startswith("advisor_"):
                continue
            advisor = tool.get("model")
            if not isinstance(advisor, str) or not advisor:
                raise ConfigurationError(f"an advisor tool names its model: {dict(tool)!r}")
            count = tool.get("max_uses")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                count, defaulted = self.tool_calls["advisor"], ("advisor",)
            written = tool.get("max_tokens")
            if isinstance(written, bool) or not isinstance(written, int) or written < 0:
                advisor_price = self.prices.pass_price(advisor, provider=provider, variant=variant)
                written = self._output({}, advisor_price, ("max_tokens",), "the advisor tool")
            uses.extend([(advisor, written)] * count)
        return uses, defaulted

    # -- Anthropic's token counting endpoint ----------------------------------------------------

    def count_request(
        self, request: Mapping[str, Any], *, provider: str | None = None, api: str | None = None
    ) -> dict[str, Any] | None:
        """The ``messages.count_tokens`` arguments for ``request`` when exact counting is on and
        ``request`` is a Claude request, else ``None``."""
        request = as_read(request)
        model = request.get("model")
        if self.anthropic_count_tokens is None or not isinstance(model, str) or not model:
            return None
        if (api or api_of(provider, model)) != "anthropic" or "messages" not in request:
            return None
        return {key: request[key] for key in COUNT_KEYS if request.get(key) is not None}

    def count_tokens(self, ask: Mapping[str, Any]) -> int | None:
        """Input tokens by the endpoint (sync client); ``None`` (logged) when it fails or times out."""
        try:
            return counted(self._count_client().messages.count_tokens(**ask))
        except Exception as exc:
            return count_failed(ask, exc)

    async def acount_tokens(self, ask: Mapping[str, Any]) -> int | None:
        """``count_tokens`` for async callers: awaits an async client, runs a sync one in a thread."""
        if not is_async_counter(self.anthropic_count_tokens):
            import asyncio  # (here, not at import: loaded already, since this runs on its loop)

            return await asyncio.to_thread(self.count_tokens, ask)
        try:
            return counted(await self._count_client().messages.count_tokens(**ask))
        except Exception as exc:
            return count_failed(ask, exc)

    def _count_client(self) -> Any:
        return self.anthropic_count_tokens.with_options(timeout=self.count_tokens_timeout, max_retries=0)

    def _factor(self, model: str) -> Decimal:
        """Claude's o200k_base factor for ``model``: ``anthropic_factors`` by prefix, else
        ``anthropic_factor``, else the model family's (``budgetguard._tokens_claude.CLAUDE_FACTORS``)."""
        for prefix, factor in self.anthropic_factors.items():
            if model.startswith(prefix):
                return factor
        return self.anthropic_factor if self.anthropic_factor is not None else claude_factor(model)

    def _unseen_bound(self, shown: int, price: Price, unseen: tuple[str, ...], ids: int) -> tuple[int, int]:
        """The input of a request that references ``unseen`` content, and how much of it is audio:
        what it shows plus ``unseen_tokens``, else the model's context window (the most any input can
        be). ``ids`` earlier audio answers sent back by id are audio input, each at most one answer of
        the model (its maximum output), which bounds the input when nothing else is unseen."""
        most, window = price.max_output_tokens, price.context_window
        heard = ids * most if ids and most is not None else None  # (None: all the unseen input is audio)
        if self.unseen_tokens is not None:
            more = self.unseen_tokens
        elif window is not None:
            more = max(0, window - shown)
        elif heard is None or len(unseen) > 1:
            raise ConfigurationError(
                f"the request references input it does not carry ({', '.join(unseen)}) and "
                f"{price.model!r} has no known context window to bound it; pass "
                "Estimator(unseen_tokens=...) or register the model's context_window"
            )
        else:
            more = heard
        if heard is not None and len(unseen) == 1:  # (the answers by id are all it does not carry)
            more = min(more, heard)
        return shown + more, 0 if not ids else more if heard is None else min(heard, more)

    def _output(
        self,
        request: Mapping[str, Any],
        price: Price,
        keys: tuple[str, ...],
        where: str = "the request",
    ) -> int:
        """The most output tokens ``request`` may produce: its own maximum; else the model's maximum
        output (within its context window); else its context window; else the configured default;
        else a ``ConfigurationError`` (no limit is known)."""
        for key in keys:
            value = request.get(key)
            if value is not None:
                if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ConfigurationError(f"{key} must be a non-negative int, got {value!r}")
                if value < 0:
                    raise ConfigurationError(f"{key} must be a non-negative int, got {value!r}")
                return value
        # Not the window minus the input: that room is computed from the input *estimate*, and an
        # estimate above the real input would leave the provider room for more output than reserved.
        window = price.context_window
        if price.max_output_tokens is not None:
            return price.max_output_tokens if window is None else min(price.max_output_tokens, window)
        if window is not None:
            return window
        if self.default_output_tokens is not None:
            return self.default_output_tokens
        raise ConfigurationError(
            f"{where} sets no {' / '.join(keys)} and no output limit is known for {price.model!r}, so "
            f"nothing bounds what it may cost. Set {keys[0]} on {where}, register the model's limits "
            f"(budgetguard.register_price({price.model!r}, input=..., output=..., max_output_tokens=N, "
            "context_window=N)), or reserve a fixed output for such models with "
            "Estimator(default_output_tokens=N)"
        )


def _wants_audio(request: Mapping[str, Any]) -> bool:
    modalities = request.get("modalities")
    return isinstance(modalities, list | tuple) and "audio" in modalities


def _n(request: Mapping[str, Any]) -> int:
    n = request.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n must be a positive int, got {n!r}")
    return n


CLAUDE_OUTPUT_KEYS = ("max_tokens",)
CHAT_OUTPUT_KEYS = ("max_completion_tokens", "max_tokens")
RESPONSES_OUTPUT_KEYS = ("max_output_tokens",)


def output_keys(request: Mapping[str, Any], api: str) -> tuple[str, ...]:
    """The keys ``request`` sets its max output tokens with, in the order the estimator reads them (the
    first set wins), as the estimator tells the request's kind; ``()`` for one without output."""
    if api == "anthropic":
        return CLAUDE_OUTPUT_KEYS
    if "messages" in request:
        return CHAT_OUTPUT_KEYS
    model = request.get("model")
    return () if isinstance(model, str) and _is_embedding(model) else RESPONSES_OUTPUT_KEYS


def _is_embedding(model: str) -> bool:
    return "embedding" in model


_default_estimator = Estimator()
_estimate = Estimator.__call__  # (called as a function: an instance call passes through type slots)


def estimate(
    request: Mapping[str, Any], *, provider: str | None = None, api: str | None = None, batch: bool = False
) -> Estimate:
    """Worst-case tokens and cost of an SDK request (its keyword arguments), with default settings.

    ``provider`` prices it where it goes (``"groq"``, ``"azure"``, ``"aws"``...); ``batch=True`` prices
    the request as one line of a Batch API job (OpenAI or Anthropic)."""
    return _estimate(_default_estimator, request, provider=provider, api=api, batch=batch)

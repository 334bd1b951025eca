"""Where prices come from: the genai-prices database, and providers' published prices for what it lacks.

Finding a model in genai-prices (by provider, name prefix or fallback provider), refusing a price
variant it does not list, converting its prices to a ``Price``; and ``PUBLISHED_PRICES``, the providers'
own prices for units (audio tokens, tool calls) genai-prices does not price.

genai-prices is imported by ``_snapshot()``, at the first price lookup, not at ``import budgetguard``:
its pydantic models take longer to import than the rest of budgetguard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._cache import memo
from ._errors import PricingError
from ._limits import UNKNOWN, model_limits
from ._rates import CALL_FEES, Price, Rates

if TYPE_CHECKING:
    from genai_prices import types as _gp
    from genai_prices.data_snapshot import DataSnapshot

__all__ = [
    "AZURE_DEPLOYMENTS", "LOCATION_KEYS", "PUBLISHED_PRICES", "UNKNOWN_DEPLOYMENT", "chat_search_fee",
    "is_azure", "is_claude", "provider_for_url", "published_prices", "regional_premium", "times",
    "where_it_runs",
]  # fmt: skip


def _snapshot() -> DataSnapshot:
    """genai-prices' data (its bundled snapshot, or the one a user set). The one place genai-prices is
    imported from: at the first lookup that needs it, so ``import budgetguard`` does not pay for it.
    The functions below that test genai-prices' types only ever see objects read from this snapshot,
    so their own imports of ``genai_prices.types`` find it loaded."""
    from genai_prices import data_snapshot

    return data_snapshot.get_snapshot()


# -- genai-prices conversion -------------------------------------------------------------------

_GP_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "input_audio": "input_audio_mtok",
    "output_audio": "output_audio_mtok",
    "input_image": "input_image_mtok",
    "output_image": "output_image_mtok",
    "web_search": "web_searches_kcount",
    "file_search": "storage_searches_kcount",
    "code_execution": "code_executions_kcount",
    "request": "requests_kcount",
}

# -- the providers' published prices for units genai-prices does not price ---------------------------
# Used only where genai-prices has no price for a unit (genai-prices wins, ``register_price`` wins over
# both). Token rates in USD per million tokens, call fees in USD per thousand calls. Checked 2026-12-06.
_PUBLISHED: dict[str, tuple[tuple[str, Mapping[str, Decimal]], ...]] = {
    "anthropic": (
        (
            "claude",
            {
                # https://docs.claude.com/en/docs/agents-and-tools/tool-use/web-search-tool#usage-and-pricing
                # "$10 per 1,000 searches" (genai-prices has it for most Claude models)
                "web_search": Decimal("10"),
                # https://docs.claude.com/en/docs/agents-and-tools/tool-use/web-fetch-tool#usage-and-pricing
                # "Web fetch is available at no additional cost": tokens only
                "web_fetch": Decimal("0"),
                # https://docs.claude.com/en/docs/agents-and-tools/tool-use/code-execution-tool#usage-and-pricing
                # $0.05 per session-hour, 5 minutes minimum: $0.0041667 a session, $4.17 per 1k (rounded up)
                "code_execution": Decimal("4.17"),
            },
        ),
    ),
    "openai": (
        # https://platform.openai.com/docs/pricing (audio tokens): $40 / $80 per million audio tokens in / out
        ("gpt-4o-audio-preview", {"input_audio": Decimal("40"), "output_audio": Decimal("80")}),
        # https://platform.openai.com/docs/pricing (audio tokens): $10 / $20 per million audio tokens in / out
        ("gpt-4o-mini-audio-preview", {"input_audio": Decimal("10"), "output_audio": Decimal("20")}),
        # https://platform.openai.com/docs/pricing#built-in-tools: "Web search preview (non-reasoning
        # models): $25.00 / 1k calls, search content tokens are free" (gpt-4o, gpt-4.1 and their minis,
        # the chat search models gpt-4o(-mini)-search-preview); reasoning models pay the $10 of web_search
        ("gpt-4o", {"web_search_preview": Decimal("25")}),
        ("gpt-4.1", {"web_search_preview": Decimal("25")}),
        ("chatgpt-4o", {"web_search_preview": Decimal("25")}),
        (
            "",
            {
                # https://platform.openai.com/docs/pricing#built-in-tools: web search $10.00 / 1k calls,
                "web_search": Decimal("10"),
                # file search $2.50 / 1k calls,
                "file_search": Decimal("2.5"),
                # code interpreter $0.03 per container (1 GB, the default; register larger ones),
                "code_execution": Decimal("30"),
                # image generation: an open tool (gpt-image-2.6-sunburst, by gpt-image-2's rule) at its
                # dearest, high quality at 2880x2880 with 3 partial images, 24,019 image tokens at $30 / M,
                # and 8,000 text output tokens at $10 / M (its planning; see _image_tool: a request's tool
                # is reserved at what it names and the images it may edit, image_generation_fee; a
                # response that reports the image model's tokens is charged them, _image_bill).
                "image_generation": Decimal("800.57"),
            },
        ),
    ),
}
PUBLISHED_PRICES: Mapping[str, tuple[tuple[str, Mapping[str, Decimal]], ...]] = MappingProxyType(
    {name: tuple((prefix, MappingProxyType(dict(rates))) for prefix, rates in entries)
     for name, entries in _PUBLISHED.items()}
)  # fmt: skip
"""The providers' published prices for units genai-prices does not price, per provider: ``(model name
prefix, rates)``, the first matching prefix wins. Read-only: prices are resolved once and cached, so an
edit here would have no effect; set a model's price with ``register_price`` (or ``load_prices``)."""


_LONG_CONTEXT_TIERS: tuple[tuple[tuple[str, ...], int, Mapping[str, Decimal]], ...] = (
    # https://docs.claude.com/en/docs/about-claude/pricing#long-context-pricing: Claude Sonnet 4 with the
    # 1M context window, input above 200k tokens: $6 / MTok input, $22.50 / MTok output for the whole
    # request, the prompt-caching multipliers on top ($7.50 / $12 5m / 1h writes, $0.60 reads).
    # genai-prices has this tier for Sonnet 4.5 only; Sonnet 4.6 is one price over its whole window.
    (
        # genai-prices' own names for Sonnet 4 (anthropic/claude-sonnet-4-0), Bedrock and Vertex ids
        (
            "claude-sonnet-4-0",
            "claude-sonnet-4-2025",
            "claude-sonnet-4@",
            "claude-4-sonnet",
            "claude-sonnet-4",
        ),
        200_000,
        {
            "input": Decimal("6"),
            "output": Decimal("22.5"),
            "cache_read": Decimal("0.6"),
            "cache_write": Decimal("7.5"),
            "cache_write_1h": Decimal("12"),
        },
    ),
)
"""Published prompt-size tiers genai-prices lacks: ``(model name prefixes, threshold, token rates above
it)``; the last prefix of each is a whole name (``claude-sonnet-4``, not ``claude-sonnet-4-5``). Added
to a genai-prices price that has no tiers (a registered price keeps the tiers it was given)."""


_CHAT_SEARCH_FEES: tuple[tuple[str, Mapping[str, Decimal]], ...] = (
    # OpenAI bills a Chat Completions search model's search by the request's
    # web_search_options.search_context_size ("medium" when not set), per 1k calls (OpenAI's pricing page
    # of 2025; OpenRouter lists gpt-4o-search-preview at $35 / 1k, the medium fee; genai-prices says $10).
    ("gpt-4o-mini-search-preview", {"low": Decimal("25"), "medium": Decimal("27.5"), "high": Decimal("30")}),
    ("gpt-4o-search-preview", {"low": Decimal("30"), "medium": Decimal("35"), "high": Decimal("50")}),
)
"""Chat search models' fee per search context size: ``(model name prefix, {size: USD per 1k calls})``.
The medium fee is the model's ``web_search`` price; a request's size sets its fee (``chat_search_fee``)."""


_VERTEX_REGIONAL_PREMIUM = Decimal("1.1")
# https://docs.claude.com/en/docs/build-with-claude/claude-on-vertex-ai#global-vs-regional-endpoints:
# "Starting with Claude Sonnet 4.5 and all future models", a regional endpoint costs 10% more than the
# global one; older models (Sonnet 4, Opus 4 / 4.1, Claude 3.x) keep one price at every endpoint.
_VERTEX_ONE_PRICE = ("claude-3", "claude-sonnet-4@", "claude-opus-4@", "claude-opus-4-1@")
"""Vertex AI model ids (``claude-sonnet-4@20250514``) priced alike at global and regional endpoints."""


_US_ONLY_PREMIUM = Decimal("1.1")
# https://docs.aws.amazon.com/claude-platform/latest/userguide/data-residency.html (Anthropic's API on AWS,
# as the Claude API's data residency page): inference_geo "us": "A 1.1x pricing multiplier applies";
# "global": standard pricing. The parameter is "supported on Claude Opus 4.6, Claude Sonnet 4.6, and later
# models" (the SDK's reference: "1.1x pricing for models released after February 1, 2026"); older models
# answer 400, billing nothing: the premium is reserved for them too (no list of models to keep up).

AZURE_DEPLOYMENTS = ("global", "data_zone", "regional")
"""Azure OpenAI's Standard deployment types, as ``register_price(..., deployment=...)`` names them."""
UNKNOWN_DEPLOYMENT = "unknown"
"""The type of an Azure deployment declared nowhere: charged as the dearest type (Regional)."""
_AZURE_PREMIUMS = {"global": Decimal(1), "data_zone": Decimal("1.1"), "regional": Decimal("1.375")}
# Azure's Retail Prices API (prices.azure.com, serviceName 'Foundry Models'; its pricing page shows the
# same per model, by type): a Data Zone Standard meter is 1.10x the Global Standard one (gpt-4o-mini,
# gpt-4.1-mini, gpt-5-mini, gpt-5.4-mini...); a Regional (Standard) meter depends on the Azure region:
# 1.10x in East US, 1.21x in Sweden Central, 1.32x in West Europe (gpt-4.1-mini), 1.375x for gpt-4o
# 2024-11-20 output ($13.75 / M against $10). Regional is priced at the dearest seen (register a
# deployment's own rates to be charged exactly), and a deployment of unknown type as Regional.

LOCATION_KEYS = frozenset({"inference_geo", "deployment"})
"""Variant keys that say where a call runs (``regional_premium`` prices them), not a tier the price data
lists: Anthropic's ``inference_geo`` (a Vertex AI location too), an Azure deployment's type."""


def where_it_runs(variant: Mapping[str, str] | None) -> dict[str, str]:
    """The part of ``variant`` that says where a call runs (its ``LOCATION_KEYS``; ``{}``: none)."""
    return {k: v for k, v in variant.items() if k in LOCATION_KEYS} if variant else {}


def regional_premium(provider: str, model: str, variant: Mapping[str, str]) -> Decimal | None:
    """What running where ``variant`` (its ``LOCATION_KEYS`` alone) says multiplies ``model``'s price by at
    ``provider``, or ``None`` where no premium is published (the data's variants then, or a refusal):

    * Vertex AI (``google``), ``{"inference_geo": location}``, any location but ``global`` (which
      ``request_variant`` leaves out): 1.1 for Claude Sonnet 4.5 and later, 1 for older models. The
      multi-regions (``us``, ``eu``) are priced as regions: an assumption (no figure is published for
      them), the dearer of the two prices.
    * Anthropic's API, ``{"inference_geo": "us"}`` (US-only inference): 1.1 for Claude models.
    * Azure, ``{"deployment": type}``: ``_AZURE_PREMIUMS`` (``global`` 1, ``data_zone`` 1.1,
      ``regional`` 1.375), any other value (``"unknown"``) the dearest."""
    if provider == "azure" and variant.keys() == {"deployment"}:
        return _AZURE_PREMIUMS.get(variant["deployment"], max(_AZURE_PREMIUMS.values()))
    if variant.keys() != {"inference_geo"} or not is_claude(model):
        return None
    if provider == "google":
        return Decimal(1) if _bare(model).startswith(_VERTEX_ONE_PRICE) else _VERTEX_REGIONAL_PREMIUM
    return _US_ONLY_PREMIUM if provider == "anthropic" and variant["inference_geo"] == "us" else None


@memo("pricing.azure", 1024)
def is_azure(model: str, provider: str | None) -> bool:
    """Whether a call for ``model`` at ``provider`` goes to Azure OpenAI, as the price data resolves the
    provider: ``provider`` naming Azure however it is spelt (``"azure"``, ``"Azure"``), or, with none,
    Azure's prefix on the model's name (``"azure/gpt-4o"``). The one test of where the deployment type
    rule applies (the estimate's provider, ``PriceBook``'s lookups, a job's charge)."""
    where = provider if provider is not None else model.rpartition("/")[0]
    if not where:
        return False
    try:
        return _snapshot().find_provider(None, where, None).id == "azure"
    except LookupError:
        return False


def times(price: Price, factor: Decimal, *, fees: bool = False) -> Price:
    """``price`` with every token rate (each tier's too) ``factor`` times over; call fees too with
    ``fees`` (Azure meters each deployment type's tool calls apart: file search 1.1x in a region;
    ``Price.fee_premium`` records it for the fees a request's tools set), else unchanged."""
    if factor == 1:
        return price
    names: tuple[str, ...] = ("input", "output", "cache_read", "cache_write", "cache_write_1h", *_MODAL)
    if fees:
        names = (*names, *CALL_FEES, "request")

    def scaled(rates: Rates) -> Rates:
        changes = {name: getattr(rates, name) * factor for name in names if getattr(rates, name) is not None}
        return dataclasses.replace(rates, **changes)

    return dataclasses.replace(
        price, base=scaled(price.base), tiers=tuple((t, scaled(rates)) for t, rates in price.tiers),
        fee_premium=price.fee_premium * factor if fees else price.fee_premium,
    )  # fmt: skip


_MODAL = ("input_audio", "output_audio", "input_image", "output_image")


def chat_search_fee(model: str, size: object = "medium") -> Decimal | None:
    """The fee of one search of chat search model ``model`` at ``search_context_size`` ``size`` (USD per
    1k calls), or ``None`` when no size-priced fee is published for it (gpt-5-search-api: its price's
    ``web_search``). A size OpenAI does not name is priced at the dearest (the bill is never above)."""
    bare = model.rsplit("/", 1)[-1]
    for prefix, fees in _CHAT_SEARCH_FEES:
        if bare.startswith(prefix):
            return fees.get(size if isinstance(size, str) else "medium", max(fees.values()))
    return None


def _bare(model: str) -> str:
    """``model`` without a provider prefix (``anthropic/``) or a Bedrock region (``us.anthropic.``)."""
    return model.rsplit("/", 1)[-1].rpartition("anthropic.")[2]


def _published_tiers(price: Price) -> Price:
    bare = _bare(price.served)
    for names, threshold, rates in _LONG_CONTEXT_TIERS:
        if bare == names[-1] or bare.startswith(names[:-1]):
            above = dataclasses.replace(price.base, **rates)  # type: ignore[arg-type]
            return dataclasses.replace(price, tiers=((threshold, above),))
    return price


def is_claude(model: str) -> bool:
    """Whether ``model`` names an Anthropic Claude model, however the endpoint spells it: ``claude-...``,
    ``anthropic/claude-...``, Bedrock's ``anthropic.claude-...`` / ``us.anthropic.claude-...``, Vertex's
    ``claude-...@date``."""
    bare = model.rsplit("/", 1)[-1]
    return bare.startswith("claude") or "anthropic.claude" in bare or model.startswith("anthropic/")


def published_prices(model: str, provider: str | None) -> dict[str, Decimal]:
    """The published prices (``PUBLISHED_PRICES``) that apply to ``model`` at ``provider`` (guessed from
    the model name when not given): the first entry whose prefix the bare model name starts with wins."""
    bare = _bare(model)
    if provider is None:
        provider = "anthropic" if is_claude(model) else "openai"
    found: dict[str, Decimal] = {}
    for prefix, rates in PUBLISHED_PRICES.get(provider, ()):
        if bare.startswith(prefix):
            for name, rate in rates.items():
                found.setdefault(name, rate)
    return found


def _with_published(price: Price, provider: str | None) -> Price:
    published = published_prices(price.served, provider)
    searched = price.chat_search(provider)
    search = chat_search_fee(searched) if searched is not None else None
    if search is not None:  # (OpenAI's own fee for the search model, over genai-prices' $10)
        price = dataclasses.replace(
            price,
            base=dataclasses.replace(price.base, web_search=search),
            tiers=tuple((t, dataclasses.replace(rates, web_search=search)) for t, rates in price.tiers),
        )
    if not published:
        return price
    return dataclasses.replace(
        price,
        base=price.base.with_fallbacks(published),
        tiers=tuple((t, rates.with_fallbacks(published)) for t, rates in price.tiers),
    )


def _from_genai(ref: str, provider: _gp.Provider, model: _gp.ModelInfo, mp: _gp.ModelPrice) -> Price:
    from genai_prices import __version__ as genai_prices_version
    from genai_prices.types import TieredPrices

    raw = {name: getattr(mp, key) for name, key in _GP_KEYS.items()}
    if raw["cache_write"] is None:
        raw["cache_write"] = mp.cache_write_5m_mtok
    if raw["input"] is None:
        raise PricingError(
            f"genai-prices prices {model.id!r} in units budgetguard does not meter ({mp}); "
            f"register a per-token price: budgetguard.register_price({ref!r}, input=..., output=...)",
            model=ref,
        )
    thresholds = sorted({t.start for v in raw.values() if isinstance(v, TieredPrices) for t in v.tiers})

    def at(threshold: int | None) -> Rates:
        picked: dict[str, Any] = {}
        for name, value in raw.items():
            if isinstance(value, TieredPrices):
                chosen = value.base
                for tier in value.tiers:
                    if threshold is not None and threshold >= tier.start:
                        chosen = tier.price
                picked[name] = chosen
            else:
                picked[name] = value
        return Rates.of(**picked)

    known = model_limits(ref, model.id) or UNKNOWN
    price = Price(
        model=ref,
        base=at(None),
        tiers=tuple((t, at(t)) for t in thresholds),
        # the wider of the two windows bounds more; the maximum output is the table's alone
        context_window=max(filter(None, (model.context_window, known.context_window)), default=None),
        max_output_tokens=known.max_output_tokens,
        source=f"genai-prices {genai_prices_version}: {provider.id}/{model.id}",
        resolved=None if model.id == ref else model.id,
    )
    return _with_published(_published_tiers(price) if not price.tiers else price, provider.id)


def _has_time_of_day_prices(model: _gp.ModelInfo) -> bool:
    from genai_prices.types import TimeOfDateConstraint

    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    constraints += [v.constraint for v in model.price_variants or ()]
    return any(isinstance(c, TimeOfDateConstraint) for c in constraints)


_FALLBACK_PROVIDERS = ("openai", "anthropic", "google", "aws")
"""Tried in order for a model named without a provider (``aws``: Bedrock ids, ``us.anthropic.claude-...``)."""


def _find_in_data(names: list[str], provider: str | None) -> tuple[_gp.Provider, _gp.ModelInfo] | None:
    snapshot = _snapshot()
    attempts: list[tuple[str, str | None]] = []
    if provider is not None:  # the caller's provider wins over a prefix in the name
        try:
            snapshot.find_provider(None, provider, None)
        except LookupError:
            known = ", ".join(p.id for p in snapshot.providers)
            raise PricingError(
                f"unknown provider {provider!r}: genai-prices knows {known}. Pass one of those, or register "
                f"the model's price: budgetguard.register_price({names[0]!r}, input=..., output=...)",
                model=names[0],
            ) from None
        attempts = [(name, provider) for name in names]
    else:
        for name in names:
            prefix, _, rest = name.rpartition("/")
            if prefix:
                attempts.append((rest, prefix))
            attempts.append((name, None))
            attempts.extend((name, p) for p in _FALLBACK_PROVIDERS)
    for ref, provider_id in attempts:
        try:
            return snapshot.find_provider_model(ref, None, provider_id, None)
        except LookupError:
            continue
    return None


def _check_variant(
    ref: str, provider: _gp.Provider, model: _gp.ModelInfo, when: datetime, variant: Mapping[str, str]
) -> None:
    """``PricingError`` unless the data lists ``variant`` for ``model`` at ``when``: genai-prices would
    silently price an unknown variant at the base price."""
    wanted = dict(variant)
    for listed in model.price_variants or ():
        if dict(listed.when) == wanted and (listed.constraint is None or listed.constraint.active(when)):
            return
    asked = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
    raise PricingError(
        f"genai-prices has no {asked} price for {provider.id}/{model.id} on {when:%Y-%m-%d}; budgetguard "
        f"will not charge the base price for it. Register the price this model is billed at: "
        f"budgetguard.register_price({ref!r}, input=..., output=...)",
        model=ref,
    )


@memo("pricing.provider_urls", 256)
def provider_for_url(url: str) -> str | None:
    """The genai-prices provider id whose API a base URL belongs to (``https://api.groq.com/openai/v1``
    -> ``"groq"``, an Azure OpenAI resource -> ``"azure"``), or ``None`` for a host it does not know
    (a proxy, a local server)."""
    try:
        return _snapshot().find_provider(None, None, url).id
    except LookupError:
        return None

"""Model prices: the maintained genai-prices database, plus the user's own overrides.

Resolution of a model name, first match wins:

1. a price registered in code (``register_price``) or loaded from a file (``load_prices``), by the
   exact name, then by the name without a provider prefix (``openai/``) or a date suffix;
2. genai-prices, which knows dated snapshots (``gpt-4o-2024-08-06``, ``claude-sonnet-4-20250514``),
   prompt-size tiers, cache prices, batch / priority variants and price changes by date. With a
   ``provider`` (a genai-prices provider id or alias: ``"groq"``, ``"azure"``, ``"aws"``, ``"google"``;
   the decorator passes the endpoint a client talks to, see ``provider_for_url``) the model is looked
   up at that provider only, whatever prefix its name carries (``openai/gpt-oss-120b`` on Groq is
   Groq's price); without one, by the name's prefix, then any provider whose models match;
3. the default price, if the user configured one;
4. otherwise ``PricingError``: an unknown model is never charged $0.

A price variant (``service_tier``, Anthropic ``speed="fast"``, ``inference_geo``, batch) that the data
does not list for the model is a ``PricingError`` too (never the base price), unless the model has a
registered price. ``at=`` is an instant: an aware datetime is priced at its UTC date, a naive one is
read as UTC (as genai-prices reads it).

Resolutions are cached per (model, provider, variant, day), so a lookup on the hot path is a dict hit.
Costs are exact: prices are held as integers over a power of ten, and a cost in nano-USD is rounded up.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path
from types import MappingProxyType
from typing import Any

from genai_prices import data_snapshot as _gp_snapshot
from genai_prices import types as _gp

from ._config import read_data_file
from ._errors import ConfigurationError, PricingError
from ._limits import UNKNOWN, checked_limits, model_limits, model_names
from ._money import Money, to_usd
from ._usage import Usage

__all__ = [
    "PUBLISHED_PRICES",
    "Price",
    "PriceBook",
    "Rates",
    "cost",
    "get_price",
    "load_prices",
    "price_book",
    "published_prices",
    "provider_for_url",
    "register_price",
    "set_default_price",
]

_GENAI_PRICES_VERSION = version("genai-prices")


def _rate(value: Money | None, what: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise TypeError(f"price {what} is a float {value!r}; pass a string or Decimal, e.g. '{value!r}'")
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"price {what} must be a Decimal, str or int (USD per million tokens)")
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"price {what} {value!r} is not a number (USD per million tokens)") from None
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"price {what} must be a finite, non-negative USD per million tokens: {value!r}")
    return rate


_TOKEN_RATES = ("input", "cache_read", "cache_write", "cache_write_1h", "output")
_MODALITY_RATES = ("input_audio", "output_audio", "input_image", "output_image")
CALL_FEES = ("web_search", "web_fetch", "file_search", "code_execution", "image_generation")
"""Per-call fees, in USD per thousand calls (as providers and genai-prices state them)."""
_FEE_UNITS = {
    "web_search": "web_search_calls",
    "web_fetch": "web_fetch_calls",
    "file_search": "file_search_calls",
    "code_execution": "code_execution_sessions",
    "image_generation": "image_generation_calls",
}


@dataclass(frozen=True, slots=True)
class Rates:
    """The price of each billed unit: tokens in USD per million, per-call fees in USD per thousand calls.

    Audio rates that are ``None`` are unknown: audio tokens on such a model are a ``PricingError``, never
    priced as text. Image rates that are ``None`` fall back to the text rates (vision input is billed
    as input tokens). A call fee that is ``None`` is unknown: a call that uses the tool is a
    ``PricingError``. ``request`` is a fee per call (genai-prices ``requests_kcount``), per thousand.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    input_audio: Decimal | None = None
    output_audio: Decimal | None = None
    input_image: Decimal | None = None
    output_image: Decimal | None = None
    web_search: Decimal | None = None
    web_fetch: Decimal | None = None
    file_search: Decimal | None = None
    code_execution: Decimal | None = None
    image_generation: Decimal | None = None
    request: Decimal = Decimal(0)
    _nums: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _den: int = field(init=False, repr=False, compare=False)
    _extra: tuple[int | None, ...] = field(init=False, repr=False, compare=False)
    """Numerators of input / output audio, input / output image, then the call fees (None: unpriced)."""
    _request: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = (self.input, self.cache_read, self.cache_write, self.cache_write_1h, self.output)
        fees = tuple(getattr(self, name) for name in CALL_FEES)
        modal = (
            self.input_audio,
            self.output_audio,
            self.input if self.input_image is None else self.input_image,
            self.output if self.output_image is None else self.output_image,
        )
        known = [v for v in (*values, *modal, *fees, self.request) if v is not None]
        # nano-USD = tokens x (USD per MTok) x 1000 = calls x (USD per 1k calls) x 10**6: hold each rate
        # as an integer over 10**places.
        places = max(0, *(-int(v.as_tuple().exponent) for v in known))
        den = 10**places
        object.__setattr__(self, "_den", den)
        object.__setattr__(self, "_nums", tuple(int(v.scaleb(places)) * 1000 for v in values))
        object.__setattr__(
            self,
            "_extra",
            tuple(None if v is None else int(v.scaleb(places)) * 1000 for v in modal)
            + tuple(None if v is None else int(v.scaleb(places)) * 1_000_000 for v in fees),
        )
        object.__setattr__(self, "_request", int(self.request.scaleb(places)) * 1_000_000)

    @classmethod
    def of(
        cls,
        *,
        input: Money,
        output: Money | None = None,
        cache_read: Money | None = None,
        cache_write: Money | None = None,
        cache_write_1h: Money | None = None,
        **units: Money | None,
    ) -> Rates:
        """Rates with the usual fallbacks: cache reads and writes at the input price when not given,
        1-hour writes at the 5-minute write price, no output price for input-only models.

        ``units`` takes ``input_audio``, ``output_audio``, ``input_image``, ``output_image`` (USD per
        million tokens), the call fees ``web_search``, ``web_fetch``, ``file_search``,
        ``code_execution``, ``image_generation`` and ``request`` (USD per thousand calls)."""
        unknown = set(units) - {*_MODALITY_RATES, *CALL_FEES, "request"}
        if unknown:
            raise TypeError(
                f"unknown price {sorted(unknown)}; known: input, output, cache_read, cache_write, "
                f"cache_write_1h, {', '.join((*_MODALITY_RATES, *CALL_FEES))}, request"
            )
        base = _rate(input, "input")
        if base is None:
            raise TypeError("an input price is required (USD per million tokens)")
        write = _rate(cache_write, "cache_write")
        write = base if write is None else write
        write_1h = _rate(cache_write_1h, "cache_write_1h")
        read = _rate(cache_read, "cache_read")
        out = _rate(output, "output")
        extra = {name: _rate(value, name) for name, value in units.items()}
        request = extra.pop("request", None)
        return cls(
            input=base,
            output=Decimal(0) if out is None else out,
            cache_read=base if read is None else read,
            cache_write=write,
            cache_write_1h=write if write_1h is None else write_1h,
            request=Decimal(0) if request is None else request,
            **extra,
        )

    def with_fallbacks(self, fallbacks: Mapping[str, Decimal]) -> Rates:
        """These rates, with the unknown (``None``) audio, image and call-fee rates taken from
        ``fallbacks`` (the providers' published prices) where it has them."""
        missing = {k: v for k, v in fallbacks.items() if getattr(self, k, 0) is None}
        return dataclasses.replace(self, **missing) if missing else self  # type: ignore[arg-type]

    def cost_nano(self, usage: Usage, model: str = "this model") -> int:
        """Exact cost of ``usage`` (its passes aside) in nano-USD, rounded up."""
        return -(-self.scaled(usage, model) // self._den)

    def scaled(self, usage: Usage, model: str = "this model") -> int:
        """The cost of ``usage`` (its passes aside) in nano-USD times ``self._den``, exact."""
        n_in, n_read, n_write, n_write_1h, n_out = self._nums
        scaled = (
            usage.input_tokens * n_in + usage.cache_read_tokens * n_read + usage.cache_write_tokens * n_write
            + usage.cache_write_1h_tokens * n_write_1h + usage.output_tokens * n_out + self._request
        )  # fmt: skip
        if usage.has_units:
            counts = (
                usage.input_audio_tokens, usage.output_audio_tokens, usage.input_image_tokens,
                usage.output_image_tokens, usage.web_search_calls, usage.web_fetch_calls,
                usage.file_search_calls, usage.code_execution_sessions, usage.image_generation_calls,
            )  # fmt: skip
            for name, count, num in zip(_UNIT_NAMES, counts, self._extra, strict=True):
                if count:
                    if num is None:
                        raise _unpriced(model, name, count)
                    scaled += count * num
        return scaled

    def cost_nano_of(self, uncached: int, read: int, write: int, write_1h: int, output: int) -> int:
        """Exact cost of these bucket counts in nano-USD, rounded up (no ``Usage`` needed)."""
        n_in, n_read, n_write, n_write_1h, n_out = self._nums
        scaled = uncached * n_in + read * n_read + write * n_write + write_1h * n_write_1h + output * n_out
        return -(-(scaled + self._request) // self._den)

    def fees_nano(self, calls: Mapping[str, int], model: str = "this model") -> int:
        """The per-call fees of ``calls`` (``{"web_search": 5}``) in nano-USD, rounded up."""
        scaled = 0
        for name, count in calls.items():
            num = self._extra[len(_MODALITY_RATES) + CALL_FEES.index(name)]
            if count:
                if num is None:
                    raise _unpriced(model, _FEE_UNITS[name], count)
                scaled += count * num
        return -(-scaled // self._den)


_UNIT_NAMES = (
    "input_audio_tokens", "output_audio_tokens", "input_image_tokens", "output_image_tokens",
    *(_FEE_UNITS[name] for name in CALL_FEES),
)  # fmt: skip
_UNIT_RATE = dict(zip(_UNIT_NAMES, (*_MODALITY_RATES, *CALL_FEES), strict=True))


def _unpriced(model: str, unit: str, count: int) -> PricingError:
    rate = _UNIT_RATE[unit]
    per = "USD per million tokens" if unit.endswith("_tokens") else "USD per thousand calls"
    return PricingError(
        f"{model!r} reported {count} {unit} and no price is known for them; budgetguard never charges a "
        f"billed unit $0. Register it: budgetguard.register_price({model!r}, input=..., output=..., "
        f"{rate}=...) ({per})",
        model=model,
    )


@dataclass(frozen=True, slots=True)
class Price:
    """The price of one model: base rates, prompt-size tiers, and where the price came from."""

    model: str
    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()
    """``(threshold, rates)``: the rates apply when the total input is above ``threshold`` tokens."""
    context_window: int | None = None
    max_output_tokens: int | None = None
    source: str = "override"

    def rates_for(self, input_tokens: int) -> Rates:
        for threshold, rates in reversed(self.tiers):
            if input_tokens > threshold:
                return rates
        return self.base

    def cost_nano(self, usage: Usage, pass_price: Callable[[str], Price] | None = None) -> int:
        """Exact cost of ``usage`` in nano-USD, every unit and every pass included, rounded up once.

        A pass on the call's own model (``Pass.model`` None, a compaction) is priced here; one on
        another model (an advisor) at ``pass_price(model)``, which ``PriceBook.cost_nano`` gives at the
        call's provider and date. Without it such a pass is a ``PricingError``: a price alone does not
        know where the call went."""
        rates = self.rates_for(usage.total_input_tokens) if self.tiers else self.base
        if not usage.passes:
            return rates.cost_nano(usage, self.model)
        # Each pass at its own model's price and prompt-size tier; the sum is rounded up once.
        total = Fraction(rates.scaled(usage, self.model), rates._den)
        for extra in usage.passes:
            if extra.model is None or extra.model == self.model:
                price = self
            elif pass_price is None:
                raise PricingError(
                    f"a {extra.kind!r} pass ran on {extra.model!r}, which this price of {self.model!r} does "
                    "not cover; price the usage where the call's provider is known: "
                    f"budgetguard.price_book.cost_nano({self.model!r}, usage, provider=...)",
                    model=extra.model,
                )
            else:
                price = pass_price(extra.model)
            pass_rates = price.rates_for(extra.usage.total_input_tokens)
            scaled = pass_rates.scaled(extra.usage, price.model) - pass_rates._request  # (no request fee)
            total += Fraction(scaled, pass_rates._den)
        return math.ceil(total)

    def cost(self, usage: Usage) -> Decimal:
        return to_usd(self.cost_nano(usage))


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
        (
            "",
            {
                # https://platform.openai.com/docs/pricing#built-in-tools: web search $10.00 / 1k calls,
                "web_search": Decimal("10"),
                # file search $2.50 / 1k calls,
                "file_search": Decimal("2.5"),
                # code interpreter $0.03 per container (1 GB, the default; register larger ones),
                "code_execution": Decimal("30"),
                # image generation: gpt-image-1 at most $0.25 an image (high quality, 1024x1536).
                "image_generation": Decimal("250"),
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


def is_claude(model: str) -> bool:
    """Whether ``model`` names an Anthropic Claude model, however the endpoint spells it: ``claude-...``,
    ``anthropic/claude-...``, Bedrock's ``anthropic.claude-...`` / ``us.anthropic.claude-...``, Vertex's
    ``claude-...@date``."""
    bare = model.rsplit("/", 1)[-1]
    return bare.startswith("claude") or "anthropic.claude" in bare or model.startswith("anthropic/")


def published_prices(model: str, provider: str | None) -> dict[str, Decimal]:
    """The published prices (``PUBLISHED_PRICES``) that apply to ``model`` at ``provider`` (guessed from
    the model name when not given): the first entry whose prefix the bare model name starts with wins."""
    bare = model.rsplit("/", 1)[-1].rpartition("anthropic.")[2]  # (Bedrock: us.anthropic.claude-...)
    if provider is None:
        provider = "anthropic" if is_claude(model) else "openai"
    found: dict[str, Decimal] = {}
    for prefix, rates in PUBLISHED_PRICES.get(provider, ()):
        if bare.startswith(prefix):
            for name, rate in rates.items():
                found.setdefault(name, rate)
    return found


def _with_published(price: Price, provider: str | None) -> Price:
    published = published_prices(price.model, provider)
    if not published:
        return price
    return dataclasses.replace(
        price,
        base=price.base.with_fallbacks(published),
        tiers=tuple((t, rates.with_fallbacks(published)) for t, rates in price.tiers),
    )


def _from_genai(ref: str, provider: _gp.Provider, model: _gp.ModelInfo, mp: _gp.ModelPrice) -> Price:
    raw = {name: getattr(mp, key) for name, key in _GP_KEYS.items()}
    if raw["cache_write"] is None:
        raw["cache_write"] = mp.cache_write_5m_mtok
    if raw["input"] is None:
        raise PricingError(
            f"genai-prices prices {model.id!r} in units budgetguard does not meter ({mp}); "
            f"register a per-token price: budgetguard.register_price({ref!r}, input=..., output=...)",
            model=ref,
        )
    thresholds = sorted({t.start for v in raw.values() if isinstance(v, _gp.TieredPrices) for t in v.tiers})

    def at(threshold: int | None) -> Rates:
        picked: dict[str, Any] = {}
        for name, value in raw.items():
            if isinstance(value, _gp.TieredPrices):
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
        source=f"genai-prices {_GENAI_PRICES_VERSION}: {provider.id}/{model.id}",
    )
    return _with_published(price, provider.id)


def _has_time_of_day_prices(model: _gp.ModelInfo) -> bool:
    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    constraints += [v.constraint for v in model.price_variants or ()]
    return any(isinstance(c, _gp.TimeOfDateConstraint) for c in constraints)


_FALLBACK_PROVIDERS = ("openai", "anthropic", "google", "aws")
"""Tried in order for a model named without a provider (``aws``: Bedrock ids, ``us.anthropic.claude-...``)."""


_NS_PER_DAY = 86_400 * 10**9
_EPOCH_DAY = datetime(1970, 1, 1).toordinal()  # day numbers count from the epoch, as time_ns() // a day


def _day(at: datetime | None) -> int:
    """The UTC day number of ``at`` (now when None): a price change takes effect at UTC midnight."""
    global _today
    if at is None:
        now = time.time_ns()
        start, end, day = _today
        if start <= now < end:  # (a comparison: cheaper than dividing a 64-bit int)
            return day
        day = now // _NS_PER_DAY
        _today = (day * _NS_PER_DAY, (day + 1) * _NS_PER_DAY, day)
        return day
    at = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.date().toordinal() - _EPOCH_DAY


_today = (0, 0, 0)
"""The day the clock last read: its first nanosecond, the next day's first and its number."""


class PriceBook:
    """Prices for every model: genai-prices data, overrides, an optional default; cached lookups."""

    def __init__(self, *, default: Price | None = None, use_data: bool = True) -> None:
        self._overrides: dict[str, Price] = {}
        self._default = default
        self._use_data = use_data
        self._cache: dict[tuple[Any, ...], Price] = {}
        self._lock = threading.Lock()

    # -- configuration ------------------------------------------------------------------------

    def register(
        self,
        model: str,
        *,
        input: Money,
        output: Money | None = None,
        cache_read: Money | None = None,
        cache_write: Money | None = None,
        cache_write_1h: Money | None = None,
        tiers: Mapping[int, Mapping[str, Money]] | None = None,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        provider: str | None = None,
        **units: Money,
    ) -> Price:
        """Set the price of ``model`` in USD per million tokens; it wins over the price data.

        ``tiers`` maps an input-token threshold to the rates that apply above it, e.g.
        ``{200_000: {"input": "6", "output": "22.5"}}``. ``units`` prices the other billed units:
        ``input_audio``, ``output_audio``, ``input_image``, ``output_image`` (USD per million tokens) and
        the fees ``web_search``, ``web_fetch``, ``file_search``, ``code_execution``, ``image_generation``
        and ``request`` (USD per thousand calls). A fee not given is the provider's published price
        (``PUBLISHED_PRICES``, for ``provider``, else the one the model name suggests).
        ``context_window`` and ``max_output_tokens`` (tokens) bound a request that sets no output
        maximum; those not given are the published limits of the model the name matches
        (``budgetguard.model_limits``), if any.
        """
        if not model or not isinstance(model, str):
            raise ConfigurationError("register_price needs a model name")
        given, known = checked_limits(context_window, max_output_tokens), model_limits(model) or UNKNOWN
        price = Price(
            model=model,
            base=Rates.of(
                input=input,
                output=output,
                cache_read=cache_read,
                cache_write=cache_write,
                cache_write_1h=cache_write_1h,
                **units,
            ),
            tiers=tuple(sorted((int(t), Rates.of(**{**units, **r})) for t, r in (tiers or {}).items())),
            context_window=given.context_window or known.context_window,
            max_output_tokens=known.max_output_tokens if max_output_tokens is None else max_output_tokens,
            source="override",
        )
        price = _with_published(price, provider)
        with self._lock:
            self._overrides[model] = price
            self._cache.clear()
        return price

    def load(self, path: str | Path) -> list[Price]:
        """Load overrides from a TOML or JSON file (numbers are read as exact decimals)::

        [models."my-finetune"]
        input = 0.3
        output = 1.2
        cache_read = 0.15
        context_window = 128000
        max_output_tokens = 16384
        """
        data = read_data_file(path, "prices")
        models = data.get("models", data) if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise ConfigurationError(f'{path}: expected a table of models, e.g. [models."name"]')
        staged = PriceBook(use_data=False)  # all or nothing: a bad entry leaves this book unchanged
        loaded = []
        for name, spec in models.items():
            if not isinstance(spec, dict) or "input" not in spec:
                raise ConfigurationError(f"{path}: model {name!r} needs at least an 'input' price")
            tiers = spec.pop("tiers", None)
            try:
                loaded.append(
                    staged.register(name, tiers={int(k): v for k, v in (tiers or {}).items()}, **spec)
                )
            except (TypeError, ValueError, AttributeError) as exc:
                raise ConfigurationError(f"{path}: model {name!r}: {exc}") from exc
        with self._lock:
            self._overrides.update({price.model: price for price in loaded})
            self._cache.clear()
        return loaded

    def set_default(self, *, input: Money, output: Money | None = None, **rates: Money) -> None:
        """Charge models that no data and no override knows at this price instead of refusing them."""
        with self._lock:
            self._default = Price(
                model="*", base=Rates.of(input=input, output=output, **rates), source="default"
            )
            self._cache.clear()

    def clear_default(self) -> None:
        with self._lock:
            self._default = None
            self._cache.clear()

    def clear_overrides(self) -> None:
        with self._lock:
            self._overrides.clear()
            self._cache.clear()

    # -- lookup ---------------------------------------------------------------------------------

    def get(
        self,
        model: str,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        variant: Mapping[str, str] | None = None,
    ) -> Price:
        """The price ``model`` is charged at (now, or at the instant ``at``), or ``PricingError``.

        ``provider`` is where the call goes (genai-prices' id or alias: ``"azure"``, ``"groq"``,
        ``"aws"``); it wins over a provider prefix in the model's name. ``variant`` selects a price
        variant in the data, e.g. ``{"service_tier": "priority"}`` or ``{"processing": "batch"}``; one
        the data does not list for the model is a ``PricingError``. ``at`` is an aware datetime (its UTC
        date picks the price); a naive one is read as UTC.
        """
        variant_key = tuple(sorted(variant.items())) if variant else ()
        if at is None:
            now = time.time_ns()
            start, end, day = _today
            if not start <= now < end:  # (the day's bounds, compared: cheaper than a division)
                day = _day(None)
        else:
            at = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
            day = _day(at)
        key = (model, provider, variant_key, day)
        price = self._cache.get(key)
        if price is not None:
            return price
        price, cacheable = self._resolve(model, provider, at or datetime.now(UTC), variant)
        if cacheable:
            with self._lock:
                self._cache[key] = price
        return price

    def _resolve(
        self, model: str, provider: str | None, when: datetime, variant: Mapping[str, str] | None
    ) -> tuple[Price, bool]:
        if not isinstance(model, str) or not model:
            raise PricingError(f"model must be a non-empty string, got {model!r}", model=str(model))
        names = model_names(model)
        for name in names:
            if name in self._overrides:
                return self._overrides[name], True
        if self._use_data:
            found = _find_in_data(names, provider)
            if found is not None:
                gp_provider, gp_model = found
                if variant:
                    _check_variant(model, gp_provider, gp_model, when, variant)
                model_price = gp_model.get_prices(when, variant)
                price = _from_genai(model, gp_provider, gp_model, model_price)
                return price, not _has_time_of_day_prices(gp_model)
        if self._default is not None:
            return self._default, True
        where = "" if provider is None else f" at provider {provider!r}"
        raise PricingError(
            f"no price known for model {model!r}{where}. Register one, e.g. "
            f"budgetguard.register_price({model!r}, input='1.00', output='2.00') (USD per million "
            "tokens), load a prices file, or set a default with budgetguard.set_default_price(...)",
            model=model,
        )

    def pass_price(
        self,
        model: str,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        variant: Mapping[str, str] | None = None,
    ) -> Price:
        """The price of a pass on ``model`` (an advisor) inside a call at ``provider`` priced at
        ``variant``: the pass is billed where the call goes, on the call's date. It takes the call's
        variant when the data lists that variant for ``model`` (batch and data-residency prices cover
        the whole request), else the model's base price (``speed="fast"`` is a price of the call's
        model, not of an advisor that has none)."""
        if not variant:
            return self.get(model, provider=provider, at=at)
        day = _day(at)
        key = ("pass", model, provider, tuple(sorted(variant.items())), day)
        price = self._cache.get(key)
        if price is None:
            base = self.get(model, provider=provider, at=at)  # an unknown model is refused, never free
            try:
                price = self.get(model, provider=provider, at=at, variant=variant)
            except PricingError:
                price = base
            if (model, provider, (), day) in self._cache:  # (not a time-of-day price)
                with self._lock:
                    self._cache[key] = price
        return price

    def cost_nano(
        self,
        model: str | Price,
        usage: Usage,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        variant: Mapping[str, str] | None = None,
    ) -> int:
        """Exact cost of ``usage`` on ``model`` (a name, or the ``Price`` it was already looked up at)
        at ``provider``, ``at`` and ``variant``, in nano-USD rounded up: passes on other models (an
        advisor) are priced at the same provider and date (``pass_price``)."""
        price = (
            model if isinstance(model, Price) else self.get(model, provider=provider, at=at, variant=variant)
        )
        if not usage.passes:
            return price.cost_nano(usage)
        return price.cost_nano(
            usage, functools.partial(self.pass_price, provider=provider, at=at, variant=variant)
        )

    def cost(self, model: str | Price, usage: Usage, **lookup: Any) -> Decimal:
        """Exact cost of ``usage`` on ``model`` in USD, rounded up to a whole nano-USD (``cost_nano``)."""
        return to_usd(self.cost_nano(model, usage, **lookup))


def _find_in_data(names: list[str], provider: str | None) -> tuple[_gp.Provider, _gp.ModelInfo] | None:
    snapshot = _gp_snapshot.get_snapshot()
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


@functools.lru_cache(maxsize=256)
def provider_for_url(url: str) -> str | None:
    """The genai-prices provider id whose API a base URL belongs to (``https://api.groq.com/openai/v1``
    -> ``"groq"``, an Azure OpenAI resource -> ``"azure"``), or ``None`` for a host it does not know
    (a proxy, a local server)."""
    try:
        return _gp_snapshot.get_snapshot().find_provider(None, None, url).id
    except LookupError:
        return None


price_book = PriceBook()
"""The process-wide price book that the module-level functions and the default guard use."""


def register_price(model: str, **rates: Any) -> Price:
    """Set a model's price (USD per million tokens) in the default price book (``PriceBook.register``)."""
    return price_book.register(model, **rates)


def load_prices(path: str | Path) -> list[Price]:
    """Load price overrides from a TOML or JSON file into the default price book."""
    return price_book.load(path)


def set_default_price(*, input: Money, output: Money | None = None, **rates: Money) -> None:
    """Price unknown models at this rate instead of raising ``PricingError``."""
    price_book.set_default(input=input, output=output, **rates)


def get_price(model: str, **lookup: Any) -> Price:
    """The price the default price book charges for ``model``."""
    return price_book.get(model, **lookup)


def cost(model: str, usage: Usage, **lookup: Any) -> Decimal:
    """Actual cost of a call in USD (exact, rounded up to a nano-USD), from its normalized usage."""
    return price_book.cost(model, usage, **lookup)

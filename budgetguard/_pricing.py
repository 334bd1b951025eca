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

import functools
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib.metadata import version
from pathlib import Path
from typing import Any

from genai_prices import data_snapshot as _gp_snapshot
from genai_prices import types as _gp

from ._config import read_data_file
from ._errors import ConfigurationError, PricingError
from ._money import Money, to_usd
from ._usage import Usage

__all__ = [
    "Price",
    "PriceBook",
    "Rates",
    "cost",
    "get_price",
    "load_prices",
    "price_book",
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


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for each usage bucket."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    _nums: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _den: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = (self.input, self.cache_read, self.cache_write, self.cache_write_1h, self.output)
        # nano-USD = tokens x (USD per MTok) x 1000: hold each rate as an integer over 10**places.
        places = max(0, *(-int(v.as_tuple().exponent) for v in values))
        den = 10**places
        object.__setattr__(self, "_den", den)
        object.__setattr__(self, "_nums", tuple(int(v.scaleb(places)) * 1000 for v in values))

    @classmethod
    def of(
        cls,
        *,
        input: Money,
        output: Money | None = None,
        cache_read: Money | None = None,
        cache_write: Money | None = None,
        cache_write_1h: Money | None = None,
    ) -> Rates:
        """Rates with the usual fallbacks: cache reads and writes at the input price when not given,
        1-hour writes at the 5-minute write price, no output price for input-only models."""
        base = _rate(input, "input")
        if base is None:
            raise TypeError("an input price is required (USD per million tokens)")
        write = _rate(cache_write, "cache_write")
        write = base if write is None else write
        write_1h = _rate(cache_write_1h, "cache_write_1h")
        read = _rate(cache_read, "cache_read")
        out = _rate(output, "output")
        return cls(
            input=base,
            output=Decimal(0) if out is None else out,
            cache_read=base if read is None else read,
            cache_write=write,
            cache_write_1h=write if write_1h is None else write_1h,
        )

    def cost_nano(self, usage: Usage) -> int:
        """Exact cost of ``usage`` in nano-USD, rounded up."""
        return self.cost_nano_of(
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.cache_write_1h_tokens,
            usage.output_tokens,
        )

    def cost_nano_of(self, uncached: int, read: int, write: int, write_1h: int, output: int) -> int:
        """Exact cost of these bucket counts in nano-USD, rounded up (no ``Usage`` needed)."""
        n_in, n_read, n_write, n_write_1h, n_out = self._nums
        scaled = uncached * n_in + read * n_read + write * n_write + write_1h * n_write_1h + output * n_out
        return -(-scaled // self._den)


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

    def cost_nano(self, usage: Usage) -> int:
        rates = self.rates_for(usage.total_input_tokens) if self.tiers else self.base
        return rates.cost_nano(usage)

    def cost(self, usage: Usage) -> Decimal:
        return to_usd(self.cost_nano(usage))


# -- genai-prices conversion -------------------------------------------------------------------

_GP_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}


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

    return Price(
        model=ref,
        base=at(None),
        tiers=tuple((t, at(t)) for t in thresholds),
        context_window=model.context_window,
        source=f"genai-prices {_GENAI_PRICES_VERSION}: {provider.id}/{model.id}",
    )


def _has_time_of_day_prices(model: _gp.ModelInfo) -> bool:
    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    constraints += [v.constraint for v in model.price_variants or ()]
    return any(isinstance(c, _gp.TimeOfDateConstraint) for c in constraints)


_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-\d{4}|-latest)$")
_FALLBACK_PROVIDERS = ("openai", "anthropic", "google", "aws")
"""Tried in order for a model named without a provider (``aws``: Bedrock ids, ``us.anthropic.claude-...``)."""


_NS_PER_DAY = 86_400 * 10**9
_EPOCH_DAY = datetime(1970, 1, 1).toordinal()  # day numbers count from the epoch, as time_ns() // a day


def _names(model: str) -> list[str]:
    """``model``, then without a provider prefix, then without a date suffix."""
    names = [model]
    bare = model.rsplit("/", 1)[-1] if "/" in model else model
    for candidate in (bare, _DATE_SUFFIX.sub("", bare)):
        if candidate and candidate not in names:
            names.append(candidate)
    return names


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
    ) -> Price:
        """Set the price of ``model`` in USD per million tokens; it wins over the price data.

        ``tiers`` maps an input-token threshold to the rates that apply above it, e.g.
        ``{200_000: {"input": "6", "output": "22.5"}}``.
        """
        if not model or not isinstance(model, str):
            raise ConfigurationError("register_price needs a model name")
        price = Price(
            model=model,
            base=Rates.of(
                input=input,
                output=output,
                cache_read=cache_read,
                cache_write=cache_write,
                cache_write_1h=cache_write_1h,
            ),
            tiers=tuple(sorted((int(t), Rates.of(**r)) for t, r in (tiers or {}).items())),
            context_window=context_window,
            max_output_tokens=max_output_tokens,
            source="override",
        )
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
            self._overrides.update(staged._overrides)
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
            day = time.time_ns() // _NS_PER_DAY
        else:  # the UTC date of the instant: a price change takes effect at UTC midnight
            at = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
            day = at.date().toordinal() - _EPOCH_DAY
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
        names = _names(model)
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

    def cost(self, model: str, usage: Usage, **lookup: Any) -> Decimal:
        """Exact cost of ``usage`` on ``model`` in USD, rounded up to a whole nano-USD."""
        return self.get(model, **lookup).cost(usage)

    def cost_nano(self, model: str, usage: Usage, **lookup: Any) -> int:
        return self.get(model, **lookup).cost_nano(usage)


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

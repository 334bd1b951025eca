"""The price book: which price a model is charged at (overrides, genai-prices, a default), and its cost.

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
registered price. Where a call runs is priced apart (``_price_data.regional_premium``): a Vertex AI
location, Anthropic's US-only inference, an Azure deployment's type (``{"deployment": ...}``, which
a lookup adds where the call goes to Azure, ``provider="azure"`` however spelt or an ``azure/`` prefix:
as registered with ``deployment=``, else ``set_azure_deployment``'s, else unknown, charged as the
dearest type). ``at=`` is an instant: an aware datetime is priced at its UTC date, a naive one is read
as UTC (as genai-prices reads it).

Resolutions are cached per (model, provider, variant, day), so a lookup on the hot path is a dict hit.
Costs are exact: prices are held as integers over a power of ten, and a cost in nano-USD is rounded up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from ._cache import Bounded
from ._config import read_data_file
from ._errors import ConfigurationError, PricingError
from ._limits import UNKNOWN, checked_limits, model_limits, model_names
from ._money import Money, to_usd
from ._price_data import (
    AZURE_DEPLOYMENTS,
    PUBLISHED_PRICES,
    UNKNOWN_DEPLOYMENT,
    _check_variant,
    _find_in_data,
    _from_genai,
    _has_time_of_day_prices,
    _with_published,
    is_azure,
    is_claude,
    provider_for_url,
    published_prices,
    regional_premium,
    times,
    where_it_runs,
)
from ._rates import _TOKEN_RATES, CALL_FEES, Price, RateArgs, Rates
from ._usage import Usage

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "CALL_FEES",
    "PUBLISHED_PRICES",
    "Price",
    "PriceBook",
    "Rates",
    "cost",
    "get_price",
    "is_azure",
    "is_claude",
    "load_prices",
    "price_book",
    "published_prices",
    "provider_for_url",
    "register_price",
    "set_azure_deployment",
    "set_default_price",
]

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


class Lookup(TypedDict, total=False):
    """Where and when a call is priced, as ``PriceBook.get`` takes it."""

    provider: str | None
    at: datetime | None
    variant: Mapping[str, str] | None


class PriceBook:
    """Prices for every model: genai-prices data, overrides, an optional default; cached lookups."""

    def __init__(self, *, default: Price | None = None, use_data: bool = True) -> None:
        self._overrides: dict[str, Price] = {}
        self._deployments: dict[str, tuple[str, str]] = {}
        """Azure deployments registered with a type (``register(..., deployment=...)``): name -> (the
        model it serves, its type)."""
        self._azure_default: str | None = None
        """The type of Azure deployments registered with none (``set_azure_deployment``)."""
        self._default = default
        self._use_data = use_data
        self._cache: Bounded[tuple[Any, ...], Price] = Bounded("pricing.prices", 4096, shared=False)
        self._find = self._cache.get  # (read into a local, then called: see get)
        self._lock = threading.Lock()

    # -- configuration ------------------------------------------------------------------------

    def register(
        self,
        model: str,
        *,
        input: Money | None = None,
        tiers: Mapping[int, Mapping[str, Money]] | None = None,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        provider: str | None = None,
        base_model: str | None = None,
        deployment: str | None = None,
        **rates: Unpack[RateArgs],
    ) -> Price:
        """Set the price of ``model`` in USD per million tokens; it wins over the price data.

        ``rates`` are ``output``, ``cache_read``, ``cache_write``, ``cache_write_1h`` (``Rates.of``'s
        fallbacks apply) and the other billed units: ``input_audio``, ``output_audio``, ``input_image``,
        ``output_image`` (USD per million tokens) and the fees ``web_search``, ``web_fetch``,
        ``file_search``, ``code_execution``, ``image_generation`` and ``request`` (USD per thousand
        calls). ``tiers`` maps an input-token threshold to the rates that apply above it, e.g.
        ``{200_000: {"input": "6", "output": "22.5"}}`` (the other units' prices as the base's). A fee
        not given is the provider's published price (``PUBLISHED_PRICES``, for ``provider``, else the
        one the model name, or ``base_model``, suggests).
        ``context_window`` and ``max_output_tokens`` (tokens) bound a request that sets no output
        maximum; those not given are the published limits of the model the name matches
        (``budgetguard.model_limits``), if any.
        ``base_model`` is the model a name that is not a model's stands for (an Azure deployment:
        ``register_price("chat-prod", base_model="gpt-5.6-sol", provider="azure", ...)``): its published
        limits and fees fill what is not given, and its rules apply (OpenAI's models write the
        prompt cache unasked, so their input is reserved at the write rate where writes are dearer; a
        chat search model searches once a request). The request's tokens are counted with the tokenizer
        of the name (tiktoken's, o200k_base for a name it does not know), not of ``base_model``.

        ``deployment`` (with ``provider="azure"`` and no rates) is the type of an Azure OpenAI deployment:
        ``"global"``, ``"data_zone"`` or ``"regional"``. The name (a deployment named as its model, or
        another with ``base_model``) is then charged Azure's listed price of the model it serves, as that
        type bills it (``_price_data.regional_premium``: Data Zone 1.1x Global, Regional up to 1.375x).
        An Azure deployment registered with rates is charged them; one not registered is of
        ``set_azure_deployment``'s type, else of unknown type: charged as the dearest (Regional), which
        bounds what any type bills.
        """
        if not model or not isinstance(model, str):
            raise ConfigurationError("register_price needs a model name")
        if deployment is not None or input is None:
            named = (("input", input), ("tiers", tiers), ("context_window", context_window),
                     ("max_output_tokens", max_output_tokens))  # fmt: skip
            asked = {**rates, **{key: value for key, value in named if value is not None}}
            return self._deploy(model, deployment, provider, base_model, asked)
        if base_model is not None and (not base_model or not isinstance(base_model, str)):
            raise ConfigurationError(
                f"base_model names the model {model!r} stands for, e.g. base_model='gpt-5.6-sol'; "
                f"got {base_model!r}"
            )
        given = checked_limits(context_window, max_output_tokens)
        known = model_limits(*filter(None, (base_model, model))) or UNKNOWN
        units: dict[str, Any] = {k: v for k, v in rates.items() if k not in _TOKEN_RATES}  # (tiers take them)
        price = Price(
            model=model,
            base=Rates.of(input=input, **rates),
            tiers=tuple(sorted((int(t), Rates.of(**{**units, **r})) for t, r in (tiers or {}).items())),
            context_window=given.context_window or known.context_window,
            max_output_tokens=known.max_output_tokens if max_output_tokens is None else max_output_tokens,
            source="override",
            resolved=None if base_model == model else base_model,
        )
        price = _with_published(price, provider)
        with self._lock:
            self._overrides[model] = price
            self._deployments.pop(model, None)
            self._cache.clear()
        return price

    def _deploy(
        self, name: str, kind: str | None, provider: str | None, base: str | None, given: Mapping[str, Any]
    ) -> Price:
        """``register(name, provider="azure", deployment=kind, base_model=base)``: checked, then the price
        it resolves to now (a model the data does not list is refused, and nothing registered)."""
        if kind is None:  # (a TypeError, as a missing keyword argument is)
            raise TypeError(
                f"register_price({name!r}, ...) needs input= (USD per million tokens), e.g. "
                f"register_price({name!r}, input='1.00', output='2.00'), or, for an Azure deployment of a "
                f"model genai-prices lists, its type: provider='azure', deployment='data_zone'"
            )
        if given:
            raise ConfigurationError(
                f"register_price({name!r}, deployment={kind!r}) takes no rates ({', '.join(sorted(given))}): "
                "the deployment is charged Azure's listed price of its model at that type. To charge the "
                "rates you are billed instead, leave out deployment="
            )
        if kind not in AZURE_DEPLOYMENTS:
            raise ConfigurationError(
                f"deployment= is an Azure deployment's type, 'global', 'data_zone' or 'regional' (Global "
                f"Standard, Data Zone Standard, Standard), got {kind!r}"
            )
        if provider != "azure":
            raise ConfigurationError(
                f"deployment= types an Azure OpenAI deployment: pass provider='azure' (got {provider!r})"
            )
        if base is not None and (not base or not isinstance(base, str)):
            raise ConfigurationError(f"base_model names the model {name!r} serves; got {base!r}")
        with self._lock:  # (the last registration wins: rates registered before are forgotten)
            before, rated = self._deployments.get(name), self._overrides.pop(name, None)
            self._deployments[name] = (base or name, kind)
            self._cache.clear()
        try:
            return self.get(name, provider="azure")
        except PricingError:  # (nothing registered: what was before stands)
            with self._lock:
                if before is None:
                    del self._deployments[name]
                else:
                    self._deployments[name] = before
                if rated is not None:
                    self._overrides[name] = rated
                self._cache.clear()
            raise

    def set_azure_deployment(self, kind: str | None) -> None:
        """The type of the Azure OpenAI deployments registered with none (``register(...,
        deployment=...)`` wins): ``"global"``, ``"data_zone"`` or ``"regional"``, or ``None`` (unknown:
        charged as the dearest type, Regional). ``set_azure_deployment("global")`` when all of them are
        Global Standard deployments, the cheapest and Azure's recommended default."""
        if kind is not None and kind not in AZURE_DEPLOYMENTS:
            raise ConfigurationError(
                "set_azure_deployment takes 'global', 'data_zone' or 'regional' (or None: unknown), "
                f"got {kind!r}"
            )
        with self._lock:
            self._azure_default = kind
            self._cache.clear()

    def deployment_variant(
        self, model: str, variant: Mapping[str, str] | None, provider: str | None
    ) -> Mapping[str, str] | None:
        """``variant`` with the type of the Azure deployment ``model`` when the call goes to Azure
        (``is_azure``: ``provider="azure"``, however spelt, or an ``azure/`` prefix), as
        ``{"deployment": "data_zone"}``: as registered, else ``set_azure_deployment``'s, else
        ``UNKNOWN_DEPLOYMENT`` (the dearest). ``variant`` unchanged elsewhere, when it names a type
        already, for a Claude model (Foundry) and for a name registered with its rates (what is billed)."""
        if (
            (variant is not None and "deployment" in variant)
            or is_claude(model)
            or not is_azure(model, provider)
        ):
            return variant
        names = model_names(model)
        if any(name in self._overrides for name in names):
            return variant
        found = self._deployment(names)
        kind = found[1] if found is not None else self._azure_default or UNKNOWN_DEPLOYMENT
        return {**variant, "deployment": kind} if variant else {"deployment": kind}

    def _deployment(self, names: list[str]) -> tuple[str, str] | None:
        """The declared Azure deployment of the first of ``names`` (``model_names``): (its model, type)."""
        return next((self._deployments[name] for name in names if name in self._deployments), None)

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

    def set_default(self, *, input: Money, **rates: Unpack[RateArgs]) -> None:
        """Charge models that no data and no override knows at this price instead of refusing them."""
        with self._lock:
            self._default = Price(model="*", base=Rates.of(input=input, **rates), source="default")
            self._cache.clear()

    def clear_default(self) -> None:
        with self._lock:
            self._default = None
            self._cache.clear()

    def clear_overrides(self) -> None:
        """Forget every registered price and Azure deployment type (``set_azure_deployment`` too)."""
        with self._lock:
            self._overrides.clear()
            self._deployments.clear()
            self._azure_default = None
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
        date picks the price); a naive one is read as UTC. Where the call goes to Azure the variant takes
        the deployment's type (``deployment_variant``) unless it names one.
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
        find = self._find  # (CPython specializes this read and a bound C method's call: see _cache.Bounded)
        price = find(key)
        if price is not None:
            return price
        price, cacheable = self._resolve(model, provider, at or datetime.now(UTC), variant)
        if cacheable:
            self._cache.put(key, price)
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
            variant = self.deployment_variant(model, variant, provider)  # (at Azure: the deployment's type)
            deployed = self._deployment(names) if variant and "deployment" in variant else None
            found = _find_in_data(names if deployed is None else model_names(deployed[0]), provider)
            if found is not None:
                gp_provider, gp_model = found
                located = where_it_runs(variant)
                premium = regional_premium(gp_provider.id, model, located) if located else None
                if premium is not None and variant:  # (where it runs: its price there, the base times this)
                    variant = {k: v for k, v in variant.items() if k not in located}
                if variant:
                    _check_variant(model, gp_provider, gp_model, when, variant)
                model_price = gp_model.get_prices(when, variant or None)
                price = _from_genai(model, gp_provider, gp_model, model_price)
                if premium is not None and premium != 1 and located:  # (Azure's: its tool calls' fees too)
                    where = ", ".join(f"{key}={value}" for key, value in located.items())
                    price = times(price, premium, fees="deployment" in located)
                    price = dataclasses.replace(price, source=f"{price.source} ({where}: x{premium})")
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

    def pass_price(self, model: str, **call: Unpack[Lookup]) -> Price:
        """The price of a pass on ``model`` (an advisor) inside a call looked up at ``call`` (``get``'s
        ``provider``, ``at`` and ``variant``): the pass is billed where the call goes, on the call's
        date. It takes the call's variant when the data lists that variant for ``model`` (batch and
        data-residency prices cover the whole request), else the model's base price (``speed="fast"``
        is a price of the call's model, not of an advisor that has none: it is then priced where the call
        ran, ``LOCATION_KEYS``, as US-only inference bills the whole request)."""
        provider, at, variant = call.get("provider"), call.get("at"), call.get("variant")
        if not variant:
            return self.get(model, provider=provider, at=at)
        day = _day(at)
        key = ("pass", model, provider, tuple(sorted(variant.items())), day)
        find = self._find
        price = find(key)
        if price is None:
            base = self.get(model, provider=provider, at=at)  # an unknown model is refused, never free
            located = where_it_runs(variant)
            try:
                price = self.get(model, provider=provider, at=at, variant=variant)
            except PricingError:  # (where the call ran still prices the pass: a US-only fast call's)
                price = base
                if located and located != variant:
                    with contextlib.suppress(PricingError):
                        price = self.get(model, provider=provider, at=at, variant=located)
            if (model, provider, (), day) in self._cache:  # (not a time-of-day price)
                self._cache.put(key, price)
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

    def cost(self, model: str | Price, usage: Usage, **lookup: Unpack[Lookup]) -> Decimal:
        """Exact cost of ``usage`` on ``model`` in USD, rounded up to a whole nano-USD (``cost_nano``)."""
        return to_usd(self.cost_nano(model, usage, **lookup))


price_book = PriceBook()
"""The process-wide price book that the module-level functions and the default guard use."""


def register_price(model: str, **rates: Any) -> Price:
    """Set a model's price (USD per million tokens) in the default price book (``PriceBook.register``)."""
    return price_book.register(model, **rates)


def load_prices(path: str | Path) -> list[Price]:
    """Load price overrides from a TOML or JSON file into the default price book."""
    return price_book.load(path)


def set_default_price(*, input: Money, **rates: Unpack[RateArgs]) -> None:
    """Price unknown models at this rate instead of raising ``PricingError``."""
    price_book.set_default(input=input, **rates)


def set_azure_deployment(kind: str | None) -> None:
    """The type of the Azure OpenAI deployments registered with none, in the default price book
    (``PriceBook.set_azure_deployment``): ``"global"``, ``"data_zone"``, ``"regional"`` or ``None``."""
    price_book.set_azure_deployment(kind)


def get_price(model: str, **lookup: Unpack[Lookup]) -> Price:
    """The price the default price book charges for ``model``."""
    return price_book.get(model, **lookup)


def cost(model: str, usage: Usage, **lookup: Unpack[Lookup]) -> Decimal:
    """Actual cost of a call in USD (exact, rounded up to a nano-USD), from its normalized usage."""
    return price_book.cost(model, usage, **lookup)

"""Rates and prices: what each billed unit of one model costs, and the exact cost of a ``Usage`` at them.

A ``Rates`` holds every rate as an integer over one power of ten, so a cost is integer arithmetic,
rounded up once to a whole nano-USD. A ``Price`` is a model's base rates, prompt-size tiers and
published limits; it prices a usage's extra sampling passes too (each at its own model's price).
Where prices come from is ``_price_data``; which price a call gets is ``_pricing.PriceBook``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import TypedDict, Unpack

from ._errors import PricingError
from ._image_bill import IMAGE_PASS
from ._image_tool import rates_of
from ._limits import chat_search, writes_cache_unasked
from ._money import Money, to_usd
from ._usage import Usage

__all__ = ["CALL_FEES", "Price", "RateArgs", "Rates"]


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


class RateArgs(TypedDict, total=False):
    """The prices ``Rates.of`` (and ``register_price``) take besides ``input``: tokens in USD per
    million, ``request`` and the call fees in USD per thousand calls; ``None`` is not given."""

    output: Money | None
    cache_read: Money | None
    cache_write: Money | None
    cache_write_1h: Money | None
    input_audio: Money | None
    output_audio: Money | None
    input_image: Money | None
    output_image: Money | None
    web_search: Money | None
    web_fetch: Money | None
    file_search: Money | None
    code_execution: Money | None
    image_generation: Money | None
    request: Money | None


_RATE_ARGS = frozenset(RateArgs.__annotations__)


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
    def of(cls, *, input: Money, **rates: Unpack[RateArgs]) -> Rates:
        """Rates with the usual fallbacks: cache reads and writes at the input price when not given,
        1-hour writes at the 5-minute write price, no output price for input-only models.

        ``rates`` (``RateArgs``) takes ``output``, ``cache_read``, ``cache_write``, ``cache_write_1h``,
        ``input_audio``, ``output_audio``, ``input_image``, ``output_image`` (USD per million tokens),
        the call fees ``web_search``, ``web_fetch``, ``file_search``, ``code_execution``,
        ``image_generation`` and ``request`` (USD per thousand calls)."""
        unknown = set(rates) - _RATE_ARGS
        if unknown:
            raise TypeError(
                f"unknown price {sorted(unknown)}; known: input, output, cache_read, cache_write, "
                f"cache_write_1h, {', '.join((*_MODALITY_RATES, *CALL_FEES))}, request"
            )
        base = _rate(input, "input")
        if base is None:
            raise TypeError("an input price is required (USD per million tokens)")
        extra = {name: _rate(value, name) for name, value in rates.items()}  # type: ignore[arg-type]
        write = extra.pop("cache_write", None)
        write = base if write is None else write
        write_1h = extra.pop("cache_write_1h", None)
        read = extra.pop("cache_read", None)
        out = extra.pop("output", None)
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
    resolved: str | None = None
    """The model ``model`` names, where the name is not that model's own: the price data's id the name
    matched (Azure's ``gpt-35-turbo``: ``gpt-3.5-turbo``), or a registered name's ``base_model`` (an
    Azure deployment's, ``"chat-prod"``). The model's own rules follow it (``served``), not the name."""
    fee_premium: Decimal = Decimal(1)
    """How many times its published call fees this price's fees are where the call runs (an Azure
    deployment's type: ``_price_data.times``): a fee a request's tools set from a published one (a chat
    search's context size, a preview search) is charged this many times over too."""
    dearer_write: str | None = field(init=False, repr=False, compare=False)
    """``"5m"`` / ``"1h"`` when this is the price of a model that writes the prompt cache on its own
    (``writes_cache_unasked`` of the model ``served``: OpenAI's) and bills those writes (the 5-minute /
    1-hour rate, the dearer) above input at any tier, else ``None``. The estimate reserves such a model's
    input at the write rate, as for an Anthropic request that asks for caching; a model that writes only
    when asked (Claude, in any wire format) is reserved by what its request asks."""

    @property
    def served(self) -> str:
        """The model this price is of: the one the name resolved to (``resolved``), else the name."""
        return self.resolved or self.model

    def chat_search(self, provider: str | None) -> str | None:
        """The chat search model a call at this price at ``provider`` is of (``_limits.chat_search``): the
        name, else the model ``served`` (a deployment named otherwise; the data files
        gpt-4o-mini-search-preview under gpt-4o-mini): one search a request, at that model's OpenAI fee.
        ``None``: no chat search. The one place the estimate, the price's fee and the settlement ask."""
        return next((name for name in (self.model, self.served) if chat_search(name, provider)), None)

    def __post_init__(self) -> None:
        dearer = None
        for rates in (
            (self.base, *(rates for _, rates in self.tiers)) if writes_cache_unasked(self.served) else ()
        ):
            if max(rates.cache_write, rates.cache_write_1h) > rates.input:
                dearer = "1h" if rates.cache_write_1h > rates.cache_write else "5m"
                break
        object.__setattr__(self, "dearer_write", dearer)

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
        calls = usage.image_generation_calls
        if calls and any(extra.kind == IMAGE_PASS for extra in usage.passes):
            usage = dataclasses.replace(usage, image_generation_calls=0)  # (billed by the image pass)
        # Each pass at its own model's price and prompt-size tier; the sum is rounded up once.
        total = Fraction(rates.scaled(usage, self.model), rates._den)
        for extra in usage.passes:
            if extra.kind == IMAGE_PASS:  # the image model's tokens, at its published rates
                total += _image_charge(rates, extra.model, extra.usage, calls)
                continue
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

    def with_fees(self, fees: Mapping[str, Decimal] | tuple[tuple[str, Decimal], ...]) -> Price:
        """This price with the call fees ``fees`` (``{"web_search": Decimal(25)}``, or its items; USD per
        thousand calls) at every tier: what a request's own tools cost (a larger container, a preview
        search)."""
        if not fees:
            return self
        fees = dict(fees)
        return dataclasses.replace(
            self,
            base=dataclasses.replace(self.base, **fees),  # type: ignore[arg-type]
            tiers=tuple((t, dataclasses.replace(r, **fees)) for t, r in self.tiers),  # type: ignore[arg-type]
        )

    def cost(self, usage: Usage) -> Decimal:
        return to_usd(self.cost_nano(usage))


def _image_charge(rates: Rates, model: str | None, usage: Usage, calls: int) -> Fraction:
    """An ``image_generation`` pass: the image model's tokens at its rates, and the fee (``rates``') of
    each call its report may not cover (``usage.image_generation_calls``), the whole at most the fee
    of the response's ``calls`` (the worst case each was reserved at) and never below the report."""
    price = image_price(model)
    uncovered = usage.image_generation_calls
    tokens = dataclasses.replace(usage, image_generation_calls=0) if uncovered else usage
    pass_rates = price.rates_for(tokens.total_input_tokens)
    bill = Fraction(pass_rates.scaled(tokens, price.model) - pass_rates._request, pass_rates._den)
    if not uncovered or rates.image_generation is None:
        return bill
    fee = Fraction(rates.fees_nano({"image_generation": 1}))
    return max(bill, min(bill + uncovered * fee, calls * fee))


@functools.cache
def image_price(model: str | None) -> Price:
    """The price of an ``image_generation`` pass on the image model ``model``: its published token rates
    (``_image_tool.IMAGE_RATES``); a model without them is a ``PricingError``."""
    rates = rates_of(model) if model else None
    if rates is None:
        raise PricingError(
            f"no token rates are known for the image model {model!r}; its image generation calls are "
            "charged by the tool's fee when the response does not name a known image model",
            model=model or "",
        )
    return Price(str(model), Rates.of(**rates), source="published")

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
from collections.abc import Callable, Iterable, Mapping
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

__all__ = ["CALL_FEES", "ImageBounds", "Price", "RateArgs", "Rates"]


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
class ImageBounds:
    """A request's ``image_generation`` tool, for the calls no report covers (``_image_charge``; a
    request's, not a price to register): what one call's image model reads and writes in text,
    ``io`` (USD per thousand calls), and the prompts the calling model writes for all the calls
    together, at most ``prompts`` tokens (its output bound), read at ``rate`` (the image model's text
    input, USD per million). Each call's fee is the price's ``image_generation``."""

    io: Decimal
    prompts: int
    rate: Decimal
    _rates: Rates = field(init=False, repr=False, compare=False)
    """``rate`` as the input and ``io`` as the call fee of a ``Rates``: priced by its rules."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rates", Rates.of(input=self.rate, image_generation=self.io))

    def prompts_nano(self, tokens: int) -> Fraction:
        """``tokens`` of prompt at the image model's text input rate, exact nano-USD."""
        return Fraction(self._rates.scaled(Usage(input_tokens=tokens)), self._rates._den)

    def io_nano(self, calls: int) -> Fraction:
        """What ``calls`` calls' image model reads and writes in text, exact nano-USD."""
        return Fraction(self._rates.scaled(Usage(image_generation_calls=calls)), self._rates._den)


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
    search's context size, a preview search, an image tool's) is charged this many times over too."""
    _image: ImageBounds | None = field(default=None, kw_only=True, repr=False)
    """The request's image generation tool (set by ``with_fees``, carried by ``with_request``): what a
    call no report covers is charged by (``_image_charge``); ``None``: such a call is the
    ``image_generation`` fee."""
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
        calls, bounds = usage.image_generation_calls, self._image
        bounded = calls and bounds is not None  # (a request's image tool: its bounds)
        if not usage.passes and not bounded:
            return rates.cost_nano(usage, self.model)
        imaged = calls and any(extra.kind == IMAGE_PASS for extra in usage.passes)
        if imaged or bounded:
            usage = dataclasses.replace(usage, image_generation_calls=0)  # (billed by _image_charge)
        # Each pass at its own model's price and prompt-size tier; the sum is rounded up once.
        total = Fraction(rates.scaled(usage, self.model), rates._den)
        if bounded and not imaged:  # calls nothing else is known of (an estimate, a cut stream): uncovered
            total += _image_charge(rates, bounds, None, Usage(image_generation_calls=calls), calls)
        for extra in usage.passes:
            if extra.kind == IMAGE_PASS:  # the image model's tokens, at its published rates
                total += _image_charge(rates, bounds, extra.model, extra.usage, calls)
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

    def with_fees(
        self,
        fees: Mapping[str, Decimal] | tuple[tuple[str, Decimal], ...],
        image: ImageBounds | None = None,
    ) -> Price:
        """This price with the call fees ``fees`` (``{"web_search": Decimal(25)}``, or its items; USD per
        thousand calls) at every tier: what a request's own tools cost (a larger container, a preview
        search), and its image tool's bounds ``image`` where given."""
        if not fees and image is None:
            return self
        fees = dict(fees)
        image = self._image if image is None else image
        return dataclasses.replace(
            self,
            base=dataclasses.replace(self.base, **fees),  # type: ignore[arg-type]
            tiers=tuple((t, dataclasses.replace(r, **fees)) for t, r in self.tiers),  # type: ignore[arg-type]
            _image=image,
        )

    def with_request(self, asked: Price, fees: tuple[tuple[str, Decimal], ...]) -> Price:
        """This price (another model's or tier's, answering a request) with the request's own call
        ``fees`` and its image tool's bounds, as the price it was estimated at (``asked``) holds them."""
        return self.with_fees(fees, asked._image)

    def with_output(self, tokens: int) -> Price:
        """This price for the request with at most ``tokens`` of output (``fit=`` lowers it): its image
        tool's prompts, which the calling model writes, are at most its output bound."""
        if self._image is None or self._image.prompts == tokens:
            return self
        return dataclasses.replace(self, _image=dataclasses.replace(self._image, prompts=tokens))

    def image_prompts_nano(self, calls: Iterable[tuple[str, int]] = ()) -> int:
        """The prompts of the request's image generation calls at their bound, nano-USD rounded up (0
        without an image tool), for a reservation of ``calls`` (by fee name): reserved once a request
        that offers the tool, with its calls (``cost_nano`` charges them there: 0 here) or without
        them, where another tool's calls are the dearest of ``max_tool_calls``; none where no call can
        run (``max_tool_calls=0``: no prompt is written)."""
        bounds, counts = self._image, dict(calls)
        if bounds is None or counts.get("image_generation") or (counts and not any(counts.values())):
            return 0
        return math.ceil(bounds.prompts_nano(bounds.prompts))

    def cost(self, usage: Usage) -> Decimal:
        return to_usd(self.cost_nano(usage))


def _image_charge(
    rates: Rates, bounds: ImageBounds | None, model: str | None, usage: Usage, calls: int
) -> Fraction:
    """An ``image_generation`` pass: the image model's tokens at its rates, and what each call no report
    covers (``usage.image_generation_calls``) can have billed besides: what its image model reads and
    writes in text (``bounds.io``; its whole fee, ``rates``' ``image_generation``, when the pass holds
    no image: the items did not say it), and the prompts the report does not hold: the prompt bound
    (``bounds.prompts``, the calling model's output bound) less the pass's text input, never below 0.
    The whole is at most what the response's ``calls`` can bill (the fee of each, the prompt bound
    once: the reservation's rule, within it unless the response shows more calls than were reserved)
    and never below the report. Without the request's ``bounds`` (a usage priced alone) a call is the
    fee."""
    uncovered = usage.image_generation_calls
    tokens = dataclasses.replace(usage, image_generation_calls=0) if uncovered else usage
    bill = Fraction(0)
    if tokens != _NOTHING:  # (none: no image model's price needed)
        price = image_price(model)
        pass_rates = price.rates_for(tokens.total_input_tokens)
        bill = Fraction(pass_rates.scaled(tokens, price.model) - pass_rates._request, pass_rates._den)
    if not uncovered:
        return bill
    most = Fraction(rates.fees_nano({"image_generation": calls}))  # (an unknown fee: a PricingError)
    if bounds is None or tokens == _NOTHING:  # (no request's bounds, no image in the pass: the fee)
        each = Fraction(rates.fees_nano({"image_generation": uncovered}))
    else:
        each = bounds.io_nano(uncovered)
    if bounds is None:
        return max(bill, min(bill + each, most))
    read = tokens.input_tokens + tokens.cache_read_tokens  # (the prompts the report holds, at most)
    left = bounds.prompts_nano(max(0, bounds.prompts - read))
    return max(bill, min(bill + each + left, most + bounds.prompts_nano(bounds.prompts)))


_NOTHING = Usage()


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

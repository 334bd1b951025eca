"""The GPT image models' prices by their own published rules, and the ``image_generation`` tool's fee.

Each model is priced by its family's rule (``image_tokens``, ``image_usd``), USD per million tokens
in ``IMAGE_RATES``; a model, quality or output this module has no published rule for is ``None``
(unpriced: the caller refuses it unless a fee is configured, never $0):

* ``gpt-image-1`` / ``gpt-image-1-mini`` / ``gpt-image-1.5``: three sizes (1024x1024, 1024x1536,
  1536x1024) at low / medium / high, the image output tokens OpenAI's guide lists (``GPT_IMAGE_1_TOKENS``:
  1024x1536 high is 6,240) at the model's image output rate ($40 / $8 / $32 per million), or the
  published per-image price when it is dearer (they differ by rounding: gpt-image-1.5 1024x1536 high
  is $0.200, 6,240 tokens $0.19968);
* ``gpt-image-2`` (and its snapshot): any size within 8,294,400 pixels at low / medium / high, image
  output tokens by the rule of OpenAI's cost calculator (``gpt_image_2_tokens``: it gives the guide's
  published examples, 1024x1024 at 196 / 1,756 / 7,024 tokens = $0.006 / $0.053 / $0.211), $30 per
  million; an open size is the largest square, 2880x2880 (23,719 tokens at high, $0.712);
* ``gpt-image-2.5-*`` / ``gpt-image-2.6-*`` (sunburst, flare; the tool's default is
  ``gpt-image-2.6-sunburst``): $30 per million image output tokens, as gpt-image-2 (their model
  pages); their token counts are not published: gpt-image-2's rule is assumed at low / medium /
  high. ``xhigh`` and ``max`` (gpt-image-2.5's) have no published count: unpriced;
* ``chatgpt-image-latest`` (an alias whose target moves): the dearer of gpt-image-1.5's and
  gpt-image-2's rules;
* a GIF (``output_format="gif"``) is ``frame_count`` frames (2 to 16, default 9), each priced as one
  image; SVG output is written by a text model whose tokens are not known here: unpriced;
* each partial image (``partial_images``, 0 to 3, open: 3) adds 100 image output tokens, as OpenAI
  documents for gpt-image-1 (assumed the same for the others).

A tool's fee (``image_generation_fee``) is the most one call may bill but its prompt, the dearest of
what it leaves open (``"auto"`` or absent): its images, and what the image model reads and writes in
text (``image_model_io``):

* each image of the request it may edit (the tool's ``input_image_mask`` too) at the model's image
  input rate, by gpt-image-1's published rule (assumed for the others): the image scaled into 2048x2048,
  then its shortest side to 512, 65 tokens and 129 a 512 tile (at most 4: ``INPUT_IMAGE_TOKENS``), and
  at high input fidelity 4,096 more for a square image, 6,144 for another (``HIGH_FIDELITY_TOKENS``:
  the dearer, the image's shape not being known). Fidelity is high when the tool asks
  (``input_fidelity="high"``) on gpt-image-1 / -1.5, always on gpt-image-2 and later (they take no
  low), never on gpt-image-1-mini (it takes no high);
* its text output (the planning gpt-image-2 and later write before drawing, ``output_tokens_details.
  text_tokens``): no bound is published; ``IMAGE_TEXT_OUTPUT_TOKENS`` a call (calibrated: twice the
  most reported, 4,000 at ``complexity="high"``), at the text output rate. gpt-image-1 / -mini / -1.5
  write none (their usage's ``output_tokens`` is "the number of image tokens in the output image").

The prompts are a request's, not a call's: the calling model writes every call's prompt, all of
them together at most its output bound, read at the image model's text input rate
(``image_generation_bounds``), reserved once a request that offers the tool, over the fee of each call.

A response that reports the image model's tokens (``tool_usage.image_gen``) is charged them
(``_image_bill``); a call no report covers, what it can have billed (``_rates._image_charge``): its
image, what its image model reads and writes in text, and the prompts the report does not hold (the
prompt bound less the report's text input).

Not reserved (a known gap): images in server-side history. A request continuing a response
(``previous_response_id``) or a conversation (``conversation``) can have the tool edit images that
history holds (input images, earlier ``image_generation_call`` results), which the image model reads
at its image input rate, up to 6,725 tokens each at high fidelity ($0.054 on gpt-image-2). Only the
images in the request's own ``input`` are counted (``_passes.count_images``): the calling model's
input is reserved at its bound (``Estimate.unseen``), but the image model's is not, so such a call's
report can be charged above its reservation (an overrun, flagged). Bound it with a registered fee
(``register_price(..., image_generation=...)``, reserved when dearer) or by sending the images.

Not reserved (a known gap): the chat the image model may read. That it reads only a prompt the calling
model writes, bounded by that model's output bound, is this module's premise, which OpenAI does not
document; forum reports (community.openai.com/t/1370457) say the tool may hand the image model the
conversation and its images. Where it does, a report is charged what it says (above the reservation:
an overrun, flagged), but a call no report covers is charged by the premise: a request with 20,000
input tokens and ``max_output_tokens=1000`` is charged 1,000 prompt tokens for its call ($0.005 on
gpt-image-2), not the 20,000 it may have read (~$0.10). A registered fee bounds it, as above.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "GPT_IMAGE_1",
    "IMAGE_RATES",
    "gpt_image_2_tokens",
    "image_family",
    "image_generation_bounds",
    "image_generation_fee",
    "image_tokens",
    "image_usd",
]

DEFAULT_IMAGE_MODEL = "gpt-image-2.6-sunburst"
"""The ``image_generation`` tool's model when the request names none (the openai SDK's documentation)."""

_D = Decimal
IMAGE_RATES: Mapping[str, Mapping[str, Decimal]] = {
    # USD per million tokens: text input, cached text input, text output, image input, image output.
    # https://platform.openai.com/docs/models/gpt-image-1: $5 / $1.25 text, $10 image in, $40 out (its
    # text output is not published: at the image output rate)
    "gpt-image-1": {"input": _D(5), "cache_read": _D("1.25"), "output": _D(40), "input_image": _D(10),
                    "output_image": _D(40)},
    # https://platform.openai.com/docs/models/gpt-image-1-mini: $2 / $0.20 text, $2.50 image in, $8 out
    "gpt-image-1-mini": {"input": _D(2), "cache_read": _D("0.2"), "output": _D(8), "input_image": _D("2.5"),
                         "output_image": _D(8)},
    # https://platform.openai.com/docs/models/gpt-image-1.5: $5 / $1.25 / $10 text, $8 image in, $32 out
    "gpt-image-1.5": {"input": _D(5), "cache_read": _D("1.25"), "output": _D(10), "input_image": _D(8),
                      "output_image": _D(32)},
    # https://developers.openai.com/api/docs/models/gpt-image-2 (and gpt-image-2.6-sunburst's page,
    # gpt-image-2.5's "same token rates"): $5 / $1.25 text, $8 image in, $30 image out; text out $10
    "gpt-image-2": {"input": _D(5), "cache_read": _D("1.25"), "output": _D(10), "input_image": _D(8),
                    "output_image": _D(30)},
}  # fmt: skip
"""Each image model family's token rates (``Rates.of`` keywords), by ``image_family``."""

_QUALITIES = ("low", "medium", "high")
_SIZES = ("1024x1024", "1024x1536", "1536x1024")
GPT_IMAGE_1_TOKENS: Mapping[str, Mapping[str, int]] = {
    # https://platform.openai.com/docs/guides/image-generation#cost-and-latency (gpt-image-1, -mini, -1.5)
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
GPT_IMAGE_1: Mapping[str, Mapping[str, Decimal]] = {
    # https://platform.openai.com/docs/models/gpt-image-1 (image generation, per image)
    "low": {"1024x1024": _D("0.011"), "1024x1536": _D("0.016"), "1536x1024": _D("0.016")},
    "medium": {"1024x1024": _D("0.042"), "1024x1536": _D("0.063"), "1536x1024": _D("0.063")},
    "high": {"1024x1024": _D("0.167"), "1024x1536": _D("0.25"), "1536x1024": _D("0.25")},
}
"""gpt-image-1's published price of one image (USD), by quality and size."""
_PER_IMAGE: Mapping[str, Mapping[str, Mapping[str, Decimal]]] = {
    "gpt-image-1": GPT_IMAGE_1,
    # https://platform.openai.com/docs/models/gpt-image-1-mini (per image)
    "gpt-image-1-mini": {
        "low": {"1024x1024": _D("0.005"), "1024x1536": _D("0.006"), "1536x1024": _D("0.006")},
        "medium": {"1024x1024": _D("0.011"), "1024x1536": _D("0.015"), "1536x1024": _D("0.015")},
        "high": {"1024x1024": _D("0.036"), "1024x1536": _D("0.052"), "1536x1024": _D("0.052")},
    },
    # https://platform.openai.com/docs/models/gpt-image-1.5 (per image)
    "gpt-image-1.5": {
        "low": {"1024x1024": _D("0.009"), "1024x1536": _D("0.013"), "1536x1024": _D("0.013")},
        "medium": {"1024x1024": _D("0.034"), "1024x1536": _D("0.051"), "1536x1024": _D("0.050")},
        "high": {"1024x1024": _D("0.133"), "1024x1536": _D("0.2"), "1536x1024": _D("0.2")},
    },
}
_QUALITY_FACTORS = {"low": 16, "medium": 48, "high": 96}
_MAX_PIXELS = 8_294_400
"""gpt-image-2's largest image (its sizes: edges multiples of 16, at most 3840, ratio at most 3:1)."""
_LARGEST_SQUARE = "2880x2880"  # (2880 x 2880 = _MAX_PIXELS: the dearest shape at any quality)
_PARTIAL_TOKENS = 100
INPUT_IMAGE_TOKENS = 65 + 4 * 129
"""The most one input image is, at low input fidelity (gpt-image-1's rule: 65 and 129 a tile, 4 at most)."""
HIGH_FIDELITY_TOKENS = 6144
"""What high input fidelity adds to one input image, at most (4,096 square, 6,144 another shape)."""
IMAGE_TEXT_OUTPUT_TOKENS = 8000
"""The text one image generation call writes, at most: calibrated (no bound is published)."""
_MAX_PARTIALS = 3
_FRAMES = (2, 16, 9)  # a GIF's frame_count: least, most, default
_LATEST_TARGETS = ("gpt-image-1.5", "gpt-image-2")
"""The models ``chatgpt-image-latest`` may be (priced at the dearer of their rules: ``_dearer``)."""
_RATE_NAMES = ("input", "cache_read", "output", "input_image", "output_image")
_T = TypeVar("_T")
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_OPEN_QUALITY: Mapping[str, tuple[str, ...]] = {"gpt-image-2.5": (*_QUALITIES, "xhigh", "max")}
"""The qualities ``"auto"`` may pick, where a model has more than low / medium / high."""


def image_family(model: str) -> str | None:
    """The rule ``model`` is priced by: a key of ``IMAGE_RATES``, ``"gpt-image-2.5"`` / ``"gpt-image-2.6"``
    (gpt-image-2's rates), ``"chatgpt-image-latest"``, or ``None`` for a model not known here."""
    name = _SNAPSHOT.sub("", model)
    if name in IMAGE_RATES or name == "chatgpt-image-latest":
        return name
    for family in ("gpt-image-2.5", "gpt-image-2.6"):
        if name.startswith(family + "-"):
            return family
    return None


def rates_of(model: str) -> Mapping[str, Decimal] | None:
    """``model``'s token rates (USD per million, ``Rates.of`` keywords), ``None`` if not known here."""
    family = image_family(model)
    if family == "chatgpt-image-latest":  # (either target: the dearer rate of each)
        return {name: max(IMAGE_RATES[target][name] for target in _LATEST_TARGETS) for name in _RATE_NAMES}
    if family in ("gpt-image-2.5", "gpt-image-2.6"):
        family = "gpt-image-2"
    return None if family is None else IMAGE_RATES[family]


def gpt_image_2_tokens(quality: str, width: int, height: int) -> int:
    """gpt-image-2's image output tokens for one image: OpenAI's cost calculator's rule."""
    factor = _QUALITY_FACTORS[quality]
    long_edge, short_edge = max(width, height), min(width, height)
    short_factor = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return -(-factor * short_factor * (2_000_000 + width * height) // 4_000_000)


def image_tokens(model: str, quality: Any, size: Any) -> int | None:
    """One image's output tokens on ``model`` at ``quality`` and ``size`` (both as given: ``None`` or
    ``"auto"`` is open, the dearest), by the model's rule; ``None`` when no rule is known."""
    priced = _one_image(model, quality, size)
    return None if priced is None else priced[0]


def image_usd(model: str, quality: Any, size: Any) -> Decimal | None:
    """The most one image on ``model`` at ``quality`` and ``size`` bills (USD): its tokens at the
    model's rate, or its published per-image price when dearer; ``None`` when no rule is known."""
    priced = _one_image(model, quality, size)
    return None if priced is None else priced[1]


def _one_image(model: str, quality: Any, size: Any) -> tuple[int, Decimal] | None:
    family = image_family(model)
    if family is None:
        return None
    if family == "chatgpt-image-latest":
        found = [_one_image(name, quality, size) for name in _LATEST_TARGETS]
        return _dearer(found, lambda one: one[1])
    qualities = _OPEN_QUALITY.get(family, _QUALITIES) if quality in (None, "auto") else (quality,)
    if any(q not in _QUALITIES for q in qualities):
        return None  # (xhigh, max: no published count)
    rate = rates_of(model)["output_image"]  # type: ignore[index]
    best: tuple[int, Decimal] | None = None
    if family.startswith("gpt-image-1"):
        sizes = (size,) if size in _SIZES else _SIZES  # (another size is refused by OpenAI: the dearest)
        for q in qualities:
            for s in sizes:
                tokens = GPT_IMAGE_1_TOKENS[q][s]
                usd = max(tokens * rate / 1_000_000, _PER_IMAGE[family][q][s])
                best = max(best or (tokens, usd), (tokens, usd), key=lambda one: one[1])
        return best
    width, height = _dimensions(size) or _dimensions(_LARGEST_SQUARE)  # type: ignore[misc]
    tokens = max(gpt_image_2_tokens(q, width, height) for q in qualities)
    return tokens, tokens * rate / 1_000_000


def frames(tool: Mapping[str, Any]) -> int:
    """The images one call of ``tool`` renders: a GIF's ``frame_count`` (open: its default, 9; out of
    range: the most, 16), else 1."""
    if tool.get("output_format") != "gif":
        return 1
    count, (least, most, default) = tool.get("frame_count"), _FRAMES
    if count is None:
        return default
    return count if type(count) is int and least <= count <= most else most


def image_generation_fee(tool: Mapping[str, Any], images: int = 0) -> Decimal | None:
    """The most one call of the ``image_generation`` ``tool`` bills but its prompt, USD per thousand
    calls, in a request showing ``images`` images (``image_model_io``); ``None`` when its model,
    quality or output format has no price known here. The prompts are a request's, not a call's
    (``image_generation_bounds``)."""
    model = tool.get("model") or DEFAULT_IMAGE_MODEL
    if not isinstance(model, str) or tool.get("output_format") == "svg":
        return None
    if image_family(model) == "chatgpt-image-latest":  # (each target at its own rates)
        fees = [image_generation_fee({**tool, "model": name}, images) for name in _LATEST_TARGETS]
        return _dearer(fees, lambda fee: fee)
    one = image_usd(model, tool.get("quality"), tool.get("size"))
    if one is None:
        return None
    rate = rates_of(model)["output_image"]  # type: ignore[index]
    usd = one * frames(tool) + _partials(tool, _MAX_PARTIALS) * _PARTIAL_TOKENS * rate / 1_000_000
    usd += image_model_io(model, tool, images)
    fee = usd * 1000
    return fee.quantize(Decimal(1)) if fee == fee.to_integral_value() else fee.normalize()


def image_generation_bounds(tool: Mapping[str, Any], images: int) -> tuple[Decimal, Decimal]:
    """What a call of ``tool`` that no report covers is charged by, besides its fee
    (``_rates._image_charge``): what its image model reads and writes in text (``image_model_io``, USD
    per thousand calls: a call whose image the response shows), and the image model's text input
    rate (USD per million), at which the prompts the calling model writes are priced: all of them
    together at most its output bound, a request's, not a call's. The dearest target of
    ``chatgpt-image-latest`` for each; ``tool`` has a known price (``image_generation_fee`` not
    ``None``)."""
    model = tool.get("model") or DEFAULT_IMAGE_MODEL
    targets = _LATEST_TARGETS if image_family(model) == "chatgpt-image-latest" else (model,)
    io = max(image_model_io(name, tool, images) for name in targets) * 1000
    return io.normalize(), max(rates_of(name)["input"] for name in targets)  # type: ignore[index]


def image_model_io(model: str, tool: Mapping[str, Any], images: int) -> Decimal:
    """The most the image model ``model`` (not ``chatgpt-image-latest``) bills in one call of ``tool``
    for what it reads (``images`` images of the request) and writes in text, its prompt aside (USD;
    the module docstring)."""
    rates, family = rates_of(model), image_family(model)
    assert rates is not None  # (a priced model)
    assert family is not None
    high = family != "gpt-image-1-mini" and (
        tool.get("input_fidelity") == "high" or not family.startswith("gpt-image-1")
    )
    images += 1 if tool.get("input_image_mask") is not None else 0
    per_image = INPUT_IMAGE_TOKENS + (HIGH_FIDELITY_TOKENS if high else 0)
    usd = images * per_image * rates["input_image"]
    if not family.startswith("gpt-image-1"):  # (gpt-image-1's output is its image: its usage's doc)
        usd += IMAGE_TEXT_OUTPUT_TOKENS * rates["output"]
    return usd / 1_000_000


def partial_tokens(tool: Mapping[str, Any]) -> int:
    """The image output tokens of the partial images one call of ``tool`` streams (as echoed in a
    response: absent is none)."""
    return _partials(tool, 0) * _PARTIAL_TOKENS


def _partials(tool: Mapping[str, Any], absent: int) -> int:
    """The partial images one call of ``tool`` streams: its ``partial_images`` (0 to 3), ``absent``
    when it names none, the most (3) when it names another value."""
    partials = tool.get("partial_images")
    if partials is None:
        return absent
    return partials if type(partials) is int and 0 <= partials <= _MAX_PARTIALS else _MAX_PARTIALS


def _dearer(found: Sequence[_T | None], cost: Callable[[_T], Decimal]) -> _T | None:
    """``chatgpt-image-latest``'s price of something: the dearer of its targets' (``found``, in
    ``_LATEST_TARGETS`` order); ``None`` when either has none."""
    known = [one for one in found if one is not None]
    return max(known, key=cost) if len(known) == len(found) else None


def _dimensions(size: Any) -> tuple[int, int] | None:
    """``"1536x1024"`` as (1536, 1024); ``None`` for ``"auto"``, no size, or one beyond gpt-image-2's
    largest (refused by OpenAI; reserved at the largest)."""
    if not isinstance(size, str):
        return None
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) * int(height) > _MAX_PIXELS:
        return None
    return int(width), int(height)

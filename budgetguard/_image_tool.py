"""The Responses ``image_generation`` tool's fee: the most one call may bill, by the tool's fields.

The response's usage does not count the image model's tokens, so a call is reserved and charged a fee
per ``image_generation_call``, the worst of what the tool names (its ``model``, ``size``, ``quality``
and ``partial_images``), the dearest of what it leaves open (``"auto"`` or absent):

* ``gpt-image-1`` / ``gpt-image-1-mini`` (the mini is cheaper): OpenAI's published per-image prices
  of gpt-image-1 (``GPT_IMAGE_1``), at most $0.25 (high, 1024x1536);
* any other model (``gpt-image-2``, the tool's default now that gpt-image-1 is retired, and the models
  whose prices are not known here): gpt-image-2's image output tokens at $30 per million, by the token
  rule of OpenAI's cost calculator (``gpt_image_2_tokens``: it gives the guide's published examples,
  1024x1024 at 196 / 1,756 / 7,024 tokens = $0.006 / $0.053 / $0.211 low / medium / high; the rule
  itself is read off the calculator, not published). gpt-image-2 takes any size within 8,294,400
  pixels, so an open size is the largest square, 2880x2880: 23,719 tokens at high, $0.712;
* each partial image (``partial_images``, 0 to 3, open: 3) adds 100 image output tokens, as OpenAI
  documents for gpt-image-1 (gpt-image-2: assumed the same).

The image model's input (the prompt it is given, input images it edits) is not counted here.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["GPT_IMAGE_1", "gpt_image_2_tokens", "image_generation_fee"]

GPT_IMAGE_1: Mapping[str, Mapping[str, Decimal]] = {
    # https://platform.openai.com/docs/models/gpt-image-1 (image generation, per image)
    "low": {"1024x1024": Decimal("0.011"), "1024x1536": Decimal("0.016"), "1536x1024": Decimal("0.016")},
    "medium": {"1024x1024": Decimal("0.042"), "1024x1536": Decimal("0.063"), "1536x1024": Decimal("0.063")},
    "high": {"1024x1024": Decimal("0.167"), "1024x1536": Decimal("0.25"), "1536x1024": Decimal("0.25")},
}
"""gpt-image-1's published price of one image (USD), by quality and size."""
_GPT_IMAGE_1_OUTPUT = Decimal(40)
"""USD per million image output tokens of gpt-image-1 (a partial image's 100 tokens)."""
_GPT_IMAGE_2_OUTPUT = Decimal(30)
"""USD per million image output tokens of gpt-image-2 (https://platform.openai.com/docs/pricing)."""
_QUALITY_FACTORS = {"low": 16, "medium": 48, "high": 96}
_MAX_PIXELS = 8_294_400
"""gpt-image-2's largest image (its sizes: edges multiples of 16, at most 3840, ratio at most 3:1)."""
_LARGEST_SQUARE = (2880, 2880)  # (2880 x 2880 = _MAX_PIXELS: the dearest shape at any quality)
_PARTIAL_TOKENS = 100
_MAX_PARTIALS = 3


def gpt_image_2_tokens(quality: str, width: int, height: int) -> int:
    """gpt-image-2's image output tokens for one image: OpenAI's cost calculator's rule."""
    factor = _QUALITY_FACTORS[quality]
    long_edge, short_edge = max(width, height), min(width, height)
    short_factor = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return -(-factor * short_factor * (2_000_000 + width * height) // 4_000_000)


def image_generation_fee(tool: Mapping[str, Any]) -> Decimal:
    """The most one call of the ``image_generation`` ``tool`` bills, USD per thousand calls."""
    quality, size = tool.get("quality"), tool.get("size")
    qualities = (quality,) if quality in _QUALITY_FACTORS else ("high",)  # (auto: the dearest)
    partials = tool.get("partial_images")
    if isinstance(partials, bool) or not isinstance(partials, int) or not 0 <= partials <= _MAX_PARTIALS:
        partials = _MAX_PARTIALS
    if tool.get("model") in ("gpt-image-1", "gpt-image-1-mini"):
        tables = [GPT_IMAGE_1[q] for q in qualities]
        usd = max(usd for table in tables for s, usd in table.items() if size not in table or s == size)
        usd += partials * _PARTIAL_TOKENS * _GPT_IMAGE_1_OUTPUT / 1_000_000
    else:
        width, height = _dimensions(size) or _LARGEST_SQUARE
        tokens = max(gpt_image_2_tokens(q, width, height) for q in qualities) + partials * _PARTIAL_TOKENS
        usd = tokens * _GPT_IMAGE_2_OUTPUT / 1_000_000
    fee = usd * 1000
    return fee.quantize(Decimal(1)) if fee == fee.to_integral_value() else fee.normalize()


def _dimensions(size: Any) -> tuple[int, int] | None:
    """``"1536x1024"`` as (1536, 1024); ``None`` for ``"auto"``, no size, or one beyond gpt-image-2's
    largest (refused by OpenAI; reserved at the largest)."""
    if not isinstance(size, str):
        return None
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) * int(height) > _MAX_PIXELS:
        return None
    return int(width), int(height)

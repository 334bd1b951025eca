"""What a Responses API response says its ``image_generation`` calls billed: the image model's tokens.

A response reports the image model's usage apart from its own (``tool_usage.image_gen``: text and
image input, cached input, text and image output, summed over the calls) and each call's size and
quality (its ``image_generation_call`` items); the model is the one its echoed ``image_generation``
tool names (the tool's default when it names none). ``image_bill`` turns that into the token counts
of one ``Usage`` on the image model, priced at its published rates (``_image_tool.IMAGE_RATES``):

* the reported counts, with the image output at least what the items' sizes and qualities come to by
  the model's rule (``tool_usage`` may skip a call whose usage record is missing); where the report
  falls short of the items' images (their partial images apart, which a report may leave out) by at
  least the smallest of them, a call for each such image (all but one at most) is uncovered, as
  ``image_generation_calls`` of the pass: ``_rates._image_charge`` charges what it can have billed
  besides (what its image model reads and writes in text, the prompts the report does not hold), the
  whole at most what every call can bill, and never less than the report; items that do not say their
  size and quality leave the report trusted. Cached image input at the image input rate (a ``Usage`` has one
  cached-input bucket: the cached text's), counts without their text / image split at the image
  rates (the dearer);
* without reported counts, every call uncovered: the items' image output tokens by the model's rule
  (and the partial images the tool streamed) when every item says its size and quality, else none
  (each call's image is then charged at the tool's worst case);
* for a tool with no known worst case (``image_generation_fee`` None: a quality or output this module
  has no rule for, on a model whose rates are known), the report with every call as uncovered: the
  registered fee of every call (its reservation), or the report where it says more (an overrun);
* nothing (``None``: the caller charges the tool's fee per call) when a tool with no known worst case
  has no report, or the response's image model's rates are not known here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._counts import checked
from ._errors import UsageError
from ._image_tool import (
    DEFAULT_IMAGE_MODEL,
    frames,
    image_generation_fee,
    image_tokens,
    partial_tokens,
    rates_of,
)

__all__ = ["IMAGE_PASS", "image_bill"]

IMAGE_PASS = "image_generation"
"""The kind of the ``Pass`` that holds the image model's tokens (``Usage.passes``)."""

_TOOL_FIELDS = ("model", "quality", "size", "output_format", "frame_count", "partial_images")


def image_bill(
    get: Callable[[Any, str], Any], tool_usage: Any, output: Sequence[Any], tools: Any
) -> tuple[str, dict[str, int]] | None:
    """The image model and its ``Usage`` counts for a response's image generation calls (``get`` reads
    a field of an SDK object or a dict), or ``None`` when the response does not say them."""
    items = [item for item in output if get(item, "type") == "image_generation_call"]
    tool = next((t for t in tools or () if get(t, "type") == "image_generation"), None)
    if not items or tool is None:
        return None
    echoed = {name: get(tool, name) for name in _TOOL_FIELDS}
    model = echoed["model"] or DEFAULT_IMAGE_MODEL
    if not isinstance(model, str):
        return None
    reported = get(tool_usage, "image_gen")
    counts = _reported(get, reported) if reported is not None else None
    if image_generation_fee({**echoed, "model": model}) is None:  # (no worst case known)
        if counts is None or rates_of(model) is None:
            return None  # (the fee, the user's bound, is charged)
        counts["image_generation_calls"] = len(items)  # (at least every call's fee; above it, an overrun)
        return model, counts
    images: list[int] | None = []  # (each item's image tokens by the rule, its partial images apart)
    for item in items:
        quality, size = get(item, "quality"), get(item, "size")
        tokens = None if "auto" in (quality, size) else image_tokens(model, quality, size)
        if tokens is None or quality is None or size is None:
            images = None  # (an item that does not say what it rendered: no lower bound from the items)
            break
        images.append(tokens * frames(echoed))  # type: ignore[union-attr]
    ruled = None if images is None else sum(images) + len(images) * partial_tokens(echoed)
    if counts is None:  # (every call uncovered: its image by the items, else the tool's worst case)
        return model, {"output_image_tokens": ruled or 0, "image_generation_calls": len(items)}
    if images is not None and len(images) > 1:
        # a call the report skips (its record missing) is charged its fee too (all at most theirs): one
        # for each of the smallest image the report falls short of the items' images (not a partial
        # image the report leaves out); without the items' sizes, the report is trusted
        short = (sum(images) - counts["output_image_tokens"]) // min(images)
        if short > 0:
            counts["image_generation_calls"] = min(short, len(images) - 1)
    counts["output_image_tokens"] = max(counts["output_image_tokens"], ruled or 0)
    return model, counts


def _reported(get: Callable[[Any, str], Any], usage: Any) -> dict[str, int] | None:
    """``tool_usage.image_gen`` as ``Usage`` counts; ``None`` (no
    report) when it reports nothing, or a count is missing or not a non-negative int (the rule of every
    reported count, ``_counts.checked``: the image is then charged by the items, else the fee)."""

    def count(obj: Any, name: str, required: bool = False) -> int:
        return checked(None if obj is None else get(obj, name), name, obj, required=required)

    try:
        total_in, total_out = count(usage, "input_tokens", True), count(usage, "output_tokens", True)
        details = get(usage, "input_tokens_details")  # (without the split, all input is image input)
        image_in = min(count(details, "image_tokens"), total_in) if details is not None else total_in
        cached = min(count(get(usage, "cached_tokens_details"), "cached_text_tokens"), total_in - image_in)
        out_details = get(usage, "output_tokens_details")
        # (without the split, all output is image output: the dearer rate)
        text_out = min(count(out_details, "text_tokens"), total_out) if out_details is not None else 0
    except UsageError:
        return None
    if not (total_in or total_out):  # (a response without image calls reports zeros)
        return None
    return {
        "input_tokens": total_in - image_in - cached,
        "cache_read_tokens": cached,
        "input_image_tokens": image_in,
        "output_tokens": text_out,
        "output_image_tokens": total_out - text_out,
    }

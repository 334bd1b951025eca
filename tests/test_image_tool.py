"""The Responses ``image_generation`` tool's fee: reserved (and charged) at the most one call of the tool
as the request configures it may bill, the dearest of what it leaves open."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import budgetguard
from budgetguard import PriceBook, Usage, estimate
from budgetguard._image_tool import gpt_image_2_tokens, image_generation_fee


def test_the_token_rule_gives_openais_published_examples() -> None:
    # OpenAI's image generation guide: gpt-image-2 at 1024x1024 $0.006 / $0.053 / $0.211 (low / medium /
    # high), 1536x1024 high $0.165, at $30 per million image output tokens
    usd = [gpt_image_2_tokens(q, 1024, 1024) * Decimal(30) / 10**6 for q in ("low", "medium", "high")]
    assert [round(u, 3) for u in usd] == [Decimal("0.006"), Decimal("0.053"), Decimal("0.211")]
    assert round(gpt_image_2_tokens("high", 1536, 1024) * Decimal(30) / 10**6, 3) == Decimal("0.165")


def test_an_open_tool_is_reserved_at_gpt_image_2s_largest_high_image() -> None:
    """The old $0.25 (gpt-image-1's dearest) was below what one gpt-image-2 call can bill: a high
    quality image of its largest area, 2880x2880, is 23,719 image tokens, $0.71 at $30 / M."""
    largest = gpt_image_2_tokens("high", 2880, 2880)
    assert largest == 23_719 and largest * Decimal(30) / 10**6 > Decimal("0.25")
    open_fee = image_generation_fee({"type": "image_generation"})
    assert open_fee == (largest + 3 * 100) * Decimal(30) / 1000  # (3 partial images of 100 tokens)
    assert open_fee == image_generation_fee({"quality": "auto", "size": "auto", "model": "gpt-image-2"})
    assert budgetguard.published_prices("gpt-5", "openai")["image_generation"] == open_fee
    for other in (3840, 2160), (2048, 2048), (3840, 1280), (1024, 1536):
        assert gpt_image_2_tokens("high", *other) < largest


@pytest.mark.parametrize(
    ("tool", "usd"),
    [
        ({"quality": "low", "partial_images": 0}, (659 * 30, 10**6)),  # (2880x2880 at low)
        ({"quality": "high", "size": "1024x1024", "partial_images": 0}, (7024 * 30, 10**6)),
        ({"quality": "medium", "size": "1536x1024", "partial_images": 2}, ((1372 + 200) * 30, 10**6)),
        ({"model": "gpt-image-1"}, (250 + 12, 1000)),  # its dearest image and 3 partials at $40 / M
        (
            {"model": "gpt-image-1-mini", "quality": "low", "size": "1024x1024", "partial_images": 0},
            (11, 10**3),
        ),
        ({"model": "gpt-image-1", "size": "1024x1024", "partial_images": 0}, (167, 1000)),
        ({"model": "gpt-image-1.5"}, (24_019 * 30, 10**6)),  # (no price known here: gpt-image-2's dearest)
    ],
)
def test_a_tool_is_reserved_at_what_it_names(tool: dict[str, Any], usd: tuple[int, int]) -> None:
    assert image_generation_fee(tool) == Decimal(usd[0]) * 1000 / usd[1]


def responses(*tools: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "gpt-5",
        "input": "Draw an axolotl.",
        "max_output_tokens": 100,
        "tools": [{"type": "image_generation", **tool} for tool in tools],
    }


def test_the_estimate_reserves_and_charges_the_tools_fee() -> None:
    plain = estimate({**responses(), "tools": []})
    low = estimate(responses({"quality": "low", "partial_images": 0}))
    assert low.fees == (("image_generation", image_generation_fee({"quality": "low", "partial_images": 0})),)
    assert low.tool_calls == (("image_generation", 1),)
    assert low.cost_nano - plain.cost_nano >= 659 * 30 * 1000  # the image, over the text and its pass
    dearest = estimate(responses({"quality": "low"}, {}))  # two image tools: the dearest one's fee
    assert dearest.fees == (("image_generation", image_generation_fee({})),)
    served = Usage(input_tokens=10, output_tokens=10, image_generation_calls=1)
    text = Usage(input_tokens=10, output_tokens=10)
    charged = low.price.cost(served) - low.price.cost(text)
    assert charged == Decimal(659 * 30) / 10**6  # the call is charged at its tool's fee


def test_a_registered_fee_stays() -> None:
    book = PriceBook()
    book.register("gpt-5", input="1.25", output="10", image_generation="100")
    est = budgetguard.Estimator(prices=book)(responses({"quality": "low"}))
    assert est.price.base.image_generation == Decimal(100)


def test_an_unknown_fee_stays_unknown() -> None:
    """Where no image_generation fee is known (Azure: none published), naming a quality sets none."""
    with pytest.raises(budgetguard.PricingError, match="image_generation_calls"):
        estimate(responses({"quality": "low"}), provider="azure")

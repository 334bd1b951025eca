"""The Responses ``image_generation`` tool's fee: reserved (and charged) at the most one call of the tool
as the request configures it may bill, the dearest of what it leaves open."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest

import budgetguard
from budgetguard import Event, PriceBook, Usage, estimate, price_book
from budgetguard._estimate import DEFAULT_TOOL_CALLS
from budgetguard._image_tool import gpt_image_2_tokens, image_generation_fee, image_usd
from budgetguard.testing import MockProvider
from tests.integrations.scripted import serve
from tests.redteam import sdk_client
from tests.test_endpoints_mock import mock, read_until_cut, server  # noqa: F401 (the mock's fixtures)

NANO = Decimal(10**9)
TEXT = 8000 * 10  # the image model's text a call (gpt-image-2 and later), USD per M x tokens


def test_the_token_rule_gives_openais_published_examples() -> None:
    # OpenAI's image generation guide: gpt-image-2 at 1024x1024 $0.006 / $0.053 / $0.211 (low / medium /
    # high), 1536x1024 high $0.165, at $30 per million image output tokens
    usd = [gpt_image_2_tokens(q, 1024, 1024) * Decimal(30) / 10**6 for q in ("low", "medium", "high")]
    assert [round(u, 3) for u in usd] == [Decimal("0.006"), Decimal("0.053"), Decimal("0.211")]
    assert round(gpt_image_2_tokens("high", 1536, 1024) * Decimal(30) / 10**6, 3) == Decimal("0.165")


def test_an_open_tool_is_reserved_at_gpt_image_2s_largest_high_image() -> None:
    """An open tool runs gpt-image-2.6-sunburst (the tool's default), priced by gpt-image-2's rule at
    its $30 / M (its token counts are not published). The old $0.25 (gpt-image-1's dearest) was below
    what one gpt-image-2 call can bill: a high quality image of its largest area, 2880x2880, is 23,719
    image tokens, $0.71 at $30 / M."""
    largest = gpt_image_2_tokens("high", 2880, 2880)
    assert largest == 23_719 and largest * Decimal(30) / 10**6 > Decimal("0.25")
    open_fee = image_generation_fee({"type": "image_generation"})
    # (3 partial images of 100 tokens, and 8,000 tokens of the image model's text at $10 / M)
    assert open_fee == (largest + 3 * 100) * Decimal(30) / 1000 + 8000 * 10 / Decimal(1000)
    assert open_fee == image_generation_fee({"quality": "auto", "size": "auto", "model": "gpt-image-2"})
    assert budgetguard.published_prices("gpt-5", "openai")["image_generation"] == open_fee
    for other in (3840, 2160), (2048, 2048), (3840, 1280), (1024, 1536):
        assert gpt_image_2_tokens("high", *other) < largest


@pytest.mark.parametrize(
    ("tool", "usd"),
    [
        ({"quality": "low", "partial_images": 0}, (659 * 30 + TEXT, 10**6)),  # (2880x2880 at low)
        ({"quality": "high", "size": "1024x1024", "partial_images": 0}, (7024 * 30 + TEXT, 10**6)),
        ({"quality": "medium", "size": "1536x1024", "partial_images": 2}, ((1372 + 200) * 30 + TEXT, 10**6)),
        ({"model": "gpt-image-1"}, (250 + 12, 1000)),  # its dearest image and 3 partials at $40 / M
        (
            {"model": "gpt-image-1-mini", "quality": "low", "size": "1024x1024", "partial_images": 0},
            (5, 10**3),  # (its own published price, not gpt-image-1's $0.011)
        ),
        ({"model": "gpt-image-1", "size": "1024x1024", "partial_images": 0}, (167, 1000)),
        ({"model": "gpt-image-1.5"}, (200 * 1000 + 3 * 100 * 32, 10**6)),  # its dearest, partials at $32 / M
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


def fee_of(est: budgetguard.Estimate) -> Decimal | None:
    """The ``image_generation`` fee (USD per thousand calls) the request's tools set."""
    return dict(est.fees).get("image_generation")


def test_the_estimate_reserves_and_charges_the_tools_fee() -> None:
    plain = estimate({**responses(), "tools": []})
    low = estimate(responses({"quality": "low", "partial_images": 0}))
    assert fee_of(low) == image_generation_fee({"quality": "low", "partial_images": 0})  # (no prompt)
    # (the prompts: gpt-5's 100 output tokens together, a request's, at the image model's $5 / M)
    assert (low.price._image.prompts, low.price._image.rate) == (100, 5)  # type: ignore[union-attr]
    assert low.tool_calls == (("image_generation", DEFAULT_TOOL_CALLS["image_generation"]),)
    assert low.cost_nano - plain.cost_nano >= 659 * 30 * 1000  # the image, over the text and its pass
    dearest = estimate(responses({"quality": "low"}, {}))  # two image tools: the dearest one's fee
    assert fee_of(dearest) == image_generation_fee({})
    served = Usage(input_tokens=10, output_tokens=10, image_generation_calls=1)
    text = Usage(input_tokens=10, output_tokens=10)
    charged = low.price.cost(served) - low.price.cost(text)
    # a call nothing else is known of: its tool's worst case and the prompts at their bound (gpt-5's 100
    # output tokens at $5 / M; was the fee, holding a tenth of them)
    assert charged == Decimal(659 * 30 + TEXT + 100 * 5) / 10**6


def test_a_registered_fee_stays_when_it_is_the_dearer() -> None:
    book = PriceBook()
    book.register("gpt-5", input="1.25", output="10", image_generation="1000")
    est = budgetguard.Estimator(prices=book)(responses({"quality": "low"}))
    assert est.price.base.image_generation == Decimal(1000)


def test_an_unknown_fee_stays_unknown() -> None:
    """Where no image_generation fee is known (Azure: none published), naming a quality sets none."""
    with pytest.raises(budgetguard.PricingError, match="image_generation_calls"):
        estimate(responses({"quality": "low"}), provider="azure")


# -- each model by its own published price ----------------------------------------------------------

# OpenAI's published price of one image (USD; https://platform.openai.com/docs/models/<model>, and the
# image generation guide for gpt-image-2): each tool naming model, size and quality is reserved at
# least that (without partial images). gpt-image-2's are its token rule's, rounded: the first test.
PUBLISHED_PER_IMAGE = [
    ("gpt-image-1.5", "1024x1536", "high", "0.200"),
    ("gpt-image-1.5", "1536x1024", "medium", "0.050"),
    ("gpt-image-1.5", "1024x1024", "low", "0.009"),
    ("gpt-image-1.5", "1024x1024", "high", "0.133"),
    ("gpt-image-1", "1024x1536", "high", "0.25"),
    ("gpt-image-1-mini", "1024x1536", "high", "0.052"),
    ("chatgpt-image-latest", "1024x1536", "high", "0.200"),  # (gpt-image-1.5's prices, as published)
]


@pytest.mark.parametrize(("model", "size", "quality", "usd"), PUBLISHED_PER_IMAGE)
def test_a_named_model_is_reserved_at_least_its_published_price(
    model: str, size: str, quality: str, usd: str
) -> None:
    """gpt-image-1.5 was priced by gpt-image-2's rule: 1024x1536 high $0.165, below its $0.200."""
    tool = {"model": model, "size": size, "quality": quality, "partial_images": 0}
    fee = image_generation_fee(tool)
    assert fee is not None and fee / 1000 >= Decimal(usd)
    one = image_usd(model, quality, size)  # (not far above: the rounding of the price)
    assert one is not None and one - Decimal(usd) < Decimal("0.001")
    # (a call's fee holds no prompt: the prompts are reserved once a request, over the fees)
    assert fee_of(estimate(responses(tool))) == image_generation_fee(tool)


def test_the_1024x1536_high_examples_before_and_after() -> None:
    assert image_generation_fee(
        {"model": "gpt-image-1.5", "size": "1024x1536", "quality": "high", "partial_images": 0}
    ) == Decimal(200)  # USD per 1k calls: $0.200 a call (was $0.16464, gpt-image-2's rule)


@pytest.mark.parametrize(
    "tool",
    [
        {"model": "gpt-image-2.5-sunburst", "quality": "xhigh"},
        {"model": "gpt-image-2.5-flare-2026-09-08", "quality": "max", "size": "1024x1024"},
        {"model": "gpt-image-2.5-sunburst"},  # (auto may pick max)
        {"model": "gpt-image-3"},  # (a model no price is known for)
        {"output_format": "svg"},  # (written by a text model whose tokens are not known here)
    ],
)
def test_an_image_without_a_published_price_is_refused_unless_a_fee_is_registered(
    tool: dict[str, Any],
) -> None:
    """Priced before at gpt-image-2's rule (xhigh, max: as high), below what they may bill."""
    with pytest.raises(budgetguard.PricingError, match=r"image_generation tool .*register_price\('gpt-5'"):
        estimate(responses(tool))
    book = PriceBook()
    book.register("gpt-5", input="1.25", output="10", image_generation="2000")
    est = budgetguard.Estimator(prices=book)(responses(tool))
    assert est.price.base.image_generation == Decimal(2000)


def test_a_gif_is_reserved_per_frame() -> None:
    still = {"model": "gpt-image-2", "size": "1024x1024", "quality": "high", "partial_images": 0}
    one = image_generation_fee(still)
    text = Decimal(TEXT) / 1000  # (the image model's text: once a call)
    assert one == Decimal(7024 * 30) / 1000 + text
    frame = one - text
    assert image_generation_fee({**still, "output_format": "gif", "frame_count": 4}) == 4 * frame + text
    assert image_generation_fee({**still, "output_format": "gif"}) == 9 * frame + text  # (default: 9)
    assert image_generation_fee({**still, "output_format": "gif", "frame_count": 99}) == 16 * frame + text


# -- charged by what the response says it billed ----------------------------------------------------


def image_response(
    tools: list[dict[str, Any]], items: list[dict[str, Any]], tool_usage: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "output": [{"type": "image_generation_call", "id": f"ig_{n}", "status": "completed", **item}
                   for n, item in enumerate(items)],
        "tools": tools,
        "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 110},
    }  # fmt: skip
    if tool_usage is not None:
        body["tool_usage"] = {"image_gen": tool_usage, "web_search": {"num_requests": 0}}
    return body


IMAGE_GEN = {
    "input_tokens": 50, "input_tokens_details": {"image_tokens": 20, "text_tokens": 30},
    "output_tokens": 7024, "output_tokens_details": {"image_tokens": 7024, "text_tokens": 0},
    "total_tokens": 7074, "cached_tokens_details": {"cached_image_tokens": 0, "cached_text_tokens": 10},
}  # fmt: skip


def test_the_image_models_reported_tokens_are_charged_not_the_fee() -> None:
    """An open tool reserves $0.72057; one 1024x1024 high image bills its tokens: 7,024 image output
    tokens at $30 / M, 20 image input at $8, 20 text input at $5 and 10 cached at $1.25 (was charged
    the reserved fee, $0.72057)."""
    body = image_response(
        [{"type": "image_generation"}], [{"size": "1024x1024", "quality": "high"}], IMAGE_GEN
    )
    usage = Usage.from_response(body)
    assert usage.image_generation_calls == 1
    text = Usage(input_tokens=100, output_tokens=10)
    price = estimate(responses({})).price
    bill_nano = (7024 * 30 + 20 * 8 + 20 * 5) * 1000 + 10 * 1250  # (USD per M x tokens x 1000)
    assert price.cost_nano(usage) - price.cost_nano(text) == bill_nano
    assert price.cost(usage) - price.cost(text) < Decimal("0.22") < price.base.image_generation / 1000


def test_a_call_missing_from_the_reported_usage_is_charged_by_its_size_and_quality() -> None:
    """``tool_usage.image_gen`` may skip a call whose record is missing: the items' sizes and qualities
    by the model's rule are the least charged (two 1024x1024 high images: 2 x 7,024 tokens)."""
    items = [{"size": "1024x1024", "quality": "high"}] * 2
    usage = Usage.from_response(
        image_response([{"type": "image_generation", "model": "gpt-image-2"}], items, IMAGE_GEN)
    )
    (image,) = usage.passes
    assert (image.model, image.usage.output_image_tokens) == ("gpt-image-2", 2 * 7024)


def test_without_reported_usage_the_items_size_and_quality_are_charged() -> None:
    tool = {"model": "gpt-image-1.5", "partial_images": 2}
    body = image_response(
        [{"type": "image_generation", **tool}], [{"size": "1024x1536", "quality": "high"}], None
    )
    price = estimate(responses(tool)).price
    charged = price.cost_nano(Usage.from_response(body)) - price.cost_nano(
        Usage(input_tokens=100, output_tokens=10)
    )
    # the image and its 2 partials at gpt-image-1.5's $32 / M, and its prompt at the bound (gpt-5's 100
    # output tokens at $5 / M: was not charged; gpt-image-1.5 writes no text)
    assert charged == ((6240 + 200) * 32 + 100 * 5) * 1000


@pytest.mark.parametrize(
    ("tools", "items", "tool_usage"),
    [
        ([], [{"size": "1024x1024", "quality": "high"}], IMAGE_GEN),  # (no echoed tool: no model)
        ([{"type": "image_generation", "model": "gpt-image-3"}], [{"size": "1024x1024", "quality": "high"}],
         IMAGE_GEN),  # (a model whose rates are not known here)
    ],
)  # fmt: skip
def test_a_response_that_does_not_say_is_charged_the_fee(
    tools: list[dict[str, Any]], items: list[dict[str, Any]], tool_usage: Any
) -> None:
    usage = Usage.from_response(image_response(tools, items, tool_usage))
    assert usage.passes == () and usage.image_generation_calls == 1
    # items that do not say their size, priced alone (no request's bounds: the model's published fee)
    price = price_book.get("gpt-5")
    for unsized in [{}], [{}, {}]:
        usage = Usage.from_response(image_response([{"type": "image_generation"}], unsized, None))
        charged = price.cost_nano(usage) - price.cost_nano(Usage(input_tokens=100, output_tokens=10))
        assert charged == len(unsized) * price.base.image_generation * 10**6  # type: ignore[operator]


# -- with the openai SDK against the local mock ---------------------------------------------------------

# https://developers.openai.com/api/docs/models/gpt-image-2.6-sunburst (gpt-image-2's rates): $5 text in,
# $8 image in, $30 image out; gpt-image-1.5: $5 text in, $32 image out. USD per M x tokens x 1000 = nano.
RATES = {"gpt-image-2.6-sunburst": (5, 8, 30), "gpt-image-1.5": (5, 8, 32)}


def read(obj: Any, name: str) -> Any:
    """A field of an SDK object, or of the dict an older SDK (openai 1.78: no type for it) keeps."""
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def sdk_image_call(mock: MockProvider, tool: dict[str, Any], stream: bool) -> tuple[Event, int, int]:  # noqa: F811
    """One gpt-5 Responses call offering ``tool`` through ``guard.wrap``: its committed event, the text's
    cost (nano-USD) and the image model's bill, by hand from what the response reported."""
    with sdk_client(mock, wrap=True) as (guarded, client):
        request = {**responses(tool), "model": "gpt-5", "max_tool_calls": 1}  # (one image: the budget's $5)
        if stream:
            events = list(client.responses.create(**request, stream=True))
            response = events[-1].response
        else:
            response = client.responses.create(**request)
    (usage,) = mock.usages
    text_nano = price_book.cost_nano("gpt-5", Usage.from_response({"usage": usage}))
    image = read(read(response, "tool_usage"), "image_gen")
    text_in, image_in, image_out = RATES[tool.get("model", "gpt-image-2.6-sunburst")]
    details = read(image, "input_tokens_details")
    bill_nano = 1000 * (
        read(details, "text_tokens") * text_in
        + read(details, "image_tokens") * image_in
        + read(image, "output_tokens") * image_out
    )
    return guarded.settled(), text_nano, bill_nano


@pytest.mark.parametrize("stream", [False, True], ids=["response", "stream"])
def test_an_open_tool_is_charged_its_image_not_the_worst_case(mock: MockProvider, stream: bool) -> None:  # noqa: F811
    """Reserved $0.72057 (the tool's dearest), charged the one 1024x1024 high image the response reports
    (7,024 image tokens, ~$0.21): it was charged the $0.72057."""
    committed, text_nano, bill_nano = sdk_image_call(mock, {}, stream)
    assert committed.actual is not None and committed.estimated is not None
    assert committed.actual * NANO == text_nano + bill_nano
    assert Decimal("0.21") < Decimal(bill_nano) / NANO < Decimal("0.22")
    assert committed.estimated * NANO >= text_nano + 800_570_000


def test_a_named_gpt_image_1_5_is_reserved_and_charged_at_its_own_price(mock: MockProvider) -> None:  # noqa: F811
    """1024x1536 high on gpt-image-1.5: reserved at its $0.200 (was $0.165, gpt-image-2's rule), charged
    6,240 image tokens at its $32 / M."""
    tool = {"model": "gpt-image-1.5", "size": "1024x1536", "quality": "high", "partial_images": 0}
    committed, text_nano, bill_nano = sdk_image_call(mock, tool, stream=False)
    assert committed.actual is not None and committed.estimated is not None
    assert committed.actual * NANO == text_nano + bill_nano
    assert bill_nano == (40 * 5 + 6240 * 32) * 1000
    assert committed.estimated * NANO >= text_nano + 200_000_000 >= text_nano + bill_nano


def test_a_token_budget_counts_the_calls_own_tokens_not_the_image_models(mock: MockProvider) -> None:  # noqa: F811
    """The image model's tokens are charged in USD, as the tool's reservation (a fee) holds no tokens: a
    token budget is charged what it held at most, with no overrun."""
    events: list[Event] = []
    budgets = [budgetguard.Budget("feature", tokens=1_000_000, per="day")]
    guard = budgetguard.Guard("memory://", budgets=budgets, on_event=events.append)
    client = mock.openai()
    try:
        guard.with_budget(client.responses.create, feature="draw")(**responses({}))
    finally:
        client.close()
    (entry,) = guard.ledger.history(events=["committed"])
    (usage,) = mock.usages
    assert entry.amounts["tokens"] == usage["total_tokens"]
    assert "overrun" not in [event.kind for event in events]


def test_reported_counts_without_their_split_are_charged_at_the_image_rates() -> None:
    """Input and output without the text / image split are charged as image tokens (the dearer)."""
    bare = {"input_tokens": 50, "output_tokens": 7024, "total_tokens": 7074}
    tools = [{"type": "image_generation"}]
    usage = Usage.from_response(image_response(tools, [{"size": "1024x1024", "quality": "high"}], bare))
    (image,) = usage.passes
    assert image.usage == Usage(input_image_tokens=50, output_image_tokens=7024)


@pytest.mark.parametrize(
    "bad",
    [
        {"output_tokens": "7024"},
        {"output_tokens": 7024.0},
        {"output_tokens": None},  # (missing: a report without its output count)
        {"input_tokens": -5},
        {"input_tokens": True},
        {"output_tokens_details": {"image_tokens": 7024, "text_tokens": "0"}},
    ],
)
def test_a_malformed_report_is_no_report(bad: dict[str, Any]) -> None:
    """A count that is not a non-negative int (the rule of the main usage's counts) makes the report
    no report: the items' size and quality are charged, else the fee (was read as 0: ~$0 charged)."""
    report = {k: v for k, v in {**IMAGE_GEN, **bad}.items() if v is not None}
    tools = [{"type": "image_generation", "model": "gpt-image-2", "partial_images": 0}]
    sized = Usage.from_response(image_response(tools, [{"size": "1024x1024", "quality": "high"}], report))
    (image,) = sized.passes  # the item's size and quality by the rule, the call's io not reported
    assert image.usage == Usage(output_image_tokens=7024, image_generation_calls=1)
    unsized = Usage.from_response(image_response(tools, [{}], report))
    (image,) = unsized.passes  # the call's worst case
    assert image.usage == Usage(image_generation_calls=1)


# -- the image model's input and text output, reserved ------------------------------------------------


def edit_request(model: str, tool: dict[str, Any], images: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": "Put these in one picture."}]
    content += [{"type": "input_image", "image_url": f"https://example.com/{n}.png"} for n in range(images)]
    return {
        "model": model,
        "input": [{"role": "user", "content": content}],
        "max_output_tokens": 500,
        "tools": [{"type": "image_generation", **tool}],
    }


def reported(text_in: int, image_in: int, text_out: int, image_out: int) -> dict[str, Any]:
    return {
        "input_tokens": text_in + image_in,
        "input_tokens_details": {"image_tokens": image_in, "text_tokens": text_in},
        "output_tokens": text_out + image_out,
        "output_tokens_details": {"image_tokens": image_out, "text_tokens": text_out},
        "total_tokens": text_in + image_in + text_out + image_out,
    }


@pytest.mark.parametrize(
    ("tool", "images", "item", "image_gen"),
    [
        (  # 4 images edited at high fidelity: 16,900 image input tokens (was reserved $0.0161, charged
            # $0.1447)
            {"model": "gpt-image-1.5", "size": "1024x1024", "quality": "low", "partial_images": 0,
             "input_fidelity": "high"},
            4, {"size": "1024x1024", "quality": "low"}, reported(60, 16_900, 0, 272),
        ),
        (  # the image model plans in text: 4,000 tokens (was reserved $0.0170, charged $0.0473)
            {"model": "gpt-image-2", "size": "1024x1024", "quality": "low", "partial_images": 0,
             "complexity": "high"},
            0, {"size": "1024x1024", "quality": "low"}, reported(500, 0, 4_000, 196),
        ),
    ],
)  # fmt: skip
def test_the_image_models_input_and_text_output_are_reserved(
    tool: dict[str, Any], images: int, item: dict[str, Any], image_gen: dict[str, Any]
) -> None:
    request = edit_request("gpt-5-mini", tool, images)
    est = estimate(request)
    body = image_response([{"type": "image_generation", **tool}], [item], image_gen)
    body["usage"] = {"input_tokens": est.input_tokens, "output_tokens": 500, "total_tokens": 0,
                     "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip
    usage = Usage.from_response(body)
    assert usage.passes  # (charged the image model's reported tokens)
    assert est.cost_nano >= est.price.cost_nano(usage)


# -- a registered fee ---------------------------------------------------------------------------------


def registered(fee: str) -> budgetguard.Estimator:
    book = PriceBook()
    book.register("gpt-5", input="1.25", output="10", image_generation=fee)
    return budgetguard.Estimator(prices=book)


def test_a_registered_fee_below_the_tools_worst_case_reserves_the_worst_case() -> None:
    """A fee registered at $0.30 a call was the reservation of every image tool on the model, but the
    charge comes from the report: a 2880x2880 high image ($0.713) overran it."""
    tool = {"model": "gpt-image-2", "size": "2880x2880", "quality": "high", "partial_images": 0}
    est = registered("300")(responses(tool))
    body = image_response([{"type": "image_generation", **tool}], [{"size": "2880x2880", "quality": "high"}],
                          reported(100, 0, 0, 23_719))  # fmt: skip
    assert est.cost_nano >= est.price.cost_nano(Usage.from_response(body))
    assert est.price.base.image_generation == image_generation_fee(tool)  # (the dearer)
    cheap = registered("300")(responses({**tool, "quality": "low"}))  # (the fee, the dearer: kept)
    assert cheap.price.base.image_generation == Decimal(300)


def test_without_a_known_worst_case_the_registered_fee_is_charged_or_the_report_above_it() -> None:
    """xhigh has no published count: the registered fee ($0.30) is the user's bound, reserved. The
    report was ignored: 50,000 image tokens ($1.50) were charged $0.30. It is now charged the report
    where it says more than the fee (an overrun), the fee where it says less."""
    tool = {"model": "gpt-image-2.5-sunburst", "size": "1024x1024", "quality": "xhigh"}
    est = registered("300")(responses(tool))
    item = {"size": "1024x1024", "quality": "xhigh"}
    for image_out, charged in (50_000, (100 * 5 + 50_000 * 30) * 1000), (1_000, 300 * 10**6):
        body = image_response([{"type": "image_generation", **tool}], [item], reported(100, 0, 0, image_out))
        usage = Usage.from_response(body)
        assert usage.image_generation_calls == 1
        text = Usage.from_response({**body, "output": [], "tool_usage": None})
        assert est.price.cost_nano(usage) - est.price.cost_nano(text) == charged
    unreported = image_response([{"type": "image_generation", **tool}], [item], None)  # (the fee)
    assert Usage.from_response(unreported).passes == ()


TWO_HIGH = [{"size": "1024x1024", "quality": "high"}] * 2  # (gpt-image-2: 7,024 image tokens each)


def charged_two(tool: dict[str, Any], items: list[dict[str, Any]], image_gen: dict[str, Any]) -> int:
    """What the image calls of a gpt-5 response with ``items`` and ``image_gen`` are charged (nano)."""
    est = estimate({**responses(tool), "max_tool_calls": 2})
    body = image_response([{"type": "image_generation", **tool}], items, image_gen)
    text = Usage.from_response({**body, "output": [], "tool_usage": None})
    return est.price.cost_nano(Usage.from_response(body)) - est.price.cost_nano(text)


@pytest.mark.parametrize(
    ("partials", "items", "image_out", "charged_out"),
    [
        (2, TWO_HIGH, 2 * 7024, 2 * (7024 + 200)),  # (the report leaves the partial images out: was $1.23)
        (0, TWO_HIGH, 2 * 7024 - 1, 2 * 7024),  # (a token under the rule: was $1.21)
        (0, [{"size": "1024x1024", "quality": "auto"}] * 2, 2 * 7024, 2 * 7024),  # (was $1.21)
        (0, [{}, {}], 7024, 7024),  # (items that do not say their size: the report is trusted)
    ],
)
def test_a_report_covering_every_call_is_charged_no_fee(
    partials: int, items: list[dict[str, Any]], image_out: int, charged_out: int
) -> None:
    """Two calls the report covers were charged the fee of one more ($0.80) over their $0.42."""
    tool = {"model": "gpt-image-2", "partial_images": partials}
    assert charged_two(tool, items, reported(40, 0, 0, image_out)) == (40 * 5 + charged_out * 30) * 1000


def test_a_call_the_report_skips_is_charged_the_fee() -> None:
    """Two 1024x1024 high calls, a report of one (``tool_usage`` may skip a call whose record is missing):
    the report, the items' images, the other call's text and the prompts the report does not hold (gpt-5's
    100 output tokens less the report's 40), at most what both calls can bill."""
    tool = {"model": "gpt-image-2", "size": "1024x1024", "quality": "high", "partial_images": 0}
    bill_nano = (40 * 5 + 2 * 7024 * 30) * 1000
    charged = charged_two(tool, TWO_HIGH, reported(40, 0, 0, 7024))
    assert charged == bill_nano + (TEXT + 60 * 5) * 1000 <= (2 * (7024 * 30 + TEXT) + 100 * 5) * 1000


def test_the_fee_cap_never_charges_below_the_report() -> None:
    """Three 2880x2880 high calls, a report of one reading 500,000 text tokens ($3.21): the cap, the fee
    of every call ($2.38), charged below the report itself."""
    tool = {"model": "gpt-image-2", "size": "2880x2880", "quality": "high", "partial_images": 0}
    est = estimate({**responses(tool), "max_tool_calls": 3})
    item = {"size": "2880x2880", "quality": "high"}
    body = image_response([{"type": "image_generation", **tool}], [item] * 3, reported(500_000, 0, 0, 23_719))
    text = Usage.from_response({**body, "output": [], "tool_usage": None})
    charged = est.price.cost_nano(Usage.from_response(body)) - est.price.cost_nano(text)
    assert charged == (500_000 * 5 + 3 * 23_719 * 30) * 1000 > 3 * est.price.base.image_generation * 10**6


def test_an_unbounded_tool_is_reserved_at_the_default_count_of_every_tool() -> None:
    """``DEFAULT_TOOL_CALLS["image_generation"]`` was 1, but every reported call is charged: 3 calls were
    charged $0.636 against $0.216 reserved. It is now the count of every other per-call tool (10), the
    request's ``max_tool_calls`` bounding it, flagged ``tools_defaulted``."""
    tool = {"type": "image_generation", "model": "gpt-image-2", "size": "1024x1024", "quality": "high",
            "partial_images": 0}  # fmt: skip
    est = estimate(responses(tool))
    assert est.tool_calls == (("image_generation", DEFAULT_TOOL_CALLS["web_search"]),)
    assert est.tools_defaulted == ("image_generation",)
    item = {"size": "1024x1024", "quality": "high"}
    body = image_response([tool], [item] * 3, reported(3 * 40, 0, 0, 3 * 7024))
    assert est.cost_nano >= est.price.cost_nano(Usage.from_response(body))
    assert estimate({**responses(tool), "max_tool_calls": 3}).tool_calls == (("image_generation", 3),)


def test_the_prompts_are_reserved_once_a_request_not_once_a_call() -> None:
    """The calling model writes every call's prompt: all of them together are at most its output bound.
    gpt-5 (128,000 output tokens) offering an open tool was reserved $17.50, the prompt bound ($0.64 at
    the image model's $5 / M) in each of the 10 calls' fees; now $11.74, the prompt bound once, over
    the fees, which hold no prompt."""
    request = {"model": "gpt-5", "input": "Draw an axolotl.", "tools": [{"type": "image_generation"}]}
    est = estimate(request)
    assert fee_of(est) == image_generation_fee({})
    assert est.price.image_prompts_nano() == 128_000 * 5 * 1000  # (reserved once, over the 10 fees)
    assert est.cost < Decimal("11.74")
    one = estimate({**request, "max_tool_calls": 1})  # (one call: the same prompt bound, once)
    assert fee_of(one) == image_generation_fee({})


def test_a_refusal_of_a_defaulted_tool_names_max_tool_calls(mock: MockProvider) -> None:  # noqa: F811
    """A $5 a day budget refused gpt-5 offering an open tool (10 calls reserved by default) with "Lower
    the request (max tokens, a cheaper model)": it now names ``max_tool_calls``, which lets it through."""
    guard = budgetguard.Guard("memory://", budgets=[budgetguard.Budget("feature", usd="5", per="day")])
    client = mock.openai()
    request = {"model": "gpt-5", "input": "Draw an axolotl.", "tools": [{"type": "image_generation"}]}
    try:
        create = guard.with_budget(client.responses.create, feature="draw")
        with pytest.raises(budgetguard.BudgetExceededError) as refused:
            create(**request)
        assert refused.value.tools_defaulted == ("image_generation",)
        assert "max_tool_calls" in str(refused.value) and "Estimator(tool_calls=...)" in str(refused.value)
        assert "max_tool_calls" in refused.value.reason
        rebuilt = type(refused.value)(*refused.value.args)  # (a task queue's JSON result backend)
        assert str(rebuilt) == str(refused.value)
        create(**request, max_tool_calls=1)  # (one image: within the $5)
    finally:
        client.close()


# -- without a report: every call shown is charged what it can have billed ----------------------------

DRAWN = {"model": "gpt-image-2", "size": "1024x1024", "quality": "high", "partial_images": 0}
IMAGE = 7024 * 30  # (DRAWN's image: 7,024 tokens at gpt-image-2's $30 / M; USD per M x tokens)
BOUND = 100_000  # (gpt-5's max_output_tokens: the prompts of all its calls together, at most)
SIZED = {"size": "1024x1024", "quality": "high"}


def drawing(images: int = 0, **more: Any) -> dict[str, Any]:
    """gpt-5 offering DRAWN (10 calls reserved, the default), showing ``images`` images to edit."""
    content: list[dict[str, Any]] = [{"type": "input_text", "text": "Draw an axolotl."}]
    content += [{"type": "input_image", "image_url": f"https://example.com/{n}.png"} for n in range(images)]
    tools = [{"type": "image_generation", **DRAWN}]
    return {"model": "gpt-5", "input": [{"role": "user", "content": content}], "max_output_tokens": BOUND,
            "tools": tools, **more}  # fmt: skip


def charged_through_the_sdk(request: dict[str, Any], body: dict[str, Any]) -> tuple[Event, int, list[Event]]:
    """``request`` sent with the openai SDK through ``guard.wrap`` to a local server answering ``body``:
    the committed event, what the image calls were charged (nano-USD: all but the text) and the events."""
    events: list[Event] = []
    budgets = [budgetguard.Budget("feature", usd="50", per="day")]
    guard = budgetguard.Guard("memory://", budgets=budgets, on_event=events.append)
    body = {"id": "resp_1", "object": "response", "model": "gpt-5", "status": "completed", **body}
    with serve([body], path="/v1/responses") as server_:
        client = openai.OpenAI(base_url=server_.url, api_key="x", max_retries=0)
        try:
            guard.wrap(client, feature="draw").responses.create(**request)
        finally:
            client.close()
    (committed,) = [e for e in events if e.kind == "committed"]
    assert committed.actual is not None
    text_nano = price_book.cost_nano("gpt-5", Usage.from_response({"usage": body["usage"]}))
    return committed, int(committed.actual * NANO) - text_nano, events


@pytest.mark.parametrize(
    ("items", "images", "worst"),
    [
        # one call whose item says nothing: its image, its text and the whole prompt bound (was charged
        # $0.34072, the fee holding a tenth of the bound; a 90,000-token prompt bills $0.66072)
        ([{}], 0, IMAGE + TEXT + BOUND * 5),
        # the item says its size: its image by the rule, its text and the prompt (was $0.21072, the image)
        ([SIZED], 0, IMAGE + TEXT + BOUND * 5),
        # and it may read the request's 2 images at high fidelity (581 + 6,144 tokens each at $8 / M)
        ([SIZED], 2, IMAGE + TEXT + 2 * 6725 * 8 + BOUND * 5),
        # two calls: each its image and text, their prompts together the bound (was $0.68144)
        ([{}, {}], 0, 2 * (IMAGE + TEXT) + BOUND * 5),
    ],
)
def test_without_a_report_each_call_is_charged_what_it_can_have_billed(
    items: list[dict[str, Any]], images: int, worst: int
) -> None:
    """No ``tool_usage``: each call the response shows is charged its image (the item's size and
    quality, else the tool's dearest), what its image model reads and writes in text, and the prompts
    of all of them once, at their bound (the calling model's output bound): the reservation's rule."""
    body = image_response([{"type": "image_generation", **DRAWN}], items, None)
    committed, charged, events = charged_through_the_sdk(drawing(images), body)
    assert charged == worst * 1000
    assert charged >= (90_000 * 5 + len(items) * IMAGE) * 1000  # (a 90,000-token prompt's bill)
    assert committed.estimated is not None and committed.estimated >= committed.actual  # type: ignore[operator]
    assert "overrun" not in [e.kind for e in events]


def test_more_calls_than_reserved_are_charged_what_they_bill_and_flagged() -> None:
    """One call reserved (``max_tool_calls=1``: its fee holds the whole prompt bound), ten shown
    without a report: each its image and text, the prompts once, $3.4072 (was 10 fees, $7.9072, the
    prompt bound ten times); above the reservation: an overrun."""
    body = image_response([{"type": "image_generation", **DRAWN}], [{}] * 10, None)
    committed, charged, events = charged_through_the_sdk(drawing(max_tool_calls=1), body)
    assert charged == (10 * (IMAGE + TEXT) + BOUND * 5) * 1000
    assert committed.estimated is not None and committed.actual is not None
    assert committed.actual > committed.estimated and "overrun" in [e.kind for e in events]


def test_a_call_the_report_skips_is_charged_the_prompt_bound_the_report_does_not_hold() -> None:
    """Two calls, a report of one (a 40-token prompt): the other may have had a 99,960-token prompt
    ($0.50), its text ($0.08) and image. It was charged the fee of one call, capped at two fees
    ($0.68144 in all: each fee holds a tenth of the bound); now the report, the items' images, the
    other's text and the prompt bound less the report's 40 tokens."""
    body = image_response([{"type": "image_generation", **DRAWN}], [SIZED] * 2, reported(40, 0, 0, 7024))
    committed, charged, events = charged_through_the_sdk(drawing(), body)
    assert charged == (40 * 5 + 2 * IMAGE + TEXT + 99_960 * 5) * 1000
    assert committed.estimated is not None and committed.estimated >= committed.actual  # type: ignore[operator]
    assert "overrun" not in [e.kind for e in events]


def test_a_reported_prompt_is_not_charged_again_in_the_prompt_bound() -> None:
    """Two calls (``max_tool_calls=2``), a report of one whose prompt was 10,000 tokens (its text input,
    written by the calling model: the premise). The prompts of both calls together are at most gpt-5's
    100,000 output tokens, so the other call's prompt is at most 90,000 tokens: the most the response
    can have billed is the report, the other call's image and text, and 90,000 prompt tokens,
    $1.00144. It was charged the report and the whole 100,000-token bound again, $1.05144 (review of
    imagecharge)."""
    body = image_response([{"type": "image_generation", **DRAWN}], [SIZED] * 2, reported(10_000, 0, 0, 7024))
    committed, charged, _ = charged_through_the_sdk(drawing(max_tool_calls=2), body)
    assert charged == (10_000 * 5 + 2 * IMAGE + TEXT + (BOUND - 10_000) * 5) * 1000
    assert committed.estimated is not None and committed.estimated >= committed.actual  # type: ignore[operator]
    # a report holding more text input than the bound: no prompt left to charge (never below 0)
    body = image_response(
        [{"type": "image_generation", **DRAWN}], [SIZED] * 2, reported(BOUND + 1, 0, 0, 7024)
    )
    _, charged, _ = charged_through_the_sdk(drawing(max_tool_calls=2), body)
    assert charged == ((BOUND + 1) * 5 + 2 * IMAGE + TEXT) * 1000


def _mixed(max_output: int) -> dict[str, Any]:
    tools = [
        {"type": "image_generation", "model": "gpt-image-1-mini", "quality": "low", "size": "1024x1024",
         "partial_images": 0},
        {"type": "web_search"},
    ]  # fmt: skip
    return {"model": "gpt-5", "input": "Draw.", "max_output_tokens": max_output, "max_tool_calls": 2,
            "tools": tools}  # fmt: skip


@pytest.mark.parametrize("max_output", [4000, 8000])
def test_one_image_call_among_max_tool_calls_is_charged_within_the_reservation(max_output: int) -> None:
    """``max_tool_calls=2`` over an image tool (gpt-image-1-mini low 1024x1024: $0.005 a call, its
    prompts at most gpt-5's output bound at $2 / M, $0.008 at 4,000 tokens) and a web search ($0.01).
    The dearest was picked by a fee holding half the prompts, and the prompts were reserved only when
    the image tool was the dearest: a response within the bounds (one search, one image call whose
    prompt is the whole bound, every reserved input token used) was charged $0.1617775 against
    $0.1587775 reserved (8,000 tokens: $0.2197775 against $0.2147775). The dearest is now picked by
    each call's fee without its prompt, and the prompts are reserved once over the fees: $0.1667775
    (8,000 tokens: $0.2247775)."""
    est = estimate(_mixed(max_output))
    assert est.tool_calls == (("web_search", 2),)  # ($0.01 a search, above the image's $0.005)
    used = Usage(
        input_tokens=est.input_tokens, output_tokens=max_output, web_search_calls=1, image_generation_calls=1
    )
    assert est.price.cost_nano(used) <= est.cost_nano, (est.price.cost(used), est.cost)
    both = Usage(input_tokens=est.input_tokens, output_tokens=max_output, web_search_calls=2)
    assert est.cost_nano == est.price.cost_nano(both) + max_output * 2 * 1000  # (the prompts, once)


def test_rates_built_by_position_keep_their_request_fee() -> None:
    """``Rates`` is public (``budgetguard.Rates``): the image tool's bounds were three fields inserted
    before ``request``, so a request fee given by position landed in one of them (the request fee 0).
    They are the request's (``Price``'s, from the estimate's fees), not a model's rates."""
    d = Decimal
    unknown = (None,) * 8  # (audio and image rates, web search, web fetch, file search, code execution)
    rates = budgetguard.Rates(d(1), d(2), d(1), d(1), d(1), *unknown, d(40), d(3))
    assert (rates.image_generation, rates.request) == (d(40), d(3))


def test_an_interrupted_stream_charges_its_image_call_what_it_can_have_billed(mock: MockProvider) -> None:  # noqa: F811
    """A stream cut after its image_generation_call item, before the report: the call is charged its
    image at the tool's worst, its text and the whole prompt bound (was its fee, $0.34072, holding a
    tenth of the bound), as a response without a report (one rule: ``_rates._image_charge``)."""
    events: list[Event] = []
    guard = budgetguard.Guard(
        "memory://", budgets=[budgetguard.Budget("feature", usd="50", per="day")], on_event=events.append
    )
    client = mock.openai()
    mock.cut(after=6, path="/v1/responses")  # created, in_progress, reasoning and image items: added, done
    try:
        stream = guard.with_budget(client.responses.create, feature="draw")(**drawing(), stream=True)
        done, error = read_until_cut(stream, "response.output_item.done")
        stream.close()
    finally:
        client.close()
    assert error is not None and [read(e.item, "type") for e in done] == [
        "reasoning",
        "image_generation_call",
    ]
    (entry,) = guard.ledger.history(events=["committed"])
    usage = {**entry.data["usage"]}
    assert usage.pop("image_generation_calls") == 1 and entry.data["interrupted"] is True
    text_nano = estimate(drawing()).price.cost_nano(Usage(**usage))
    assert entry.amounts["usd"] - text_nano == (IMAGE + TEXT + BOUND * 5) * 1000
    assert "overrun" not in [e.kind for e in events]

"""Review of branch imagecharge: image generation calls no report covers (failing tests, one per fault)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from budgetguard import Rates, Usage, estimate
from tests.test_image_tool import (
    BOUND,
    DRAWN,
    IMAGE,
    SIZED,
    TEXT,
    charged_through_the_sdk,
    drawing,
    image_response,
    reported,
)


def test_a_reported_prompt_is_not_charged_again_in_the_prompt_bound() -> None:
    """Two calls (``max_tool_calls=2``), a report of one whose prompt was 10,000 tokens (its text input,
    written by the calling model: the branch's premise). The prompts of both calls together are at most
    gpt-5's 100,000 output tokens, so the other call's prompt is at most 90,000 tokens: the most the
    response can have billed is the report, the other call's image and text, and 90,000 prompt tokens,
    $1.00144. It is charged the report and the whole 100,000-token bound again, $1.05144: the reported
    prompt twice (9 of 10 calls reported at 90,000 prompt tokens: $3.1372 charged, $2.6872 at most)."""
    body = image_response([{"type": "image_generation", **DRAWN}], [SIZED] * 2, reported(10_000, 0, 0, 7024))
    _, charged, _ = charged_through_the_sdk(drawing(max_tool_calls=2), body)
    most = (10_000 * 5 + 2 * IMAGE + TEXT + (BOUND - 10_000) * 5) * 1000
    assert charged <= most, f"charged {charged} nano-USD, the most it can have billed is {most}"


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
    prompts at most gpt-5's 4,000 output tokens at $2 / M, $0.008) and a web search ($0.01): the
    estimate keeps the dearest by one call's fee holding half the prompts ($0.009 < $0.01) and reserves
    two searches, $0.1587775 in all. A response within those bounds (one search, one image call whose
    prompt is the whole 4,000 tokens, every reserved input token used) is charged $0.1617775: above
    its reservation (an overrun), while main charged it $0.1577775. The reservation does not hold the
    branch's rule (the prompts once a request) when the image tool is not the dearest. At 8,000 output
    tokens the image tool is the dearest ($0.013 with half the prompts): two calls reserved, $0.026 of
    fees, while one image call and one search bill $0.031: charged $0.2197775, reserved $0.2147775
    (main: $0.2117775, within)."""
    est = estimate(_mixed(max_output))
    used = Usage(
        input_tokens=est.input_tokens, output_tokens=max_output, web_search_calls=1, image_generation_calls=1
    )
    assert est.price.cost_nano(used) <= est.cost_nano, (est.price.cost(used), est.cost)


def test_rates_built_by_position_keep_their_request_fee() -> None:
    """``Rates`` is public (``budgetguard.Rates``): the three new fields were inserted before ``request``,
    so a request fee given by position lands in ``image_call`` (and the request fee is 0)."""
    d = Decimal
    rates = Rates(d(1), d(2), d(1), d(1), d(1), None, None, None, None, None, None, None, None, d(40), d(3))
    assert rates.request == d(3)


def test_the_image_model_reading_the_chat_is_reserved() -> None:
    """The premise (the image model reads only a prompt the calling model writes, bounded by its output
    bound) is not published. OpenAI's forum (community.openai.com/t/1370457) reports the tool hands the
    image model a copy of the chat, not just an AI-written prompt ("many or all images in the chat
    history are sent to the image tool model, a copy of the whole chat"). A request with ~20,000 input
    tokens and ``max_output_tokens=1000``, one call, no report: charged its image, its text and 1,000
    prompt tokens ($0.005), though the image model may have read the 20,000 (~$0.10 at $5 / M)."""
    request = {**drawing(max_tool_calls=1), "max_output_tokens": 1000}
    request["input"][0]["content"][0]["text"] = "word " * 20_000
    body = image_response([{"type": "image_generation", **DRAWN}], [SIZED], None)
    _, charged, _ = charged_through_the_sdk(request, body)
    assert charged >= (IMAGE + TEXT + 20_000 * 5) * 1000

"""Second review of imagecharge: the image tool's prompt bound under ``fit=``, and the estimate's
``fees`` holding the image tool's bounds among its call fees."""

from __future__ import annotations

from decimal import Decimal

import openai

import budgetguard
from budgetguard import Event, Usage, estimate, price_book
from budgetguard._rates import CALL_FEES
from tests.integrations.scripted import serve
from tests.test_image_tool import BOUND, DRAWN, SIZED, drawing, image_response


def test_fit_lowers_the_image_prompt_bound_with_the_output() -> None:
    """The prompts of every image call are at most the calling model's output bound, which ``fit=``
    lowers (``Estimator.priced``). gpt-5 offering one gpt-image-2 call at ``max_output_tokens=100_000``
    lowered to 1,000 was reserved $0.80677, a request asking 1,000 $0.31177: the prompts stayed at
    100,000 tokens ($0.50 at $5 / M), so a budget with $0.50 left refused a call that fits, and a call
    no report covers was charged $0.7908325 where it can have billed $0.2958325."""
    estimator = budgetguard.Estimator()
    request = drawing(max_tool_calls=1)
    fitted = estimator.priced(estimator(request), 1000)
    asked = estimator({**request, "max_output_tokens": 1000})
    assert fitted.cost_nano == asked.cost_nano
    uncovered = Usage(input_tokens=10, output_tokens=10, image_generation_calls=1)
    assert fitted.price.cost_nano(uncovered) == asked.price.cost_nano(uncovered)
    # and where another model answers (its price with the estimate's fees, ``Guard.actual``)
    served = price_book.get("gpt-5-mini")
    assert served.with_request(fitted.price, fitted.fees).cost_nano(uncovered) == served.with_request(
        asked.price, asked.fees
    ).cost_nano(uncovered)


def test_the_estimates_fees_are_call_fees() -> None:
    """``Estimate.fees`` is documented as the call fees (USD per thousand calls) the request's tools
    set; with an image tool it also held ``image_io``, ``image_prompts`` (a token count, 100000) and
    ``image_prompt_rate`` (USD per million tokens), which are not call fees."""
    names = {name for name, _ in estimate(drawing()).fees}
    assert names <= set(CALL_FEES), names


def test_fit_admits_an_image_call_that_fits_once_its_output_is_lowered() -> None:
    """$0.50 a day: gpt-5 offering one gpt-image-2 1024x1024 high call asks 100,000 output tokens. At
    1,000 it is reserved $0.31177, so ``fit=`` can send it; with the prompts kept at 100,000 tokens
    ($0.50) no lowered output fitted, and the call was refused."""
    events: list[Event] = []
    guard = budgetguard.Guard(
        "memory://", budgets=[budgetguard.Budget("feature", usd="0.50", per="day")], on_event=events.append
    )
    body = image_response([{"type": "image_generation", **DRAWN}], [SIZED], None)
    body = {"id": "resp_1", "object": "response", "model": "gpt-5", "status": "completed", **body}
    with serve([body], path="/v1/responses") as server:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
        try:
            create = guard.with_budget(client.responses.create, feature="draw", fit=True)
            create(**drawing(max_tool_calls=1))
        finally:
            client.close()
    (fitted,) = [e for e in events if e.kind == "fitted"]
    (committed,) = [e for e in events if e.kind == "committed"]
    assert fitted.data["from"] == 100_000 and fitted.data["to"] < 100_000
    assert committed.actual is not None and committed.estimated is not None
    assert committed.actual <= committed.estimated <= Decimal("0.50")


def test_no_prompts_are_reserved_where_no_call_can_run() -> None:
    """``max_tool_calls=0`` (or ``Estimator(tool_calls={"image_generation": 0})``): no image call can run,
    so no prompt is written for one. gpt-5 at ``max_output_tokens=100_000`` offering gpt-image-2 was
    reserved $1.500525 (main: $1.000525, without the tool $1.00001625): the prompt bound, 100,000
    tokens at $5 / M, held for calls that cannot be made."""
    request = drawing(max_tool_calls=0)
    bare = estimate({**request, "tools": []}).cost_nano
    assert estimate(request).cost_nano - bare < BOUND * 5 * 1000
    unbounded = drawing()
    no_calls = budgetguard.Estimator(tool_calls={"image_generation": 0})(unbounded)
    assert no_calls.cost_nano - estimate({**unbounded, "tools": []}).cost_nano < BOUND * 5 * 1000

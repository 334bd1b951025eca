"""Anthropic server-side fallbacks, billed hop by hop: the real anthropic SDK client through ``guard.wrap``
against ``MockProvider``, whose model declines (``MockProvider.decline``) and whose fallback serves, with
the ``usage.iterations`` Anthropic reports: a ``message`` per declined hop on its own ``model``, the
serving hop's ``fallback_message``, the top level counting them all, the answer naming the serving model.

A review found the declined hops priced at the model the response names (the serving one): a dearer
model that declined was charged at the cheaper one's price, the spend understated. Each iteration is now
priced at its own model (one the price data does not know is a ``PricingError``: the reservation's worst
case charged, flagged, never $0), and a fallback stream cut before its usage is priced at the chain's
dearest model (which hop was streaming is unknown).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest

import budgetguard as bg
from budgetguard.testing import MockProvider
from tests.sdk_http import ANTHROPIC_STREAM_CUT

OPUS, SONNET, HAIKU = "claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"
ASK: dict[str, Any] = {"max_tokens": 300, "messages": [{"role": "user", "content": "Explain holds."}]}


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="5", per="day")])
    yield made
    made.close()


def bill(iterations: list[Mapping[str, Any]]) -> int:
    """The exact bill of the iterations, each at its own model's price per million tokens, rounded up to a
    whole nano-USD once (Anthropic bills each model's tokens at that model's price)."""
    total = Decimal(0)
    for hop in iterations:
        rates = bg.get_price(hop["model"]).base
        total += hop["input_tokens"] * rates.input + hop["output_tokens"] * rates.output
    return math.ceil(total * 1000)  # (USD per million tokens -> nano-USD: x 1e9 / 1e6)


def committed(guard: bg.Guard) -> list[tuple[str, int | None]]:
    return [(e.event, e.amounts["usd"] if e.event == "committed" else None) for e in guard.ledger.history()]


@pytest.mark.parametrize("written", [0, 15])
def test_a_declined_dearer_hop_is_charged_at_its_own_model(
    api: MockProvider, guard: bg.Guard, written: int
) -> None:
    """Opus declines (before writing, or after 15 tokens) and Haiku serves: Opus' tokens at Opus' price."""
    api.decline(OPUS, after=written)
    with guard.wrap(api.anthropic(), user="u") as client:
        reply = client.beta.messages.create(model=OPUS, **ASK, extra_body={"fallbacks": [{"model": HAIKU}]})

    assert reply.model == HAIKU
    [usage] = api.usages
    iterations = usage["iterations"]
    assert [(i["type"], i["model"]) for i in iterations] == [("message", OPUS), ("fallback_message", HAIKU)]
    assert iterations[0]["output_tokens"] == written
    at_haiku = bill([{**hop, "model": HAIKU} for hop in iterations])  # (what was charged before)
    assert committed(guard) == [("committed", bill(iterations))]
    assert bill(iterations) > at_haiku
    [entry] = guard.ledger.history()
    assert entry.amounts["usd"] <= Decimal(entry.data["estimated_usd"]) * 10**9  # (the chain's worst case)


def test_every_hop_of_a_longer_chain_is_charged_at_its_own_model(api: MockProvider, guard: bg.Guard) -> None:
    api.decline(OPUS, after=25)
    api.decline(SONNET, after=30)
    chain = [{"model": SONNET}, {"model": HAIKU}]
    with guard.wrap(api.anthropic(), user="u") as client:
        client.beta.messages.create(model=OPUS, **ASK, extra_body={"fallbacks": chain})
    [usage] = api.usages
    iterations = usage["iterations"]
    assert [i["model"] for i in iterations] == [OPUS, SONNET, HAIKU]
    assert committed(guard) == [("committed", bill(iterations))]


def test_an_iteration_on_a_model_with_no_price_is_a_pricing_error() -> None:
    """Never $0: the guard charges such a call its reservation, flagged ``unpriced`` (``_settle``)."""
    zero = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    declined = {"type": "message", "model": "claude-nonesuch-9", "input_tokens": 20, "output_tokens": 5}
    served = {"type": "fallback_message", "model": HAIKU, "input_tokens": 25, "output_tokens": 50}
    usage = bg.Usage.from_response(
        {
            "input_tokens": 45,
            "output_tokens": 55,
            **zero,
            "iterations": [{**declined, **zero}, {**served, **zero}],
        }
    )
    assert (usage.input_tokens, usage.output_tokens) == (0, 0)  # (every hop billed at its own model)
    with pytest.raises(bg.PricingError, match="claude-nonesuch-9"):
        bg.cost(HAIKU, usage)


def test_a_fallback_stream_cut_before_its_usage_is_priced_at_the_chains_dearest_model(
    api: MockProvider, guard: bg.Guard
) -> None:
    """Haiku asked, Opus its fallback: the stream breaks before its usage, and which hop wrote what it
    received is unknown, so it is priced at Opus (before: at Haiku, a fifth of Opus' price for output)."""
    api.cut(after=4)  # message_start, content_block_start, ping, one text delta
    with guard.wrap(api.anthropic(), user="u") as client:
        stream = client.beta.messages.create(
            model=HAIKU, **ASK, stream=True, extra_body={"fallbacks": [{"model": OPUS}]}
        )
        with pytest.raises(ANTHROPIC_STREAM_CUT):
            for _ in stream:
                pass
    [entry] = guard.ledger.history()
    assert entry.event == "committed" and entry.data["interrupted"] is True
    assert entry.data["priced_as"] == OPUS
    usage = bg.Usage(**entry.data["usage"])
    assert usage.output_tokens > 0
    assert entry.amounts["usd"] == bg.get_price(OPUS).cost_nano(usage) > bg.get_price(HAIKU).cost_nano(usage)


def test_a_stream_cut_without_fallbacks_is_priced_at_its_model(api: MockProvider, guard: bg.Guard) -> None:
    api.cut(after=4)
    with guard.wrap(api.anthropic(), user="u") as client:
        stream = client.beta.messages.create(model=HAIKU, **ASK, stream=True)
        with pytest.raises(ANTHROPIC_STREAM_CUT):
            for _ in stream:
                pass
    [entry] = guard.ledger.history()
    assert "priced_as" not in entry.data
    assert entry.amounts["usd"] == bg.get_price(HAIKU).cost_nano(bg.Usage(**entry.data["usage"]))


def test_a_streamed_fallback_is_charged_each_hop_at_its_own_model(api: MockProvider, guard: bg.Guard) -> None:
    """The final ``message_delta`` carries the iterations (``message_start`` named the model asked)."""
    api.decline(OPUS, after=15)
    with guard.wrap(api.anthropic(), user="u") as client:
        stream = client.beta.messages.create(
            model=OPUS, **ASK, stream=True, extra_body={"fallbacks": [{"model": HAIKU}]}
        )
        kinds = [event.type for event in stream]
    assert kinds.count("content_block_start") == 3  # (Opus' partial text, the fallback block, Haiku's)
    [usage] = api.usages
    assert committed(guard) == [("committed", bill(usage["iterations"]))]


@pytest.mark.parametrize(
    ("asked", "chain", "serving"), [(OPUS, [HAIKU], HAIKU), (HAIKU, [OPUS, SONNET], SONNET)]
)
def test_a_declined_hop_that_names_no_model_is_charged_at_the_chains_dearest_model(
    guard: bg.Guard, asked: str, chain: list[str], serving: str
) -> None:
    """Which model declined is unknown when its ``message`` iteration names none: it is charged at the
    dearest model it may have run on (the model asked or a fallback: Opus here), never below. A review
    found it left in the top-level counts, charged at the serving model (Haiku: a fifth of Opus' price)."""
    attempt = guard.attempt(
        {**ASK, "model": asked, "fallbacks": [{"model": model} for model in chain]},
        provider="anthropic",
        scopes={"user": "u"},
    )
    attempt.reserve()
    zero = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    declined = {"type": "message", "input_tokens": 1000, "output_tokens": 100, **zero}
    served = {"type": "fallback_message", "model": serving, "input_tokens": 1100, "output_tokens": 200}
    usage = {"input_tokens": 2100, "output_tokens": 300, **zero, "iterations": [declined, {**served, **zero}]}
    attempt.commit({"model": serving, "usage": usage})
    at_opus = bill([{**declined, "model": OPUS}, served])
    assert committed(guard) == [("committed", at_opus)]
    assert at_opus > bill([{**declined, "model": serving}, served])  # (what was charged before)

"""No recorded request is estimated below the input tokens its provider counted (``token_pairs.jsonl``).

One test per pair whose count the request bounds (visible, or server-side history bounded by the
context window); pairs whose count includes server-side tool passes are only reported
(``python -m tests.realworld.pairs`` prints every distribution).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from budgetguard import count_openai_request
from budgetguard._tokens_openai import read_openai_request, unseen_inputs
from tests.realworld.conftest import ABSENT, REPO
from tests.realworld.pairs import ASSERTED, Pair, estimated_input, load_pairs, pairs_file, ratios, spreads


def _params() -> list[object]:
    pairs = [pair for pair in load_pairs() if pair.kind in ASSERTED]
    if not pairs:
        return [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT.format(pairs_file())))]
    return [pytest.param(pair, id=pair.id) for pair in pairs]


@pytest.mark.parametrize("pair", _params())
def test_the_estimate_bounds_the_provider_count(pair: Pair, realworld: Path) -> None:
    estimated = estimated_input(pair)
    assert estimated >= pair.counted, (
        f"estimated {estimated} input tokens, {pair.provider} counted {pair.counted} "
        f"(ratio {estimated / pair.counted:.2f}) for {pair.source}"
    )


_CLAIM = re.compile(
    r"(?P<name>Claude|OpenAI): median (?P<median>\d+\.\d\d)x, p95 (?P<p95>\d+\.\d\d)x of \w+'s count "
    r"\((?P<n>\d+) recorded requests, none below\)"
)


def test_the_readme_states_the_measured_distribution(realworld: Path) -> None:
    """The README's "median, p95" sentences are what the recorded pairs measure today."""
    claims = {m["name"]: m for m in _CLAIM.finditer((REPO / "README.md").read_text(encoding="utf-8"))}
    assert set(claims) == {"Claude", "OpenAI"}, "the README states both providers' distributions"
    measured = {s.provider: s for s in spreads(ratios(load_pairs())) if s.kind == "visible"}
    for name, provider in (("Claude", "anthropic"), ("OpenAI", "openai")):
        claim, spread = claims[name], measured[provider]
        assert spread.below == 0
        assert (claim["median"], claim["p95"], int(claim["n"])) == (
            f"{spread.median:.2f}",
            f"{spread.p95:.2f}",
            spread.n,
        ), f"README says {claim.group(0)!r}; measured {spread}"


def test_one_reading_agrees_with_the_count_and_the_references(realworld: Path) -> None:
    """The estimator reads an OpenAI request once (``read_openai_request``): on every recorded one it
    gives what ``count_openai_request`` and ``unseen_inputs`` give."""
    requests = [
        pair.request
        for pair in load_pairs()
        if pair.provider == "openai" and ("messages" in pair.request or "input" in pair.request)
        and "embedding" not in str(pair.request.get("model"))
    ]  # fmt: skip
    assert len(requests) > 300
    for request in requests:
        assert read_openai_request(request) == (count_openai_request(request), unseen_inputs(request))

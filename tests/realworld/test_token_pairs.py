"""No recorded request is estimated below the input tokens its provider counted (``token_pairs.jsonl``).

One test per pair whose count the request bounds (visible, or server-side history bounded by the
context window); pairs whose count includes server-side tool passes are only reported
(``python -m tests.realworld.pairs`` prints every distribution).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realworld.conftest import ABSENT
from tests.realworld.pairs import ASSERTED, Pair, estimated_input, load_pairs, pairs_file


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

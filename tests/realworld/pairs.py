"""Recorded requests paired with the input tokens the provider counted, against budgetguard's estimate.

``token_pairs.jsonl`` (read in place from the real-world fixtures folder) holds requests as they were
sent and the input tokens OpenAI or Anthropic counted for them: a response's usage, or the answer of a
token counting endpoint. An estimate is an upper bound when ``estimate / counted >= 1``.

Each pair is one of three kinds:

* ``visible``: everything the model read is in the request; the estimate must bound it;
* ``history``: the request continues server-side state it does not show (``previous_response_id``,
  ``conversation``); the estimate must bound it too, by the model's context window or a caller's bound;
* ``tool passes``: the provider ran server-side tools (web search, code execution...) and fed their
  results back, so the count covers several passes the request cannot show: the estimate bounds them
  by its tool passes (``Estimate.tool_pass_tokens``), and their reservation covers at least their input
  bill (``test_tool_passes.py``);
* ``uncounted``: the recording reports no input tokens (a cassette with zeroed usage): left out.

``python -m tests.realworld.pairs`` prints the ratio distribution of each provider and kind, and with
``--below`` every asserted pair that is estimated below its count.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budgetguard import Estimator

from .conftest import realworld_dir

ASSERTED = ("visible", "history")


@dataclass(frozen=True, eq=False)
class Pair:
    line: int  # 1-based line of token_pairs.jsonl
    provider: str  # "openai" / "anthropic"
    endpoint: str  # chat, responses, embeddings, messages, count_tokens, input_tokens
    request: dict[str, Any]
    counted: int  # the provider's input tokens
    kind: str  # visible, history, tool passes
    source: str  # repository and cassette it was recorded in

    @property
    def id(self) -> str:
        return f"{self.line:03d}-{self.provider}-{self.request.get('model')}"


def pairs_file() -> Path:
    return realworld_dir() / "token_pairs.jsonl"


def _kind(row: dict[str, Any]) -> str:
    request = row["request"]
    if row["actual_input_tokens"] <= 0:
        return "uncounted"
    if row.get("server_tool_calls"):
        return "tool passes"
    if request.get("previous_response_id") or request.get("conversation"):
        return "history"
    return "visible"


def load_pairs(path: Path | None = None) -> list[Pair]:
    path = path or pairs_file()
    if not path.is_file():
        return []
    pairs = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(text)
        source = row["source"]
        pairs.append(
            Pair(
                line=line,
                provider=row["provider"],
                endpoint=row["endpoint"],
                request=row["request"],
                counted=row["actual_input_tokens"],
                kind=_kind(row),
                source=f"{source['repo']} {source['path']} #{source.get('interaction', 0)}",
            )
        )
    return pairs


def estimated_input(pair: Pair, estimator: Estimator | None = None) -> int:
    """The input tokens budgetguard reserves for the pair's request (default settings): for a pair
    without tool passes, without the passes its server-side tools may run (what the count covers)."""
    estimator = estimator or Estimator()
    request = {k: v for k, v in pair.request.items() if k != "stream"}
    est = estimator(request, provider=pair.provider, api=pair.provider)
    return est.input_tokens if pair.kind == "tool passes" else est.input_tokens - est.tool_pass_tokens


@dataclass(frozen=True)
class Spread:
    provider: str
    kind: str
    n: int
    below: int
    minimum: float
    median: float
    p95: float
    maximum: float

    def __str__(self) -> str:
        return (
            f"{self.provider:9} {self.kind:11} n={self.n:3}  below={self.below:3}  min={self.minimum:.2f}  "
            f"median={self.median:.2f}  p95={self.p95:.2f}  max={self.maximum:.2f}"
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def spreads(ratios: dict[Pair, float]) -> Iterator[Spread]:
    """The distribution of estimate / counted, per provider and kind."""
    groups: dict[tuple[str, str], list[float]] = {}
    for pair, ratio in ratios.items():
        groups.setdefault((pair.provider, pair.kind), []).append(ratio)
    for (provider, kind), values in sorted(groups.items()):
        yield Spread(
            provider, kind, len(values), sum(v < 1 for v in values), min(values),
            statistics.median(values), percentile(values, 95), max(values),
        )  # fmt: skip


def ratios(pairs: Sequence[Pair]) -> dict[Pair, float]:
    estimator = Estimator()
    return {
        pair: estimated_input(pair, estimator) / pair.counted for pair in pairs if pair.kind != "uncounted"
    }


def main(argv: Sequence[str]) -> int:
    pairs = load_pairs()
    if not pairs:
        print(f"no token pairs at {pairs_file()}")
        return 1
    found = ratios(pairs)
    for spread in spreads(found):
        print(spread)
    if "--below" in argv:
        for pair, ratio in sorted(found.items(), key=lambda item: item[1]):
            if ratio < 1 and pair.kind in ASSERTED:
                print(f"{ratio:.2f} {pair.id} counted={pair.counted} {pair.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

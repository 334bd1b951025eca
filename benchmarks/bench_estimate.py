"""``budgetguard.estimate(request)`` against a raw tiktoken encode of the same text.

Three scenarios, each timed in the same run as its baseline (see ``_harness``):

* ``short request``: a chat request whose system prompt and user message total ~30 tokens of text,
  unique every call (a counter in both), so the content cache never hits;
* ``100k-token request``: a ~100k-token generated English-ish document with a varying prefix, unique
  every call;
* ``repeated 5k system prompt``: a ~5k-token system prompt that every call repeats, plus a short
  unique user message; budgetguard's content cache should make this much cheaper than encoding.
  A second row builds the system prompt as a fresh ``str`` object per call (as a request decoded from
  JSON would), so its hash is not cached in the object and must be recomputed.

The baseline is ``enc.encode_ordinary(text)`` with the very ``Encoding`` object budgetguard uses,
where ``text`` is every string the estimate counts (each message's role and content) concatenated:
the baseline encodes the same total text, in one call. Inputs are built outside the timed region,
each side gets its own (equally shaped) inputs, and a check before timing asserts that the estimate
counted exactly those strings.
"""

from __future__ import annotations

import functools
import itertools
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

import budgetguard
from budgetguard import _tokens

from ._harness import compare, count_here, instructions, row

MODEL = "gpt-4o-mini"  # an o200k_base model with a price in genai-prices
ENCODING = "o200k_base"
MAX_TOKENS = 512
# OpenAI's counting rules as budgetguard applies them: 3 per message, 3 to prime the reply.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3

_counter = itertools.count(1)

_VOCABULARY = (
    "the budget team reviewed every invoice before the quarter closed and found that most vendors "
    "charged what they promised but some services billed twice for a single order while others "
    "applied discounts late so the finance group asked engineering to track each model call with "
    "its tokens price and owner because a shared limit only works when requests reserve their worst "
    "case first then settle the actual usage after the response arrives including retries streams "
    "and cached prompts which cost less than fresh input although writing a cache entry costs more "
    "analysts compared monthly reports against forecasts noting where traffic grew faster than "
    "expected during product launches holiday campaigns and internal experiments run by research "
    "teams in several regions with different currencies taxes and contract terms negotiated yearly"
)
_WORDS = _VOCABULARY.split()


def _document(seed: int, tokens: int, enc: Any) -> str:
    """Deterministic English-ish prose of about ``tokens`` o200k tokens (sentences, commas, numbers)."""
    rng = random.Random(seed)
    sentences: list[str] = []
    total = 0
    while total < tokens:
        words = rng.choices(_WORDS, k=rng.randint(8, 22))
        if rng.random() < 0.3:
            words.insert(rng.randint(1, len(words) - 1), f"{rng.randint(2, 9999)},")
        sentence = " ".join(words).capitalize() + rng.choice(".....?!")
        if rng.random() < 0.15:
            sentence += "\n\n"
        sentences.append(sentence)
        total += len(enc.encode_ordinary(" " + sentence))
    return " ".join(sentences)


def _short_request(n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": f"You are a terse billing assistant, session {n}."},
            {
                "role": "user",
                "content": f"Ticket {n}: my invoice shows two charges for one order. Refund one of them?",
            },
        ],
        "max_tokens": MAX_TOKENS,
    }


def _large_request(n: int, body: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": f"Summarize document {n} in five bullet points."},
            {"role": "user", "content": f"Document {n}.\n\n{body}"},
        ],
        "max_tokens": MAX_TOKENS,
    }


def _repeated_request(n: int, system: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Question {n}: which of the rules above applies to order {n}?"},
        ],
        "max_tokens": MAX_TOKENS,
    }


def _pieces(request: dict[str, Any]) -> list[str]:
    """Every string the estimate counts: each message's role and content."""
    return [value for message in request["messages"] for value in message.values()]


def _text(request: dict[str, Any]) -> str:
    return "".join(_pieces(request))


def _check(request: dict[str, Any], enc: Any) -> int:
    """Assert that ``estimate`` counts exactly the strings the baseline encodes; the text's tokens."""
    _tokens._cache.clear()  # so this check neither hits nor warms the cache for the timed runs
    expected = sum(len(enc.encode_ordinary(piece)) for piece in _pieces(request))
    expected += TOKENS_PER_MESSAGE * len(request["messages"]) + REPLY_PRIMING
    got = budgetguard.estimate(request).input_tokens
    if got != expected:
        raise RuntimeError(f"estimate counted {got} input tokens, the baseline's strings give {expected}")
    _tokens._cache.clear()
    return len(enc.encode_ordinary(_text(request)))


def _fresh(text: str) -> str:
    """An equal ``str`` that is a new object, so its hash is not cached yet."""
    return text[:1] + text[1:]


def run(quick: bool) -> list[dict[str, Any]]:
    enc = budgetguard.get_encoding(ENCODING)
    if _tokens.encoding_for_model(MODEL) is not enc:
        raise RuntimeError(f"{MODEL} does not use the shared {ENCODING} Encoding object")
    body = _document(seed=1, tokens=100_000, enc=enc)
    system = _document(seed=2, tokens=5_000, enc=enc)
    rows: list[dict[str, Any]] = []

    def requests(build: Callable[[int], dict[str, Any]], n: int) -> tuple[Sequence[Any], Sequence[Any]]:
        """``n`` fresh requests for ``estimate``, and the texts of ``n`` other fresh ones for the baseline."""
        cand = [build(next(_counter)) for _ in range(n)]
        base = [_text(build(next(_counter))) for _ in range(n)]
        return cand, base

    # name, request builder, target ratio, (trials, iterations) for a full run, and for --quick
    scenarios: list[tuple[str, Callable[[int], dict[str, Any]], float, tuple[int, int], tuple[int, int]]] = [
        ("short request (~30 tokens, unique)", _short_request, 1.5, (31, 2000), (9, 500)),
        ("100k-token request (unique)", lambda n: _large_request(n, body), 1.1, (21, 3), (5, 1)),
        (
            "repeated 5k system prompt (same str)",
            lambda n: _repeated_request(n, system),
            0.05,
            (21, 100),
            (7, 30),
        ),
        (
            "repeated 5k system prompt (fresh str)",
            lambda n: _repeated_request(n, _fresh(system)),
            0.05,
            (21, 100),
            (7, 30),
        ),
    ]
    for name, build, target, full, short in scenarios:
        trials, iterations = short if quick else full
        tokens = _check(build(0), enc)
        result = compare(
            budgetguard.estimate,
            enc.encode_ordinary,
            functools.partial(requests, build),
            trials=trials,
            iterations=iterations,
        )
        _tokens._cache.clear()
        rows.append(row(name, result, target=target, text_tokens=tokens))
    return rows


# -- instruction counts: python -m benchmarks.bench_estimate --callgrind [CALLS] --------------------

_SIDES = ("estimate", "encode")


def _count_side(side: str, calls: int) -> None:
    """In the valgrind child: count ``calls`` short unique requests, estimated or their text encoded."""
    enc = budgetguard.get_encoding(ENCODING)
    requests = [_short_request(n) for n in range(300 + calls)]
    if side == "estimate":
        count_here(lambda i: budgetguard.estimate(requests[i]), calls)
    else:
        texts = [_text(request) for request in requests]
        count_here(lambda i: enc.encode_ordinary(texts[i]), calls)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count-side"]:
        _count_side(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--callgrind"]:
        calls = int(sys.argv[2]) if sys.argv[2:3] else 500
        counts = {side: instructions("bench_estimate", side, calls) for side in _SIDES}
        for side in _SIDES:
            print(f"{side:>9}: {counts[side] / 1000:8.1f}k instructions per short request")
        print(f"ratio by instructions: {counts['estimate'] / counts['encode']:.2f} (target <= 1.5)")
    else:
        sys.exit("usage: python -m benchmarks.bench_estimate --callgrind [CALLS]")

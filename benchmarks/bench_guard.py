"""Decorator overhead: a guarded call (memory store, tiny prompt) vs the bare call and vs tenacity.

The wrapped function returns a canned response at once, so what is timed is the wrapper: estimate,
reserve, reconcile (budgetguard) or tenacity's attempt loop. Overhead = wrapped - bare, each measured in
the same run; the target is budgetguard's overhead <= 3x tenacity's.

Instruction counts, which repeat to within 1 % on a noisy machine (they do not see cache misses, so a
side that allocates more looks cheaper than it times): ``python -m benchmarks.bench_guard --callgrind``
runs each side under ``valgrind --tool=callgrind --instr-atstart=no`` and counts only N calls after a
warm-up (``callgrind_control -i on`` / ``off`` around them).
"""

from __future__ import annotations

import sys
from typing import Any

import tenacity

import budgetguard as bg

from ._harness import compare, count_here, instructions

MESSAGES = [{"role": "user", "content": "Hi"}]
RESPONSE = {"usage": {"prompt_tokens": 8, "completion_tokens": 5}}


def _bare(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return RESPONSE


def _sides() -> tuple[bg.Guard, dict[str, Any]]:
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1000000", per="day")])
    guarded = guard.with_budget(user="alice")(_bare)
    retried = tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)(_bare)
    return guard, {"guarded": guarded, "tenacity": retried, "bare": _bare}


def run(quick: bool) -> list[dict[str, Any]]:
    guard, sides = _sides()
    guarded, retried = sides["guarded"], sides["tenacity"]
    trials, iterations = (7, 300) if quick else (21, 3000)

    def inputs(n: int) -> tuple[list[int], list[int]]:
        return list(range(n)), list(range(n))

    def call(fn: Any) -> Any:
        return lambda _: fn(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)

    g = compare(call(guarded), call(_bare), inputs, trials=trials, iterations=iterations)
    t = compare(call(retried), call(_bare), inputs, trials=trials, iterations=iterations)
    guard_overhead = g.candidate_ns - g.baseline_ns
    tenacity_overhead = t.candidate_ns - t.baseline_ns
    ratio = guard_overhead / tenacity_overhead
    guard.close()
    return [
        {
            "name": "guarded call overhead vs tenacity @retry overhead",
            "value": round(guard_overhead / 1000, 3),
            "baseline": round(tenacity_overhead / 1000, 3),
            "unit": "us/call",
            "ratio": round(ratio, 3),
            "target": 3.0,
            "passed": ratio <= 3.0,
            "bare_call_us": round(g.baseline_ns / 1000, 3),
            "trials": trials,
            "iterations": iterations,
        }
    ]


def _count_side(side: str, calls: int) -> None:
    """In the valgrind child: count ``calls`` calls of one side after a warm-up."""
    fn = _sides()[1][side]
    count_here(lambda _: fn(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50), calls)


def callgrind(calls: int = 500) -> dict[str, float]:
    """Instructions per call of each side, and the overheads' ratio (the target's, by instructions)."""
    per_call = {side: instructions("bench_guard", side, calls) for side in ("guarded", "tenacity", "bare")}
    bare = per_call["bare"]
    per_call["ratio"] = (per_call["guarded"] - bare) / (per_call["tenacity"] - bare)
    return per_call


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count-side"]:
        _count_side(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--callgrind"]:
        counts = callgrind(*(int(a) for a in sys.argv[2:3]))
        for side in ("guarded", "tenacity", "bare"):
            print(f"{side:>9}: {counts[side] / 1000:8.1f}k instructions per call")
        print(f"overhead ratio by instructions: {counts['ratio']:.2f} (target <= 3.0)")
    else:
        sys.exit("usage: python -m benchmarks.bench_guard --callgrind [CALLS]")

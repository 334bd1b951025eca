"""Decorator overhead: a guarded call (memory store, tiny prompt) vs the bare call and vs tenacity.

The wrapped function returns a canned response at once, so what is timed is the wrapper: estimate,
reserve, reconcile (budgetguard) or tenacity's attempt loop. Overhead = wrapped - bare, each measured in
the same run; the target is budgetguard's overhead <= 3x tenacity's.
"""

from __future__ import annotations

from typing import Any

import tenacity

import budgetguard as bg

from ._harness import compare

MESSAGES = [{"role": "user", "content": "Hi"}]
RESPONSE = {"usage": {"prompt_tokens": 8, "completion_tokens": 5}}


def _bare(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return RESPONSE


def run(quick: bool) -> list[dict[str, Any]]:
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1000000", per="day")])
    guarded = guard.with_budget(user="alice")(_bare)
    retried = tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)(_bare)
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

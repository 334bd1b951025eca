"""Shared timing for the benchmarks: interleaved trials, per-call nanoseconds, median-of-trials ratios.

A comparison times a *candidate* (budgetguard) against a *baseline* (the raw operation it wraps) in
the same process and the same run. Each trial times one fresh batch of inputs for each side, the two
back to back, and alternates which side goes first so that drift (CPU frequency, a noisy neighbour on
a shared machine) lands on both. The reported ratio is the median of the per-trial ratios, which is
robust to the occasional trial that a neighbour ruined; the quartiles of the ratios say how noisy the
run was.
"""

from __future__ import annotations

import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Comparison", "callgrind_switch", "compare", "count_here", "instructions", "row", "run_counted"]


@dataclass(frozen=True)
class Comparison:
    """Per-call times (ns, medians over trials) and the median of the per-trial ratios."""

    candidate_ns: float
    baseline_ns: float
    ratio: float
    ratio_q1: float
    ratio_q3: float
    trials: int
    iterations: int


def _time_batch(fn: Callable[[Any], object], inputs: Sequence[Any]) -> float:
    """Mean ns per call of ``fn`` over ``inputs``, with the cyclic GC paused (as ``timeit`` does)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for item in inputs:
            fn(item)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / len(inputs)


def compare(
    candidate: Callable[[Any], object],
    baseline: Callable[[Any], object],
    make_inputs: Callable[[int], tuple[Sequence[Any], Sequence[Any]]],
    *,
    trials: int,
    iterations: int,
    warmup: int = 1,
) -> Comparison:
    """Time ``candidate`` against ``baseline`` over ``trials`` interleaved trials.

    ``make_inputs(n)`` returns two fresh sequences of ``n`` inputs, one for each side (built outside
    the timed region, and distinct per side so neither side finds the other's data warm in the CPU
    caches). It is called once per trial, so inputs that must be unique stay unique across trials.
    """
    for _ in range(warmup):
        cand_inputs, base_inputs = make_inputs(max(1, iterations // 4))
        _time_batch(candidate, cand_inputs)
        _time_batch(baseline, base_inputs)
    cand_times: list[float] = []
    base_times: list[float] = []
    ratios: list[float] = []
    for trial in range(trials):
        cand_inputs, base_inputs = make_inputs(iterations)
        if trial % 2 == 0:
            c = _time_batch(candidate, cand_inputs)
            b = _time_batch(baseline, base_inputs)
        else:
            b = _time_batch(baseline, base_inputs)
            c = _time_batch(candidate, cand_inputs)
        cand_times.append(c)
        base_times.append(b)
        ratios.append(c / b)
        del cand_inputs, base_inputs
    if len(ratios) >= 2:
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    else:
        q1 = q3 = ratios[0]
    return Comparison(
        candidate_ns=statistics.median(cand_times),
        baseline_ns=statistics.median(base_times),
        ratio=statistics.median(ratios),
        ratio_q1=q1,
        ratio_q3=q3,
        trials=trials,
        iterations=iterations,
    )


def row(name: str, result: Comparison, *, target: float, **extra: Any) -> dict[str, Any]:
    """One result row: ``value`` and ``baseline`` are µs per call, ``ratio`` = value / baseline."""
    return {
        "name": name,
        "value": round(result.candidate_ns / 1000, 3),
        "baseline": round(result.baseline_ns / 1000, 3),
        "unit": "us/call",
        "ratio": round(result.ratio, 4),
        "ratio_iqr": [round(result.ratio_q1, 4), round(result.ratio_q3, 4)],
        "target": target,
        "passed": result.ratio <= target,
        "trials": result.trials,
        "iterations": result.iterations,
        **extra,
    }


def threads_batch(work: Callable[[int], object], clients: int, count: int) -> float:
    """Wall ns per operation: ``count`` calls of ``work(i)`` in each of ``clients`` threads."""
    barrier = threading.Barrier(clients)
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            started = time.perf_counter()
            for _ in range(count):
                work(i)
            spans.append((started, time.perf_counter()))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return elapsed * 1e9 / (count * clients)


# -- instruction counts (valgrind's callgrind), for when timings wander ---------------------------


def count_here(work: Callable[[int], object], calls: int, warmup: int = 300) -> None:
    """In a process valgrind runs with ``--instr-atstart=no``: warm up, then count ``calls`` calls of
    ``work(i)`` only (``callgrind_control -i on`` / ``off`` around them)."""
    for i in range(warmup):
        work(i)
    gc.collect()  # a full collection the warm-up left due (modules a first call imported): not per call
    callgrind_switch("on")
    for i in range(warmup, warmup + calls):
        work(i)
    callgrind_switch("off")


def callgrind_switch(state: str) -> None:
    """Start (``"on"``) or stop (``"off"``) counting this process's instructions (under callgrind)."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def instructions(module: str, side: str, calls: int) -> float:
    """Instructions per call of one side of ``python -m benchmarks.<module> --count-side SIDE CALLS``
    (which calls ``count_here``), under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        return run_counted(module, side, calls, f"{tmp}/out")[0] / calls


def run_counted(module: str, side: str, calls: int, profile: str) -> tuple[int, str]:
    """``python -m benchmarks.<module> --count-side SIDE CALLS`` under callgrind, its profile written to
    ``profile``: the instructions counted in all, and what it printed."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={profile}",
         sys.executable, "-m", f"benchmarks.{module}", "--count-side", side, str(calls)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind: {done.stderr[-500:]}")
    return int(found.group(1)), done.stdout

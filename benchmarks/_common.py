"""Helpers shared by the peers, throughput and footprint benchmarks: optional peers, skipped rows,
interleaved batch trials (for measurements that are not one call per input), and the Redis to use."""

from __future__ import annotations

import importlib
import math
import os
import secrets
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _harness
from ._harness import Comparison
from .bench_ledger import URL_ENV, _delete_namespace, _quartiles, _redis_server

__all__ = ["NOT_INSTALLED", "bench_redis", "interleave", "peer", "ratio_row", "row", "skipped"]

NOT_INSTALLED = "not installed (pip install -r benchmarks/requirements.txt)"


def peer(module: str) -> Any | None:
    """The peer's module, or None when it is not installed (the benchmark then skips its rows)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def row(name: str, result: Comparison, *, target: float | None, **extra: Any) -> dict[str, Any]:
    """``_harness.row``, also for a comparison without a target (``target`` None)."""
    out = _harness.row(name, result, target=math.inf if target is None else target, **extra)
    if target is None:
        out.update(target=None, passed=None)
    return out


def skipped(name: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A row that could not run; the table prints ``reason`` and SKIP."""
    print(f"  {name}: {reason} {extra or ''}", file=sys.stderr)
    return {
        "name": name,
        "value": None,
        "baseline": None,
        "ratio": None,
        "target": None,
        "skipped": reason,
        **extra,
    }


def interleave(
    candidate: Callable[[], float], baseline: Callable[[], float], trials: int
) -> tuple[list[float], list[float]]:
    """Run ``trials`` pairs of batches, alternating which side goes first; each batch returns its own
    figure (e.g. wall ns per operation). Returns the candidate's and the baseline's figures."""
    cand: list[float] = []
    base: list[float] = []
    for trial in range(trials):
        if trial % 2:
            base.append(baseline())
            cand.append(candidate())
        else:
            cand.append(candidate())
            base.append(baseline())
    return cand, base


def ratio_row(
    name: str,
    cand: list[float],
    base: list[float],
    *,
    unit: str,
    scale: float,
    target: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """A row from per-trial figures: medians divided by ``scale`` and the median of per-trial ratios."""
    ratios = [c / b for c, b in zip(cand, base, strict=True)]
    q1, q3 = _quartiles(ratios)
    ratio = statistics.median(ratios)
    return {
        "name": name,
        "value": round(statistics.median(cand) / scale, 3),
        "baseline": round(statistics.median(base) / scale, 3),
        "unit": unit,
        "ratio": round(ratio, 4),
        "target": target,
        "passed": None if target is None else ratio <= target,
        "trials": len(ratios),
        **({"ratio_iqr": [round(q1, 4), round(q3, 4)]} if len(ratios) > 1 else {}),
        **extra,
    }


@contextmanager
def bench_redis() -> Iterator[tuple[str, str, bool] | None]:
    """(url, a fresh namespace, whether the server is our private one), or None without a Redis.

    The server is ``BUDGETGUARD_BENCH_REDIS_URL`` or a private one (see ``bench_ledger``); only keys
    under ``bg:{<namespace>}:`` are written, and they are deleted on exit, also on error."""
    with _redis_server() as url:
        if url is None:
            yield None
            return
        namespace = "bench" + secrets.token_hex(6)
        try:
            yield url, namespace, not os.environ.get(URL_ENV)
        finally:
            _delete_namespace(url, namespace)

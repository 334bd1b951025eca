"""budgetguard's benchmarks: ``python -m benchmarks [--quick] [--check] [NAME ...]``.

Every module ``bench_<name>.py`` in this package is a benchmark called ``<name>``. It exposes
``run(quick: bool) -> list[dict]``: one row per measurement, each with at least ``name``, ``value``
(budgetguard), ``baseline`` (the raw operation, timed in the same run), ``ratio`` (value / baseline)
and ``target`` (the highest acceptable ratio, or None for a comparison without one). A row that could
not run (a peer not installed, no Redis) has ``skipped`` (the reason) and None in the others.
``quick`` runs fewer iterations (a CI smoke run).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

__all__ = ["REQUIRED_KEYS", "discover", "load"]

REQUIRED_KEYS = ("name", "value", "baseline", "ratio", "target")


def discover() -> list[str]:
    """The names of all benchmarks, sorted: ``bench_estimate.py`` is ``estimate``."""
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules(__path__)
        if info.name.startswith("bench_")
    )


def load(name: str) -> Callable[[bool], list[dict[str, Any]]]:
    """The ``run`` function of benchmark ``name``."""
    module = importlib.import_module(f"{__name__}.bench_{name}")
    run: Callable[[bool], list[dict[str, Any]]] = module.run
    return run

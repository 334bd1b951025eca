"""``import budgetguard`` against a bare interpreter start, each in a fresh process.

* ``import budgetguard``: ``python -c "import budgetguard"`` against ``python -c "pass"`` (the
  interpreter's own start, measured in the same run). The issue's target is an absolute one (under
  100 ms), so the row has no ratio target; its ``net_ms`` (median import minus median bare start)
  is the figure to read against 100 ms.
* ``first price lookup``: ``import budgetguard`` plus one ``budgetguard.cost(...)`` against
  ``import budgetguard`` alone: what the lazily imported price data (genai-prices) costs the first
  lookup instead of the import.
* ``first decoration of an OpenAI method`` (when openai is installed): an OpenAI client, its
  ``chat.completions`` resource and a first price lookup, then ``Guard().metered(...)`` of
  ``create``, against the same without the decoration: what decorating costs beyond what the
  application itself loads (before issue 17 it imported every resource of the client).

* ``first guarded call``: a guard on the memory store, a decorated function and one call, against
  ``import budgetguard`` alone: what the first call pays, most of it the price data and the tokenizer
  (its first estimate), then what the import defers to it (tenacity with the default retry policy,
  logging with the first guard, the memory store with pickle).

``python -m benchmarks.bench_import --callgrind`` counts the instructions of each process instead (one
run each under ``valgrind --tool=callgrind``, bytecode warm): the bare start, ``import budgetguard``
and their difference, steady where wall-clock times move with the host's load.

Both sides run with bytecode caches written to a private temporary directory
(``PYTHONPYCACHEPREFIX``) after a warm-up run, so neither pays for compiling sources, whatever
``PYTHONDONTWRITEBYTECODE`` says, and the source tree gets no ``__pycache__``. Trials alternate which
side goes first (``_harness.compare``); the ratio is the median of the per-trial ratios.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from ._common import row
from ._harness import compare

BARE = "pass"
IMPORT = "import budgetguard"
LOOKUP = (
    "import budgetguard\n"
    "budgetguard.cost('gpt-4o-mini', budgetguard.Usage(input_tokens=1000, output_tokens=100))"
)
TARGET_MS = 100
CLIENT = (
    "import budgetguard, openai\n"
    "client = openai.OpenAI(api_key='k', base_url='http://127.0.0.1:9')\n"
    "resource = client.chat.completions\n"
    "budgetguard.cost('gpt-4o-mini', budgetguard.Usage(input_tokens=1, output_tokens=1))\n"
)
DECORATE = CLIENT + "budgetguard.Guard().metered(resource.create, user='u')\n"
FIRST_CALL = (
    "import budgetguard\n"
    "guard = budgetguard.Guard('memory://', budgets=[budgetguard.Budget('user', usd='1', per='day')])\n"
    "def reply(*, model, messages, max_tokens):\n"
    "    return {'usage': {'prompt_tokens': 3, 'completion_tokens': 2}}\n"
    "guard.with_budget(user='u')(reply)(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}],"
    " max_tokens=5)\n"
)


def _runner(code: str, env: dict[str, str]) -> Callable[[Any], object]:
    command = [sys.executable, "-c", code]

    def start(_: Any) -> object:
        return subprocess.run(command, env=env, check=True)

    return start


def run(quick: bool) -> list[dict[str, Any]]:
    trials, iterations = (7, 1) if quick else (25, 2)
    with tempfile.TemporaryDirectory(prefix="bg-bench-import-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        bare, imported, looked_up = (_runner(code, env) for code in (BARE, IMPORT, LOOKUP))
        looked_up(None)  # compile every module both sides load, once, outside the timings
        called = _runner(FIRST_CALL, env)
        called(None)
        client, decorated = (_runner(code, env) for code in (CLIENT, DECORATE))
        with_openai = importlib.util.find_spec("openai") is not None
        if with_openai:
            decorated(None)

        def inputs(n: int) -> tuple[list[None], list[None]]:
            return [None] * n, [None] * n

        cold = compare(imported, bare, inputs, trials=trials, iterations=iterations)
        first = compare(looked_up, imported, inputs, trials=trials, iterations=iterations)
        first_call = compare(called, imported, inputs, trials=trials, iterations=iterations)
        decoration = None
        if with_openai:
            decoration = compare(decorated, client, inputs, trials=trials, iterations=iterations)
    net_ms = (cold.candidate_ns - cold.baseline_ns) / 1e6
    return [
        row(
            "import budgetguard vs python -c pass",
            cold,
            target=None,  # (the target is absolute: net_ms under TARGET_MS)
            unit="us/process",
            net_ms=round(net_ms, 1),
            target_net_ms=TARGET_MS,
        ),
        row(
            "first price lookup vs import budgetguard",
            first,
            target=None,
            unit="us/process",
            net_ms=round((first.candidate_ns - first.baseline_ns) / 1e6, 1),
        ),
        row(
            "first guarded call (memory store) vs import budgetguard",
            first_call,
            target=None,
            unit="us/process",
            net_ms=round((first_call.candidate_ns - first_call.baseline_ns) / 1e6, 1),
        ),
    ] + ([] if decoration is None else [
        row(
            "first decoration of an OpenAI method vs its client alone",
            decoration,
            target=None,
            unit="us/process",
            net_ms=round((decoration.candidate_ns - decoration.baseline_ns) / 1e6, 1),
        )
    ])  # fmt: skip


def callgrind() -> dict[str, int]:
    """Instructions of a bare start and of ``import budgetguard``, each in one process, bytecode warm."""
    counts = {}
    with tempfile.TemporaryDirectory(prefix="bg-bench-import-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        for name, code in (("bare", BARE), ("import", IMPORT)):
            subprocess.run([sys.executable, "-c", code], env=env, check=True)  # compile, outside the count
            command = [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                "-c",
                code,
            ]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            found = re.search(r"Collected : (\d+)", out.stderr)
            if found is None:
                raise RuntimeError(f"no instruction count from callgrind: {out.stderr[-500:]}")
            counts[name] = int(found.group(1))
    counts["net"] = counts["import"] - counts["bare"]
    return counts


if __name__ == "__main__":
    if sys.argv[1:] != ["--callgrind"]:
        sys.exit("usage: python -m benchmarks.bench_import --callgrind")
    for name, count in callgrind().items():
        print(f"{name:>7}: {count / 1e6:8.1f}M instructions per process")

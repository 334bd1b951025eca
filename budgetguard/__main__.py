"""``budgetguard`` command line (``python -m budgetguard``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __about__
from ._estimate import estimate


def _demo() -> int:
    # Placeholder until the demo lands: price one real request with real tiktoken counts.
    request = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Summarise the budgetguard README in one sentence."},
        ],
        "max_tokens": 200,
    }
    est = estimate(request)
    print(f"budgetguard {__about__.__version__}: worst case of one gpt-4o-mini call")
    print(f"  input tokens : {est.input_tokens} (tiktoken {est.price.model})")
    print(f"  output tokens: {est.output_tokens} (max_tokens)")
    print(f"  reserved     : ${est.cost:f}  ({est.price.source})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="budgetguard", description=__doc__)
    parser.add_argument("--version", action="version", version=__about__.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the built-in demo (no server, no API key)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo()
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())

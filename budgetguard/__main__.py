"""``budgetguard`` command line (``python -m budgetguard``)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __about__
from ._budgets import Budget, Scope
from ._context import track
from ._errors import BudgetExceededError
from ._estimate import estimate
from ._guard import Guard
from ._money import format_usd


def _demo() -> int:
    """A first look: real estimates and a real ledger; the model calls are canned (no API key).

    The full demo (real SDK clients against a built-in mock provider, a CLI report) is issue #5.
    """
    request: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Summarise the budgetguard README in one sentence."},
        ],
        "max_tokens": 200,
    }
    est = estimate(request)
    print(f"budgetguard {__about__.__version__}")
    print(f"worst case of one {est.model} call: {est.input_tokens} input tokens (tiktoken) + "
          f"{est.output_tokens} output tokens = ${est.cost:f}  [{est.price.source}]")  # fmt: skip

    path = Path(tempfile.mkdtemp(prefix="budgetguard-demo-")) / "ledger.db"
    guard = Guard(
        f"sqlite:///{path}",
        budgets=[Budget("user", usd="0.002", per="day")],
        on_event=lambda e: print(f"  event: {e.reason}") if e.kind == "threshold" else None,
    )

    @guard.with_budget(user="{user}", feature="demo")
    def ask(*, user: str, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": est.input_tokens, "completion_tokens": 150}}  # canned reply

    with track() as totals:
        for i in range(1, 30):
            try:
                ask(user="alice", **request)
            except BudgetExceededError as refused:
                left = refused.limit - refused.spent - refused.held
                print(
                    f"call {i} for alice refused: {refused.scope} has ${left:f} left and the call "
                    f"could cost ${refused.requested:f} (limit ${refused.limit:f}, spent ${refused.spent:f})"
                )
                break
    print(f"admitted {totals.calls} calls, {totals.total_tokens} tokens, ${totals.cost:f} in all")
    [status] = guard.ledger.status(guard.counters_for([Scope("user", "alice")]))
    print(f"ledger: user:alice spent {format_usd(status.spent)} of {format_usd(status.limit)}, "
          f"held {format_usd(status.held)}; the ledger file is {path}")  # fmt: skip
    guard.close()
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

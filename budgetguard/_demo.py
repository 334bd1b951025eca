"""``budgetguard demo``: the real OpenAI and Anthropic SDK clients, a local mock provider, a real ledger.

Several users and features call models concurrently through guarded SDK methods; one call is
retried after a 429, two are streamed, a research feature is routed to a cheaper model when its
budget passes 50%, and a user with a tiny budget is refused. The report at the end comes from the
ledger's journal, like ``budgetguard report``.
"""

from __future__ import annotations

import random
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tenacity
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from ._budgets import Scope
from ._config import load_budgets
from ._context import budget_context, propagate, track
from ._errors import BudgetExceededError, ConfigurationError
from ._events import Event
from ._guard import Guard
from ._money import format_usd, to_nano
from ._report import report
from ._retry import default_retry

BUDGETS_TOML = """\
# the demo's budgets; a service loads the same file with budgetguard.load_budgets()
[[budgets]]
scope = "user"             # every user
usd = "0.02"
per = "day"

[[budgets]]
scope = "user:dave"        # dave is on the free plan
usd = "0.00025"
per = "day"

[[budgets]]
scope = "feature:research" # the expensive feature, routed to a cheaper model at 50%
usd = "0.005"
per = "day"

[[budgets]]
scope = "global"           # everyone together
usd = "25"
per = "month"
"""

RESEARCH_CALLS = 12
QUESTIONS = [
    "How do I set a monthly budget for groceries?",
    "Summarise the main points of our refund policy.",
    "What is the difference between a debit and a credit card?",
    "Draft a short reply to a customer asking about late fees.",
    "Explain compound interest to a teenager.",
    "List three ways to cut subscription costs.",
]


def run_demo(console: Console, ledger_path: Path | None = None) -> None:
    try:
        import anthropic  # noqa: F401
        import openai  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the demo drives the real openai and anthropic SDK clients: pip install 'llm-budgetguard[demo]'"
        ) from None
    from .testing import MockProvider

    folder = Path(tempfile.mkdtemp(prefix="budgetguard-demo-")) if ledger_path is None else ledger_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    path = ledger_path or folder / "ledger.db"
    budgets_file = folder / "budgets.toml"
    budgets_file.write_text(BUDGETS_TOML)
    url = f"sqlite:///{path}"

    notes: list[str] = []
    lock = threading.Lock()

    def on_event(event: Event) -> None:
        retried = event.kind == "committed" and (event.attempt or 1) > 1
        if event.kind not in ("routed", "threshold") and not retried:
            return
        line = {
            "routed": f"routed {event.model} -> {event.data.get('to')}: {event.reason}",
            "threshold": f"threshold: {event.reason}",
            "committed": f"retried: {event.model} succeeded on attempt {event.attempt} after a 429",
        }[event.kind]
        with lock:
            notes.append(line)

    retry = default_retry().copy(wait=tenacity.wait_fixed(0.05))  # the default policy, short waits
    guard = Guard(url, budgets=load_budgets(budgets_file), retry=retry, on_event=on_event)
    rng = random.Random(7)
    refused: list[str] = []

    with MockProvider() as mock:
        oai, claude = mock.openai(), mock.anthropic()
        chat = guard.with_budget(oai.chat.completions.create)
        research = guard.with_budget(route=["gpt-4o", "gpt-4o-mini"], at=0.5)(oai.chat.completions.create)
        messages = guard.with_budget(claude.messages.create)
        stream_claude = guard.with_budget(claude.messages.stream)

        def ask(user: str, feature: str, call: Callable[[], Any]) -> None:
            with budget_context(user=user, feature=feature):
                try:
                    call()
                except BudgetExceededError as err:
                    with lock:
                        refused.append(f"{user} ({feature}): {err.scope} has {format_usd(_left(err))} left")

        def question() -> Any:  # the SDKs type messages as TypedDicts
            return [
                {"role": "system", "content": "You are a concise assistant for a personal finance app."},
                {"role": "user", "content": rng.choice(QUESTIONS)},
            ]

        def openai_stream() -> None:
            streaming: Any = {"stream": True}  # the SDK's overloads type the plain method as non-streaming
            for _ in chat(model="gpt-4o-mini", messages=question(), max_tokens=120, **streaming):
                pass

        def claude_stream() -> None:
            with stream_claude(model="claude-haiku-4-5", max_tokens=150, messages=question()[1:]) as events:
                for _ in events.text_stream:
                    pass

        def support() -> Any:
            return chat(model="gpt-4o-mini", messages=question(), max_tokens=150)

        def summary() -> Any:
            return messages(model="claude-sonnet-4-6", max_tokens=200, messages=question()[1:])

        def research_session() -> None:  # one analyst: these calls run one after another
            for n in range(RESEARCH_CALLS):
                with budget_context(user=("alice", "bob", "carol")[n % 3]):
                    research(model="gpt-4o", messages=question(), max_tokens=100)

        def long_answer() -> Any:
            return chat(model="gpt-4o-mini", messages=question(), max_tokens=300)

        jobs: list[tuple[str, str, Callable[[], Any]]] = []
        for user in ("alice", "bob", "carol", "erin"):
            jobs += [(user, "support", support)] * 4 + [(user, "summaries", summary)]
        jobs += [("alice", "research", research_session)]
        jobs += [("bob", "support", openai_stream), ("carol", "summaries", claude_stream)]
        jobs += [("dave", "support", long_answer)] * 4
        mock.fail(429, times=1, path="/v1/messages", retry_after="0")  # one Claude call is retried

        with track() as totals, Progress(console=console, transient=True) as progress:
            task = progress.add_task("guarded calls", total=len(jobs))
            with ThreadPoolExecutor(max_workers=4) as pool:
                for future in [pool.submit(propagate(ask), *job) for job in jobs]:
                    future.result()
                    progress.advance(task)

    calls = len(jobs) - 1 + RESEARCH_CALLS
    console.print(
        Text.assemble(
            ("budgetguard demo", "bold"),
            f": {calls} calls by 5 users on 3 features, 4 at "
            "a time, through the real openai and anthropic clients against a local mock provider",
        )
    )
    for line in sorted(set(notes)):
        console.print(f"  {line}")
    for line in refused:
        console.print(Text.assemble("  ", ("refused", "red"), f" {line}"))
    console.print(
        f"admitted {totals.calls} calls, {totals.total_tokens:,} tokens, {format_usd(to_nano(totals.cost))}"
    )

    entries = guard.ledger.history()
    for by in ("user", "feature", "model"):
        rows, total = report(entries, by)
        table = Table(title=f"spend by {by}", title_justify="left", show_footer=True)
        table.add_column(by, footer="total")
        for name, value in (("calls", total.calls), ("refused", total.refused)):
            table.add_column(name, footer=str(value), justify="right")
        table.add_column(
            "tokens in/out", footer=f"{total.input_tokens:,} / {total.output_tokens:,}", justify="right"
        )
        table.add_column("cost", footer=format_usd(total.cost_nano), justify="right")
        for r in rows:
            table.add_row(r.key, str(r.calls), str(r.refused), f"{r.input_tokens:,} / {r.output_tokens:,}",
                          format_usd(r.cost_nano))  # fmt: skip
        console.print(table)

    held = sum(s.held for s in guard.ledger.status(guard.counters_for([Scope("global")])))
    guard.close()
    cli = f"budgetguard --url {url} --budgets {budgets_file}"
    console.print(f"nothing left held: {format_usd(held)}. The ledger is {path}")
    console.print("try next:")
    for command in ("status", "report --by model", "report --by user --format csv", "limits set user:dave 1",
                    "export --format jsonl", "watch"):  # fmt: skip
        console.print(f"  {cli} {command}", soft_wrap=True)


def _left(err: BudgetExceededError) -> int:
    return max(to_nano(err.limit) - to_nano(err.spent) - to_nano(err.held), 0)

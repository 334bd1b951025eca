"""What every ``budgetguard`` command shares: the store and budgets it works on (``State``, ``--url`` and
``--budgets`` before or after the command), the console (data printed literally), errors, exit codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from ._budgets import Budget
from ._config import load_budgets
from ._core import default_url
from ._errors import BudgetGuardError, LedgerError
from ._guard import Guard

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2
EXIT_STORE = 3

console = Console(highlight=False, markup=False)  # data (scope ids, models) is printed as it is


def printable(text: str) -> str:
    """``text`` with its control characters (a terminal's escape codes, line breaks) written as escapes:
    scope ids and model names are end users' data, shown as they are but never run by the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class CLIError(click.ClickException):
    exit_code = EXIT_BAD_INPUT


class StoreError(CLIError):
    exit_code = EXIT_STORE


def _friendly(command: F) -> F:
    """Turn the library's errors into a one-line message and an exit code (no traceback)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LedgerError as exc:
            raise StoreError(
                f"the store failed or is unreachable: {exc}\n"
                "Check --url / BUDGETGUARD_URL and that the server is up."
            ) from exc
        except (BudgetGuardError, ValueError, TypeError) as exc:
            raise CLIError(str(exc)) from exc

    return run  # type: ignore[return-value]


class State:
    def __init__(self, url: str | None, budgets_file: str | None) -> None:
        self.url = url or default_url()
        self.budgets_file = budgets_file
        self._guard: Guard | None = None

    @functools.cached_property
    def budgets(self) -> list[Budget]:
        return load_budgets(self.budgets_file) if self.budgets_file else []

    @property
    def guard(self) -> Guard:
        if self._guard is None:
            self._guard = Guard(self.url, budgets=self.budgets)
        return self._guard

    def close(self) -> None:
        if self._guard is not None:
            self._guard.close()

    def must_exist(self) -> None:
        """A command that only reads: an SQLite ledger file that does not exist is an error (opening it
        would create an empty one and report $0)."""
        if not self.url.startswith("sqlite:"):
            return
        from ._ledger import _sqlite_path

        path = _sqlite_path(self.url.split("?", 1)[0])
        if not Path(path).is_file():
            raise CLIError(
                f"no ledger at {path} (from {self.url}): check --url / BUDGETGUARD_URL; a guarded call "
                "or `budgetguard demo --ledger FILE` creates one"
            )

    def need_budgets(self, what: str) -> list[Budget]:
        if not self.budgets:
            raise CLIError(
                f"{what} needs your budgets: pass --budgets FILE or set BUDGETGUARD_BUDGETS "
                "(the TOML file your Guard loads with budgetguard.load_budgets)"
            )
        return self.budgets


pass_state = click.make_pass_decorator(State)

URL_HELP = "The store (default: the embedded SQLite ledger)."
BUDGETS_HELP = "A TOML/JSON file of budgets (as for budgetguard.load_budgets)."


def set_state(name: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def given(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:  # (after the command: wins over the group's, read before the command runs)
            setattr(ctx.ensure_object(State), name, value)

    return given


def store_options(command: F) -> F:
    """``--url`` and ``--budgets`` after the command name too, as in ``budgetguard status --url ...``."""
    url = click.option(
        "--url",
        expose_value=False,
        callback=set_state("url"),
        help=f"{URL_HELP} [env var: BUDGETGUARD_URL]",
    )
    budgets = click.option(
        "--budgets", expose_value=False, callback=set_state("budgets_file"), type=click.Path(dir_okay=False),
        help=f"{BUDGETS_HELP} [env var: BUDGETGUARD_BUDGETS]",
    )  # fmt: skip
    return url(budgets(command))


def reading(command: F) -> F:
    """A command that only reads the store: its SQLite file must exist (``State.must_exist``)."""

    @functools.wraps(command)
    def read(state: State, *args: Any, **kwargs: Any) -> Any:
        state.must_exist()
        return command(state, *args, **kwargs)

    return read  # type: ignore[return-value]

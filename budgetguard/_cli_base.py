"""What every ``budgetguard`` command shares: the console (data printed literally), errors, exit codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from ._errors import BudgetGuardError, LedgerError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2
EXIT_STORE = 3

console = Console(highlight=False, markup=False)  # data (scope ids, models) is printed as it is


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

"""The ``budgetguard limits`` commands: run-time limit overrides of the budgets in the budgets file."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from ._budgets import Period, Scope, Unit, window_for
from ._cli_base import CLIError, State, _friendly, console, pass_state, printable, store_options
from ._guard import Guard
from ._ledger import CounterSpec
from ._money import to_nano

__all__ = ["amount_of", "counter_command", "limits", "per_text"]


def _counter(state: State, scope: str, unit: str | None, per: str | None, tz: str | None) -> CounterSpec:
    """The counter a ``limits`` command names: SCOPE's budget in the budgets file (the options choose
    among several), or the one the options name when no budgets file is given (``--per`` then needed).
    A run-time limit overrides a budget: one that nothing uses is refused, not stored."""
    try:
        target = Scope.parse(scope)
        units = [u for u in Unit if unit in (None, u.value)]
        periods = [p for p in Period if per in (None, p.value)]
    except ValueError as exc:
        raise CLIError(f"{exc}; units: usd, tokens, requests; periods: {', '.join(Period)}") from exc
    if not state.budgets:
        if per is None:
            raise CLIError(
                "limits needs the budget it changes: pass --budgets FILE (the TOML file your Guard "
                "loads; the budget's period and time zone are taken from it) or name it with --per "
                "(and --unit, --tz)"
            )
        return _spec(target, units[0] if unit else Unit.USD, periods[0], tz or "UTC")
    counters = state.guard.counters_for([target])
    metering = per == Period.TOTAL.value and target == Guard.METERING.scope  # calls that have no budget
    if metering and not any(_same(c, Guard.METERING) for c in counters):
        counters.append(Guard.METERING)
    fits = [c for c in counters if c.unit in units and c.period in periods and tz in (None, c.tz)]
    if len(fits) == 1:  # (with its limit in code: a temporary raise may add to it)
        return _spec(target, fits[0].unit, fits[0].period, fits[0].tz, fits[0].limit)
    known = "; ".join(per_text(c) for c in counters) or "none"
    if not fits:
        given = [f"--{k} {v}" for k, v in (("unit", unit), ("per", per), ("tz", tz)) if v is not None]
        asked = f" with {' '.join(given)}" if given else ""
        raise CLIError(
            f"no budget in {state.budgets_file} is on {target}{asked} (its budgets: {known}); a run-time "
            "limit changes a budget that exists: add it to the file first"
        )
    raise CLIError(f"{target} has several budgets ({known}): choose one with --per, --unit or --tz")


def _spec(scope: Scope, unit: Unit, per: Period, tz: str, limit: int = 0) -> CounterSpec:
    try:
        window_for(per, tz, 0)  # (an unknown time zone is an error here, not a limit nothing reads)
        return CounterSpec(scope, unit, per, limit, tz)
    except (ValueError, KeyError) as exc:
        raise CLIError(str(exc)) from exc


def _same(a: CounterSpec, b: CounterSpec) -> bool:
    return (a.scope, a.unit, a.period, a.tz) == (b.scope, b.unit, b.period, b.tz)


def amount_of(text: str, unit: str, what: str = "limit") -> int:
    """An amount given on the command line: dollars for usd (``5``, ``12.50``, ``$3``), else a count."""
    if text.strip().startswith("-"):
        why = (
            "a limit is 0 or more (0 refuses every call; `limits clear` removes the override)"
            if what == "limit"
            else f"the {what} is 0 or more (the command says which way it goes)"
        )
        raise CLIError(f"{text!r} is negative: {why}")  # fmt: skip
    if unit == "usd":
        try:
            return to_nano(Decimal(text.strip().removeprefix("$")), what=what)
        except InvalidOperation:
            raise CLIError(f"{text!r} is not an amount of dollars; write it like 5 or 12.50") from None
    if not text.isdigit():
        raise CLIError(f"{text!r} is not a whole number of {unit}")
    return int(text)


_counter_options = [
    click.option(
        "--per", type=click.Choice([p.value for p in Period]), help="The budget's period (default: its own)."
    ),
    click.option(
        "--unit", type=click.Choice([u.value for u in Unit]), help="The budget's unit (default: its own)."
    ),
    click.option("--tz", help="The budget's time zone (default: its own)."),
]


@click.group()
def limits() -> None:
    """Run-time limit overrides, stored in the ledger (they win over the limits in code). SCOPE's budget
    comes from the budgets file (--budgets); --per, --unit and --tz choose when SCOPE has several."""


def counter_command(
    group: click.Group | None, name: str, *arguments: str, reads: bool = False, options: Sequence[Any] = ()
) -> Callable[[Callable[..., None]], click.Command]:
    """A ``NAME SCOPE [ARGUMENTS...] [--per] [--unit] [--tz] [OPTIONS]`` command of ``group`` (``None``: a
    command to add to one): the function takes the state, the counter that SCOPE and the options name,
    then ``arguments`` and ``options`` by name. An amount such as ``-1`` is an argument (refused with a
    clear error), not an unknown option."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @functools.wraps(fn)
        def command(
            state: State, scope: str, per: str | None, unit: str | None, tz: str | None, **given: str
        ) -> None:
            if reads:
                state.must_exist()
            fn(state, _counter(state, scope, unit, per, tz), **given)

        run: Any = _friendly(command)
        decorated: Any = store_options(pass_state(run))
        arguments_ = map(click.argument, reversed(("scope", *arguments)))
        for decorator in (*reversed(options), *reversed(_counter_options), *arguments_):
            decorated = decorator(decorated)  # (as a stack of decorators, bottom first)
        make = click.command if group is None else group.command
        return make(name, context_settings={"ignore_unknown_options": True})(decorated)

    return decorate


def _limits_command(
    name: str, *arguments: str, reads: bool = False, options: Sequence[Any] = ()
) -> Callable[[Callable[..., None]], click.Command]:
    """A ``limits NAME ...`` command (``counter_command``)."""
    return counter_command(limits, name, *arguments, reads=reads, options=options)


@_limits_command("set", "amount")
def limits_set(state: State, counter: CounterSpec, amount: str) -> None:
    """Set SCOPE's limit to AMOUNT (dollars for usd) for one period, e.g. `limits set user:alice 20`."""
    value = amount_of(amount, counter.unit.value)
    state.guard.ledger.set_limit(counter, value)
    console.print(f"{printable(str(counter.scope))}: {per_text(counter)} is now {counter.unit.show(value)}")


@_limits_command("get", reads=True)
def limits_get(state: State, counter: CounterSpec) -> None:
    """Show SCOPE's run-time limit for one period, if one is set."""
    value = state.guard.ledger.get_limit(counter)
    shown = "none (the limit in code applies)" if value is None else counter.unit.show(value)
    console.print(f"{printable(str(counter.scope))}: {per_text(counter)}: {shown}")


@_limits_command("clear", reads=True)
def limits_clear(state: State, counter: CounterSpec) -> None:
    """Remove SCOPE's run-time limit: the limit in code applies again."""
    state.guard.ledger.clear_limit(counter)
    console.print(f"{printable(str(counter.scope))}: {per_text(counter)} cleared (the limit in code applies)")


def per_text(counter: CounterSpec) -> str:
    tz = f" ({counter.tz})" if counter.tz != "UTC" else ""
    return f"{counter.unit.value} limit per {counter.period.value}{tz}"

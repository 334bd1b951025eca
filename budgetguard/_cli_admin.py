"""The administration commands: ``reset``, ``credit``, ``refund``, ``charge``, ``limits raise`` and ``plan``.

Each takes ``--reason`` (required) and ``--actor`` (default: the OS user), is journaled with both by the
ledger, and prints what changed. SCOPE's budget comes from the budgets file, as for ``limits``.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

import click

from ._budgets import Scope
from ._cli_base import CLIError, State, _friendly, console, pass_state, printable, store_options
from ._cli_limits import amount_of, counter_command, limits, per_text
from ._ledger import CounterSpec
from ._ledger._types import to_datetime
from ._plans import Plans, load_plans
from ._report import parse_span, parse_when

__all__ = ["charge", "credit", "plan", "refund", "reset"]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # (no name for this uid, e.g. in a container)
        return "unknown"


_WHO = [
    click.option("--reason", required=True, help="Why (kept in the journal with the change)."),
    click.option("--actor", default=None, help="Who makes the change (default: the OS user)."),
]
_ID = click.option(
    "--id",
    "op_id",
    default=None,
    help=(
        "An id (a ticket number) that makes a repeat of this command a no-op while the counter's window "
        "is kept (its end plus a day; a year for a total); refused if it was used for a different change."
    ),
)


def _scope(counter: CounterSpec) -> str:
    return printable(str(counter.scope))


def _spent(counter: CounterSpec) -> str:
    return f"{counter.unit.value} spent per {counter.period.value}"


@counter_command(None, "reset", options=[*_WHO, _ID])
def reset(state: State, counter: CounterSpec, reason: str, actor: str | None, op_id: str | None) -> None:
    """Take SCOPE's spent in the current window to 0 (reservations in flight stay held)."""
    done = state.guard.ledger.reset(counter, actor=actor or _os_user(), reason=reason, id=op_id)
    show = counter.unit.show
    if done.duplicate:
        console.print(f"{_scope(counter)}: already reset by id {printable(done.id)}; nothing changed")
        return
    console.print(f"{_scope(counter)}: {_spent(counter)} reset to {show(0)} (was {show(-done.change)})")


def _adjust(state: State, counter: CounterSpec, amount: str, sign: int, verb: str, **who: Any) -> None:
    value = amount_of(amount, counter.unit.value, what="amount")
    actor, reason, op_id = who["actor"] or _os_user(), who["reason"], who["op_id"]
    done = state.guard.ledger.adjust(counter, sign * value, actor=actor, reason=reason, id=op_id)
    show = counter.unit.show
    if done.duplicate:
        console.print(f"{_scope(counter)}: already {verb} by id {printable(done.id)}; nothing changed "
                      f"(spent: {show(done.spent)})")  # fmt: skip
        return
    before = done.spent - done.change
    console.print(f"{_scope(counter)}: {verb} {show(abs(done.change))}; {_spent(counter)}: {show(before)} -> "
                  f"{show(done.spent)}")  # fmt: skip
    if done.change != sign * value:
        console.print(f"(asked {show(value)}: spent stops at {show(0)})")


@counter_command(None, "credit", "amount", options=[*_WHO, _ID])
def credit(state: State, counter: CounterSpec, amount: str, **who: Any) -> None:
    """Credit AMOUNT (dollars for usd) back to SCOPE: its spent in the current window goes down by it
    (never below 0)."""
    _adjust(state, counter, amount, -1, "credited", **who)


@counter_command(None, "refund", "amount", options=[*_WHO, _ID])
def refund(state: State, counter: CounterSpec, amount: str, **who: Any) -> None:
    """Refund AMOUNT to SCOPE (a credit, journaled the same way: say why in --reason)."""
    _adjust(state, counter, amount, -1, "refunded", **who)


@counter_command(None, "charge", "amount", options=[*_WHO, _ID])
def charge(state: State, counter: CounterSpec, amount: str, **who: Any) -> None:
    """Charge AMOUNT to SCOPE's spent in the current window (spend made outside guarded calls)."""
    _adjust(state, counter, amount, 1, "charged", **who)


_FOR = [
    click.option("--for", "span", help="How long the raise lasts: 30m, 2h, 1d, 1w."),
    click.option("--until", "until", help="When it ends instead: an ISO date-time (UTC unless it says)."),
]


@counter_command(limits, "raise", "amount", options=[*_FOR, *_WHO])
def limits_raise(
    state: State, counter: CounterSpec, amount: str, span: str | None, until: str | None, **who: Any
) -> None:
    """Raise SCOPE's limit by AMOUNT for a while (--for 2h, or --until); it goes back by itself."""
    if not state.budgets:
        raise CLIError(
            "limits raise adds to the budget's limit: pass --budgets FILE (or BUDGETGUARD_BUDGETS)"
        )
    if (span is None) == (until is None):
        raise CLIError("say how long the raise lasts: --for 2h (30m, 1d, 1w), or --until 2026-12-24T18:00")
    if span is not None:
        when: Any = parse_span(span)
        if when is None:
            raise CLIError(f"cannot read --for {span!r}: use a span like 30m, 2h, 1d or 1w")
    elif parse_span(until or "") is not None:  # (parse_when would read "2h" as two hours ago)
        raise CLIError(f"--until takes a date-time (2026-12-24T18:00); for a span, use --for {until}")
    else:
        when = parse_when(until or "")
    value = amount_of(amount, counter.unit.value, what="amount")
    done = state.guard.ledger.raise_limit(counter, value, until=when, actor=who["actor"] or _os_user(),
                                          reason=who["reason"])  # fmt: skip
    show = counter.unit.show
    after = "the limit in code" if done.base is None else show(done.base)
    ends = to_datetime(done.until_ms).strftime("%Y-%m-%d %H:%M:%S UTC")
    console.print(f"{_scope(counter)}: {per_text(counter)} raised by {show(value)} to {show(done.limit)}")
    console.print(f"until {ends}, then {after} again")


# -- plans -----------------------------------------------------------------------------------------


def _plans(state: State) -> Plans:
    if not state.budgets_file:
        raise CLIError("plans live in the budgets file: pass --budgets FILE or set BUDGETGUARD_BUDGETS")
    found = load_plans(state.budgets_file)
    if not found.plans:
        raise CLIError(f"{state.budgets_file} has no plans; add one, e.g. [[plans.pro]] scope = 'user' ...")
    return found


@click.group()
def plan() -> None:
    """Plan templates ([[plans.<name>]] in the budgets file): the set of budgets a scope is on."""


def _show_limits(limits_: dict[CounterSpec, int | None]) -> None:
    for counter, value in limits_.items():
        shown = "the limit in code" if value is None else counter.unit.show(value)
        console.print(f"  {per_text(counter)}: {shown}")


def _assign(state: State, scope: str, name: str | None, reason: str, actor: str | None) -> None:
    plans = _plans(state)
    limits_ = plans.limits_for(scope, name)
    plans.assign(state.guard.ledger, scope, name, actor=actor or _os_user(), reason=reason)
    shown = "on no plan (the budgets in the file apply)" if name is None else f"now on plan {printable(name)}"
    console.print(f"{printable(str(Scope.parse(scope)))}: {shown}")
    _show_limits(limits_)


def _plan_command(name: str, *arguments: str) -> Callable[[Callable[..., None]], Any]:
    """A ``plan NAME SCOPE [ARGUMENTS...] --reason [--actor]`` command."""

    def decorate(fn: Callable[..., None]) -> Any:
        decorated: Any = _WHO[0](_WHO[1](store_options(pass_state(_friendly(fn)))))
        for argument in reversed(("scope", *arguments)):
            decorated = click.argument(argument)(decorated)
        return plan.command(name)(decorated)

    return decorate


@_plan_command("set", "name")
def plan_set(state: State, scope: str, name: str, reason: str, actor: str | None) -> None:
    """Put SCOPE on plan NAME: its limits become the plan's, in one journaled change."""
    _assign(state, scope, name, reason, actor)


@_plan_command("clear")
def plan_clear(state: State, scope: str, reason: str, actor: str | None) -> None:
    """Take SCOPE off its plan: the budgets in the file apply again."""
    _assign(state, scope, None, reason, actor)


@plan.command("show")
@click.argument("scope")
@store_options
@pass_state
@_friendly
def plan_show(state: State, scope: str) -> None:
    """Which plan SCOPE is on (the plan its stored limits match), and those limits."""
    state.must_exist()
    plans = _plans(state)
    ledger = state.guard.ledger
    names = plans.current(ledger, scope)
    target = printable(str(Scope.parse(scope)))
    if names:
        console.print(f"{target}: plan {', '.join(printable(n) for n in names)}")
    else:
        console.print(f"{target}: on no plan of {state.budgets_file} (its limits match none)")
    _show_limits({c: ledger.get_limit(c) for c in plans.limits_for(scope, None)})

"""The ``budgetguard`` command line: status, limits, reports, exports, prices, estimates, a live view.

The store comes from ``--url`` or ``BUDGETGUARD_URL`` (default: the embedded SQLite ledger); the budgets
from ``--budgets FILE`` or ``BUDGETGUARD_BUDGETS`` (the same TOML/JSON file a service loads with
``budgetguard.load_budgets``). Exit codes: 0 done, 2 bad input, 3 the store failed or is unreachable.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import __about__
from ._budgets import Budget, Period, Scope, Unit, window_for
from ._cli_base import CLIError, _friendly, console
from ._cli_prices import estimate, prices
from ._config import load_budgets
from ._core import default_url
from ._guard import Guard
from ._ledger import CounterSpec, CounterStatus
from ._ledger._types import to_datetime
from ._money import format_usd, to_nano
from ._report import coverage, export_row, parse_when, stream_journal, summarize


class _State:
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

    def need_budgets(self, what: str) -> list[Budget]:
        if not self.budgets:
            raise CLIError(
                f"{what} needs your budgets: pass --budgets FILE or set BUDGETGUARD_BUDGETS "
                "(the TOML file your Guard loads with budgetguard.load_budgets)"
            )
        return self.budgets


pass_state = click.make_pass_decorator(_State)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__about__.__version__, prog_name="budgetguard")
@click.option("--url", envvar="BUDGETGUARD_URL", help="The store (default: the embedded SQLite ledger).")
@click.option(
    "--budgets", "budgets_file", envvar="BUDGETGUARD_BUDGETS", type=click.Path(dir_okay=False),
    help="A TOML/JSON file of budgets (as for budgetguard.load_budgets).",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, url: str | None, budgets_file: str | None) -> None:
    """A hard, shared spending limit in front of every LLM call."""
    ctx.obj = ctx.with_resource(contextlib.closing(_State(url, budgets_file)))


# -- demo ------------------------------------------------------------------------------------------


@cli.command()
@click.option("--ledger", type=click.Path(dir_okay=False), help="Where to write the demo's SQLite ledger.")
@_friendly
def demo(ledger: str | None) -> None:
    """Run guarded calls on the real OpenAI and Anthropic SDK clients against a local mock provider."""
    from ._demo import run_demo

    run_demo(console, Path(ledger) if ledger else None)


# -- status and watch ------------------------------------------------------------------------------


def _active_scopes(state: _State, now: datetime) -> list[Scope]:
    """The scopes with a budget: exact ones, and those of kind budgets seen in the current windows."""
    budgets = state.need_budgets("status")
    exact = [Scope.parse(b.target) for b in budgets if ":" in b.target or b.target == "global"]
    kinds = {b.target for b in budgets if ":" not in b.target and b.target != "global"}
    since = None  # the journal since the earliest current window (all of it with a "total" budget)
    if all(b.period is not Period.TOTAL for b in budgets):
        now_ms = int(now.timestamp() * 1000)
        since = to_datetime(min(window_for(b.period, b.tz, now_ms).start for b in budgets))
    seen: dict[str, Scope] = {str(s): s for s in exact}
    if kinds:
        for entry in state.guard.ledger.history(since=since, limit=200_000):
            for label in entry.scopes:
                if label not in seen and label.partition(":")[0] in kinds:
                    seen[label] = Scope.parse(label)
    return list(seen.values())


def _statuses(state: _State, scopes: Iterable[Scope]) -> list[CounterStatus]:
    counters = state.guard.counters_for(scopes)
    return state.guard.ledger.status(counters) if counters else []


def _used(status: CounterStatus) -> Decimal:
    return Decimal(status.spent + status.held) / status.limit if status.limit else Decimal(0)


def _status_table(statuses: Sequence[CounterStatus], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("scope", "period", "limit", "spent", "held", "remaining", "used", "resets (UTC)"):
        justify = "left" if name in ("scope", "period", "resets (UTC)") else "right"
        table.add_column(name, justify=justify, overflow="fold" if name == "scope" else "ellipsis")  # type: ignore[arg-type]
    for s in statuses:
        unit = s.counter.unit
        resets = s.resets_at.strftime("%Y-%m-%d %H:%M") if s.resets_at else "never"
        table.add_row(
            str(s.counter.scope),
            f"{s.counter.period.value} ({s.counter.tz})" if s.counter.tz != "UTC" else s.counter.period.value,
            unit.show(s.limit) + (" *" if s.overridden else ""),
            unit.show(s.spent),
            unit.show(s.held),
            unit.show(s.remaining),
            f"{_used(s) * 100:.1f}%",
            resets,
        )
    return table


def _status_json(s: CounterStatus) -> dict[str, Any]:
    unit = s.counter.unit
    money = (lambda v: format_usd(v)[1:]) if unit is Unit.USD else (lambda v: v)
    return {
        "scope": str(s.counter.scope),
        "unit": unit.value,
        "period": s.counter.period.value,
        "tz": s.counter.tz,
        "limit": money(s.limit),
        "limit_overridden": s.overridden,
        "spent": money(s.spent),
        "held": money(s.held),
        "remaining": money(s.remaining),
        "window_start": to_datetime(s.window_start).isoformat(),
        "resets_at": s.resets_at.isoformat() if s.resets_at else None,
    }


@cli.command()
@click.argument("scope", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
@_friendly
def status(state: _State, scope: str | None, as_json: bool) -> None:
    """Limits, spent, held, remaining and reset time of SCOPE (e.g. user:alice), or of every active scope."""
    state.need_budgets("status")
    scopes = [Scope.parse(scope)] if scope else _active_scopes(state, datetime.now(UTC))
    statuses = sorted(_statuses(state, scopes), key=lambda s: (-_used(s), str(s.counter.scope)))
    if scope and not statuses:
        raise CLIError(f"no budget in {state.budgets_file} applies to {scope}")
    if as_json:
        click.echo(json.dumps([_status_json(s) for s in statuses], indent=2))
        return
    console.print(_status_table(statuses, f"budgets at {state.url}  (* = limit set at run time)"))


@cli.command()
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--top", default=15, show_default=True, help="How many of the busiest scopes to show.")
@click.option("--count", type=int, help="Stop after this many refreshes (default: until Ctrl-C).")
@pass_state
@_friendly
def watch(state: _State, interval: float, top: int, count: int | None) -> None:
    """A live view of the busiest scopes, refreshing in place."""
    state.need_budgets("watch")

    def frame() -> Table:
        now = datetime.now(UTC)
        statuses = sorted(_statuses(state, _active_scopes(state, now)), key=lambda s: -_used(s))
        return _status_table(statuses[:top], f"busiest scopes at {now:%H:%M:%S} UTC  (Ctrl-C to stop)")

    shown = 0
    try:
        with Live(frame(), console=console, auto_refresh=False) as live:
            shown = 1
            while count is None or shown < count:
                time.sleep(interval)
                live.update(frame(), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass


# -- limits -----------------------------------------------------------------------------------------


def _counter(scope: str, unit: str, per: str, tz: str) -> CounterSpec:
    try:
        return CounterSpec(Scope.parse(scope), Unit(unit), Period(per), 0, tz)
    except ValueError as exc:
        raise CLIError(f"{exc}; units: usd, tokens, requests; periods: {', '.join(Period)}") from exc


def _amount(text: str, unit: str) -> int:
    if unit == "usd":
        try:
            return to_nano(Decimal(text.strip().removeprefix("$")), what="limit")
        except InvalidOperation:
            raise CLIError(f"{text!r} is not an amount of dollars; write it like 5 or 12.50") from None
    if not text.isdigit():
        raise CLIError(f"{text!r} is not a whole number of {unit}")
    return int(text)


_counter_options = [
    click.option("--per", default="day", show_default=True, type=click.Choice([p.value for p in Period])),
    click.option("--unit", default="usd", show_default=True, type=click.Choice([u.value for u in Unit])),
    click.option("--tz", default="UTC", show_default=True, help="The budget's time zone."),
]


@cli.group()
def limits() -> None:
    """Run-time limit overrides, stored in the ledger (they win over the limits in code)."""


def _limits_command(name: str, *arguments: str) -> Callable[[Callable[..., None]], click.Command]:
    """A ``limits NAME SCOPE [ARGUMENTS...] [--per] [--unit] [--tz]`` command: the function takes the
    state, the counter that SCOPE and the options name, then ``arguments`` by name."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @_friendly
        @functools.wraps(fn)
        def command(state: _State, scope: str, per: str, unit: str, tz: str, **given: str) -> None:
            fn(state, _counter(scope, unit, per, tz), **given)

        decorated: Any = pass_state(command)
        for decorator in (*reversed(_counter_options), *map(click.argument, reversed(("scope", *arguments)))):
            decorated = decorator(decorated)  # (as a stack of decorators, bottom first)
        return limits.command(name)(decorated)

    return decorate


@_limits_command("set", "amount")
def limits_set(state: _State, counter: CounterSpec, amount: str) -> None:
    """Set SCOPE's limit to AMOUNT (dollars for usd) for one period, e.g. `limits set user:alice 20`."""
    value = _amount(amount, counter.unit.value)
    state.guard.ledger.set_limit(counter, value)
    console.print(f"{counter.scope}: {_per(counter)} is now {counter.unit.show(value)}")


@_limits_command("get")
def limits_get(state: _State, counter: CounterSpec) -> None:
    """Show SCOPE's run-time limit for one period, if one is set."""
    value = state.guard.ledger.get_limit(counter)
    shown = "none (the limit in code applies)" if value is None else counter.unit.show(value)
    console.print(f"{counter.scope}: {_per(counter)}: {shown}")


@_limits_command("clear")
def limits_clear(state: _State, counter: CounterSpec) -> None:
    """Remove SCOPE's run-time limit: the limit in code applies again."""
    state.guard.ledger.clear_limit(counter)
    console.print(f"{counter.scope}: {_per(counter)} cleared (the limit in code applies)")


def _per(counter: CounterSpec) -> str:
    return f"{counter.unit.value} limit per {counter.period.value}"


# -- report and export ------------------------------------------------------------------------------


def _range(since: str, until: str | None) -> tuple[datetime, datetime | None]:
    """The time range the options name."""
    now = datetime.now(UTC)
    return parse_when(since, now), parse_when(until, now) if until else None


def _warn(warning: str | None) -> None:
    """A warning on stderr (the data on stdout stays clean)."""
    if warning:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


def _write(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    Path(output).write_text(text)
    console.print(f"wrote {output}", style="dim")


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    _write_csv(rows, buffer)
    return buffer.getvalue()


def _write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> None:
    """``rows`` as CSV, one at a time (the header from the first row's keys)."""
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    if writer is None:
        csv.DictWriter(out, fieldnames=["key"], lineterminator="\n").writeheader()


def _write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> None:
    """``rows`` as JSON lines, one at a time."""
    for row in rows:
        out.write(json.dumps(row) + "\n")


class _Echo(io.StringIO):
    """Text for stdout, passed on to ``click.echo`` every 64 KiB (and at ``flush``): a long export is
    written as it is made, never held whole."""

    written = False

    def write(self, text: str) -> int:
        super().write(text)
        if self.tell() >= 65_536:
            self.flush()
        return len(text)

    def flush(self) -> None:
        text = self.getvalue()
        if text:
            click.echo(text, nl=False)
            self.written = True
            self.seek(0)
            self.truncate()


_since = click.option("--since", default="7d", show_default=True, help="A span (7d, 24h, 30m) or a date.")
_until = click.option("--until", help="A span ago or a date (default: now).")
_output = click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")


@cli.command("report")
@_since
@_until
@click.option(
    "--by", default="user", show_default=True,
    help="user, feature (any scope kind), scope, model, function or day; by model or function the table "
    "also shows the worst-case estimates and actual/estimate (median, p95, max).",
)  # fmt: skip
@click.option("--scope", help="Only calls made on this scope (with a budget or not), e.g. feature:search.")
@click.option(
    "--format", "fmt", default="table", type=click.Choice(["table", "csv", "json"]), show_default=True
)
@_output
@pass_state
@_friendly
def report_command(
    state: _State, since: str, until: str | None, by: str, scope: str | None, fmt: str, output: str | None
) -> None:
    """Spend from the journal, grouped by user, feature, model or day. Says so when the journal no longer
    covers the whole range (it keeps a bounded history)."""
    since_at, until_at = _range(since, until)
    shown = fmt != "table" or by in ("model", "function")  # (a table by user, day... shows no ratios)
    summary = summarize(state.guard.ledger, by, since=since_at, until=until_at, scope=scope, ratios=shown)
    rows, total, journal = summary.rows, summary.total, summary.coverage
    warning = journal.warning("report")
    if fmt == "json":
        complete_since = journal.complete_since.isoformat() if journal.complete_since else None
        document = {"by": by, "rows": [r.as_dict() for r in rows], "total": total.as_dict(),
                    "journal_complete_since": complete_since, "warning": warning}  # fmt: skip
        _write(json.dumps(document, indent=2), output)
        _warn(warning)
        return
    if fmt == "csv":
        _write(_csv([r.as_dict() for r in [*rows, total]]), output)
        _warn(warning)
        return
    columns = [
        (by, "total", "left"),
        ("calls", str(total.calls), "right"),
        ("refused", str(total.refused), "right"),
        ("input tokens", f"{total.input_tokens:,}", "right"),
        ("output tokens", f"{total.output_tokens:,}", "right"),
        ("cost", format_usd(total.cost_nano), "right"),
    ]
    cells = [[r.key, str(r.calls), str(r.refused), f"{r.input_tokens:,}", f"{r.output_tokens:,}",
              format_usd(r.cost_nano)] for r in rows]  # fmt: skip
    tables = [_table(f"spend by {by} since {since}", by, columns, cells)]
    if by in ("model", "function"):  # self-calibration: how far below its worst-case estimate a call came
        ratios = ("ratio_median", "ratio_p95", "ratio_max")
        columns = [columns[0], columns[1], ("estimated", format_usd(total.estimated_nano), "right"),
                   ("actual", format_usd(total.cost_nano), "right"),
                   *((name[6:], total.as_dict()[name], "right") for name in ratios)]  # fmt: skip
        cells = [[r.key, str(r.calls), format_usd(r.estimated_nano), format_usd(r.cost_nano),
                  *(r.as_dict()[name] for name in ratios)] for r in rows]  # fmt: skip
        tables.append(_table(f"actual / worst-case estimate by {by}", by, columns, cells))
    if output:
        with open(output, "w") as f:
            for table in tables:
                Console(file=f, width=120, markup=False).print(table)
            if warning:
                f.write(f"warning: {warning}\n")
        console.print(f"wrote {output}", style="dim")
        _warn(warning)
    else:
        for table in tables:
            console.print(table)
        if warning:
            click.secho(f"warning: {warning}", fg="yellow")


def _table(title: str, key: str, columns: list[tuple[str, str, str]], cells: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", show_footer=True)
    for name, footer, justify in columns:  # (a key is data: folded to fit, never cut)
        table.add_column(name, footer=footer, justify=justify, overflow="fold" if name == key else "ellipsis")  # type: ignore[arg-type]
    for row in cells:
        table.add_row(*row)
    return table


@cli.command()
@_since
@_until
@click.option("--format", "fmt", default="csv", type=click.Choice(["csv", "jsonl"]), show_default=True)
@_output
@pass_state
@_friendly
def export(state: _State, since: str, until: str | None, fmt: str, output: str | None) -> None:
    """Raw journal rows (commits, refusals, releases, expiries) for finance. Says so on stderr when the
    journal no longer covers the whole range (it keeps a bounded history)."""
    since_at, until_at = _range(since, until)
    ledger = state.guard.ledger
    rows = map(export_row, stream_journal(ledger, since=since_at, until=until_at))
    write = _write_csv if fmt == "csv" else _write_jsonl
    if output is None:
        out = _Echo()
        write(rows, out)
        out.flush()
        if not out.written:  # (nothing at all: a blank line, as ever)
            click.echo("")
    else:
        with _replacing(output) as f:
            write(rows, f)
        console.print(f"wrote {output}", style="dim")
    _warn(coverage(ledger, since=since_at, until=until_at).warning("export"))  # (read after the rows)


@contextlib.contextmanager
def _replacing(output: str) -> Iterator[IO[str]]:
    """A file written beside ``output`` and renamed over it once complete: an export that fails leaves
    no partial file (and an earlier one untouched). A target that is not a regular file (``/dev/null``,
    a pipe) is written directly; a symbolic link's target is replaced, the link kept."""
    target = os.path.realpath(output)
    if os.path.exists(target) and not os.path.isfile(target):
        with open(target, "w") as f:
            yield f
        return
    folder, name = os.path.split(target)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # (the umask applies, as open's)
    try:
        with open(fd, "w") as f:
            yield f
        if os.path.exists(target):
            os.chmod(temporary, os.stat(target).st_mode & 0o7777)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# -- prices and estimate ----------------------------------------------------------------------------


cli.add_command(prices)
cli.add_command(estimate)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="budgetguard", standalone_mode=False
        )
    except click.exceptions.Abort:
        console.print("aborted", style="red")
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0

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
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import __about__
from ._budgets import Budget, Period, Scope, Unit, window_for
from ._config import load_budgets
from ._errors import BudgetGuardError, LedgerError
from ._estimate import estimate as estimate_request
from ._guard import Guard, default_url
from ._ledger import CounterSpec, CounterStatus
from ._ledger._types import to_datetime
from ._money import format_usd, to_nano
from ._pricing import Price, Rates, price_book
from ._report import Journal, export_row, parse_when, read_journal, report

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


def counter_options(command: F) -> F:
    for option in reversed(_counter_options):
        command = option(command)
    return command


@cli.group()
def limits() -> None:
    """Run-time limit overrides, stored in the ledger (they win over the limits in code)."""


@limits.command("set")
@click.argument("scope")
@click.argument("amount")
@counter_options
@pass_state
@_friendly
def limits_set(state: _State, scope: str, amount: str, per: str, unit: str, tz: str) -> None:
    """Set SCOPE's limit to AMOUNT (dollars for usd) for one period, e.g. `limits set user:alice 20`."""
    counter = _counter(scope, unit, per, tz)
    value = _amount(amount, unit)
    state.guard.ledger.set_limit(counter, value)
    console.print(f"{counter.scope}: {unit} limit per {per} is now {counter.unit.show(value)}")


@limits.command("get")
@click.argument("scope")
@counter_options
@pass_state
@_friendly
def limits_get(state: _State, scope: str, per: str, unit: str, tz: str) -> None:
    """Show SCOPE's run-time limit for one period, if one is set."""
    counter = _counter(scope, unit, per, tz)
    value = state.guard.ledger.get_limit(counter)
    shown = "none (the limit in code applies)" if value is None else counter.unit.show(value)
    console.print(f"{counter.scope}: {unit} limit per {per}: {shown}")


@limits.command("clear")
@click.argument("scope")
@counter_options
@pass_state
@_friendly
def limits_clear(state: _State, scope: str, per: str, unit: str, tz: str) -> None:
    """Remove SCOPE's run-time limit: the limit in code applies again."""
    counter = _counter(scope, unit, per, tz)
    state.guard.ledger.clear_limit(counter)
    console.print(f"{counter.scope}: {unit} limit per {per} cleared (the limit in code applies)")


# -- report and export ------------------------------------------------------------------------------


def _journal(state: _State, since: str, until: str | None, scope: str | None) -> Journal:
    """The journal's entries in the time range (see ``read_journal``)."""
    now = datetime.now(UTC)
    until_at = parse_when(until, now) if until else None
    return read_journal(state.guard.ledger, since=parse_when(since, now), until=until_at, scope=scope)


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
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["key"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    return buffer.getvalue()


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
    journal = _journal(state, since, until, scope)
    rows, total = report(journal.entries, by)
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
    journal = _journal(state, since, until, None)
    rows = [export_row(e) for e in journal.entries]
    text = _csv(rows) if fmt == "csv" else "".join(json.dumps(r) + "\n" for r in rows)
    _write(text, output)
    _warn(journal.warning("export"))


# -- prices and estimate ----------------------------------------------------------------------------


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--prices", "prices_file", type=click.Path(exists=True, dir_okay=False), help="Your overrides.")
@click.option("--provider", help="The provider whose prices apply (default: found from the model name).")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def prices(models: tuple[str, ...], prices_file: str | None, provider: str | None, as_json: bool) -> None:
    """Every rate budgetguard charges MODELS: tokens (USD per million), audio and image tokens, server-side
    tool fees and per-request fees (USD per thousand calls), and where the price comes from."""
    if prices_file:
        price_book.load(prices_file)
    if not models:
        raise CLIError("name one or more models, e.g. `budgetguard prices gpt-4o claude-sonnet-4-6`")
    found = [price_book.get(m, provider=provider) for m in models]
    if as_json:
        click.echo(json.dumps([_price_json(m, p) for m, p in zip(models, found, strict=True)], indent=2))
        return
    table = Table(title="USD per million tokens", title_justify="left")
    columns = (
        "model",
        "input",
        "output",
        "cache read",
        "cache write 5m/1h",
        "context",
        "max output",
        "source",
    )
    for name in columns:
        table.add_column(name, justify="left" if name in ("model", "source") else "right")
    for model, p in zip(models, found, strict=True):
        for label, rates in [(model, p.base), *((f"  > {t:,} input tokens", r) for t, r in p.tiers)]:
            first = label == model
            table.add_row(
                label, f"${rates.input}", f"${rates.output}", f"${rates.cache_read}",
                f"${rates.cache_write} / ${rates.cache_write_1h}",
                _tokens(p.context_window) if first else "", _tokens(p.max_output_tokens) if first else "",
                p.source if first else "",
            )  # fmt: skip
    console.print(table)
    units = Table(title="Other billed units", title_justify="left")
    for name in ("model", "unit", "price"):
        units.add_column(name, justify="right" if name == "price" else "left")
    for model, p in zip(models, found, strict=True):
        for unit, text in _unit_rates(p.base):
            units.add_row(model, unit, text)
            model = ""
    console.print(units)


def _tokens(count: int | None) -> str:
    return "unknown" if count is None else f"{count:,}"


_UNIT_LABELS = (
    ("input_audio", "audio input tokens", "MTok"),
    ("output_audio", "audio output tokens", "MTok"),
    ("input_image", "image input tokens", "MTok"),
    ("output_image", "image output tokens", "MTok"),
    ("web_search", "web search calls", "1k calls"),
    ("web_fetch", "web fetch calls", "1k calls"),
    ("file_search", "file search calls", "1k calls"),
    ("code_execution", "code execution sessions", "1k sessions"),
    ("image_generation", "image generation calls", "1k images"),
    ("request", "requests", "1k requests"),
)


def _unit_rates(rates: Rates) -> list[tuple[str, str]]:
    """Each non-token unit with its rate, or what happens without one."""
    shown = []
    for key, label, per in _UNIT_LABELS:
        value = getattr(rates, key)
        if key == "request" and not value:
            continue  # no per-request fee
        if value is None and key in ("input_image", "output_image"):
            text = f"${rates.input if key == 'input_image' else rates.output} / {per} (text rate)"
        elif value is None:
            text = "not priced: PricingError"
        else:
            text = f"${value} / {per}"
        shown.append((label, text))
    return shown


def _price_json(model: str, price: Price) -> dict[str, Any]:
    def rates(r: Rates) -> dict[str, str | None]:
        keys = (
            "input",
            "output",
            "cache_read",
            "cache_write",
            "cache_write_1h",
            *(k for k, _, _ in _UNIT_LABELS),
        )
        return {k: None if getattr(r, k) is None else str(getattr(r, k)) for k in keys}

    tiers = [{"above_input_tokens": t, **rates(r)} for t, r in price.tiers]
    return {"model": model, "source": price.source, "context_window": price.context_window,
            "max_output_tokens": price.max_output_tokens, **rates(price.base), "tiers": tiers}  # fmt: skip


@cli.command()
@click.option("--model", "-m", help="The model (required unless the request JSON names one).")
@click.option("--max-tokens", type=int, help="The output limit to reserve for (default: the request's).")
@click.option("--json", "as_json", is_flag=True)
@click.argument("source", default="-", type=click.File("r"))
@_friendly
def estimate(model: str | None, max_tokens: int | None, as_json: bool, source: io.TextIOBase) -> None:
    """Tokens and worst-case cost of a prompt or a request JSON, read from SOURCE (a file or - for stdin)."""
    text = source.read()
    try:
        request = json.loads(text)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        request = {"messages": [{"role": "user", "content": text}]}
    if model:
        request["model"] = model
    if not request.get("model"):
        raise CLIError('which model? pass --model, or put "model" in the request JSON')
    if max_tokens is not None:
        request.pop("max_completion_tokens", None)
        request["max_tokens" if "messages" in request else "max_output_tokens"] = max_tokens
    est = estimate_request(request)
    if as_json:
        click.echo(json.dumps({"model": est.model, "input_tokens": est.input_tokens,
                               "output_tokens": est.output_tokens, "cost_usd": str(est.cost),
                               "price_source": est.price.source}))  # fmt: skip
        return
    console.print(
        f"{est.model}: {est.input_tokens:,} input tokens + up to {est.output_tokens:,} output tokens"
    )
    console.print(f"worst case: {format_usd(est.cost_nano)}  (price: {est.price.source})")
    if all(request.get(k) is None for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")):
        console.print("the request sets no output limit, so the model's maximum output is reserved; "
                      "pass --max-tokens or set one on your requests", style="yellow")  # fmt: skip


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

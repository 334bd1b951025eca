"""The ``budgetguard`` command line: status, limits, reports, exports, prices, estimates, a live view, and
administration (reset, credit, refund, charge, limits raise, plan).

The store comes from ``--url`` or ``BUDGETGUARD_URL`` (default: the embedded SQLite ledger); the budgets
from ``--budgets FILE`` or ``BUDGETGUARD_BUDGETS`` (the same TOML/JSON file a service loads with
``budgetguard.load_budgets``). Exit codes: 0 done, 2 bad input, 3 the store failed or is unreachable.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import textwrap
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TextIO

import click
from rich.cells import cell_len, chop_cells
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import __about__
from ._budgets import Period, Scope, Unit, window_for
from ._cli_admin import charge, credit, plan, refund, reset
from ._cli_base import (
    BUDGETS_HELP,
    URL_HELP,
    CLIError,
    State,
    _friendly,
    console,
    pass_state,
    printable,
    reading,
    store_options,
)
from ._cli_limits import limits
from ._cli_prices import estimate, prices
from ._export import export_utf8, write_utf8
from ._forecast import Forecast, forecast
from ._ledger import CounterStatus
from ._ledger._types import to_datetime
from ._money import format_usd
from ._report import coverage, parse_when, summarize
from ._report_html import page, refusal_columns, report_cells


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__about__.__version__, prog_name="budgetguard")
@click.option("--url", envvar="BUDGETGUARD_URL", show_envvar=True, help=URL_HELP)
@click.option(
    "--budgets", "budgets_file", envvar="BUDGETGUARD_BUDGETS", show_envvar=True,
    type=click.Path(dir_okay=False), help=BUDGETS_HELP,
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, url: str | None, budgets_file: str | None) -> None:
    """A hard, shared spending limit in front of every LLM call."""
    ctx.obj = ctx.with_resource(contextlib.closing(State(url, budgets_file)))


# -- demo ------------------------------------------------------------------------------------------


@cli.command()
@click.option("--ledger", type=click.Path(dir_okay=False), help="Where to write the demo's SQLite ledger.")
@_friendly
def demo(ledger: str | None) -> None:
    """Run guarded calls on the real OpenAI and Anthropic SDK clients against a local mock provider."""
    from ._demo import run_demo

    run_demo(console, Path(ledger) if ledger else None)


# -- status and watch ------------------------------------------------------------------------------


def _active_scopes(state: State, now: datetime) -> list[Scope]:
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


def _statuses(state: State, scopes: Iterable[Scope]) -> list[CounterStatus]:
    counters = state.guard.counters_for(scopes)
    return state.guard.ledger.status(counters) if counters else []


def _used(status: CounterStatus) -> Decimal:
    return Decimal(status.spent + status.held) / status.limit if status.limit else Decimal(0)


def _by_use(statuses: Iterable[CounterStatus]) -> list[CounterStatus]:
    """The busiest first (the largest share of their limit spent or held), then by scope."""
    return sorted(statuses, key=lambda s: (-_used(s), str(s.counter.scope)))


def _forecast(s: CounterStatus, now_ms: int) -> Forecast | None:
    return forecast(s.spent, s.held, s.limit, s.window_start, s.window_end, now_ms)


def _runs_out(outlook: Forecast | None, now: datetime) -> str:
    """When, at its burn rate, the budget runs out: a time (with the date when not today), "now", or
    "lasts" (the window); "-" for a budget that never resets."""
    if outlook is None:
        return "-"
    at = outlook.runs_out_at
    if at is None:
        return "lasts"
    return "now" if at <= now else _when(at, now)


def _when(at: datetime, now: datetime) -> str:
    """A time in UTC, with its month and day when it is not today's (a window lasts a month at most)."""
    return at.strftime("%H:%M" if at.date() == now.date() else "%m-%d %H:%M")


def _rate(unit: Unit, per_hour: int) -> str:
    """A burn rate to three significant digits (an estimate: the exact figures are spent and left)."""
    if unit is not Unit.USD or per_hour == 0:
        return f"{per_hour:,}" if unit is not Unit.USD else "$0"
    usd = Decimal(per_hour).scaleb(-9)
    return f"${usd.quantize(Decimal(1).scaleb(usd.adjusted() - 2)).normalize():f}"


def _status_table(statuses: Sequence[CounterStatus], title: str) -> Text:
    columns, rows = _status_rows(statuses)
    return _grid(f"{title}; times UTC", columns, rows, console.width)


def _status_rows(statuses: Sequence[CounterStatus]) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """The status table's columns (name, alignment) and rows, as every surface prints them."""
    rows = []
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    for s in statuses:
        unit = s.counter.unit
        show = unit.show if unit is Unit.USD else "{:,}".format  # (tokens, requests: the unit in "period")
        period = s.counter.period.value + ("" if unit is Unit.USD else f", {unit.value}")
        period += (f" ({s.counter.tz})" if s.counter.tz != "UTC" else "") + (
            " shadow" if s.counter.shadow else ""
        )
        outlook = _forecast(s, now_ms)
        rows.append([
            str(s.counter.scope),
            period,
            show(s.limit) + (" *" if s.overridden else ""),
            show(s.spent),
            show(s.held),
            show(s.remaining),
            "-" if outlook is None else _rate(unit, outlook.per_hour),
            _runs_out(outlook, now),
            _when(s.resets_at, now) if s.resets_at else "never",
        ])  # fmt: skip
    names = ("scope", "period", "limit", "spent", "held", "left", "burn/h", "runs out", "resets")
    text = ("scope", "period", "runs out", "resets")
    return [(name, "left" if name in text else "right") for name in names], rows


def _status_json(s: CounterStatus) -> dict[str, Any]:
    unit = s.counter.unit
    money = (lambda v: format_usd(v)[1:]) if unit is Unit.USD else (lambda v: v)
    outlook = _forecast(s, int(datetime.now(UTC).timestamp() * 1000))
    runs_out = None if outlook is None or outlook.runs_out_at is None else outlook.runs_out_at.isoformat()
    return {
        "scope": str(s.counter.scope),
        "unit": unit.value,
        "period": s.counter.period.value,
        "tz": s.counter.tz,
        "limit": money(s.limit),
        "limit_overridden": s.overridden,
        "shadow": s.counter.shadow,
        "spent": money(s.spent),
        "held": money(s.held),
        "remaining": money(s.remaining),
        "window_start": to_datetime(s.window_start).isoformat(),
        "resets_at": s.resets_at.isoformat() if s.resets_at else None,
        "burn_per_hour": None if outlook is None else money(outlook.per_hour),
        "runs_out_at": runs_out,
        "lasts_window": None if outlook is None else outlook.lasts,
    }


@cli.command()
@click.argument("scope", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@store_options
@pass_state
@_friendly
@reading
def status(state: State, scope: str | None, as_json: bool) -> None:
    """Limits, spent, held, remaining and reset time of SCOPE (e.g. user:alice), or of every active scope."""
    state.need_budgets("status")
    scopes = [Scope.parse(scope)] if scope else _active_scopes(state, datetime.now(UTC))
    statuses = _by_use(_statuses(state, scopes))
    if scope and not statuses:
        raise CLIError(f"no budget in {state.budgets_file} applies to {scope}")
    if as_json:
        click.echo(json.dumps([_status_json(s) for s in statuses], indent=2))
        return
    console.print(
        _status_table(statuses, f"budgets at {state.url}  (* = limit set at run time)"), soft_wrap=True
    )


@cli.command()
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between refreshes.",
)
@click.option(
    "--top",
    default=15,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many of the busiest scopes to show.",
)
@click.option(
    "--count", type=click.IntRange(min=1), help="Stop after this many refreshes (default: until Ctrl-C)."
)
@store_options
@pass_state
@_friendly
@reading
def watch(state: State, interval: float, top: int, count: int | None) -> None:
    """A live view of the busiest scopes, refreshing in place."""
    state.need_budgets("watch")

    def frame() -> Text:
        now = datetime.now(UTC)
        statuses = _by_use(_statuses(state, _active_scopes(state, now)))
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
    "--format",
    "fmt",
    default="table",
    type=click.Choice(["table", "csv", "json", "html"]),
    show_default=True,
    help="html: one self-contained page: charts and tables by day, feature, model and user, and the budgets' "
    "forecasts (given --budgets); --by does not apply.",
)
@_output
@store_options
@pass_state
@_friendly
@reading
def report_command(
    state: State, since: str, until: str | None, by: str, scope: str | None, fmt: str, output: str | None
) -> None:
    """Spend from the journal, grouped by user, feature, model or day. Says so when the journal no longer
    covers the whole range (it keeps a bounded history)."""
    since_at, until_at = _range(since, until)
    if fmt == "html":
        budgets = None
        if state.budgets:  # the budgets' forecasts, as status shows them
            found = _statuses(state, _active_scopes(state, datetime.now(UTC)))
            budgets = _status_rows(_by_use(found))
        html = page(state.guard.ledger, since=since_at, until=until_at, since_text=since, scope=scope,
                    store=state.url, budgets=budgets)  # fmt: skip
        _write(html, output)
        return
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
        *((name, cell, "right") for name, cell in refusal_columns(total, total)),
        ("input tokens", f"{total.input_tokens:,}", "right"),
        ("output tokens", f"{total.output_tokens:,}", "right"),
        ("cost", format_usd(total.cost_nano), "right"),
    ]
    cells = [report_cells(r, total) for r in rows]
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
                Console(file=f, width=120, markup=False).print(table)  # (laid out for 80)
            if warning:
                f.write(f"warning: {warning}\n")
        console.print(f"wrote {output}", style="dim")
        _warn(warning)
    else:
        for table in tables:
            console.print(table)
        if warning:
            click.secho(f"warning: {warning}", fg="yellow")


def _grid(title: str, columns: Sequence[tuple[str, str]], cells: list[list[str]], width: int) -> Text:
    """A plain table of ``cells`` that fits ``width`` (the terminal's; 80 in a pipe) without cutting a
    figure: figures (``right`` columns) keep their width; text columns share what is left, the first
    column (the key: data) first, and fold onto more lines, never cut or hidden. One space between
    columns, a rule under the header. (Laid out here: rich's tables hide or cut columns when short.)"""
    cells = [[printable(cell) for cell in row] for row in cells]  # (ids are user data: no control codes)
    longest = [max([len(name), *(cell_len(row[i]) for row in cells)]) for i, (name, _) in enumerate(columns)]
    text = [i for i, (_, justify) in enumerate(columns) if justify != "right"]
    widths = list(longest)
    for i in text:  # at least the header's longest word and 5 (the key: 12)
        widths[i] = min(longest[i], 12 if i == 0 else max(5, *map(len, columns[i][0].split())))
    room = width - (len(columns) - 1) - sum(widths)
    for i in text:  # what is left, to the text columns in turn, up to their longest cell
        grow = max(min(room, longest[i] - widths[i]), 0)
        widths[i] += grow
        room -= grow

    def lines(row: Sequence[str]) -> list[str]:
        parts = [
            _fold(cell, size) if i in text else [cell]
            for i, (cell, size) in enumerate(zip(row, widths, strict=True))
        ]
        out = []
        for n in range(max(map(len, parts))):
            line = []
            for i, (p, size) in enumerate(zip(parts, widths, strict=True)):
                piece = p[n] if n < len(p) else ""
                pad = " " * (size - cell_len(piece))  # (terminal cells: a wide character takes two)
                line.append(pad + piece if columns[i][1] == "right" else piece + pad)
            out.append(" ".join(line).rstrip())
        return out

    shown = [
        *textwrap.wrap(title, width),
        *lines([name for name, _ in columns]),
        "─" * (sum(widths) + len(columns) - 1),
    ]
    for row in cells:
        shown += lines(row)
    return Text("\n".join(shown), no_wrap=True, overflow="ignore")


def _fold(cell: str, size: int) -> list[str]:
    """``cell`` in pieces of ``size`` terminal cells: at spaces where it has them, else anywhere."""
    pieces: list[str] = []
    for word in cell.split(" "):
        if pieces and cell_len(pieces[-1]) + 1 + cell_len(word) <= size:
            pieces[-1] += " " + word
            continue
        pieces += chop_cells(word, size) or [""]
    return pieces


def _table(
    title: str, key: str, columns: list[tuple[str, str, str]], cells: list[list[str]], *, footer: bool = True
) -> Table:
    """A table that fits the terminal (80 columns in a pipe) without cutting a figure: the figures keep
    their width, the text columns (the key first: data) fold onto more lines, never an ellipsis."""
    table = Table(title=title, title_justify="left", show_footer=footer)
    for i, (name, total, justify) in enumerate(columns):
        figure = justify == "right"
        width = max([len(total), *(len(row[i]) for row in cells)]) if figure else None
        table.add_column(
            name, footer=total, justify=justify, overflow="fold", no_wrap=figure, min_width=width,  # type: ignore[arg-type]
            ratio=1 if name == key else None,
        )  # fmt: skip
    for row in cells:
        table.add_row(*row)
    return table


@cli.command()
@_since
@_until
@click.option("--format", "fmt", default="csv", type=click.Choice(["csv", "jsonl"]), show_default=True)
@_output
@store_options
@pass_state
@_friendly
@reading
def export(state: State, since: str, until: str | None, fmt: str, output: str | None) -> None:
    """Raw journal rows (commits, refusals, releases, expiries, admin changes) for finance. Says so on
    stderr when the journal no longer covers the whole range (it keeps a bounded history)."""
    since_at, until_at = _range(since, until)
    ledger = state.guard.ledger
    pieces = export_utf8(ledger, since=since_at, until=until_at, fmt=fmt)
    if output is None:
        out = _Echo()
        for piece in pieces:
            out.write(piece if isinstance(piece, str) else piece.decode())
        out.flush()
        if not out.written:  # (nothing at all: a blank line, as ever)
            click.echo("")
    else:
        with _replacing(output) as f:
            write_utf8(f, pieces)
        console.print(f"wrote {output}", style="dim")
    _warn(coverage(ledger, since=since_at, until=until_at).warning("export"))  # (read after the rows)


@contextlib.contextmanager
def _replacing(output: str) -> Iterator[TextIO]:
    """A file written beside ``output`` and renamed over it once complete and on disk (``fsync``): an
    export that fails leaves no partial file (and an earlier one untouched). Written directly instead
    where a rename would change more than the content: a target that is not a regular file
    (``/dev/null``, a pipe), one with other hard links, or a folder the user may not create files in
    (the file itself writable). A symbolic link's target is replaced, the link kept; the replaced
    file's mode and (where allowed) owner are kept."""
    target = os.path.realpath(output)
    existing = os.stat(target) if os.path.exists(target) else None
    folder, name = os.path.split(target)
    direct = existing is not None and (not os.path.isfile(target) or existing.st_nlink > 1)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = None if direct else os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # (umask)
    except PermissionError:
        fd = None
    if fd is None:
        with open(target, "w") as f:
            yield f
        return
    try:
        with open(fd, "w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if existing is not None:
            os.chmod(temporary, existing.st_mode & 0o7777)
            with contextlib.suppress(OSError):  # (only root may give a file away)
                os.chown(temporary, existing.st_uid, existing.st_gid)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename on disk too
        directory = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# -- prices and estimate ----------------------------------------------------------------------------


cli.add_command(limits)
for _admin_command in (reset, credit, refund, charge, plan):
    cli.add_command(_admin_command)
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

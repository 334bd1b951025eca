"""``budgetguard report --format html``: one self-contained page of the journal's spend.

Spend by day (a column chart), by feature, model and user (bar charts and the command line's tables),
the self-calibration ratios by model, and, given the budgets, each budget's burn rate and forecast.
Inline CSS and SVG: no script, nothing fetched, so the file opens anywhere (a mail attachment, an
artifact of a CI job). The figures are the strings the command line prints; data (scope ids, models)
is escaped, shown as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from ._ledger import Ledger
from ._money import format_usd
from ._report import ReportRow, Summary, summarize

__all__ = ["GROUPS", "page", "refusal_columns", "report_cells"]

GROUPS = (("day", "Spend by day"), ("feature", "Spend by feature"), ("model", "Spend by model"),
          ("user", "Spend by user"))  # fmt: skip
REPORT_COLUMNS = ("calls", "refused", "input tokens", "output tokens", "cost")
BARS = 25  # the most expensive keys charted (every key is in the table)

CSS = " ".join(
    (
        "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d2430;",
        "padding:0 1em}",
        "h1{font-size:1.5em;margin-bottom:.2em}",
        "h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #d5dae3}",
        ".note{color:#5b6575} .warn{color:#9a5b00} table{border-collapse:collapse;margin:.6em 0}",
        "th,td{padding:.2em .7em;border-bottom:1px solid #eef0f4;text-align:left;vertical-align:top}",
        "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}",
        "tfoot td{font-weight:600} td.k{word-break:break-all} svg{display:block;margin:.4em 0}",
        "svg text{font:12px system-ui,sans-serif;fill:#1d2430}",
    )
)


def report_cells(row: ReportRow, total: ReportRow | None = None) -> list[str]:
    """A report row as the command line's table prints it (key, calls, refused, tokens, cost), with the
    refusals routed to a cheaper model and those in shadow when the ``total`` has some."""
    extra = [] if total is None else refusal_cells(row, total)
    return [row.key, str(row.calls), str(row.refused), *extra, f"{row.input_tokens:,}",
            f"{row.output_tokens:,}", format_usd(row.cost_nano)]  # fmt: skip


def refusal_cells(row: ReportRow, total: ReportRow) -> list[str]:
    """The ``routed`` and ``shadow`` cells of a row, each when the total has some (``refusal_columns``)."""
    return [cell for _, cell in refusal_columns(row, total)]


def refusal_columns(row: ReportRow, total: ReportRow) -> list[tuple[str, str]]:
    """(header, cell) of a row's ``routed`` refusals (of its refusals, those routed to a cheaper model)
    and its ``shadow`` ones (would-be refusals of calls admitted in shadow), each when the total has some."""
    found = [("routed", row.routed, total.routed), ("shadow", row.shadow_refused, total.shadow_refused)]
    return [(name, str(n)) for name, n, shown in found if shown]


def _refusals(total: ReportRow) -> str:
    """What the page's summary line says of the refusals beyond their count."""
    routed = f", {total.routed:,} of them routed to a cheaper model" if total.routed else ""
    shadow = f", {total.shadow_refused:,} more in shadow (admitted)" if total.shadow_refused else ""
    return routed + shadow


def page(
    ledger: Ledger, *, since: datetime, until: datetime | None, since_text: str, scope: str | None,
    store: str, budgets: tuple[Sequence[tuple[str, str]], list[list[str]]] | None = None,
) -> str:  # fmt: skip
    """The page, from the journal of ``ledger`` in the range (and ``scope``), with ``budgets`` (the
    status table's columns and rows) when the budgets are known."""
    summaries = {by: summarize(ledger, by, since=since, until=until, scope=scope, ratios=by == "model")
                 for by, _ in GROUPS}  # fmt: skip
    total = summaries["day"].total
    now = datetime.now(UTC)
    head = [
        f"store {store}; since {since_text} ({since:%Y-%m-%d %H:%M} UTC)"
        + (f" until {until:%Y-%m-%d %H:%M} UTC" if until else "")
        + (f"; only calls on {scope}" if scope else ""),
        f"generated {now:%Y-%m-%d %H:%M} UTC",
    ]
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        "<title>budgetguard report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>budgetguard report</h1>",
        *(f'<p class="note">{escape(line)}</p>' for line in head),
        f"<p><b>{escape(format_usd(total.cost_nano))}</b> over {total.calls:,} calls ({total.refused:,} "
        f"refused{_refusals(total)}; {total.input_tokens:,} input and {total.output_tokens:,} output "
        "tokens)</p>",
    ]
    warning = summaries["day"].coverage.warning("report")
    if warning:
        out.append(f'<p class="warn">warning: {escape(warning)}</p>')
    if budgets is not None:
        columns, rows = budgets
        out.append("<h2>Budgets: burn rate and forecast</h2>")
        out.append(
            '<p class="note">burn/h: the window\'s spend so far per hour it has run; runs out: when at '
            "that rate what is left is gone (lasts: it outlives the window). Times UTC.</p>"
        )
        out.append(_table(list(columns), rows))
    for by, heading in GROUPS:
        out += _section(by, heading, summaries[by])
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _section(by: str, heading: str, summary: Summary) -> list[str]:
    rows = summary.rows
    out = [f"<h2>{escape(heading)}</h2>"]
    if not rows:
        return [*out, '<p class="note">no calls in this range</p>']
    if by == "day":
        ordered = sorted(rows, key=lambda r: r.key)
        out.append(_columns([(r.key, r.cost_nano) for r in ordered]))
    else:
        out.append(_bars([(r.key, r.cost_nano) for r in rows[:BARS]]))
    total = summary.total
    names = [*REPORT_COLUMNS[:2], *(name for name, _ in refusal_columns(total, total)), *REPORT_COLUMNS[2:]]
    columns = [(by, "left"), *((name, "right") for name in names)]
    out.append(_table(columns, [report_cells(r, total) for r in rows], report_cells(total, total)[1:]))
    if by == "model":
        ratios = ("ratio_median", "ratio_p95", "ratio_max")
        columns = [(by, "left"), ("calls", "right"), ("estimated", "right"), ("actual", "right"),
                   *((name[6:], "right") for name in ratios)]  # fmt: skip
        cells = [[r.key, str(r.calls), format_usd(r.estimated_nano), format_usd(r.cost_nano),
                  *(str(r.as_dict()[name]) for name in ratios)] for r in rows]  # fmt: skip
        out.append("<h3>actual / worst-case estimate</h3>")
        out.append(_table(columns, cells))
    return out


def _table(columns: list[tuple[str, str]], rows: list[list[str]], total: list[str] | None = None) -> str:
    def cell(tag: str, text: str, align: str, first: bool) -> str:
        kind = "n" if align == "right" else "k" if first else ""
        return f'<{tag} class="{kind}">{escape(text)}</{tag}>'

    head = "".join(cell("th", name, align, i == 0) for i, (name, align) in enumerate(columns))
    body = "".join(
        "<tr>" + "".join(cell("td", text, columns[i][1], i == 0) for i, text in enumerate(row)) + "</tr>"
        for row in rows
    )
    foot = ""
    if total is not None:
        foot = "<tfoot><tr>" + cell("td", "total", "left", True)
        foot += "".join(cell("td", text, "right", False) for text in total) + "</tr></tfoot>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot}</table>"


def _bars(items: list[tuple[str, int]]) -> str:
    """A horizontal bar chart (the SVG's geometry only: the figures are in the table)."""
    top = max((value for _, value in items), default=0) or 1
    label, width, row = 260, 560, 22
    height = row * len(items) + 4
    parts = [f'<svg width="{label + width + 110}" height="{height}" role="img">']
    for i, (key, value) in enumerate(items):
        y = i * row + 2
        bar = max(value * width // top, 1 if value else 0)
        short = key if len(key) <= 38 else key[:37] + "…"
        parts.append(f'<text x="{label - 6}" y="{y + 15}" text-anchor="end">{escape(short)}</text>')
        parts.append(f'<rect x="{label}" y="{y + 3}" width="{bar}" height="{row - 6}" fill="#4f7cc9"/>')
        parts.append(f'<text x="{label + bar + 6}" y="{y + 15}">{escape(format_usd(value))}</text>')
    return "".join(parts) + "</svg>"


def _columns(items: list[tuple[str, int]]) -> str:
    """A column chart over time (days in order)."""
    top = max((value for _, value in items), default=0) or 1
    chart, step = 220, max(min(900 // max(len(items), 1), 60), 4)
    width = step * len(items) + 80
    parts = [f'<svg width="{width}" height="{chart + 60}" role="img">']
    parts.append(f'<text x="0" y="12">{escape(format_usd(top))}</text>')
    for i, (key, value) in enumerate(items):
        height = value * chart // top
        x = 70 + i * step
        tip = f"<title>{escape(key)}: {escape(format_usd(value))}</title>"
        box = f'x="{x}" y="{chart + 20 - height}" width="{max(step - 3, 2)}" height="{height}"'
        parts.append(f'<rect {box} fill="#4f7cc9">{tip}</rect>')
        if len(items) <= 31 or i % (len(items) // 31 + 1) == 0:
            parts.append(f'<text x="{x}" y="{chart + 36}" transform="rotate(45 {x} {chart + 36})">'
                         f"{escape(key[5:] if len(key) == 10 else key)}</text>")  # fmt: skip
    return "".join(parts) + "</svg>"

"""``budgetguard report --format html``: one self-contained page, checked in a real headless Chromium
(Debian's ``chromium``): it renders, and shows the figures the command line prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import budgetguard as bg
from budgetguard._cli import cli
from tests.test_cli import BUDGETS

ODD = "<b>x</b>&amp;[bold]y"  # an id a browser would read as markup, and rich as its own


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, Path]:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    guard = bg.Guard(url, budgets=bg.load_budgets(budgets))

    @guard.with_budget(user="{user}", feature="{feature}")
    def call(*, user: str, feature: str, model: str, messages: Any, max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 40 + len(user), "completion_tokens": 7}}

    for user, feature, model in (("alice", "search", "gpt-4o-mini"), ("bob", "chat", "gpt-4o"),
                                 (ODD, "search", "gpt-4o-mini"), ("alice", "chat", "gpt-4o")):  # fmt: skip
        call(
            user=user,
            feature=feature,
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=40,
        )
    guard.close()
    return url, budgets


def cli_json(store: tuple[str, Path], *args: str) -> Any:
    url, budgets = store
    result = CliRunner().invoke(cli, ["--url", url, "--budgets", str(budgets), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def figures(store: tuple[str, Path]) -> set[str]:
    """What the command line prints: every key, cost, count and token total of each report, and each
    budget's limit, spent and left."""
    shown: set[str] = set()
    for by in ("day", "feature", "model", "user"):
        document = cli_json(store, "report", "--by", by, "--format", "json")
        for row in [*document["rows"], document["total"]]:
            shown |= {row["key"], f"${row['cost_usd']}", str(row["calls"]), f"{row['input_tokens']:,}",
                      f"{row['output_tokens']:,}"}  # fmt: skip
    for budget in cli_json(store, "status", "--json"):
        if budget["unit"] == "usd":
            shown |= {budget["scope"], *(f"${budget[k]}" for k in ("limit", "spent", "remaining"))}
    return shown


class Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.cells.append(data)


def test_the_page_has_every_figure_the_command_line_prints_and_fetches_nothing(
    store: tuple[str, Path], tmp_path: Path
) -> None:
    url, budgets = store
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        cli, ["--url", url, "--budgets", str(budgets), "report", "--format", "html", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    parsed = Text()
    parsed.feed(page)
    cells = {c.strip() for c in parsed.cells}
    missing = {f for f in figures(store) if f not in cells}
    assert not missing, missing
    assert "script" not in parsed.tags and ODD not in page  # the id is escaped, shown as text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # nothing fetched
    assert {"svg", "table"} <= parsed.tags and "Budgets: burn rate and forecast" in page


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("BUDGETGUARD_REQUIRE_CHROMIUM"):
        pytest.fail(
            "BUDGETGUARD_REQUIRE_CHROMIUM is set but no chromium is on PATH (apt-get install chromium)"
        )
    return found


def test_chromium_renders_the_page_and_shows_the_figures(store: tuple[str, Path], tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); CI installs it and requires it")
    url, budgets = store
    out = tmp_path / "report.html"
    args = ["--url", url, "--budgets", str(budgets), "report", "--format", "html", "-o", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    pdf, png = tmp_path / "report.pdf", tmp_path / "report.png"
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    for extra in (
        [f"--print-to-pdf={pdf}", "--no-pdf-header-footer"],
        [f"--screenshot={png}", "--window-size=1200,1600"],
    ):
        done = subprocess.run([*common, *extra, out.as_uri()], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    from pypdf import PdfReader

    shown = "".join("".join(page.extract_text().split()) for page in PdfReader(pdf).pages)
    missing = {f for f in figures(store) if "".join(f.split()) not in shown}  # (a long id may wrap)
    assert not missing, (missing, shown[:3000])  # every figure the command line prints, laid out and shown
    image = png.read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 10_000  # a drawn page, not a blank one

"""The ``budgetguard`` command line on a real SQLite ledger filled by a guard."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

import budgetguard as bg
from budgetguard._cli import cli
from budgetguard._cli_base import EXIT_BAD_INPUT, EXIT_STORE

BUDGETS = """
[[budgets]]
scope = "user"
usd = "0.01"
per = "day"

[[budgets]]
scope = "feature:search"
tokens = 100000
per = "hour"

[[budgets]]
scope = "global"
usd = 5.00
per = "month"
"""

USAGES = {"alice": (120, 80), "bob": (300, 200), "carol": (40, 10)}


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, Path]:
    """A ledger with calls by three users on two features, and one refusal."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    guard = bg.Guard(url, budgets=bg.load_budgets(budgets))

    @guard.with_budget(user="{user}", feature="{feature}")
    def call(*, user: str, feature: str, model: str, messages: Any, max_tokens: int) -> dict[str, Any]:
        prompt, completion = USAGES[user]
        return {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}

    for user in USAGES:
        for feature in ("search", "chat"):
            hello = [{"role": "user", "content": "Hi"}]
            call(user=user, feature=feature, model="gpt-4o-mini", messages=hello, max_tokens=300)
    with pytest.raises(bg.BudgetExceededError):
        call(user="alice", feature="chat", model="gpt-4o", messages=[], max_tokens=100_000)
    guard.close()
    return url, budgets


def run(store: tuple[str, Path], *args: str, input: str | None = None) -> Result:
    url, budgets = store
    return CliRunner().invoke(cli, ["--url", url, "--budgets", str(budgets), *args], input=input)


def test_status_json_matches_the_ledger(store: tuple[str, Path]) -> None:
    result = run(store, "status", "--json")
    assert result.exit_code == 0, result.output
    rows = {(r["scope"], r["unit"]): r for r in json.loads(result.output)}
    assert set(rows) == {("user:alice", "usd"), ("user:bob", "usd"), ("user:carol", "usd"),
                         ("feature:search", "tokens"), ("global", "usd")}  # fmt: skip
    price = bg.get_price("gpt-4o-mini")
    for user, (prompt, completion) in USAGES.items():
        cost = 2 * price.cost_nano(bg.Usage(input_tokens=prompt, output_tokens=completion))
        assert bg.to_nano(rows[(f"user:{user}", "usd")]["spent"]) == cost
        assert rows[(f"user:{user}", "usd")]["held"] == "0"
    assert rows[("feature:search", "tokens")]["spent"] == sum(p + c for p, c in USAGES.values())
    table = run(store, "status", "user:bob")
    assert table.exit_code == 0 and "user:bob" in table.output and "user:alice" not in table.output


def test_report_totals_equal_the_counters_to_the_nano(store: tuple[str, Path]) -> None:
    status = {r["scope"]: r for r in json.loads(run(store, "status", "--json").output)}
    report = json.loads(run(store, "report", "--by", "user", "--format", "json").output)
    by_user = {r["key"]: r for r in report["rows"]}
    for user in USAGES:
        assert bg.to_nano(by_user[user]["cost_usd"]) == bg.to_nano(status[f"user:{user}"]["spent"])
        assert by_user[user]["calls"] == 2
    assert by_user["alice"]["refused"] == 1
    assert bg.to_nano(report["total"]["cost_usd"]) == bg.to_nano(status["global"]["spent"])
    features = json.loads(run(store, "report", "--by", "feature", "--format", "json").output)
    assert {r["key"] for r in features["rows"]} == {"search", "chat"}  # chat has no budget: still reported
    models = run(store, "report", "--by", "model")
    assert models.exit_code == 0 and "gpt-4o-mini" in models.output and "total" in models.output
    only = json.loads(
        run(store, "report", "--scope", "feature:search", "--by", "user", "--format", "json").output
    )
    assert only["total"]["calls"] == 3
    # chat has no budget: its calls are found by the call's scopes, not only the ones a budget charged
    chat = json.loads(
        run(store, "report", "--scope", "feature:chat", "--by", "user", "--format", "json").output
    )
    assert (chat["total"]["calls"], chat["total"]["refused"]) == (3, 1)
    assert {r["key"] for r in chat["rows"]} == set(USAGES)


def test_report_and_export_files(store: tuple[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "by-day.csv"
    assert run(store, "report", "--by", "day", "--format", "csv", "--output", str(out)).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows[-1]["key"] == "total" and rows[-1]["calls"] == "6"
    exported = run(store, "export", "--format", "jsonl")
    lines = [json.loads(line) for line in exported.output.splitlines()]
    assert sorted(e["event"] for e in lines) == ["committed"] * 6 + ["refused"]
    committed = [e for e in lines if e["event"] == "committed"]
    assert all(e["model"] == "gpt-4o-mini" and e["attempt"] == 1 for e in committed)
    as_csv = list(csv.DictReader(io.StringIO(run(store, "export").output)))
    assert len(as_csv) == 7 and {"time", "cost_usd", "input_tokens"} <= set(as_csv[0])
    # the scopes: a list in JSON lines, a column per scope kind in CSV (issue 19)
    assert all(e["scopes"][0] == "global" and e["scopes"][1].startswith("user:") for e in committed)
    assert [(r["scope_global"], r["scope_user"]) for r in as_csv] == [
        tuple(label.partition(":")[2] or label for label in e["scopes"][:2]) for e in lines
    ]


def test_export_to_a_file_is_all_or_nothing(store: tuple[str, Path], tmp_path: Path) -> None:
    """``export -o FILE`` writes beside FILE and renames on success: a failure halfway leaves no
    partial file and an earlier export untouched; a success keeps the earlier file's mode."""
    out = tmp_path / "out" / "journal.csv"
    out.parent.mkdir()
    assert run(store, "export", "-o", str(out)).exit_code == 0
    good = out.read_text()
    assert len(good.splitlines()) == 8
    out.chmod(0o640)
    assert run(store, "export", "--format", "jsonl", "-o", str(out)).exit_code == 0
    earlier = out.read_text()
    assert earlier != good and out.stat().st_mode & 0o777 == 0o640
    db = sqlite3.connect(store[0].removeprefix("sqlite:///"))
    db.execute(  # an entry no reader can read, after the good ones: the export fails on it
        "INSERT INTO journal (ts, event, res_id, scopes, amounts, data) "
        "SELECT max(ts) + 1, 'committed', 'broken', '[]', '{}', '{not json' FROM journal"
    )
    db.commit()
    db.close()
    failed = run(store, "export", "-o", str(out))
    assert failed.exit_code != 0
    assert out.read_text() == earlier and sorted(p.name for p in out.parent.iterdir()) == ["journal.csv"]
    fresh = tmp_path / "out" / "new.jsonl"
    assert run(store, "export", "--format", "jsonl", "-o", str(fresh)).exit_code != 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["journal.csv"]  # (nothing written)


def test_export_to_a_hard_linked_file_writes_it_in_place(store: tuple[str, Path], tmp_path: Path) -> None:
    """A rename would split a file with other hard links from them: such a file is written directly."""
    out, other = tmp_path / "journal.csv", tmp_path / "linked.csv"
    out.write_text("old\n")
    os.link(out, other)
    assert run(store, "export", "-o", str(out)).exit_code == 0
    assert other.read_text() == out.read_text() != "old\n" and out.stat().st_nlink == 2


def test_export_to_a_file_is_the_text_export_s_utf8(store: tuple[str, Path], tmp_path: Path) -> None:
    """SQLite's lines go to a file as SQLite's UTF-8 bytes: the file is the text export, encoded; a
    text file of another encoding is written through text."""
    from budgetguard._export import export_utf8, write_utf8
    from budgetguard._ledger import SQLiteLedger

    ledger = SQLiteLedger(Path(store[0].removeprefix("sqlite:///")))
    try:  # (the lines come from SQL as bytes)
        assert any(isinstance(piece, bytes) for piece in export_utf8(ledger, since=None))
    finally:
        ledger.close()
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"journal.{fmt}"
        assert run(store, "export", "--format", fmt, "-o", str(out)).exit_code == 0
        assert out.read_bytes() == run(store, "export", "--format", fmt).output.encode()
    raw = io.BytesIO()
    latin = io.TextIOWrapper(raw, encoding="latin-1")
    write_utf8(latin, ["a,", "ünï".encode(), "\n"])
    latin.flush()
    assert raw.getvalue() == "a,ünï\n".encode("latin-1")


def test_limits_set_get_clear_and_status_marks_the_override(store: tuple[str, Path]) -> None:
    assert (
        run(store, "limits", "get", "user:alice").output.strip().endswith("none (the limit in code applies)")
    )
    done = run(store, "limits", "set", "user:alice", "$0.50")
    assert done.exit_code == 0 and "$0.5" in done.output
    assert "$0.5" in run(store, "limits", "get", "user:alice").output
    [alice] = [r for r in json.loads(run(store, "status", "--json").output) if r["scope"] == "user:alice"]
    assert alice["limit"] == "0.5" and alice["limit_overridden"] is True
    assert run(store, "limits", "clear", "user:alice").exit_code == 0
    [alice] = [r for r in json.loads(run(store, "status", "--json").output) if r["scope"] == "user:alice"]
    assert alice["limit"] == "0.01" and alice["limit_overridden"] is False
    tokens = run(store, "limits", "set", "feature:search", "5000", "--unit", "tokens", "--per", "hour")
    assert tokens.exit_code == 0 and "5000 tokens" in tokens.output


def test_calls_without_a_budget_are_reported_and_not_shown_as_a_budget(tmp_path: Path) -> None:
    """A guard with no budgets still journals every call (on its metering counter): report and export
    have them; status lists only the budgets of the file."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    guard = bg.Guard(url)

    @guard.metered(user="{user}", feature="chat")
    def call(*, user: str, model: str, messages: Any, max_tokens: int) -> dict[str, Any]:
        prompt, completion = USAGES[user]
        return {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}

    for user in USAGES:
        call(user=user, model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=300)
    guard.close()
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS)
    store = (url, budgets)

    price = bg.get_price("gpt-4o-mini")
    costs = {u: price.cost_nano(bg.Usage(input_tokens=p, output_tokens=c)) for u, (p, c) in USAGES.items()}
    report = json.loads(run(store, "report", "--by", "user", "--format", "json").output)
    assert {r["key"]: (r["calls"], bg.to_nano(r["cost_usd"])) for r in report["rows"]} == {
        u: (1, cost) for u, cost in costs.items()
    }
    assert bg.to_nano(report["total"]["cost_usd"]) == sum(costs.values())
    table = run(store, "report", "--by", "feature")
    assert (
        table.exit_code == 0 and "chat" in table.output and bg.format_usd(sum(costs.values())) in table.output
    )
    lines = [json.loads(line) for line in run(store, "export", "--format", "jsonl").output.splitlines()]
    assert [(e["event"], e["scopes"], e["model"]) for e in lines] == [
        ("committed", ["global", f"user:{u}", "feature:chat"], "gpt-4o-mini") for u in USAGES
    ]
    status = json.loads(run(store, "status", "--json").output)
    rows = {(r["scope"], r["period"]): r for r in status}  # the file's exact budgets; no metering counter
    assert set(rows) == {("global", "month"), ("feature:search", "hour")}
    assert rows[("global", "month")]["spent"] == "0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["limits", "set", "user:alice", "--", "-3"], "negative"),
        (["limits", "set", "user:alice", "lots"], "not an amount of dollars"),
        (["limits", "set", "feature:search", "1.5", "--unit", "tokens"], "whole number"),
        (["limits", "set", "user:dave", "-1"], "negative: a limit is 0 or more"),
        (["limits", "set", "global", "30", "--per", "day"], "no budget in"),
        (["limits", "set", "feature:search", "30", "--unit", "requests"], "no budget in"),
        (["watch", "--interval", "-1"], "--interval"),
        (["watch", "--top", "0"], "--top"),
        (["watch", "--count", "0"], "--count"),
        (["limits", "set", ":alice", "1"], "scope"),
        (["status", "team:x"], "no budget"),
        (["report", "--since", "last tuesday"], "cannot read the time"),
        (["prices", "no-such-model-xyz"], "no-such-model-xyz"),
        (["estimate"], "which model"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_code_2(
    store: tuple[str, Path], args: list[str], message: str
) -> None:
    result = run(store, *args, input="hello")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_without_budgets_status_says_how_to_give_them(store: tuple[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["--url", store[0], "status"])
    assert result.exit_code == EXIT_BAD_INPUT and "--budgets FILE" in result.output


def test_an_unreachable_store_exits_3() -> None:
    args = ["--url", "redis://127.0.0.1:1/0", "limits", "get", "user:alice", "--per", "day"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_STORE, result.output
    assert "unreachable" in result.output and "BUDGETGUARD_URL" in result.output


def test_prices_shows_the_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["prices", "gpt-4o", "--json"])
    [gpt4o] = json.loads(result.output)
    assert (gpt4o["input"], gpt4o["output"], gpt4o["cache_read"]) == ("2.5", "10", "1.25")
    assert "genai-prices" in gpt4o["source"]
    assert (gpt4o["context_window"], gpt4o["max_output_tokens"]) == (128_000, 16_384)
    shown = CliRunner().invoke(cli, ["prices", "gpt-4.1"], env={"COLUMNS": "200"})
    assert "max output" in shown.output and "32,768" in shown.output
    overrides = tmp_path / "prices.toml"
    overrides.write_text('[models."acme-cli-model"]\ninput = 1.50\noutput = 6.00\n')
    try:
        table = CliRunner().invoke(
            cli, ["prices", "acme-cli-model", "--prices", str(overrides)], env={"COLUMNS": "200"}
        )
        assert table.exit_code == 0 and "override" in table.output and "$1.5" in table.output
    finally:
        bg.price_book.clear_overrides()


def test_estimate_a_prompt_and_a_request(tmp_path: Path) -> None:
    prompt = CliRunner().invoke(cli, ["estimate", "--model", "gpt-4o-mini", "--max-tokens", "100", "--json"],
                                input="Write a haiku about budgets.")  # fmt: skip
    got = json.loads(prompt.output)
    haiku = [{"role": "user", "content": "Write a haiku about budgets."}]
    request = {"model": "gpt-4o-mini", "messages": haiku, "max_tokens": 100}
    expected = bg.estimate(request)
    assert (got["input_tokens"], got["output_tokens"]) == (expected.input_tokens, 100)
    assert got["cost_usd"] == str(expected.cost)
    file = tmp_path / "request.json"
    file.write_text(json.dumps({**request, "max_tokens": None} | {"model": "gpt-4o"}))
    table = CliRunner().invoke(cli, ["estimate", str(file)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "gpt-4o" in table.output and "no output limit" in table.output
    assert "up to 16,384 output tokens" in table.output  # gpt-4o's maximum output, not its window
    unbounded = CliRunner().invoke(cli, ["estimate", "--model", "gpt-5-search-api"], input="Any news?")
    assert unbounded.exit_code == EXIT_BAD_INPUT and "no output limit is known" in unbounded.output
    bounded = CliRunner().invoke(
        cli, ["estimate", "-m", "gpt-5-search-api", "--max-tokens", "9"], input="Any news?"
    )
    assert bounded.exit_code == 0 and "up to 9 output tokens" in bounded.output


def test_watch_refreshes_the_busiest_scopes(store: tuple[str, Path]) -> None:
    result = run(store, "watch", "--count", "2", "--interval", "0.1", "--top", "2")
    assert result.exit_code == 0, result.output
    assert "busiest scopes" in result.output and "user:bob" in result.output


def test_scope_ids_and_models_are_printed_literally_never_as_markup(tmp_path: Path) -> None:
    """Ids come from end users: ``[/]`` used to crash ``report`` and ``status`` (rich's MarkupError), and
    ``[bold]`` was styled instead of shown."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    guard = bg.Guard(url, budgets=bg.load_budgets(budgets))
    ids = ["x[/]y", "[bold]z[/bold]", "[link=http://e.invalid]w"]

    @guard.with_budget(user="{user}", feature="search")
    def call(*, user: str, model: str, messages: Any, max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 5, "completion_tokens": 5}}

    for user in ids:
        call(user=user, model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=20)
    guard.close()
    wide = {"COLUMNS": "200"}  # wide enough that no id is folded across lines
    for args in (["status"], ["report", "--by", "user"], ["limits", "set", f"user:{ids[0]}", "$1"]):
        result = CliRunner(env=wide).invoke(cli, ["--url", url, "--budgets", str(budgets), *args])
        assert result.exit_code == 0, result.output
        if args[0] != "limits":
            for user in ids:
                assert user in result.output  # shown as typed: neither parsed as markup nor dropped
    shown = CliRunner().invoke(cli, ["--url", url, "limits", "get", f"user:{ids[0]}", "--per", "day"]).output
    assert f"user:{ids[0]}" in shown


def _shown(ratio: Fraction) -> str:
    return f"{Decimal(math.ceil(ratio * 1000)) / 1000:.3f}"


def test_report_by_model_and_function_shows_estimate_and_actual(store: tuple[str, Path]) -> None:
    """Self-calibration: per model, the calls' worst-case estimates and actual / estimate."""
    hello = [{"role": "user", "content": "Hi"}]
    worst = bg.estimate({"model": "gpt-4o-mini", "messages": hello, "max_tokens": 300}).cost_nano
    price = bg.get_price("gpt-4o-mini")
    costs = sorted(
        price.cost_nano(bg.Usage(input_tokens=p, output_tokens=c)) for p, c in USAGES.values() for _ in "ab"
    )  # two calls per user (carol, carol, alice, alice, bob, bob)
    report = json.loads(run(store, "report", "--by", "model", "--format", "json").output)
    (mini,) = [r for r in report["rows"] if r["key"] == "gpt-4o-mini"]
    assert (mini["calls"], bg.to_nano(mini["estimated_usd"]), bg.to_nano(mini["cost_usd"])) == (
        6, 6 * worst, sum(costs)
    )  # fmt: skip
    ratios = [Fraction(c, worst) for c in costs]
    # nearest rank of 6: median is the 3rd (alice), p95 the 6th (bob), max the 6th
    assert (mini["ratio_median"], mini["ratio_p95"], mini["ratio_max"]) == (
        _shown(ratios[2]), _shown(ratios[5]), _shown(ratios[5])
    )  # fmt: skip
    table = run(store, "report", "--by", "model")
    assert "actual / worst-case estimate by model" in table.output and _shown(ratios[2]) in table.output
    by_function = json.loads(run(store, "report", "--by", "function", "--format", "json").output)
    keys = {r["key"]: r["calls"] for r in by_function["rows"]}
    assert keys == {"tests.test_cli.store.<locals>.call": 6}  # the refused call is no row's call
    _, total = bg.report(bg.read_journal(bg.open_ledger(store[0]), since=None).entries, "model")
    assert total.calibration is not None and total.calibration.median == ratios[2]


def test_url_and_budgets_are_accepted_after_the_command_and_shown_in_help(store: tuple[str, Path]) -> None:
    url, budgets = store
    after = CliRunner().invoke(cli, ["status", "--json", "--url", url, "--budgets", str(budgets)])
    before = run(store, "status", "--json")
    timeless = [{k: v for k, v in row.items() if k not in ("burn_per_hour", "runs_out_at")}  # (they move)
                for document in (after, before) for row in json.loads(document.output)]  # fmt: skip
    assert after.exit_code == 0 and timeless[: len(timeless) // 2] == timeless[len(timeless) // 2 :] != []
    for args in (["--help"], ["status", "--help"], ["report", "--help"], ["limits", "set", "--help"]):
        shown = " ".join(CliRunner().invoke(cli, args).output.split())
        assert "--url" in shown and "env var: BUDGETGUARD_URL" in shown and "BUDGETGUARD_BUDGETS" in shown


@pytest.mark.parametrize(
    "args",
    [["status"], ["report"], ["export"], ["watch", "--count", "1"], ["limits", "get", "user:a"],
     ["limits", "clear", "user:a"]],
)  # fmt: skip
def test_a_read_command_on_a_missing_sqlite_file_is_an_error_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    """It used to create an empty ledger there and report $0."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS)
    missing = tmp_path / "typo.db"
    result = CliRunner().invoke(cli, ["--url", f"sqlite:///{missing}", "--budgets", str(budgets), *args])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"no ledger at {missing}" in result.output and "--url" in result.output
    assert list(tmp_path.iterdir()) == [budgets]


def test_limits_set_changes_the_budget_it_names_or_fails(store: tuple[str, Path]) -> None:
    """``global`` has a monthly budget: ``limits set global 30`` changes that one (it used to store a day
    limit that nothing read, and print success); a period the file does not have is refused, unstored."""
    done = run(store, "limits", "set", "global", "30")
    assert done.exit_code == 0 and "per month is now $30" in done.output
    [shown] = json.loads(run(store, "status", "global", "--json").output)
    assert (shown["period"], shown["limit"], shown["limit_overridden"]) == ("month", "30", True)
    url, budgets = store
    ledger = bg.open_ledger(url)
    day = bg.CounterSpec(bg.Scope("global"), bg.Unit.USD, bg.Period.DAY, 0)
    assert run(store, "limits", "set", "global", "5", "--per", "day").exit_code == EXIT_BAD_INPUT
    assert ledger.get_limit(day) is None
    # the counter of calls with no budget (README: `limits set global AMOUNT --per total`)
    assert run(store, "limits", "set", "global", "7", "--per", "total").exit_code == 0
    assert ledger.get_limit(bg.Guard.METERING) == 7_000_000_000
    ledger.close()
    # several budgets on one scope: the options choose, else it says which there are
    both = budgets.read_text() + '\n[[budgets]]\nscope = "user"\nusd = "1"\nper = "month"\n'
    budgets.write_text(both)
    several = run(store, "limits", "set", "user:alice", "2")
    assert several.exit_code == EXIT_BAD_INPUT
    assert "several budgets (usd limit per day; usd limit per month)" in " ".join(several.output.split())
    assert "per month is now $2" in run(store, "limits", "set", "user:alice", "2", "--per", "month").output
    # without a budgets file, --per names the budget
    bare = CliRunner().invoke(cli, ["--url", url, "limits", "set", "user:alice", "3"])
    assert bare.exit_code == EXIT_BAD_INPUT and "--budgets FILE" in bare.output
    named = CliRunner().invoke(cli, ["--url", url, "limits", "set", "user:alice", "3", "--per", "week"])
    assert named.exit_code == 0 and "per week is now $3" in named.output


@pytest.mark.parametrize(
    "user", ["alice-with-a-rather-long-identifier-0123456789", "利用者-とても長い識別子の例-0123456789-東京"]
)
def test_tables_fit_80_columns_without_cutting_a_figure(tmp_path: Path, user: str) -> None:
    """In a pipe (80 columns), a long scope id and large limits: the figures are whole (no ellipsis),
    the id folds onto more lines. Widths are terminal cells: a wide (CJK) character takes two."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        '[[budgets]]\nscope = "user"\nusd = "1234567.89"\nper = "day"\ntz = "America/Los_Angeles"\n'
    )
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    guard = bg.Guard(url, budgets=bg.load_budgets(budgets))

    @guard.with_budget(user="{user}")
    def call(*, user: str, model: str, messages: Any, max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 123_456, "completion_tokens": 654_321}}

    call(user=user, model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=700_000)
    spent = guard.ledger.status(guard.counters_for([bg.Scope("user", user)]))[0].spent
    guard.close()
    narrow = CliRunner(env={"COLUMNS": "80"})
    for args, figures in (
        (["status"], ["$1234567.89", bg.format_usd(spent), bg.format_usd(1_234_567_890_000_000 - spent)]),
        (["report"], [bg.format_usd(spent), "123,456", "654,321"]),
        (["report", "--by", "model"], [bg.format_usd(spent)]),
    ):
        result = narrow.invoke(cli, ["--url", url, "--budgets", str(budgets), *args])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(map(cell_len, lines)) <= 80 and "…" not in result.output, result.output
        for figure in figures:
            assert any(figure in line for line in lines), (figure, result.output)


def test_status_forecasts_when_each_budget_runs_out(store: tuple[str, Path]) -> None:
    """The burn rate is the window's spend so far per hour it has run; a budget that cannot last says
    when it runs out ("now" once what is left is gone), the others that they last the window."""
    assert run(store, "limits", "set", "user:alice", "0.0001").exit_code == 0  # below what she spent
    # bob's limit far above his rate however early in the UTC day this runs (the rate is his spend per
    # hour his day's window has run: minutes after midnight, his budget's own limit ran out before it)
    assert run(store, "limits", "set", "user:bob", "1000000").exit_code == 0
    before = datetime.now(UTC)
    rows = {(r["scope"], r["unit"]): r for r in json.loads(run(store, "status", "--json").output)}
    after = datetime.now(UTC)
    alice, bob = rows[("user:alice", "usd")], rows[("user:bob", "usd")]
    assert alice["lasts_window"] is False and before <= datetime.fromisoformat(alice["runs_out_at"]) <= after
    assert bob["lasts_window"] is True and bob["runs_out_at"] is None
    start = datetime.fromisoformat(bob["window_start"])
    spent = bg.to_nano(bob["spent"])
    hours = [(moment - start).total_seconds() / 3600 for moment in (after, before)]
    slow, fast = (Decimal(spent) / Decimal(h) / 10**9 for h in hours)
    assert slow - Decimal("1e-9") <= Decimal(bob["burn_per_hour"]) <= fast  # (rounded down to a nano-USD)
    table = run(store, "status").output
    assert "burn/h" in table and "runs" in table, table  # (the header "runs out" may fold)
    [alice_line] = [line for line in table.splitlines() if line.startswith("user:alice")]
    assert " now " in alice_line


def test_control_characters_in_ids_are_shown_as_escapes_never_sent_to_the_terminal(tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    evil = "a\x1b]0;pwned\x07\x1b[2J"
    guard = bg.Guard(url, budgets=bg.load_budgets(budgets))

    @guard.with_budget(user="{user}", feature="search")
    def call(*, user: str, model: str, messages: Any, max_tokens: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 5, "completion_tokens": 5}}

    call(user=evil, model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=20)
    guard.close()
    base = ["--url", url, "--budgets", str(budgets)]
    for args in (["status"], ["limits", "set", f"user:{evil}", "1"]):
        shown = CliRunner().invoke(cli, [*base, *args]).output
        assert "\x1b" not in shown and "\x07" not in shown and "\\x1b" in shown
    assert "user:a\\x1b]0;pwned\\x07\\x1b[2J: usd limit per day is now $1" in shown  # (limits set)


def test_limits_checks_the_time_zone_and_the_metering_counter_is_one_budget(tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nscope = "global"\nusd = "50"\nper = "total"\n')
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bg.open_ledger(url).close()
    bare = CliRunner().invoke(
        cli, ["--url", url, "limits", "set", "user:bob", "5", "--per", "day", "--tz", "Nowhere/Zone"]
    )
    assert bare.exit_code == EXIT_BAD_INPUT and "Nowhere/Zone" in bare.output
    total = CliRunner().invoke(
        cli, ["--url", url, "--budgets", str(budgets), "limits", "set", "global", "5", "--per", "total"]
    )
    assert total.exit_code == 0 and "per total is now $5" in total.output


def test_status_with_no_active_scope_prints_an_empty_table(tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nscope = "user"\nusd = "1"\nper = "day"\n')
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bg.open_ledger(url).close()
    result = CliRunner().invoke(cli, ["--url", url, "--budgets", str(budgets), "status"])
    assert result.exit_code == 0 and "burn/h" in result.output, result.output


def test_report_tells_routed_refusals_and_shadow_ones_apart(tmp_path: Path) -> None:
    """A refusal routed to a cheaper model, one raised to the caller and one in shadow: the table shows
    ``routed`` and ``shadow`` columns, JSON and CSV their counts, the status a shadow budget as such."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        '[[budgets]]\nscope = "user"\nusd = "0.001"\nper = "day"\n\n'
        '[[budgets]]\nscope = "feature"\nusd = "0.0001"\nper = "hour"\nmode = "shadow"\n'
    )
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    guard = bg.Guard(url, budgets=bg.load_budgets(budgets))

    def reply(**request: Any) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 10, "completion_tokens": 10}, "model": request["model"]}

    def asking(**request: Any) -> dict[str, Any]:
        return {"model": request["model"], "messages": [], "max_tokens": 1000}

    routed = guard.with_budget(reply, estimate=asking, route=["gpt-4o", "gpt-4o-mini"], user="alice",
                               feature="chat")  # fmt: skip
    routed(model="gpt-4o")  # $0.01 at worst: refused, routed to gpt-4o-mini (in shadow past $0.0001)
    plain = guard.with_budget(reply, estimate=asking, user="alice", feature="chat")
    with pytest.raises(bg.BudgetExceededError):
        plain(model="gpt-4o")
    guard.close()
    store = (url, budgets)
    table = run(store, "report", "--by", "user")
    assert table.exit_code == 0, table.output
    cells = [re.findall(r"[\w.$,]+", line) for line in table.output.splitlines()]
    assert ["calls", "refused", "routed", "shadow", "input"] in [c[:5] for c in cells]
    assert ["1", "2", "1", "1", "10", "10"] in [c[:6] for c in cells]  # alice's row (its key folded apart)
    total = json.loads(run(store, "report", "--by", "user", "--format", "json").output)["total"]
    assert (total["calls"], total["refused"], total["routed"], total["shadow_refused"]) == (1, 2, 1, 1)
    rows = list(csv.DictReader(io.StringIO(run(store, "report", "--format", "csv").output)))
    assert rows[-1]["routed"] == "1" and rows[-1]["shadow_refused"] == "1"
    status = {r["scope"]: r for r in json.loads(run(store, "status", "--json").output)}
    assert (status["feature:chat"]["shadow"], status["user:alice"]["shadow"]) == (True, False)
    assert "shadow" in run(store, "status").output  # (the period column: "hour shadow", maybe folded)

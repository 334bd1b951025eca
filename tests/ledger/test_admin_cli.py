"""The administration commands (``reset``, ``credit``, ``refund``, ``charge``, ``limits raise``, ``plan``) on
every store a command line reaches (the memory store lives in one process: it has no command line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import budgetguard as bg
from budgetguard._cli import cli
from budgetguard._cli_base import EXIT_BAD_INPUT

STORE_KINDS = ["sqlite", "redis", "cluster"]

BUDGETS = """
[[budgets]]
scope = "user"
usd = "5"
per = "day"

[[budgets]]
scope = "user"
requests = 100
per = "minute"

[[plans.pro]]
scope = "user"
usd = "50"
per = "day"

[[plans.team]]
scope = "user"
usd = "20"
per = "day"

[[plans.team]]
scope = "user"
requests = 1000
per = "minute"
"""


@pytest.fixture
def budgets(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text(BUDGETS)
    return path


def run(store_url: str, budgets: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", store_url, "--budgets", str(budgets), *args])


def spent(store_url: str, budgets: Path) -> int:
    with bg.open_ledger(store_url) as ledger:
        guard = bg.Guard(ledger, budgets=bg.load_budgets(budgets))
        [usd] = [c for c in guard.counters_for([bg.Scope("user", "ali\nce")]) if c.unit is bg.Unit.USD]
        return ledger.status([usd])[0].spent


def test_charge_credit_refund_and_reset_print_what_changed(store_url: str, budgets: Path) -> None:
    who = ["--per", "day", "--reason", "ticket 7", "--actor", "ops"]
    done = run(store_url, budgets, "charge", "user:ali\nce", "3", *who)
    assert done.exit_code == 0, done.output
    assert (
        done.output == "user:ali\\nce: charged $3; usd spent per day: $0 -> $3\n"
    )  # the id printed literally
    done = run(store_url, budgets, "credit", "user:ali\nce", "1.25", *who)
    assert done.output == "user:ali\\nce: credited $1.25; usd spent per day: $3 -> $1.75\n"
    done = run(store_url, budgets, "refund", "user:ali\nce", "10", "--id", "r-1", *who)
    assert done.output.splitlines() == [
        "user:ali\\nce: refunded $1.75; usd spent per day: $1.75 -> $0",
        "(asked $10: spent stops at $0)",
    ]
    again = run(store_url, budgets, "refund", "user:ali\nce", "10", "--id", "r-1", *who)
    assert "already refunded by id r-1; nothing changed" in again.output
    run(store_url, budgets, "charge", "user:ali\nce", "2", *who)
    done = run(store_url, budgets, "reset", "user:ali\nce", *who)
    assert done.output == "user:ali\\nce: usd spent per day reset to $0 (was $2)\n"
    assert spent(store_url, budgets) == 0
    with bg.open_ledger(store_url) as ledger:
        entries = ledger.history(scope=bg.Scope("user", "ali\nce"))
    assert [e.event for e in entries] == ["adjusted", "adjusted", "adjusted", "adjusted", "reset"]
    assert {(e.data["actor"], e.data["reason"]) for e in entries} == {("ops", "ticket 7")}


def test_admin_commands_need_a_reason_and_say_what_is_wrong(store_url: str, budgets: Path) -> None:
    missing = run(store_url, budgets, "credit", "user:alice", "1", "--per", "day")
    assert missing.exit_code == EXIT_BAD_INPUT and "--reason" in missing.output
    negative = run(store_url, budgets, "credit", "user:alice", "-1", "--per", "day", "--reason", "x")
    assert negative.exit_code == EXIT_BAD_INPUT and "is negative" in negative.output
    several = run(store_url, budgets, "reset", "user:alice", "--reason", "x")
    assert several.exit_code == EXIT_BAD_INPUT and "several budgets" in " ".join(several.output.split())
    default_actor = run(store_url, budgets, "charge", "user:alice", "1", "--per", "day", "--reason", "x")
    assert default_actor.exit_code == 0
    with bg.open_ledger(store_url) as ledger:
        (entry,) = ledger.history()
    assert entry.data["actor"]  # the OS user


def test_limits_raise_for_a_while(store_url: str, budgets: Path) -> None:
    done = run(store_url, budgets, "limits", "raise", "user:bob", "10", "--per", "day", "--for", "2h",
               "--reason", "launch")  # fmt: skip
    assert done.exit_code == 0, done.output
    first, second = done.output.splitlines()
    assert first == "user:bob: usd limit per day raised by $10 to $15"
    assert second.startswith("until ") and second.endswith(" UTC, then the limit in code again")
    shown = run(store_url, budgets, "limits", "get", "user:bob", "--per", "day")
    assert shown.output.strip() == "user:bob: usd limit per day: $15"
    bad = run(store_url, budgets, "limits", "raise", "user:bob", "1", "--per", "day", "--reason", "x")
    assert bad.exit_code == EXIT_BAD_INPUT and "--for 2h" in bad.output
    old = ["--until", "2020-01-01", "--reason", "x"]
    past = run(store_url, budgets, "limits", "raise", "user:bob", "1", "--per", "day", *old)
    assert past.exit_code == EXIT_BAD_INPUT and "not in the future" in past.output
    span = run(store_url, budgets, "limits", "raise", "user:bob", "1", "--per", "day", "--until", "2h",
               "--reason", "x")  # fmt: skip
    assert span.exit_code == EXIT_BAD_INPUT and "use --for 2h" in span.output
    far = ["--until", "2206-01-01", "--reason", "typo for 2026"]
    typo = run(store_url, budgets, "limits", "raise", "user:bob", "1", "--per", "day", *far)
    assert typo.exit_code == EXIT_BAD_INPUT and "more than a year away" in typo.output
    assert run(store_url, budgets, "limits", "get", "user:bob", "--per", "day").output.strip().endswith("$15")


def test_plan_set_show_and_clear(store_url: str, budgets: Path) -> None:
    done = run(store_url, budgets, "plan", "set", "user:carol", "team", "--reason", "upgrade")
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "user:carol: now on plan team",
        "  usd limit per day: $20",
        "  requests limit per minute: 1000 requests",
    ]
    assert (
        run(store_url, budgets, "plan", "show", "user:carol").output.splitlines()[0]
        == "user:carol: plan team"
    )
    run(store_url, budgets, "plan", "set", "user:carol", "pro", "--reason", "upgrade")
    assert run(store_url, budgets, "plan", "show", "user:carol").output.splitlines() == [
        "user:carol: plan pro",
        "  usd limit per day: $50",
        "  requests limit per minute: the limit in code",
    ]
    unknown = run(store_url, budgets, "plan", "set", "user:carol", "gold", "--reason", "x")
    assert (
        unknown.exit_code == EXIT_BAD_INPUT
        and "unknown plan 'gold'; the plans are: pro, team" in unknown.output
    )
    cleared = run(store_url, budgets, "plan", "clear", "user:carol", "--reason", "downgrade")
    assert cleared.output.splitlines()[0] == "user:carol: on no plan (the budgets in the file apply)"
    shown = run(store_url, budgets, "plan", "show", "user:carol").output
    assert shown.splitlines()[0].startswith("user:carol: on no plan of ")


def test_plans_change_only_budgets_that_exist(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(BUDGETS + '\n[[plans.big]]\nscope = "user"\ntokens = 5\nper = "day"\n')
    with pytest.raises(
        bg.ConfigurationError, match="no \\[\\[budgets\\]\\] entry on 'user' in tokens per day"
    ):
        bg.load_plans(path)
    path.write_text(BUDGETS + '\n[[plans.vip]]\nscope = "user:alice"\nusd = 5\nper = "day"\n')
    with pytest.raises(bg.ConfigurationError, match="names a scope kind"):
        bg.load_plans(path)
    path.write_text(BUDGETS + '\n[[plans.odd]]\nscope = "user"\nusd = 5\n per = "day"\ncolor = 1\n')
    with pytest.raises(bg.ConfigurationError, match="plan 'odd': budget 1 has unknown keys"):
        bg.load_plans(path)
    assert len(bg.load_budgets(path)) == 2  # the budgets alone read as before

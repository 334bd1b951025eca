"""Every ```python block in README.md runs, each in a fresh namespace, and the TOML example loads."""

from __future__ import annotations

import re
import shlex
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import budgetguard
from budgetguard._cli import cli
from tests.conftest import Demo

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    """Fenced blocks of ``language``, dedented (blocks inside list items are indented)."""
    fence = re.compile(
        r"^(?P<indent>[ \t]*)```" + language + r"[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
    )
    blocks = []
    for match in fence.finditer(README.read_text(encoding="utf-8")):
        indent = match["indent"]
        lines = match["body"].splitlines()
        blocks.append("\n".join(line.removeprefix(indent) for line in lines) + "\n")
    return blocks


PYTHON_BLOCKS = _blocks("python")


def test_the_readme_has_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 2
    assert any("budgetguard.estimate" in block for block in PYTHON_BLOCKS)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(index: int, global_prices: budgetguard.PriceBook) -> None:
    code = compile(PYTHON_BLOCKS[index], f"README.md python block {index + 1}", "exec")
    exec(code, {"__name__": f"readme_block_{index + 1}"})


def test_readme_budgets_file_loads(tmp_path: Path) -> None:
    [toml] = [block for block in _blocks("toml") if "[[budgets]]" in block]
    path = tmp_path / "budgets.toml"
    path.write_text(toml)
    user, everyone = budgetguard.load_budgets(path)
    assert (user.target, user.limit, user.period, user.tz) == ("user", 5_000_000_000, "day", "Europe/Paris")
    assert (everyone.target, everyone.limit, everyone.period) == ("global", 1000_000_000_000, "month")


def test_readme_cli_examples_run_on_the_demo_ledger(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [block] = [block for block in _blocks("sh") if "budgetguard status" in block]
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompt.txt").write_text("Summarise our refund policy in two sentences.")
    runner = CliRunner(env=demo.env)
    for command in commands:
        assert command[0] == "budgetguard"
        args = command[1:] + (["--count", "1", "--interval", "0.1"] if command[1] == "watch" else [])
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, f"{shlex.join(command)}: {result.output}"
    assert (tmp_path / "spend.csv").read_text().startswith("key,calls,refused")


def test_readme_prices_example_loads(tmp_path: Path) -> None:
    [toml] = [block for block in _blocks("toml") if "[models." in block]
    path = tmp_path / "prices.toml"
    path.write_text(toml)
    book = budgetguard.PriceBook(use_data=False)
    [price] = book.load(path)
    assert price.model == "acme-llm-large"
    assert (price.base.input, price.base.output) == (Decimal("1.50"), Decimal("6.00"))


def test_readme_money_claim() -> None:
    assert budgetguard.to_nano("0.25") == 250_000_000


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    commands = [block.strip() for block in _blocks("sh") if block.startswith("python3 -m venv")]
    test_command = next(c for c in commands if "pytest" in c)
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci


def test_ci_oldest_job_installs_the_floors_pyproject_admits() -> None:
    """``.ci/oldest.txt`` pins each package to the floor ``pyproject.toml`` gives it, so the second CI
    job tests the oldest releases a user may install (raise both together)."""
    project = tomllib.loads((README.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    floors = {name.split("[")[0]: floor for name, floor in (r.split(">=") for r in requirements if ">=" in r)}
    lines = (README.parent / ".ci" / "oldest.txt").read_text(encoding="utf-8").splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))

    def release(version: str) -> tuple[int, ...]:
        parts = tuple(int(p) for p in version.split("."))
        return parts + (0,) * (3 - len(parts))

    assert set(pins) == {"openai", "anthropic", "redis", "hiredis", "tenacity", "psycopg", "psycopg-pool"}
    assert {name: release(pin) for name, pin in pins.items()} == {
        name: release(floors[name]) for name in pins
    }
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "-c .ci/oldest.txt" in ci

"""Every ```python block in README.md runs, each in a fresh namespace, and the TOML example loads."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

import budgetguard

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


def test_readme_toml_example_loads(tmp_path: Path) -> None:
    [toml] = _blocks("toml")
    path = tmp_path / "prices.toml"
    path.write_text(toml)
    book = budgetguard.PriceBook(use_data=False)
    [price] = book.load(path)
    assert price.model == "acme-llm-large"
    assert (price.base.input, price.base.output) == (Decimal("1.50"), Decimal("6.00"))


def test_readme_money_claim() -> None:
    assert budgetguard.to_nano("0.25") == 250_000_000


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    commands = [block.strip() for block in _blocks("sh")]
    test_command = next(c for c in commands if "pytest" in c)
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci

"""Budgets from a file, shared by a service's ``Guard`` and the ``budgetguard`` CLI.

```toml
[[budgets]]
scope = "user"          # every user (a kind), or an exact scope like "user:alice"
usd = "5.00"            # or tokens = 200_000, or requests = 1000
per = "day"             # minute, hour, day, week, month, total
tz = "Europe/Paris"     # optional, default UTC
```

Plans (``[[plans.<name>]]``, the same tables) are ``_plans``' (``load_plans``); ``load_budgets`` reads
the ``budgets`` list only.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._budgets import Budget
from ._errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["budget_list", "load_budgets", "read_data_file"]

_BUDGET_KEYS = {"scope", "usd", "tokens", "requests", "per", "tz", "mode", "rolling"}


def read_data_file(path: str | Path, what: str) -> Any:
    """A TOML (by suffix) or JSON file, with every non-integer number read as an exact ``Decimal``."""
    from pathlib import Path  # (at the first file read, not at import)

    path = Path(path)
    try:
        if path.suffix == ".toml":
            import tomllib  # (here: a TOML file is rare, and tomllib not free to import)

            with path.open("rb") as f:
                return tomllib.load(f, parse_float=Decimal)
        return json.loads(path.read_text(), parse_float=Decimal)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {what} from {path}: {exc}") from exc


def load_budgets(path: str | Path) -> list[Budget]:
    """The budgets of a TOML or JSON file (a ``budgets`` list of tables); all valid or an error."""
    data = read_data_file(path, "budgets")
    entries = data.get("budgets") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{path}: expected a list of budgets, e.g. [[budgets]] scope = 'user' ...")
    return budget_list(entries, str(path))


def budget_list(entries: list[Any], where: str) -> list[Budget]:
    """A list of budget tables (``[[budgets]]``, ``[[plans.<name>]]``) as ``Budget``s; all valid or an
    error that starts with ``where``."""
    budgets = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("scope"), str):
            raise ConfigurationError(f"{where}: budget {number} needs a scope, e.g. scope = 'user'")
        unknown = set(entry) - _BUDGET_KEYS
        if unknown:
            raise ConfigurationError(
                f"{where}: budget {number} has unknown keys {sorted(unknown)}; use {sorted(_BUDGET_KEYS)}"
            )
        options = {k: v for k, v in entry.items() if k != "scope"}
        try:
            budgets.append(Budget(entry["scope"], **options))
        except (TypeError, ValueError) as exc:  # ConfigurationError is a ValueError too
            raise ConfigurationError(f"{where}: budget {number} ({entry['scope']}): {exc}") from exc
    return budgets

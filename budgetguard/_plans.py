"""Plan templates: named sets of budgets a scope moves between at run time (``plan = "pro"``).

```toml
[[budgets]]              # what every user has
scope = "user"
usd = "5.00"
per = "day"

[[plans.pro]]            # a user on plan "pro" has this instead
scope = "user"
usd = "50.00"
per = "day"
```

A plan changes the limits of budgets that exist: each of its budgets names a scope kind and the unit,
period and time zone of a kind budget of the file. Putting a scope on a plan stores, in one journaled
ledger operation (``Ledger.set_limits``), the plan's limits as that scope's run-time limits, and clears
those of the counters other plans name (they go back to the limits in code). So the guard applies a
plan with no new rule and no extra round trip: admission reads run-time limits as it always did. The
ledger keeps no plan name beside the limits: ``current`` tells which plans the stored limits match
(the journal's ``limits_set`` entry says which plan was set, by whom and why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._budgets import Budget, Scope
from ._config import budget_list, load_budgets, read_data_file
from ._errors import ConfigurationError
from ._ledger import CounterSpec, Ledger

__all__ = ["Plans", "load_plans"]


@dataclass(frozen=True, slots=True)
class Plans:
    """A budgets file's budgets and its plans (``load_plans``)."""

    budgets: tuple[Budget, ...]
    plans: Mapping[str, tuple[Budget, ...]]

    def __post_init__(self) -> None:
        kinds = {(b.target, b.unit, b.period, b.tz) for b in self.budgets}
        for name, budgets in self.plans.items():
            for budget in budgets:
                if ":" in budget.target or budget.target == "global":
                    raise ConfigurationError(
                        f"plan {name!r}: a plan's budget names a scope kind (e.g. scope = 'user'), not "
                        f"{budget.target!r}"
                    )
                if (budget.target, budget.unit, budget.period, budget.tz) not in kinds:
                    raise ConfigurationError(
                        f"plan {name!r}: no [[budgets]] entry on {budget.target!r} in {budget.unit.value} "
                        f"per {budget.period.value} ({budget.tz}); a plan changes the limit of a budget "
                        "that exists: add that budget first"
                    )

    def limits_for(self, scope: Scope | str, plan: str | None) -> dict[CounterSpec, int | None]:
        """The run-time limits that put ``scope`` on ``plan`` (``None``: on no plan, the budgets in code):
        its budgets' limits, and ``None`` (cleared) for the counters only other plans name."""
        target = Scope.parse(scope)
        if plan is not None and plan not in self.plans:
            known = ", ".join(sorted(self.plans)) or "none"
            raise ConfigurationError(f"unknown plan {plan!r}; the plans are: {known}")
        out: dict[CounterSpec, int | None] = {}
        for name, budgets in self.plans.items():
            for budget in budgets:
                if budget.target != target.kind:
                    continue
                spec = CounterSpec(target, budget.unit, budget.period, 0, budget.tz)
                if name == plan:
                    out[spec] = budget.limit
                else:
                    out.setdefault(spec, None)
        if plan is not None and not any(v is not None for v in out.values()):
            raise ConfigurationError(f"plan {plan!r} has no budget on {target.kind} scopes like {target}")
        if not out:
            raise ConfigurationError(f"no plan has a budget on {target.kind} scopes like {target}")
        return out

    def assign(
        self, ledger: Ledger, scope: Scope | str, plan: str | None, *, actor: str, reason: str
    ) -> None:
        """Put ``scope`` on ``plan`` (``None``: on none), in one journaled ledger operation."""
        ledger.set_limits(self.limits_for(scope, plan), actor=actor, reason=reason, plan=plan or "(none)")

    def current(self, ledger: Ledger, scope: Scope | str) -> list[str]:
        """The plans whose limits ``scope``'s run-time limits match (``[]``: none; several only when
        plans share their limits)."""
        target = Scope.parse(scope)
        return [name for name in self.plans if self._matches(ledger, target, name)]

    def _matches(self, ledger: Ledger, scope: Scope, plan: str) -> bool:
        try:
            wanted = self.limits_for(scope, plan)
        except ConfigurationError:
            return False
        return all(ledger.get_limit(spec) == value for spec, value in wanted.items())


def load_plans(path: str | Path) -> Plans:
    """The budgets and plans (``[[plans.<name>]]`` tables) of a TOML or JSON budgets file."""
    data = read_data_file(path, "budgets")
    raw: Any = data.get("plans", {}) if isinstance(data, dict) else {}
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{path}: plans must be tables, e.g. [[plans.pro]] scope = 'user' ...")
    plans = {}
    for name, entries in raw.items():
        if not isinstance(entries, list) or not entries:
            raise ConfigurationError(
                f"{path}: plan {name!r} needs budgets, e.g. [[plans.{name}]] scope = 'user'"
            )
        plans[name] = tuple(budget_list(entries, f"{path}: plan {name!r}"))
    return Plans(tuple(load_budgets(path)), plans)

"""Small builders for ledger tests."""

from __future__ import annotations

from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold


def counter(
    scope: str = "user:alice",
    limit: int = 1_000,
    unit: Unit = Unit.USD,
    period: Period = Period.DAY,
    tz: str = "UTC",
) -> CounterSpec:
    return CounterSpec(Scope.parse(scope), unit, period, limit, tz)


def hold(spec: CounterSpec, amount: int) -> Hold:
    return Hold(spec, amount)

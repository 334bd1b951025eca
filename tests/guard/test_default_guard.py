"""Module-level ``budgetguard.with_budget`` / ``metered`` on the default guard, set up by ``configure()``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, Guard
from budgetguard import _default as guard_module
from tests.guard.payloads import GPT4O_USAGE, chat_completion, chat_request, nano, openai_client, serve

COST = nano("gpt-4o", GPT4O_USAGE)
BUDGETS = [Budget("user", usd="0.006", per="day")]


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No default guard yet; whatever the test configures is closed and forgotten afterwards."""
    monkeypatch.setattr(guard_module, "_default", None)
    yield
    made: Guard | None = guard_module._default
    if made is not None:
        made.close()


@pytest.mark.usefixtures("fresh_default")
def test_configure_then_decorate(store_url: str) -> None:
    guard = budgetguard.configure(ledger=store_url, budgets=BUDGETS)
    assert budgetguard.default_guard() is guard
    api = serve(chat_completion())
    client = openai_client(api)

    @budgetguard.with_budget(user="{user_id}")
    def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    ask("alice", **chat_request())
    with pytest.raises(BudgetExceededError):
        ask("alice", **chat_request())

    assert len(api.requests) == 1
    (status,) = guard.ledger.status(guard.counters_for([budgetguard.Scope("user", "alice")]))
    assert (status.spent, status.held) == (COST, 0)


@pytest.mark.usefixtures("fresh_default")
def test_functions_decorated_before_configure_use_the_configured_guard(store_url: str) -> None:
    """The usual layout: decorators run at import time, ``configure()`` runs later, in ``main()``."""
    api = serve(chat_completion())
    client = openai_client(api)

    @budgetguard.with_budget(user="{user_id}")
    def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    metered = budgetguard.metered(client.chat.completions.create, user="bob")

    guard = budgetguard.configure(ledger=store_url, budgets=BUDGETS)
    ask("alice", **chat_request())
    metered(**chat_request())

    status = guard.ledger.status(guard.counters_for([budgetguard.Scope("user", u) for u in ("alice", "bob")]))
    assert [(s.spent, s.held) for s in status] == [(COST, 0), (COST, 0)]
    with pytest.raises(BudgetExceededError):
        ask("alice", **chat_request())

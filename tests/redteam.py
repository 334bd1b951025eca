"""What the red-team tests of the hard limit share (``tests/test_redteam_*.py``): the strict xfail that
marks a hole on main, a guard on a memory store with the events it emitted, and the recorded calls of
``../shared/realworld`` read in place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

import budgetguard
from budgetguard import Event, Guard, JournalEntry
from budgetguard.testing import MockProvider
from tests.realworld.conftest import ABSENT, realworld_dir


def hole(reason: str) -> pytest.MarkDecorator:
    """A hole on main: a strict xfail whose reason says what breaks and the fix. When the fix lands the
    test passes, the xfail fails, and the mark goes."""
    return pytest.mark.xfail(strict=True, reason=f"hole: {reason}")


@dataclass
class Guarded:
    """A guard on a memory store (a $5 daily budget per feature) and the events it emitted."""

    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        budgets = [budgetguard.Budget("feature", usd="5", per="day")]
        self.guard = Guard("memory://", budgets=budgets, on_event=self.events.append)

    def settled(self) -> Event:
        """The one ``committed`` event: ``estimated`` is what was reserved, ``actual`` what was charged."""
        (committed,) = [e for e in self.events if e.kind == "committed"]
        assert committed.actual is not None and committed.estimated is not None
        return committed

    def entry(self) -> JournalEntry:
        (entry,) = self.guard.ledger.history(events=["committed"])
        return entry

    def assert_reserved_its_bill(self) -> None:
        """What was reserved covers what was charged, with no overrun."""
        committed = self.settled()
        assert committed.estimated is not None and committed.actual is not None
        assert committed.estimated >= committed.actual, (committed.estimated, committed.actual)
        assert "overrun" not in [e.kind for e in self.events]


@contextmanager
def sdk_client(
    mock: MockProvider, sdk: str = "openai", *, wrap: bool = False
) -> Iterator[tuple[Guarded, Any]]:
    """A ``Guarded`` and an SDK client on the mock (``wrap``: through ``guard.wrap``), closed after."""
    guarded = Guarded()
    client: Any = getattr(mock, sdk)()
    if wrap:
        client = guarded.guard.wrap(client, feature="redteam")
    try:
        yield guarded, client
    finally:
        client.close()


def recorded(name: str) -> dict[str, Any]:
    """The recorded call ``name`` of ``../shared/realworld/fixtures/responses`` (the test skips, saying
    where it looked, when the folder is absent)."""
    path = realworld_dir() / "responses" / name
    if not path.is_file():
        pytest.skip(ABSENT.format(realworld_dir()))
    found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return found

"""Fixtures for the guard suite: every test that takes ``store_url`` runs on memory, SQLite and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import tenacity

import budgetguard
from budgetguard import AsyncLedger, Budget, CounterStatus, Event, Guard, Hold, JournalEntry, Scope, Unit
from tests.ledger.conftest import redis_url, store_url  # noqa: F401

GUARD_STORES = ["memory", "sqlite", "redis", "postgres"]

DEFAULT_BUDGETS = (
    Budget("user", usd="1", per="day"),
    Budget("feature", usd="5", per="day"),
    Budget("global", usd="100", per="day"),
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", GUARD_STORES, indirect=True)


@dataclass
class Harness:
    """A guard on the test's store, the events it emitted, and read-outs of its ledger."""

    guard: Guard
    events: list[Event] = field(default_factory=list)

    @property
    def ledger(self) -> budgetguard.Ledger:
        return self.guard.ledger

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def status(self, scope: str, unit: Unit = Unit.USD) -> CounterStatus:
        counters = [c for c in self.guard.counters_for([Scope.parse(scope)]) if c.unit is unit]
        assert counters, f"no {unit.value} budget applies to {scope}"
        (status,) = self.ledger.status(counters[:1])
        return status

    def spent(self, scope: str, unit: Unit = Unit.USD) -> int:
        return self.status(scope, unit).spent

    def held(self, scope: str, unit: Unit = Unit.USD) -> int:
        return self.status(scope, unit).held

    def assert_settled(self, expected: dict[str, int], unit: Unit = Unit.USD) -> None:
        """Each scope's counter shows exactly ``expected`` spent, and nothing is still held."""
        seen = {scope: (self.spent(scope, unit), self.held(scope, unit)) for scope in expected}
        assert seen == {scope: (amount, 0) for scope, amount in expected.items()}

    def history(self, **filters: Any) -> list[JournalEntry]:
        return self.ledger.history(**filters)

    def committed(self, scope: str | None = None) -> list[JournalEntry]:
        return self.ledger.history(scope=scope, events=["committed"])

    def charge(self, scope: str, amount: int) -> None:
        """Spend ``amount`` nano-USD on ``scope``'s USD counter directly in the ledger (a prior spend)."""
        counters = [c for c in self.guard.counters_for([Scope.parse(scope)]) if c.unit is Unit.USD]
        reservation = self.ledger.reserve([Hold(c, 0) for c in counters])
        self.ledger.commit(reservation, {"usd": amount})

    def set_limit(self, scope: str, limit: int, unit: Unit = Unit.USD) -> None:
        counters = [c for c in self.guard.counters_for([Scope.parse(scope)]) if c.unit is unit]
        self.ledger.set_limit(counters[0], limit)


MakeGuard = Callable[..., Harness]


def fast_retry(guard: Guard) -> tenacity.Retrying:
    """The guard's default policy (3 attempts, retryable errors only) with the backoff waits removed."""
    return guard.retry.copy(wait=tenacity.wait_none())


@pytest.fixture
def make_guard(store_url: str) -> Iterator[MakeGuard]:  # noqa: F811
    """``make_guard(budgets=..., **Guard kwargs)``: a guard on this test's store, closed afterwards.

    The retry policy is the default one without its backoff waits, unless ``retry=`` is given. Calls that
    name no id for a budgeted kind skip its budgets (``missing_scope="skip"``) unless ``missing_scope=``
    is given: the tests name only the scopes they look at (test_missing_scopes.py tests the refusal).
    """
    made: list[Guard] = []

    def make(
        budgets: Iterable[Budget] = DEFAULT_BUDGETS,
        url: str | None = None,
        open_store: bool = True,
        **kwargs: Any,
    ) -> Harness:
        events: list[Event] = []
        hooks = kwargs.pop("on_event", None)

        def record(event: Event) -> None:  # "reserved" precedes every call: tests look at the rest
            if event.kind != "reserved":
                events.append(event)

        on_event: list[Callable[[Event], None]] = [
            record,
            *([hooks] if callable(hooks) else hooks or []),
        ]
        kwargs.setdefault("missing_scope", "skip")
        guard = Guard(url or store_url, budgets=budgets, on_event=on_event, **kwargs)
        if "retry" not in kwargs:
            guard.retry = fast_retry(guard)
        made.append(guard)
        if open_store:  # open it now: tests about the lazy first open pass open_store=False
            guard.ledger  # noqa: B018
        return Harness(guard, events)

    yield make
    for guard in made:
        guard.close()


@pytest.fixture
async def amake_guard(make_guard: MakeGuard) -> AsyncIterator[MakeGuard]:
    """``make_guard`` for async tests: also closes the async ledger (Redis) inside the test's loop."""
    made: list[Guard] = []

    def make(*args: Any, **kwargs: Any) -> Harness:
        harness = make_guard(*args, **kwargs)
        made.append(harness.guard)
        return harness

    yield make
    for guard in made:
        store = guard.async_ledger
        if isinstance(store, AsyncLedger):
            await store.aclose()


@pytest.fixture(autouse=True)
def _no_default_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let a test fall back to the user's real ledger file."""
    monkeypatch.setenv("BUDGETGUARD_URL", "memory://")


@pytest.fixture(params=["trackers", "whole context"])
def thread_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """What a plain ``threading.Thread`` takes from its starter: the trackers only (the default), or the
    whole context (``follow_threads()``). The process's mode is restored after the test."""
    monkeypatch.setattr("budgetguard._context._whole_context", False)
    with budgetguard.track():  # the first track() patches Thread.start: the test sees it patched
        pass
    if request.param == "whole context":
        budgetguard.follow_threads()
    return str(request.param)

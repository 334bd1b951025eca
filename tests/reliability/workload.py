"""The bank-style workload the fault tests share, and the audit that checks a store against it.

A worker reserves on 2-3 of four overlapping counters with tight limits, then commits (never above its
hold) or releases; every call is repeated with the SAME id until the store acknowledges it (the way a
careful caller survives a ``LedgerError``: the ledger is idempotent by id). The worker writes down what
was acknowledged; ``audit`` compares the store with the sum of those acknowledgements.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from budgetguard import BudgetExceededError, LedgerError
from budgetguard._budgets import Period, Unit
from budgetguard._ledger import AsyncLedger, CounterSpec, Hold, Ledger, ReservationError
from tests.ledger.helpers import counter

T = TypeVar("T")

SPECS: tuple[CounterSpec, ...] = (
    counter("user:a", limit=60, period=Period.TOTAL),
    counter("user:b", limit=60, period=Period.TOTAL),
    counter("team:t", limit=90, period=Period.TOTAL),
    counter("global", limit=120, period=Period.TOTAL),
)
"""Tight: a few dozen open holds exhaust them, so refusals happen all the time."""


def tight(base: int) -> tuple[CounterSpec, ...]:
    """SPECS with limits ``base``, ``base``, ``1.5 base``, ``2 base``: pick ``base`` so that they bind
    partway through a run (then both admissions and refusals keep happening)."""
    return tuple(
        counter(str(s.scope), limit=base * k // 2, period=Period.TOTAL)
        for s, k in zip(SPECS, (2, 2, 3, 4), strict=True)
    )


ROOMY: tuple[CounterSpec, ...] = tuple(
    counter(str(s.scope), limit=10**12, period=Period.TOTAL) for s in SPECS
)
"""The same counters with room to spare: the calls keep committing for as long as the test runs."""

RESOLVED = ("committed", "released", "refused")


@dataclass
class Tally:
    """What one worker saw acknowledged."""

    charged: list[int] = field(default_factory=lambda: [0] * len(SPECS))
    states: dict[str, str] = field(default_factory=dict)
    """Reservation id -> committed / released / refused / abandoned."""
    calls: int = 0
    """Acknowledged ledger calls (reserve, commit, release, refusals included)."""
    errors: int = 0
    """LedgerErrors the caller saw and answered by repeating the call with the same id."""
    duplicates: int = 0
    """Calls whose answer said "you did this already" (a retry found its lost first write)."""
    causes: Counter[str] = field(default_factory=Counter)
    """The backend exceptions behind those LedgerErrors, by type name."""
    forgotten: int = 0
    """Commits/releases the store answered with "unknown reservation" (it lost an acknowledged reserve)."""

    def merge(self, other: Tally) -> None:
        self.charged = [a + b for a, b in zip(self.charged, other.charged, strict=True)]
        self.states.update(other.states)
        self.calls += other.calls
        self.errors += other.errors
        self.duplicates += other.duplicates
        self.causes += other.causes
        self.forgotten += other.forgotten


def persist(tally: Tally, deadline: float, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Repeat ``call(*args, **kwargs)`` until the store answers (a refusal is an answer)."""
    while True:
        try:
            result = call(*args, **kwargs)
        except LedgerError as exc:
            tally.errors += 1
            tally.causes[type(exc.__cause__).__name__] += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        tally.calls += 1
        return result


def work(
    ledger: Ledger,
    tally: Tally,
    *,
    prefix: str,
    ops: int,
    seed: int,
    deadline: float,
    abandon: float = 0.0,
    lease: float = 120.0,
    stop: threading.Event | None = None,
    tolerate_loss: bool = False,
    specs: Sequence[CounterSpec] = SPECS,
) -> Tally:
    """``ops`` reservations (or until ``stop``). ``abandon``: the share left open with a 0.3 s lease
    (a worker that died). ``tolerate_loss``: count, rather than raise, a store that forgot a reservation
    it had acknowledged (to measure what a weaker durability setting loses)."""
    rng = random.Random(seed)
    for k in range(ops):
        if stop is not None and stop.is_set():
            break
        res_id = f"{prefix}-{k}"
        chosen = rng.sample(range(len(specs)), rng.randint(2, 3))
        amounts = [rng.randint(1, 5) for _ in chosen]
        holds = [Hold(specs[c], a) for c, a in zip(chosen, amounts, strict=True)]
        dies = rng.random() < abandon
        try:
            res = persist(tally, deadline, ledger.reserve, holds, id=res_id, lease=0.3 if dies else lease)
        except BudgetExceededError:
            tally.calls += 1
            tally.states[res_id] = "refused"
            continue
        tally.duplicates += res.duplicate
        if dies:
            tally.states[res_id] = "abandoned"
            continue
        amount = None if rng.random() < 0.3 else rng.randint(0, min(amounts))
        try:
            if amount is None:
                out = persist(tally, deadline, ledger.release, res_id)
            else:
                out = persist(tally, deadline, ledger.commit, res_id, {"usd": amount})
        except ReservationError:
            if not tolerate_loss:
                raise
            tally.forgotten += 1
            tally.states[res_id] = "forgotten"
            continue
        for c in chosen:
            tally.charged[c] += out.charged.get(Unit.USD, 0)
        tally.duplicates += out.duplicate
        tally.states[res_id] = out.state
    return tally


async def apersist(
    tally: Tally, deadline: float, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
) -> T:
    """``persist`` for an ``AsyncLedger``."""
    while True:
        try:
            result = await call(*args, **kwargs)
        except LedgerError as exc:
            tally.errors += 1
            tally.causes[type(exc.__cause__).__name__] += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        tally.calls += 1
        return result


async def awork(
    ledger: AsyncLedger,
    tally: Tally,
    *,
    prefix: str,
    ops: int,
    seed: int,
    deadline: float,
    specs: Sequence[CounterSpec] = SPECS,
) -> Tally:
    """``work`` on an ``AsyncLedger`` (the same choices for the same seed), without abandoned holds."""
    rng = random.Random(seed)
    for k in range(ops):
        res_id = f"{prefix}-{k}"
        chosen = rng.sample(range(len(specs)), rng.randint(2, 3))
        amounts = [rng.randint(1, 5) for _ in chosen]
        holds = [Hold(specs[c], a) for c, a in zip(chosen, amounts, strict=True)]
        rng.random()  # work's draw for `abandon`
        try:
            res = await apersist(tally, deadline, ledger.reserve, holds, id=res_id)
        except BudgetExceededError:
            tally.calls += 1
            tally.states[res_id] = "refused"
            continue
        tally.duplicates += res.duplicate
        amount = None if rng.random() < 0.3 else rng.randint(0, min(amounts))
        if amount is None:
            out = await apersist(tally, deadline, ledger.release, res_id)
        else:
            out = await apersist(tally, deadline, ledger.commit, res_id, {"usd": amount})
        for c in chosen:
            tally.charged[c] += out.charged.get(Unit.USD, 0)
        tally.duplicates += out.duplicate
        tally.states[res_id] = out.state
    return tally


@dataclass(frozen=True)
class Audit:
    spent: list[int]
    held: list[int]
    expected: list[int]
    events: Counter[str]
    per_id: dict[str, list[str]]

    @property
    def double_charges(self) -> int:
        """Ids resolved more than once in the journal, plus nano-USD charged above what was acknowledged."""
        twice = sum(1 for events in self.per_id.values() if len([e for e in events if e in RESOLVED]) > 1)
        return twice + sum(max(s - e, 0) for s, e in zip(self.spent, self.expected, strict=True))

    @property
    def lost(self) -> int:
        """nano-USD acknowledged as charged that the counters do not show."""
        return sum(max(e - s, 0) for s, e in zip(self.spent, self.expected, strict=True))

    @property
    def leaked(self) -> int:
        return sum(self.held)


def audit(ledger: Ledger, tally: Tally, specs: Sequence[CounterSpec] = SPECS) -> Audit:
    statuses = ledger.status(specs)
    per_id: dict[str, list[str]] = {}
    for entry in ledger.history():
        per_id.setdefault(entry.reservation_id, []).append(entry.event)
    return Audit(
        spent=[s.spent for s in statuses],
        held=[s.held for s in statuses],
        expected=list(tally.charged),
        events=Counter(e for events in per_id.values() for e in events),
        per_id=per_id,
    )


def assert_exact(result: Audit, tally: Tally) -> None:
    """The store matches the acknowledgements exactly: every id in exactly the state it was told."""
    assert result.spent == result.expected
    assert result.held == [0] * len(result.held)
    for res_id, state in tally.states.items():
        resolved = [e for e in result.per_id.get(res_id, []) if e in RESOLVED]
        if state == "abandoned":
            assert resolved == [], res_id
            assert "expired" in result.per_id.get(res_id, []), res_id
        else:
            assert resolved == [state], (res_id, result.per_id.get(res_id))
    assert set(result.per_id) <= set(tally.states)


def states(tallies: Iterable[Tally]) -> Counter[str]:
    return Counter(state for t in tallies for state in t.states.values())


def log_line(fd: int, *fields: Any) -> None:
    """Append one line to a file with a single write(2): it survives the writer's kill -9."""
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())

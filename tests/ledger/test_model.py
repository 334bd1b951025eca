"""Every store against a plain-Python model of the ledger contract (DESIGN: "The ledger contract").

A Hypothesis state machine reserves on random subsets of four small counters, commits below and
above the hold, releases, repeats every call with the same id, retries refused ids, changes limits
at run time and lets short leases expire, and administers (credits, charges and resets spent, raises
limits for a while, some long enough to outlast the test and some that end within a step); after every
step each counter's spent and held, every outcome flag and the journal must equal the model's.

Set ``BUDGETGUARD_LONG_TESTS=1`` to run thousands of examples instead of the CI handful.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import redis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from budgetguard import BudgetExceededError
from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, Ledger, Reservation, ReservationError, open_ledger
from budgetguard._money import to_usd
from tests import postgres_server
from tests.postgres_server import with_options
from tests.redis_server import delete_namespace

from .cluster_close import close_ledger

LONG = os.environ.get("BUDGETGUARD_LONG_TESTS", "") not in ("", "0")
SETTINGS = settings(
    max_examples=2000 if LONG else 25,
    stateful_step_count=60 if LONG else 30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SLOTS: list[tuple[str, Unit]] = [
    ("user:a", Unit.USD),
    ("team:t", Unit.USD),  # a second USD counter: one commit amount charges both
    ("user:a", Unit.TOKENS),  # same scope, another unit
    ("global", Unit.REQUESTS),
]
LEASE = 120.0
SHORT_LEASE = 0.05
"""Short leases live inside one rule: reserve, sleep past the lease, and the hold is gone."""


@dataclass
class ModelReservation:
    id: str
    holds: list[tuple[int, int]]  # (slot, amount), in the caller's order
    limits: list[int]  # the effective limit of each counter when admitted
    lease_ms: int
    obj: Reservation
    expired: bool = False
    outcome: tuple[str, dict[Unit, int], bool, bool] | None = None  # state, charged, overrun, expired


@dataclass
class ModelRefusal:
    id: str
    holds: list[tuple[int, int]]
    index: int
    limit: int
    spent: int
    held: int
    requested: int


def _label(slot: int) -> str:
    return str(Scope.parse(SLOTS[slot][0]))


def _unit(slot: int) -> Unit:
    return SLOTS[slot][1]


def _show(slot: int, amount: int) -> Any:
    """An amount as BudgetExceededError reports it (USD as Decimal)."""
    return to_usd(amount) if _unit(slot) is Unit.USD else amount


def _journal_key(event: str, res_id: str, scopes: Any, amounts: Any, data: Any) -> tuple[Any, ...]:
    return (
        event,
        "*" if event == "limit_raised" else res_id,  # (a raise's id is the store's)
        tuple(scopes),
        tuple(sorted(amounts.items())),
        bool(data.get("overrun")),
        bool(data.get("expired")),
    )


class LedgerModel(RuleBasedStateMachine):
    KIND: ClassVar[str] = "memory"
    BASE_URL: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.namespace = "m" + secrets.token_hex(6)
        self.tmpdir: str | None = None
        if self.KIND == "memory":
            url = "memory://"
        elif self.KIND == "sqlite":
            self.tmpdir = tempfile.mkdtemp(prefix="bg-model-")
            url = f"sqlite:///{self.tmpdir}/ledger.db"
        else:
            assert self.BASE_URL is not None
            url = with_options(self.BASE_URL, namespace=self.namespace)
        self.ledger: Ledger = open_ledger(url)
        self.specs: list[CounterSpec] = []
        self.spent = [0] * len(SLOTS)
        self.held = [0] * len(SLOTS)
        self.code_limit = [0] * len(SLOTS)
        self.override: list[int | None] = [None] * len(SLOTS)
        self.excused = [False] * len(SLOTS)
        """spent + held may legitimately pass the limit (an overrun, a commit after expiry, a lower limit)."""
        self.reservations: dict[str, ModelReservation] = {}
        self.refusals: dict[str, ModelRefusal] = {}
        self.journal: Counter[tuple[Any, ...]] = Counter()
        self.ids = 0
        self.raised: list[tuple[int | None] | None] = [None] * len(SLOTS)
        """A temporary raise in force on the counter: the run-time limit it raised (None: the code's)."""
        self.adjustments: dict[
            str, tuple[int, int, int, int]
        ] = {}  # id -> (slot, amount, change, spent after)

    def teardown(self) -> None:
        try:
            if self.KIND == "cluster":
                client = self.ledger.client  # type: ignore[attr-defined]
                match = f"bg:{{{self.namespace}}}:*"
                for key in client.scan_iter(match=match, target_nodes=redis.RedisCluster.ALL_NODES):
                    client.delete(key)
        finally:
            close_ledger(self.ledger)
            if self.KIND == "redis":
                assert self.BASE_URL is not None
                delete_namespace(self.BASE_URL, self.namespace)
            if self.KIND == "postgres":
                assert self.BASE_URL is not None
                postgres_server.delete_namespace(self.BASE_URL, self.namespace)
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- the model ---------------------------------------------------------------------------------

    def limit(self, slot: int) -> int:
        override = self.override[slot]
        return self.code_limit[slot] if override is None else override

    def fresh_id(self) -> str:
        self.ids += 1
        return f"r{self.ids}"

    def expected_reserve(self, res_id: str, holds: list[tuple[int, int]]) -> ModelRefusal | None:
        """Admit (None) or refuse, exactly as the contract says; updates the model."""
        for i, (slot, amount) in enumerate(holds):
            if self.spent[slot] + self.held[slot] + amount > self.limit(slot):
                refusal = ModelRefusal(
                    res_id, holds, i, self.limit(slot), self.spent[slot], self.held[slot], amount
                )
                self.refusals[res_id] = refusal
                event("refused")
                self.journal[
                    _journal_key("refused", res_id, [_label(slot)], {_unit(slot).value: amount}, {})
                ] += 1
                return refusal
        for slot, amount in holds:
            self.held[slot] += amount
        return None

    def scope_labels(self, holds: list[tuple[int, int]]) -> list[str]:
        return list(dict.fromkeys(_label(slot) for slot, _ in holds))

    def expected_resolve(
        self, m: ModelReservation, actual: dict[Unit, int] | None
    ) -> tuple[str, dict[Unit, int], bool, bool, bool]:
        """(state, charged, overrun, expired, duplicate) of a commit (``actual``) or release (None)."""
        if m.outcome is not None:
            event("repeated resolution")
            return (*m.outcome, True)
        overrun = False
        for slot, amount in m.holds:
            if not m.expired:
                self.held[slot] -= amount
            charge = 0 if actual is None else actual[_unit(slot)]
            self.spent[slot] += charge
            overrun = overrun or charge > amount
            if charge > amount or (m.expired and charge > 0):
                self.excused[slot] = True
        state = "released" if actual is None else "committed"
        event(f"{state}{' after expiry' if m.expired else ''}{' with overrun' if overrun else ''}")
        charged = {} if actual is None else dict(actual)
        m.outcome = (state, charged, overrun, m.expired)
        if actual is None:
            amounts = {_unit(slot).value: amount for slot, amount in m.holds}  # per unit, last one wins
        else:
            amounts = {u.value: v for u, v in actual.items()}
        flags = {"overrun": overrun, "expired": m.expired}
        self.journal[_journal_key(state, m.id, self.scope_labels(m.holds), amounts, flags)] += 1
        return (*m.outcome, False)

    # -- checks ------------------------------------------------------------------------------------

    def check_reservation(self, res: Reservation, m: ModelReservation, *, duplicate: bool) -> None:
        assert res.id == m.id
        assert res.duplicate is duplicate
        got = [(str(h.counter.scope), h.counter.unit, h.amount, h.limit) for h in res.held]
        want = [
            (_label(slot), _unit(slot), amount, limit)
            for (slot, amount), limit in zip(m.holds, m.limits, strict=True)
        ]
        assert got == want
        assert res.expires_at - res.created_at == m.lease_ms
        if duplicate:
            assert (res.created_at, res.expires_at) == (m.obj.created_at, m.obj.expires_at)

    def check_refusal(self, err: BudgetExceededError, r: ModelRefusal) -> None:
        slot = r.holds[r.index][0]
        assert (err.scope, err.unit, err.period) == (_label(slot), _unit(slot).value, "total")
        assert (err.limit, err.spent, err.held, err.requested) == tuple(
            _show(slot, x) for x in (r.limit, r.spent, r.held, r.requested)
        )
        assert err.resets_at is None

    def check_outcome(
        self, out: Any, res_id: str, expected: tuple[str, dict[Unit, int], bool, bool, bool]
    ) -> None:
        assert out.id == res_id
        assert (out.state, dict(out.charged), out.overrun, out.expired, out.duplicate) == expected

    # -- rules -------------------------------------------------------------------------------------

    @initialize(limits=st.lists(st.integers(2, 30), min_size=len(SLOTS), max_size=len(SLOTS)))
    def set_code_limits(self, limits: list[int]) -> None:
        self.code_limit = list(limits)
        self.specs = [
            CounterSpec(Scope.parse(scope), unit, Period.TOTAL, limit)
            for (scope, unit), limit in zip(SLOTS, limits, strict=True)
        ]

    def draw_holds(self, data: st.DataObject) -> list[tuple[int, int]]:
        slots = data.draw(st.lists(st.integers(0, len(SLOTS) - 1), min_size=1, max_size=3, unique=True))
        amounts = data.draw(st.lists(st.integers(0, 6), min_size=len(slots), max_size=len(slots)))
        return list(zip(slots, amounts, strict=True))

    def do_reserve(self, res_id: str, holds: list[tuple[int, int]], lease: float) -> ModelReservation | None:
        call = [Hold(self.specs[slot], amount) for slot, amount in holds]
        if res_id in self.refusals:  # a refused id stays refused
            event("refused id repeated")
            with pytest.raises(BudgetExceededError) as info:
                self.ledger.reserve(call, id=res_id, lease=lease)
            self.check_refusal(info.value, self.refusals[res_id])
            return None
        if res_id in self.reservations:  # a repeat returns the first reservation, changes nothing
            m = self.reservations[res_id]
            event("reserve repeated")
            self.check_reservation(self.ledger.reserve(call, id=res_id, lease=lease), m, duplicate=True)
            return None
        limits = [self.limit(slot) for slot, _ in holds]
        refusal = self.expected_reserve(res_id, holds)
        if refusal is not None:
            with pytest.raises(BudgetExceededError) as info:
                self.ledger.reserve(call, id=res_id, lease=lease)
            self.check_refusal(info.value, refusal)
            return None
        res = self.ledger.reserve(call, id=res_id, lease=lease)
        m = ModelReservation(res_id, holds, limits, round(lease * 1000), res)
        self.check_reservation(res, m, duplicate=False)
        self.reservations[res_id] = m
        return m

    @precondition(lambda self: self.specs)
    @rule(data=st.data())
    def reserve(self, data: st.DataObject) -> None:
        holds = self.draw_holds(data)
        known = sorted(self.reservations)
        repeat = bool(known) and data.draw(st.integers(0, 3), label="repeat an admitted id") == 0
        res_id = data.draw(st.sampled_from(known), label="id") if repeat else self.fresh_id()
        self.do_reserve(res_id, holds, LEASE)

    @precondition(lambda self: self.refusals)
    @rule(data=st.data())
    def reserve_with_a_refused_id(self, data: st.DataObject) -> None:
        """The same call again (a retry): refused again, even when it would fit now."""
        res_id = data.draw(st.sampled_from(sorted(self.refusals)), label="refused id")
        self.do_reserve(res_id, self.refusals[res_id].holds, LEASE)
        for resolve in (lambda: self.ledger.commit(res_id, {"usd": 1}), lambda: self.ledger.release(res_id)):
            with pytest.raises(ReservationError):
                resolve()

    @precondition(lambda self: self.specs)
    @rule(data=st.data())
    def reserve_in_shadow(self, data: st.DataObject) -> None:
        """``enforce="shadow"``: admitted always; the first counter the contract would refuse on is
        named (``Reservation.shadowed``) and journaled, as its refusal would have been."""
        holds, res_id = self.draw_holds(data), self.fresh_id()
        limits = [self.limit(slot) for slot, _ in holds]
        would = next(
            (ModelRefusal(res_id, holds, i, self.limit(slot), self.spent[slot], self.held[slot], amount)
             for i, (slot, amount) in enumerate(holds)
             if self.spent[slot] + self.held[slot] + amount > self.limit(slot)),
            None,
        )  # fmt: skip
        call = [Hold(self.specs[slot], amount) for slot, amount in holds]
        res = self.ledger.reserve(call, id=res_id, lease=LEASE, enforce="shadow")
        m = ModelReservation(res_id, holds, limits, round(LEASE * 1000), res)
        self.check_reservation(res, m, duplicate=False)
        self.reservations[res_id] = m
        for slot, amount in holds:
            self.held[slot] += amount
            if self.spent[slot] + self.held[slot] > self.limit(slot):
                self.excused[slot] = True
        if would is None:
            assert res.shadowed is None
            return
        event("shadow refusal")
        got = res.shadowed
        assert got is not None
        assert (got.index, got.limit, got.spent, got.held, got.requested) == (
            would.index, would.limit, would.spent, would.held, would.requested,
        )  # fmt: skip
        slot, amount = holds[would.index]
        self.journal[
            _journal_key("shadow_refused", res_id, [_label(slot)], {_unit(slot).value: amount}, {})
        ] += 1

    @precondition(lambda self: self.specs)
    @rule(data=st.data())
    def reserve_and_let_expire(self, data: st.DataObject) -> None:
        """A worker that crashes: its short lease runs out and the store reclaims the hold."""
        m = self.do_reserve(self.fresh_id(), self.draw_holds(data), SHORT_LEASE)
        time.sleep(SHORT_LEASE + 0.03)
        if m is None:
            return
        m.expired = True
        event("lease expired")
        for slot, amount in m.holds:
            self.held[slot] -= amount
            key = _journal_key("expired", m.id, [_label(slot)], {_unit(slot).value: amount}, {})
            self.journal[key] += 1

    def resolve(self, data: st.DataObject, res_id: str, commit: bool) -> None:
        m = self.reservations[res_id]
        ref: Reservation | str = m.obj if data.draw(st.booleans(), label="by object") else res_id
        if commit:
            units = sorted({_unit(slot) for slot, _ in m.holds})
            top = {u: max(a for slot, a in m.holds if _unit(slot) is u) for u in units}
            actual = {u: data.draw(st.integers(0, top[u] + 2), label=f"actual {u.value}") for u in units}
            expected = self.expected_resolve(m, actual)
            out = self.ledger.commit(ref, {u.value: v for u, v in actual.items()})
        else:
            expected = self.expected_resolve(m, None)
            out = self.ledger.release(ref)
        self.check_outcome(out, res_id, expected)

    @precondition(lambda self: any(m.outcome is None for m in self.reservations.values()))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        open_ids = sorted(i for i, m in self.reservations.items() if m.outcome is None)
        self.resolve(data, data.draw(st.sampled_from(open_ids), label="id"), commit=True)

    @precondition(lambda self: any(m.outcome is None for m in self.reservations.values()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        open_ids = sorted(i for i, m in self.reservations.items() if m.outcome is None)
        self.resolve(data, data.draw(st.sampled_from(open_ids), label="id"), commit=False)

    @precondition(lambda self: any(m.outcome is not None for m in self.reservations.values()))
    @rule(data=st.data())
    def resolve_again(self, data: st.DataObject) -> None:
        """A repeated commit or release (a retry, a bug in the caller) returns the first outcome."""
        done = sorted(i for i, m in self.reservations.items() if m.outcome is not None)
        self.resolve(data, data.draw(st.sampled_from(done), label="id"), commit=data.draw(st.booleans()))

    @precondition(lambda self: self.specs)
    @rule(slot=st.integers(0, len(SLOTS) - 1), value=st.none() | st.integers(0, 25))
    def set_limit(self, slot: int, value: int | None) -> None:
        if value is None:
            self.ledger.clear_limit(self.specs[slot])
        else:
            self.ledger.set_limit(self.specs[slot], value)
        self.override[slot] = value
        self.raised[slot] = None  # (a limit set outright ends a raise)
        if self.spent[slot] + self.held[slot] > self.limit(slot):
            self.excused[slot] = True
        assert self.ledger.get_limit(self.specs[slot]) == value

    @precondition(lambda self: self.specs)
    @rule(data=st.data(), slot=st.integers(0, len(SLOTS) - 1), amount=st.integers(-8, 8))
    def adjust(self, data: st.DataObject, slot: int, amount: int) -> None:
        """A credit (negative, never below 0) or charge, sometimes a repeat of an earlier id."""
        known = sorted(self.adjustments)
        if known and data.draw(st.integers(0, 3), label="repeat an adjustment") == 0:
            op_id = data.draw(st.sampled_from(known), label="adjustment id")
            first_slot, asked, change, after = self.adjustments[op_id]
            if data.draw(st.booleans(), label="the same change again"):
                slot, amount = first_slot, asked
            if (slot, amount) != (first_slot, asked):  # the id given for another change: refused
                with pytest.raises(ValueError, match="was used for a different change"):
                    self.ledger.adjust(self.specs[slot], amount, id=op_id, actor="m", reason="r")
                event("adjustment id reused for another change")
                return
            done = self.ledger.adjust(self.specs[slot], amount, id=op_id, actor="m", reason="r")
            assert (done.change, done.spent, done.duplicate) == (change, after, True)
            event("adjustment repeated")
            return
        op_id = f"a{len(self.adjustments)}"
        change = amount if amount >= 0 else -min(-amount, self.spent[slot])
        self.spent[slot] += change
        if change > 0:
            self.excused[slot] = True  # (charged past the limit, as an overrun is)
        done = self.ledger.adjust(self.specs[slot], amount, id=op_id, actor="m", reason="r")
        assert (done.change, done.spent, done.requested, done.duplicate) == (
            change,
            self.spent[slot],
            amount,
            False,
        )
        self.adjustments[op_id] = (slot, amount, change, self.spent[slot])
        event("credit clamped at 0" if change != amount else "adjusted")
        key = _journal_key("adjusted", op_id, [_label(slot)], {_unit(slot).value: change}, {})
        self.journal[key] += 1

    @precondition(lambda self: self.specs)
    @rule(slot=st.integers(0, len(SLOTS) - 1))
    def reset(self, slot: int) -> None:
        change = -self.spent[slot]
        done = self.ledger.reset(self.specs[slot], actor="m", reason="r")
        assert (done.change, done.spent) == (change, 0)
        self.spent[slot] = 0
        self.journal[_journal_key("reset", done.id, [_label(slot)], {_unit(slot).value: change}, {})] += 1

    def expected_raise(self, slot: int, extra: int) -> tuple[int | None, int]:
        base = self.override[slot] if self.raised[slot] is None else self.raised[slot][0]  # type: ignore[index]
        raised = (self.code_limit[slot] if base is None else base) + extra
        self.raised[slot], self.override[slot] = (base,), raised
        if self.spent[slot] + self.held[slot] > raised:  # (a replaced raise may be smaller)
            self.excused[slot] = True
        self.journal[_journal_key("limit_raised", "*", [_label(slot)], {_unit(slot).value: extra}, {})] += 1
        return base, raised

    @precondition(lambda self: self.specs)
    @rule(slot=st.integers(0, len(SLOTS) - 1), extra=st.integers(0, 10))
    def raise_limit(self, slot: int, extra: int) -> None:
        base, raised = self.expected_raise(slot, extra)
        done = self.ledger.raise_limit(
            self.specs[slot], extra, until=timedelta(hours=1), actor="m", reason="r"
        )
        assert (done.base, done.limit) == (base, raised)
        event("raise replaced" if done.base != self.override[slot] else "raised")

    @precondition(lambda self: self.specs)
    @rule(slot=st.integers(0, len(SLOTS) - 1), extra=st.integers(0, 10))
    def raise_limit_and_let_it_end(self, slot: int, extra: int) -> None:
        """A raise that ends by itself: the next read restores the limit it raised."""
        base, raised = self.expected_raise(slot, extra)
        done = self.ledger.raise_limit(self.specs[slot], extra, until=timedelta(milliseconds=50), actor="m",
                                       reason="r")  # fmt: skip
        assert (done.base, done.limit) == (base, raised)
        time.sleep(0.08)
        self.raised[slot], self.override[slot] = None, base
        if self.spent[slot] + self.held[slot] > self.limit(slot):
            self.excused[slot] = True
        event("raise ended")

    @rule()
    def unknown_id(self) -> None:
        with pytest.raises(ReservationError):
            self.ledger.commit("never-reserved", {"usd": 1})
        with pytest.raises(ReservationError):
            self.ledger.release("never-reserved")

    # -- invariants --------------------------------------------------------------------------------

    @invariant()
    def counters_match_the_model(self) -> None:
        if not self.specs:
            return
        statuses = self.ledger.status(self.specs)  # also reclaims expired holds
        for slot, status in enumerate(statuses):
            assert (status.spent, status.held) == (self.spent[slot], self.held[slot]), SLOTS[slot]
            assert status.limit == self.limit(slot)
            assert status.overridden == (self.override[slot] is not None)
            assert status.held >= 0
            if not self.excused[slot]:
                assert status.spent + status.held <= status.limit, SLOTS[slot]

    @invariant()
    def journal_matches_the_model(self) -> None:
        if not self.specs:
            return
        entries = self.ledger.history()
        got = Counter(_journal_key(e.event, e.reservation_id, e.scopes, e.amounts, e.data) for e in entries)
        assert got == self.journal


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "cluster", "postgres"])
def test_store_matches_the_model(kind: str, request: pytest.FixtureRequest) -> None:
    base_url = None
    if kind == "redis":
        base_url = request.getfixturevalue("redis_url")
    elif kind == "postgres":
        base_url = request.getfixturevalue("postgres_url")
    elif kind == "cluster":
        base_url = request.getfixturevalue("cluster_url")
    machine = type(f"LedgerModel_{kind}", (LedgerModel,), {"KIND": kind, "BASE_URL": base_url})
    run_state_machine_as_test(machine, settings=SETTINGS)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Ledger]:
    """A fresh store (the bug below is in shared Python code, so the cluster adds nothing)."""
    ns = "m" + secrets.token_hex(6)
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = f"{request.getfixturevalue('redis_url')}?namespace={ns}"
    with open_ledger(url) as store:
        yield store
    if request.param == "redis":
        delete_namespace(request.getfixturevalue("redis_url"), ns)


@pytest.mark.parametrize("shape", ["fewer holds", "other order"])
def test_refused_id_repeated_with_other_holds_names_the_first_refusal(any_ledger: Ledger, shape: str) -> None:
    ledger = any_ledger
    user = CounterSpec(Scope.parse("user:a"), Unit.USD, Period.TOTAL, 100)
    team = CounterSpec(Scope.parse("team:t"), Unit.USD, Period.TOTAL, 5)
    with pytest.raises(BudgetExceededError) as first:
        ledger.reserve([Hold(user, 10), Hold(team, 10)], id="refused-once")
    assert first.value.scope == "team:t"
    again = [Hold(user, 1)] if shape == "fewer holds" else [Hold(team, 1), Hold(user, 1)]
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve(again, id="refused-once")
    assert (info.value.scope, info.value.requested) == ("team:t", to_usd(10))

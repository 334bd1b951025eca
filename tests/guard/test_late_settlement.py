"""A call that settles after the store forgot its reservation (its lease ended, then its record's retention,
``RECORD_RETENTION_MS``: a long stream, a deep-research call) is charged anyway, as a late charge: a
reservation holding 0 on the same counters, committed at once and journaled with ``late``. Nothing reaches
the caller, and a repeated settlement charges once.

Each test reserves with a 1 ms lease, waits (while the request is in flight) until the store reclaimed the
hold, and drops the reservation's record as the store does once its retention has passed.
"""

from __future__ import annotations

import gc
from typing import Any

from budgetguard import Event, Scope, to_usd
from budgetguard._deferred import drain
from budgetguard._drivers import no_call
from budgetguard._drivers import run_sync as run
from budgetguard._ledger import Hold
from budgetguard._ledger._memory import MemoryLedger
from budgetguard._ledger._postgres import PostgresLedger
from budgetguard._ledger._postgres_tx import RESERVATIONS
from budgetguard._ledger._redis import RedisLedger
from budgetguard._ledger._sqlite import SQLiteLedger
from budgetguard._settle import LATE, resolve
from tests.guard.conftest import Harness, MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    Reply,
    async_openai_client,
    chat_completion,
    chat_request,
    chat_stream_chunks,
    nano,
    openai_client,
    openai_sse,
    serve,
)
from tests.guard.test_streams import interrupted_cost

COST = nano("gpt-4o", GPT4O_USAGE)
SCOPES = ("user:alice", "feature:late", "global")


def forget(h: Harness, res_id: str) -> None:
    """The store's state once ``res_id``'s lease has ended and its record's retention has passed: its
    hold reclaimed (waited for: the lease is 1 ms), its record gone."""
    while any(h.held(scope) for scope in SCOPES):
        pass
    ledger: Any = h.ledger
    if isinstance(ledger, MemoryLedger):
        del ledger._records[res_id], ledger._record_ends[res_id]
    elif isinstance(ledger, SQLiteLedger):
        table = ledger._sql.names["reservations"]
        assert ledger._db().execute(f"DELETE FROM {table} WHERE id = ?", (res_id,)).rowcount == 1
    elif isinstance(ledger, PostgresLedger):
        with ledger._pool.connection() as conn:
            deleted = conn.execute(
                f"DELETE FROM {RESERVATIONS} WHERE ns = %s AND id = %s", (ledger.namespace, res_id)
            )
            assert deleted.rowcount == 1
    else:
        assert isinstance(ledger, RedisLedger)
        assert ledger.client.delete(ledger._flows.keys.record(res_id)) == 1


def late_guard(make_guard: MakeGuard) -> tuple[Harness, list[str]]:
    reserved: list[str] = []

    def seen(event: Event) -> None:
        if event.kind == "reserved" and event.reservation_id is not None:
            reserved.append(event.reservation_id)

    return make_guard(lease=0.001, on_event=seen), reserved


def forgetting(h: Harness, reserved: list[str]) -> Reply:
    """A reply served once the store forgot the reservation made for it."""
    return Reply(200, chat_completion(), before=lambda: forget(h, reserved[-1]))


def assert_charged_late(h: Harness, res_id: str, cost: int) -> None:
    """Charged exactly ``cost`` on every counter, once, journaled with the flag, and told."""
    h.assert_settled(dict.fromkeys(SCOPES, cost))
    (entry,) = h.committed()  # (and an "expired" entry per counter, as the lease ended)
    assert entry.amounts["usd"] == cost
    assert entry.reservation_id == f"{res_id}.late"
    assert (entry.data["late"], entry.data["late_of"]) == (True, res_id)
    assert set(entry.scopes) == set(SCOPES)
    (overrun,) = [e for e in h.of("overrun") if e.reason == LATE]
    (committed,) = [e for e in h.of("committed") if e.data.get("late")]
    assert overrun.data["late"] is True and overrun.actual == committed.actual == to_usd(cost)
    assert h.of("spend_lost") == [] and h.of("store_unavailable") == []


def test_a_call_settled_after_its_record_is_gone_is_charged_late(make_guard: MakeGuard) -> None:
    h, reserved = late_guard(make_guard)
    create = h.guard.with_budget(
        openai_client(serve(forgetting(h, reserved))).chat.completions.create, user="alice", feature="late"
    )
    create(**chat_request())  # no exception
    assert_charged_late(h, reserved[0], COST)
    assert [e.kind for e in h.events] == ["committed", "overrun"]
    assert h.of("committed")[0].data["late"] is True
    assert h.committed()[0].data["model"] == "gpt-4o"  # the reservation's journal data, as reserved


async def test_an_async_call_settled_after_its_record_is_gone_is_charged_late(
    amake_guard: MakeGuard,
) -> None:
    h, reserved = late_guard(amake_guard)
    api = serve(forgetting(h, reserved))
    create = h.guard.with_budget(
        async_openai_client(api).chat.completions.create, user="alice", feature="late"
    )
    await create(**chat_request())
    assert_charged_late(h, reserved[0], COST)


def test_a_job_settled_after_its_record_is_gone_is_charged_late(make_guard: MakeGuard) -> None:
    h, reserved = late_guard(make_guard)
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)
    with h.guard.reserve(usd="0.5", name="deep", user="alice", feature="late", lease=0.001):
        create(**chat_request())  # draws on the job's hold, in memory
        forget(h, reserved[0])  # the job's own reservation
    assert_charged_late(h, reserved[0], COST)
    assert h.committed()[0].data["job"] == "deep"
    # the call's (over its estimate, on the job's hold), the job's
    assert [e.kind for e in h.events] == ["committed", "overrun", "committed", "overrun"]
    assert h.of("committed")[1].data == {"job": "deep", "late": True}


def test_a_dropped_stream_settled_after_its_record_is_gone_is_charged_late(make_guard: MakeGuard) -> None:
    h, reserved = late_guard(make_guard)
    sse = openai_sse(chat_stream_chunks())
    create = h.guard.with_budget(
        openai_client(serve(sse)).chat.completions.create, user="alice", feature="late"
    )
    stream = create(**chat_request(stream=True))
    next(stream)
    next(stream)
    stream.cycle = stream  # only the collector frees it
    forget(h, reserved[0])
    del stream
    gc.collect()
    assert h.committed() == []  # queued
    drain(h.guard)  # (the guard's next operation, close() or exit)
    usage, cost = interrupted_cost(chat_request(), "Budgets")
    assert_charged_late(h, reserved[0], cost)
    assert h.committed()[0].data["usage"] == usage.to_dict()
    assert h.committed()[0].data["interrupted"] is True
    assert [e.kind for e in h.events] == ["usage_missing", "committed", "overrun"]


def test_a_late_charge_repeated_charges_once(make_guard: MakeGuard) -> None:
    """A settlement retried (its first reply lost) repeats the late charge: the derived id makes it a
    repeat, not a second charge."""
    h, _ = late_guard(make_guard)
    counters = h.guard.counters_for([Scope.parse(s) for s in SCOPES])
    reservation = h.ledger.reserve([Hold(c, 1_000) for c in counters], lease=0.001)
    forget(h, reservation.id)
    actual = {c.unit: COST if c.unit.value == "usd" else 0 for c in counters}
    for _ in range(2):
        charged, outcome = run(h.guard, resolve(reservation, actual, {}, {}), no_call)
        assert charged.id == f"{reservation.id}.late" and outcome is not None
    h.assert_settled(dict.fromkeys(SCOPES, COST))
    assert [e.reservation_id for e in h.committed()] == [f"{reservation.id}.late"]


def test_a_release_of_a_forgotten_reservation_is_quiet(make_guard: MakeGuard) -> None:
    h, _ = late_guard(make_guard)
    counters = h.guard.counters_for([Scope.parse(s) for s in SCOPES])
    reservation = h.ledger.reserve([Hold(c, 1_000) for c in counters], lease=0.001)
    forget(h, reservation.id)
    charged, outcome = run(h.guard, resolve(reservation, None, {}, {}), no_call)
    assert (charged, outcome) == (reservation, None)
    h.assert_settled(dict.fromkeys(SCOPES, 0))
    assert {e.event for e in h.history()} == {"expired"}

"""``hold=Learned(...)``: hold the learned percentile of actual / estimate, charge every overrun exactly.

By hand (gpt-4o, $2.50 / $10.00 per million tokens): ``chat_request()`` reserves 17 x 2,500 + 300 x
10,000 = 3,042,500 nano-USD; a response of 10 prompt and 20 completion tokens costs 25,000 + 200,000 =
225,000, a ratio of 225,000 / 3,042,500, so the learned hold is that ratio x 3,042,500 = 225,000.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

import budgetguard
from budgetguard import Budget, ConfigurationError, Learned
from budgetguard._report import report
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import async_openai_client, chat_request, openai_client, serve, small_completion

WORST = 3_042_500
SMALL = 225_000  # small_completion(10, 20)
BIG = 17 * 2_500 + 300 * 10_000  # small_completion(17, 300): the worst case itself


def test_the_hand_arithmetic_holds() -> None:
    assert budgetguard.estimate(chat_request()).cost_nano == WORST == BIG
    assert (
        budgetguard.get_price("gpt-4o").cost_nano(budgetguard.Usage(input_tokens=10, output_tokens=20))
        == SMALL
    )


def test_learned_hold_after_min_calls_and_the_overrun_is_charged(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="1", per="day")])
    script = [small_completion(10, 20)] * 4 + [small_completion(17, 300)]
    api = serve(*script)
    policy = Learned(percentile=99, min_calls=3, refresh_calls=1)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", hold=policy)

    for _ in range(3):  # nothing learned yet: the worst case is held
        create(**chat_request())
    assert all("reserved_usd" not in e.data for e in h.committed())

    create(**chat_request())  # three calls known: 225,000 / 3,042,500 of the worst case
    fourth = h.committed()[-1]
    assert fourth.data["reserved_usd"] == str(budgetguard.to_usd(SMALL))
    assert fourth.data["estimated_usd"] == str(budgetguard.to_usd(WORST))  # the journal keeps the worst case
    assert not h.of("overrun")

    create(**chat_request())  # held 225,000, cost the worst case: charged in full, flagged
    fifth = h.committed()[-1]
    assert fifth.data["reserved_usd"] == str(budgetguard.to_usd(SMALL))
    assert fifth.amounts["usd"] == BIG and fifth.data.get("overrun") is True
    assert len(h.of("overrun")) == 1
    h.assert_settled({"user:alice": 4 * SMALL + BIG})


def test_the_limit_is_passed_by_at_most_one_calls_overrun(make_guard: MakeGuard) -> None:
    limit = 4 * SMALL + 500_000  # 1,400,000: the worst case (3,042,500) never fits
    h = make_guard(budgets=[Budget("user", usd="1", per="day"), Budget("team", usd="0.0014", per="day")])
    api = serve(*[small_completion(10, 20)] * 3, small_completion(17, 300))
    learner = h.guard.with_budget(
        openai_client(api).chat.completions.create, user="alice", hold=Learned(min_calls=3, refresh_calls=1)
    )
    for _ in range(3):  # learn on the user's budget (the team's would refuse the worst case)
        learner(**chat_request())
    create = h.guard.with_budget(
        openai_client(api).chat.completions.create,
        user="alice",
        team="t",
        hold=Learned(min_calls=3, refresh_calls=1),
    )
    create(**chat_request())  # team: 0 spent, 225,000 held, admitted; costs 3,042,500
    assert h.spent("team:t") == BIG > limit  # one overrun past the limit
    with pytest.raises(budgetguard.BudgetExceededError):
        create(**chat_request())  # over the limit now: refused
    assert h.spent("team:t") == BIG


async def test_async_learned_hold(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=[Budget("user", usd="1", per="day")])
    api = serve(small_completion(10, 20))
    policy = Learned(percentile=50, min_calls=2, refresh_calls=1)
    create = h.guard.with_budget(async_openai_client(api).chat.completions.create, user="alice", hold=policy)
    for _ in range(3):
        await create(**chat_request())
    reserved = [e.data.get("reserved_usd") for e in h.committed()]
    assert reserved == [None, None, str(budgetguard.to_usd(SMALL))]


def test_the_cache_reads_only_new_entries_every_refresh_calls(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="1", per="day")])
    api = serve(small_completion(10, 20))
    reads: list[object] = []
    history = h.ledger.history

    def counted(**kwargs: object) -> object:
        reads.append(kwargs["since"])
        return history(**kwargs)  # type: ignore[arg-type]

    h.ledger.history = counted  # type: ignore[method-assign]
    policy = Learned(min_calls=1, refresh_calls=3, refresh_seconds=3600)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", hold=policy)
    started = datetime.now(UTC)
    for _ in range(7):
        create(**chat_request())
    assert len(reads) == 3  # calls 1, 4 and 7 read the journal
    first, last = reads[0], reads[2]
    assert isinstance(first, datetime) and isinstance(last, datetime)
    hour = timedelta(seconds=policy.first_read_seconds)
    assert started - hour <= first <= datetime.now(UTC) - hour  # the first read: the last hour, not all
    assert last > first  # then from the last entry read: only what is new
    state = next(iter(h.guard.calibration._known.values()))
    assert len(state.ratios) == 6  # each call learned once: the entries at a read's start are not re-read
    assert state.ratio == Fraction(SMALL, WORST)


def test_learned_percentile_is_by_nearest_rank(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=[Budget("user", usd="1", per="day")])
    costs = [(10, 20), (10, 40), (10, 60), (10, 80)]
    api = serve(*[small_completion(p, c) for p, c in costs], small_completion(10, 20))
    policy = Learned(percentile=75, min_calls=4, refresh_calls=1)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="alice", hold=policy)
    for _ in range(5):
        create(**chat_request())
    third = 10 * 2_500 + 60 * 10_000  # rank ceil(0.75 x 4) = 3
    assert h.committed()[-1].data["reserved_usd"] == str(budgetguard.to_usd(third))
    rows, _ = report(h.history(), "model")
    assert rows[0].calibration is not None
    assert rows[0].calibration.max == Fraction(10 * 2_500 + 80 * 10_000, WORST)


def test_bad_policies_are_refused() -> None:
    for bad in ({"percentile": 0}, {"percentile": 101}, {"min_calls": 0}, {"refresh_seconds": 0}):
        with pytest.raises(ConfigurationError):
            Learned(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="hold="):
        budgetguard.Guard("memory://", hold="p99")  # type: ignore[arg-type]

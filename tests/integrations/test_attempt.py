"""``Guard.attempt``: the guard's flow for calls that other code sends (the integrations' entry point)."""

from __future__ import annotations

import asyncio

import pytest

import budgetguard as bg

REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 50}
USAGE = {"usage": {"prompt_tokens": 9, "completion_tokens": 12}}


def make(usd: str = "1") -> tuple[bg.Guard, list[bg.Event]]:
    events: list[bg.Event] = []
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd=usd, per="day")], on_event=events.append)
    return guard, events


def status(guard: bg.Guard, user: str) -> tuple[int, int]:
    [found] = guard.ledger.status(guard.counters_for([bg.Scope("user", user)]))
    return found.spent, found.held


def test_reserve_then_commit_charges_the_usage_once() -> None:
    guard, events = make()
    est = bg.estimate(REQUEST)
    with bg.track() as spent:
        attempt = guard.attempt(REQUEST, scopes={"user": "{who}"}, arguments={"who": "amy"})
        attempt.reserve()
        assert status(guard, "amy") == (0, est.cost_nano)
        attempt.commit(USAGE)
    cost = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=9, output_tokens=12))
    assert status(guard, "amy") == (bg.to_nano(cost), 0)
    assert [e.kind for e in events] == ["reserved", "committed"]
    assert spent.calls == 1 and spent.cost == cost


@pytest.mark.parametrize(
    ("error", "charged"), [(RuntimeError("400 bad request"), False), (TimeoutError("read timed out"), True)]
)
def test_fail_releases_or_charges_the_input_and_never_retries(error: Exception, charged: bool) -> None:
    guard, events = make()
    attempt = guard.attempt(REQUEST, scopes={"user": "ben"})
    attempt.reserve()
    attempt.fail(error)  # the guard would retry a timeout; here the caller's framework decides
    est = bg.estimate(REQUEST)
    expected = bg.to_nano(bg.cost("gpt-4o-mini", bg.Usage(input_tokens=est.input_tokens))) if charged else 0
    assert status(guard, "ben") == (expected, 0)
    assert [e.kind for e in events] == ["reserved", "committed" if charged else "released"]
    assert events[-1].reason == type(error).__name__


@pytest.mark.parametrize("is_async", [False, True])
def test_fail_with_the_callers_generator_exit_settles_a_sent_call(is_async: bool) -> None:
    """A framework that reports a stream its caller left as the run's error passes ``GeneratorExit``
    (LangChain's ``on_llm_error``): the call was sent, so it is settled as a cut connection (its input
    charged, per ``charge_failed``), not read as a flow abandoned before its call (a review found the
    hold kept to its lease and nothing charged)."""
    guard, events = make()
    attempt = guard.attempt(REQUEST, scopes={"user": "eve"})
    if is_async:

        async def run() -> None:
            await attempt.areserve()
            await attempt.afail(GeneratorExit())

        asyncio.run(run())
    else:
        attempt.reserve()
        attempt.fail(GeneratorExit())
    est = bg.estimate(REQUEST)
    assert status(guard, "eve") == (
        bg.to_nano(bg.cost("gpt-4o-mini", bg.Usage(input_tokens=est.input_tokens))),
        0,
    )
    assert [e.kind for e in events] == ["reserved", "committed"] and events[-1].reason == "StreamClosed"


def test_release_gives_the_hold_back_and_a_dropped_attempt_raises_nothing() -> None:
    guard, events = make()
    attempt = guard.attempt(REQUEST, scopes={"user": "dee"})
    attempt.reserve()
    attempt.release()  # the framework dropped the run before sending it
    assert status(guard, "dee") == (0, 0)
    assert [e.kind for e in events] == ["reserved", "released"]
    dropped = guard.attempt(REQUEST, scopes={"user": "eve"})
    dropped.reserve()
    dropped._flow.close()  # what garbage collection does: no "generator ignored GeneratorExit"
    assert status(guard, "eve")[1] > 0  # held until its lease ends, as for a crashed worker


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_released_attempt_is_never_charged_even_by_a_policy_that_charges_every_error(
    asynchronous: bool,
) -> None:
    """``release()`` says the call was never sent: no ``charge_failed`` policy may charge it."""
    events: list[bg.Event] = []
    guard = bg.Guard(
        "memory://", budgets=[bg.Budget("user", usd="1", per="day")], on_event=events.append,
        charge_failed=lambda exc: True,
    )  # fmt: skip
    attempt = guard.attempt(REQUEST, scopes={"user": "fay"})
    if asynchronous:

        async def run() -> None:
            await attempt.areserve()
            await attempt.arelease()

        asyncio.run(run())
    else:
        attempt.reserve()
        attempt.release()
    assert status(guard, "fay") == (0, 0)
    assert [(e.kind, e.actual) for e in events] == [("reserved", None), ("released", None)]
    [entry] = guard.ledger.history()
    assert (entry.event, entry.data["error"]) == ("released", "NotSent")


def test_a_refused_reservation_raises_and_holds_nothing() -> None:
    guard, events = make(usd="0.00001")
    with pytest.raises(bg.BudgetExceededError):
        guard.attempt({**REQUEST, "max_tokens": 10_000}, scopes={"user": "cal"}).reserve()
    assert status(guard, "cal") == (0, 0)
    assert [e.kind for e in events] == ["refused"]


def test_a_response_without_usage_is_charged_the_estimate() -> None:
    guard, events = make()
    attempt = guard.attempt(REQUEST, scopes={"user": "dee"})
    attempt.reserve()
    attempt.commit({"choices": []})
    assert status(guard, "dee") == (bg.estimate(REQUEST).cost_nano, 0)
    assert [e.kind for e in events] == ["reserved", "usage_missing", "committed"]
    assert events[-1].data["usage_missing"] is True


async def test_the_async_driver_runs_the_same_flow() -> None:
    guard, events = make()
    first = guard.attempt(REQUEST, scopes={"user": "eli"})
    await first.areserve()
    await first.acommit(USAGE)
    second = guard.attempt(REQUEST, scopes={"user": "eli"})
    await second.areserve()
    await second.afail(RuntimeError("500"))
    cost = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=9, output_tokens=12))
    assert status(guard, "eli") == (bg.to_nano(cost), 0)
    assert [e.kind for e in events] == ["reserved", "committed", "reserved", "released"]

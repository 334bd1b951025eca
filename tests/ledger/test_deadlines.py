"""The async Redis store's deadlines (``_deadline.Deadlines``): ``asyncio.timeout_at``'s rule with one
timer per event loop, for deadlines in any order.

The rule: a wait still running at its deadline has its task cancelled; that cancellation, unless
something else cancelled the task too, becomes the deadline's error, and the task's ``cancelling()``
count is what it was. ``_under`` uses ``Deadlines`` exactly as ``AsyncRedisLedger._run`` does; each
scenario runs under it and under ``asyncio.timeout_at`` and must end the same way. Then what one
timer for many deadlines could get wrong: an earlier deadline entered behind later ones (other
stores on the loop, a store's deadline changed), deadlines entered while others fire, a loop closed
with waits pending and the garbage collector closing them later, a timer that fires for a wait that
has left.
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from budgetguard import LedgerError
from budgetguard._ledger import Hold, open_async_ledger
from budgetguard._ledger._deadline import LoopDeadlines, leave

from .helpers import counter
from .proxy import SilentServer


class Late(TimeoutError):
    """The deadline's error, as ``_under`` raises it (the store raises its ``LedgerError``)."""


_STORE = LoopDeadlines()
"""As one store's: the tests run on many loops, one after the other."""


async def _under(when: float, wait: Awaitable[Any]) -> Any:
    """``await wait`` by ``when`` (loop time), as ``AsyncRedisLedger._run`` runs a call."""
    entry = _STORE.of(asyncio.get_running_loop()).enter(asyncio.current_task(), when)  # type: ignore[arg-type]
    try:
        result = await wait
    except BaseException as exc:
        if leave(entry) and isinstance(exc, asyncio.CancelledError):
            raise Late from exc
        raise
    leave(entry)
    return result


async def _stock(when: float, wait: Awaitable[Any]) -> Any:
    async with asyncio.timeout_at(when):
        return await wait


Under = Callable[[float, Awaitable[Any]], Coroutine[Any, Any, Any]]


def _hung() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def _settled(coro: Coroutine[Any, Any, Any]) -> tuple[str, int]:
    """How ``coro`` ended (its result, or its exception's kind) and the task's ``cancelling()`` then."""
    try:
        outcome = repr(await coro)
    except asyncio.CancelledError:
        outcome = "cancelled"
    except TimeoutError:  # (``Late`` or asyncio's)
        outcome = "timeout"
    except ValueError as exc:
        outcome = f"ValueError({exc})"
    task = asyncio.current_task()
    assert task is not None
    return outcome, task.cancelling()


async def _absorbs(then_raise: bool) -> str:
    try:
        await _hung()
    except asyncio.CancelledError:
        if then_raise:
            raise ValueError("after the cancellation") from None
        return "absorbed"
    return "never"


async def _scenario(name: str, under: Under) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    now = loop.time()
    if name == "in time":
        return await _settled(under(now + 30, asyncio.sleep(0, "done")))
    if name == "hung, deadline passed":
        return await _settled(under(now - 1, _hung()))
    if name == "hung, deadline soon":
        return await _settled(under(now + 0.02, _hung()))
    if name == "absorbed":
        return await _settled(under(now + 0.02, _absorbs(then_raise=False)))
    if name == "absorbed, then an error":
        return await _settled(under(now + 0.02, _absorbs(then_raise=True)))
    if name == "inside a later timeout":  # (redis-py's socket timeout inside the deadline)
        return await _settled(under(now + 0.02, _stock(now + 30, _hung())))
    if name == "around an earlier timeout":
        return await _settled(under(now + 30, _stock(now + 0.02, _hung())))
    if name == "inside an earlier one of its kind":
        return await _settled(under(now + 0.02, under(now + 30, _hung())))
    if name == "around a later one of its kind":
        return await _settled(under(now + 30, under(now + 0.02, _hung())))
    raise AssertionError(name)


_SCENARIOS = [
    "in time",
    "hung, deadline passed",
    "hung, deadline soon",
    "absorbed",
    "absorbed, then an error",
    "inside a later timeout",
    "around an earlier timeout",
    "inside an earlier one of its kind",
    "around a later one of its kind",
]


@pytest.mark.parametrize("name", _SCENARIOS)
async def test_a_deadline_ends_a_wait_as_asyncio_timeout_at_does(name: str) -> None:
    stock = await asyncio.create_task(_scenario(name, _stock))
    shared = await asyncio.create_task(_scenario(name, _under))
    assert shared == stock, name


async def _cancelled_by_another(under: Under, offset: float, steps: int) -> tuple[str, int]:
    """The task is cancelled by someone else ``steps`` loop turns after it began waiting."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(_settled(under(loop.time() + offset, _hung())))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    return await task


@pytest.mark.parametrize(("offset", "steps"), [(30.0, 1), (30.0, 3), (-1.0, 1)])
async def test_a_cancellation_by_another_stays_a_cancellation(offset: float, steps: int) -> None:
    """Also when the deadline has passed too: the task was cancelled by someone else, who must see it
    (``asyncio.timeout_at``: ``CancelledError``, one cancel request left on the task)."""
    stock = await _cancelled_by_another(_stock, offset, steps)
    assert stock == ("cancelled", 1)
    assert await _cancelled_by_another(_under, offset, steps) == stock


async def test_a_wait_that_ended_but_has_not_resumed_at_its_deadline() -> None:
    """The future is done, the task not yet resumed, when the deadline's cancellation comes: the
    task still gets the deadline's error (as with ``asyncio.timeout_at``), its count restored."""
    for under in (_stock, _under):
        loop = asyncio.get_running_loop()
        future = _hung()
        task = asyncio.create_task(_settled(under(loop.time() + 0.05, future)))
        await asyncio.sleep(0.1)  # the deadline passed while the task waits
        assert task.done()
        assert task.result() == ("timeout", 0), under
        # now the other order: done first, the deadline due at the same turn
        future = _hung()
        task = asyncio.create_task(_settled(under(loop.time() - 1, future)))
        future.set_result("done")
        assert await task in {("timeout", 0), ("'done'", 0)}


async def _racer(when: float, socket_timeout: float, record: list[tuple[float, float, str]]) -> None:
    """One store call: waits under its deadline, inside it a socket timeout 1 s later than it."""
    loop = asyncio.get_running_loop()
    try:
        await _under(when, _stock(loop.time() + socket_timeout, _hung()))
    except Late:
        record.append((when, loop.time(), "deadline"))
    except TimeoutError:
        record.append((when, loop.time(), "socket timeout"))


async def test_deadlines_in_any_order_each_fire_at_their_own_time() -> None:
    """Deadlines entered out of order (other stores, a changed deadline), equal ones, passed ones; a
    second wave entered while the first fires, earlier than most of those still waiting. Each wait
    must end by its own deadline: never before it, never by the socket timeout a second later, and
    in the order of their deadlines (a timer armed only for the queue's first entry ends an earlier
    one behind it with that first one, or by its socket timeout)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(17)
    record: list[tuple[float, float, str]] = []
    now = loop.time()
    offsets = [0.4, 0.4, 0.4, 0.05, 0.3, -0.5, 0.0, 0.2, 0.01, 0.35] + [
        rng.uniform(0, 0.4) for _ in range(30)
    ]
    rng.shuffle(offsets)
    tasks = [asyncio.create_task(_racer(now + offset, offset + 1, record)) for offset in offsets]
    await asyncio.sleep(0)  # (all enter at this turn, in this order)
    await asyncio.sleep(0.1)  # some have fired: a second wave, earlier than most still waiting
    now = loop.time()
    for offset in [rng.uniform(0, 0.2) for _ in range(20)]:
        tasks.append(asyncio.create_task(_racer(now + offset, offset + 1, record)))
    await asyncio.gather(*tasks)
    assert len(record) == len(tasks)
    for when, ended, how in record:
        assert how == "deadline", (when, ended)
        assert ended >= when, "ended before its deadline"
    ends = [when for when, _, _ in record]
    assert ends == sorted(ends), "a wait ended after one whose deadline was later"


async def test_a_timer_left_for_waits_that_ended_serves_the_next() -> None:
    """The waits the timer was armed for end early; a later one, entered alone, still fires."""
    loop = asyncio.get_running_loop()
    for _ in range(3):
        await _under(loop.time() + 0.05, asyncio.sleep(0))  # armed at +0.05, left at once
    record: list[tuple[float, float, str]] = []
    await _racer(loop.time() + 0.2, 1.2, record)
    await asyncio.sleep(0.1)  # past the stale arming
    await _racer(loop.time() + 0.1, 1.1, record)
    assert [how for _, _, how in record] == ["deadline", "deadline"]


async def test_waits_that_ended_behind_a_hung_one_keep_no_task_alive() -> None:
    """A hung wait at the queue's head keeps the ended ones behind it queued until it expires; they
    hold no task (nor its result): a review found 10,001 tasks kept behind one hung wait."""
    loop = asyncio.get_running_loop()
    hung = asyncio.create_task(_under(loop.time() + 0.3, _hung()))
    await asyncio.sleep(0)
    await asyncio.gather(*[_under(loop.time() + 0.5, asyncio.sleep(0)) for _ in range(50)])
    queue = list(_STORE.of(loop)._queue)
    assert len(queue) == 51 and queue[0].task is hung
    assert [entry.task for entry in queue[1:]] == [None] * 50
    with pytest.raises(Late):
        await hung


def test_a_loop_closed_with_waits_pending_leaves_the_next_loop_its_deadlines() -> None:
    """A loop closed while waits were pending, before their deadlines (its timer never fired); the
    next loop's later deadlines fire, also while the first loop's abandoned waits are closed
    meanwhile (by the garbage collector, in whatever loop runs then)."""
    first = asyncio.new_event_loop()
    abandoned = [first.create_task(_under(first.time() + 0.05, _hung_on(first))) for _ in range(3)]
    first.run_until_complete(asyncio.sleep(0.01))
    first.close()

    async def second() -> list[tuple[float, float, str]]:
        record: list[tuple[float, float, str]] = []
        loop = asyncio.get_running_loop()
        racer = asyncio.create_task(_racer(loop.time() + 0.1, 1.1, record))
        await asyncio.sleep(0)
        for task in abandoned:  # the first loop's waits, closed from this one (their leave runs here)
            task.get_coro().close()  # type: ignore[union-attr]
        gc.collect()
        await racer
        await _racer(loop.time() + 0.05, 1.05, record)
        return record

    record = asyncio.run(second())
    assert [how for _, _, how in record] == ["deadline", "deadline"]


def _hung_on(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    return loop.create_future()


async def test_each_loop_has_its_own_deadlines() -> None:
    loop = asyncio.get_running_loop()
    timers = LoopDeadlines()
    mine = timers.of(loop)
    assert timers.of(loop) is mine
    other = asyncio.new_event_loop()
    try:
        assert timers.of(other) is not mine
        assert timers.of(loop) is not mine  # (made anew: a loop never inherits another's timer)
    finally:
        other.close()


# -- the store ----------------------------------------------------------------------------------------
# A hung server; the socket timeout (5 s) far past the deadlines, so which one ended a call is plain;
# the longer deadlines 2 s past the shorter ones (the order holds unless the loop stalls that long).

_SLOW = "socket_timeout=5&socket_connect_timeout=5"


async def _ended(ledger: Any, name: str, order: list[str]) -> BaseException | None:
    try:
        await ledger.reserve([Hold(counter(limit=1000), 1)])
    except LedgerError as exc:
        order.append(name)
        return exc
    return None


async def test_a_shorter_deadline_behind_longer_ones_on_one_store() -> None:
    """The store's deadline shortened while calls under the longer one wait: the later, shorter ones
    end first, by their own deadline."""
    with SilentServer() as silent:
        ledger = open_async_ledger(f"{silent.url}?{_SLOW}&deadline=2.5")
        try:
            order: list[str] = []
            longer = [asyncio.create_task(_ended(ledger, "long", order)) for _ in range(4)]
            await asyncio.sleep(0.05)
            ledger.deadline = 0.3  # type: ignore[attr-defined]
            shorter = [asyncio.create_task(_ended(ledger, "short", order)) for _ in range(4)]
            errors = await asyncio.gather(*shorter, *longer)
        finally:
            await ledger.aclose()
    assert order == ["short"] * 4 + ["long"] * 4
    for error in errors:
        assert "deadline" in str(error), error


async def test_stores_with_other_deadlines_share_one_loop() -> None:
    with SilentServer() as silent:
        slow = open_async_ledger(f"{silent.url}?{_SLOW}&deadline=2.3")
        fast = open_async_ledger(f"{silent.url}?{_SLOW}&deadline=0.2")
        try:
            order: list[str] = []
            tasks = [asyncio.create_task(_ended(slow, "slow", order)) for _ in range(3)]
            await asyncio.sleep(0.02)
            tasks += [asyncio.create_task(_ended(fast, "fast", order)) for _ in range(3)]
            errors = await asyncio.gather(*tasks)
        finally:
            await slow.aclose()
            await fast.aclose()
    assert order == ["fast"] * 3 + ["slow"] * 3
    for error in errors:
        assert "deadline" in str(error), error

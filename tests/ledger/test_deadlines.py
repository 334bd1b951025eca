"""The async store's deadlines (``_deadline.Deadlines``): ``asyncio.timeout_at``'s rule, one timer."""

from __future__ import annotations

import asyncio

import pytest

from budgetguard._ledger._deadline import Deadlines


async def _wait(deadlines: Deadlines, when: float, seconds: float) -> str:
    """Sleep ``seconds`` under a deadline at ``when``: "done", "late" (the deadline's), or raises."""
    watch = deadlines.watch(when)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if deadlines.finish(watch):
            return "late"
        raise
    finally:
        deadlines.finish(watch)
    return "done"


async def test_each_task_ends_at_its_own_deadline_and_no_sooner() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    now = loop.time()
    # (deadlines out of order too: another deadline's length)
    plan = [(0.05, 0.2), (0.3, 0.01), (0.02, 0.2), (0.3, 0.01), (0.1, 0.2), (0.5, 0.05)]
    results = await asyncio.gather(*(_wait(deadlines, now + d, s) for d, s in plan))
    assert results == ["late", "done", "late", "done", "late", "done"]
    assert loop.time() - now < 0.45  # the longest sleep that ended at its deadline: 0.1 s
    assert not deadlines._queue or all(w.done for w in deadlines._queue)


async def test_many_tasks_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    now = loop.time()
    tasks = [asyncio.ensure_future(_wait(deadlines, now + 0.2 + i / 1000, 0.001)) for i in range(100)]
    await asyncio.sleep(0)
    timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert sum(1 for h in timers if h._callback == deadlines._fire) == 1  # type: ignore[attr-defined]
    assert await asyncio.gather(*tasks) == ["done"] * 100


async def test_another_cancellation_is_not_the_deadline_s() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    task = asyncio.ensure_future(_wait(deadlines, loop.time() + 0.05, 1.0))
    await asyncio.sleep(0.01)
    task.cancel()  # the caller's own cancellation, before the deadline
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.finish(deadlines.watch(loop.time() + 1.0)) is False  # (not cancelled: not late)

"""The attempts' operations a LangChain handler's steps run: sync (run at once by ``now``) or async."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from .._guard import Attempt

__all__ = ["AsyncOperations", "Operations", "now"]

T = TypeVar("T")


class Operations:
    """The attempts' operations a handler's steps run (``reserve``, ``release``, ``commit``, ``fail``).
    The steps are written once, as coroutines: these sync operations never suspend them, so that ``now``
    runs them to their end at once; ``AsyncOperations`` awaits the guard's async store instead (a handler
    on an event loop)."""

    async def reserve(self, attempt: Attempt) -> None:
        attempt.reserve()

    async def release(self, attempt: Attempt) -> None:
        attempt.release()

    async def commit(self, attempt: Attempt, response: Any) -> None:
        attempt.commit(response)

    async def fail(self, attempt: Attempt, error: BaseException) -> None:
        attempt.fail(error)


class AsyncOperations(Operations):
    """The attempts' async operations (``areserve``...): steps that ``await`` them on the event loop."""

    async def reserve(self, attempt: Attempt) -> None:
        await attempt.areserve()

    async def release(self, attempt: Attempt) -> None:
        await attempt.arelease()

    async def commit(self, attempt: Attempt, response: Any) -> None:
        await attempt.acommit(response)

    async def fail(self, attempt: Attempt, error: BaseException) -> None:
        await attempt.afail(error)


def now(steps: Coroutine[Any, Any, T]) -> T:
    """Run a handler's steps with the sync ``Operations``: to their end, never suspended."""
    try:
        steps.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    steps.close()
    raise AssertionError("a handler's sync steps never suspend")

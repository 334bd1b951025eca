"""One call reserved, sent and settled by someone else's code: a framework that reports through callbacks.

``Guard.attempt(request)`` gives an ``Attempt``: the guard's call flow (``_flow``), run up to the call and
paused there; ``reserve``, ``commit`` and ``fail`` resume it (``areserve``... on an event loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._actions import Call, Flow, NotSent, Sleep
from ._core import GuardCore
from ._deferred import arun, owed, run
from ._drivers import no_call
from ._flow import Plan, call_flow
from ._ledger import Ledger

__all__ = ["Attempt", "Dropped", "NotSent", "RunDropped", "shared_sync_store"]


class Attempt:
    """One call reserved, sent and settled by someone else's code (see ``Guard.attempt``).

    The guard's flow runs up to the call, waits there, and resumes with the response or the error;
    ``reserve``/``commit``/``fail`` drive it with the sync driver, ``areserve``/``acommit``/``afail``
    with the async one.
    """

    def __init__(self, guard: GuardCore, plan: Plan) -> None:
        self.guard = guard
        self.scopes = plan.scopes
        """The scopes it reserves and charges (``global`` and one per kind)."""
        self._flow = call_flow(guard, plan)

    def reserve(self, store: Ledger | None = None) -> None:
        """Hold the estimate in every budget; raises ``BudgetExceededError`` when one refuses. (Each sync
        step runs on the guard's sync store, or on ``store``: a sync store on the same data.)"""
        run(self.guard, self._until_call(None, None), no_call, store)

    def commit(self, response: Any, store: Ledger | None = None) -> Any:
        """Charge the response's usage (the estimate, flagged, when it carries none). A stream is not
        read here: it is returned wrapped, to be settled as it ends or closes (see ``_streams``); any
        other response is returned unchanged."""
        return run(self.guard, self._until_call(response, None), no_call, store)

    def fail(self, error: BaseException, store: Ledger | None = None) -> None:
        """Release the hold (or charge the input, per ``charge_failed``) of a call that raised."""
        run(self.guard, self._until_call(None, _sent(error)), no_call, store)

    def release(self, store: Ledger | None = None) -> None:
        """Give the hold back: the call was never sent (a framework dropped the run)."""
        self.fail(NotSent("the attempt was released before its call was sent"), store)

    async def areserve(self) -> None:
        await arun(self.guard, self._until_call(None, None), no_call)

    async def arelease(self) -> None:
        await self.afail(NotSent("the attempt was released before its call was sent"))

    async def acommit(self, response: Any) -> Any:
        return await arun(self.guard, self._until_call(response, None), no_call)

    async def afail(self, error: BaseException) -> None:
        await arun(self.guard, self._until_call(None, _sent(error)), no_call)

    def _until_call(self, reply: Any, error: BaseException | None) -> Flow:
        """Resume the flow and pass its store actions to a driver until it reaches the call or ends
        (its value then: the response, or a stream wrapped to settle when it ends)."""
        flow = self._flow
        try:
            action = flow.throw(error) if error is not None else flow.send(reply)
            while not isinstance(action, Call | Sleep):
                try:
                    answer = yield action
                except BaseException as exc:
                    action = flow.throw(exc)
                else:
                    action = flow.send(answer)
        except StopIteration as done:
            return done.value
        except BaseException as exc:
            import tenacity  # (loaded already: the flow's policy made it; not at import)

            if error is not None and (exc is error or isinstance(exc, tenacity.RetryError)):
                return None  # the call's own error, re-raised by the flow once the books are right
            raise
        if isinstance(action, Sleep):
            flow.close()  # the flow would retry; the caller's framework does that with a new attempt
        return None


class StreamClosed(ConnectionAbortedError):
    """The caller closed the call's stream before it ended (its ``GeneratorExit``): the call was sent, and
    may have been billed (``charge_failed`` decides, as for a dropped connection)."""


class RunDropped(ConnectionAbortedError):
    """A framework dropped the call's run without ending it (its task was cancelled mid-call): the call
    was sent, and may have been billed (``charge_failed`` decides, as for a dropped connection)."""


class Dropped:
    """An attempt a framework dropped without ending it, found by a finalizer (the run's id died): failed
    with ``RunDropped`` at its guard's next operation, ``close()`` or exit. A finalizer does no ledger I/O
    (``_deferred``): it only queues this. ``take`` gives the attempt if it is still open then, and
    forgets it (``None``: it ended meanwhile, or was settled by its owner)."""

    done = False

    def __init__(self, guard: GuardCore, take: Callable[[], Attempt | None]) -> None:
        self.guard, self.take = guard, take

    def queue(self) -> None:
        """From a finalizer: two atomic appends, no lock, no I/O (as ``Settlement.queue``)."""
        self.guard._queued.append(self)
        owed.add(self.guard)

    def _flow(self) -> Flow | None:
        self.done = True
        attempt = self.take()
        if attempt is None:
            return None
        return attempt._until_call(None, RunDropped("the framework dropped the run before it ended"))

    def settle_sync(self, store: Ledger | None = None, *, retry: bool = False) -> None:
        flow = None if self.done else self._flow()
        if flow is not None:
            run(self.guard, flow, no_call, store)

    async def settle_async(self, *, retry: bool = False) -> None:
        flow = None if self.done else self._flow()
        if flow is not None:
            await arun(self.guard, flow, no_call)

    def lost(self, exc: Exception) -> None:
        """(Settled once, never retried: a store failure was reported by the flow.)"""


def shared_sync_store(guard: GuardCore) -> Ledger | None:
    """A sync store on the guard's async store's data that opens nothing (``None``: none): the guard's
    sync store if open, a local URL's store (memory, SQLite: both sides share it), the sync store an
    async local or PostgreSQL store runs in its worker threads (``AsyncLocalLedger.sync``). A Redis
    store's async client has none: a sync one is a pool of its own."""
    if guard._sync is not None:
        return guard._sync
    store = guard.async_ledger
    if isinstance(store, Ledger):
        return store
    shared = getattr(store, "sync", None)
    return shared if isinstance(shared, Ledger) else None


def _sent(error: BaseException) -> BaseException:
    """``error`` as the flow reads a sent call's failure: a caller's ``GeneratorExit`` (a framework that
    reports the stream its caller left as the run's error) would read as a flow abandoned before its call
    (hold left to its lease, never charged: a review found it so)."""
    if isinstance(error, GeneratorExit):
        closed = StreamClosed("the caller closed the call's stream before it ended")
        closed.__cause__ = error
        return closed
    return error

"""The drivers: run a flow's actions, synchronously or on an event loop, with the same results.

A flow (``_actions``) yields what it needs; ``run_sync`` performs it in this thread, ``run_async`` awaits
it. Both resume the flow with the reply or throw the error into it, so the flow alone decides what an
error means. One difference is forced by asyncio: a task can be cancelled while a store write is on the
wire, so ``run_async`` shields writes (``_uncut``) and undoes what a cancelled reserve admitted.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from ._actions import Action, Call, Count, Flow, Late, Reserve, Resolve, Sleep
from ._core import GuardCore
from ._errors import LedgerError
from ._events import Event, EventKind, emit, wanted
from ._ledger import AsyncLedger, Ledger, Reservation
from ._ledger._local import AsyncLocalLedger
from ._ledger._meta import expand

if TYPE_CHECKING:
    import asyncio

__all__ = ["no_call", "perform_async", "run_async", "run_sync", "settling"]

T = TypeVar("T")

Write = Reserve | Resolve | Late
"""A store write: a cancellation must not cut it short (``_uncut``)."""

settling: set[asyncio.Task[None]] = set()
"""Tasks settling a cancelled call's store write (``_uncut``): the loop keeps only weak references."""


def no_call(model: str | None) -> Any:
    raise AssertionError("a settlement makes no call")


def run_sync(
    core: GuardCore, flow: Flow, call: Callable[[str | None], Any], store: Ledger | None = None
) -> Any:
    """Run ``flow`` to its end in this thread: its store actions on ``store`` if given (a settlement's,
    see ``_deferred.drain``), else on the guard's sync store. (Every guarded call runs this loop: it
    performs the actions inline, where the async driver calls ``perform_async``.)"""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            action = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            if type(action) is Call:
                reply = call(action.model)
            elif type(action) is Sleep:
                time.sleep(action.seconds)
            elif type(action) is Count:
                reply = core.estimator.count_tokens(action.request)
            else:
                reply = action.send(action.job or store or core._sync or core.ledger, core.lease)
        except BaseException as exc:  # (the flow decides what it means: thrown into it)
            error = exc


async def run_async(core: GuardCore, flow: Flow, call: Callable[[str | None], Any]) -> Any:
    """Run ``flow`` to its end on the running event loop."""
    action, value = _resume(flow, None, None)
    while action is not None:
        reply, error = await _aoutcome(core, action, call)
        if type(error) is _Cut:
            await _settle_later(core, flow, error.write)  # (raises CancelledError)
        action, value = _resume(flow, reply, error)
    return value


class _Cut(BaseException):
    """A settlement's store write (a commit, release or late charge) that a cancellation cut short: the
    caller is gone, but the settlement is not done until its flow is (the events, the thresholds it
    crossed, a late charge); ``run_async`` finishes it in the background."""

    def __init__(self, write: asyncio.Future[Any]) -> None:
        super().__init__()
        self.write = write


async def _settle_later(core: GuardCore, flow: Flow, write: asyncio.Future[Any]) -> None:
    """Finish ``flow``'s settlement in a task of ``settling`` (waited for, shielded), then be cancelled."""
    import asyncio

    task = asyncio.ensure_future(_finish(core, flow, write))
    settling.add(task)
    task.add_done_callback(settling.discard)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)
    raise asyncio.CancelledError


async def _finish(core: GuardCore, flow: Flow, write: asyncio.Future[Any]) -> None:
    """Resume ``flow`` with ``write``'s outcome and perform its store actions until it ends, or until it
    would call or sleep (a retry: a cancelled caller makes no more calls; the flow is closed there).
    Whatever it ends with is its cancelled caller's, who is gone; the flow has told it in events. It is
    not cancelled itself (``asyncio.run`` cancels what is left at its end, then waits for it): a
    settlement, once the call was made, is carried to its end."""
    try:
        reply, error = await _unstoppable(write), None
    except BaseException as exc:
        reply, error = None, exc
    try:
        action, _ = _resume(flow, reply, error)
        while action is not None and not isinstance(action, Call | Sleep | Count):
            action, _ = _resume(flow, *await _unstoppable(_aoutcome(core, action, no_call)))
    except BaseException:
        return
    if action is not None:
        flow.close()


async def _unstoppable(work: Awaitable[T]) -> T:
    """``work``'s result; a cancellation of the awaiting task is noted and ignored until it is done."""
    import asyncio

    future = asyncio.ensure_future(work)
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                return future.result()


def _resume(flow: Flow, reply: Any, error: BaseException | None) -> tuple[Action | None, Any]:
    """The flow's next action (and ``None``), or ``None`` and its value once it has ended."""
    try:
        return (flow.throw(error) if error is not None else flow.send(reply)), None
    except StopIteration as done:
        return None, done.value


async def _aoutcome(
    core: GuardCore, action: Action, call: Callable[[str | None], Any]
) -> tuple[Any, BaseException | None]:
    try:
        return await perform_async(core, action, call), None
    except BaseException as exc:
        return None, exc


async def perform_async(core: GuardCore, action: Action, call: Callable[[str | None], Any]) -> Any:
    if type(action) is Call:
        return await call(action.model)
    if type(action) is Sleep:
        import asyncio  # (here, not at import: loaded already, since this runs on its loop)

        await asyncio.sleep(action.seconds)
        return None
    if type(action) is Count:
        return await core.estimator.acount_tokens(action.request)
    job = action.job
    if job is not None:
        return action.send(job, core.lease)  # in memory, no I/O
    store = core.async_ledger
    import asyncio

    if isinstance(store, AsyncLedger):
        if isinstance(store, AsyncLocalLedger) and not store.in_thread:
            return await action.send(store, core.lease)  # runs inline: a cancellation cannot cut it
        sent = action.send(store, core.lease)
    else:
        run = contextvars.copy_context().run  # a local store: off the loop, as asyncio.to_thread
        sent = asyncio.get_running_loop().run_in_executor(None, run, action.send, store, core.lease)
    if not isinstance(action, Write):  # a read: nothing to undo if cut short
        return await sent
    return await _uncut(core, asyncio.ensure_future(sent), action)


async def _uncut(core: GuardCore, write: asyncio.Future[Any], action: Write) -> Any:
    """Await a store write that a cancellation (``asyncio.wait_for``, a client gone) must not cut
    short: its command may already be in the store (a reply on the wire, a local store's thread
    running). The write runs on, shielded. A settlement's write raises ``_Cut``: ``run_async``
    finishes the settlement's flow. For a reserve, a cancelled caller waits for it, releases what it
    admitted (rather than leave it held until its lease ends), then is cancelled. Cancelled again
    meanwhile, it leaves that to a task in ``settling``."""
    import asyncio

    try:
        return await asyncio.shield(write)
    except asyncio.CancelledError:
        if not isinstance(action, Reserve):
            raise _Cut(write) from None
        undo = asyncio.ensure_future(_undo(core, write, action))
        settling.add(undo)
        undo.add_done_callback(settling.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(undo)
        raise


async def _undo(core: GuardCore, write: asyncio.Future[Any], action: Reserve) -> None:
    """After a cancellation: wait for ``write``, release the hold the reserve made, and say what
    happened (the cancelled flow cannot)."""
    try:
        done = await write
    except LedgerError as exc:
        reason = f"the reserve of a cancelled call failed ({exc}); a hold it left ends with its lease"
        _tell(core, action, None, "store_unavailable", reason=reason)
        return
    except Exception:  # refused, or bad input: nothing held
        return
    try:
        await perform_async(core, Resolve(done, None, {"error": "CancelledError"}), no_call)
    except Exception as exc:
        reason = f"could not release the hold of a cancelled call ({exc}); it ends with its lease"
        _tell(core, action, done, "store_unavailable", reason=reason)
        return
    _tell(core, action, done, "released", reason="CancelledError", data={"error": "CancelledError"})


def _tell(
    core: GuardCore,
    action: Reserve,
    reservation: Reservation | None,
    kind: EventKind,
    **fields: Any,
) -> None:
    """An event about a cancelled call's reserve, from what the action carries."""
    if not wanted(kind, core.hooks):
        return
    held = tuple(dict.fromkeys(h.counter.label for h in action.holds))
    meta = expand(dict(action.meta), held, {})  # (the compact form: _ledger._meta)
    labels = tuple(meta.get("scopes", ()))
    estimated = meta.get("estimated_usd")
    emit(
        Event(
            kind, model=meta.get("model"), scopes=labels,
            reservation_id=None if reservation is None else reservation.id, attempt=meta.get("attempt"),
            estimated=None if estimated is None else Decimal(estimated), **fields,
        ),
        core.hooks,
    )  # fmt: skip

"""Deferred settlements: a stream's reservation settled once, from what it reported, never by a finalizer.

A stream nobody closed is settled from its finalizer, which does no ledger I/O: a garbage collection
runs wherever an allocation triggers it, inside a store's lock or a SQLite transaction of the same
thread, and on an event loop that may be shutting down. ``Settlement.queue`` only hands the settlement
to its guard (``GuardCore._queued``, a deque: appending to it takes no lock); the guard settles what is
queued (``drain``, ``adrain``) when it starts its next operation (``run``, ``arun``), on ``close()`` and
``aclose()``, when a job ends, and at interpreter exit (``drain_at_exit``).
"""

from __future__ import annotations

import atexit
import contextvars
import gc
from collections.abc import Callable
from typing import Any

from ._actions import Flow
from ._budgets import Unit
from ._core import GuardCore
from ._drivers import no_call, run_async, run_sync
from ._errors import LedgerError
from ._fallbacks import dearest_hop
from ._ledger import Ledger, Reservation
from ._providers import StreamFolder
from ._settle import Ctx, input_only, received, served_flags
from ._usage import Usage

__all__ = ["DRAIN_BATCH", "Settlement", "adrain", "arun", "drain", "owed", "run"]

unsettled: set[Settlement] = set()
"""Settlements of the streams not settled yet: at exit, those still referenced are settled too (nobody
will read them any more), before the interpreter's teardown finalizes them too late."""

owed: set[GuardCore] = set()
"""Guards with settlements queued by finalizers, held here until drained: a guard that is garbage itself
(only its dropped streams referred to it) is still settled, at the latest at exit."""

_draining: contextvars.ContextVar[bool] = contextvars.ContextVar("budgetguard_draining", default=False)
"""Set while this thread (or task) drains: settling runs the drivers, which would drain again."""


def run(core: GuardCore, flow: Flow, call: Callable[[str | None], Any], store: Ledger | None = None) -> Any:
    """Settle what finalizers queued (a batch, ``DRAIN_BATCH``), then run ``flow`` with the sync driver:
    how every operation of a guard starts (a call, a job's start and end, an ``Attempt`` step)."""
    if core._queued:  # (checked here too: this is every call's path)
        drain(core, DRAIN_BATCH)
    return run_sync(core, flow, call, store)


async def arun(core: GuardCore, flow: Flow, call: Callable[[str | None], Any]) -> Any:
    """``run`` with the async driver."""
    if core._queued:
        await adrain(core, DRAIN_BATCH)
    return await run_async(core, flow, call)


DRAIN_BATCH = 64
"""At most this many queued settlements are settled by the start of one operation (the rest by the next
ones, ``close()`` and exit settle all): a backlog, or a store that is down, does not hold up one call."""


def drain(guard: GuardCore, limit: int | None = None, *, final: bool = False) -> None:
    """Settle, with the sync driver, what finalizers queued for ``guard`` (at most ``limit``). Called where
    no store operation of this thread is under way (a driver's start, ``close``, a job's end, exit); never
    recursively. A settlement the store fails goes back to the front of the queue and the drain stops (the
    store is down: the next operation, ``close()`` or exit retries it), except on the ``final`` one (exit),
    which reports it lost (``spend_lost``)."""
    if not guard._queued or _draining.get():
        return  # (the drain that runs this settlement takes what was queued meanwhile)
    token = _draining.set(True)
    queued = guard._queued
    owed.discard(guard)  # before taking: a finalizer that queues after this puts the guard back
    store, twin = guard._async, None
    if guard._sync is None and guard._url is None and store is not None:  # an async store only:
        try:  # settle through a sync store on the same data (this drain's own: drains may run at once)
            twin = store.sync_twin()
        except Exception:
            twin = None  # none: the settlement reports spend_lost
    try:
        taken = 0
        while queued and (limit is None or taken < limit):
            try:
                settle = queued.popleft()
            except IndexError:  # another thread took the last one
                break
            taken += 1
            try:
                settle.settle_sync(twin, retry=not final)
            except Exception as exc:
                if not settle.done:  # the store failed it: retried later
                    queued.appendleft(settle)
                    break
                settle.lost(exc)
    finally:
        _draining.reset(token)
        if twin is not None and twin is not getattr(store, "sync", None):  # (a local store's own: shared)
            twin.close()
        if queued:  # what is left (a limit, a store down, a KeyboardInterrupt) waits for the next drain
            owed.add(guard)


async def adrain(guard: GuardCore, limit: int | None = None) -> None:
    """``drain`` with the async driver (on the running loop, which is alive: it runs this)."""
    if not guard._queued or _draining.get():
        return
    token = _draining.set(True)
    queued = guard._queued
    owed.discard(guard)
    try:
        taken = 0
        while queued and (limit is None or taken < limit):
            try:
                settle = queued.popleft()
            except IndexError:
                break
            taken += 1
            try:
                await settle.settle_async(retry=True)
            except Exception as exc:
                if not settle.done:
                    queued.appendleft(settle)
                    break
                settle.lost(exc)
    finally:
        _draining.reset(token)
        if queued:
            owed.add(guard)


after_exit: list[Callable[[], None]] = []
"""Run at exit after the settlements below (the alert sinks flush what those told)."""


@atexit.register
def drain_at_exit() -> None:
    """At interpreter exit: collect the streams left in reference cycles (they queue themselves), queue
    the streams still referenced (a module's global, say: the teardown would finalize them after this
    handler), then settle every guard's queue with the sync driver (no event loop runs any more), and
    run ``after_exit``."""
    if unsettled:  # (every unsettled stream's settlement is in it: none, nothing to collect for)
        gc.collect()
    for settle in list(unsettled):
        settle.queue()
    for guard in list(owed):
        drain(guard, final=True)
    for then in after_exit:
        then()


class Settlement:
    """Commits a stream's reservation exactly once, from its usage or from what was received."""

    def __init__(self, ctx: Ctx, reservation: Reservation | None, *, background: bool = False) -> None:
        self.ctx = ctx
        self.reservation = reservation
        self.folder = StreamFolder()
        self.folder.background = background
        self.done = False
        self.ended = False  # the stream ran to its end (as opposed to closed early or dropped)
        self.billed: tuple[Usage, dict[str, Any]] | None = None
        """What the flow charges (usage, journal flags), once it computed it."""
        unsettled.add(self)

    def usage(self) -> tuple[Usage, dict[str, Any]]:
        folder, est, guard = self.folder, self.ctx.est, self.ctx.guard
        served = served_flags(folder.tier, est, folder.model, guard.prices)
        if folder.complete and folder.usage is not None:
            return folder.usage, served
        # No final usage: bill what is known (``received``), and each server-side tool call it showed.
        model = folder.model or est.model
        factor, text = guard.estimator._factor(model), "".join(folder.text)
        usage, flags = received(
            est,
            folder.usage,
            text,
            model,
            thinking=folder.thinking,
            factor=factor,
            background=folder.background,
        )
        flags.update(served)
        if folder.background:  # (it runs on server-side to its end, billed whole)
            if not self.ended:
                flags["interrupted"] = True
            self.ctx.emit("usage_missing", reason="a background response runs on: charged its worst case")
            return usage, flags
        usage = folder.with_tool_calls(usage)
        if est.fallbacks:  # which hop of a server-side fallback chain streamed is unknown: the dearest
            flags.pop("priced_as", None)
            hop = dearest_hop(usage, est, est.fallbacks)
            if hop.model != est.model:
                flags["priced_as"] = hop.model
        if not self.ended:
            flags["interrupted"] = True
        self.ctx.emit(
            "usage_missing", reason="stream ended without usage" if self.ended else "stream interrupted"
        )
        return usage, flags

    sent = True
    """False for a stream manager that was never entered: its request never went out."""

    failed: tuple[str, bool] | None = None
    """A stream manager's error on entering (the request may have gone out: a read timeout): its name, and
    whether the guard's ``charge_failed`` charges the input, as for any failed attempt."""

    tries = 0
    """How many times this settlement ran (a drain retries one the store failed: see ``drain``)."""

    def fail(self, exc: BaseException) -> None:
        self.failed = type(exc).__name__, self.ctx.guard.charge_failed(exc)

    def flow(self, retry: bool) -> Flow:
        recorded, self.tries = self.tries > 0, self.tries + 1
        if self.failed is not None:  # as a failed attempt: the input charged if it may have been billed
            error, charge = self.failed
            usage, flags = input_only(self.ctx.est) if charge else None, {"error": error}
        elif not self.sent:
            usage, flags = None, {"error": "never sent"}
        else:
            if self.billed is None:  # (once: a retry charges the same, without a second usage_missing)
                self.billed = self.usage()
            usage, flags = self.billed
        yield from self.ctx.settle(self.reservation, usage, flags, retry=retry, recorded=recorded)

    def settle_sync(self, store: Ledger | None = None, *, retry: bool = False) -> None:
        """Settle with the sync driver (on ``store`` if given, else the guard's). With ``retry`` (a drain's),
        a store failure leaves it unsettled and raises, for a later drain to retry."""
        if not self.done:
            self.done = True
            unsettled.discard(self)
            try:
                run(self.ctx.guard, self.flow(retry), no_call, store)
            except LedgerError:
                self.done = not retry
                raise

    async def settle_async(self, *, retry: bool = False) -> None:
        if not self.done:
            self.done = True
            unsettled.discard(self)
            try:
                await arun(self.ctx.guard, self.flow(retry), no_call)
            except LedgerError:
                self.done = not retry
                raise

    def queue(self) -> None:
        """From ``__del__``: hand the settlement to the guard if nobody settled it. No ledger I/O, no
        lock, no event: two atomic appends (see the module docstring)."""
        if not self.done:
            guard = self.ctx.guard
            guard._queued.append(self)
            owed.add(guard)

    def lost(self, exc: Exception) -> None:
        """A queued settlement failed for good: say so with what it would have charged. (A store failure
        on the last try was reported by ``Ctx.settle`` already: ``store_unavailable`` and ``spend_lost``.)"""
        if isinstance(exc, LedgerError):
            return
        cost = None
        if self.billed is not None:
            usage, flags = self.billed
            est = self.ctx.est
            variant = flags.get("variant", est.variant)
            try:
                cost = self.ctx.guard.actual(est.model, usage, est, variant)[Unit.USD]
            except Exception:  # an unpriceable variant: the event says so without an amount
                cost = None
        self.ctx.emit("spend_lost", actual=cost, reason=f"a dropped stream could not be settled: {exc!r}")

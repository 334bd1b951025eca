"""Provider streams under the guard: each commits its reservation exactly once, from its usage or
from what was received (an interrupted or abandoned stream is charged what it streamed, flagged).

A stream nobody closed is settled from its finalizer, which does no ledger I/O: a garbage collection
runs wherever an allocation triggers it, inside a store's lock or a SQLite transaction of the same
thread, and on an event loop that may be shutting down. ``Settlement.queue`` only hands the settlement
to its guard (``Guard._queued``, a deque: appending to it takes no lock); the guard settles what is
queued (``drain``, ``adrain``) when its drivers start their next operation, on ``close()`` and
``aclose()``, when a job ends, and at interpreter exit (``drain_at_exit``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import dataclasses
import gc
import inspect
import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ._budgets import Unit
from ._errors import LedgerError, PricingError
from ._estimate import Estimate
from ._ledger import Ledger, Reservation
from ._pricing import PriceBook
from ._providers import (
    _THINKING,
    StreamFolder,
    api_of,
    is_stream_manager,
    may_reason,
    response_variant,
    served_model,
    served_tier,
)
from ._tokens import count_text_tokens
from ._usage import Usage

if TYPE_CHECKING:
    from ._guard import Flow, Guard, _Ctx

__all__ = [
    "DRAIN_BATCH", "GuardedAsyncResponseStream", "GuardedAsyncStream", "GuardedResponseStream",
    "GuardedStream", "GuardedStreamManager", "Settlement", "adrain", "drain", "input_only", "no_call", "owed",
    "served_flags", "settling", "wrap_stream",
]  # fmt: skip


def served_flags(
    tier: str | None, est: Estimate, model: str | None = None, prices: PriceBook | None = None
) -> dict[str, Any]:
    """Journal flags when the response reports another price variant or another model than the ones
    reserved: ``variant`` / ``served_tier``, ``served_model``, and ``priced_as`` (the model charged)
    when the answering model's price differs (not when the asked model has a configured price: that
    price stands). When the price data has no price for what was served, the reserved price is
    charged and ``unpriced`` says why."""
    variant = response_variant(tier, est.variant)
    flags: dict[str, Any] = {}
    if variant != est.variant:
        flags = {"variant": None if variant is None else dict(variant), "served_tier": tier}
    charged = None
    if model and model != est.model:
        flags["served_model"] = model
        if est.price.source not in ("override", "default"):
            charged = model
    if prices is not None and (charged is not None or "variant" in flags):
        try:
            price = prices.get(charged or est.model, provider=est.provider, variant=variant)
        except PricingError as exc:
            flags.pop("variant", None)
            flags["unpriced"] = str(exc)
            charged = None
        else:
            if variant == est.variant and (price.base, price.tiers) == (est.price.base, est.price.tiers):
                charged = None  # an alias of the model asked (gpt-4o, gpt-4o-2024-08-06): the same price
    if charged is not None:
        flags["priced_as"] = charged
    return flags


def input_only(est: Estimate) -> Usage:
    usage = est.usage
    return Usage(
        input_tokens=usage.input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
    )


def wrap_stream(stream: Any, settle: Settlement) -> Any:
    if is_stream_manager(stream):
        return GuardedStreamManager(stream, settle)
    if hasattr(stream, "__anext__"):
        return GuardedAsyncStream(stream, settle)
    return GuardedStream(stream, settle)


settling: set[asyncio.Task[None]] = set()
"""Tasks settling a cancelled call's store write (``Guard._uncut``): the loop keeps only weak references."""

unsettled: set[Settlement] = set()
"""Settlements of the streams not settled yet: at exit, those still referenced are settled too (nobody
will read them any more), before the interpreter's teardown finalizes them too late."""

owed: set[Guard] = set()
"""Guards with settlements queued by finalizers, held here until drained: a guard that is garbage itself
(only its dropped streams referred to it) is still settled, at the latest at exit."""

_draining: contextvars.ContextVar[bool] = contextvars.ContextVar("budgetguard_draining", default=False)
"""Set while this thread (or task) drains: settling runs the drivers, which would drain again."""


DRAIN_BATCH = 64
"""At most this many queued settlements are settled by the start of one operation (the rest by the next
ones, ``close()`` and exit settle all): a backlog, or a store that is down, does not hold up one call."""


def drain(guard: Guard, limit: int | None = None, *, final: bool = False) -> None:
    """Settle, with the sync driver, what finalizers queued for ``guard`` (at most ``limit``). Called where
    no store operation of this thread is under way (a driver's start, ``close``, a job's end, exit); never
    recursively. A settlement the store fails goes back to the front of the queue and the drain stops (the
    store is down: the next operation, ``close()`` or exit retries it), except on the ``final`` one (exit),
    which reports it lost (``spend_lost``)."""
    if _draining.get():
        return  # the drain that runs this settlement takes what was queued meanwhile
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


async def adrain(guard: Guard, limit: int | None = None) -> None:
    """``drain`` with the async driver (on the running loop, which is alive: it runs this)."""
    if _draining.get():
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


@atexit.register
def drain_at_exit() -> None:
    """At interpreter exit: collect the streams left in reference cycles (they queue themselves), queue
    the streams still referenced (a module's global, say: the teardown would finalize them after this
    handler), then settle every guard's queue with the sync driver (no event loop runs any more)."""
    gc.collect()
    for settle in list(unsettled):
        settle.queue()
    for guard in list(owed):
        drain(guard, final=True)


class Settlement:
    """Commits a stream's reservation exactly once, from its usage or from what was received."""

    def __init__(self, ctx: _Ctx, reservation: Reservation | None) -> None:
        self.ctx = ctx
        self.reservation = reservation
        self.folder = StreamFolder()
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
        # No final usage: bill what is known. Input: the provider's count if it sent one (Anthropic's
        # message_start), else the estimate. Output: the larger of a partial count and the streamed
        # text (thinking included) counted with tiktoken, times the Claude safety factor for Claude
        # (its tokenizer is not public). A model that reasons without streaming its reasoning (o-series,
        # gpt-5, ...; Claude 4 streams a summary of the thinking it bills) may have consumed up to its
        # whole output bound: that worst case, flagged.
        model = folder.model or est.model
        streamed = count_text_tokens("".join(folder.text), est.model) if folder.text else 0
        if streamed and api_of(None, model) == "anthropic":  # (never past max_tokens: it caps the bill)
            streamed = min(
                math.ceil(streamed * guard.estimator._factor(model)), max(est.output_tokens, streamed)
            )
        base = folder.usage if folder.usage is not None else input_only(est)
        output = max(base.output_tokens, streamed)
        flags = {"usage_missing": True, **served}
        if folder.thinking if api_of(None, model) == "anthropic" else may_reason(model):
            output = max(output, est.output_tokens)
            flags["reasoning_worst_case"] = True
        usage = dataclasses.replace(base, output_tokens=output, reasoning_tokens=0)
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
                self.ctx.guard._run_sync(self.flow(retry), no_call, store)
            except LedgerError:
                self.done = not retry
                raise

    async def settle_async(self, *, retry: bool = False) -> None:
        if not self.done:
            self.done = True
            unsettled.discard(self)
            try:
                await self.ctx.guard._run_async(self.flow(retry), no_call)
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
        on the last try was reported by ``_Ctx.settle`` already: ``store_unavailable`` and ``spend_lost``.)"""
        if isinstance(exc, LedgerError):
            return
        cost = None
        if self.billed is not None:
            usage, flags = self.billed
            est = self.ctx.est
            variant = flags.get("variant", est.variant)
            try:
                cost = self.ctx.guard._actual(est.model, usage, est, variant)[Unit.USD]
            except Exception:  # an unpriceable variant: the event says so without an amount
                cost = None
        self.ctx.emit("spend_lost", actual=cost, reason=f"a dropped stream could not be settled: {exc!r}")


def _block_text(block: Any) -> str:
    """What a content block of an Anthropic message snapshot streamed: text, thinking or tool input."""
    for name in ("text", "thinking"):
        value = getattr(block, name, None)
        if isinstance(value, str):
            return value
    value = getattr(block, "input", None)
    return json.dumps(value) if isinstance(value, dict) and value else ""


def no_call(model: str | None) -> Any:
    raise AssertionError("a settlement makes no call")


class GuardedStream(Iterator[Any]):
    """A provider stream that commits its reservation once: at the end, on close, or when collected."""

    def __init__(self, stream: Any, settle: Settlement) -> None:
        self._stream = stream
        self._settle = settle
        self._iter = iter(stream)

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._iter)
        except StopIteration:
            self._settle.ended = True
            self._settle.settle_sync()
            raise
        self._settle.folder.feed(item)
        return item

    def close(self) -> None:
        try:
            closer = getattr(self._stream, "close", None)
            if closer is not None:
                closer()
        finally:
            self._settle.settle_sync()

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._settle.queue()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class GuardedAsyncStream(AsyncIterator[Any]):
    """The async twin of ``GuardedStream``."""

    def __init__(self, stream: Any, settle: Settlement) -> None:
        self._stream = stream
        self._settle = settle
        self._iter = stream.__aiter__()

    def __aiter__(self) -> GuardedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._iter.__anext__()
        except StopAsyncIteration:
            self._settle.ended = True
            await self._settle.settle_async()
            raise
        self._settle.folder.feed(item)
        return item

    async def aclose(self) -> None:
        try:
            closer = getattr(self._stream, "close", None)
            if closer is not None:
                result = closer()
                if inspect.isawaitable(result):
                    await result
        finally:
            await self._settle.settle_async()

    async def __aenter__(self) -> GuardedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._settle.queue()  # not a task: the loop may be shutting down, and cancel it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class GuardedResponseStream(GuardedStream):
    """OpenAI's ``ResponseStream`` (from ``client.responses.stream(...)``) or ``ChatCompletionStream``
    (from ``client.chat.completions.stream(...)``), its events read on the way."""

    def until_done(self) -> GuardedResponseStream:
        for _ in self:
            pass
        return self

    def get_final_response(self) -> Any:
        self.until_done()
        return self._stream.get_final_response()

    def get_final_completion(self) -> Any:
        """``client.chat.completions.stream(...)``'s: read to the end through the guard first."""
        self.until_done()
        return self._stream.get_final_completion()


class GuardedAsyncResponseStream(GuardedAsyncStream):
    """The async twin of ``GuardedResponseStream``."""

    async def until_done(self) -> GuardedAsyncResponseStream:
        async for _ in self:
            pass
        return self

    async def get_final_response(self) -> Any:
        await self.until_done()
        return await self._stream.get_final_response()

    async def get_final_completion(self) -> Any:
        await self.until_done()
        return await self._stream.get_final_completion()


class GuardedStreamManager:
    """A stream manager: Anthropic's ``client.messages.stream(...)`` (entering yields the SDK's
    ``MessageStream``, its helpers work as usual; leaving settles from the accumulated message) or
    OpenAI's ``client.responses.stream(...)`` / ``client.chat.completions.stream(...)`` (entering
    yields the SDK's stream wrapped so its events feed the settlement; ``response.completed`` or the
    final usage chunk carries the usage)."""

    def __init__(self, manager: Any, settle: Settlement) -> None:
        self._manager = manager
        self._settle = settle
        self._stream: Any = None
        settle.sent = False  # the SDKs send the request on entering

    def _observe(self) -> None:
        snapshot = getattr(self._stream, "current_message_snapshot", None) if self._stream else None
        folder = self._settle.folder
        if snapshot is None:
            return
        folder.usage = Usage.from_response(snapshot)
        folder.complete = getattr(snapshot, "stop_reason", None) is not None
        blocks = getattr(snapshot, "content", ())
        folder.text = [_block_text(block) for block in blocks]
        folder.thinking = any(getattr(block, "type", None) in _THINKING for block in blocks)
        folder.tier = served_tier(snapshot) or folder.tier
        folder.model = served_model(snapshot) or folder.model

    def __enter__(self) -> Any:
        try:
            self._stream = self._manager.__enter__()
        except BaseException as exc:  # the request may have gone out (a read timeout): a failed attempt
            self._settle.fail(exc)
            self._settle.settle_sync()
            raise
        self._settle.sent = True
        if hasattr(type(self._stream), "current_message_snapshot"):  # Anthropic: read at exit
            return self._stream
        return GuardedResponseStream(self._stream, self._settle)

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._manager.__exit__(*exc)
        finally:
            self._observe()
            self._settle.ended = self._settle.folder.complete
            self._settle.settle_sync()

    async def __aenter__(self) -> Any:
        try:
            self._stream = await self._manager.__aenter__()
        except BaseException as exc:
            self._settle.fail(exc)
            await self._settle.settle_async()
            raise
        self._settle.sent = True
        if hasattr(type(self._stream), "current_message_snapshot"):  # Anthropic: read at exit
            return self._stream
        return GuardedAsyncResponseStream(self._stream, self._settle)

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc)
        finally:
            self._observe()
            self._settle.ended = self._settle.folder.complete
            await self._settle.settle_async()

    def __del__(self) -> None:
        self._settle.queue()

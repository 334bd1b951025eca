"""LangChain: budgets on any chat model or LLM, through callbacks (extra ``langchain``).

``BudgetCallbackHandler`` reserves each model run's worst case in ``on_chat_model_start`` /
``on_llm_start`` (the messages converted to an OpenAI- or Anthropic-shaped request and estimated like
any SDK call), commits the usage of ``on_llm_end`` (``usage_from_message``: the provider's own usage
where the message carries it, else ``usage_metadata``, with a Responses API answer's built-in tool calls;
else ``llm_output`` token usage) and releases the hold in ``on_llm_error``, and of a run LangChain's LLM
cache answered (``from_cache``: nothing was sent). Every run is one attempt, so
``with_retry`` and ``with_fallbacks`` are counted per attempt, and a refusal raised from
``on_chat_model_start`` stops the call (the handler sets ``raise_error``): ``model.with_fallbacks([cheaper])``
then routes to the cheaper model, and LangChain's "Error in BudgetCallbackHandler..." warning is not
logged for it (the refusal is no failure).

A batch (``generate([p1, p2])``, a completion model's ``batch``) starts all its runs before it sends any;
when one start is refused or fails, LangChain sends none and ends none, so the handler releases the holds
of the runs started with it (never charged). A start that another handler fails is not reported to this
one: the holds taken for it and its batch wait for their lease (the guard's ``lease``, 120 s by default).
An async run cancelled mid-call (``ainvoke``, ``abatch``) is never ended by LangChain: the run's id dies
with it, and its finalizer queues the attempt's failure (``_dropped``), settled at the guard's next
operation, ``close()`` or exit as a dropped connection (its input charged, per ``charge_failed``).

``get_budget_callback()`` is a drop-in for ``get_openai_callback()``: every LangChain run inside is
guarded and charged to the ledger, and the totals (tokens, exact ``Decimal`` cost, calls, per model)
come from ``budgetguard.track()``.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import weakref
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Any, Generic, TypeVar, overload
from uuid import UUID

from .._attempt import Dropped
from .._binding import in_background
from .._budgets import Scope
from .._cache import Bounded
from .._context import ModelTotals, Tracker, track
from .._default import default_guard
from .._errors import ConfigurationError
from .._estimate import Estimate
from .._guard import Attempt, Guard
from .._scopes import ScopeSpec
from . import missing_extra
from ._refusal import quiet_refusals

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult
    from langchain_core.tracers.context import register_configure_hook
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("langchain", exc) from exc

from ._langchain_claims import claim, forget, holds
from ._langchain_operations import Operations, now
from ._langchain_requests import request_from_run, request_shape
from ._langchain_usage import from_cache, partial_usage, read_usage, usage_from_message, usage_from_result

__all__ = [
    "BudgetCallbackHandler",
    "BudgetTotals",
    "get_budget_callback",
    "request_from_run",
    "usage_from_message",
    "usage_from_result",
]

T = TypeVar("T")

_CALLBACKS_LOGGER = "langchain_core.callbacks.manager"
"""Logs "Error in BudgetCallbackHandler.on_chat_model_start" for a refusal before raising it, even when
``with_fallbacks`` handles it: the handler keeps refusals out of it (``_refusal.quiet_refusals``)."""

metered_by: ContextVar[BudgetCallbackHandler | None] = ContextVar(
    "budgetguard_langchain_metered_by", default=None
)
"""The handler of the agent middleware (``langchain_agents.BudgetMiddleware``) metering the model call
under way, the innermost: every other handler of its guard leaves the runs started inside to it (two
would charge them twice)."""


_Chunk = ChatGenerationChunk | GenerationChunk
"""A chunk a run streamed (``on_llm_new_token``)."""

_SMALLEST: Any = object()
"""``_pop``'s mark for an end, which names its run by id alone: the start open with the id that holds
least (``_pop``)."""


class BudgetCallbackHandler(BaseCallbackHandler):
    """Enforce (or, with ``enforce=False``, meter) the guard's budgets on every LangChain model run.

    Scopes are specs as in ``Guard.with_budget``, resolved over the run's ``metadata``
    (``config={"metadata": {"user_id": "alice"}}`` with ``user="{user_id}"``) and ``budget_context()``.
    Pass it as ``config={"callbacks": [handler]}`` or ``ChatX(callbacks=[handler])``.
    """

    raise_error = True  # an exception from a callback (a refusal) stops the model call

    def __init__(self, guard: Guard | None = None, *, enforce: bool = True, **scopes: ScopeSpec) -> None:
        for kind in scopes:
            Scope("global") if kind == "global" else Scope(kind, "x")  # a bad kind fails here, not per call
        self._guard = guard
        self.enforce = enforce
        self.scopes = scopes
        self._attempts: dict[Hashable, list[_Open]] = {}
        """The open starts, by their run's key (``run_key``), in start order: two runs in flight may share a
        caller's ``run_id`` (LangChain passes it to each), and each start is held and settled on its own."""
        self._batches: Bounded[tuple[int, int], _Batch]
        self._batches = Bounded("langchain.batches", _BATCHES_KEPT, shared=False)
        """Batches some of whose runs have started, by ``_join``'s key; full, it forgets the oldest (a batch
        whose later runs never started)."""
        self._lock = threading.Lock()
        self._on_dropped = self._dropped  # (one bound method for every run's weak reference)
        quiet_refusals(_CALLBACKS_LOGGER, f"Error in {type(self).__name__}.")

    @property
    def guard(self) -> Guard:
        return self._guard if self._guard is not None else default_guard()

    operations = Operations()
    """The attempts' operations this handler's steps run: the sync ones."""

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        now(self._chat_start(self.operations, serialized, messages, **kwargs))

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        now(self._llm_start(self.operations, serialized, prompts, **kwargs))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        now(self._end(self.operations, run_id, response, None))

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, response: LLMResult | None = None, **kwargs: Any
    ) -> None:
        now(self._end(self.operations, run_id, response, error))

    def on_llm_new_token(self, token: str | list[Any], *, chunk: _Chunk | None = None, **kwargs: Any) -> None:
        self._showed(kwargs["run_id"], token, chunk)

    def on_stream_event(self, event: Mapping[str, Any], **kwargs: Any) -> None:  # (langchain-core 1.8's v3)
        self._showed(kwargs["run_id"], "", None, event)

    def _showed(self, run_id: UUID, token: Any, chunk: _Chunk | None, event: Any = None) -> None:
        """Keep a chunk (or protocol event) an open run streamed, for ``partial_usage`` if it breaks off (no
        I/O, no lock); once, as a sync manager passes it to a middleware's handler and its sync twin."""
        shown = chunk if chunk is not None else GenerationChunk(text=token if isinstance(token, str) else "")
        for held in tuple(self._attempts.get(run_key(run_id), ())):
            kept, item = (held.shown, shown) if event is None else (held.events, event)
            if not held.taken and not (kept and kept[-1] is item):
                kept.append(item)

    async def _chat_start(
        self,
        run: Operations,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        flat = [message for prompt in messages for message in prompt]
        await self._start(run, run_id, flat, metadata, {**kwargs, "serialized": serialized})

    async def _llm_start(
        self,
        run: Operations,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        flat = [{"role": "user", "content": prompt} for prompt in prompts]
        await self._start(run, run_id, flat, metadata, kwargs)

    async def _start(
        self,
        run: Operations,
        run_id: UUID,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        if self._left_to_middleware():
            return
        guard, mark = self.guard, kwargs.get("options")  # (``mark``: the start, as ``_join`` tells it)
        guards, taken = claim(run_id, guard, self, mark)
        shared = False
        for handler in taken:  # (plain handlers of its guard that held the run before a middleware's)
            shared = await handler._release_taken(run, run_id, mark) or shared
        if shared:  # (one of them holds another run with the id: an end could not tell the two apart)
            forget(run_id, guard, self, mark, failed=True)
            raise ConfigurationError(_shared_id(run_id))
        if not guards:
            return
        batch = self._join(kwargs)
        try:
            attempt, est, background = self._attempt(messages, metadata, kwargs)
            with self._lock:
                self._alone(run_id, attempt, est)
            await run.reserve(attempt)
        except BaseException as exc:  # LangChain sends none of the batch now, and never ends its runs
            forget(run_id, guard, self, mark, failed=True)
            for held in self._give_up(batch):
                await run.release(held)
            raised = self._raised(exc)
            if raised is exc:
                raise
            raise raised from exc
        kept: bool | ConfigurationError = self._record(
            run_id, attempt, est, batch, mark, tuple(taken), background=background
        )
        if kept is not True:
            forget(run_id, guard, self, mark, failed=True)
            await run.release(attempt)
            if kept:  # (a run of other budgets took the id while this one reserved)
                raise kept
        elif not holds(run_id, guard, self, mark):  # a middleware's handler took the run meanwhile
            await self._release_taken(run, run_id, mark)

    async def _release_taken(self, run: Operations, run_id: UUID, mark: object) -> bool:
        """Release this handler's hold of the start ``mark`` of a run a middleware's handler of its guard
        took (its claim first: ``_langchain_claims.claim``): whichever of the two pops it first. The run's
        end still comes to this handler (before the middleware's: dispatched in the start's order), and
        settles nothing: a taken mark (``_Open.taken``, holding nothing) stands for it until then, or until
        the middleware settles the run (``_clear_taken``). Whether this handler holds another run with the
        id: the middleware's start is refused then (``_shared_id``), as an end could not tell them apart
        (one of this handler's runs was charged another's bill, a review found)."""
        with self._lock:
            key = run_key(run_id)
            held = next((held for held in self._attempts.get(key, []) if held.mark is mark), None)
            if held is None or not self._drop(held):
                return False
            shared = bool(self._attempts.get(key))
            if not shared:
                self._attempts[key] = [dataclasses.replace(held, batch=None, taken=True, watch=None)]
        await run.release(held.attempt)
        return shared

    def _clear_taken(self, key: Hashable, mark: object) -> None:
        """Forget the taken mark of the start ``mark``: the middleware that took it settled its run."""
        with self._lock:
            held = next((held for held in self._attempts.get(key, []) if held.mark is mark), None)
            if held is not None and held.taken:
                self._drop(held)

    async def _end(
        self, run: Operations, run_id: UUID, response: LLMResult | None, error: BaseException | None
    ) -> None:
        """Charge a run that ended its usage; a failed run is released (or charged its input, per the
        guard's ``charge_failed``), a stream that broke off after some chunks is charged what it received,
        as the guard charges streams. An end names its run by id alone: of two runs in flight with one id
        (a caller's, on the same budgets: ``_alone``), it settles the start that holds least (``_pop``)."""
        ended = self._pop(run_key(run_id))
        if ended is None:
            forget(run_id, self.guard, self)
            return
        forget(run_id, self.guard, self, ended.mark)
        for handler in ended.took:  # (the plain handlers it took the run from: their taken marks)
            handler._clear_taken(ended.key, ended.mark)
        if ended.taken:  # (a middleware's run: it settles it)
            return
        attempt, est = ended.attempt, ended.est
        if error is None and response is not None and from_cache(response):
            await run.release(attempt)  # (nothing was sent)
            return
        if error is None:
            await run.commit(attempt, response)
            return
        factor, shown = self.guard.estimator._factor(est.model), (ended.background, ended.shown, ended.events)
        partial = partial_usage(response, est, factor, *shown) if response is not None else None
        if partial is None:
            await run.fail(attempt, error)
        else:
            await run.commit(attempt, partial)

    def _record(
        self,
        run_id: UUID,
        attempt: Attempt,
        est: Estimate,
        batch: _Batch | None,
        mark: object,
        took: tuple[BudgetCallbackHandler, ...] = (),
        *,
        background: bool = False,
    ) -> bool | ConfigurationError:
        """Keep a held run until it ends; ``False`` when it is never sent (an async sibling that held after
        its batch's refusal), or ``_alone``'s error (a run of other budgets took the id while this one
        reserved): its hold is to be released. (A run that starts after ``_take_open``, on a model kept
        past its middleware call or in a thread still running, is sent: kept, and settled as it ends; a
        review found such calls released and sent uncharged.)"""
        held = _Open(run_key(run_id), attempt, est, batch, mark, took=took, background=background)
        try:  # (called back when the id dies first; a run popped first drops it, never called)
            held.watch = _Watch(run_id, self._on_dropped)
            held.watch.key, held.watch.mark = held.key, mark
        except TypeError:  # (an id that takes no weak reference: if dropped, its run waits for its lease)
            pass
        with self._lock:
            try:
                self._alone(run_id, attempt, est)
            except ConfigurationError as exc:
                held.watch = None
                return exc
            if batch is not None and batch.given_up:
                held.watch = None
                return False
            self._attempts.setdefault(held.key, []).append(held)
            if batch is not None:
                batch.runs.append(held)
        return True

    def _alone(self, run_id: UUID, attempt: Attempt, est: Estimate) -> None:
        """Refuse a start of the run ``run_id`` that an end could not tell from a start of it already open
        (the lock held): an end names its run by id alone and settles the open start that holds least
        (``_pop``), which leaves every run still in flight a hold at least its own only while the open
        starts hold one another's in every counter. So a second start is let in only on the same counters
        (reviews: one user's bill charged to another's budget), the same model, provider and price variant
        (one model's call charged at another's prices), and holding no less, or no more, in both USD and
        tokens (a token budget spent past its limit). A caller's ``run_id`` reused one call after another,
        or after a start another handler refused (which LangChain never ends: its hold, the larger, stays
        to its lease), passes."""
        opened = self._attempts.get(run_key(run_id), [])
        if any(held.taken for held in opened):  # (a middleware's run, on its budgets)
            raise ConfigurationError(_shared_id(run_id))
        for held in opened:
            other = held.est
            same = set(held.attempt.scopes.key) == set(attempt.scopes.key) and (
                other.model,
                other.provider,
                other.variant,
            ) == (est.model, est.provider, est.variant)
            a, b = _size(other), _size(est)
            ordered = (a[0] <= b[0] and a[1] <= b[1]) or (a[0] >= b[0] and a[1] >= b[1])
            if not same or not ordered:
                first, second = ", ".join(held.attempt.scopes.labels), ", ".join(attempt.scopes.labels)
                raise ConfigurationError(
                    f"concurrent LangChain runs share run_id {run_id!s} with other budgets or models "
                    f"({first} on {other.model}; {second} on {est.model}): an end names its run by id "
                    "alone, so a bill could not be charged to its own run. Give each run its own run_id "
                    "(config={'run_id': uuid.uuid4()}), or none"
                )

    def _dropped(self, watch: _Watch) -> None:
        """Called back by the weak reference to a run's id (a finalizer): the id of a run still open died,
        so nobody will end the run (LangChain ends none of the runs ``asyncio`` cancels: ``ainvoke``,
        ``abatch`` in a task cancelled or timed out). Its hold is failed at the guard's next operation,
        ``close()`` or exit, not left to its lease (a review found it so): queued only, no ledger I/O and
        no lock here (``_attempt.Dropped``)."""
        for held in list(self._attempts.get(watch.key, ())):  # (this start's: another with the id's value
            if held.watch is watch:  # may be in flight, its id another object: a caller's ``UUID(s)``)
                Dropped(held.attempt.guard, functools.partial(self._taken, watch.key, watch.mark)).queue()

    def _taken(self, key: Hashable, mark: object) -> Attempt | None:
        ended = self._pop(key, mark)
        return None if ended is None else ended.attempt

    def _raised(self, error: BaseException) -> BaseException:
        """What a start that raised ``error`` (a refusal, a request that cannot be estimated) raises."""
        return error

    middleware = False  # (an agent middleware's handler: the others of its guard leave its runs to it)

    def _left_to_middleware(self) -> bool:
        """Whether the agent's ``BudgetMiddleware`` of this guard meters this call: once is enough."""
        innermost = metered_by.get()
        return innermost is not None and innermost is not self and innermost.guard is self.guard

    def _arguments(self, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        """What the scope specs are resolved over: the run's ``metadata``."""
        return metadata

    def _attempt(
        self,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[Attempt, Estimate, bool]:
        """The run's attempt, its request estimated, not yet reserved; and whether the request runs in the
        background (a Responses API ``background=True``: it runs on when its stream breaks)."""
        metadata = metadata or {}
        serialized = kwargs.get("serialized")
        settings = serialized.get("kwargs") if isinstance(serialized, Mapping) else None
        params = kwargs.get("invocation_params") or {}
        request, provider = request_from_run(messages, params, metadata, model_kwargs=settings)
        guard = self.guard
        est = guard.estimator(request, provider=provider, api=request_shape(provider, request["model"]))
        attempt = guard.attempt(
            est,
            usage=read_usage,
            enforce=self.enforce,
            scopes=self.scopes,
            arguments=self._arguments(metadata),
        )
        return attempt, est, in_background(request)

    def _join(self, kwargs: Mapping[str, Any]) -> _Batch | None:
        """The batch this start belongs to (``None``: a run alone). LangChain starts every run of one
        ``generate`` call before it sends any, and passes them all the same ``invocation_params`` and
        ``options`` objects, new for each call: those objects are the batch's identity (not
        ``parent_run_id``: parallel branches in flight share it, and top-level runs have none)."""
        params, options, size = (kwargs.get(key) for key in ("invocation_params", "options", "batch_size"))
        if params is None or options is None or not isinstance(size, int) or size < 2:
            return None
        key = (id(params), id(options))
        with self._lock:
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches.put(key, _Batch(key, (params, options), size))
            batch.started += 1
            if batch.started >= size:  # every run has started: no later start to tell about the batch
                del self._batches[key]
        return batch

    def _give_up(self, batch: _Batch | None) -> list[Attempt]:
        """The holds of a batch whose start raised, to release: none of its runs was sent."""
        if batch is None:
            return []
        with self._lock:
            batch.given_up = True
            runs, batch.runs = batch.runs, []
            return [held.attempt for held in runs if self._drop(held)]

    def _pop(self, key: Hashable, mark: object = _SMALLEST) -> _Open | None:
        """The open start of the run ``key``, forgotten here: the start ``mark``, else (an end, which names
        its run by id alone) the one that holds least, the earliest of equals. Its run may be another one in
        flight with the id (a caller's ``run_id``, on the same budgets: ``_alone``), so the bill may land on
        another run's hold; the holds left then still cover every run still in flight, each hold covering
        its own run's worst case (settling the earliest start left a small hold for a big run: a third
        call was admitted past the limit, a review found)."""
        with self._lock:
            opened = self._attempts.get(key, [])
            if mark is _SMALLEST:
                held = min(opened, key=lambda held: (0, 0) if held.taken else _size(held.est), default=None)
            else:
                held = next((held for held in opened if held.mark is mark), None)
            if held is None or not self._drop(held):
                return None
            if held.batch is not None:  # a run ended: its batch has started in full
                if held in held.batch.runs:
                    held.batch.runs.remove(held)
                if self._batches.get(held.batch.key) is held.batch:
                    del self._batches[held.batch.key]
            return held

    def _drop(self, held: _Open) -> bool:
        """Forget the open start ``held`` (the lock held): whether it was open."""
        opened = self._attempts.get(held.key)
        if opened is None or not any(found is held for found in opened):
            return False
        opened[:] = [found for found in opened if found is not held]
        if not opened:
            del self._attempts[held.key]
        held.watch = None
        return True

    def _take_open(self) -> list[Attempt]:
        """The attempts of the runs started and not ended, forgotten here: their owner settles them (a run
        that starts later is kept and settled as it ends, as any other)."""
        with self._lock:
            opened = [run for runs in self._attempts.values() for run in runs if not run.taken]
            self._attempts.clear()
        for run in opened:  # (never ended: the plain handlers it took them from get no end either)
            for handler in run.took:
                handler._clear_taken(run.key, run.mark)
        return [run.attempt for run in opened]


_BATCHES_KEPT = 1024
"""Batches tracked at most: one given up stays until its last start (async siblings start late) or,
as after a sync refusal its later runs never start, until newer batches push it out."""


def _size(est: Estimate) -> tuple[int, int]:
    """What a start holds, as ``_alone`` and ``_pop`` compare starts: its USD and its tokens."""
    return est.cost_nano, est.input_tokens + est.output_tokens


def _shared_id(run_id: object) -> str:
    return (
        f"concurrent LangChain runs share run_id {run_id!s} with different budgets (an agent "
        "BudgetMiddleware's and a BudgetCallbackHandler's of its guard): an end names its run by id alone, "
        "so neither bill could be charged to its own budgets. Give each run its own run_id "
        "(config={'run_id': uuid.uuid4()}), or none"
    )


def run_key(run_id: Hashable) -> Hashable:
    """A run's key in a handler's maps: a UUID's number (LangChain's ids; the id object itself is left to
    die with its run, see ``_dropped``), any other id itself (a caller's own ``run_id="abc"``)."""
    return run_id.int if type(run_id) is UUID else run_id


class _Watch(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a run's id, calling back with the run's key and start when the id dies first."""

    __slots__ = ("key", "mark")
    key: Hashable
    mark: object


@dataclasses.dataclass(eq=False)
class _Open:
    """One start of a run, held until its run ends."""

    key: Hashable  # (its run's: ``run_key``)
    attempt: Attempt
    est: Estimate
    batch: _Batch | None
    mark: object  # (the start, as ``claim`` tells it: held, so that no other start reuses its id meanwhile)
    watch: _Watch | None = None  # (kept alive while the start is open: ``_dropped``)
    taken: bool = False  # (a middleware's handler took the start: its hold released, ``_release_taken``)
    took: tuple[BudgetCallbackHandler, ...] = ()  # (a middleware's: the handlers it took the start from)
    background: bool = False  # (its request runs in the background: a broken stream is billed whole)
    shown: list[_Chunk] = dataclasses.field(default_factory=list)  # (what it streamed: ``_showed``)
    events: list[Any] = dataclasses.field(default_factory=list)  # (its protocol events: same)


@dataclasses.dataclass(eq=False)
class _Batch:
    """The runs of one ``generate`` call, started and not yet ended."""

    key: tuple[int, int]
    marks: tuple[object, object]  # held, so that no other batch reuses their ids while this one is kept
    size: int
    started: int = 0
    runs: list[_Open] = dataclasses.field(default_factory=list)
    given_up: bool = False


# -- get_openai_callback, for every model ---------------------------------------------------------

_handler: ContextVar[BudgetCallbackHandler | None] = ContextVar("budgetguard_langchain_handler", default=None)
register_configure_hook(_handler, inheritable=True)


class _Total(Generic[T]):
    """One of ``track()``'s totals, read from the ``Tracker`` under another name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, totals: None, owner: object = None) -> _Total[T]: ...
    @overload
    def __get__(self, totals: BudgetTotals, owner: object = None) -> T: ...
    def __get__(self, totals: BudgetTotals | None, owner: object = None) -> T | _Total[T]:
        return self if totals is None else getattr(totals.tracker, self.name)


class BudgetTotals:
    """What ``get_budget_callback()`` yields: ``track()``'s totals under ``get_openai_callback``'s names."""

    __slots__ = ("tracker",)  # (and so the totals are read-only)

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    prompt_tokens = _Total[int]("input_tokens")
    prompt_tokens_cached = _Total[int]("cached_input_tokens")
    completion_tokens = _Total[int]("output_tokens")
    reasoning_tokens = _Total[int]("reasoning_tokens")
    total_tokens = _Total[int]("total_tokens")
    successful_requests = _Total[int]("calls")
    total_cost = _Total[Decimal]("cost")
    """Exact USD (a ``Decimal``, where ``get_openai_callback`` gives a float)."""
    by_model = _Total[dict[str, ModelTotals]]("by_model")

    def __str__(self) -> str:
        return str(self.tracker)

    __repr__ = __str__  # (``cb`` at a prompt shows the totals, as ``get_openai_callback``'s does)


@contextmanager
def get_budget_callback(
    guard: Guard | None = None, *, enforce: bool = True, **scopes: ScopeSpec
) -> Iterator[BudgetTotals]:
    """``with get_budget_callback(user="alice") as cb:``: every LangChain model run inside is guarded
    (refused past a budget unless ``enforce=False``), charged to the ledger and added up in ``cb``."""
    handler = BudgetCallbackHandler(guard, enforce=enforce, **scopes)
    with track() as tracker:
        token = _handler.set(handler)
        try:
            yield BudgetTotals(tracker)
        finally:
            _handler.reset(token)

"""The guard: estimate -> reserve -> call -> reconcile, with retries, streams and routing.

The call flow is a generator that yields the I/O it needs (``_Reserve``, ``_Resolve``, ``_Call``,
``_Sleep``, ``_Status``) and receives the results; a sync and an async driver perform them. Retries are
tenacity's: its ``iter()`` decides, the flow reserves before every attempt and reconciles after it.
Streams, which settle when they end rather than when the call returns, are in ``_streams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import os
import re
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, final, overload

import tenacity
from tenacity import RetryCallState

from ._budgets import Budget, Period, Scope, Unit
from ._calibration import Calibration, JournalRead, Learned, held_usd, learned_ratio
from ._context import current_scopes, record_usage
from ._errors import (
    BudgetExceededError,
    ConfigurationError,
    LedgerError,
    MissingScopeError,
    PricingError,
    UsageError,
)
from ._estimate import Estimate, Estimator
from ._events import Event, EventKind, emit, wanted
from ._fit import Fit, Fitting, fit_for, fit_option
from ._job import Job, _Draw, current_job
from ._ledger import (
    AsyncLedger,
    CounterSpec,
    Hold,
    Ledger,
    Outcome,
    Reservation,
    open_async_ledger,
    open_ledger,
)
from ._ledger._base import scope_labels
from ._ledger._local import AsyncLocalLedger
from ._ledger._types import CheckedAmounts, JournalData
from ._money import INT64_MAX, Money, to_nano, to_usd
from ._pricing import PriceBook, price_book
from ._providers import (
    Variant,
    endpoint_provider,
    is_request,
    is_stream,
    prepare_openai_stream,
    sdk_provider,
    served_model,
    served_tier,
    without_sdk_retries,
)
from ._streams import (
    DRAIN_BATCH,
    GuardedAsyncStream,
    GuardedStream,
    GuardedStreamManager,
    Settlement,
    adrain,
    drain,
    input_only,
    no_call,
    served_flags,
    settling,
    wrap_stream,
)
from ._usage import Usage

__all__ = [
    "Attempt",
    "Guard",
    "GuardedAsyncStream",
    "GuardedStream",
    "GuardedStreamManager",
    "configure",
    "default_guard",
    "default_url",
    "metered",
    "with_budget",
]

P = ParamSpec("P")
T = TypeVar("T")
ScopeSpec = str | Callable[..., Any]


class Decorator(Protocol):
    """What ``with_budget(...)`` returns without a function: it keeps the function's signature."""

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...


def default_url() -> str:
    """``BUDGETGUARD_URL``, else the embedded SQLite store in the user's data directory."""
    url = os.environ.get("BUDGETGUARD_URL")
    if url:
        return url
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'budgetguard' / 'ledger.db'}"


def _retryable(exc: BaseException) -> bool:
    """Rate limits, timeouts, connection errors and 5xx: worth another attempt. Never other 4xx."""
    if isinstance(exc, BudgetExceededError | ConfigurationError | UsageError):
        return False
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status == 408 or status >= 500
    return _in_transit(exc)


def _in_transit(exc: BaseException) -> bool:
    """A timeout or a dropped connection: the SDKs' errors (or subclasses of them, such as
    langchain-openai's ``OpenAITimeoutError``) or the standard library's."""
    return isinstance(exc, TimeoutError | ConnectionError) or any(
        cls.__name__ in ("APITimeoutError", "APIConnectionError") for cls in type(exc).__mro__
    )


def default_retry() -> tenacity.Retrying:
    """3 attempts, exponential backoff with jitter (0.5 s .. 8 s), on retryable errors only."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=8),
        retry=tenacity.retry_if_exception(_retryable),
        reraise=True,
    )


_QUIET_ON_SUCCESS = (tenacity.retry_if_exception.__call__, type(tenacity.retry_never).__call__)


def _alone_first(retrying: tenacity.BaseRetrying) -> bool:
    """Whether tenacity would do nothing around a first attempt that succeeds but return its result:
    no ``before`` hook, and a ``retry`` policy that never retries a result (``retry_if_exception``
    and its subclasses that keep its ``__call__``, ``retry_never``)."""
    return retrying.before in (None, tenacity.before_nothing) and type(retrying.retry).__call__ in (
        _QUIET_ON_SUCCESS
    )


_HOOKS = ("stop", "wait", "retry", "before", "after", "before_sleep", "retry_error_callback")


def _checked_retry(retrying: tenacity.BaseRetrying) -> tenacity.BaseRetrying:
    """A ``Retrying`` or an ``AsyncRetrying`` whose callbacks are plain functions: the guard runs
    tenacity's decisions between the attempts of sync and async calls alike, where nothing is awaited."""
    if not isinstance(retrying, tenacity.BaseRetrying):
        raise ConfigurationError(f"retry= takes a tenacity.Retrying or AsyncRetrying, got {retrying!r}")
    awaited = [name for name in _HOOKS if _is_async(getattr(retrying, name, None))]
    if awaited:
        raise ConfigurationError(
            f"retry=: the policy's {', '.join(awaited)} callback is async; the guard decides retries "
            "between attempts, where nothing is awaited: pass plain functions (tenacity's stop_*, wait_*, "
            "retry_* and your own def hooks), in a Retrying or an AsyncRetrying"
        )
    return retrying


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _decide(retrying: tenacity.BaseRetrying, state: RetryCallState) -> Any:
    """tenacity's next step (``DoAttempt``, ``DoSleep`` or the outcome). An ``AsyncRetrying``'s ``iter``
    is a coroutine (tenacity >= 8.4): with plain callbacks (``_checked_retry``) it never suspends, so it
    runs to its end here, for sync and async calls alike."""
    do = retrying.iter(state)
    if not inspect.iscoroutine(do):
        return do
    try:
        do.send(None)
    except StopIteration as done:
        return done.value
    do.close()
    raise ConfigurationError(
        "retry=: a callback of the policy awaited something; the guard runs tenacity's decisions where "
        "nothing is awaited: pass plain functions"
    )


def charge_if_maybe_billed(exc: BaseException) -> bool:
    """Default policy for a failed attempt: charge its input when the provider may have billed it.

    A timeout or a dropped connection after the request was sent may still be processed (and billed),
    and so may a call whose task was cancelled (``asyncio.wait_for``, a client that went away); an
    error response (4xx, 5xx) is not billed by OpenAI or Anthropic, so its hold is released.
    """
    return _in_transit(exc) or isinstance(exc, asyncio.CancelledError)


# -- actions the flow yields (built per call and never changed: slotted, not frozen, which is cheaper) --


@final
@dataclass(slots=True)
class _Reserve:
    holds: tuple[Hold, ...]
    meta: Mapping[str, Any]
    enforce: bool = True
    lease: float | None = None
    """Seconds; the guard's ``lease`` when ``None``."""
    job: Job | None = None
    """The job whose hold this draws on, else the store's counters."""

    def send(self, store: Ledger | AsyncLedger | Job, lease: float) -> Any:
        """Send it: the store's reply (a ``Ledger``, a ``Job``) or an awaitable of it (an ``AsyncLedger``)."""
        lease = lease if self.lease is None else self.lease
        return store.reserve(self.holds, lease=lease, meta=self.meta, enforce=self.enforce)


@final
@dataclass(slots=True)
class _Resolve:
    reservation: Reservation
    actual: Mapping[Unit, int] | None
    meta: Mapping[str, Any]

    @property
    def job(self) -> Job | None:
        """The job a draw on a job's hold settles on."""
        reservation = self.reservation
        return reservation.job if isinstance(reservation, _Draw) else None

    def send(self, store: Ledger | AsyncLedger | Job, lease: float) -> Any:
        if self.actual is None:
            return store.release(self.reservation, meta=self.meta)
        return store.commit(self.reservation, self.actual, meta=self.meta)


@final
@dataclass(slots=True)
class _Call:
    model: str | None


@final
@dataclass(slots=True)
class _Sleep:
    seconds: float


@final
@dataclass(slots=True)
class _Status:
    counters: tuple[CounterSpec, ...]
    job: Job | None = None

    def send(self, store: Ledger | AsyncLedger | Job, lease: float) -> Any:
        return store.status(self.counters)


@final
@dataclass(slots=True)
class _Count:
    """Ask the provider's token counting endpoint (``Estimator.count_request``) for the input tokens."""

    request: Mapping[str, Any]


Action = _Reserve | _Resolve | _Call | _Sleep | _Status | _Count | JournalRead
Flow = Generator[Action, Any, Any]


@dataclass(slots=True)
class _Plan:
    """Everything the flow needs to know about one decorated call."""

    scopes: _Scopes
    models: tuple[str | None, ...]
    estimate: Callable[[str | None, int | None], Estimate]
    """The estimate for a model, given an exact input count (or ``None`` to count offline)."""
    read_usage: Callable[[Any], Usage]
    at: tuple[int, int] | None
    """Route when a counter's spent + held reaches this fraction (numerator, denominator) of its limit."""
    enforce: bool
    count: Callable[[str | None], Mapping[str, Any] | None] | None = None
    """The token counting request for a model, when exact counting is on (``None``: it is off)."""
    function: str | None = None
    """The decorated function's qualified name (the journal's ``function``)."""
    fit: Fitting | None = None
    hold: Learned | None = None
    """Hold a learned share of the worst case (``None``: the worst case)."""


class Guard:
    """Budgets, a ledger and the policies that decorate calls.

    >>> guard = Guard(ledger="memory://", budgets=[Budget("user", usd="5", per="day")])
    """

    def __init__(
        self,
        ledger: str | Ledger | AsyncLedger | None = None,
        *,
        budgets: Iterable[Budget] = (),
        prices: PriceBook | None = None,
        estimator: Estimator | None = None,
        retry: tenacity.BaseRetrying | None = None,
        lease: float = 120.0,
        on_event: Callable[[Event], None] | Iterable[Callable[[Event], None]] | None = None,
        on_store_error: Literal["fail_closed", "fail_open"] = "fail_closed",
        charge_failed: Callable[[BaseException], bool] = charge_if_maybe_billed,
        thresholds: Iterable[Decimal | str] = ("0.5", "0.8", "1"),
        missing_scope: Literal["refuse", "skip"] = "refuse",
        default_scopes: Mapping[str, str] | None = None,
        fit: bool | int | Fit = False,
        hold: Learned | None = None,
    ) -> None:
        """``fit`` and ``hold``: the defaults of ``with_budget``'s (see there)."""
        if on_store_error not in ("fail_closed", "fail_open"):
            raise ConfigurationError("on_store_error must be 'fail_closed' or 'fail_open'")
        self.budgets = tuple(budgets)
        for budget in self.budgets:
            if not isinstance(budget, Budget):
                raise ConfigurationError(f"budgets must be Budget objects, got {budget!r}")
        if missing_scope not in ("refuse", "skip"):
            raise ConfigurationError("missing_scope must be 'refuse' or 'skip'")
        self.missing_scope = missing_scope
        self.default_scopes: Mapping[str, str] = _default_ids(default_scopes or {})
        """Ids for the calls that name none of a kind (under ``budget_context`` and the decorator's)."""
        per_kind = {b.target for b in self.budgets if ":" not in b.target and b.target != "global"}
        self.required_kinds = frozenset(
            per_kind - self.default_scopes.keys() if missing_scope == "refuse" else ()
        )
        """The scope kinds a guarded call must name an id for: a budget applies to each of them, there
        is no default id, and ``missing_scope="refuse"``; a call without one raises ``MissingScopeError``."""
        self.prices = prices or price_book
        self.estimator = estimator or Estimator(prices=self.prices)
        self.retry = _checked_retry(retry) if retry is not None else default_retry()
        self.lease = lease
        hooks = on_event if on_event is None or callable(on_event) else tuple(on_event)
        self.hooks: tuple[Callable[[Event], None], ...] = (
            () if hooks is None else (hooks,) if callable(hooks) else tuple(hooks)
        )
        self.on_store_error = on_store_error
        self.charge_failed = charge_failed
        self.thresholds = tuple(Decimal(t).as_integer_ratio() for t in thresholds)
        if any(not 0 < num <= den * 10 for num, den in self.thresholds):
            raise ConfigurationError("thresholds are fractions of a budget, e.g. '0.8'")
        self._url = ledger if isinstance(ledger, str) else None if ledger is not None else default_url()
        self._sync: Ledger | None = ledger if isinstance(ledger, Ledger) else None
        self._async: AsyncLedger | None = ledger if isinstance(ledger, AsyncLedger) else None
        self._open_lock = threading.Lock()
        self._counters: dict[tuple[Scope, ...], tuple[CounterSpec, ...]] = {}
        self._hold_sets: dict[tuple[tuple[tuple[str, str], ...], int, int], tuple[Hold, ...]] = {}
        self._queued: deque[Settlement] = deque()
        """Settlements of streams dropped unsettled, queued by their finalizers (see ``_streams``)."""
        self.fit = fit_option(fit)
        self.hold = _checked_hold(hold)
        self.calibration = Calibration()
        """The learned ratios of ``hold=Learned(...)`` calls, read from the journal (see ``_calibration``)."""

    # -- stores ---------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        """The sync store (opened on first use, once, even when threads race to it)."""
        if self._sync is None:
            with self._open_lock:
                if self._sync is None:
                    if self._url is None:
                        raise ConfigurationError(
                            "this guard has only an async ledger; decorate async functions"
                        )
                    self._sync = open_ledger(self._url)
        return self._sync

    @property
    def async_ledger(self) -> AsyncLedger | Ledger:
        """The async store; local stores (memory, SQLite) are shared with the sync side."""
        if self._async is not None:
            return self._async
        if self._url is None or self._url.startswith(("memory:", "sqlite:")):
            return self.ledger  # the async driver runs local stores in a thread
        with self._open_lock:
            if self._async is None:
                self._async = open_async_ledger(self._url)
        return self._async

    def settle_dropped(self) -> None:
        """Settle every stream dropped unsettled (their finalizers only queued them): what ``close()``
        and a job's end do first."""
        if self._queued:
            drain(self)

    async def asettle_dropped(self) -> None:
        if self._queued:
            await adrain(self)

    def close(self) -> None:
        """Settle the streams dropped unsettled, then close the sync store (``aclose`` closes the async
        one too)."""
        self.settle_dropped()
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        await self.asettle_dropped()
        if self._async is not None:
            await self._async.aclose()
        self.close()

    # -- budgets -> holds ------------------------------------------------------------------------

    METERING = CounterSpec(Scope("global"), Unit.USD, Period.TOTAL, INT64_MAX)
    """What a call or job holds its USD on when no budget applies to its scopes: a counter with no limit,
    so that it too is reserved, committed and journaled. It is the counter of a
    ``Budget("global", usd=..., per="total")``: adding one later counts the spend metered so far."""

    def counters_for(self, scopes: Iterable[Scope]) -> list[CounterSpec]:
        """The counters the budgets put on these scopes (an exact-scope budget replaces its kind's)."""
        key = tuple(scopes)
        found = self._counters.get(key)
        if found is None:
            if len(self._counters) > 10_000:
                self._counters.clear()
            found = self._counters[key] = self._counters_for(key)
        return list(found)

    def _counters_for(self, scopes: Iterable[Scope]) -> tuple[CounterSpec, ...]:
        specs: list[CounterSpec] = []
        for scope in scopes:
            chosen: dict[tuple[Unit, str, str], Budget] = {}
            for budget in self.budgets:
                if budget.applies_to(scope):
                    key = (budget.unit, budget.period.value, budget.tz)
                    exact = ":" in budget.target or budget.target == "global"
                    if key not in chosen or exact:
                        chosen[key] = budget
            specs += [CounterSpec(scope, b.unit, b.period, b.limit, b.tz) for b in chosen.values()]
        return tuple(specs)

    def _holds(
        self, scopes: _Scopes, est: Estimate, job: Job | None, usd: int | None = None
    ) -> tuple[Hold, ...]:
        """The holds of a call: on its budgets' counters (on ``METERING`` when it has none), or on
        ``job``'s hold inside ``guard.reserve()``. ``usd``: the USD held, if not the worst case."""
        tokens = est.input_tokens + est.output_tokens
        cost = est.cost_nano if usd is None else usd
        if job is not None:  # inside guard.reserve(): draw on the job's hold, not the store's counters
            held = set(job.labels)
            outside = sorted({str(c.scope) for c in self.counters_for(scopes.scopes)} - held)
            if outside:  # the job holds none of these budgets: drawing on it would bypass them
                raise ConfigurationError(
                    f"a call inside the job {job.name!r} has budgets on {', '.join(outside)}, which the "
                    "job does not hold: start the job with those scopes (reserve(user=...) or inside "
                    "budget_context(...)), or make the call outside the job"
                )
            return job.holds({Unit.USD: cost, Unit.TOKENS: tokens, Unit.REQUESTS: 1})
        key = (scopes.key, cost, tokens)  # calls repeat: reuse the validated holds
        found = self._hold_sets.get(key)
        if found is None:
            amounts = {Unit.USD: cost, Unit.TOKENS: tokens, Unit.REQUESTS: 1}
            found = tuple(Hold(spec, amounts[spec.unit]) for spec in self.counters_for(scopes.scopes))
            if not found:  # no budget applies: hold on the metering counter, so the journal has the call
                found = (Hold(self.METERING, cost),)
            if len(self._hold_sets) > 10_000:
                self._hold_sets.clear()
            self._hold_sets[key] = found
        return found

    # -- the flow --------------------------------------------------------------------------------

    def _retry_state(self, started: float | None = None) -> RetryCallState:
        """tenacity's state for one call. With ``started``: entered after a first attempt made without
        it (see ``_flow``), so tenacity counts that attempt, and its time, as its own."""
        retrying = self.retry.copy()
        retrying.begin()
        state = RetryCallState(retrying, None, (), {})
        if started is not None:
            state.start_time = retrying.statistics["start_time"] = started
            _decide(retrying, state)  # attempt 1's DoAttempt: no `before` hook to run (see _alone_first)
        return state

    def _flow(self, plan: _Plan) -> Flow:
        # The first attempt runs without tenacity when tenacity would do nothing around it but say
        # "attempt" (no `before` hook) and return its result (a policy that never retries a success).
        # Its machinery (copy, iter, a Future per outcome) is entered on the first failure only.
        started = time.monotonic()
        missing = () if self.required_kinds <= plan.scopes.kinds else self._unnamed(plan)
        state = None if _alone_first(self.retry) else self._retry_state()
        labels = plan.scopes.labels
        model_index = 0
        attempt = 1
        last_error: BaseException | None = None
        while True:
            if state is not None:
                do = _decide(state.retry_object, state)
                if isinstance(do, tenacity.DoSleep):
                    state.prepare_for_next_attempt()
                    yield _Sleep(float(do))
                    continue
                if not isinstance(do, tenacity.DoAttempt):
                    return do
                attempt = state.attempt_number
            # -- reserve, routing to a cheaper model when needed, fitting the last one (fit=)
            refits = 0
            while True:
                model = plan.models[model_index]
                ask = None if plan.count is None else plan.count(model)
                counted = None
                if ask is not None:
                    counted = yield _Count(ask)
                est = plan.estimate(model, counted)
                ctx = _Ctx(self, est, labels, attempt)
                if ask is not None and counted is None:
                    ctx.emit("estimate_fallback", reason="count_tokens failed; reserved the offline estimate")
                job = current_job(self)
                learned = usd = None
                if plan.hold is not None:  # a learned share of the worst case (hold=Learned(...))
                    learned = yield from learned_ratio(self.calibration, plan.hold, est.model, plan.function)
                    usd = held_usd(plan.hold, learned, est.cost_nano)
                holds = self._holds(plan.scopes, est, job, usd)
                fitted: dict[str, Any] | None = None
                lowered = None
                if plan.fit is not None and model_index + 1 == len(plan.models):
                    try:
                        statuses = yield _Status(tuple(h.counter for h in holds), job)
                    except LedgerError as down:
                        plan.fit.sent.clear()
                        ctx.store_down(down)  # fail_closed raises; fail_open reserves it unfitted
                    else:
                        held = functools.partial(held_usd, plan.hold, learned)
                        lowered = plan.fit.lower(model, est, statuses, self.estimator, held)
                    if lowered is not None and lowered[1]:  # lowered to fit what is left
                        est, fitted = lowered
                        usd = None if plan.hold is None else held_usd(plan.hold, learned, est.cost_nano)
                        holds = self._holds(plan.scopes, est, job, usd)
                        ctx = _Ctx(self, est, labels, attempt)
                if plan.at is not None and model_index + 1 < len(plan.models):
                    try:
                        statuses = yield _Status(tuple(h.counter for h in holds), job)
                    except LedgerError as down:
                        ctx.store_down(down)  # fail_closed raises; fail_open skips the threshold check
                        statuses = []
                    num, den = plan.at
                    busy = [s for s in statuses if s.limit and (s.spent + s.held) * den >= num * s.limit]
                    if busy:
                        scope, period = busy[0].counter.scope, busy[0].counter.period.value
                        level = f"{(Decimal(num) * 100 / den).normalize():f}%"
                        ctx.emit("routed", reason=f"{scope} at {level} of its {period} budget",
                                 data={"to": plan.models[model_index + 1]})  # fmt: skip
                        model_index += 1
                        continue
                meta = JournalData(
                    model=est.model, attempt=attempt, estimated_usd=_usd_text(est.cost_nano), scopes=labels
                )
                if est.variant:
                    meta["variant"] = dict(est.variant)
                if missing:
                    meta["missing_scope"] = missing
                if est.tools_defaulted:  # server-side tools reserved at the configured default count
                    meta["tools_defaulted"] = list(est.tools_defaulted)
                if est.tool_results_defaulted:  # their results fed back, at the calibrated default size
                    meta["tool_results_defaulted"] = list(est.tool_results_defaulted)
                if est.unseen:  # server-side history: the input was reserved at its bound
                    meta["unseen"] = list(est.unseen)
                if plan.function is not None:
                    meta["function"] = plan.function
                if usd is not None and usd != est.cost_nano:
                    meta["reserved_usd"] = _usd_text(usd)
                if fitted is not None:
                    meta["fitted"] = fitted
                try:
                    reservation = yield _Reserve(holds, meta, plan.enforce, None, job)
                except BudgetExceededError as refused:
                    ctx.emit("refused", reason=refused.scope)
                    if model_index + 1 < len(plan.models):
                        ctx.emit("routed", reason=f"refused on {refused.scope}",
                                 data={"to": plan.models[model_index + 1]})  # fmt: skip
                        model_index += 1
                        continue
                    if plan.fit is not None and lowered is not None and refits + 1 < plan.fit.fit.attempts:
                        refits += 1  # racing callers took what was left: read it again, fit again
                        continue
                    if last_error is not None:
                        raise refused from last_error
                    raise
                except LedgerError as down:
                    ctx.store_down(down)
                    reservation = None
                    ctx.lost = True
                else:
                    ctx.reservation_id = reservation.id
                    ctx.emit("reserved")
                    if fitted is not None:
                        ctx.emit("fitted", reason=f"max output tokens {fitted['from']} -> {fitted['to']}",
                                 data=fitted)  # fmt: skip
                break
            # -- call
            try:
                result = yield _Call(model)
            except GeneratorExit:  # an abandoned flow (Attempt): no call was made; its lease ends the hold
                raise
            except BaseException as exc:  # the SDK's (or user's) error: reconcile, let tenacity decide
                last_error = exc
                if reservation is not None:  # (a call never sent is never charged, whatever the policy)
                    charge = not isinstance(exc, NotSent) and self.charge_failed(exc)
                    usage = input_only(est) if charge else None
                    yield from ctx.settle(reservation, usage, {"error": type(exc).__name__})
                if state is None:
                    state = self._retry_state(started)
                state.set_exception((type(exc), exc, exc.__traceback__))
                continue
            if is_stream(result):
                return wrap_stream(result, Settlement(ctx, reservation))
            try:
                usage, tier, answered = plan.read_usage(result), served_tier(result), served_model(result)
                flags = (  # no tier and the model asked: as reserved
                    {} if tier is None and answered == est.model
                    else served_flags(tier, est, answered, self.prices)
                )  # fmt: skip
            except Exception as exc:  # no usable usage: charge the worst case and say so
                usage, flags = est.usage, {"usage_missing": True}
                ctx.emit("usage_missing", reason=str(exc))
                yield from ctx.settle(reservation, usage, flags)
                if not isinstance(exc, UsageError):
                    raise  # the caller's usage= hook failed: its error, after the books are right
            else:
                yield from ctx.settle(reservation, usage, flags)
            if state is None:
                return result  # tenacity would return it: its policy does not retry a success
            state.set_result(result)

    def _unnamed(self, plan: _Plan) -> tuple[str, ...]:
        """The required kinds a call names no id for. An enforced call is refused (``MissingScopeError``);
        a metered one is recorded without them, flagged in the journal (``missing_scope``) and reported
        (a ``scope_missing`` event). None inside a job: its calls draw on its hold, whose scopes were
        checked when it started."""
        if current_job(self) is not None:
            return ()
        kinds = tuple(sorted(self.required_kinds - plan.scopes.kinds))
        if plan.enforce:
            self._missing_event("refused", plan.scopes.labels, kinds)
            raise MissingScopeError(kinds)
        self._missing_event("scope_missing", plan.scopes.labels, kinds)
        return kinds

    def _missing_event(self, kind: EventKind, labels: tuple[str, ...], kinds: tuple[str, ...]) -> None:
        """``refused`` names the first kind as a refusal names its scope; ``scope_missing`` says why."""
        if wanted(kind, self.hooks):
            why = kinds[0] if kind == "refused" else f"no {' or '.join(kinds)} id: not on those budgets"
            emit(Event(kind, scopes=labels, reason=why, data={"missing_scope": kinds}), self.hooks)

    def _actual(
        self, model: str, usage: Usage, est: Estimate, variant: Variant | None = None
    ) -> dict[Unit, int]:
        # served at another tier than asked, or by another model (served_flags): its own price; the
        # passes on other models (advisors) at the call's provider
        price = est.price if model == est.model and variant == est.variant else model
        cost = self.prices.cost_nano(price, usage, provider=est.provider, variant=variant)
        # (settle checks the int64 bound before the store sees them)
        return CheckedAmounts({Unit.USD: cost, Unit.TOKENS: usage.total_tokens, Unit.REQUESTS: 1})

    # -- drivers ---------------------------------------------------------------------------------

    def _run_sync(self, flow: Flow, call: Callable[[str | None], Any], store: Ledger | None = None) -> Any:
        """Run ``flow``, its store actions on ``store`` if given (a settlement's, see ``drain``), else on
        the guard's sync store."""
        if self._queued:  # streams dropped unsettled: settle them first (their finalizers could not)
            drain(self, DRAIN_BATCH)
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(reply)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                if type(action) is _Call:
                    reply = call(action.model)
                elif type(action) is _Sleep:
                    time.sleep(action.seconds)
                elif type(action) is _Count:
                    reply = self.estimator.count_tokens(action.request)
                else:
                    reply = action.send(action.job or store or self._sync or self.ledger, self.lease)
            except BaseException as exc:
                error = exc

    async def _run_async(self, flow: Flow, call: Callable[[str | None], Any]) -> Any:
        if self._queued:
            await adrain(self, DRAIN_BATCH)
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(reply)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                reply = await self._perform_async(action, call)
            except BaseException as exc:
                error = exc

    async def _perform_async(self, action: Action, call: Callable[[str | None], Any]) -> Any:
        if type(action) is _Call:
            return await call(action.model)
        if type(action) is _Sleep:
            await asyncio.sleep(action.seconds)
            return None
        if type(action) is _Count:
            return await self.estimator.acount_tokens(action.request)
        job = action.job
        if job is not None:
            return action.send(job, self.lease)  # in memory, no I/O
        store = self.async_ledger
        if isinstance(store, AsyncLedger):
            if isinstance(store, AsyncLocalLedger) and not store.in_thread:
                return await action.send(store, self.lease)  # runs inline: a cancellation cannot cut it
            sent = action.send(store, self.lease)
        else:
            run = contextvars.copy_context().run  # a local store: off the loop, as asyncio.to_thread
            sent = asyncio.get_running_loop().run_in_executor(None, run, action.send, store, self.lease)
        if not isinstance(action, _Reserve | _Resolve):  # a read: nothing to undo if cut short
            return await sent
        return await self._uncut(asyncio.ensure_future(sent), action)

    async def _uncut(self, write: asyncio.Future[Any], action: _Reserve | _Resolve) -> Any:
        """Await a store write that a cancellation (``asyncio.wait_for``, a client gone) must not cut
        short: its command may already be in the store (a reply on the wire, a local store's thread
        running). The write runs on, shielded; a cancelled caller waits for it, releases what a reserve
        admitted (rather than leave it held until its lease ends), then is cancelled. Cancelled again
        meanwhile, it leaves that to a task in ``settling``."""
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            undo = asyncio.ensure_future(self._undo(write, action))
            settling.add(undo)
            undo.add_done_callback(settling.discard)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(undo)
            raise

    async def _undo(self, write: asyncio.Future[Any], action: _Reserve | _Resolve) -> None:
        """After a cancellation: wait for ``write``, release the hold a reserve made, and say what happened
        (the cancelled flow cannot)."""
        try:
            done = await write
        except LedgerError as exc:
            commit = isinstance(action, _Resolve) and action.actual is not None
            op = "reserve" if isinstance(action, _Reserve) else "commit" if commit else "release"
            reason = f"the {op} of a cancelled call failed ({exc}); a hold it left ends with its lease"
            self._tell(action, None, "store_unavailable", reason=reason)
            if isinstance(action, _Resolve) and action.actual is not None:
                cost = to_usd(action.actual.get(Unit.USD, 0))
                self._tell(action, None, "spend_lost", actual=cost, reason=f"could not record: {exc}")
            return
        except Exception:  # refused, or bad input: nothing held
            return
        if isinstance(action, _Resolve):
            return  # a commit or release, done: the books are right
        try:
            await self._perform_async(_Resolve(done, None, {"error": "CancelledError"}), no_call)
        except Exception as exc:
            reason = f"could not release the hold of a cancelled call ({exc}); it ends with its lease"
            self._tell(action, done, "store_unavailable", reason=reason)
            return
        self._tell(action, done, "released", reason="CancelledError", data={"error": "CancelledError"})

    def _tell(
        self, action: _Reserve | _Resolve, reservation: Reservation | None, kind: EventKind, **fields: Any
    ) -> None:
        """An event about a cancelled call's store write, from what the action carries."""
        if not wanted(kind, self.hooks):
            return
        meta: Mapping[str, Any] = {}
        if isinstance(action, _Resolve):
            reservation = action.reservation
            labels = scope_labels(reservation.held)
        else:
            meta = action.meta
            labels = tuple(meta.get("scopes", ()))
        estimated = meta.get("estimated_usd")
        emit(
            Event(
                kind, model=meta.get("model"), scopes=labels,
                reservation_id=None if reservation is None else reservation.id, attempt=meta.get("attempt"),
                estimated=None if estimated is None else Decimal(estimated), **fields,
            ),
            self.hooks,
        )  # fmt: skip

    # -- jobs ------------------------------------------------------------------------------------

    def reserve(
        self,
        *,
        usd: Money | None = None,
        tokens: int | None = None,
        requests: int | None = None,
        name: str | None = None,
        lease: float = 3600.0,
        **scopes: str,
    ) -> Job:
        """Hold an amount for a whole job; guarded calls inside draw on it instead of reserving each.

        ``with guard.reserve(usd="2.00", feature="ingest") as job:`` (or ``async with``, or
        ``@guard.reserve(...)`` on the job's function) reserves once on the job's scopes (``global``,
        the given ones, and those of ``budget_context``), refuses a call inside that would not fit in
        what is left, and on leaving commits what the calls cost and releases the rest. Pass an amount
        for each unit the scopes' budgets count (usd, tokens, requests). ``lease`` bounds how long a
        crashed job's hold survives. See ``budgetguard._job`` for the details."""
        amounts: dict[Unit, int] = {}
        if usd is not None:
            amounts[Unit.USD] = to_nano(usd, what="usd")
        for unit, value in ((Unit.TOKENS, tokens), (Unit.REQUESTS, requests)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigurationError(f"{unit.value} must be a non-negative int, got {value!r}")
                amounts[unit] = value
        for kind, ident in scopes.items():
            if not isinstance(ident, str):
                raise ConfigurationError(f"reserve() takes literal scope ids, e.g. {kind}='ingest'")
            Scope("global") if kind == "global" else Scope(kind, ident)
        label = name or scopes.get("feature") or "job"
        return Job(self, amounts=amounts, scopes=scopes, name=label, lease=lease)

    def _job_flow(self, job: Job, opening: bool, unsettled: int = 0) -> Flow:
        if opening:  # the job's scopes: global, the given ones and budget_context's, as it starts
            scopes = _scope_set({**self.default_scopes, **current_scopes(), **job.scopes})  # literal ids
            job.labels = scopes.labels
        ctx = _JobCtx(self, job, job.labels)
        if opening:
            parent = job.parent
            unnamed = () if parent is not None else tuple(sorted(self.required_kinds - scopes.kinds))
            if unnamed:  # (a nested job draws on its parent: its scopes were checked)
                ctx.emit("refused", reason=unnamed[0], data={"missing_scope": unnamed})
                raise MissingScopeError(unnamed)
            counters = parent.counters if parent is not None else self.counters_for(scopes.scopes)
            missing = sorted({c.unit.value for c in counters if c.unit not in job.amounts})
            if missing:
                where = parent.scope if parent is not None else ", ".join(ctx.labels)
                raise ConfigurationError(
                    f"the budgets on {where} count {' and '.join(missing)}: pass "
                    f"{'=..., '.join(missing)}=... to reserve() as well"
                )
            holds = tuple(Hold(c, job.amounts[c.unit]) for c in counters)
            if not holds:  # no budget applies: hold its USD on the metering counter, for the journal
                if Unit.USD not in job.amounts:
                    job.metered = True  # no USD to hold: what its calls cost is held and committed at its end
                    return
                holds = (Hold(self.METERING, job.amounts[Unit.USD]),)
            try:
                meta = {"job": job.name, "scopes": ctx.labels}
                job.reservation = yield _Reserve(holds, meta, True, job.lease, parent)
            except BudgetExceededError as refused:
                ctx.emit("refused", reason=refused.scope)
                raise
            except LedgerError as down:
                ctx.store_down(down)  # fail_closed raises; fail_open runs the job on its own limit
                job.lost = True
                return
            ctx.reservation_id = job.reservation.id
            ctx.emit("reserved")
            return
        used = job.used()
        cost = used.get(Unit.USD, job.cost_nano)
        if job.metered:  # a job with no budget and no USD amount: hold what its calls cost, to commit it
            try:
                meta = {"job": job.name, "scopes": ctx.labels}
                job.reservation = yield _Reserve((Hold(self.METERING, cost),), meta, False, job.lease)
            except LedgerError as down:
                job.lost = True
                ctx.store_down(down)  # fail_closed raises; fail_open: reported lost below
        if job.reservation is None:
            if job.lost:
                ctx.emit("spend_lost", actual=cost, reason="fail_open: the store was unavailable")
            return
        ctx.reservation_id = job.reservation.id
        # the metering counter (a job without a USD amount) is charged what its calls cost
        actual = {h.counter.unit: used.get(h.counter.unit, job.cost_nano) for h in job.reservation.held}
        summary: dict[str, Any] = {
            "calls": job.calls,
            "usage": job.usage.to_dict(),
            "models": dict(job.models),
            "cost_nano": job.cost_nano,
        }
        if len(job.models) == 1:  # reports group by model: a one-model job is that model's spend
            summary["model"] = next(iter(job.models))
        if unsettled:
            summary["unsettled_calls"] = unsettled  # charged at their holds
        try:
            outcome = yield _Resolve(job.reservation, actual, summary)
        except LedgerError as down:
            ctx.emit("store_unavailable", reason=str(down))
            ctx.emit("spend_lost", actual=cost, reason=f"could not record: {down}")
            if self.on_store_error == "fail_closed":
                raise
            return
        ctx.emit("committed", actual=cost)
        if outcome.overrun:
            ctx.emit("overrun", actual=cost)
        ctx._thresholds(job.reservation, actual, outcome.spent)

    def _run_job(self, job: Job, *, opening: bool, unsettled: int = 0) -> None:
        self._run_sync(self._job_flow(job, opening, unsettled), no_call)

    async def _arun_job(self, job: Job, *, opening: bool, unsettled: int = 0) -> None:
        await self._run_async(self._job_flow(job, opening, unsettled), no_call)

    # -- calls made elsewhere ----------------------------------------------------------------------

    def attempt(
        self,
        request: Mapping[str, Any] | Estimate,
        *,
        provider: str | None = None,
        usage: Callable[[Any], Usage] = Usage.from_response,
        enforce: bool = True,
        scopes: Mapping[str, ScopeSpec] | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> Attempt:
        """One call that a framework sends and reports through callbacks (LangChain's handlers, say).

        ``reserve()`` before it is sent, then ``commit(response)`` or ``fail(error)``: the decorator's flow
        (events, thresholds, ``track()``, journal) without its retries: each retry is a new attempt.
        ``scopes`` are specs as in ``with_budget``, resolved over ``arguments`` and ``budget_context()``.
        """
        est = request if isinstance(request, Estimate) else self.estimator(request, provider=provider)
        resolved = _resolve_scopes(
            scopes or {}, (), dict(arguments or {}), arguments or {}, self.default_scopes
        )
        plan = _Plan(resolved, (est.model,), lambda model, counted: est, usage, None, enforce)
        return Attempt(self, plan)

    # -- decorators ------------------------------------------------------------------------------

    @overload
    def with_budget(
        self,
        fn: Callable[P, T],
        *,
        estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
        usage: Callable[[Any], Usage] | None = None,
        route: Sequence[str] | None = None,
        at: float | None = None,
        fit: bool | int | Fit | None = None,
        hold: Learned | None = None,
        **scopes: ScopeSpec,
    ) -> Callable[P, T]: ...

    @overload
    def with_budget(
        self,
        fn: None = None,
        *,
        estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
        usage: Callable[[Any], Usage] | None = None,
        route: Sequence[str] | None = None,
        at: float | None = None,
        fit: bool | int | Fit | None = None,
        hold: Learned | None = None,
        **scopes: ScopeSpec,
    ) -> Decorator: ...

    def with_budget(
        self,
        fn: Callable[P, T] | None = None,
        *,
        estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
        usage: Callable[[Any], Usage] | None = None,
        route: Sequence[str] | None = None,
        at: float | None = None,
        fit: bool | int | Fit | None = None,
        hold: Learned | None = None,
        **scopes: ScopeSpec,
    ) -> Any:
        """Enforce the budgets on every call of the decorated function (sync, async or streaming).

        Scopes: ``user="{user_id}"`` (a template over the call's arguments), ``feature="search"``
        (literal), ``team=lambda *a, **kw: ...`` (a callable of the same arguments), plus whatever
        ``budget_context()`` holds; ``global`` is always included.

        ``fit=True`` (or a floor, ``fit=256``, or ``Fit(...)``) lowers the request's max output tokens
        to what is left instead of refusing (see ``budgetguard._fit``); ``hold=Learned(...)`` holds a
        learned share of the worst case (see ``budgetguard._calibration``). ``None``: the guard's.
        """
        decorate = functools.partial(
            self._decorate, enforce=True, estimate=estimate, usage=usage, route=route, at=at, scopes=scopes,
            fit=fit, hold=hold,
        )  # fmt: skip
        return decorate if fn is None else decorate(fn)

    @overload
    def metered(
        self,
        fn: Callable[P, T],
        *,
        estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
        usage: Callable[[Any], Usage] | None = None,
        **scopes: ScopeSpec,
    ) -> Callable[P, T]: ...

    @overload
    def metered(
        self,
        fn: None = None,
        *,
        estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
        usage: Callable[[Any], Usage] | None = None,
        **scopes: ScopeSpec,
    ) -> Decorator: ...

    def metered(
        self,
        fn: Callable[P, T] | None = None,
        *,
        estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
        usage: Callable[[Any], Usage] | None = None,
        **scopes: ScopeSpec,
    ) -> Any:
        """Like ``with_budget`` but never refuses: spend is recorded on the counters (``METERING``'s
        when no budget applies) and in the journal."""
        decorate = functools.partial(
            self._decorate, enforce=False, estimate=estimate, usage=usage, route=None, at=None, scopes=scopes
        )
        return decorate if fn is None else decorate(fn)

    def _decorate(
        self,
        fn: Callable[..., Any],
        *,
        enforce: bool,
        estimate: Callable[..., Estimate | Mapping[str, Any]] | None,
        usage: Callable[[Any], Usage] | None,
        route: Sequence[str] | None,
        at: float | None,
        scopes: Mapping[str, ScopeSpec],
        fit: bool | int | Fit | None = None,
        hold: Learned | None = None,
    ) -> Callable[..., Any]:
        if at is not None and not 0 < at <= 1:
            raise ConfigurationError("at= is a fraction of the budget, e.g. 0.8")
        threshold = None if at is None else Decimal(str(at)).as_integer_ratio()  # exact, no float maths
        for kind in scopes:  # fail at decoration time on a bad scope kind, not on the first call
            Scope("global") if kind == "global" else Scope(kind, "x")
        # literal ids only: the call's scopes are fixed unless a budget_context() adds some
        literal = {kind: spec for kind, spec in scopes.items() if isinstance(spec, str) and "{" not in spec}
        default_ids = self.default_scopes
        fixed_scopes = _scope_set({**default_ids, **literal}) if len(literal) == len(scopes) else None
        provider = sdk_provider(fn)  # the SDK: the request's wire format
        priced_at = endpoint_provider(fn) if provider else None  # where it goes: its prices
        target = without_sdk_retries(fn) if provider else fn
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        is_async = inspect.iscoroutinefunction(inspect.unwrap(fn))
        params = {} if signature is None else signature.parameters
        names = params.keys()
        by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        keywords = (
            signature is not None and provider is None and all(p.kind in by_name for p in params.values())
        )
        defaults = {name: p.default for name, p in params.items() if p.default is not p.empty}
        read_usage = usage or Usage.from_response
        estimator = self.estimator
        sdk, seen = provider is not None, None if signature is None else params
        fitting, accepts = fit_for(fit, self.fit, sdk, seen) if enforce else (None, None)
        held = _checked_hold(hold) if hold is not None else self.hold if enforce else None
        function = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
        streaming = provider == "openai" and getattr(fn, "__name__", "") == "stream"

        def plan_call(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[_Plan, Callable[[str | None], Any]]:
            bound = None
            if keywords and not args and kwargs.keys() <= names:
                arguments = {**defaults, **kwargs}  # what binding a keyword-only call gives, for less
            elif signature is not None and provider is None:
                try:
                    bound = signature.bind(*args, **kwargs)
                    bound.apply_defaults()
                    arguments = dict(bound.arguments)
                except TypeError:
                    bound, arguments = None, dict(kwargs)
            else:
                arguments = dict(kwargs)
            # (arguments is a new dict, the SDK method's kwargs for a provider: the request can be it)
            request = arguments if provider or is_request(arguments) else None
            if provider == "openai" and request is not None:
                prepare_openai_stream(request, streaming=streaming)
            if fixed_scopes is None or current_scopes():
                resolved = _resolve_scopes(scopes, args, kwargs, arguments, default_ids)
            else:
                resolved = fixed_scopes
            primary = request.get("model") if request else arguments.get("model")
            models = tuple(route) if route else (primary if isinstance(primary, str) else None,)

            def request_for(model: str | None) -> Estimate | Mapping[str, Any]:
                if estimate is not None:
                    given = estimate(*args, **kwargs)
                    if isinstance(given, Estimate):
                        if model is not None and model != given.model:
                            raise ConfigurationError(
                                "routing needs the request, not a ready Estimate: let estimate= "
                                "return the request kwargs"
                            )
                        return given
                    return {**given, **({"model": model} if model else {})}
                if request is None:
                    raise ConfigurationError(
                        f"cannot see the LLM request in the arguments of {getattr(fn, '__qualname__', fn)}; "
                        "pass estimate=lambda *a, **kw: {'model': ..., 'messages': ..., 'max_tokens': ...}"
                    )
                if not model or model == request.get("model"):
                    return request  # read only, by the estimator and count_request
                return {**request, "model": model}

            def estimate_for(model: str | None, counted: int | None) -> Estimate:
                given = request_for(model)
                if isinstance(given, Estimate):
                    return given
                # the flow asked count_tokens already (counted is None when off or failed: offline)
                return estimator(given, provider=priced_at, api=provider, input_tokens=counted, count=False)

            def count_for(model: str | None) -> Mapping[str, Any] | None:
                given = request_for(model)
                return (
                    None
                    if isinstance(given, Estimate)
                    else estimator.count_request(given, provider=priced_at, api=provider)
                )

            fitted = None if fitting is None else Fitting(fitting, request_for, priced_at, provider, accepts)
            sent = {} if fitted is None else fitted.sent  # the lowered output keys (filled by the flow)

            def call(model: str | None) -> Any:
                if provider is not None:
                    final = dict(request or kwargs)
                    if model:
                        final["model"] = model
                    return target(*args, **{**final, **sent} if sent else final)
                changes = {**sent, "model": model} if model and model != primary else sent
                if changes:
                    if bound is not None and changes.keys() <= bound.arguments.keys():
                        rebound = inspect.BoundArguments(bound.signature, {**bound.arguments, **changes})
                        return target(*rebound.args, **rebound.kwargs)
                    return target(*args, **{**kwargs, **changes})
                return target(*args, **kwargs)

            counting = estimator.anthropic_count_tokens is not None
            plan = _Plan(
                resolved,
                models,
                estimate_for,
                read_usage,
                threshold,
                enforce,
                count_for if counting else None,
                function,
                fitted,
                held,
            )
            return plan, call

        if is_async:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                plan, call = plan_call(args, kwargs)
                return await self._run_async(self._flow(plan), call)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            plan, call = plan_call(args, kwargs)
            return self._run_sync(self._flow(plan), call)

        return wrapper


class _Ctx:
    """One attempt's bookkeeping: events, settling its reservation, and what to do when the store fails."""

    __slots__ = ("attempt", "est", "guard", "labels", "lost", "reservation_id", "started")

    def __init__(self, guard: Guard, est: Estimate, labels: tuple[str, ...], attempt: int) -> None:
        self.guard, self.est, self.labels, self.attempt = guard, est, labels, attempt
        self.reservation_id: str | None = None
        self.lost = False  # fail_open admitted this attempt without a reservation
        self.started = time.monotonic()

    @property
    def model(self) -> str | None:
        return self.est.model

    @property
    def estimated(self) -> Decimal | None:
        return self.est.cost

    def emit(
        self, kind: EventKind, *, actual: int | None = None, reason: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        if not wanted(kind, self.guard.hooks):
            return
        emit(
            Event(
                kind=kind,
                model=self.model,
                scopes=self.labels,
                reservation_id=self.reservation_id,
                attempt=self.attempt,
                estimated=self.estimated,
                actual=None if actual is None else to_usd(actual),
                reason=reason,
                data=data or {},
            ),
            self.guard.hooks,
        )

    def store_down(self, down: LedgerError) -> None:
        """Fail closed (raise) or open (go on), as configured; either way, say so."""
        if self.guard.on_store_error == "fail_closed":
            self.emit("store_unavailable", reason=str(down))
            raise down
        self.emit("store_unavailable", reason=f"fail_open: {down}")

    def settle(
        self, reservation: Reservation | None, usage: Usage | None, flags: Mapping[str, Any],
        *, retry: bool = False, recorded: bool = False,
    ) -> Generator[Action, Any, None]:  # fmt: skip
        """Commit ``usage`` (or release when None). The call already happened: a store failure here
        cannot undo it. It is reported as lost spend (the hold expires after its lease) and, when
        failing closed, raised. With ``retry`` (a dropped stream's settlement, which its drain retries)
        it is raised, reported ``store_unavailable`` with ``will_retry``, and not lost yet; ``recorded``:
        an earlier try recorded the usage with the trackers."""
        variant, model = flags.get("variant", self.est.variant), flags.get("priced_as", self.est.model)
        try:
            actual = None if usage is None else self.guard._actual(model, usage, self.est, variant)
        except PricingError as unpriced:  # a billed unit with no price: the reserved worst case, flagged
            self.emit("usage_missing", reason=str(unpriced))
            usage, actual = self.est.usage, self._reserved()
            flags = {**flags, "usage_missing": True, "unpriced": str(unpriced)}
        if actual is not None and max(actual.values()) > INT64_MAX:  # absurd counts: a corrupt response
            self.emit("usage_missing", reason=f"usage {usage} is beyond what a ledger counts")
            usage, actual, flags = self.est.usage, self._reserved(), {**flags, "usage_missing": True}
        cost = None if actual is None else actual[Unit.USD]
        if usage is not None and not recorded:
            record_usage(self.est.model, usage, actual[Unit.USD] if actual else 0)
        if reservation is None:
            if self.lost and cost is not None:
                self.emit("spend_lost", actual=cost, reason="fail_open: the store was unavailable")
            return
        meta = JournalData(flags)
        if actual is not None and usage is not None:  # the journal keeps the cost even without a USD budget
            meta["usage"], meta["cost_nano"] = usage.to_dict(), actual[Unit.USD]
        try:
            outcome = yield _Resolve(reservation, actual, meta)
        except LedgerError as down:
            if retry:  # retried by the guard's next operation, close() or exit: not lost (yet)
                self.emit("store_unavailable", actual=cost, reason=str(down), data={"will_retry": True})
                raise
            self.emit("store_unavailable", reason=str(down))
            self.emit("spend_lost", actual=cost, reason=f"could not record: {down}")
            if self.guard.on_store_error == "fail_closed":
                raise
            return
        kind: EventKind = "released" if actual is None else "committed"
        if wanted(kind, self.guard.hooks):
            data = {**flags, **self._settled(usage, reservation, outcome)}
            self.emit(kind, actual=cost, reason=flags.get("error"), data=data)
        if outcome is not None and outcome.overrun:
            self.emit("overrun", actual=cost)
        if outcome is not None and actual is not None:
            # a repeat's outcome too: the guard commits a reservation once, so a repeat reaches it only
            # when the store's retry found its lost first write; it carries that commit's totals
            self._thresholds(reservation, outcome.charged or actual, outcome.spent)

    def _reserved(self) -> dict[Unit, int]:
        """What the reservation held, as the actual amounts: the worst case, charged when the response's
        usage cannot be priced. No price lookup: it cannot fail after the provider has billed."""
        est = self.est
        tokens = est.input_tokens + est.output_tokens
        return CheckedAmounts({Unit.USD: est.cost_nano, Unit.TOKENS: tokens, Unit.REQUESTS: 1})

    def _settled(
        self, usage: Usage | None, reservation: Reservation, outcome: Outcome | None
    ) -> dict[str, Any]:
        """What a committed or released event carries: the call's duration (seconds, from before its
        reservation), its usage, and each counter's spent amount and limit after the commit."""
        data: dict[str, Any] = {"duration": time.monotonic() - self.started}
        if usage is not None:
            data["usage"] = usage
        if outcome is not None and outcome.spent:
            data["counters"] = tuple(
                {"scope": str(h.counter.scope), "unit": h.counter.unit.value,
                 "period": h.counter.period.value, "spent": spent, "limit": h.limit}
                for h, spent in zip(reservation.held, outcome.spent, strict=False)
            )  # fmt: skip
        return data

    def _thresholds(self, reservation: Reservation, actual: Mapping[Unit, int], after: Sequence[int]) -> None:
        """A "threshold" event for each threshold this commit carried a counter across. Spent only grows
        within a window, so exactly one commit crosses each threshold: once per window, fleet-wide (its
        answer, first or repeated after a lost reply, reaches the one caller that committed it)."""
        thresholds = self.guard.thresholds
        if not thresholds:
            return
        low_num, low_den = _lowest(thresholds)
        for held, spent in zip(reservation.held, after, strict=False):
            spec, limit = held.counter, held.limit
            if not limit or spent * low_den < low_num * limit:
                continue  # below the lowest threshold: none crossed (the common case)
            before = spent - actual[spec.unit]
            for num, den in thresholds:
                if before * den < num * limit <= spent * den:
                    level = f"{(Decimal(num) * 100 / den).normalize():f}%"
                    budget = f"{spec.period.value} {spec.unit.value} budget"
                    self.emit(
                        "threshold",
                        reason=f"{spec.scope} reached {level} of its {budget}",
                        data={"scope": str(spec.scope), "threshold": level, "spent": spent, "limit": limit,
                              "unit": spec.unit.value, "period": spec.period.value},
                    )  # fmt: skip


class _JobCtx(_Ctx):
    """Events of a job's own reservation (``Guard.reserve``): no model, the job's hold as the estimate."""

    __slots__ = ("job",)

    def __init__(self, guard: Guard, job: Job, labels: tuple[str, ...]) -> None:
        self.job = job
        self.guard, self.labels, self.attempt = guard, labels, 1
        self.reservation_id = None
        self.lost = False

    @property
    def model(self) -> str | None:
        return None

    @property
    def estimated(self) -> Decimal | None:
        return to_usd(self.job.amounts[Unit.USD]) if Unit.USD in self.job.amounts else None

    def emit(
        self, kind: EventKind, *, actual: int | None = None, reason: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """The job's own events say so (``data["job"]``): its calls already reported their spend."""
        super().emit(kind, actual=actual, reason=reason, data={**(data or {}), "job": self.job.name})


class NotSent(Exception):
    """The reason an attempt is released without its call (never charged: nothing reached the API)."""


class Attempt:
    """One call reserved, sent and settled by someone else's code (see ``Guard.attempt``).

    The guard's flow runs up to the call, waits there, and resumes with the response or the error;
    ``reserve``/``commit``/``fail`` drive it with the sync driver, ``areserve``/``acommit``/``afail``
    with the async one.
    """

    def __init__(self, guard: Guard, plan: _Plan) -> None:
        self.guard = guard
        self._flow = guard._flow(plan)

    def reserve(self) -> None:
        """Hold the estimate in every budget; raises ``BudgetExceededError`` when one refuses."""
        self.guard._run_sync(self._until_call(None, None), no_call)

    def commit(self, response: Any) -> None:
        """Charge the response's usage (the estimate, flagged, when it carries none)."""
        self.guard._run_sync(self._until_call(response, None), no_call)

    def fail(self, error: BaseException) -> None:
        """Release the hold (or charge the input, per ``charge_failed``) of a call that raised."""
        self.guard._run_sync(self._until_call(None, error), no_call)

    def release(self) -> None:
        """Give the hold back: the call was never sent (a framework dropped the run)."""
        self.fail(NotSent("the attempt was released before its call was sent"))

    async def areserve(self) -> None:
        await self.guard._run_async(self._until_call(None, None), no_call)

    async def arelease(self) -> None:
        await self.afail(NotSent("the attempt was released before its call was sent"))

    async def acommit(self, response: Any) -> None:
        await self.guard._run_async(self._until_call(response, None), no_call)

    async def afail(self, error: BaseException) -> None:
        await self.guard._run_async(self._until_call(None, error), no_call)

    def _until_call(self, reply: Any, error: BaseException | None) -> Flow:
        """Resume the flow and pass its store actions to a driver until it reaches the call or ends."""
        flow = self._flow
        try:
            action = flow.throw(error) if error is not None else flow.send(reply)
            while not isinstance(action, _Call | _Sleep):
                try:
                    answer = yield action
                except BaseException as exc:
                    action = flow.throw(exc)
                else:
                    action = flow.send(answer)
        except StopIteration:
            return
        except BaseException as exc:
            if error is not None and (exc is error or isinstance(exc, tenacity.RetryError)):
                return  # the call's own error, re-raised by the flow once the books are right
            raise
        if isinstance(action, _Sleep):
            flow.close()  # the flow would retry; the caller's framework does that with a new attempt


def _resolve_scopes(
    specs: Mapping[str, ScopeSpec],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    arguments: Mapping[str, Any],
    defaults: Mapping[str, str],
) -> _Scopes:
    """A call's scopes: the decorator's specs over ``budget_context()``'s over the guard's default ids.
    A spec that gives ``None`` (a callable's result, a template argument) names no id."""
    ids: dict[str, str] = {**defaults, **current_scopes()} if defaults else dict(current_scopes())
    for kind, spec in specs.items():
        if callable(spec):
            value = spec(*args, **kwargs)
        elif "{" in spec:
            try:
                if any(arguments[name] is None for name in _template_arguments(spec)):
                    continue  # user="{user_id}" with user_id=None: no id (not the id "None")
                value = spec.format_map(arguments)
            except (KeyError, IndexError) as exc:
                raise ConfigurationError(
                    f"scope template {spec!r} names an argument the call lacks: {exc}"
                ) from None
        else:
            value = spec
        if value is not None:
            ids[kind] = str(value)
    return _scope_set(ids)


@functools.lru_cache(maxsize=1024)
def _template_arguments(spec: str) -> tuple[str, ...]:
    """The arguments a template reads: ``"{user.id}-{team}"`` -> ``("user", "team")``."""
    names = (field for _, field, _, _ in string.Formatter().parse(spec) if field)
    return tuple(re.split(r"[.\[]", name, maxsplit=1)[0] for name in names)


def _default_ids(ids: Mapping[str, str]) -> Mapping[str, str]:
    for kind, ident in ids.items():
        if kind == "global" or not isinstance(ident, str):
            raise ConfigurationError(
                "default_scopes maps a scope kind to an id, e.g. {'user': 'anonymous'}; "
                f"got {kind!r}: {ident!r}"
            )
        Scope(kind, ident)  # a bad kind or id fails when the guard is built
    return MappingProxyType(dict(ids))


@dataclass(frozen=True, slots=True)
class _Scopes:
    """A call's scopes (``global`` and one per kind), their labels, and their ids as a cache key."""

    scopes: tuple[Scope, ...]
    labels: tuple[str, ...]
    """The journal's and events' names of the scopes."""
    key: tuple[tuple[str, str], ...]
    """``(kind, id)`` pairs: hashed in C, where hashing the ``Scope`` dataclasses runs Python."""
    kinds: frozenset[str]
    """The kinds named (``global`` included): a call checks ``Guard.required_kinds`` against it."""


def _scope_set(ids: Mapping[str, str]) -> _Scopes:
    """``global`` and a scope per kind: id, validated once per distinct set (calls repeat them)."""
    key = tuple(ids.items())
    found = _scope_sets.get(key)
    if found is None:
        scopes = (Scope("global"), *(Scope(kind, ident) for kind, ident in key if kind != "global"))
        found = _Scopes(scopes, tuple(str(s) for s in scopes), key, frozenset(s.kind for s in scopes))
        if len(_scope_sets) > 10_000:
            _scope_sets.clear()
        _scope_sets[key] = found
    return found


_scope_sets: dict[tuple[tuple[str, str], ...], _Scopes] = {}


@functools.lru_cache(maxsize=64)
def _lowest(thresholds: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The lowest of a guard's thresholds (fractions as numerator, denominator)."""
    return min(thresholds, key=lambda t: Fraction(*t))


@functools.lru_cache(maxsize=4096)
def _usd_text(nano: int) -> str:
    """An estimate's cost as the journal writes it (calls repeat their estimates)."""
    return str(to_usd(nano))


def _checked_hold(hold: Learned | None) -> Learned | None:
    if hold is not None and not isinstance(hold, Learned):
        raise ConfigurationError(f"hold= takes a Learned(...) policy or None (the worst case), got {hold!r}")
    return hold


# -- the default guard -------------------------------------------------------------------------------

_default: Guard | None = None


def default_guard() -> Guard:
    """The guard behind module-level ``with_budget`` / ``metered``: ``BUDGETGUARD_URL`` (or the
    embedded store), no budgets until ``configure()`` adds some."""
    global _default
    if _default is None:
        _default = Guard(default_url())
    return _default


def configure(**settings: Any) -> Guard:
    """Replace the default guard: ``budgetguard.configure(ledger=..., budgets=[...])``."""
    global _default
    _default = Guard(**settings)
    return _default


def with_budget(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@with_budget(user="{user_id}")`` on the default guard (see ``Guard.with_budget``).

    The default guard is looked up at call time, so functions decorated at import time follow a
    later ``configure()``.
    """
    return _on_default_guard("with_budget", fn, options)


def metered(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@metered(feature="ingest")`` on the default guard (see ``Guard.metered``)."""
    return _on_default_guard("metered", fn, options)


def _on_default_guard(method: str, fn: Callable[..., Any] | None, options: Mapping[str, Any]) -> Any:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        built: list[tuple[Guard, Callable[..., Any]]] = []

        def current() -> Callable[..., Any]:
            guard = default_guard()
            if not built or built[0][0] is not guard:
                built[:] = [(guard, getattr(guard, method)(fn, **options))]
            return built[0][1]

        if inspect.iscoroutinefunction(inspect.unwrap(fn)):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await current()(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return current()(*args, **kwargs)

        return wrapper

    return decorate if fn is None else decorate(fn)

"""The guard: estimate -> reserve -> call -> reconcile, with retries, streams and routing.

The call flow is a generator that yields the I/O it needs (``_Reserve``, ``_Resolve``, ``_Call``,
``_Sleep``, ``_Status``) and receives the results; a sync and an async driver perform them. Retries are
tenacity's: its ``iter()`` decides, the flow reserves before every attempt and reconciles after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, overload

import tenacity
from tenacity import RetryCallState

from ._budgets import Budget, Scope, Unit
from ._context import current_scopes, record_usage
from ._errors import BudgetExceededError, ConfigurationError, LedgerError, UsageError
from ._estimate import Estimate, Estimator
from ._events import Event, EventKind, emit, wanted
from ._ledger import AsyncLedger, CounterSpec, Hold, Ledger, Reservation, open_async_ledger, open_ledger
from ._money import INT64_MAX, to_usd
from ._pricing import PriceBook, price_book
from ._providers import (
    StreamFolder,
    is_stream,
    is_stream_manager,
    prepare_openai_stream,
    request_from_arguments,
    sdk_provider,
    without_sdk_retries,
)
from ._tokens import count_text_tokens
from ._usage import Usage

__all__ = [
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
    name = type(exc).__name__
    return name in ("APITimeoutError", "APIConnectionError") or isinstance(
        exc, TimeoutError | ConnectionError
    )


def default_retry() -> tenacity.Retrying:
    """3 attempts, exponential backoff with jitter (0.5 s .. 8 s), on retryable errors only."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=8),
        retry=tenacity.retry_if_exception(_retryable),
        reraise=True,
    )


def charge_if_maybe_billed(exc: BaseException) -> bool:
    """Default policy for a failed attempt: charge its input when the provider may have billed it.

    A timeout or a dropped connection after the request was sent may still be processed (and billed);
    an error response (4xx, 5xx) is not billed by OpenAI or Anthropic, so its hold is released.
    """
    return type(exc).__name__ in ("APITimeoutError", "APIConnectionError") or isinstance(
        exc, TimeoutError | ConnectionError
    )


# -- actions the flow yields ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reserve:
    holds: tuple[Hold, ...]
    meta: Mapping[str, Any]
    enforce: bool = True


@dataclass(frozen=True, slots=True)
class _Resolve:
    reservation: Reservation
    actual: Mapping[Unit, int] | None
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Call:
    model: str | None


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Status:
    counters: tuple[CounterSpec, ...]


Action = _Reserve | _Resolve | _Call | _Sleep | _Status
Flow = Generator[Action, Any, Any]


@dataclass
class _Plan:
    """Everything the flow needs to know about one decorated call."""

    scopes: tuple[Scope, ...]
    models: tuple[str | None, ...]
    estimate: Callable[[str | None], Estimate]
    read_usage: Callable[[Any], Usage]
    at: tuple[int, int] | None
    """Route when a counter's spent + held reaches this fraction (numerator, denominator) of its limit."""
    enforce: bool


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
        retry: tenacity.Retrying | None = None,
        lease: float = 120.0,
        on_event: Callable[[Event], None] | Iterable[Callable[[Event], None]] | None = None,
        on_store_error: Literal["fail_closed", "fail_open"] = "fail_closed",
        charge_failed: Callable[[BaseException], bool] = charge_if_maybe_billed,
        thresholds: Iterable[Decimal | str] = ("0.5", "0.8", "1"),
    ) -> None:
        if on_store_error not in ("fail_closed", "fail_open"):
            raise ConfigurationError("on_store_error must be 'fail_closed' or 'fail_open'")
        self.budgets = tuple(budgets)
        for budget in self.budgets:
            if not isinstance(budget, Budget):
                raise ConfigurationError(f"budgets must be Budget objects, got {budget!r}")
        self.prices = prices or price_book
        self.estimator = estimator or Estimator(prices=self.prices)
        self.retry = retry if retry is not None else default_retry()
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

    def close(self) -> None:
        """Close the sync store (``aclose`` closes the async one too)."""
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
        self.close()

    # -- budgets -> holds ------------------------------------------------------------------------

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

    def _holds(self, scopes: Sequence[Scope], est: Estimate) -> tuple[Hold, ...]:
        amounts = {
            Unit.USD: est.cost_nano,
            Unit.TOKENS: est.input_tokens + est.output_tokens,
            Unit.REQUESTS: 1,
        }
        holds = []
        for spec in self.counters_for(scopes):
            holds.append(Hold(spec, amounts[spec.unit]))
        return tuple(holds)

    # -- the flow --------------------------------------------------------------------------------

    def _flow(self, plan: _Plan) -> Flow:
        retrying = self.retry.copy()
        retrying.begin()
        state = RetryCallState(retrying, None, (), {})
        labels = tuple(str(s) for s in plan.scopes)
        model_index = 0
        last_error: BaseException | None = None
        while True:
            do = retrying.iter(state)
            if isinstance(do, tenacity.DoSleep):
                state.prepare_for_next_attempt()
                yield _Sleep(float(do))
                continue
            if not isinstance(do, tenacity.DoAttempt):
                return do
            attempt = state.attempt_number
            # -- reserve, routing to a cheaper model when needed
            while True:
                model = plan.models[model_index]
                est = plan.estimate(model)
                ctx = _Ctx(self, est, labels, attempt)
                holds = self._holds(plan.scopes, est)
                if plan.at is not None and model_index + 1 < len(plan.models) and holds:
                    try:
                        statuses = yield _Status(tuple(h.counter for h in holds))
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
                if not holds:
                    reservation = None
                    break
                meta = {"model": est.model, "attempt": attempt, "estimated_usd": str(est.cost)}
                try:
                    reservation = yield _Reserve(holds, meta, plan.enforce)
                except BudgetExceededError as refused:
                    ctx.emit("refused", reason=refused.scope)
                    if model_index + 1 < len(plan.models):
                        ctx.emit("routed", reason=f"refused on {refused.scope}",
                                 data={"to": plan.models[model_index + 1]})  # fmt: skip
                        model_index += 1
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
                break
            # -- call
            try:
                result = yield _Call(model)
            except BaseException as exc:  # the SDK's (or user's) error: reconcile, let tenacity decide
                last_error = exc
                if reservation is not None:
                    charge = self.charge_failed(exc)
                    usage = _input_only(est) if charge else None
                    yield from ctx.settle(reservation, usage, {"error": type(exc).__name__})
                state.set_exception((type(exc), exc, exc.__traceback__))
                continue
            if is_stream(result):
                return _wrap_stream(result, _Settlement(ctx, reservation))
            try:
                usage, flags = plan.read_usage(result), {}
            except Exception as exc:  # no usable usage: charge the worst case and say so
                usage, flags = est.usage, {"usage_missing": True}
                ctx.emit("usage_missing", reason=str(exc))
                yield from ctx.settle(reservation, usage, flags)
                if not isinstance(exc, UsageError):
                    raise  # the caller's usage= hook failed: its error, after the books are right
            else:
                yield from ctx.settle(reservation, usage, flags)
            state.set_result(result)

    def _actual(self, model: str, usage: Usage, est: Estimate) -> dict[Unit, int]:
        cost = est.price.cost_nano(usage) if model == est.model else self.prices.cost_nano(model, usage)
        return {Unit.USD: cost, Unit.TOKENS: usage.total_tokens, Unit.REQUESTS: 1}

    # -- drivers ---------------------------------------------------------------------------------

    def _run_sync(self, flow: Flow, call: Callable[[str | None], Any]) -> Any:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(reply)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                reply = self._perform_sync(action, call)
            except BaseException as exc:
                error = exc

    def _perform_sync(self, action: Action, call: Callable[[str | None], Any]) -> Any:
        if isinstance(action, _Call):
            return call(action.model)
        if isinstance(action, _Sleep):
            time.sleep(action.seconds)
            return None
        return self._on_store(self.ledger, action)

    def _on_store(self, store: Ledger | AsyncLedger, action: _Reserve | _Resolve | _Status) -> Any:
        """Send a store action: its result (a ``Ledger``) or an awaitable of it (an ``AsyncLedger``)."""
        if isinstance(action, _Reserve):
            return store.reserve(action.holds, lease=self.lease, meta=action.meta, enforce=action.enforce)
        if isinstance(action, _Resolve):
            if action.actual is None:
                return store.release(action.reservation, meta=action.meta)
            return store.commit(action.reservation, action.actual, meta=action.meta)
        return store.status(action.counters)

    async def _run_async(self, flow: Flow, call: Callable[[str | None], Any]) -> Any:
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
        if isinstance(action, _Call):
            return await call(action.model)
        if isinstance(action, _Sleep):
            await asyncio.sleep(action.seconds)
            return None
        store = self.async_ledger
        if isinstance(store, AsyncLedger):
            return await self._on_store(store, action)
        return await asyncio.to_thread(self._on_store, store, action)  # a local store: off the loop

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
        **scopes: ScopeSpec,
    ) -> Any:
        """Enforce the budgets on every call of the decorated function (sync, async or streaming).

        Scopes: ``user="{user_id}"`` (a template over the call's arguments), ``feature="search"``
        (literal), ``team=lambda *a, **kw: ...`` (a callable of the same arguments), plus whatever
        ``budget_context()`` holds; ``global`` is always included.
        """
        decorate = functools.partial(
            self._decorate, enforce=True, estimate=estimate, usage=usage, route=route, at=at, scopes=scopes
        )
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
        """Like ``with_budget`` but never refuses: spend is recorded on the counters and the journal."""
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
    ) -> Callable[..., Any]:
        if at is not None and not 0 < at <= 1:
            raise ConfigurationError("at= is a fraction of the budget, e.g. 0.8")
        threshold = None if at is None else Decimal(str(at)).as_integer_ratio()  # exact, no float maths
        for kind in scopes:  # fail at decoration time on a bad scope kind, not on the first call
            Scope("global") if kind == "global" else Scope(kind, "x")
        provider = sdk_provider(fn)
        target = without_sdk_retries(fn) if provider else fn
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        is_async = inspect.iscoroutinefunction(inspect.unwrap(fn))
        read_usage = usage or Usage.from_response
        estimator = self.estimator

        def plan_call(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[_Plan, Callable[[str | None], Any]]:
            arguments: dict[str, Any] = dict(kwargs)
            bound = None
            if signature is not None and provider is None:
                try:
                    bound = signature.bind(*args, **kwargs)
                    bound.apply_defaults()
                    arguments = dict(bound.arguments)
                except TypeError:
                    bound = None
            request = dict(kwargs) if provider else request_from_arguments(arguments)
            if provider == "openai" and request is not None:
                prepare_openai_stream(request)
            resolved = _resolve_scopes(scopes, args, kwargs, arguments)
            primary = request.get("model") if request else arguments.get("model")
            models = tuple(route) if route else (primary if isinstance(primary, str) else None,)

            def estimate_for(model: str | None) -> Estimate:
                if estimate is not None:
                    given = estimate(*args, **kwargs)
                    if isinstance(given, Estimate):
                        if model is not None and model != given.model:
                            raise ConfigurationError(
                                "routing needs the request, not a ready Estimate: let estimate= "
                                "return the request kwargs"
                            )
                        return given
                    return estimator({**given, **({"model": model} if model else {})}, provider=provider)
                if request is None:
                    raise ConfigurationError(
                        f"cannot see the LLM request in the arguments of {getattr(fn, '__qualname__', fn)}; "
                        "pass estimate=lambda *a, **kw: {'model': ..., 'messages': ..., 'max_tokens': ...}"
                    )
                return estimator({**request, **({"model": model} if model else {})}, provider=provider)

            def call(model: str | None) -> Any:
                if provider is not None:
                    final = dict(request or kwargs)
                    if model:
                        final["model"] = model
                    return target(*args, **final)
                if model and model != primary:
                    if bound is not None and "model" in bound.arguments:
                        bound.arguments["model"] = model
                        return target(*bound.args, **bound.kwargs)
                    return target(*args, **{**kwargs, "model": model})
                return target(*args, **kwargs)

            plan = _Plan(resolved, models, estimate_for, read_usage, threshold, enforce)
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

    def __init__(self, guard: Guard, est: Estimate, labels: tuple[str, ...], attempt: int) -> None:
        self.guard, self.est, self.labels, self.attempt = guard, est, labels, attempt
        self.reservation_id: str | None = None
        self.lost = False  # fail_open admitted this attempt without a reservation

    def emit(
        self, kind: EventKind, *, actual: int | None = None, reason: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        if not wanted(kind, self.guard.hooks):
            return
        emit(
            Event(
                kind=kind,
                model=self.est.model,
                scopes=self.labels,
                reservation_id=self.reservation_id,
                attempt=self.attempt,
                estimated=self.est.cost,
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
        self, reservation: Reservation | None, usage: Usage | None, flags: Mapping[str, Any]
    ) -> Generator[Action, Any, None]:
        """Commit ``usage`` (or release when None). The call already happened: a store failure here
        cannot undo it. It is reported as lost spend (the hold expires after its lease) and, when
        failing closed, raised."""
        actual = None if usage is None else self.guard._actual(self.est.model, usage, self.est)
        if actual is not None and max(actual.values()) > INT64_MAX:  # absurd counts: a corrupt response
            self.emit("usage_missing", reason=f"usage {usage} is beyond what a ledger counts")
            usage, flags = self.est.usage, {**flags, "usage_missing": True}
            actual = self.guard._actual(self.est.model, usage, self.est)
        cost = None if actual is None else actual[Unit.USD]
        if usage is not None:
            record_usage(self.est.model, usage, actual[Unit.USD] if actual else 0)
        if reservation is None:
            if self.lost and cost is not None:
                self.emit("spend_lost", actual=cost, reason="fail_open: the store was unavailable")
            return
        meta: dict[str, Any] = {**flags} if usage is None else {"usage": usage.to_dict(), **flags}
        try:
            outcome = yield _Resolve(reservation, actual, meta)
        except LedgerError as down:
            self.emit("store_unavailable", reason=str(down))
            self.emit("spend_lost", actual=cost, reason=f"could not record: {down}")
            if self.guard.on_store_error == "fail_closed":
                raise
            return
        self.emit("released" if actual is None else "committed", actual=cost, reason=flags.get("error"))
        if outcome is not None and outcome.overrun:
            self.emit("overrun", actual=cost)
        if outcome is not None and actual is not None:
            self._thresholds(reservation, actual, outcome.spent)

    def _thresholds(self, reservation: Reservation, actual: Mapping[Unit, int], after: Sequence[int]) -> None:
        """A "threshold" event for each threshold this commit carried a counter across. Spent only grows
        within a window, so exactly one commit crosses each threshold: once per window, fleet-wide."""
        for held, spent in zip(reservation.held, after, strict=False):
            spec, limit = held.counter, held.limit
            before = spent - actual[spec.unit]
            for num, den in self.guard.thresholds:
                if limit and before * den < num * limit <= spent * den:
                    level = f"{(Decimal(num) * 100 / den).normalize():f}%"
                    budget = f"{spec.period.value} {spec.unit.value} budget"
                    self.emit(
                        "threshold",
                        reason=f"{spec.scope} reached {level} of its {budget}",
                        data={"scope": str(spec.scope), "threshold": level, "spent": spent, "limit": limit,
                              "unit": spec.unit.value, "period": spec.period.value},
                    )  # fmt: skip


def _input_only(est: Estimate) -> Usage:
    usage = est.usage
    return Usage(
        input_tokens=usage.input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
    )


def _resolve_scopes(
    specs: Mapping[str, ScopeSpec],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    arguments: Mapping[str, Any],
) -> tuple[Scope, ...]:
    ids: dict[str, str] = dict(current_scopes())
    for kind, spec in specs.items():
        if callable(spec):
            value = spec(*args, **kwargs)
        elif "{" in spec:
            try:
                value = spec.format_map(arguments)
            except (KeyError, IndexError) as exc:
                raise ConfigurationError(
                    f"scope template {spec!r} names an argument the call lacks: {exc}"
                ) from None
        else:
            value = spec
        if value is not None:
            ids[kind] = str(value)
    scopes = [Scope("global")]
    scopes += [Scope(kind, ident) for kind, ident in ids.items() if kind != "global"]
    return tuple(scopes)


# -- streams -----------------------------------------------------------------------------------------


def _wrap_stream(stream: Any, settle: _Settlement) -> Any:
    if is_stream_manager(stream):
        return GuardedStreamManager(stream, settle)
    if hasattr(stream, "__anext__"):
        return GuardedAsyncStream(stream, settle)
    return GuardedStream(stream, settle)


class _Settlement:
    """Commits a stream's reservation exactly once, from its usage or from what was received."""

    def __init__(self, ctx: _Ctx, reservation: Reservation | None) -> None:
        self.ctx = ctx
        self.reservation = reservation
        self.folder = StreamFolder()
        self.done = False
        self.ended = False  # the stream ran to its end (as opposed to closed early or dropped)

    def usage(self) -> tuple[Usage, dict[str, Any]]:
        folder, est = self.folder, self.ctx.est
        if folder.complete and folder.usage is not None:
            return folder.usage, {}
        # No final usage: bill what is known. Input: the provider's count if it sent one (Anthropic's
        # message_start), else the estimate. Output: the larger of a partial count and the streamed
        # text counted with tiktoken.
        streamed = count_text_tokens("".join(folder.text), est.model) if folder.text else 0
        base = folder.usage if folder.usage is not None else _input_only(est)
        usage = dataclasses.replace(base, output_tokens=max(base.output_tokens, streamed), reasoning_tokens=0)
        flags = {"usage_missing": True} if self.ended else {"usage_missing": True, "interrupted": True}
        self.ctx.emit(
            "usage_missing", reason="stream ended without usage" if self.ended else "stream interrupted"
        )
        return usage, flags

    def flow(self) -> Flow:
        usage, flags = self.usage()
        yield from self.ctx.settle(self.reservation, usage, flags)

    def settle_sync(self) -> None:
        if not self.done:
            self.done = True
            self.ctx.guard._run_sync(self.flow(), _no_call)

    async def settle_async(self) -> None:
        if not self.done:
            self.done = True
            await self.ctx.guard._run_async(self.flow(), _no_call)

    def finalize(self) -> None:
        """From ``__del__``: settle if nobody did; never raise from a finalizer."""
        if self.done:
            return
        try:
            self.settle_sync()
        except Exception as exc:
            self.ctx.emit("spend_lost", reason=f"stream collected and could not be settled: {exc!r}")


def _no_call(model: str | None) -> Any:
    raise AssertionError("a settlement makes no call")


class GuardedStream(Iterator[Any]):
    """A provider stream that commits its reservation once: at the end, on close, or when collected."""

    def __init__(self, stream: Any, settle: _Settlement) -> None:
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
        self._settle.finalize()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class GuardedAsyncStream(AsyncIterator[Any]):
    """The async twin of ``GuardedStream``."""

    def __init__(self, stream: Any, settle: _Settlement) -> None:
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
        if self._settle.done:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._settle.finalize()  # no loop left: settle synchronously (a local store) or report
            return
        self._task = loop.create_task(self._settle.settle_async())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class GuardedStreamManager:
    """Anthropic's ``client.messages.stream(...)`` manager: entering yields the SDK's ``MessageStream``
    (its ``text_stream`` and helpers work as usual); leaving settles from the accumulated message."""

    def __init__(self, manager: Any, settle: _Settlement) -> None:
        self._manager = manager
        self._settle = settle
        self._stream: Any = None

    def _observe(self) -> None:
        snapshot = getattr(self._stream, "current_message_snapshot", None) if self._stream else None
        folder = self._settle.folder
        if snapshot is None:
            return
        folder.usage = Usage.from_response(snapshot)
        folder.complete = getattr(snapshot, "stop_reason", None) is not None
        folder.text = [getattr(block, "text", "") or "" for block in getattr(snapshot, "content", ())]

    def __enter__(self) -> Any:
        self._stream = self._manager.__enter__()
        return self._stream

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._manager.__exit__(*exc)
        finally:
            self._observe()
            self._settle.ended = self._settle.folder.complete
            self._settle.settle_sync()

    async def __aenter__(self) -> Any:
        self._stream = await self._manager.__aenter__()
        return self._stream

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc)
        finally:
            self._observe()
            self._settle.ended = self._settle.folder.complete
            await self._settle.settle_async()

    def __del__(self) -> None:
        self._settle.finalize()


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

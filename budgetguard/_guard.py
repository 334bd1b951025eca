"""The guard: estimate -> reserve -> call -> reconcile, with retries, streams and routing.

The call flow is a generator that yields the I/O it needs (``_Reserve``, ``_Resolve``, ``_Call``,
``_Sleep``, ``_Status``) and receives the results; a sync and an async driver perform them. Retries are
tenacity's: its ``iter()`` decides, the flow reserves before every attempt and reconciles after it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import tenacity
from tenacity import RetryCallState

from ._budgets import Budget, Scope, Unit
from ._context import current_scopes, record_usage
from ._errors import BudgetExceededError, ConfigurationError, LedgerError, UsageError
from ._estimate import Estimate, Estimator
from ._events import Event, EventKind, emit
from ._ledger import AsyncLedger, CounterSpec, Hold, Ledger, Reservation, open_async_ledger, open_ledger
from ._money import INT64_MAX, to_usd
from ._pricing import PriceBook, price_book
from ._providers import (
    StreamFolder,
    is_stream,
    prepare_openai_stream,
    request_from_arguments,
    sdk_provider,
    without_sdk_retries,
)
from ._tokens import count_text_tokens
from ._usage import Usage

__all__ = ["Guard", "default_guard", "default_url", "metered", "with_budget"]

P = ParamSpec("P")
T = TypeVar("T")
ScopeSpec = str | Callable[..., Any]


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
    at: float | None
    enforce: bool
    wrap_streams: bool


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
        self._url = ledger if isinstance(ledger, str) else None if ledger is not None else default_url()
        self._sync: Ledger | None = ledger if isinstance(ledger, Ledger) else None
        self._async: AsyncLedger | None = ledger if isinstance(ledger, AsyncLedger) else None

    # -- stores ---------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._sync is None:
            if self._url is None:
                raise ConfigurationError("this guard has only an async ledger; decorate async functions")
            self._sync = open_ledger(self._url)
        return self._sync

    @property
    def async_ledger(self) -> AsyncLedger | Ledger:
        if self._async is not None:
            return self._async
        if self._url is not None and not self._url.startswith(("memory:", "sqlite:")):
            self._async = open_async_ledger(self._url)
            return self._async
        return self.ledger  # local stores: the async driver runs them in a thread

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    # -- budgets -> holds ------------------------------------------------------------------------

    def counters_for(self, scopes: Iterable[Scope]) -> list[CounterSpec]:
        """The counters the budgets put on these scopes (an exact-scope budget replaces its kind's)."""
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
        return specs

    def _holds(self, scopes: Sequence[Scope], est: Estimate, enforce: bool) -> tuple[Hold, ...]:
        amounts = {
            Unit.USD: est.cost_nano,
            Unit.TOKENS: est.input_tokens + est.output_tokens,
            Unit.REQUESTS: 1,
        }
        holds = []
        for spec in self.counters_for(scopes):
            if not enforce:  # metered: count, never refuse (a limit no amount reaches)
                spec = CounterSpec(spec.scope, spec.unit, spec.period, INT64_MAX, spec.tz)
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
                holds = self._holds(plan.scopes, est, plan.enforce)
                if plan.at is not None and model_index + 1 < len(plan.models) and holds:
                    statuses = yield _Status(tuple(h.counter for h in holds))
                    busy = [s for s in statuses if s.limit and (s.spent + s.held) >= plan.at * s.limit]
                    if busy:
                        reason = (
                            f"{busy[0].counter.scope} at {plan.at:.0%} of its {busy[0].counter.period} budget"
                        )
                        self._emit(
                            "routed",
                            est,
                            labels,
                            attempt,
                            reason=reason,
                            data={"to": plan.models[model_index + 1]},
                        )
                        model_index += 1
                        continue
                meta = {"model": est.model, "attempt": attempt, "estimated_usd": str(est.cost)}
                if not holds:
                    reservation = None
                    break
                try:
                    reservation = yield _Reserve(holds, meta)
                except BudgetExceededError as refused:
                    self._emit("refused", est, labels, attempt, reason=str(refused.scope))
                    if model_index + 1 < len(plan.models):
                        self._emit(
                            "routed",
                            est,
                            labels,
                            attempt,
                            reason=f"refused on {refused.scope}",
                            data={"to": plan.models[model_index + 1]},
                        )
                        model_index += 1
                        continue
                    if last_error is not None:
                        raise refused from last_error
                    raise
                except LedgerError as down:
                    if self.on_store_error == "fail_closed":
                        self._emit("store_unavailable", est, labels, attempt, reason=str(down))
                        raise
                    self._emit("store_unavailable", est, labels, attempt, reason=f"fail_open: {down}")
                    reservation = None
                break
            # -- call
            try:
                result = yield _Call(model)
            except (
                BaseException
            ) as exc:  # the SDK's (or the user's) error: reconcile, then let tenacity decide
                last_error = exc
                if reservation is not None:
                    charge = self.charge_failed(exc)
                    actual = self._actual(est.model, _input_only(est), est) if charge else None
                    yield _Resolve(reservation, actual, {"error": type(exc).__name__})
                    self._emit(
                        "committed" if charge else "released", est, labels, attempt, reason=type(exc).__name__
                    )
                state.set_exception((type(exc), exc, exc.__traceback__))
                continue
            if plan.wrap_streams and is_stream(result):
                return _wrap_stream(self, result, reservation, est, labels, attempt)
            try:
                usage = plan.read_usage(result)
                flags: dict[str, Any] = {}
            except UsageError as missing:
                usage = est.usage  # no usage reported: charge the worst case and say so
                flags = {"usage_missing": True}
                self._emit("usage_missing", est, labels, attempt, reason=str(missing))
            if reservation is not None:
                yield from self._commit(reservation, est, usage, labels, attempt, flags)
            else:
                self._record(est, usage)
            state.set_result(result)

    def _actual(self, model: str, usage: Usage, est: Estimate) -> dict[Unit, int]:
        cost = est.price.cost_nano(usage) if model == est.model else self.prices.cost_nano(model, usage)
        return {Unit.USD: cost, Unit.TOKENS: usage.total_tokens, Unit.REQUESTS: 1}

    def _commit(
        self, reservation: Reservation, est: Estimate, usage: Usage, labels: tuple[str, ...], attempt: int,
        flags: Mapping[str, Any],
    ) -> Generator[Action, Any, None]:  # fmt: skip
        actual = self._actual(est.model, usage, est)
        meta = {"usage": usage.to_dict(), **flags}
        outcome = yield _Resolve(reservation, actual, meta)
        record_usage(est.model, usage, actual[Unit.USD])
        self._emit("committed", est, labels, attempt, actual=actual[Unit.USD])
        if outcome is not None and outcome.overrun:
            self._emit("overrun", est, labels, attempt, actual=actual[Unit.USD])

    def _record(self, est: Estimate, usage: Usage) -> None:
        cost = self._actual(est.model, usage, est)[Unit.USD]
        record_usage(est.model, usage, cost)
        self._emit("spend_lost", est, (), None, actual=cost, reason="fail_open: the store was unavailable")

    def _emit(
        self, kind: EventKind, est: Estimate, labels: tuple[str, ...], attempt: int | None, *,
        actual: int | None = None, reason: str | None = None, data: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        emit(
            Event(
                kind=kind,
                model=est.model,
                scopes=labels,
                attempt=attempt,
                estimated=est.cost,
                actual=None if actual is None else to_usd(actual),
                reason=reason,
                data=data or {},
            ),
            self.hooks,
        )

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
        if isinstance(action, _Reserve):
            return self.ledger.reserve(action.holds, lease=self.lease, meta=action.meta)
        if isinstance(action, _Resolve):
            if action.actual is None:
                return self.ledger.release(action.reservation, meta=action.meta)
            return self.ledger.commit(action.reservation, action.actual, meta=action.meta)
        if isinstance(action, _Status):
            return self.ledger.status(action.counters)
        time.sleep(action.seconds)
        return None

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
            if isinstance(action, _Reserve):
                return await store.reserve(action.holds, lease=self.lease, meta=action.meta)
            if isinstance(action, _Resolve):
                if action.actual is None:
                    return await store.release(action.reservation, meta=action.meta)
                return await store.commit(action.reservation, action.actual, meta=action.meta)
            return await store.status(action.counters)
        return await asyncio.to_thread(self._perform_sync, action, call)

    # -- decorators ------------------------------------------------------------------------------

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
        for kind in scopes:
            Scope(kind, "x") if kind != "global" else Scope("global")
        provider = sdk_provider(fn)
        target = without_sdk_retries(fn) if provider else fn
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        is_async = inspect.iscoroutinefunction(fn)
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
                        return (
                            given
                            if model is None or model == given.model
                            else estimator({**_request_of(given), "model": model})
                        )
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

            plan = _Plan(resolved, models, estimate_for, read_usage, at, enforce, True)
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


def _request_of(est: Estimate) -> dict[str, Any]:
    raise ConfigurationError(
        "routing needs the request, not a ready Estimate: let estimate= return the request kwargs"
    )


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


def _wrap_stream(guard: Guard, stream: Any, reservation: Reservation | None, est: Estimate,
                 labels: tuple[str, ...], attempt: int) -> Any:  # fmt: skip
    settle = _Settlement(guard, reservation, est, labels, attempt)
    if hasattr(stream, "__anext__"):
        return GuardedAsyncStream(stream, settle)
    return GuardedStream(stream, settle)


class _Settlement:
    """Commits a stream's reservation exactly once, from its usage or from what was received."""

    def __init__(self, guard: Guard, reservation: Reservation | None, est: Estimate, labels: tuple[str, ...],
                 attempt: int) -> None:  # fmt: skip
        self.guard, self.reservation, self.est, self.labels, self.attempt = (
            guard,
            reservation,
            est,
            labels,
            attempt,
        )
        self.folder = StreamFolder()
        self.done = False

    def usage(self) -> tuple[Usage, dict[str, Any]]:
        try:
            return self.folder.final(), {}
        except UsageError:
            streamed = count_text_tokens("".join(self.folder.text), self.est.model)
            partial = _input_only(self.est)
            usage = Usage(
                input_tokens=partial.input_tokens,
                cache_write_tokens=partial.cache_write_tokens,
                cache_write_1h_tokens=partial.cache_write_1h_tokens,
                output_tokens=streamed,
            )
            self.guard._emit(
                "usage_missing", self.est, self.labels, self.attempt, reason="stream ended without usage"
            )
            return usage, {"usage_missing": True, "interrupted": True}

    def flow(self) -> Flow:
        usage, flags = self.usage()
        if self.reservation is None:
            self.guard._record(self.est, usage)
            return
        yield from self.guard._commit(self.reservation, self.est, usage, self.labels, self.attempt, flags)

    def settle_sync(self) -> None:
        if not self.done:
            self.done = True
            self.guard._run_sync(self.flow(), _no_call)

    async def settle_async(self) -> None:
        if not self.done:
            self.done = True
            await self.guard._run_async(self.flow(), _no_call)


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
        if not self._settle.done:
            try:
                self._settle.settle_sync()
            except Exception as exc:  # never raise from a finalizer; the event says what was lost
                self._settle.guard._emit(
                    "spend_lost", self._settle.est, self._settle.labels, None, reason=repr(exc)
                )

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
            loop = None
        if loop is not None:
            self._task = loop.create_task(self._settle.settle_async())
        else:
            self._settle.guard._emit(
                "spend_lost",
                self._settle.est,
                self._settle.labels,
                None,
                reason="async stream collected outside a loop",
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


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
    """``@with_budget(user="{user_id}")`` on the default guard (see ``Guard.with_budget``)."""
    return _Deferred("with_budget", fn, options)()


def metered(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@metered(feature="ingest")`` on the default guard (see ``Guard.metered``)."""
    return _Deferred("metered", fn, options)()


@dataclass
class _Deferred:
    method: str
    fn: Callable[..., Any] | None
    options: Mapping[str, Any]

    def __call__(self) -> Any:
        bound = getattr(default_guard(), self.method)
        return bound(self.fn, **self.options) if self.fn is not None else bound(**self.options)


__all__ += ["GuardedAsyncStream", "GuardedStream", "configure"]

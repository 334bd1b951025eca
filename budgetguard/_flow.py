"""The call flow: retry, route, reserve, call, settle, written once and free of I/O.

``call_flow`` is a generator: it yields the I/O it needs (``_actions``) and a driver (``_drivers``)
performs it, synchronously or on an event loop. It owns the retry loop and asks the tenacity policy
(``_retry``) what to do after each attempt; it reserves before every attempt, routes to a cheaper model
or lowers the output (``fit=``) when a budget is short, and settles after the call (``_settle``); a
stream is settled when it ends (``_streams``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from . import _retry as retries
from ._actions import Call, Count, Flow, NotSent, Reserve, Sleep, Status, current_job
from ._calibration import Learned, held_usd, learned_ratio
from ._core import GuardCore
from ._deferred import Settlement
from ._errors import BudgetExceededError, LedgerError, MissingScopeError, UsageError
from ._estimate import Estimate
from ._events import Event, EventKind, emit, wanted
from ._fit import Fitting
from ._ledger import CounterSpec
from ._ledger._meta import ATTEMPT, ESTIMATE, FALLBACK, FUNCTION, MODEL, SCOPES, derivable, usd_text
from ._ledger._types import Enforce, JournalData
from ._providers import is_stream, served_model, served_tier
from ._scopes import Scopes
from ._settle import Ctx, input_only, served_flags
from ._streams import wrap_stream
from ._usage import Usage

__all__ = ["Plan", "call_flow"]


@dataclass(slots=True)
class Plan:
    """Everything the flow needs to know about one decorated call."""

    scopes: Scopes
    models: tuple[str | None, ...]
    estimate: Callable[[str | None, int | None], Estimate]
    """The estimate for a model, given an exact input count (or ``None`` to count offline)."""
    read_usage: Callable[[Any], Usage]
    at: tuple[int, int] | None
    """Route when a counter's spent + held reaches this fraction (numerator, denominator) of its limit."""
    enforce: Enforce
    count: Callable[[str | None], Mapping[str, Any] | None] | None = None
    """The token counting request for a model, when exact counting is on (``None``: it is off)."""
    function: str | None = None
    """The decorated function's qualified name (the journal's ``function``)."""
    fit: Fitting | None = None
    hold: Learned | None = None
    """Hold a learned share of the worst case (``None``: the worst case)."""
    first_attempt: int = 1
    """The number of the flow's first attempt: above 1 when the caller retries on its own and says so
    (an SDK's ``x-stainless-retry-count`` under the httpx transport), journaled and told in events."""
    background: bool = False
    """A Responses API request with ``background=True``: it runs on server-side when its stream is cut
    or closed, billed whole (its stream, cut short, is charged its worst case: ``Settlement``)."""


def call_flow(core: GuardCore, plan: Plan) -> Flow:
    # The first attempt runs without a RetryCallState when tenacity would do nothing around it but
    # return its result (no `before` hook, a policy that never retries a success): one is made on the
    # first failure only, with the call's start as its own (see _retry.alone_first).
    policy = core._retry or core.retry  # (the default policy is made at the first call)
    started = time.monotonic()
    # a shadow guard checks as an enforcing one would and never refuses, nor changes the call (no
    # routing at a threshold, no fitting): the refusal it would have been is journaled and sent
    enforce: Enforce = "shadow" if plan.enforce is True and core.mode == "shadow" else plan.enforce
    steer = enforce is True
    missing = () if core.required_kinds <= plan.scopes.kinds else _unnamed(core, plan, enforce)
    state = None if retries.alone_first(policy) else retries.start(policy, started)
    labels = plan.scopes.labels
    model_index = 0
    attempt = plan.first_attempt
    last_error: BaseException | None = None
    while True:
        if state is not None:
            attempt = plan.first_attempt - 1 + state.attempt_number
            retries.before(state)
        # -- reserve, routing to a cheaper model when needed, fitting the last one (fit=)
        refits = 0
        while True:
            model = plan.models[model_index]
            ask = None if plan.count is None else plan.count(model)
            counted = None
            if ask is not None:
                counted = yield Count(ask)
            est = plan.estimate(model, counted)
            ctx = Ctx(core, est, labels, attempt)
            if ask is not None and counted is None:
                ctx.emit("estimate_fallback", reason="count_tokens failed; reserved the offline estimate")
            job = current_job(core)
            learned = usd = None
            if plan.hold is not None:  # a learned share of the worst case (hold=Learned(...))
                learned = yield from learned_ratio(core.calibration, plan.hold, est.model, plan.function)
                usd = held_usd(plan.hold, learned, est.cost_nano)
            holds = core.holds(plan.scopes, est, job, usd)
            fitted: dict[str, Any] | None = None
            lowered = None
            # the counters routing and fit read: only enforcing ones (a budget in shadow never changes a call)
            steering: tuple[CounterSpec, ...] = ()
            if steer and (plan.fit is not None or plan.at is not None):
                steering = tuple(h.counter for h in holds if not h.counter.shadow)
            if steering and plan.fit is not None and model_index + 1 == len(plan.models):
                try:
                    statuses = yield Status(steering, job)
                except LedgerError as down:
                    plan.fit.sent.clear()
                    ctx.store_down(down)  # fail_closed raises; fail_open reserves it unfitted
                else:
                    held = functools.partial(held_usd, plan.hold, learned)
                    lowered = plan.fit.lower(model, est, statuses, core.estimator, held)
                if lowered is not None and lowered[1]:  # lowered to fit what is left
                    est, fitted = lowered
                    usd = None if plan.hold is None else held_usd(plan.hold, learned, est.cost_nano)
                    holds = core.holds(plan.scopes, est, job, usd)
                    ctx = Ctx(core, est, labels, attempt)
            if steering and plan.at is not None and model_index + 1 < len(plan.models):
                try:
                    statuses = yield Status(steering, job)
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
            meta = JournalData({MODEL: est.model, ESTIMATE: est.cost_nano})  # compact: see _ledger._meta
            if attempt != 1:
                meta[ATTEMPT] = attempt
            if not derivable(labels, holds):
                meta[SCOPES] = labels
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
                meta[FUNCTION] = plan.function
            if steer and model_index + 1 < len(plan.models):  # a refusal of this one is routed
                meta[FALLBACK] = plan.models[model_index + 1]
            if usd is not None and usd != est.cost_nano:
                meta["reserved_usd"] = usd_text(usd)
            if fitted is not None:
                meta["fitted"] = fitted
            try:
                reservation = yield Reserve(holds, meta, enforce, None, job)
            except BudgetExceededError as refused:
                if est.tools_defaulted:  # (its message names max_tool_calls)
                    refused = refused.with_tools(est.tools_defaulted)
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
                raise refused
            except LedgerError as down:
                ctx.store_down(down)
                reservation = None
                ctx.lost = True
            else:
                ctx.reservation_id = reservation.id
                ctx.meta = meta  # (a late charge journals it again: see _settle.resolve)
                ctx.held(est.cost_nano if usd is None else usd)
                ctx.emit("reserved")
                if reservation.shadowed is not None:
                    ctx.shadowed(reservation.shadowed, holds)
                if fitted is not None:
                    ctx.emit("fitted", reason=f"max output tokens {fitted['from']} -> {fitted['to']}",
                             data=fitted)  # fmt: skip
            break
        # -- call
        try:
            result = yield Call(model)
        except GeneratorExit:  # an abandoned flow (Attempt): no call was made; its lease ends the hold
            ctx.unhold()
            raise
        except BaseException as exc:  # the SDK's (or user's) error: reconcile, let tenacity decide
            last_error = exc
            if reservation is not None:  # (a call never sent is never charged, whatever the policy)
                charge = not isinstance(exc, NotSent) and core.charge_failed(exc)
                usage = input_only(est) if charge else None
                yield from ctx.settle(reservation, usage, {"error": type(exc).__name__})
            if state is None:
                state = retries.start(policy, started)
            state.set_exception((type(exc), exc, exc.__traceback__))
        else:
            if is_stream(result):
                return wrap_stream(result, Settlement(ctx, reservation, background=plan.background))
            try:
                usage, tier, answered = plan.read_usage(result), served_tier(result), served_model(result)
                flags = (  # no tier and the model asked: as reserved
                    {} if tier is None and answered == est.model
                    else served_flags(tier, est, answered, core.prices)
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
        wait = retries.decide(state)  # raises the error it does not retry, or RetryError
        if isinstance(wait, tuple):
            return wait[0]
        yield Sleep(wait)
        state.prepare_for_next_attempt()


def _unnamed(core: GuardCore, plan: Plan, enforce: Enforce) -> tuple[str, ...]:
    """The required kinds a call names no id for (see ``missing_kinds``). None inside a job: its calls
    draw on its hold, whose scopes were checked when it started."""
    if current_job(core) is not None:
        return ()
    kinds = tuple(sorted(core.required_kinds - plan.scopes.kinds))
    return missing_kinds(kinds, enforce, functools.partial(_missing_event, core, plan.scopes.labels))


def missing_kinds(
    kinds: tuple[str, ...], enforce: Enforce, tell: Callable[[EventKind, str, dict[str, Any]], None]
) -> tuple[str, ...]:
    """What a call or job naming no id for the required ``kinds`` does. Enforced, it is refused
    (``MissingScopeError``; a ``refused`` event names the first kind as a refusal names its scope);
    metered or in shadow, it goes on without those budgets, reported (a ``scope_missing`` event, told
    through ``tell(kind, reason, data)``) and flagged by the caller in its journal data (``missing_scope``:
    the kinds returned)."""
    if enforce is True:
        tell("refused", kinds[0], {"missing_scope": kinds})
        raise MissingScopeError(kinds)
    tell("scope_missing", f"no {' or '.join(kinds)} id: not on those budgets", {"missing_scope": kinds})
    return kinds


def _missing_event(
    core: GuardCore, labels: tuple[str, ...], kind: EventKind, why: str, data: dict[str, Any]
) -> None:
    if wanted(kind, core.hooks):
        emit(Event(kind, scopes=labels, reason=why, data=data), core.hooks)

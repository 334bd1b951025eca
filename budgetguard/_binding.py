"""Request binding: how a call of a decorated function (or SDK method) becomes the flow's ``Plan``.

At decoration time ``bind`` reads the function once: whether it is an SDK method (its provider, where it
is priced, its SDK retries turned off), its signature, the scope specs, ``fit=`` and ``hold=``. Per call,
``Binder.plan`` binds the arguments, finds the LLM request in them (the SDK method's kwargs, or a
request-shaped argument, or ``estimate=``'s answer), resolves the scopes, and returns the plan with the
call to make for a model (rebinding the arguments when routing or ``fit=`` changes the request).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._budgets import Scope
from ._context import current_scopes
from ._core import GuardCore, checked_hold
from ._errors import ConfigurationError
from ._estimate import Estimate
from ._fit import Fitting, fit_for
from ._flow import Plan
from ._options import Options
from ._providers import (
    as_read,
    as_sent,
    at_location,
    endpoint_provider,
    is_request,
    prepare_openai_stream,
    runner_refused,
    sdk_provider,
    vertex_location,
    without_sdk_retries,
)
from ._scopes import resolve_scopes, scope_set
from ._usage import Usage

__all__ = ["Binder", "bind"]


@dataclass(frozen=True, slots=True)
class Binder:
    """A decorated function, read: ``plan(args, kwargs)`` gives a call's plan and the call to make."""

    plan: Callable[[tuple[Any, ...], dict[str, Any]], tuple[Plan, Callable[[str | None], Any]]]
    is_async: bool


def bind(core: GuardCore, fn: Callable[..., Any], options: Options) -> Binder:
    """How a call of ``fn`` becomes a plan and a call (see the module docstring); raises at decoration
    time on a bad option or scope kind, not on the first call."""
    enforce, scopes, estimate, usage, route, at = (
        options.enforce, options.scopes, options.estimate, options.usage, options.route, options.at
    )  # fmt: skip
    if at is not None and not 0 < at <= 1:
        raise ConfigurationError("at= is a fraction of the budget, e.g. 0.8")
    threshold = None if at is None else Decimal(str(at)).as_integer_ratio()  # exact, no float maths
    for kind in scopes:  # fail at decoration time on a bad scope kind, not on the first call
        Scope("global") if kind == "global" else Scope(kind, "x")
    # literal ids only: the call's scopes are fixed unless a budget_context() adds some
    literal = {kind: spec for kind, spec in scopes.items() if isinstance(spec, str) and "{" not in spec}
    default_ids = core.default_scopes
    fixed_scopes = scope_set({**default_ids, **literal}) if len(literal) == len(scopes) else None
    provider = sdk_provider(fn)  # the SDK: the request's wire format
    if provider is not None:
        runner_refused(fn, provider)  # (a tool runner: a request per turn, guarded by guard.wrap)
    priced_at = endpoint_provider(fn) if provider else None  # where it goes: its prices
    location = vertex_location(fn) if priced_at == "google" else None  # (a regional endpoint's price)
    target = without_sdk_retries(fn) if provider else fn
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    is_async = inspect.iscoroutinefunction(inspect.unwrap(fn))
    params = {} if signature is None else signature.parameters
    names = params.keys()
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    keywords = signature is not None and provider is None and all(p.kind in by_name for p in params.values())
    defaults = {name: p.default for name, p in params.items() if p.default is not p.empty}
    extra = next((name for name, p in params.items() if p.kind is p.VAR_KEYWORD), None)
    read_usage = usage or Usage.from_response
    estimator = core.estimator
    sdk, seen = provider is not None, None if signature is None else params
    fitting, accepts = fit_for(options.fit, core.fit, sdk, seen) if enforce else (None, None)
    hold = options.hold
    held = checked_hold(hold) if hold is not None else core.hold if enforce else None
    function = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    streaming = provider == "openai" and getattr(fn, "__name__", "") == "stream"

    def plan_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Plan, Callable[[str | None], Any]]:
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
        # (arguments is a new dict, the SDK method's kwargs for a provider: the request can be it,
        # without the keys an SDK sentinel leaves out: max_tokens=omit is no max_tokens)
        if extra is not None and bound is not None:  # def call(**kwargs): the request is in what it
            # collects, beside the named arguments (which win; scope templates read only those)
            sendable: dict[str, Any] = as_sent({**arguments[extra], **arguments})
            sendable.pop(extra, None)
        else:
            sendable = as_sent(arguments)
        request = sendable if provider or is_request(sendable) else None
        if provider == "openai" and request is not None:
            prepare_openai_stream(request, streaming=streaming)
        # what the provider receives (extra_body merged over the named keys...): what is estimated
        read = None if request is None or estimate is not None else as_read(request)
        if fixed_scopes is None or current_scopes():
            resolved = resolve_scopes(scopes, args, kwargs, arguments, default_ids)
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
                found: Mapping[str, Any] = {**given, **({"model": model} if model else {})}
            elif read is None:
                raise ConfigurationError(
                    f"cannot see the LLM request in the arguments of {getattr(fn, '__qualname__', fn)}; "
                    "pass estimate=lambda *a, **kw: {'model': ..., 'messages': ..., 'max_tokens': ...}"
                )
            else:  # read only, by the estimator and count_request
                found = read if not model or model == read.get("model") else {**read, "model": model}
            return found if location is None else at_location(found, location)  # (its endpoint's price)

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
                if sent:
                    final.update(sent)
                if "extra_body" in final:  # (which the SDK sends over the named keys)
                    final = _changed(final, {**sent, **({"model": model} if model else {})})
                return target(*args, **final)
            changes = {**sent, "model": model} if model and model != primary else sent
            if changes:
                if bound is not None and changes.keys() <= bound.arguments.keys():
                    rebound = inspect.BoundArguments(bound.signature, _changed(bound.arguments, changes))
                    return target(*rebound.args, **rebound.kwargs)
                return target(*args, **_changed(kwargs, changes))
            return target(*args, **kwargs)

        counting = estimator.anthropic_count_tokens is not None
        plan = Plan(
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
            background=in_background(read if read is not None else request or sendable),
        )
        return plan, call

    return Binder(plan_call, is_async)


def _changed(kwargs: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """An SDK call's ``kwargs`` with ``changes`` (a routed model, fitted output keys), also in its
    ``extra_body`` where that sets them: the SDK sends extra_body's keys over the named ones."""
    changed = {**kwargs, **changes}
    extra = kwargs.get("extra_body")
    if isinstance(extra, Mapping) and not changes.keys().isdisjoint(extra):
        changed["extra_body"] = {**extra, **{key: changes[key] for key in changes if key in extra}}
    return changed


def in_background(request: Mapping[str, Any]) -> bool:
    """Whether ``request`` runs in the background (``background=True``, also in ``extra_body``, whose keys
    the SDK sends over the named ones): read also when ``estimate=`` answers for the request."""
    extra = request.get("extra_body")
    sent = {**request, **extra} if isinstance(extra, Mapping) else request
    return sent.get("background") is True

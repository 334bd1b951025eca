"""The decorators' options, each signature written once: it types the decorators and parses their options.

``budget_options`` is ``with_budget``'s signature and ``metered_options`` is ``metered``'s; a decorator
declared with ``@decorating(budget_options)`` (``Guard.with_budget`` and the module-level ``with_budget``
alike) is typed by it for the type checker, both as ``@with_budget`` and as ``@with_budget(...)``, and
parses what it is given by calling it. One edit of an option changes every place that takes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from ._calibration import Learned
from ._estimate import Estimate
from ._fit import Fit
from ._scopes import ScopeSpec
from ._usage import Usage

__all__ = ["Decorator", "Options", "budget_options", "decorating", "metered_options"]

P = ParamSpec("P")
Q = ParamSpec("Q")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Options:
    """What a decorator was given (see ``Guard.with_budget`` for each option)."""

    enforce: bool
    scopes: Mapping[str, ScopeSpec]
    estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None
    usage: Callable[[Any], Usage] | None = None
    route: Sequence[str] | None = None
    at: float | None = None
    fit: bool | int | Fit | None = None
    hold: Learned | None = None


def budget_options(
    *,
    estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
    usage: Callable[[Any], Usage] | None = None,
    route: Sequence[str] | None = None,
    at: float | None = None,
    fit: bool | int | Fit | None = None,
    hold: Learned | None = None,
    **scopes: ScopeSpec,
) -> Options:
    """``with_budget``'s options."""
    return Options(True, scopes, estimate, usage, route, at, fit, hold)


def metered_options(
    *,
    estimate: Callable[..., Estimate | Mapping[str, Any]] | None = None,
    usage: Callable[[Any], Usage] | None = None,
    **scopes: ScopeSpec,
) -> Options:
    """``metered``'s options."""
    return Options(False, scopes, estimate, usage)


class Decorator(Protocol):
    """What ``with_budget(...)`` returns without a function: it keeps the function's signature."""

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...


class Decorating(Protocol[Q]):
    """A decorator taking the options ``Q``, used bare (``@d``, ``d(fn, ...)``) or called (``@d(...)``)."""

    @overload
    def __call__(self, fn: Callable[P, T], /, *args: Q.args, **kwargs: Q.kwargs) -> Callable[P, T]: ...

    @overload
    def __call__(self, fn: None = None, /, *args: Q.args, **kwargs: Q.kwargs) -> Decorator: ...


def decorating(options: Callable[Q, Options]) -> Callable[[Callable[..., Any]], Decorating[Q]]:
    """Type a decorator ``def d(fn=None, /, **options)`` with the signature of ``options`` (a function
    above): the implementation parses its ``**options`` by calling ``options(**options)``."""

    def typed(decorator: Callable[..., Any]) -> Decorating[Q]:
        own = inspect.signature(decorator)  # (self and fn; help() and inspect show the options too)
        first = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        decorator.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[*first, *inspect.signature(options).parameters.values()]
        )
        return decorator  # (a plain function: the Protocol types it for the checker)

    return typed

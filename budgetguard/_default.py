"""The default guard behind the module-level ``with_budget``, ``metered`` and ``configure()``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ._core import default_url
from ._guard import Guard
from ._options import budget_options, decorating, metered_options

__all__ = ["configure", "default_guard", "metered", "with_budget"]


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


@decorating(budget_options)
def with_budget(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@with_budget(user="{user_id}")`` on the default guard (see ``Guard.with_budget``).

    The default guard is looked up at call time, so functions decorated at import time follow a
    later ``configure()``.
    """
    return _on_default_guard("with_budget", fn, options)


@decorating(metered_options)
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

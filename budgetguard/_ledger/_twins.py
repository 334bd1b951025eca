"""Sync and async methods generated from one signature: the ledger's public API is written once.

``Ledger`` declares each operation once (names, defaults, types, docstring). From that declaration,
``abstract_async`` makes ``AsyncLedger``'s abstract twin, and ``forward`` makes a store's public method,
sync or async, whose body passes the arguments on, positionally, to the store's ``_<name>`` (and
awaits it, for an async store): one edit of a signature changes every store, sync and async alike.
The code is generated once, at import, as ``dataclasses`` does: a call costs one plain call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["abstract_async", "forward", "forward_async", "optional_async"]

P = ParamSpec("P")
R = TypeVar("R")


def _generate(abstract: Callable[..., Any], *, asynchronous: bool, body: str | None = None) -> Any:
    signature = inspect.signature(abstract)
    defaults: dict[str, Any] = {}
    params: list[str] = []
    args: list[str] = []
    for param in signature.parameters.values():
        if param.kind is param.KEYWORD_ONLY and "*" not in params:
            params.append("*")
        text = param.name
        if param.default is not param.empty:
            defaults[f"_default_{param.name}"] = param.default
            text += f"=_default_{param.name}"
        params.append(text)
        if param.name != "self":
            args.append(param.name)
    name = abstract.__name__
    if body is None:
        body = f"return {'await ' if asynchronous else ''}self._{name}({', '.join(args)})"
    source = f"{'async ' if asynchronous else ''}def {name}({', '.join(params)}):\n    {body}\n"
    namespace: dict[str, Any] = {}
    exec(source, defaults, namespace)  # (our own declarations, at import)
    method = namespace[name]
    method.__doc__ = abstract.__doc__
    method.__annotations__ = dict(abstract.__annotations__)
    method.__signature__ = signature  # (what help() and inspect show: the declaration's)
    method.__module__ = abstract.__module__
    return method


def forward(abstract: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """A sync store's method declared by ``abstract``: ``self._<name>(*arguments)``."""
    method: Callable[Concatenate[Any, P], R] = _generate(abstract, asynchronous=False)
    return method


def forward_async(
    abstract: Callable[Concatenate[Any, P], R],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """An async store's method declared by (sync) ``abstract``: ``await self._<name>(*arguments)``."""
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]] = _generate(abstract, asynchronous=True)
    return method


def abstract_async(
    abstract: Callable[Concatenate[Any, P], R],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """The async twin of the abstract method ``abstract``, abstract too (a subclass implements it)."""
    method = _generate(abstract, asynchronous=True, body="raise NotImplementedError")
    method.__isabstractmethod__ = True
    twin: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]] = method
    return twin


def optional_async(
    abstract: Callable[Concatenate[Any, P], R],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """The async twin of an optional operation (a store may lack it): it raises ``NotImplementedError``."""
    body = "raise NotImplementedError(f'{type(self).__name__} has no " + abstract.__name__ + "')"
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]] = _generate(
        abstract, asynchronous=True, body=body
    )
    return method

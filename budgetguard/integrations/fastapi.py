"""FastAPI and any ASGI app: a budget context per request, refusals as HTTP 429 (extra ``fastapi``).

``BudgetMiddleware`` opens ``budget_context`` (scope ids from headers, auth or a callable) and
``track()`` around every HTTP request, turns a ``BudgetExceededError`` that escapes the app into a 429
(or 402) JSON response with ``Retry-After`` at the window's reset, and adds ``X-Budget-Cost-USD``,
``X-Budget-Input-Tokens``, ``X-Budget-Output-Tokens`` and ``X-Budget-Remaining-USD`` to the response.
The headers count the guarded calls made before the response starts (a streaming body's later calls
are charged, but too late for its headers).

A guarded call of a request that brings no id for a scope kind the guard requires
(``Guard.required_kinds``: a budget applies to every id of that kind, no default id,
``missing_scope="refuse"``) is refused with ``MissingScopeError``; escaping the app, it is answered 400
(``missing_scope``, naming the header to send): the client has to send the id, and no retry or wait would
help (401 would claim an authentication scheme and a ``WWW-Authenticate`` challenge the middleware does
not know). Calls are refused, not requests: routes that make no guarded call (health checks, login) need
no id.

``budget_scope(...)`` is the same context as a FastAPI dependency, for some routes only (say, when other
routes take anonymous requests); register ``budget_exceeded_handler`` for ``BudgetExceededError`` and
``MissingScopeError``.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .._budgets import Scope, Unit
from .._context import Tracker, budget_context, track
from .._default import default_guard
from .._errors import BudgetExceededError, ConfigurationError, LedgerError, MissingScopeError
from .._guard import Guard
from .._ledger import AsyncLedger, CounterSpec, CounterStatus
from .._money import to_usd
from . import missing_extra

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Message, Receive, Send
    from starlette.types import Scope as ASGIScope
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("fastapi", exc) from exc

__all__ = [
    "BudgetMiddleware", "ScopeSource", "budget_exceeded_handler", "budget_scope", "missing_scope_response",
    "refusal_response",
]  # fmt: skip

ScopeSource = str | Callable[[Request], str | Awaitable[str | None] | None]
"""Where a scope id comes from: a header name, or a function of the request (auth, path, state)."""

Body = Callable[[BudgetExceededError], Mapping[str, Any]]


class BudgetMiddleware:
    """``app.add_middleware(BudgetMiddleware, guard=guard, scopes={"user": "x-user-id"})``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: Guard | None = None,
        scopes: Mapping[str, ScopeSource] | None = None,
        status_code: int = 429,
        body: Body | None = None,
        remaining: bool = True,
    ) -> None:
        self.app = app
        self._guard = guard
        self.scopes = _checked(scopes or {})
        self.status_code = status_code
        self.body = body
        self.remaining = remaining

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            ids = await _resolve(self.scopes, Request(scope, receive))
        except ConfigurationError as bad:  # a scope id no store can hold (empty, too long, ...)
            await JSONResponse({"error": "bad_scope", "message": str(bad)}, status_code=400)(
                scope, receive, send
            )
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = await self._headers(tracker, ids)
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        with budget_context(**ids), track() as tracker:
            try:
                await self.app(scope, receive, send_with_headers)
            except (BudgetExceededError, MissingScopeError) as refused:
                if started:
                    raise  # the response is on its way: too late for a 429
                if isinstance(refused, MissingScopeError):
                    response = missing_scope_response(refused, self.scopes)
                else:
                    response = refusal_response(refused, status_code=self.status_code, body=self.body)
                await response(scope, receive, send_with_headers)

    async def _headers(self, tracker: Tracker, ids: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
        headers = {
            "x-budget-cost-usd": f"{tracker.cost:f}",
            "x-budget-input-tokens": str(tracker.input_tokens),
            "x-budget-output-tokens": str(tracker.output_tokens),
        }
        if self.remaining:
            left = await remaining_usd(self._guard or default_guard(), ids)
            if left is not None:
                headers["x-budget-remaining-usd"] = left
        return [(k.encode(), v.encode()) for k, v in headers.items()]


async def remaining_usd(guard: Guard, ids: Mapping[str, str]) -> str | None:
    """The least USD left in the money budgets of these scopes (global included), or ``None``
    when none has a money budget or the store cannot say (a header is not worth a failed response)."""
    ids = {**guard.default_scopes, **ids}
    scopes = [Scope("global"), *(Scope(kind, ident) for kind, ident in ids.items())]
    specs = [spec for spec in guard.counters_for(scopes) if spec.unit is Unit.USD]
    if not specs:
        return None
    try:
        statuses = await _status(guard, specs)
    except LedgerError:
        return None
    least = min(max(s.limit - s.spent - s.held, 0) for s in statuses)
    return f"{to_usd(least):f}"


async def _status(guard: Guard, specs: list[CounterSpec]) -> list[CounterStatus]:
    store = guard.async_ledger
    if isinstance(store, AsyncLedger):
        return await store.status(specs)
    return await asyncio.to_thread(store.status, specs)


def refusal_response(
    refused: BudgetExceededError, *, status_code: int = 429, body: Body | None = None
) -> Response:
    """The HTTP answer to a refusal: JSON, with ``Retry-After`` (seconds) when the window resets."""
    headers = {}
    retry_after = None
    if refused.resets_at is not None:
        retry_after = max(1, math.ceil((refused.resets_at - datetime.now(UTC)).total_seconds()))
        headers["Retry-After"] = str(retry_after)
    content = body(refused) if body is not None else {
        "error": "budget_exceeded",
        "message": refused.reason,
        "scope": refused.scope,
        "period": refused.period,
        "unit": refused.unit,
        "needed": _amount(refused.requested),
        "left": _amount(max(refused.remaining, type(refused.remaining)(0))),  # (a zero of its own type)
        "resets_at": refused.resets_at.isoformat() if refused.resets_at else None,
        "retry_after": retry_after,
    }  # fmt: skip
    return JSONResponse(dict(content), status_code=status_code, headers=headers)


def _amount(value: Decimal | int) -> str | int:
    """A refusal's amount in a JSON body: USD as an exact decimal string, tokens and requests as ints."""
    return f"{value.normalize():f}" if isinstance(value, Decimal) else value


def missing_scope_response(
    missing: MissingScopeError, sources: Mapping[str, ScopeSource] | None = None
) -> Response:
    """The HTTP answer to a request without a required scope id: 400, JSON, telling the client what to
    send (the header, when the id comes from one), not how the server is configured."""
    wanted = []
    for kind in missing.kinds:
        source = (sources or {}).get(kind)
        wanted.append(f"the {source} header" if isinstance(source, str) else f"a {kind} id")
    message = f"this request needs {' and '.join(wanted)}: send it and try again"
    content = {"error": "missing_scope", "message": message, "kinds": list(missing.kinds)}
    return JSONResponse(content, status_code=400)


async def budget_exceeded_handler(request: Request, exc: Exception) -> Response:
    """``app.add_exception_handler(BudgetExceededError, budget_exceeded_handler)``: refusals as 429;
    register it for ``MissingScopeError`` too: those are answered 400."""
    if isinstance(exc, MissingScopeError):
        return missing_scope_response(exc)
    assert isinstance(exc, BudgetExceededError)
    return refusal_response(exc)


def budget_scope(**scopes: ScopeSource) -> Callable[[Request], AsyncIterator[Tracker]]:
    """A FastAPI dependency: ``Depends(budget_scope(user="x-user-id"))`` opens the budget context for
    the route and gives it the request's ``Tracker``."""
    checked = _checked(scopes)

    async def dependency(request: Request) -> AsyncIterator[Tracker]:
        ids = await _resolve(checked, request)
        with budget_context(**ids), track() as tracker:
            yield tracker

    return dependency


def _checked(scopes: Mapping[str, ScopeSource]) -> dict[str, ScopeSource]:
    for kind, source in scopes.items():
        Scope(kind, "x")  # a bad kind (or "global", which has no id) fails at start-up
        if not (isinstance(source, str) or callable(source)):
            raise TypeError(f"scope {kind!r}: pass a header name or a function of the request")
    return dict(scopes)


async def _resolve(scopes: Mapping[str, ScopeSource], request: Request) -> dict[str, str]:
    ids: dict[str, str] = {}
    for kind, source in scopes.items():
        value: Any = request.headers.get(source) if isinstance(source, str) else source(request)
        if inspect.isawaitable(value):
            value = await value
        if value is not None and value != "":
            Scope(kind, str(value))  # validates the id
            ids[kind] = str(value)
    return ids

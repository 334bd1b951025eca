"""FastAPI and any ASGI app: a budget context per request, refusals as HTTP 429 (extra ``fastapi``).

``BudgetMiddleware`` opens ``budget_context`` (scope ids from headers, auth or a callable) and
``track()`` around every HTTP request, turns a ``BudgetExceededError`` that escapes the app (itself, or
chained inside another error: instructor raises ``InstructorRetryException`` from it) into a 429
(or 402) JSON response with ``Retry-After`` at the window's reset, and adds ``X-Budget-Cost-USD``,
``X-Budget-Input-Tokens``, ``X-Budget-Output-Tokens`` and ``X-Budget-Remaining-USD`` to the response.

The response's start is held back until its first body message says whether the body streams
(``more_body``). A streamed body (``StreamingResponse``, SSE) runs its guarded calls after the headers
leave: its headers carry ``X-Budget-Held-USD`` and ``X-Budget-Settled-USD``, never a cost that is not
known yet (``_http``'s rule), and its cost follows as HTTP trailers (``Trailer: X-Budget-Cost-USD, ...``)
when the server offers ASGI's ``http.response.trailers`` and the request sent ``TE: trailers``
(hypercorn and uvicorn over HTTP/2; HTTP/1.1 servers offer none), and to ``on_settled`` (a
``ResponseCost``) once the body has ended, for every response.

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

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from .._context import Tracker, budget_context, track
from .._default import default_guard
from .._errors import BudgetExceededError, ConfigurationError, MissingScopeError
from .._guard import Guard
from . import missing_extra
from ._http import (
    Body,
    OnSettled,
    ResponseCost,
    bad_scope_content,
    budget_headers,
    checked_hook,
    checked_scopes,
    cost_trailers,
    missing_scope_content,
    refusal_content,
    remaining_usd,
    resolve_ids,
    tell_settled,
)
from ._refusal import request_refusal_in

try:
    from starlette.exceptions import HTTPException, WebSocketException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Message, Receive, Send
    from starlette.types import Scope as ASGIScope
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("fastapi", exc) from exc

__all__ = [
    "BudgetMiddleware", "ResponseCost", "ScopeSource", "budget_exceeded_handler", "budget_scope",
    "missing_scope_response", "refusal_response",
]  # fmt: skip

ScopeSource = str | Callable[[Request], str | Awaitable[str | None] | None]
"""Where a scope id comes from: a header name, or a function of the request (auth, path, state)."""

_ANSWERS = (HTTPException, WebSocketException)  # errors the app raises as its own answer, refusal or not


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
        on_settled: OnSettled | None = None,
    ) -> None:
        self.app = app
        self._guard = guard
        self.scopes = _checked(scopes or {})
        self.status_code = status_code
        self.body = body
        self.remaining = remaining
        self.on_settled = checked_hook(on_settled)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            ids = await _resolve(self.scopes, Request(scope, receive))
        except ConfigurationError as bad:  # a scope id no store can hold (empty, too long, ...)
            await JSONResponse(bad_scope_content(bad), status_code=400)(scope, receive, send)
            return
        held: Message | None = None  # the response's start, until its first body message
        started = streamed = ours = joined = False
        may_trail = "http.response.trailers" in scope.get("extensions", {}) and any(
            name == b"te" and b"trailers" in value.lower() for name, value in scope["headers"]
        )

        async def send_with_headers(message: Message) -> None:
            nonlocal held, started, streamed, ours, joined
            kind = message["type"]
            if kind == "http.response.start":
                held = message  # (a refusal's own response replaces one the app started)
                return
            if held is not None:  # the first body message: the body streams, or it is whole
                start, held = held, None
                streamed = kind == "http.response.body" and bool(message.get("more_body"))
                trailing = streamed and may_trail
                extra = await self._headers(tracker, ids, streamed, trailing)
                start = {**start, "headers": [*start.get("headers", ()), *extra]}
                own = bool(start.get("trailers"))  # the app sends trailers of its own
                ours, joined = trailing and not own, trailing and own
                if trailing:
                    start["trailers"] = True
                started = True
                await send(start)
            last = not message.get("more_body" if kind == "http.response.body" else "more_trailers")
            if joined and kind == "http.response.trailers" and last:  # the app's own trailers: ours join
                message = {**message, "headers": [*message.get("headers", ()), *_trailers(tracker)]}
            await send(message)
            if ours and kind == "http.response.body" and last:
                await send({"type": "http.response.trailers", "headers": _trailers(tracker)})

        with budget_context(**ids), track() as tracker:
            failed = True  # (an error escapes: the server answers it, after what it cost was charged)
            try:
                try:
                    await self.app(scope, receive, send_with_headers)
                except Exception as error:  # (one the app's handlers left: a 500, unless it is a refusal)
                    refused = request_refusal_in(error, _ANSWERS)
                    if refused is None or started:
                        raise  # not a refusal; or the response is on its way: too late for a 429
                    if isinstance(refused, MissingScopeError):
                        response = missing_scope_response(refused, self.scopes)
                    else:
                        response = refusal_response(refused, status_code=self.status_code, body=self.body)
                    await response(scope, receive, send_with_headers)
                failed = False
            finally:  # every response, once: one whose body raised after its headers went too
                if started or failed:
                    tell_settled(self.on_settled, tracker, ids, streamed)

    async def _headers(
        self, tracker: Tracker, ids: Mapping[str, str], streamed: bool, trailers: bool
    ) -> list[tuple[bytes, bytes]]:
        left = await remaining_usd(self._guard or default_guard(), ids) if self.remaining else None
        return _encoded(budget_headers(tracker, left, streamed=streamed, trailers=trailers))


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


def _trailers(tracker: Tracker) -> list[tuple[bytes, bytes]]:
    return _encoded(cost_trailers(tracker))


def refusal_response(
    refused: BudgetExceededError, *, status_code: int = 429, body: Body | None = None
) -> Response:
    """The HTTP answer to a refusal: JSON, with ``Retry-After`` (seconds) when the window resets."""
    content, headers = refusal_content(refused, body)
    return JSONResponse(content, status_code=status_code, headers=headers)


def missing_scope_response(
    missing: MissingScopeError, sources: Mapping[str, ScopeSource] | None = None
) -> Response:
    """The HTTP answer to a request without a required scope id: 400, JSON, telling the client what to
    send (the header, when the id comes from one), not how the server is configured."""
    return JSONResponse(missing_scope_content(missing, sources), status_code=400)


async def budget_exceeded_handler(request: Request, exc: Exception) -> Response:
    """``app.add_exception_handler(BudgetExceededError, budget_exceeded_handler)``: refusals as 429;
    register it for ``MissingScopeError`` too: those are answered 400, and for the errors a library
    raises from a refusal (instructor's ``InstructorRetryException``): the refusal inside is answered."""
    refused = request_refusal_in(exc, _ANSWERS)
    if refused is None:
        raise exc
    if isinstance(refused, MissingScopeError):
        return missing_scope_response(refused)
    return refusal_response(refused)


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
    return checked_scopes(scopes)


async def _resolve(scopes: Mapping[str, ScopeSource], request: Request) -> dict[str, str]:
    return await resolve_ids(scopes, request, lambda r, name: r.headers.get(name))

"""Flask: a budget context per request, refusals as HTTP 429, ``X-Budget-*`` headers (extra ``flask``).

``BudgetGuard(app, guard=guard, scopes={"user": "X-User-Id"})`` (or ``init_app(app)`` later) mirrors the
FastAPI middleware with the same bodies (``_http``): ``before_request`` opens ``budget_context`` and
``track()`` (scope ids from headers or a function of the request), error handlers answer a
``BudgetExceededError`` with 429 (or ``status_code=402``) and ``Retry-After``, and a ``MissingScopeError``
with 400 (also one that reaches the view chained inside another error, as instructor raises its
``InstructorRetryException`` from it: ``_refusal.request_refusal_in``; an ``HTTPException`` the view raised
for it is its own answer), and ``after_request`` adds ``X-Budget-Cost-USD``, ``X-Budget-Input-Tokens``,
``X-Budget-Output-Tokens`` and ``X-Budget-Remaining-USD``; ``on_settled`` is given each response's
``ResponseCost`` once its body has ended.

A streamed response (a generator) is read by the server after the request has been torn down: its body
runs in the request's context all the same, so the calls it makes and the guarded streams it reads are
charged to the request's scopes. Its headers leave first, so they carry ``X-Budget-Held-USD`` and
``X-Budget-Settled-USD``, not a cost (``_http``'s rule); WSGI has no HTTP trailers, so its cost goes to
``on_settled`` (and the journal).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

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
    missing_scope_content,
    refusal_content,
    remaining_usd_sync,
    resolve_ids_sync,
    run_in_context,
    tell_settled,
)
from ._refusal import request_refusal_in

try:
    from flask import Flask, Request, Response, g, jsonify, request
    from werkzeug.exceptions import HTTPException
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("flask", exc) from exc

__all__ = ["BudgetGuard", "ResponseCost", "ScopeSource"]

ScopeSource = str | Callable[[Request], str | None]
"""Where a scope id comes from: a header name, or a function of the request (auth, path, session)."""

_STATE = "_budgetguard"  # the name of the request's (ExitStack, Tracker, ids) on ``flask.g``


class BudgetGuard:
    """The Flask extension: ``BudgetGuard(app, guard=guard, scopes={"user": "X-User-Id"})``."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        guard: Guard | None = None,
        scopes: Mapping[str, ScopeSource] | None = None,
        status_code: int = 429,
        body: Body | None = None,
        remaining: bool = True,
        on_settled: OnSettled | None = None,
    ) -> None:
        self._guard = guard
        self.scopes: dict[str, ScopeSource] = checked_scopes(scopes or {})
        self.status_code = status_code
        self.body = body
        self.remaining = remaining
        self.on_settled = checked_hook(on_settled)
        if app is not None:
            self.init_app(app)

    @property
    def guard(self) -> Guard:
        return self._guard or default_guard()

    def init_app(self, app: Flask) -> None:
        app.before_request(self._open)
        app.after_request(self._headers)
        app.teardown_request(self._close)
        app.register_error_handler(BudgetExceededError, self.refusal_response)
        app.register_error_handler(MissingScopeError, self.refusal_response)
        handle = app.handle_user_exception

        def handle_user_exception(error: Exception) -> Any:
            """Flask's own, given the refusal a view's error carries: its handler (``refusal_response``,
            or the app's) answers it; no handler, and Flask raises the view's error as before. An error
            the app (or its blueprint) has a handler of its own for is the app's to answer (a handler
            of every ``Exception`` aside)."""
            refused = request_refusal_in(error, (HTTPException,))
            if refused is None or refused is error or _handled_by_app(app, error):
                return handle(error)
            return handle(refused)

        app.handle_user_exception = handle_user_exception  # type: ignore[method-assign,assignment]
        app.extensions["budgetguard"] = self

    def refusal_response(self, refused: Exception) -> tuple[Response, int, dict[str, str]]:
        """The answer to a refusal that escapes a view: 429 (or 402) with ``Retry-After``, or 400 for a
        missing scope id (an error handler, registered by ``init_app``)."""
        if isinstance(refused, MissingScopeError):
            return jsonify(missing_scope_content(refused, self.scopes)), 400, {}
        assert isinstance(refused, BudgetExceededError)
        content, headers = refusal_content(refused, self.body)
        return jsonify(content), self.status_code, headers

    def _open(self) -> tuple[Response, int] | None:
        try:
            ids = resolve_ids_sync(self.scopes, request, lambda r, name: r.headers.get(name))
        except ConfigurationError as bad:  # a scope id no store can hold (empty, too long, ...)
            return jsonify(bad_scope_content(bad)), 400
        stack = ExitStack()
        stack.enter_context(budget_context(**ids))
        tracker = stack.enter_context(track())
        setattr(g, _STATE, (stack, tracker, ids))
        return None

    def _headers(self, response: Response) -> Response:
        state: tuple[ExitStack, Tracker, dict[str, str]] | None = getattr(g, _STATE, None)
        if state is None:  # the request was answered before it was opened (a bad id, another hook)
            return response
        _, tracker, ids = state
        streamed = response.is_streamed
        if streamed:  # (still inside the request's context: the body runs in a copy of it)

            def then() -> None:
                tell_settled(self.on_settled, tracker, ids, True)

            response.response = run_in_context(contextvars.copy_context(), response.response, then)
        left = remaining_usd_sync(self.guard, ids) if self.remaining else None
        response.headers.update(budget_headers(tracker, left, streamed=streamed))
        if not streamed:  # (a streamed one tells when its body ends)
            tell_settled(self.on_settled, tracker, ids, False)
        return response

    def _close(self, _: BaseException | None) -> None:
        state: tuple[ExitStack, Tracker, dict[str, str]] | None = g.pop(_STATE, None)
        if state is not None:
            state[0].close()


def _handled_by_app(app: Flask, error: Exception) -> bool:
    """Whether ``app`` (or the request's blueprints) has a handler for ``error``'s own class or one of its
    bases short of ``Exception``: the handler Flask finds for it is not the one for any ``Exception``."""
    blueprints = request.blueprints
    found = app._find_error_handler(error, blueprints)
    return found is not None and found is not app._find_error_handler(Exception(), blueprints)

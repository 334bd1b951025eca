"""Django: a budget context per request, refusals as HTTP 429, ``X-Budget-*`` headers (extra ``django``).

Add ``"budgetguard.integrations.django.BudgetMiddleware"`` to ``MIDDLEWARE`` and configure it in
settings::

    BUDGETGUARD = {"guard": guard, "scopes": {"user": "X-User-Id"}}

``guard`` is a ``Guard`` or its dotted path (default: the default guard); ``scopes`` maps a scope kind to
a header name or a function of the ``HttpRequest`` (your auth); ``status_code`` (429, or 402), ``body``
(a function of the ``BudgetExceededError`` building the JSON body), ``remaining`` (the
``X-Budget-Remaining-USD`` header, default on) and ``on_settled`` (a function, or its dotted path, given
each response's ``ResponseCost`` once its body has ended) follow the FastAPI middleware, which this one
mirrors: same bodies and headers (``_http``), a missing scope id answered 400, a refusal chained inside
another error (instructor's ``InstructorRetryException``) answered as the refusal.

Sync and async views both run inside the context. A streamed response (``StreamingHttpResponse``) is
read by the server after the middleware returns: its body runs in the request's context all the same,
so the calls it makes and the guarded streams it reads are charged to the request's scopes. Its headers
leave first, so they carry ``X-Budget-Held-USD`` and ``X-Budget-Settled-USD``, not a cost (``_http``'s
rule); Django's handlers send no HTTP trailers, so its cost goes to ``on_settled`` (and the journal).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, cast

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
    remaining_usd,
    remaining_usd_sync,
    resolve_ids,
    resolve_ids_sync,
    run_in_context,
    run_in_context_async,
    tell_settled,
)
from ._refusal import request_refusal_in

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
    from django.http import Http404, HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
    from django.http.multipartparser import MultiPartParserError
    from django.utils.module_loading import import_string
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("django", exc) from exc

__all__ = ["BudgetMiddleware", "ResponseCost", "ScopeSource"]

ScopeSource = str | Callable[[HttpRequest], str | None]
"""Where a scope id comes from: a header name, or a function of the request (auth, path, session)."""

_ANSWERS = (Http404, PermissionDenied, BadRequest, SuspiciousOperation, MultiPartParserError)
"""The errors Django answers with a status of their own (``response_for_exception``): a view's answer."""

_SETTINGS = {"guard", "scopes", "status_code", "body", "remaining", "on_settled"}


class BudgetMiddleware:
    """``MIDDLEWARE = [..., "budgetguard.integrations.django.BudgetMiddleware"]``, set up by
    ``settings.BUDGETGUARD``; or ``BudgetMiddleware(get_response, guard=..., scopes=...)``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any], **options: Any) -> None:
        options = {**getattr(settings, "BUDGETGUARD", {}), **options}
        if unknown := set(options) - _SETTINGS:
            raise ConfigurationError(
                f"BUDGETGUARD has unknown settings {sorted(unknown)}: use {sorted(_SETTINGS)}"
            )
        self.get_response = get_response
        guard = options.get("guard")
        self._guard: Guard | None = import_string(guard) if isinstance(guard, str) else guard
        self.scopes: dict[str, ScopeSource] = checked_scopes(options.get("scopes") or {})
        self.status_code: int = options.get("status_code", 429)
        self.body: Body | None = options.get("body")
        self.remaining: bool = options.get("remaining", True)
        hook = options.get("on_settled")
        hook = import_string(hook) if isinstance(hook, str) else hook
        self.on_settled: OnSettled | None = checked_hook(hook)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        try:
            ids = self._ids(request)
        except ConfigurationError as bad:  # a scope id no store can hold (empty, too long, ...)
            return JsonResponse(bad_scope_content(bad), status=400)
        with budget_context(**ids), track() as tracker:
            try:
                response: HttpResponseBase = self.get_response(request)
            except Exception as error:  # (outside Django's handler)
                response = self._answer(error)
            self._stream_in_context(response, tracker, ids)
        left = remaining_usd_sync(self.guard, ids) if self.remaining else None
        return self._with_headers(response, tracker, ids, left)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        try:
            ids = await resolve_ids(self.scopes, request, lambda r, name: r.headers.get(name))
        except ConfigurationError as bad:
            return JsonResponse(bad_scope_content(bad), status=400)
        with budget_context(**ids), track() as tracker:
            get_response = cast(Callable[[HttpRequest], Awaitable[HttpResponseBase]], self.get_response)
            try:
                response = await get_response(request)
            except Exception as error:
                response = self._answer(error)
            self._stream_in_context(response, tracker, ids)
        left = await remaining_usd(self.guard, ids) if self.remaining else None
        return self._with_headers(response, tracker, ids, left)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        """A refusal that escapes the view, itself or chained inside another error (instructor's
        ``InstructorRetryException``): 429 (or 402) with ``Retry-After``; a missing id: 400. Any other
        error, and an ``Http404`` or ``PermissionDenied`` the view raised for a refusal, is Django's."""
        refused = request_refusal_in(exception, _ANSWERS)
        return None if refused is None else self._refused(refused)

    def _answer(self, error: Exception) -> HttpResponseBase:
        """The answer to an error the next handler raised (one not wrapped by Django's own, as a test's
        ``get_response``): a refusal's, or the error goes on."""
        refused = request_refusal_in(error, _ANSWERS)
        if refused is None:
            raise error
        return self._refused(refused)

    def _refused(self, refused: BudgetExceededError | MissingScopeError) -> HttpResponseBase:
        if isinstance(refused, MissingScopeError):
            return JsonResponse(missing_scope_content(refused, self.scopes), status=400)
        content, headers = refusal_content(refused, self.body)
        return JsonResponse(content, status=self.status_code, headers=headers)

    @property
    def guard(self) -> Guard:
        return self._guard or default_guard()

    def _ids(self, request: HttpRequest) -> dict[str, str]:
        return resolve_ids_sync(self.scopes, request, lambda r, name: r.headers.get(name))

    def _stream_in_context(self, response: HttpResponseBase, tracker: Tracker, ids: dict[str, str]) -> None:
        """Called inside the request's context: its streamed body will run in a copy of it, and tell
        ``on_settled`` what the response cost once it has ended."""
        if isinstance(response, StreamingHttpResponse):
            context = contextvars.copy_context()
            body = response.streaming_content  # (its own closers are registered already)

            def then() -> None:
                tell_settled(self.on_settled, tracker, ids, True)

            if response.is_async:
                response.streaming_content = run_in_context_async(context, body, then)
            else:
                response.streaming_content = run_in_context(context, body, then)

    def _with_headers(
        self, response: HttpResponseBase, tracker: Tracker, ids: dict[str, str], left: str | None
    ) -> HttpResponseBase:
        streamed = response.streaming
        for name, value in budget_headers(tracker, left, streamed=streamed).items():
            response[name] = value
        if not streamed:  # (a streamed one tells when its body ends)
            tell_settled(self.on_settled, tracker, ids, False)
        return response

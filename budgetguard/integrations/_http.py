"""What the HTTP middlewares (FastAPI, Django, Flask) share, free of any web framework: the JSON bodies
of a refusal (with its ``Retry-After``), of a missing or bad scope id, the ``X-Budget-*`` headers, the
scope settings, the USD left in a request's budgets, and what a response cost once its body has ended.

Each middleware turns these dicts into its framework's response; none of them writes a body of its own.

One rule for the cost headers (``budget_headers``): a response's headers leave before a streamed body
runs, so they carry ``X-Budget-Cost-USD`` only when the cost is known then: a whole body, and no guarded
call of the request still open (a guarded stream settles when it is read to its end or closed). Otherwise
they carry what is known (``X-Budget-Held-USD``: what the open calls hold, their reservations;
``X-Budget-Settled-USD``: what the settled ones cost so far) and never a cost of 0 that is not one. The
final cost follows where the protocol allows: as HTTP trailers (``cost_trailers``) when the ASGI server
offers ``http.response.trailers`` and the client asked for them (``TE: trailers``), and always to the
middleware's ``on_settled`` hook (a ``ResponseCost``) once the body has ended; each call's cost is in
the journal too.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .._budgets import Scope, Unit
from .._context import Tracker
from .._errors import BudgetExceededError, ConfigurationError, LedgerError, MissingScopeError
from .._events import use_logging
from .._guard import Guard
from .._ledger import AsyncLedger, CounterSpec, CounterStatus
from .._money import to_usd

__all__ = [
    "COST_TRAILERS", "Body", "OnSettled", "ResponseCost", "bad_scope_content", "budget_headers",
    "checked_scopes", "cost_trailers", "missing_scope_content", "refusal_content", "remaining_usd",
    "remaining_usd_sync", "resolve_ids", "resolve_ids_sync", "run_in_context", "run_in_context_async",
    "checked_hook", "tell_settled",
]  # fmt: skip

Body = Callable[[BudgetExceededError], Mapping[str, Any]]
"""Builds the JSON body of a refusal in place of the default one."""


def refusal_content(
    refused: BudgetExceededError, body: Body | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body of a refusal and its headers (``Retry-After``, seconds, when the window resets)."""
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
    return dict(content), headers


def _amount(value: Decimal | int) -> str | int:
    """A refusal's amount in a JSON body: USD as an exact decimal string, tokens and requests as ints."""
    return f"{value.normalize():f}" if isinstance(value, Decimal) else value


def missing_scope_content(
    missing: MissingScopeError, sources: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body (status 400) for a request without a required scope id: it tells the client what
    to send (the header, when the id comes from one), not how the server is configured."""
    wanted = []
    for kind in missing.kinds:
        source = (sources or {}).get(kind)
        wanted.append(f"the {source} header" if isinstance(source, str) else f"a {kind} id")
    message = f"this request needs {' and '.join(wanted)}: send it and try again"
    return {"error": "missing_scope", "message": message, "kinds": list(missing.kinds)}


def bad_scope_content(bad: Exception) -> dict[str, Any]:
    """The JSON body (status 400) for a scope id no store can hold (empty kind, too long, ...)."""
    return {"error": "bad_scope", "message": str(bad)}


COST_TRAILERS = ("X-Budget-Cost-USD", "X-Budget-Input-Tokens", "X-Budget-Output-Tokens", "X-Budget-Held-USD")
"""The trailers of a streamed response whose server sends them: its cost once the body has ended."""


def budget_headers(
    tracker: Tracker, left: str | None, *, streamed: bool = False, trailers: bool = False
) -> dict[str, str]:
    """The ``X-Budget-*`` headers of a response as its headers go (the module's rule): its cost when
    known then (a whole body, no guarded call open), else what its open calls hold and its settled ones
    cost so far, with ``Trailer`` naming ``COST_TRAILERS`` when they will follow (``trailers``)."""
    if streamed or tracker.open_calls:
        headers = {"X-Budget-Held-USD": f"{tracker.held:f}", "X-Budget-Settled-USD": f"{tracker.cost:f}"}
        if trailers:
            headers["Trailer"] = ", ".join(COST_TRAILERS)
    else:
        headers = {
            "X-Budget-Cost-USD": f"{tracker.cost:f}",
            "X-Budget-Input-Tokens": str(tracker.input_tokens),
            "X-Budget-Output-Tokens": str(tracker.output_tokens),
        }
    if left is not None:
        headers["X-Budget-Remaining-USD"] = left
    return headers


def cost_trailers(tracker: Tracker) -> dict[str, str]:
    """``COST_TRAILERS`` once the body has ended: what the request's calls cost, and what calls the body
    left open still hold (a guarded stream dropped unread settles later; the cost is then a lower bound)."""
    return {
        "X-Budget-Cost-USD": f"{tracker.cost:f}",
        "X-Budget-Input-Tokens": str(tracker.input_tokens),
        "X-Budget-Output-Tokens": str(tracker.output_tokens),
        "X-Budget-Held-USD": f"{tracker.held:f}",
    }


@dataclass(frozen=True, slots=True)
class ResponseCost:
    """What one response's guarded calls cost, told to the middleware's ``on_settled`` hook once its body
    has ended or was closed (every response the middleware answered, streamed or not)."""

    scopes: Mapping[str, str]
    """The request's scope ids (from its headers or your functions)."""
    cost: Decimal
    input_tokens: int
    output_tokens: int
    calls: int
    held: Decimal
    """What calls the body left open still hold (a guarded stream dropped unread settles later, when its
    guard drains it): ``cost`` is then a lower bound. Usually 0."""
    streamed: bool
    """The headers went before the cost was known: they carried ``X-Budget-Held-USD``, not the cost."""


OnSettled = Callable[[ResponseCost], None]
"""``on_settled=``: called with a response's ``ResponseCost`` once its body has ended."""


def tell_settled(hook: OnSettled | None, tracker: Tracker, ids: Mapping[str, str], streamed: bool) -> None:
    """Call ``hook`` with what the response cost; a hook that raises is logged, never the response's end."""
    if hook is None:
        return
    told = ResponseCost(
        dict(ids), tracker.cost, tracker.input_tokens, tracker.output_tokens, tracker.calls, tracker.held,
        streamed,
    )  # fmt: skip
    try:
        hook(told)
    except Exception:
        use_logging().exception("budgetguard: the on_settled hook %r raised", hook)


def checked_hook(hook: Any) -> OnSettled | None:
    if hook is not None and not callable(hook):
        raise TypeError(f"on_settled takes a function of a ResponseCost, got {hook!r}")
    return hook  # type: ignore[no-any-return]


def checked_scopes(scopes: Mapping[str, Any]) -> dict[str, Any]:
    """Scope settings (kind -> header name or function of the request), checked at start-up."""
    for kind, source in scopes.items():
        Scope(kind, "x")  # a bad kind (or "global", which has no id) fails at start-up
        if not (isinstance(source, str) or callable(source)):
            raise TypeError(f"scope {kind!r}: pass a header name or a function of the request")
    return dict(scopes)


def _id(ids: dict[str, str], kind: str, value: Any) -> None:
    if inspect.isawaitable(value):  # (an async function's coroutine is no id: a sync resolver got it)
        if inspect.iscoroutine(value):
            value.close()
        raise ConfigurationError(f"the {kind} scope's function is async: use a plain function here")
    if value is not None and value != "":  # (an empty header names no id)
        Scope(kind, str(value))  # validates the id: ConfigurationError
        ids[kind] = str(value)


def resolve_ids_sync(
    scopes: Mapping[str, Any], request: Any, header: Callable[[Any, str], str | None]
) -> dict[str, str]:
    """The scope ids of a request: ``header(request, name)`` for a header name, else ``fn(request)``."""
    ids: dict[str, str] = {}
    for kind, source in scopes.items():
        _id(ids, kind, header(request, source) if isinstance(source, str) else source(request))
    return ids


async def resolve_ids(
    scopes: Mapping[str, Any], request: Any, header: Callable[[Any, str], str | None]
) -> dict[str, str]:
    """``resolve_ids_sync`` where a function of the request may be async."""
    ids: dict[str, str] = {}
    for kind, source in scopes.items():
        value: Any = header(request, source) if isinstance(source, str) else source(request)
        if inspect.isawaitable(value):
            value = await value
        _id(ids, kind, value)
    return ids


def _usd_specs(guard: Guard, ids: Mapping[str, str]) -> list[CounterSpec]:
    ids = {**guard.default_scopes, **ids}
    scopes = [Scope("global"), *(Scope(kind, ident) for kind, ident in ids.items())]
    return [spec for spec in guard.counters_for(scopes) if spec.unit is Unit.USD]


def _least(statuses: Iterable[CounterStatus]) -> str:
    return f"{to_usd(min(max(s.limit - s.spent - s.held, 0) for s in statuses)):f}"


def remaining_usd_sync(guard: Guard, ids: Mapping[str, str]) -> str | None:
    """The least USD left in the money budgets of these scopes (global included), or ``None``
    when none has a money budget or the store cannot say (a header is not worth a failed response)."""
    specs = _usd_specs(guard, ids)
    if not specs:
        return None
    try:
        return _least(guard.ledger.status(specs))
    except LedgerError:
        return None


async def remaining_usd(guard: Guard, ids: Mapping[str, str]) -> str | None:
    """``remaining_usd_sync`` through the guard's async store (or a thread for a sync one)."""
    specs = _usd_specs(guard, ids)
    if not specs:
        return None
    store = guard.async_ledger
    try:
        if isinstance(store, AsyncLedger):
            return _least(await store.status(specs))
        return _least(await asyncio.to_thread(store.status, specs))
    except LedgerError:
        return None


def run_in_context(
    context: contextvars.Context, body: Iterable[Any], then: Callable[[], None] | None = None
) -> Iterator[Any]:
    """A streamed body whose every step runs in the request's context (its scopes and tracker), though
    the server reads it after the middleware has returned: calls made while streaming, and the
    settlement of a guarded stream, are the request's. Closing it closes the body; ``then`` runs once
    the body has ended or was closed (``tell_settled``)."""
    iterator = iter(body)
    try:
        while True:
            try:
                chunk = context.run(next, iterator)
            except StopIteration:
                return
            yield chunk
    finally:
        try:
            close = getattr(iterator, "close", None)
            if close is not None:
                context.run(close)
        finally:
            if then is not None:
                then()


async def run_in_context_async(
    context: contextvars.Context, body: AsyncIterator[Any], then: Callable[[], None] | None = None
) -> AsyncIterator[Any]:
    """``run_in_context`` for an async body: each step is a task run in the request's context."""
    iterator = aiter(body)
    try:
        while True:
            step: Awaitable[Any] = asyncio.create_task(_next(iterator), context=context)
            try:
                chunk = await step
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        try:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await asyncio.create_task(close(), context=context)
        finally:
            if then is not None:
                then()


async def _next(iterator: AsyncIterator[Any]) -> Any:
    return await anext(iterator)

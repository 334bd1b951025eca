"""The HTTP-level guard: an ``httpx`` transport that runs the guard's call flow on OpenAI and Anthropic
wire traffic, and ``Guard.wrap(client)`` built on it.

``BudgetTransport`` (sync) and ``AsyncBudgetTransport`` wrap an inner transport. A POST to a billed
endpoint they know (OpenAI ``/chat/completions``, ``/responses``, ``/embeddings``; Anthropic
``/messages``, on Vertex AI ``...:rawPredict`` and on Bedrock ``/model/{id}/invoke`` too) is one attempt
of the guard's flow (``Guard.attempt``: estimate, reserve, send, reconcile, journal, events): its JSON
body is the request the estimator reads (with the model the path names, on Vertex and Bedrock), and the
usage is read from the JSON response or from the stream's events as they pass to the client (SSE, or
Bedrock's AWS event-stream frames: ``_bodies``; a stream closed early or dropped is settled from what it
showed, as an SDK stream is: ``_streams``). An SDK retry is a new HTTP request, hence a new attempt,
reserved and settled on its own and journaled with the SDK's own attempt number
(``x-stainless-retry-count`` + 1); an error response releases its hold (a dropped connection charges
the input, as ``charge_failed`` says).
A POST to any other endpoint that may bill (images, audio, batches, legacy completions...) is refused
with a ``ConfigurationError`` unless ``allow=`` names it; other requests (GET, uploads, token counts)
pass through. A client wrapped twice by one guard is one wrap (``wrap_client``); a decorated function
that calls a wrapped client of its own guard charges each request twice (the decorator its call, the
transport the request): guard one or the other.
A wrapped openai client opens no WebSocket (``_NoWebSockets``): what goes over one is not guarded. A
wrapped client's copy given an ``http_client`` of its own is wrapped over it too (``_kept_guarded``).

Nothing here imports ``httpx``: responses are built with the library of the request they answer, so the
transports serve ``httpx`` and ``httpx2`` clients alike (openai 3 and anthropic 1 use ``httpx2``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import ModuleType
from typing import Any, TypeVar, cast

from .._attempt import Attempt
from .._budgets import Scope
from .._core import GuardCore
from .._deferred import adrain, drain
from .._errors import BudgetGuardError, ConfigurationError
from .._flow import Plan
from .._price_data import provider_for_url
from .._providers import at_location, client_provider, prepare_openai_stream
from .._scopes import ScopeSpec, resolve_scopes
from .._usage import Usage
from ._bodies import AsyncBody, AsyncEvents, Body, SyncEvents, body_class, framing_of
from ._paths import Route, anthropic_body, routed, vertex_location
from ._sdk_errors import as_sdk_error

__all__ = ["AsyncBudgetTransport", "BudgetTransport", "wrap_client"]

C = TypeVar("C")

_DROPPED_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})
"""Headers of a streamed response that no longer describe the (decoded, re-framed) body passed on."""


@functools.lru_cache(maxsize=256)
def _provider_at(scheme: str, host: str) -> str | None:
    """The provider whose API a host serves, as genai-prices names it (``None``: found by model name)."""
    return provider_for_url(f"{scheme}://{host}")


def _library(obj: Any) -> ModuleType:
    """The ``httpx``-like library an object (a request, a client) comes from."""
    for cls in type(obj).__mro__:
        top = cls.__module__.partition(".")[0]
        if top in ("httpx", "httpx2"):
            return importlib.import_module(top)
    return importlib.import_module(type(obj).__module__.partition(".")[0])


class _Refusal(BaseException):
    """Carries the guard's error through an SDK's ``except Exception`` (which would retry it and wrap it
    as a connection error) to the client ``wrap`` made, which raises the error itself."""

    def __init__(self, error: BudgetGuardError) -> None:
        super().__init__(error)
        self.error = error


class _Base:
    """What both transports share: reading a request into an attempt, and the stream it settles."""

    def __init__(
        self,
        guard: GuardCore | None,
        inner: Any,
        *,
        provider: str | None,
        allow: tuple[str, ...],
        scopes: Mapping[str, ScopeSpec],
        wrapped: bool = False,
    ) -> None:
        if guard is None:
            from .. import default_guard  # (the public API: Guard.wrap imports this module)

            guard = default_guard()
        if not isinstance(guard, GuardCore):
            raise ConfigurationError(f"the transport takes a Guard, got {guard!r}")
        self.guard = guard
        self.inner = inner
        self.provider = provider
        if isinstance(allow, str) or not all(isinstance(prefix, str) for prefix in allow):
            raise ConfigurationError(f"allow= takes a tuple of path prefixes, got {allow!r}")
        self.allow = tuple(allow)
        for kind in scopes:  # a bad kind fails here, not on the first call
            Scope("global") if kind == "global" else Scope(kind, "x")
        self.scopes = dict(scopes)
        self._owns = inner is None or wrapped  # (a wrapped client's copy closes the pool it was given)
        self._lock = threading.Lock()
        self._carry = wrapped
        """Raise the guard's errors as ``_Refusal`` (under a client ``wrap`` made)."""
        self._hint = "guard.wrap(client, allow=...)" if wrapped else "BudgetTransport(..., allow=...)"
        """How to send an endpoint the guard cannot read unguarded, by choice (in its refusal)."""

    def _inner(self, request: Any, name: str) -> Any:
        """The inner transport: the one given, else ``name`` of the request's library, made once."""
        inner = self.inner
        if inner is None:
            with self._lock:
                if self.inner is None:
                    self.inner = getattr(_library(request), name)()
                inner = self.inner
        return inner

    def _raising(self, error: BudgetGuardError, request: Any) -> BaseException:
        """The guard's error as raised to the client: carried through the SDK (``_Refusal``) under a
        client ``wrap`` made; under another SDK client (its requests say so: ``x-stainless-lang``), as
        the SDK's own error too (``as_sdk_error``), which the openai and anthropic SDKs raise as it is,
        without retrying it; else as it is."""
        if self._carry:
            return _Refusal(error)
        if "x-stainless-lang" in request.headers:
            return as_sdk_error(error)
        return error

    def _route(self, request: Any) -> Route | None:
        """How to read ``request`` (``None``: send it as is)."""
        return routed(request.method, request.url.path, self.allow, self._hint)

    def _attempt(self, request: Any, route: Route, content: bytes) -> tuple[Attempt, Any, bool]:
        """The attempt for a billed request, the request to send, and whether the guard asked for the
        stream's usage itself: an OpenAI chat stream that did not say is asked for it
        (``stream_options.include_usage``, as the SDK path does), and the chunk that carries it is
        read and not passed on (``_usage_only``): the caller never asked for it."""
        api, model = route
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        guard = self.guard
        provider = self.provider or _provider_at(request.url.scheme, request.url.host)
        if model is not None and isinstance(body, dict):
            anthropic_body(request.url.path, model, body, self._hint)
            body = {**body, "model": model}  # (read by the estimator; the request is sent as it was)
            if provider == "google":  # (its location prices it: Vertex AI's regional endpoints)
                body = dict(at_location(body, vertex_location(request.url.path)))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise ConfigurationError(
                f"budgetguard cannot read the request to {request.url.path}: its body is not a JSON object "
                "with a 'model'; send it with a client the guard does not wrap"
            )
        asked = False
        if api == "openai" and body.get("stream") is True and "messages" in body:
            options = body.get("stream_options")
            if not isinstance(options, dict) or "include_usage" not in options:
                asked = True
                prepare_openai_stream(body)
                headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
                content = json.dumps(body, separators=(",", ":")).encode()
                lib = _library(request)
                request = lib.Request(
                    request.method,
                    request.url,
                    headers=headers,
                    content=content,
                    extensions=request.extensions,
                )
        estimator = guard.estimator
        scopes = resolve_scopes(self.scopes, (request,), {}, {}, guard.default_scopes)

        def estimate(model: str | None, counted: int | None) -> Any:
            return estimator(body, provider=provider, api=api, input_tokens=counted, count=False)

        def count(model: str | None) -> Mapping[str, Any] | None:
            return estimator.count_request(body, provider=provider, api=api)

        counting = estimator.anthropic_count_tokens is not None
        plan = Plan(
            scopes, (body["model"],), estimate, Usage.from_response, None, True,
            count if counting else None, None, None, guard.hold, _attempt_number(request),
            body.get("background") is True,
        )  # fmt: skip
        return Attempt(guard, plan), request, asked


def _usage_only(event: Mapping[str, Any]) -> bool:
    """An OpenAI chat stream's usage chunk (no choices, the usage), which the guard asked for."""
    return event.get("choices") == [] and event.get("usage") is not None


def _attempt_number(request: Any) -> int:
    """Which attempt of its call a request is: the openai and anthropic SDKs number their retries in
    ``x-stainless-retry-count`` (0 on the first try); 1 without it."""
    retries = request.headers.get("x-stainless-retry-count", "")
    return int(retries) + 1 if retries.isdigit() and len(retries) < 6 else 1


def _parsed(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return {}  # no usage in it: the flow charges the estimate, flagged usage_missing


def _status_error(response: Any, request: Any) -> Exception:
    """What an error (or redirect) response is to the flow: an ``HTTPStatusError``, not billed, its hold
    released."""
    lib = _library(response)
    error: Exception = lib.HTTPStatusError(
        f"{response.status_code} from {request.url.path}", request=request, response=response
    )
    return error


def _passed_on(response: Any, request: Any, body: Any) -> Any:
    """A new response for the client: the upstream's status, headers and extensions, ``body`` as its
    stream (decoded: the encoding headers go)."""
    lib = _library(response)
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _DROPPED_HEADERS]
    return lib.Response(
        response.status_code, headers=headers, stream=body, extensions=response.extensions, request=request
    )


def _read(response: Any, attempt: Attempt) -> None:
    """Read ``response``'s body; if that fails (a connection dropped mid-body), the attempt fails with it
    (charged its input if it may have been billed: ``charge_failed``) before the error goes on."""
    try:
        response.read()
    except BaseException as exc:
        attempt.fail(exc)
        raise


async def _aread(response: Any, attempt: Attempt) -> None:
    try:
        await response.aread()
    except BaseException as exc:
        await attempt.afail(exc)
        raise


class BudgetTransport(_Base):
    """A sync ``httpx`` (or ``httpx2``) transport that guards the billed requests it sends through
    ``inner`` (by default a new ``HTTPTransport()`` of the client's library, ``httpx`` or ``httpx2``,
    made on the first request and closed with this one).

    ``httpx.Client(transport=BudgetTransport(guard, user="alice"))``: scopes as in ``with_budget``
    (literal ids, or callables given the ``httpx.Request``), over ``budget_context()``'s. ``provider``:
    where the requests go, as genai-prices names it (by default from the host). ``allow``: path prefixes
    of billed endpoints the guard cannot read, sent unguarded by choice.

    A refusal raises ``BudgetExceededError`` from the client's ``send``; under an SDK client (its
    requests say so), one that is the SDK's own error class too, which the openai (2 and later) and
    anthropic SDKs raise as it is, unretried (``as_sdk_error``). openai 1.x retries any error of its HTTP
    client and raises it as its ``APIConnectionError``: there, use ``guard.wrap(client)``, which
    carries the refusal through the SDK itself. (``guard``, ``inner``, ``provider`` and ``allow`` are
    this class's options: for scopes of those names, use ``guard.wrap``.)"""

    def __init__(
        self,
        guard: GuardCore | None = None,
        inner: Any = None,
        *,
        provider: str | None = None,
        allow: tuple[str, ...] = (),
        **scopes: ScopeSpec,
    ) -> None:
        super().__init__(guard, inner, provider=provider, allow=allow, scopes=scopes)

    def handle_request(self, request: Any) -> Any:
        try:
            route = self._route(request)
            if route is None:
                return self._inner(request, "HTTPTransport").handle_request(request)
            attempt, request, asked = self._attempt(request, route, request.read())
            attempt.reserve()
        except BudgetGuardError as exc:
            raise self._raising(exc, request) from None
        try:
            response = self._inner(request, "HTTPTransport").handle_request(request)
        except BaseException as exc:
            attempt.fail(exc)  # (charged the input if it may have been billed: charge_failed)
            raise
        try:
            if not 200 <= response.status_code < 300:  # an error or a redirect: nothing billed
                _read(response, attempt)
                attempt.fail(_status_error(response, request))
                return response
            framing = framing_of(response)
            if framing is None:
                _read(response, attempt)
                attempt.commit(_parsed(response.content))
                return response
            events = SyncEvents(response, framing)
            guarded = attempt.commit(events)
        except BudgetGuardError as exc:  # the store failed a settlement, failing closed
            response.close()
            raise self._raising(exc, request) from None
        hidden = _usage_only if asked else None
        body = body_class(Body, _library(response).SyncByteStream)(guarded, events, hidden)
        return _passed_on(response, request, body)

    def __enter__(self) -> BudgetTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        drain(self.guard)
        if self._owns and self.inner is not None:
            self.inner.close()


class AsyncBudgetTransport(_Base):
    """The async twin of ``BudgetTransport`` (for ``httpx.AsyncClient``; ``inner`` by default an
    ``AsyncHTTPTransport()`` of the client's library)."""

    def __init__(
        self,
        guard: GuardCore | None = None,
        inner: Any = None,
        *,
        provider: str | None = None,
        allow: tuple[str, ...] = (),
        **scopes: ScopeSpec,
    ) -> None:
        super().__init__(guard, inner, provider=provider, allow=allow, scopes=scopes)

    async def handle_async_request(self, request: Any) -> Any:
        try:
            route = self._route(request)
            if route is None:
                return await self._inner(request, "AsyncHTTPTransport").handle_async_request(request)
            attempt, request, asked = self._attempt(request, route, await request.aread())
            await attempt.areserve()
        except BudgetGuardError as exc:
            raise self._raising(exc, request) from None
        try:
            response = await self._inner(request, "AsyncHTTPTransport").handle_async_request(request)
        except BaseException as exc:
            await attempt.afail(exc)
            raise
        try:
            if not 200 <= response.status_code < 300:  # an error or a redirect: nothing billed
                await _aread(response, attempt)
                await attempt.afail(_status_error(response, request))
                return response
            framing = framing_of(response)
            if framing is None:
                await _aread(response, attempt)
                await attempt.acommit(_parsed(response.content))
                return response
            events = AsyncEvents(response, framing)
            guarded = await attempt.acommit(events)
        except BudgetGuardError as exc:  # the store failed a settlement, failing closed
            await response.aclose()
            raise self._raising(exc, request) from None
        hidden = _usage_only if asked else None
        body = body_class(AsyncBody, _library(response).AsyncByteStream)(guarded, events, hidden)
        return _passed_on(response, request, body)

    async def __aenter__(self) -> AsyncBudgetTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await adrain(self.guard)
        if self._owns and self.inner is not None:
            await self.inner.aclose()


# -- guard.wrap(client) ----------------------------------------------------------------------------


def wrap_client(
    guard: GuardCore,
    client: C,
    scopes: Mapping[str, ScopeSpec],
    allow: tuple[str, ...] = (),
    provider: str | None = None,
) -> C:
    """``Guard.wrap``: a copy of an SDK client whose HTTP client sends through a ``BudgetTransport`` over
    the client's own transports (its connection pool, proxies and retries kept). ``provider``: what its
    calls are priced as (genai-prices' id), by default the endpoint's (``client_provider``).

    A client this guard wraps already is returned as it is when nothing is added; given scopes or
    ``allow``, it is wrapped again over its own transports with both wraps' scopes (the later's win
    for a kind given twice) and both allow lists: one attempt per request, never two. (A client
    another guard wraps is wrapped over that guard's transport: each guard charges its own budgets.)"""
    cls: Any = type(client)
    http = getattr(client, "_client", None)
    if http is None or not hasattr(client, "with_options") or not hasattr(http, "_transport"):
        raise ConfigurationError(
            "guard.wrap() takes an openai or anthropic SDK client (OpenAI, AzureOpenAI, Anthropic, "
            "AnthropicBedrock, AnthropicVertex, AnthropicFoundry or their async twins), "
            f"got {cls.__qualname__}"
        )
    ours = _ours(guard, http._transport)
    if ours is not None and not scopes and not allow:
        return client
    is_async = inspect.iscoroutinefunction(cls.request)
    provider = provider or client_provider(client)
    transport: Any = AsyncBudgetTransport if is_async else BudgetTransport
    lib = _library(http)

    def guarded(inner: Any) -> Any:
        made = transport.__new__(transport)
        wrapped = _ours(guard, inner)
        if wrapped is not None:  # wrapped by this guard already: over its inner transport, both scopes
            inner = wrapped.inner
            _Base.__init__(made, guard, inner, provider=provider, allow=(*wrapped.allow, *allow),
                           scopes={**wrapped.scopes, **scopes}, wrapped=True)  # fmt: skip
        else:  # refusals carried through the SDK (_refusing); closing the copy closes the pool
            _Base.__init__(made, guard, inner, provider=provider, allow=allow, scopes=scopes, wrapped=True)
        return made

    new_http = (lib.AsyncClient if is_async else lib.Client)(  # the client's settings, kept
        transport=guarded(http._transport),
        auth=http.auth,
        params=http.params,
        headers=http.headers,
        cookies=http.cookies,
        timeout=http.timeout,
        follow_redirects=http.follow_redirects,
        max_redirects=http.max_redirects,
        event_hooks=http.event_hooks,
        base_url=http.base_url,
        trust_env=http.trust_env,
    )
    new_http._mounts = {
        pattern: None if inner is None else guarded(inner) for pattern, inner in http._mounts.items()
    }
    original = getattr(client, "_budgetguard_original", client)
    token = _wrapping.set(True)  # (a wrapped client's copy over new_http: guarded already, as it is)
    try:
        wrapped = cast(C, cast(Any, client).with_options(http_client=new_http))
    finally:
        _wrapping.reset(token)
    if getattr(wrapped, "_client", None) is not new_http:  # (never a copy left unguarded)
        raise ConfigurationError(
            f"this {cls.__name__} release does not keep the HTTP client it is given, so guard.wrap() cannot "
            "guard it; decorate its methods instead: guard.with_budget(client.messages.create, user=...)"
        )
    sockets = "websocket_base_url" in vars(wrapped)  # (an openai client: it can open WebSockets)
    wrapped.__class__ = _refusing(getattr(cls, "_budgetguard_sdk_class", cls), is_async, sockets)
    # the original lives as long as its copy: its finalizer (the SDK's) would close the shared pool
    cast(Any, wrapped)._budgetguard_original = original
    return wrapped


def _ours(guard: GuardCore, transport: Any) -> _Base | None:
    """``transport`` if it is one of this guard's transports that ``wrap`` made."""
    if isinstance(transport, _Base) and transport.guard is guard and transport._carry:
        return transport
    return None


_NO_SOCKETS = (
    "budgetguard does not guard WebSocket traffic: a client guard.wrap() made cannot open one "
    "(the Responses API's and Realtime API's connect(), and any other WebSocket the SDK opens), since "
    "what is sent over it (response.create...) would be billed unguarded. Use the HTTP API "
    "(client.responses.create(..., stream=True)) on the wrapped client, or open the WebSocket with the "
    "client you wrapped, unguarded by choice, and budget its use with guard.reserve(usd=...)."
)


class _NoWebSockets:
    """An openai client's ``websocket_base_url`` on a wrapped client: every WebSocket the SDK opens
    (``responses.connect()``, ``realtime.connect()``, their beta, Azure and live twins, and any a new
    release adds) reads it for its URL, so reading it refuses with ``ConfigurationError`` (the
    socket is never opened). Copying the client (``with_options``) reads it too: allowed there."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if _copying.get():
            return obj.__dict__.get("websocket_base_url")
        raise ConfigurationError(_NO_SOCKETS)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["websocket_base_url"] = value


_wrapping: ContextVar[bool] = ContextVar("budgetguard_wrapping", default=False)  # (wrap_client copies)

_copying: ContextVar[bool] = ContextVar("budgetguard_copying", default=False)
"""A wrapped client is being copied (``with_options``): its ``websocket_base_url`` is read for the copy."""


@functools.cache
def _refusing(cls: type, is_async: bool, sockets: bool) -> type:
    """``cls`` whose ``request`` raises the guard's error that its transport carried (``_Refusal``):
    the SDK neither retries a refusal nor turns it into a connection error; with ``sockets``, one that
    opens no WebSocket (``_NoWebSockets``)."""
    sdk_request: Callable[..., Any] = cls.request  # type: ignore[attr-defined]

    if is_async:

        async def arequest(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await sdk_request(self, *args, **kwargs)
            except _Refusal as carried:
                raise carried.error from carried.error.__cause__

        request: Callable[..., Any] = arequest
    else:

        def request(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return sdk_request(self, *args, **kwargs)
            except _Refusal as carried:
                raise carried.error from carried.error.__cause__

    functools.update_wrapper(request, sdk_request)
    names: dict[str, Any] = {
        "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
        "_budgetguard_sdk_class": cls,
    }  # fmt: skip
    sdk_copy: Callable[..., Any] = cls.copy  # type: ignore[attr-defined]

    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _copying.set(True)
        try:
            copied = sdk_copy(self, *args, **kwargs)
        finally:
            _copying.reset(token)
        return _kept_guarded(self, copied, kwargs.get("http_client"))

    functools.update_wrapper(copy, sdk_copy)
    names.update(copy=copy, with_options=copy)
    if sockets:
        names["websocket_base_url"] = _NoWebSockets()
    return type(cls.__name__, (cls,), {"request": request, **names})


def _kept_guarded(wrapped: Any, copied: Any, given: Any) -> Any:
    """A wrapped client's copy (``with_options``, ``copy``) given an HTTP client of its own, wrapped over
    it by each guard that wrapped the client, with its scopes, ``allow=`` and provider: a copy never
    sends unguarded. One given the wrapped client's own HTTP client (or made by ``wrap``) is as it is."""
    http = getattr(wrapped, "_client", None)
    transport, layers = getattr(http, "_transport", None), []
    if given is None or given is http or _wrapping.get():
        return copied
    while isinstance(transport, _Base) and transport._carry:  # (outermost first)
        layers.append(transport)
        transport = transport.inner
    for layer in reversed(layers):
        copied = wrap_client(layer.guard, copied, layer.scopes, layer.allow, layer.provider)
    return copied

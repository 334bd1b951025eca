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
pass through.

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
from types import ModuleType
from typing import Any, TypeVar, cast

from .._attempt import Attempt
from .._budgets import Scope
from .._core import GuardCore
from .._deferred import adrain, drain
from .._errors import BudgetGuardError, ConfigurationError
from .._flow import Plan
from .._price_data import provider_for_url
from .._providers import client_provider, prepare_openai_stream
from .._scopes import ScopeSpec, resolve_scopes
from .._usage import Usage
from ._bodies import AsyncBody, AsyncEvents, Body, SyncEvents, body_class, framing_of
from ._paths import Route, anthropic_body, routed

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
    ) -> None:
        if guard is None:
            from .. import default_guard  # (the public API: Guard.wrap imports this module)

            guard = default_guard()
        if not isinstance(guard, GuardCore):
            raise ConfigurationError(f"the transport takes a Guard, got {guard!r}")
        self.guard = guard
        self.inner = inner
        self.provider = provider
        self.allow = tuple(allow)
        for kind in scopes:  # a bad kind fails here, not on the first call
            Scope("global") if kind == "global" else Scope(kind, "x")
        self.scopes = dict(scopes)
        self._owns = inner is None
        self._lock = threading.Lock()
        self._carry = False
        """Raise the guard's errors as ``_Refusal`` (under a client ``wrap`` made)."""

    def _inner(self, request: Any, name: str) -> Any:
        """The inner transport: the one given, else ``name`` of the request's library, made once."""
        inner = self.inner
        if inner is None:
            with self._lock:
                if self.inner is None:
                    self.inner = getattr(_library(request), name)()
                inner = self.inner
        return inner

    def _raising(self, error: BudgetGuardError) -> BaseException:
        return _Refusal(error) if self._carry else error

    def _attempt(self, request: Any, route: Route, content: bytes) -> tuple[Attempt, Any]:
        """The attempt for a billed request, and the request to send (OpenAI chat streams are asked for
        their usage: ``stream_options.include_usage``, as the SDK path does)."""
        api, model = route
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if model is not None and isinstance(body, dict):
            anthropic_body(request.url.path, model, body)
            body = {**body, "model": model}  # (read by the estimator; the request is sent as it was)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise ConfigurationError(
                f"budgetguard cannot read the request to {request.url.path}: its body is not a JSON object "
                "with a 'model'; send it with a client the guard does not wrap"
            )
        if api == "openai" and body.get("stream") is True and "messages" in body:
            options = body.get("stream_options")
            if not isinstance(options, dict) or "include_usage" not in options:
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
        guard = self.guard
        estimator = guard.estimator
        provider = self.provider or _provider_at(request.url.scheme, request.url.host)
        scopes = resolve_scopes(self.scopes, (request,), {}, {}, guard.default_scopes)

        def estimate(model: str | None, counted: int | None) -> Any:
            return estimator(body, provider=provider, api=api, input_tokens=counted, count=False)

        def count(model: str | None) -> Mapping[str, Any] | None:
            return estimator.count_request(body, provider=provider, api=api)

        counting = estimator.anthropic_count_tokens is not None
        plan = Plan(
            scopes, (body["model"],), estimate, Usage.from_response, None, True,
            count if counting else None, None, None, guard.hold, _attempt_number(request),
        )  # fmt: skip
        return Attempt(guard, plan), request


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

    A refusal raises ``BudgetExceededError`` from the client's ``send``. Under an SDK client, prefer
    ``guard.wrap(client)``: some SDK releases catch any error of their HTTP client, retry it and raise
    it as their ``APIConnectionError`` (the refusal as its ``__cause__``); the wrapped client raises
    the refusal itself, and the SDK does not retry it."""

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
            route = routed(request.method, request.url.path, self.allow)
            if route is None:
                return self._inner(request, "HTTPTransport").handle_request(request)
            attempt, request = self._attempt(request, route, request.read())
            attempt.reserve()
        except BudgetGuardError as exc:
            raise self._raising(exc) from None
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
            raise self._raising(exc) from None
        body = body_class(Body, _library(response).SyncByteStream)(guarded, events)
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
            route = routed(request.method, request.url.path, self.allow)
            if route is None:
                return await self._inner(request, "AsyncHTTPTransport").handle_async_request(request)
            attempt, request = self._attempt(request, route, await request.aread())
            await attempt.areserve()
        except BudgetGuardError as exc:
            raise self._raising(exc) from None
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
            raise self._raising(exc) from None
        body = body_class(AsyncBody, _library(response).AsyncByteStream)(guarded, events)
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
    guard: GuardCore, client: C, scopes: Mapping[str, ScopeSpec], provider: str | None = None
) -> C:
    """``Guard.wrap``: a copy of an SDK client whose HTTP client sends through a ``BudgetTransport`` over
    the client's own transports (its connection pool, proxies and retries kept). ``provider``: what its
    calls are priced as (genai-prices' id), by default the endpoint's (``client_provider``)."""
    cls: Any = type(client)
    http = getattr(client, "_client", None)
    if http is None or not hasattr(client, "with_options") or not hasattr(http, "_transport"):
        raise ConfigurationError(
            "guard.wrap() takes an openai or anthropic SDK client (OpenAI, AzureOpenAI, Anthropic, "
            "AnthropicBedrock, AnthropicVertex, AnthropicFoundry or their async twins), "
            f"got {cls.__qualname__}"
        )
    is_async = inspect.iscoroutinefunction(cls.request)
    provider = provider or client_provider(client)
    transport: Any = AsyncBudgetTransport if is_async else BudgetTransport
    lib = _library(http)

    def guarded(inner: Any) -> Any:
        made = transport(guard, inner, provider=provider, **scopes)
        made._carry = True  # refusals carried through the SDK (see _refusing)
        made._owns = True  # closing the copy closes the pool (a closed pool opens new connections)
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
    wrapped = cast(C, cast(Any, client).with_options(http_client=new_http))
    if getattr(wrapped, "_client", None) is not new_http:  # (never a copy left unguarded)
        raise ConfigurationError(
            f"this {cls.__name__} release does not keep the HTTP client it is given, so guard.wrap() cannot "
            "guard it; decorate its methods instead: guard.with_budget(client.messages.create, user=...)"
        )
    wrapped.__class__ = _refusing(cls, is_async)
    # the original lives as long as its copy: its finalizer (the SDK's) would close the shared pool
    cast(Any, wrapped)._budgetguard_original = client
    return wrapped


@functools.cache
def _refusing(cls: type, is_async: bool) -> type:
    """``cls`` whose ``request`` raises the guard's error that its transport carried (``_Refusal``):
    the SDK neither retries a refusal nor turns it into a connection error."""
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
    names = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
    return type(cls.__name__, (cls,), {"request": request, **names})

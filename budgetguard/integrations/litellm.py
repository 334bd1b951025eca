"""LiteLLM on guarded clients: ``completion(client, ...)`` and ``acompletion(client, ...)`` call
``litellm.completion`` / ``litellm.acompletion`` (``router_completion`` / ``arouter_completion`` a
``litellm.Router``'s) with ``client=`` a client the guard sends through, and raise a refusal as LiteLLM's
own budget error.

    client = guard.wrap(openai.OpenAI(), user="alice")     # LiteLLM's openai and azure providers
    reply = completion(client, model="openai/gpt-4o-mini", messages=[...])
    http = BudgetHTTP(guard, user="alice")                  # the providers LiteLLM sends over HTTP itself
    reply = completion(http, model="anthropic/claude-sonnet-4-5", messages=[...])

No callback: each HTTP request LiteLLM sends through the client (each of the SDK's retries, each of
LiteLLM's ``num_retries``) is one attempt of the guard's flow (``budgetguard.integrations.httpx``),
reserved before it is sent and settled from the usage the response reports (a stream's too: the
transport asks an OpenAI chat stream for its usage). LiteLLM sends through an SDK client it is given for
its OpenAI and Azure OpenAI providers; for Anthropic it sends with its own HTTP handler, which
``BudgetHTTP`` gives it, on a ``BudgetTransport`` that reads Anthropic's messages wire format (the
provider named as genai-prices names it: ``_HTTP_PROVIDERS``). A model of any other provider would be
sent unguarded, so it is refused with a ``ConfigurationError``; so is a Router with a deployment the
client given cannot carry (another provider, or another endpoint than the guarded SDK client's, which
LiteLLM would use in its place). A refusal raises ``BudgetExceeded``, both LiteLLM's
``BudgetExceededError`` and budgetguard's, the refusal chained as its ``__cause__``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, cast

from .._budgets import Scope
from .._core import GuardCore
from .._errors import BudgetExceededError, ConfigurationError
from .._scopes import ScopeSpec
from ._refusal import refusal_in

try:
    import litellm
    from litellm.exceptions import BudgetExceededError as LiteLLMBudgetExceededError
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
except ImportError as exc:  # pragma: no cover - exercised by tests/integrations/test_lazy_agents.py
    raise ConfigurationError(
        "budgetguard.integrations.litellm needs LiteLLM: pip install 'llm-budgetguard[litellm]'"
    ) from exc

__all__ = [
    "BudgetExceeded",
    "BudgetHTTP",
    "acompletion",
    "arouter_completion",
    "completion",
    "router_completion",
]

_CLIENT_PROVIDERS = {"openai": ("OpenAI", "AsyncOpenAI"), "azure": ("AzureOpenAI", "AsyncAzureOpenAI")}
"""LiteLLM's providers that send through the SDK ``client=`` given, and the SDK clients each takes."""

_HTTP_PROVIDERS = {"anthropic": "anthropic"}
"""LiteLLM's providers that send with the HTTP handler given as ``client=`` in a wire format the transport
reads, and the genai-prices provider each is priced as."""


class BudgetHTTP:
    """LiteLLM's HTTP handlers (``HTTPHandler`` / ``AsyncHTTPHandler``) on a ``BudgetTransport``, one of
    each per provider, made on first use: the ``client`` of ``completion`` for the providers LiteLLM sends
    over HTTP itself (``_HTTP_PROVIDERS``). ``scopes`` as in ``guard.wrap``, over ``budget_context()``'s.
    ``close()`` / ``aclose()`` close what it opened."""

    def __init__(self, guard: GuardCore, **scopes: ScopeSpec) -> None:
        from .httpx import AsyncBudgetTransport, BudgetTransport

        if not isinstance(guard, GuardCore):
            raise ConfigurationError(f"BudgetHTTP takes a Guard, got {guard!r}")
        for kind in scopes:  # a bad kind fails here, not on the first call
            Scope("global") if kind == "global" else Scope(kind, "x")
        self.guard, self.scopes = guard, scopes
        self._transports: tuple[Any, Any] = (BudgetTransport, AsyncBudgetTransport)
        self._handlers: dict[tuple[str, bool], Any] = {}
        self._lock = threading.Lock()

    def handler(self, provider: str, is_async: bool) -> Any:
        """The handler LiteLLM's ``provider`` sends with (``is_async``: for ``acompletion``)."""
        with self._lock:
            made = self._handlers.get((provider, is_async))
            if made is None:
                prices = _HTTP_PROVIDERS[provider]
                transport: Any = self._transports[is_async](self.guard, provider=prices, **self.scopes)
                if is_async:
                    made = AsyncHTTPHandler(transport=transport)
                else:
                    made = HTTPHandler(client=_transport_client(transport))
                self._handlers[(provider, is_async)] = made
            return made

    def close(self) -> None:
        for (_, is_async), handler in list(self._handlers.items()):
            if not is_async:
                handler.client.close()  # (the handler leaves a client it was given open)

    async def aclose(self) -> None:
        for (_, is_async), handler in list(self._handlers.items()):
            if is_async:
                await handler.close()
        self.close()

    def __enter__(self) -> BudgetHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> BudgetHTTP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _transport_client(transport: Any) -> Any:
    """An ``httpx.Client`` (LiteLLM's HTTP library) sending through ``transport``."""
    import httpx

    return httpx.Client(transport=transport)


class BudgetExceeded(LiteLLMBudgetExceededError, BudgetExceededError):
    """A refused call, as LiteLLM's budget error: ``except litellm.BudgetExceededError`` and ``except
    budgetguard.BudgetExceededError`` both catch it; the refusal is its ``__cause__``, and its attributes
    (``scope``, ``limit``, ``spent``, ``held``, ``requested``, ``resets_at``) are the refusal's
    (LiteLLM's ``current_cost`` and ``max_budget`` are its ``spent`` and ``limit``, exact)."""

    def __init__(self, refusal: BudgetExceededError, provider: str) -> None:
        theirs = (
            LiteLLMBudgetExceededError(  # (its fields, status code and message, kept as LiteLLM sets them)
                cast(Any, refusal.spent),  # (exact: a Decimal, or an int for a token or request budget)
                cast(Any, refusal.limit),
                str(refusal),
                llm_provider=provider,
            )
        )
        Exception.__init__(self, str(refusal))
        self.__dict__.update(theirs.__dict__)
        self.__dict__.update(refusal.__dict__)


_FALLBACKS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
"""LiteLLM's per-call fallbacks: models it sends a failed (or refused) call on to."""


def _checked(client: Any, is_async: bool, kwargs: Mapping[str, Any]) -> tuple[str, Any]:
    """The LiteLLM provider of the call and the ``client=`` to send it with, after checking that LiteLLM
    sends the call through ``client`` and that ``client`` is guarded."""
    if "client" in kwargs:
        raise ConfigurationError("pass the guarded client as the first argument, not as client=")
    fallbacks = [key for key in _FALLBACKS if kwargs.get(key)]
    if fallbacks:  # (LiteLLM sends a refused call on to them, each with its own provider's HTTP client)
        raise ConfigurationError(
            f"{', '.join(fallbacks)}= would send a call the guard refused to another model, unguarded: "
            "route to a cheaper model with the guard (with_budget(route=[...])) or a litellm.Router "
            "(router_completion)"
        )
    model = kwargs.get("model")
    if not isinstance(model, str):
        raise ConfigurationError("completion() needs model= (a LiteLLM model name, such as 'openai/gpt-4o')")
    _, provider, _, _ = litellm.get_llm_provider(
        model, custom_llm_provider=kwargs.get("custom_llm_provider"), api_base=kwargs.get("api_base")
    )
    provider = str(provider)
    if isinstance(client, BudgetHTTP):
        if provider not in _HTTP_PROVIDERS:
            raise _unguarded(model, provider, "a BudgetHTTP carries " + ", ".join(sorted(_HTTP_PROVIDERS)))
        return provider, client.handler(provider, is_async)
    if getattr(client, "_budgetguard_original", None) is None:
        raise ConfigurationError(
            "completion() takes a client guard.wrap() made or a BudgetHTTP, got "
            f"{type(client).__qualname__}: "
            "completion(guard.wrap(openai.OpenAI(), user=...), model=..., messages=...)"
        )
    takes = _CLIENT_PROVIDERS.get(provider)
    if takes is None:
        raise _unguarded(model, provider, "a guarded SDK client carries OpenAI and Azure OpenAI")
    name = type(client).__name__
    if name != takes[is_async]:
        raise ConfigurationError(
            f"LiteLLM's {provider} provider takes a guarded {takes[is_async]} "
            f"({'acompletion' if is_async else 'completion'}), got {name}"
        )
    return provider, client


def _unguarded(model: str, provider: str, carried: str) -> ConfigurationError:
    known = sorted({*_CLIENT_PROVIDERS, *_HTTP_PROVIDERS})
    return ConfigurationError(
        f"LiteLLM would send {model!r} ({provider}) with an HTTP client budgetguard does not guard: "
        f"{carried} (the providers guarded: {', '.join(known)}); "
        "call the provider's SDK through guard.wrap() instead"
    )


def _call(client: Any, is_async: bool, kwargs: Mapping[str, Any], router: Any = None) -> tuple[str, Any]:
    """The provider to name in a refusal and the ``client=`` of a call (of ``router``'s, if given)."""
    if router is None:
        return _checked(client, is_async, kwargs)
    if "client" in kwargs:
        raise ConfigurationError("pass the guarded client as the second argument, not as client=")
    provider = ""
    for deployment in _deployments(router):  # every one: fallbacks may pick another model group's
        params = dict(deployment.get("litellm_params") or {})
        provider, sent_with = _checked(client, is_async, params)
        base, sdk_base = params.get("api_base"), str(getattr(client, "base_url", "")).rstrip("/")
        if provider in _CLIENT_PROVIDERS and base and str(base).rstrip("/") != sdk_base:
            raise ConfigurationError(
                f"the Router's deployment {deployment.get('model_name')!r} sends to {base}, but LiteLLM "
                f"would send it with the guarded client, to {sdk_base}: give such deployments the client's "
                "endpoint, or call them with completion() and a client each"
            )
    if isinstance(client, BudgetHTTP) and len({*_HTTP_PROVIDERS}) > 1:  # pragma: no cover - one today
        raise ConfigurationError("a Router on a BudgetHTTP takes deployments of one provider")
    return provider, sent_with if provider else client


def _deployments(router: Any) -> Iterable[Mapping[str, Any]]:
    registry = getattr(router, "registry", None)
    found: Iterable[Mapping[str, Any]] = registry().all() if callable(registry) else router.model_list
    return found


def completion(client: Any, /, **kwargs: Any) -> Any:
    """``litellm.completion(client=..., **kwargs)`` with ``client`` a guarded ``OpenAI`` (or
    ``AzureOpenAI``) that ``guard.wrap`` made, or a ``BudgetHTTP``; a refusal raises ``BudgetExceeded``."""
    provider, sent_with = _call(client, False, kwargs)
    try:
        return litellm.completion(client=sent_with, **kwargs)
    except Exception as exc:
        raise _refused(exc, provider) from refusal_in(exc)


async def acompletion(client: Any, /, **kwargs: Any) -> Any:
    """``litellm.acompletion(client=..., **kwargs)`` with ``client`` a guarded ``AsyncOpenAI`` (or
    ``AsyncAzureOpenAI``), or a ``BudgetHTTP``; a refusal raises ``BudgetExceeded``."""
    provider, sent_with = _call(client, True, kwargs)
    try:
        return await litellm.acompletion(client=sent_with, **kwargs)
    except Exception as exc:
        raise _refused(exc, provider) from refusal_in(exc)


def router_completion(router: Any, client: Any, /, **kwargs: Any) -> Any:
    """``router.completion(client=..., **kwargs)``: as ``completion``, for a ``litellm.Router`` every
    deployment of which ``client`` carries (checked first: none is sent unguarded)."""
    provider, sent_with = _call(client, False, kwargs, router)
    try:
        return router.completion(client=sent_with, **kwargs)
    except Exception as exc:
        raise _refused(exc, provider) from refusal_in(exc)


async def arouter_completion(router: Any, client: Any, /, **kwargs: Any) -> Any:
    """``router.acompletion(client=..., **kwargs)``, as ``router_completion``."""
    provider, sent_with = _call(client, True, kwargs, router)
    try:
        return await router.acompletion(client=sent_with, **kwargs)
    except Exception as exc:
        raise _refused(exc, provider) from refusal_in(exc)


def _refused(exc: Exception, provider: str) -> Exception:
    """``exc`` itself, or as ``BudgetExceeded`` when it is (or carries) a refusal."""
    refusal = refusal_in(exc)
    return exc if refusal is None else BudgetExceeded(refusal, provider)

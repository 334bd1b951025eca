"""LiteLLM on guarded clients: ``completion(client, ...)`` and ``acompletion(client, ...)`` call
``litellm.completion`` / ``litellm.acompletion`` (``router_completion`` / ``arouter_completion`` a
``litellm.Router``'s) with ``client=`` a client the guard sends through, and raise a refusal as LiteLLM's
own budget error.

    client = guard.wrap(openai.OpenAI(), user="alice")     # LiteLLM's openai and azure providers
    reply = completion(client, model="openai/gpt-4o-mini", messages=[...])
    http = BudgetHTTP(guard, user="alice")                  # anthropic, groq, deepseek, mistral, ...
    reply = completion(http, model="groq/llama-3.3-70b-versatile", messages=[...])

No callback: each HTTP request LiteLLM sends through the client (each of the SDK's retries, each of
LiteLLM's ``num_retries``) is one attempt of the guard's flow (``budgetguard.integrations.httpx``),
reserved before it is sent and settled from the usage the response reports (a stream's too: the
transport asks an OpenAI chat stream for its usage, and reads a stream LiteLLM closes early on to its
final usage: ``_streams.DRAIN``). Which client LiteLLM sends a provider's calls with decides how it is
guarded (read from LiteLLM's ``main.completion`` dispatch):

- ``openai`` and ``azure``: through the OpenAI SDK client it is given: a client ``guard.wrap`` made.
- ``_HTTP_PROVIDERS`` (anthropic, and the OpenAI-compatible deepseek, fireworks_ai, groq, mistral,
  openrouter, together_ai, xai): with its own HTTP handler, which ``BudgetHTTP`` puts on a
  ``BudgetTransport`` (Anthropic's messages or OpenAI's chat wire format).
- ``_OPENAI_LIKE`` (perplexity, cerebras, ...): through an OpenAI SDK client it is given, which
  ``BudgetHTTP`` makes for the call's endpoint and key, on a ``BudgetTransport``.

Each is priced as genai-prices names the provider (the tables below map LiteLLM's names); a model it
does not price is a ``PricingError`` before anything is sent, never $0. A model of any other provider
would be sent unguarded, so it is refused with a ``ConfigurationError``; so is a Router with a
deployment the client given cannot carry (another provider, or another endpoint than the guarded SDK
client's, which LiteLLM would use in its place). A refusal raises ``BudgetExceeded``, both LiteLLM's
``BudgetExceededError`` and budgetguard's, the refusal chained as its ``__cause__``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, cast

from .._budgets import Scope
from .._core import GuardCore
from .._errors import BudgetExceededError, BudgetGuardError, ConfigurationError
from .._scopes import ScopeSpec
from ._refusal import refusal_in

try:
    import litellm
    from litellm.exceptions import BudgetExceededError as LiteLLMBudgetExceededError
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
    from litellm.secret_managers.main import get_secret_bool
except ImportError as exc:  # pragma: no cover - exercised by tests/integrations/test_lazy_agents.py
    raise ConfigurationError(
        "budgetguard.integrations.litellm needs LiteLLM: pip install 'llm-budgetguard[litellm]'"
    ) from exc

__all__ = [
    "BudgetExceeded",
    "BudgetHTTP",
    "NotALiteLLMClient",
    "acompletion",
    "arouter_completion",
    "completion",
    "router_completion",
]

_CLIENT_PROVIDERS = {"openai": ("OpenAI", "AsyncOpenAI"), "azure": ("AzureOpenAI", "AsyncAzureOpenAI")}
"""LiteLLM's providers that send through the SDK ``client=`` given, and the SDK clients each takes."""

_HTTP_PROVIDERS = {
    "anthropic": "anthropic",
    "deepseek": "deepseek",
    "fireworks_ai": "fireworks",
    "groq": "groq",
    "mistral": "mistral",
    "openrouter": "openrouter",
    "together_ai": "together",
    "xai": "x-ai",
}
"""LiteLLM's providers that send with the HTTP handler given as ``client=`` (its ``base_llm_http_handler``
or, for anthropic, its own) in a wire format the transport reads, and the genai-prices provider each is
priced as."""

_OPENAI_LIKE = {
    "baseten": "baseten",
    "cerebras": "cerebras",
    "moonshot": "moonshotai",
    "novita": "novita",
    "perplexity": "perplexity",
    "zai": "zai",
}
"""LiteLLM's OpenAI-compatible providers that send through an OpenAI SDK client given as ``client=`` (its
``openai_chat_completions``, as for ``openai``), and the genai-prices provider each is priced as."""

_HTTP_SWITCH = "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"
"""LiteLLM's setting that sends its OpenAI-compatible providers with an HTTP handler of its own instead of
the SDK client given (unguarded)."""


class NotALiteLLMClient(ConfigurationError, AttributeError):
    """What a ``BudgetHTTP`` given to LiteLLM itself raises as LiteLLM sends with it (an ``AttributeError``
    too, so that ``getattr(http, name, default)`` still answers its default)."""

    def __init__(self) -> None:
        super().__init__(
            "a BudgetHTTP is no client to give litellm itself (LiteLLM would send unguarded): call "
            "budgetguard.integrations.litellm.completion(http, model=..., messages=...) (acompletion, "
            "router_completion, arouter_completion), which gives LiteLLM the guarded client of the call's "
            "provider"
        )


class BudgetHTTP(HTTPHandler, AsyncHTTPHandler):  # type: ignore[misc]
    """The clients LiteLLM sends with for the providers whose client it makes itself, on a
    ``BudgetTransport`` priced as the provider, each made on first use: its HTTP handlers
    (``HTTPHandler`` / ``AsyncHTTPHandler``) for ``_HTTP_PROVIDERS``, an OpenAI SDK client per endpoint
    and key for ``_OPENAI_LIKE``. The ``client`` of ``completion`` for those providers. ``scopes`` as in
    ``guard.wrap``, over ``budget_context()``'s. ``close()`` / ``aclose()`` close what it opened.

    Given to ``litellm.completion(client=...)`` itself, it is no client: LiteLLM's HTTP handlers would
    take it for none of theirs (``isinstance(client, HTTPHandler)``) and send the call unguarded with one
    they make. So it is one of LiteLLM's handlers (sync and async) that sends nothing: every way LiteLLM
    sends with it (a handler's ``post``..., an OpenAI SDK client's ``chat``...) raises a
    ``ConfigurationError`` (``NotALiteLLMClient``) that says to call ``completion`` instead; nothing is sent.
    LiteLLM's paths that ignore ``client=`` (sync ``gemini/``, ``cohere_chat/``, ``bedrock/``, ``ollama/``
    embeddings) never see it: they send unguarded (the README says so). (Two of LiteLLM's handlers'
    ``close`` differ, sync and async: ``close()`` is this one's, sync.)"""

    def _sends_nothing(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotALiteLLMClient()

    post = get = put = patch = delete = single_connection_request = _sends_nothing
    client = property(_sends_nothing)

    def __getattr__(self, name: str) -> Any:  # (what LiteLLM asks of an OpenAI SDK client: chat...)
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotALiteLLMClient()

    def __del__(self) -> None:  # (LiteLLM's handlers close their own httpx client; this one has none)
        pass

    def __init__(self, guard: GuardCore, **scopes: ScopeSpec) -> None:
        from .httpx import AsyncBudgetTransport, BudgetTransport

        if not isinstance(guard, GuardCore):
            raise ConfigurationError(f"BudgetHTTP takes a Guard, got {guard!r}")
        for kind in scopes:  # a bad kind fails here, not on the first call
            Scope("global") if kind == "global" else Scope(kind, "x")
        self.guard, self.scopes = guard, scopes
        self._transports: tuple[Any, Any] = (BudgetTransport, AsyncBudgetTransport)
        self._handlers: dict[tuple[str, bool, tuple[str, str] | None], Any] = {}
        self._lock = threading.Lock()

    def handler(self, provider: str, is_async: bool, endpoint: tuple[str, str] | None = None) -> Any:
        """The client LiteLLM's ``provider`` sends with (``is_async``: for ``acompletion``); for an
        ``_OPENAI_LIKE`` provider, the OpenAI client of ``endpoint`` (base URL, API key)."""
        key = (provider, is_async, endpoint)
        with self._lock:
            made = self._handlers.get(key)
            if made is None:
                made = self._made(provider, is_async, endpoint)
                self._handlers[key] = made
            return made

    def _made(self, provider: str, is_async: bool, endpoint: tuple[str, str] | None) -> Any:
        if endpoint is not None:
            import openai

            from .httpx import wrap_client

            base, api_key = endpoint
            sdk = (openai.AsyncOpenAI if is_async else openai.OpenAI)(api_key=api_key, base_url=base)
            return wrap_client(self.guard, sdk, self.scopes, provider=_OPENAI_LIKE[provider])
        prices = _HTTP_PROVIDERS[provider]
        transport: Any = self._transports[is_async](self.guard, provider=prices, **self.scopes)
        if is_async:
            return AsyncHTTPHandler(transport=transport)
        return HTTPHandler(client=_transport_client(transport))

    def close(self) -> None:  # type: ignore[override]
        for (_, is_async, endpoint), handler in list(self._handlers.items()):
            if not is_async:
                (handler if endpoint else handler.client).close()  # (a handler leaves its client open)

    async def aclose(self) -> None:
        for (_, is_async, _), handler in list(self._handlers.items()):
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
    _, provider, api_key, api_base = litellm.get_llm_provider(
        model,
        custom_llm_provider=kwargs.get("custom_llm_provider"),
        api_base=kwargs.get("api_base"),
        api_key=kwargs.get("api_key"),
    )
    provider = str(provider)
    if (provider in _CLIENT_PROVIDERS or provider in _OPENAI_LIKE) and get_secret_bool(_HTTP_SWITCH):
        raise ConfigurationError(
            f"{_HTTP_SWITCH} is set: LiteLLM would send {model!r} with an HTTP client of its own, not the "
            "guarded one; unset it"
        )
    if isinstance(client, BudgetHTTP):
        if provider in _HTTP_PROVIDERS:
            return provider, client.handler(provider, is_async)
        if provider in _OPENAI_LIKE:
            if not api_base or not api_key:
                raise ConfigurationError(
                    f"LiteLLM has no {'endpoint' if not api_base else 'API key'} for {model!r} ({provider}): "
                    "pass api_base= and api_key= (or set its environment variables)"
                )
            return provider, client.handler(provider, is_async, (str(api_base), str(api_key)))
        raise _unguarded(model, provider, "a BudgetHTTP carries " + ", ".join(_BY_HTTP))
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


_BY_HTTP = sorted({*_HTTP_PROVIDERS, *_OPENAI_LIKE})
"""The LiteLLM providers a ``BudgetHTTP`` carries."""


def _unguarded(model: str, provider: str, carried: str) -> ConfigurationError:
    return ConfigurationError(
        f"LiteLLM would send {model!r} ({provider}) with an HTTP client budgetguard does not guard: "
        f"{carried}. Guarded: {', '.join(_CLIENT_PROVIDERS)} through a guard.wrap() client; "
        f"{', '.join(_BY_HTTP)} through a BudgetHTTP. For another provider, call its SDK through "
        "guard.wrap() or budget the call with guard.reserve()"
    )


def _call(client: Any, is_async: bool, kwargs: Mapping[str, Any], router: Any = None) -> tuple[str, Any]:
    """The provider to name in a refusal and the ``client=`` of a call (of ``router``'s, if given)."""
    if router is None:
        return _checked(client, is_async, kwargs)
    if "client" in kwargs:
        raise ConfigurationError("pass the guarded client as the second argument, not as client=")
    provider, sent = "", {}
    for deployment in _deployments(router):  # every one: fallbacks may pick another model group's
        params = dict(deployment.get("litellm_params") or {})
        provider, sent_with = _checked(client, is_async, params)
        sent[id(sent_with)] = sent_with, provider
        base, sdk_base = params.get("api_base"), str(getattr(client, "base_url", "")).rstrip("/")
        if provider in _CLIENT_PROVIDERS and base and str(base).rstrip("/") != sdk_base:
            raise ConfigurationError(
                f"the Router's deployment {deployment.get('model_name')!r} sends to {base}, but LiteLLM "
                f"would send it with the guarded client, to {sdk_base}: give such deployments the client's "
                "endpoint, or call them with completion() and a client each"
            )
    if len(sent) > 1:  # (LiteLLM gives every deployment the one client=: another's would be priced wrong)
        providers = sorted({name for _, name in sent.values()})
        raise ConfigurationError(
            f"a Router on a BudgetHTTP sends every deployment with one client, but its deployments need "
            f"{len(sent)} ({', '.join(providers)}, endpoints and keys): give a Router deployments of one "
            "provider (and endpoint), or call them with completion()"
        )
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


def _refused(exc: Exception, provider: str) -> BaseException:
    """``exc`` itself; or as ``BudgetExceeded`` when it is (or carries) a refusal; or the guard's own error
    it carries (a model with no price: LiteLLM raises it as its ``InternalServerError``)."""
    refusal = refusal_in(exc)
    if refusal is not None:
        return BudgetExceeded(refusal, provider)
    return refusal_in(exc, BudgetGuardError) or exc

"""LiteLLM on a guarded client: ``completion(client, ...)`` and ``acompletion(client, ...)`` call
``litellm.completion`` / ``litellm.acompletion`` with ``client=`` a client ``guard.wrap`` made, and raise a
refusal as LiteLLM's own budget error.

    client = guard.wrap(openai.OpenAI(), user="alice")
    reply = completion(client, model="openai/gpt-4o-mini", messages=[...])

No callback: each HTTP request LiteLLM sends through the client (each of the SDK's retries, each of
LiteLLM's ``num_retries``) is one attempt of the guard's flow (``budgetguard.integrations.httpx``),
reserved before it is sent and settled from the usage the response reports (a stream's too: the
transport asks an OpenAI chat stream for its usage). LiteLLM sends through the client it is given for the
OpenAI and Azure OpenAI providers only; a model of another provider would be sent unguarded, so it is
refused with a ``ConfigurationError``. A refusal raises ``BudgetExceeded``, both LiteLLM's
``BudgetExceededError`` and budgetguard's, the refusal chained as its ``__cause__``.
"""

from __future__ import annotations

from typing import Any, cast

from .._errors import BudgetExceededError, ConfigurationError
from ._refusal import refusal_in

try:
    import litellm
    from litellm.exceptions import BudgetExceededError as LiteLLMBudgetExceededError
except ImportError as exc:  # pragma: no cover - exercised by tests/integrations/test_lazy_agents.py
    raise ConfigurationError(
        "budgetguard.integrations.litellm needs LiteLLM: pip install 'llm-budgetguard[litellm]'"
    ) from exc

__all__ = ["BudgetExceeded", "acompletion", "completion"]

_CLIENT_PROVIDERS = {"openai": ("OpenAI", "AsyncOpenAI"), "azure": ("AzureOpenAI", "AsyncAzureOpenAI")}
"""LiteLLM's providers that send through the ``client=`` given, and the SDK clients each takes."""


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


def _checked(client: Any, is_async: bool, kwargs: dict[str, Any]) -> str:
    """The LiteLLM provider of the call, after checking that it sends through ``client`` and that
    ``client`` is guarded."""
    if "client" in kwargs:
        raise ConfigurationError("pass the guarded client as the first argument, not as client=")
    if getattr(client, "_budgetguard_original", None) is None:
        raise ConfigurationError(
            f"completion() takes a client guard.wrap() made, got {type(client).__qualname__}: "
            "completion(guard.wrap(openai.OpenAI(), user=...), model=..., messages=...)"
        )
    model = kwargs.get("model")
    if not isinstance(model, str):
        raise ConfigurationError("completion() needs model= (a LiteLLM model name, such as 'openai/gpt-4o')")
    _, provider, _, _ = litellm.get_llm_provider(
        model, custom_llm_provider=kwargs.get("custom_llm_provider"), api_base=kwargs.get("api_base")
    )
    takes = _CLIENT_PROVIDERS.get(provider)
    if takes is None:
        raise ConfigurationError(
            f"LiteLLM sends {model!r} ({provider}) with its own HTTP client, not the guarded one: "
            "budgetguard.integrations.litellm guards its OpenAI and Azure OpenAI providers; call the "
            "provider's SDK through guard.wrap() instead"
        )
    name = type(client).__name__
    if name != takes[is_async]:
        raise ConfigurationError(
            f"LiteLLM's {provider} provider takes a guarded {takes[is_async]} "
            f"({'acompletion' if is_async else 'completion'}), got {name}"
        )
    return str(provider)


def completion(client: Any, /, **kwargs: Any) -> Any:
    """``litellm.completion(client=client, **kwargs)`` with ``client`` a guarded ``OpenAI`` (or
    ``AzureOpenAI``) that ``guard.wrap`` made; a refusal raises ``BudgetExceeded``."""
    provider = _checked(client, False, kwargs)
    try:
        return litellm.completion(client=client, **kwargs)
    except Exception as exc:
        refusal = refusal_in(exc)
        if refusal is None:
            raise
        raise BudgetExceeded(refusal, provider) from refusal


async def acompletion(client: Any, /, **kwargs: Any) -> Any:
    """``litellm.acompletion(client=client, **kwargs)`` with ``client`` a guarded ``AsyncOpenAI`` (or
    ``AsyncAzureOpenAI``); a refusal raises ``BudgetExceeded``."""
    provider = _checked(client, True, kwargs)
    try:
        return await litellm.acompletion(client=client, **kwargs)
    except Exception as exc:
        refusal = refusal_in(exc)
        if refusal is None:
            raise
        raise BudgetExceeded(refusal, provider) from refusal

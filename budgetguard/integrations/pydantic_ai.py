"""pydantic-ai on a guarded client: ``openai_model(guard, name, client)`` (an ``OpenAIChatModel`` or
``OpenAIResponsesModel`` whose provider holds ``guard.wrap(client)``) and the refusal as pydantic-ai's own
error.

    agent = Agent(openai_model(guard, "gpt-4o", AsyncOpenAI()))
    with budget_context(user="alice"):
        result = await agent.run("...")

Every model request of a run (each step of the tool loop, each output-validation retry, each SDK retry)
is one HTTP request, hence one attempt of the guard's flow (``budgetguard.integrations.httpx``): reserved
before it is sent, settled from the usage the response reports, priced by budgetguard whether or not
pydantic-ai can price the model. A refusal stops the run: it raises ``BudgetExceeded``, both pydantic-ai's
``UsageLimitExceeded`` and budgetguard's ``BudgetExceededError``, the refusal chained as its ``__cause__``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .._errors import BudgetExceededError, ConfigurationError
from .._guard import Guard
from .._scopes import ScopeSpec
from ._refusal import refusal_in
from .httpx import wrap_client

try:
    from pydantic_ai.exceptions import UsageLimitExceeded
    from pydantic_ai.models import Model
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.providers.openai import OpenAIProvider
except ImportError as exc:  # pragma: no cover - exercised by tests/integrations/test_lazy.py
    raise ConfigurationError(
        "budgetguard.integrations.pydantic_ai needs pydantic-ai with its OpenAI models: "
        "pip install 'llm-budgetguard[pydantic-ai]'"
    ) from exc

__all__ = ["BudgetExceeded", "BudgetModel", "openai_model"]


class BudgetExceeded(UsageLimitExceeded, BudgetExceededError):
    """A refused model request, as pydantic-ai's error: ``except UsageLimitExceeded`` (or
    ``AgentRunError``) and ``except BudgetExceededError`` both catch it; the refusal is its
    ``__cause__`` and its attributes (``scope``, ``limit``, ``spent``, ``held``, ``requested``,
    ``resets_at``) are the refusal's."""

    def __init__(self, refusal: BudgetExceededError) -> None:
        UsageLimitExceeded.__init__(self, str(refusal))
        self.__dict__.update(refusal.__dict__)


def _as_pydantic_ai(exc: Exception) -> Exception:
    refusal = None if isinstance(exc, UsageLimitExceeded) else refusal_in(exc)
    if refusal is None:
        return exc
    error = BudgetExceeded(refusal)
    error.__cause__ = refusal
    return error


class BudgetModel(WrapperModel):
    """A pydantic-ai model that raises a refusal of the model it wraps as ``BudgetExceeded``;
    ``client``: the guarded client its requests go through (``openai_model``'s), which its owner closes
    (pydantic-ai leaves a client it was given open)."""

    client: Any = None

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().request(*args, **kwargs)
        except Exception as exc:
            error = _as_pydantic_ai(exc)
            if error is exc:
                raise
            raise error from error.__cause__

    @asynccontextmanager
    async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async with super().request_stream(*args, **kwargs) as stream:
                yield stream
        except Exception as exc:
            error = _as_pydantic_ai(exc)
            if error is exc:
                raise
            raise error from error.__cause__


def openai_model(
    guard: Guard,
    model_name: str,
    client: Any = None,
    /,
    *,
    responses: bool = False,
    **scopes: ScopeSpec,
) -> BudgetModel:
    """A pydantic-ai OpenAI model whose every request goes through ``guard.wrap(client, **scopes)``:
    ``Agent(openai_model(guard, "gpt-4o", AsyncOpenAI()))``. ``client``: an ``AsyncOpenAI`` (or
    ``AsyncAzureOpenAI``, or any OpenAI-compatible endpoint's), by default one from the environment;
    ``responses``: the Responses API instead of chat completions; ``scopes`` as in ``guard.wrap``
    (literal ids, or callables of the ``httpx.Request``), over ``budget_context()``'s."""
    if client is None:
        from openai import AsyncOpenAI

        client = AsyncOpenAI()
    guarded = wrap_client(guard, client, scopes)  # (scopes of any kind)
    model_class = OpenAIResponsesModel if responses else OpenAIChatModel
    model: Model = model_class(model_name, provider=OpenAIProvider(openai_client=guarded))
    made = BudgetModel(model)
    made.client = guarded
    return made

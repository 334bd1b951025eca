"""The OpenAI Agents SDK on a guarded client: ``BudgetProvider`` (a model provider whose models send
through ``guard.wrap(AsyncOpenAI)``) and the refusal as the SDK's own error.

    config = RunConfig(model_provider=BudgetProvider(guard, AsyncOpenAI()))
    with budget_context(user="alice", run=run_id):   # a budget per user, and per run
        result = await Runner.run(agent, "...", run_config=config)

Every model call of a run (each turn, each call after a tool's output or error, each SDK retry) is one
HTTP request, hence one attempt of the guard's flow (``budgetguard.integrations.httpx``): reserved
before it is sent, settled from the usage the response reports. A refusal stops the run: ``Runner.run``
raises ``BudgetExceeded``, both the SDK's ``AgentsException`` (its ``run_data`` filled in by the runner)
and budgetguard's ``BudgetExceededError``, the refusal chained as its ``__cause__``; the SDK's model does
not log it as a failed response (nor as a failed stream).

A refusal inside a tool (a ``@function_tool`` whose code calls a guarded client, or an agent used as a
tool, whose run on the ``BudgetProvider`` is refused) stops the run the same way when the tool's
``failure_error_function`` is ``stop_on_refusal``: the SDK would otherwise hand the model "An error
occurred while running the tool" and let it call, and pay, again. Any other error of the tool gets the
SDK's default message, as before::

    @function_tool(failure_error_function=stop_on_refusal)
    def summarise(text: str) -> str: ...

    researcher.as_tool("research", "...", failure_error_function=stop_on_refusal)

It is per tool because the SDK has no run-level hook that can end a run on a tool's error:
``RunConfig.tool_error_formatter`` only words the message (its own errors are logged and dropped) and
``RunHooks.on_tool_end`` sees the message, not the error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .._errors import BudgetExceededError, ConfigurationError
from .._guard import Guard
from .._scopes import ScopeSpec
from ._refusal import quiet_refusals, refusal_in
from .httpx import wrap_client

try:
    from agents import Model, ModelProvider, OpenAIProvider, RunContextWrapper, default_tool_error_function
    from agents.exceptions import AgentsException
except ImportError as exc:  # pragma: no cover - exercised by tests/integrations/test_lazy.py
    raise ConfigurationError(
        "budgetguard.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'llm-budgetguard[openai-agents]'"
    ) from exc

__all__ = ["BudgetExceeded", "BudgetModel", "BudgetProvider", "stop_on_refusal"]


class BudgetExceeded(AgentsException, BudgetExceededError):
    """A refused model call, as the Agents SDK's error: ``except AgentsException`` and ``except
    BudgetExceededError`` both catch it; the refusal is its ``__cause__`` and its attributes
    (``scope``, ``limit``, ``spent``, ``held``, ``requested``, ``resets_at``) are the refusal's."""

    def __init__(self, refusal: BudgetExceededError) -> None:
        Exception.__init__(self, *refusal.args)
        self.__dict__.update(refusal.__dict__)
        self.run_data = None


def stop_on_refusal(context: RunContextWrapper[Any], error: Exception) -> str:
    """A tool's ``failure_error_function`` that ends the run on a refusal: ``Runner.run`` (and
    ``run_streamed``'s events) raise ``BudgetExceeded``, the refusal chained; any other error is given
    to the model as the SDK's default message (``default_tool_error_function``)."""
    refusal = refusal_in(error)
    if refusal is None:
        return default_tool_error_function(context, error)
    if isinstance(error, BudgetExceeded):  # an agent used as a tool: its run was refused
        raise error
    raise BudgetExceeded(refusal) from refusal


class BudgetModel(Model):
    """A model that raises a refusal of the model it wraps as ``BudgetExceeded``."""

    def __init__(self, wrapped: Model) -> None:
        self.wrapped = wrapped
        quiet_refusals("openai.agents", "Error streaming response")  # (its Responses model logs that)

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.wrapped.get_response(*args, **kwargs)
        except AgentsException:
            raise
        except Exception as exc:
            refusal = refusal_in(exc)
            if refusal is None:
                raise
            raise BudgetExceeded(refusal) from refusal

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for event in self.wrapped.stream_response(*args, **kwargs):
                yield event
        except AgentsException:
            raise
        except Exception as exc:
            refusal = refusal_in(exc)
            if refusal is None:
                raise
            raise BudgetExceeded(refusal) from refusal

    def __getattr__(self, name: str) -> Any:  # the wrapped model's own attributes
        return getattr(self.wrapped, name)

    def get_retry_advice(self, request: Any) -> Any:
        return self.wrapped.get_retry_advice(request)

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.wrapped._cleanup_on_run_end(owner)

    async def close(self) -> None:
        await self.wrapped.close()


class BudgetProvider(ModelProvider):
    """An Agents SDK model provider whose models call through ``guard.wrap(client, **scopes)``:
    ``RunConfig(model_provider=BudgetProvider(guard, AsyncOpenAI()))``. ``client``: an ``AsyncOpenAI``
    (or ``AsyncAzureOpenAI``), by default one from the environment (``OPENAI_API_KEY``);
    ``use_responses``: the Responses API (the SDK's default) or chat completions (``False``), always
    over HTTP: the SDK's WebSocket transport (``set_default_openai_responses_transport("websocket")``)
    is not guarded, so these models never use it; ``scopes`` as in ``guard.wrap`` (literal ids, or
    callables of the ``httpx.Request``), over ``budget_context()``'s."""

    def __init__(
        self,
        guard: Guard,
        client: Any = None,
        /,
        *,
        use_responses: bool | None = None,
        **scopes: ScopeSpec,
    ) -> None:
        if client is None:
            from openai import AsyncOpenAI

            client = AsyncOpenAI()
        self.client = wrap_client(guard, client, scopes)  # (scopes of any kind)
        self._inner = OpenAIProvider(
            openai_client=self.client, use_responses=use_responses, use_responses_websocket=False
        )
        quiet_refusals("openai.agents", "Error getting response")  # (its model logs that for a refusal)

    def get_model(self, model_name: str | None) -> Model:
        return BudgetModel(self._inner.get_model(model_name))

    async def aclose(self) -> None:
        await self._inner.aclose()

"""LangChain 1.x agents: ``BudgetMiddleware``, an ``AgentMiddleware`` guarding each model call of an agent
``langchain.agents.create_agent`` built (extra ``langchain-agents``).

    budget = BudgetMiddleware(guard, user="{user_id}")
    agent = create_agent(ChatOpenAI(model="gpt-4o"), tools, middleware=[budget])
    agent.invoke({"messages": [...]}, config={"metadata": {"user_id": "alice"}})

``wrap_model_call`` (``awrap_model_call`` on an event loop) is one attempt of the guard's flow
(``Guard.attempt``): the request the agent is about to send (system message, messages, tools, the model's
settings) is read as the callback handler reads a run (``langchain.request_from_run``) and reserved; the
call's ``AIMessage`` is charged its ``usage_metadata``; a call that raises is released (or charged its input,
per the guard's ``charge_failed``). A refusal stops the call before it is sent: the run raises
``BudgetExceeded``, both LangChain's ``ModelError`` (not retryable, so ``ModelRetryMiddleware`` does not
retry it, while ``ModelFallbackMiddleware`` tries its next model) and budgetguard's ``BudgetExceededError``,
the refusal chained as its ``__cause__``. Listed after a retry or fallback middleware, it guards each of
their calls. Use it or the callback handler on an agent, not both: each would charge the call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .._actions import sending
from .._budgets import Scope
from .._default import default_guard
from .._errors import BudgetExceededError, UsageError
from .._guard import Attempt, Guard
from .._scopes import ScopeSpec
from .._usage import Usage
from . import missing_extra
from .langchain import request_from_run, usage_from_message

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest
    from langchain_core.exceptions import ModelError
    from langchain_core.messages import AIMessage
    from langgraph.config import get_config
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("langchain-agents", exc) from exc

__all__ = ["BudgetExceeded", "BudgetMiddleware"]


class BudgetExceeded(ModelError, BudgetExceededError):
    """A refused model call, as LangChain's model error: ``except ModelError`` and ``except
    BudgetExceededError`` both catch it; the refusal is its ``__cause__`` and its attributes (``scope``,
    ``limit``, ``spent``, ``held``, ``requested``, ``resets_at``) are the refusal's."""

    is_retryable = False  # (retrying the same request is refused again)

    def __init__(self, refusal: BudgetExceededError) -> None:
        Exception.__init__(self, *refusal.args)
        self.__dict__.update(refusal.__dict__)


class BudgetMiddleware(AgentMiddleware):
    """Enforce (or, with ``enforce=False``, meter) the guard's budgets on every model call of an agent.

    Scopes are specs as in ``Guard.with_budget``, resolved over the run's ``config["metadata"]`` and its
    runtime ``context`` (a mapping or a dataclass: ``context={"user_id": "alice"}`` with
    ``user="{user_id}"``), over ``budget_context()``.
    """

    def __init__(self, guard: Guard | None = None, *, enforce: bool = True, **scopes: ScopeSpec) -> None:
        super().__init__()
        for kind in scopes:
            Scope("global") if kind == "global" else Scope(kind, "x")  # a bad kind fails here, not per call
        self._guard = guard
        self.enforce = enforce
        self.scopes = scopes

    @property
    def guard(self) -> Guard:
        return self._guard if self._guard is not None else default_guard()

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        attempt = self._attempt(request)
        try:
            attempt.reserve()
        except BudgetExceededError as refusal:
            raise BudgetExceeded(refusal) from refusal
        try:
            with sending(self.guard):  # (the guard's other layers inside leave the call to this one)
                response = handler(request)
        except BaseException as exc:
            attempt.fail(exc)
            raise
        return attempt.commit(response)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        attempt = self._attempt(request)
        try:
            await attempt.areserve()
        except BudgetExceededError as refusal:
            raise BudgetExceeded(refusal) from refusal
        try:
            with sending(self.guard):
                response = await handler(request)
        except BaseException as exc:
            await attempt.afail(exc)
            raise
        return await attempt.acommit(response)

    def _attempt(self, request: ModelRequest) -> Attempt:
        model, settings = request.model, dict(request.model_settings)
        params: dict[str, Any] = {**model._get_invocation_params(**settings)}
        if request.tools:
            params["tools"] = list(request.tools)
        metadata: dict[str, Any] = dict(model._get_ls_params(**settings))
        messages = [request.system_message, *request.messages] if request.system_message else request.messages
        arguments = {**metadata, **_run_metadata(), **_context_of(request.runtime)}
        body, provider = request_from_run(messages, params, metadata)
        guard = self.guard
        return guard.attempt(
            guard.estimator(body, provider=provider),
            usage=_usage,
            enforce=self.enforce,
            scopes=self.scopes,
            arguments=arguments,
        )


def _run_metadata() -> Mapping[str, Any]:
    """The running graph's ``config["metadata"]`` (empty outside one)."""
    try:
        return get_config().get("metadata") or {}
    except RuntimeError:
        return {}


def _context_of(runtime: Any) -> Mapping[str, Any]:
    context = getattr(runtime, "context", None)
    if isinstance(context, Mapping):
        return context
    if dataclasses.is_dataclass(context) and not isinstance(context, type):
        return {field.name: getattr(context, field.name) for field in dataclasses.fields(context)}
    return {}


def _usage(response: Any) -> Usage:
    """The usage of what the model call returned: a ``ModelResponse`` (its last ``AIMessage``), an
    ``AIMessage``, or an ``ExtendedModelResponse`` around a ``ModelResponse``."""
    response = getattr(response, "model_response", response)
    messages = response.result if hasattr(response, "result") else [response]
    message = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    if message is None:
        raise UsageError(f"the agent's model call returned no AIMessage: {type(response).__name__}")
    return usage_from_message(message)

"""LangChain 1.x agents: ``BudgetMiddleware``, an ``AgentMiddleware`` guarding each model call of an agent
``langchain.agents.create_agent`` built (extra ``langchain-agents``).

    budget = BudgetMiddleware(guard, user="{user_id}")
    agent = create_agent(ChatOpenAI(model="gpt-4o"), tools, middleware=[budget])
    agent.invoke({"messages": [...]}, config={"metadata": {"user_id": "alice"}})

Each model call actually sent is one attempt of the guard's flow, reserved before it is sent and charged
the bill of the model that answered, wherever the middleware stands in the list: ``wrap_model_call``
(``awrap_model_call`` on an event loop) guards, through the callback handler's flow
(``langchain.BudgetCallbackHandler``), every chat model run started inside it: the call of the agent's
model, and those of the middlewares listed after it (``ModelFallbackMiddleware``'s fallback models,
``ModelRetryMiddleware``'s retries, a model a middleware calls to decide). So a run is read as the model
receives it (its bound tools, a structured output's tool or JSON-schema response format included) and
estimated like any SDK call; it is charged its usage (``langchain.usage_from_message``: the provider's
own usage where the message carries it, and the Responses API's built-in tool calls, so that a web
search's fee is charged); a call that raises is released (or charged its input, per the guard's
``charge_failed``). A chat model that can report a stream's usage and was not told either way
(``ChatOpenAI(stream_usage=None)``, the default on a custom ``base_url``) is asked to, so that a
streamed call is charged its bill rather than its worst case; ``stream_usage=False`` is kept. It asks
the models it wraps: listed before ``ModelFallbackMiddleware``, the fallback models' own setting
applies (a stream without usage is charged its reservation, as the guard charges one).

A refusal stops the call before it is sent: the call raises ``BudgetExceeded``, both LangChain's
``ModelError`` (not retryable, so ``ModelRetryMiddleware`` does not retry it, while
``ModelFallbackMiddleware`` tries its next model, itself reserved before it is sent) and budgetguard's
``BudgetExceededError``, the refusal chained as its ``__cause__``. The callback handler of the same guard
leaves the middleware's calls to it (each is charged once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .._actions import sending
from .._budgets import Scope
from .._errors import BudgetExceededError
from .._guard import Guard
from .._scopes import ScopeSpec
from . import missing_extra
from .langchain import BudgetCallbackHandler

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest
    from langchain_core.exceptions import ModelError
    from langchain_core.messages import BaseMessage
    from langchain_core.tracers.context import register_configure_hook
    from langgraph.config import get_config
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("langchain-agents", exc) from exc

__all__ = ["BudgetExceeded", "BudgetMiddleware"]

_guarding: ContextVar[_ModelCalls | None] = ContextVar("budgetguard_agent_model_calls", default=None)
"""The handler guarding the chat model runs started inside a ``BudgetMiddleware``'s ``wrap_model_call``:
LangChain adds it to the callbacks of every run configured while it is set."""
register_configure_hook(_guarding, inheritable=True)

_arguments: ContextVar[Mapping[str, Any] | None] = ContextVar("budgetguard_agent_arguments", default=None)
"""The agent run's scope arguments (its ``config["metadata"]`` and runtime ``context``) for those runs."""


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
        self._calls = _ModelCalls(guard, enforce=enforce, **scopes)
        self.enforce = enforce
        self.scopes = scopes

    @property
    def guard(self) -> Guard:
        return self._calls.guard

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        with self._guarding(request):
            return handler(_asking_usage(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        with self._guarding(request):
            return await handler(_asking_usage(request))

    @contextmanager
    def _guarding(self, request: ModelRequest) -> Iterator[None]:
        self._calls.enforce = self.enforce
        tokens = (
            _guarding.set(self._calls),
            _arguments.set({**_run_metadata(), **_context_of(request.runtime)}),
        )
        try:
            with sending(self.guard):  # (the user's callback handler of this guard leaves each run to _calls)
                yield
        finally:
            _arguments.reset(tokens[1])
            _guarding.reset(tokens[0])


class _ModelCalls(BudgetCallbackHandler):
    """The callback handler's flow for the chat model runs inside a ``BudgetMiddleware``: scopes also
    resolved over the agent run's context, and refusals raised as LangChain's ``ModelError``."""

    def _left_to_middleware(self) -> bool:
        return False  # (these are the middleware's calls)

    def _arguments(self, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**metadata, **(_arguments.get() or {})}

    def _start(
        self,
        run_id: Any,
        messages: Sequence[BaseMessage | Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        try:
            super()._start(run_id, messages, metadata, kwargs)
        except BudgetExceededError as refusal:
            if isinstance(refusal, BudgetExceeded):
                raise
            raise BudgetExceeded(refusal) from refusal


def _asking_usage(request: ModelRequest) -> ModelRequest:
    """``request`` with its model asked to report a stream's usage, when it can and was not told either
    way (langchain-openai asks only OpenAI's own endpoint by default)."""
    model = request.model
    fields = getattr(type(model), "model_fields", None) or {}  # (pydantic models: every chat model)
    if "stream_usage" in fields and model.stream_usage is None:  # type: ignore[attr-defined]
        return request.override(model=model.model_copy(update={"stream_usage": True}))
    return request


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

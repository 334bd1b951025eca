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

Each model call has its handler (``_ModelCalls``), on the request's model and in the context: a model
call sent from a thread without the context is guarded too, and a run still open when the call ends
(cancelled: LangChain ends none of the runs ``asyncio`` cancels; a stream closed early) is settled then,
as a failure. The innermost middleware of a guard guards a run: a sub-agent run inside a model call
(a middleware's critic) with its own ``BudgetMiddleware`` of the same guard is charged once, on its
scopes; a middleware of another guard charges its own budgets too. Two budget middlewares on one agent
stack when their guards differ; of one guard they are refused (``ConfigurationError``), since one of
their scope sets would not apply. On an event loop
(``awrap_model_call``) the handler awaits the guard's async operations: a guard over an async-only ledger
guards an async agent, and a Redis or PostgreSQL guard opens no sync store for it. A run a sync callback
manager drives (``await asyncio.to_thread(model.invoke, ...)`` in a later middleware, or ``model.invoke``
on the loop's own thread) is settled by the handler's sync twin (``_SyncDriven``), its refusal raised:
LangChain would run the async handler on a loop of its own and log its refusal away. Off the agent's loop
the steps run in the calling thread on a sync store over the guard's data (``_OffLoop``). Each start of a
run is claimed once per guard (``_langchain_claims.claim``), the call's handlers first on the model: a
handler of the same guard the model carries leaves the run to them in a thread without the context too,
and one dispatched before them (a thread's own ``config``) gives an admitted run up to them.

Such a plain handler of the middleware's guard adds no budgets to the middleware's calls: the
middleware's scopes decide. Dispatched before the middleware's handler (a sync manager, the handler in a
thread's own ``config``), it has reserved its own scopes by then, so its budgets may refuse the call
first; dispatched after it (on the model's own ``callbacks``, which follow the middleware's) they are
not checked, and alongside it (an async manager dispatches both at once) they may not be. Not both
held, because one guard is one set of counters: two
attempts would reserve and charge every counter both name (``global``, ``budget_context()``'s scopes,
a kind both set) twice, and journal the call twice (reports, ``track()``); one attempt over both scope
sets would need the middleware's hold replaced after it was taken, whenever the plain handler comes
second, and would enforce a metering handler's scopes (``enforce=False``: one attempt, one flag); and a
check of the plain handler's scopes alongside the middleware's hold would count the counters both name
twice, refusing calls that fit. To enforce both scope sets, give the middleware
every scope (``BudgetMiddleware(guard, user=..., feature=...)``), or the plain handler a guard over a
store of its own (each guard reserves its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from .._attempt import Attempt, shared_sync_store
from .._budgets import Scope
from .._default import default_guard
from .._errors import BudgetExceededError, ConfigurationError
from .._guard import Guard
from .._scopes import ScopeSpec
from . import missing_extra
from ._langchain_operations import AsyncOperations, Operations, now
from ._refusal import quiet_refusals
from .langchain import _CALLBACKS_LOGGER, BudgetCallbackHandler, metered_by

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest
    from langchain_core.callbacks import (
        AsyncCallbackHandler,
        BaseCallbackHandler,
        BaseCallbackManager,
        Callbacks,
    )
    from langchain_core.exceptions import ModelError
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult
    from langchain_core.tracers.context import register_configure_hook
    from langgraph.config import get_config
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("langchain-agents", exc) from exc

__all__ = ["BudgetExceeded", "BudgetMiddleware"]

register_configure_hook(metered_by, inheritable=True)  # (LangChain adds the handler it holds to every run)

_twin: ContextVar[BaseCallbackHandler | None] = ContextVar("budgetguard_langchain_sync_twin", default=None)
"""The sync twin (``_SyncDriven``) of the async model call under way, added to every run as ``metered_by``'s
handler is: a model started inside and sent from a thread is guarded too."""
register_configure_hook(_twin, inheritable=True)


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
        calls = self._calls(request, _ModelCalls)
        token = metered_by.set(calls)
        try:
            answer = handler(calls.carried_by(request))
        except BaseException as exc:
            now(calls.settle_open(exc))
            raise
        finally:
            metered_by.reset(token)
        now(calls.settle_open(_StillOpen()))
        return answer

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]
    ) -> Any:
        calls = self._calls(request, _AsyncModelCalls)
        token, twin = metered_by.set(calls), _twin.set(calls.sync_twin)
        try:
            answer = await handler(calls.carried_by(request))
        except BaseException as exc:  # (a cancelled run too: LangChain ends none of its model runs then)
            await calls.settle_open(exc)
            raise
        finally:
            _twin.reset(twin)
            metered_by.reset(token)
        await calls.settle_open(_StillOpen())
        return answer

    def _calls(self, request: ModelRequest, kind: type[_ModelCalls]) -> _ModelCalls:
        outer = metered_by.get()
        runtime = request.runtime
        if (
            isinstance(outer, _ModelCalls)
            and runtime is not None
            and outer.runtime is runtime
            and outer.guard is self.guard  # (another guard's stacks: each reserves)
        ):
            raise ConfigurationError(
                f"two BudgetMiddleware of one guard on one agent (scopes {dict(outer.scopes)!r} and "
                f"{dict(self.scopes)!r}): a model call is reserved once per guard, so one of them "
                "would not apply. Give one middleware every scope (BudgetMiddleware(guard, user=..., "
                "team=...)), or give each its own guard"
            )
        arguments = {**_run_metadata(), **_context_of(runtime)}
        calls = kind(self._guard, arguments, enforce=self.enforce, **self.scopes)
        calls.runtime = runtime
        return calls


class _StillOpen(Exception):
    """What a model run still open when its model call returned is failed with (LangChain never ended it)."""


class _ModelCalls(BudgetCallbackHandler):
    """The callback handler's flow for the chat model runs started inside one ``wrap_model_call``: scopes
    also resolved over the agent run's context, refusals raised as LangChain's ``ModelError``, and every
    run still open when the call ends (cancelled, abandoned) settled then.

    It rides on the request's model (its ``callbacks``: a thread without the context still reaches it)
    and on the context (``metered_by``, a configure hook: the other models started inside, fallbacks and
    the selector's); LangChain adds one handler object once. The innermost handler of a guard guards a run
    (``_left_to_middleware``): an agent run inside a model call (a middleware's sub-agent) is reserved
    once, on its own middleware's scopes."""

    middleware = True

    def __init__(
        self, guard: Guard | None, arguments: Mapping[str, Any], *, enforce: bool, **scopes: ScopeSpec
    ) -> None:
        super().__init__(guard, enforce=enforce, **scopes)
        self._call_arguments = arguments
        self.runtime: object = None
        """The agent run's ``Runtime`` (two middlewares of one guard on one agent share it)."""

    def _arguments(self, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**metadata, **self._call_arguments}

    def _raised(self, error: BaseException) -> BaseException:
        if isinstance(error, BudgetExceededError) and not isinstance(error, BudgetExceeded):
            return BudgetExceeded(error)
        return error

    def carried_by(self, request: ModelRequest) -> ModelRequest:
        """``request`` with its model copied to carry this handler (and asked to report a stream's usage,
        when it can and was not told either way: langchain-openai asks only OpenAI's own endpoint)."""
        model = request.model
        fields = getattr(type(model), "model_fields", None) or {}  # (pydantic models: every chat model)
        if "callbacks" not in fields:
            return request
        update: dict[str, Any] = {"callbacks": _with_handlers(model.callbacks, self.handlers())}
        if "stream_usage" in fields and model.stream_usage is None:  # type: ignore[attr-defined]
            update["stream_usage"] = True
        return request.override(model=model.model_copy(update=update))

    sync_twin: BaseCallbackHandler | None = None
    """The handler of the runs a sync callback manager drives, when this one's steps are async."""

    def handlers(self) -> list[BaseCallbackHandler]:
        """The handlers the model call's runs carry: this one, and its sync twin."""
        return [self] if self.sync_twin is None else [self, self.sync_twin]

    async def settle_open(self, error: BaseException) -> None:
        """Settle the runs started under the call and still open as it ends, as failed with ``error``."""
        for attempt in self._take_open():
            await self.operations.fail(attempt, error)


class _AsyncModelCalls(_ModelCalls, AsyncCallbackHandler):
    """The handler of a model call on an event loop (``awrap_model_call``): the same flow, awaiting the
    guard's async operations (``areserve``, ``acommit``, ``afail``), so that a guard over an async-only
    ledger guards an async agent, and a Redis or PostgreSQL guard opens no sync store for it."""

    operations = AsyncOperations()

    def __init__(
        self, guard: Guard | None, arguments: Mapping[str, Any], *, enforce: bool, **scopes: ScopeSpec
    ) -> None:
        super().__init__(guard, arguments, enforce=enforce, **scopes)
        self.loop = asyncio.get_running_loop()
        self.off_loop = _OffLoop()
        self.sync_twin = _SyncDriven(self)

    def _driver(self) -> Operations:
        """The operations that settle a run's event this handler's coroutine received: on the model call's
        loop, the async ones; off it, ``_OffLoop``'s (this loop is not the one the guard's async store
        connected on): an async manager on another loop (a thread's ``asyncio.run``), or a sync manager,
        which runs the coroutine on a loop of its own (``_run_coros``) after its sync handlers, so that the
        sync twin has claimed the run's start by then (``claim``) and this coroutine leaves it. An end is
        settled by whichever handler pops its run first (``_pop``)."""
        return self.operations if _running_loop() is self.loop else self.off_loop

    async def on_chat_model_start(  # type: ignore[override]
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        await self._chat_start(self._driver(), serialized, messages, **kwargs)

    async def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:  # type: ignore[override]
        await self._llm_start(self._driver(), serialized, prompts, **kwargs)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:  # type: ignore[override]
        await self._end(self._driver(), run_id, response, None)

    async def on_llm_error(  # type: ignore[override]
        self, error: BaseException, *, run_id: UUID, response: LLMResult | None = None, **kwargs: Any
    ) -> None:
        await self._end(self._driver(), run_id, response, error)

    async def on_llm_new_token(self, token: str | list[Any], *, chunk: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        self._showed(kwargs["run_id"], token, chunk)

    async def on_stream_event(self, event: Mapping[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        self._showed(kwargs["run_id"], "", None, event)


class _SyncDriven(BaseCallbackHandler):
    """The sync twin of an async model call's handler, for the runs a sync callback manager drives: a model
    the call sends from a thread (``await asyncio.to_thread(model.invoke, ...)``) or invokes synchronously on
    the loop's own thread (``model.invoke``, ``model.stream`` in a later middleware). A sync manager runs an
    async handler's coroutines after its sync handlers, on a loop of their own (in LangChain's executor when
    the thread runs a loop), and logs their exceptions away (``_run_coros``): a refusal would not stop the
    call (it was sent unguarded, reviews found, from a thread and then on the loop's thread), and the guard's
    async store would be used off its loop. This handler settles those runs with ``_OffLoop``'s operations,
    in the handler's flow and state (``_AsyncModelCalls``), raising a refusal as a sync handler does
    (``raise_error``): it claims a run's start before the manager runs the async handler's coroutine, which
    then leaves it (``claim``). Its steps run in the calling thread and never wait for a loop (on the
    loop's thread they block it, as the sync call does: a step sent to that loop could not be taken up).
    An async manager, which awaits the async handler itself, it asks to skip it (``ignore_chat_model``,
    ``ignore_llm``: no executor hop per event); were it asked anyway, the run's claim keeps it charged
    once."""

    raise_error = True

    def __init__(self, calls: _AsyncModelCalls) -> None:
        self.calls = calls
        quiet_refusals(_CALLBACKS_LOGGER, f"Error in {type(self).__name__}.")

    @property
    def ignore_chat_model(self) -> bool:
        return _read_by_coroutine()

    ignore_llm = ignore_chat_model

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        calls = self.calls
        now(calls._chat_start(calls.off_loop, serialized, messages, **kwargs))

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        calls = self.calls
        now(calls._llm_start(calls.off_loop, serialized, prompts, **kwargs))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        now(self.calls._end(self.calls.off_loop, run_id, response, None))

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, response: LLMResult | None = None, **kwargs: Any
    ) -> None:
        now(self.calls._end(self.calls.off_loop, run_id, response, error))

    def on_llm_new_token(self, token: str | list[Any], *, chunk: Any = None, **kwargs: Any) -> None:
        self.calls._showed(kwargs["run_id"], token, chunk)

    def on_stream_event(self, event: Mapping[str, Any], **kwargs: Any) -> None:
        self.calls._showed(kwargs["run_id"], "", None, event)


class _OffLoop(Operations):
    """The operations of a run settled off the agent's event loop: by the sync twin in a thread running
    no loop (``asyncio.to_thread``), or by the async handler's coroutine LangChain runs on a loop of its
    own. The guard's async store may be bound to the agent's loop (Redis), and a guard over an async-only
    ledger has no sync one: each step runs in this thread, blocking, on a sync store over the guard's data:
    one that opens nothing where there is one (the guard's sync store, a memory, SQLite or PostgreSQL
    store's own: ``_attempt.shared_sync_store``), else a new sync client of the async store's
    (``sync_twin``: an async-only Redis guard's, closed after the step), else the guard's sync store (a
    Redis guard of a URL opens its sync pool for it). A custom async-only ledger with no twin raises
    ``ConfigurationError``: the call is not sent. Never on the agent's loop: a step sent there and waited
    for from a worker thread deadlocked once that step needed a worker of the loop's default pool, which
    the waiting threads held (a review: 8 runs at once on a Redis guard named by host name).

    Each step never suspends its coroutine (``now`` runs the twin's); a refusal propagates."""

    async def reserve(self, attempt: Attempt) -> None:
        _step(attempt, attempt.reserve)

    async def release(self, attempt: Attempt) -> None:
        _step(attempt, attempt.release)

    async def commit(self, attempt: Attempt, response: Any) -> None:
        _step(attempt, attempt.commit, response)

    async def fail(self, attempt: Attempt, error: BaseException) -> None:
        _step(attempt, attempt.fail, error)


def _step(attempt: Attempt, sync: Callable[..., Any], *args: Any) -> None:
    core = attempt.guard
    store = shared_sync_store(core)
    twin = None
    if store is None and core._url is None and core._async is not None:  # an async-only guard
        twin = store = core._async.sync_twin()
    try:
        sync(*args, store)  # (no store: the guard's sync one)
    finally:
        if twin is not None:
            twin.close()


def _read_by_coroutine() -> bool:
    """Whether the handler's ``ignore_*`` property calling this is read by a coroutine: LangChain's async
    callback managers read it in the coroutine that dispatches the event (``_ahandle_event_for_handler``),
    its sync ones in a plain function (``handle_event``), on whatever thread, the loop's own included
    (a thread, then, tells them apart no more)."""
    reader = sys._getframe(2)  # (0: here, 1: the property, 2: its reader)
    return bool(reader.f_code.co_flags & inspect.CO_COROUTINE)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _with_handlers(callbacks: Callbacks, handlers: list[BaseCallbackHandler]) -> Callbacks:
    """The model's callbacks with ``handlers`` first: dispatched before the model's own handlers, the
    middleware's flow claims each run before a handler of its guard the model carries (``claim``), in a
    thread without the context too."""
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.handlers = [*handlers, *manager.handlers]
        return manager
    return [*handlers, *(callbacks or [])]


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

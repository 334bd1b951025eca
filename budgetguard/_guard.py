"""The guard: budgets in front of LLM calls, through decorators, jobs and attempts.

``Guard`` is what users build and decorate with. It holds its configuration and stores (``GuardCore``,
``_core``) and hands each call to the I/O-free call flow (``_flow``), planned from the call's arguments
(``_binding``) and run by a driver (``_drivers``) once the settlements queued by dropped streams are
done (``_deferred``). Jobs (``reserve``) are in ``_job``, framework-driven calls (``attempt``) in
``_attempt``, the module-level default guard in ``_default``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from ._attempt import Attempt
from ._binding import bind
from ._budgets import Scope, Unit
from ._core import GuardCore
from ._deferred import adrain, arun, drain, run
from ._errors import ConfigurationError
from ._estimate import Estimate
from ._flow import Plan, call_flow
from ._job import Job
from ._money import Money, to_nano
from ._options import Options, budget_options, decorating, metered_options
from ._scopes import ScopeSpec, resolve_scopes
from ._streams import GuardedAsyncStream, GuardedStream, GuardedStreamManager
from ._usage import Usage

__all__ = ["Attempt", "Guard", "GuardedAsyncStream", "GuardedStream", "GuardedStreamManager", "ScopeSpec"]

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C")


class Guard(GuardCore):
    """Budgets, a ledger and the policies that decorate calls.

    >>> guard = Guard(ledger="memory://", budgets=[Budget("user", usd="5", per="day")])
    """

    def settle_dropped(self) -> None:
        """Settle every stream dropped unsettled (their finalizers only queued them): what ``close()``
        and a job's end do first."""
        drain(self)

    async def asettle_dropped(self) -> None:
        await adrain(self)

    def close(self) -> None:
        """Settle the streams dropped unsettled, then close the sync store (``aclose`` closes the async
        one too)."""
        self.settle_dropped()
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        await self.asettle_dropped()
        if self._async is not None:
            await self._async.aclose()
        self.close()

    def reserve(
        self,
        *,
        usd: Money | None = None,
        tokens: int | None = None,
        requests: int | None = None,
        name: str | None = None,
        lease: float | None = None,
        **scopes: str,
    ) -> Job:
        """Hold an amount for a whole job; guarded calls inside draw on it instead of reserving each.

        ``with guard.reserve(usd="2.00", feature="ingest") as job:`` (or ``async with``, or
        ``@guard.reserve(...)`` on the job's function) reserves once on the job's scopes (``global``,
        the given ones, and those of ``budget_context``), refuses a call inside that would not fit in
        what is left, and on leaving commits what the calls cost and releases the rest. Pass an amount
        for each unit the scopes' budgets count (usd, tokens, requests). ``lease`` bounds how long a
        crashed job's hold survives: an hour by default, at most the shortest rolling window of the
        budgets. See ``budgetguard._job`` for the details."""
        amounts: dict[Unit, int] = {}
        if usd is not None:
            amounts[Unit.USD] = to_nano(usd, what="usd")
        for unit, value in ((Unit.TOKENS, tokens), (Unit.REQUESTS, requests)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigurationError(f"{unit.value} must be a non-negative int, got {value!r}")
                amounts[unit] = value
        for kind, ident in scopes.items():
            if not isinstance(ident, str):
                raise ConfigurationError(f"reserve() takes literal scope ids, e.g. {kind}='ingest'")
            Scope("global") if kind == "global" else Scope(kind, ident)
        label = name or scopes.get("feature") or "job"
        lease = self.lease_for(lease, 3600.0, "guard.reserve(lease=...)")
        return Job(self, amounts=amounts, scopes=scopes, name=label, lease=lease)

    def attempt(
        self,
        request: Mapping[str, Any] | Estimate,
        *,
        provider: str | None = None,
        usage: Callable[[Any], Usage] = Usage.from_response,
        enforce: bool = True,
        scopes: Mapping[str, ScopeSpec] | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> Attempt:
        """One call that a framework sends and reports through callbacks (LangChain's handlers, say).

        ``reserve()`` before it is sent, then ``commit(response)`` or ``fail(error)``: the decorator's flow
        (events, thresholds, ``track()``, journal) without its retries: each retry is a new attempt.
        ``scopes`` are specs as in ``with_budget``, resolved over ``arguments`` and ``budget_context()``.
        """
        est = request if isinstance(request, Estimate) else self.estimator(request, provider=provider)
        resolved = resolve_scopes(
            scopes or {}, (), dict(arguments or {}), arguments or {}, self.default_scopes
        )
        plan = Plan(resolved, (est.model,), lambda model, counted: est, usage, None, enforce)
        return Attempt(self, plan)

    def wrap(self, client: C, /, *, allow: tuple[str, ...] = (), **scopes: ScopeSpec) -> C:
        """A copy of an openai or anthropic SDK client (``OpenAI``, ``AzureOpenAI``, ``Anthropic``,
        ``AnthropicBedrock``, ``AnthropicVertex``, ``AnthropicFoundry`` and their async twins)
        on which every billed request is guarded, whatever method sends it (``with_raw_response``,
        ``with_streaming_response`` and stream helpers too): its HTTP client sends through a
        ``BudgetTransport`` (``budgetguard.integrations.httpx``) over the client's own transport. Each
        HTTP attempt, SDK retries included, is reserved and settled; a refusal raises
        ``BudgetExceededError`` and is not retried; a billed endpoint the guard cannot read is refused
        (``ConfigurationError``) unless ``allow`` names its path prefix (sent unguarded, by choice); a
        WebSocket (``responses.connect()``, ``realtime.connect()``) is refused (``ConfigurationError``).
        ``scopes`` as in ``with_budget`` (literal ids, or callables given the ``httpx.Request``), over
        ``budget_context()``'s; any kind but ``allow``. A client this guard wraps already is returned
        as it is (given scopes, rewrapped with both wraps' scopes): a request is charged once; so is
        one sent inside a guarded call of this guard (a decorated function calling a wrapped client:
        the decorator charges it)."""
        from .integrations.httpx import wrap_client

        return wrap_client(self, client, scopes, allow)

    @decorating(budget_options)
    def with_budget(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Enforce the budgets on every call of the decorated function (sync, async or streaming).

        Scopes: ``user="{user_id}"`` (a template over the call's arguments), ``feature="search"``
        (literal), ``team=lambda *a, **kw: ...`` (a callable of the same arguments), plus whatever
        ``budget_context()`` holds; ``global`` is always included.

        ``estimate=``: a function of the call's arguments giving the request (or an ``Estimate``), when
        the arguments do not hold it; ``usage=``: a function reading the usage from the result;
        ``route=[model, cheaper, ...]`` with ``at=0.8``: route to the next model when a budget reaches
        that share. ``fit=True`` (or a floor, ``fit=256``, or ``Fit(...)``) lowers the request's max
        output tokens to what is left instead of refusing (see ``budgetguard._fit``);
        ``hold=Learned(...)`` holds a learned share of the worst case (see ``budgetguard._calibration``).
        ``None``: the guard's. (The options are typed by ``_options.budget_options``.)
        """
        return self._decorating(fn, budget_options(**options))

    @decorating(metered_options)
    def metered(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Like ``with_budget`` but never refuses: spend is recorded on the counters (``METERING``'s
        when no budget applies) and in the journal. Takes ``estimate=``, ``usage=`` and scopes."""
        return self._decorating(fn, metered_options(**options))

    def _decorating(self, fn: Callable[..., Any] | None, options: Options) -> Any:
        decorate = functools.partial(self._decorate, options=options)
        return decorate if fn is None else decorate(fn)

    def _decorate(self, fn: Callable[..., Any], options: Options) -> Callable[..., Any]:
        binder = bind(self, fn, options)
        plan_call = binder.plan
        if binder.is_async:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                plan, call = plan_call(args, kwargs)
                return await arun(self, call_flow(self, plan), call)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            plan, call = plan_call(args, kwargs)
            return run(self, call_flow(self, plan), call)

        return wrapper

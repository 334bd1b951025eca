"""A job-level hold: reserve once for a whole job, let the guarded calls inside draw on it.

``with guard.reserve(usd="2.00", feature="ingest") as job:`` makes ONE reservation on the store for
the job's scopes (when no budget applies to them: its USD amount, or $0, on ``Guard.METERING``, the
counter with no limit that unbudgeted calls hold on, so that the job is journaled). Guarded calls
inside the block (the same guard, in this context: tasks it starts and ``propagate``-wrapped threads
included) do not reserve on the store: they draw on the job's hold, which is a tiny in-memory ledger
(``Job`` speaks the ledger protocol the guard's drivers use: ``reserve``, ``commit``, ``release``,
``status``). A call whose worst case does not fit in what is left of the hold
is refused with ``BudgetExceededError`` on the scope ``job:<name>``. On leaving the block (normally or
by an exception) the job commits what its calls actually cost to the store and releases the rest.

Draws still unsettled when the job ends (a stream nobody finished) are charged at their hold: the job
cannot wait for them, and charging less could hide spend. The journal gets one line per job, whose data
carries the number of calls, their summed usage and the models used. If the process dies inside the
block, the store reclaims the hold when the job's lease ends (``lease=``, an hour by default); the calls
made until then are lost to the counters, so size the lease to the job.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar, cast

from ._actions import Draw, Flow, Reserve, current_job, open_jobs
from ._budgets import Period, Scope, Unit
from ._context import current_scopes
from ._core import GuardCore
from ._deferred import adrain, arun, drain, run
from ._drivers import no_call
from ._errors import BudgetExceededError, ConfigurationError, LedgerError
from ._estimate import Estimate
from ._events import EventKind
from ._flow import missing_kinds
from ._ledger import CounterSpec, CounterStatus, HeldCounter, Hold, Outcome, Reservation
from ._ledger._meta import model_of, usage_of
from ._ledger._types import Enforce
from ._money import to_usd
from ._scopes import scope_set
from ._settle import LATE, Ctx, resolve
from ._usage import Usage, _get

__all__ = ["Job"]

P = ParamSpec("P")
T = TypeVar("T")


class Job:
    """One job-level reservation and the calls that draw on it (see the module docstring).

    Read-outs while it runs: ``spent`` and ``remaining`` (USD), ``calls``, ``usage``.
    """

    def __init__(
        self,
        guard: GuardCore,
        *,
        amounts: Mapping[Unit, int],
        scopes: Mapping[str, str],
        name: str,
        lease: float,
    ) -> None:
        if not amounts:
            raise ConfigurationError("reserve() needs an amount: usd='2.00', tokens=..., or requests=...")
        self.guard = guard
        self.amounts = dict(amounts)
        self.scopes = dict(scopes)
        self.name = name
        self.lease = lease
        self.scope = Scope("job", name)
        self.labels: tuple[str, ...] = ()
        """The scopes the job's reservation is on (set when it starts)."""
        self.reservation: Reservation | None = None
        self.parent: Job | None = None
        self.lost = False  # the store was down at the start and the guard fails open
        self.metered = False  # no budget applies and no USD amount: journaled as it ends (job_flow)
        self.counters = tuple(
            CounterSpec(self.scope, unit, Period.TOTAL, limit) for unit, limit in amounts.items()
        )
        """The job's own counters, one per unit it holds: what calls inside draw on."""
        self._used = dict.fromkeys(amounts, 0)
        self._pending = dict.fromkeys(amounts, 0)
        self._draws: dict[str, Draw] = {}
        self._lock = threading.Lock()
        self._state = "new"
        self._token: contextvars.Token[Any] | None = None
        self.calls = 0
        self.cost_nano = 0
        """What the job's calls cost, in nano-USD (kept whatever units the job holds)."""
        self.usage = Usage()
        self.models: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Job({self.scope}, held=${to_usd(self.amounts.get(Unit.USD, 0)):f}, spent=${self.spent:f})"

    # -- read-outs ----------------------------------------------------------------------------------

    @property
    def spent(self) -> Decimal:
        """What the job's calls have cost so far, in USD."""
        return to_usd(self.cost_nano)

    @property
    def remaining(self) -> Decimal:
        """USD of the hold not yet spent or held by a running call."""
        if Unit.USD not in self.amounts:
            raise ConfigurationError("this job holds no USD amount")
        return to_usd(max(self.amounts[Unit.USD] - self._used[Unit.USD] - self._pending[Unit.USD], 0))

    def used(self) -> dict[Unit, int]:
        """Per unit: what was spent, plus the holds of draws still unsettled."""
        with self._lock:
            return {unit: self._used[unit] + self._pending[unit] for unit in self.amounts}

    # -- the ledger protocol, for calls inside the job ---------------------------------------------

    def draw_holds(self, counters: Iterable[CounterSpec], est: Estimate, usd: int | None) -> tuple[Hold, ...]:
        """The holds of a call inside the job, on its hold: refused at once when the call's budgets
        (``counters``) include one the job does not hold, since drawing on it would bypass them."""
        held = set(self.labels)
        outside = sorted({str(c.scope) for c in counters} - held)
        if outside:
            raise ConfigurationError(
                f"a call inside the job {self.name!r} has budgets on {', '.join(outside)}, which the "
                "job does not hold: start the job with those scopes (reserve(user=...) or inside "
                "budget_context(...)), or make the call outside the job"
            )
        cost = est.cost_nano if usd is None else usd
        return self.holds({Unit.USD: cost, Unit.TOKENS: est.total_tokens, Unit.REQUESTS: 1})

    def holds(self, amounts: Mapping[Unit, int]) -> tuple[Hold, ...]:
        """A call's holds, on the job's own counters (one per unit the job holds)."""
        return tuple(Hold(spec, amounts[spec.unit]) for spec in self.counters)

    def reserve(
        self,
        holds: Iterable[Hold],
        *,
        lease: float,
        meta: Mapping[str, Any] | None = None,
        enforce: Enforce = True,
    ) -> Reservation:
        holds = tuple(holds)
        with self._lock:
            if self._state != "open":
                raise ConfigurationError(f"{self.scope} has ended; start calls inside its `with` block")
            for hold in holds:
                unit, limit = hold.counter.unit, self.amounts[hold.counter.unit]
                used, pending = self._used[unit], self._pending[unit]
                if enforce is True and used + pending + hold.amount > limit:  # (in shadow: no)
                    raise BudgetExceededError(
                        scope=str(self.scope), unit=unit.value, period="total",
                        limit=_out(unit, limit), spent=_out(unit, used), held=_out(unit, pending),
                        requested=_out(unit, hold.amount), resets_at=None,
                    )  # fmt: skip
            for hold in holds:
                self._pending[hold.counter.unit] += hold.amount
            held = tuple(HeldCounter(h.counter, 0, None, h.amount, h.counter.limit) for h in holds)
            model = model_of(meta or {})  # (the compact form: _ledger._meta)
            draw = Draw(f"{self.name}.{os.urandom(6).hex()}", held, 0, 0, job=self, model=model)
            self._draws[draw.id] = draw
        return draw

    def commit(
        self, reservation: Reservation, actual: Mapping[Unit, int], *, meta: Mapping[str, Any] | None = None
    ) -> Outcome:
        usage = Usage(**usage_of(meta or {}))
        with self._lock:
            draw = self._settle(reservation)
            if draw is None:
                return Outcome(reservation.id, "committed", duplicate=True)
            for unit in self.amounts:
                self._used[unit] += actual[unit]
            self._count(draw.model, usage, actual.get(Unit.USD, 0))
        overrun = any(actual[h.counter.unit] > h.amount for h in reservation.held)
        return Outcome(reservation.id, "committed", charged=dict(actual), overrun=overrun)

    def release(self, reservation: Reservation, *, meta: Mapping[str, Any] | None = None) -> Outcome:
        with self._lock:
            self._settle(reservation)
        return Outcome(reservation.id, "released")

    def status(self, counters: Iterable[CounterSpec]) -> list[CounterStatus]:
        with self._lock:
            return [
                CounterStatus(c, 0, None, c.limit, self._used[c.unit], self._pending[c.unit], False)
                for c in counters
            ]

    def _settle(self, reservation: Reservation) -> Draw | None:
        draw = self._draws.pop(reservation.id, None)
        if draw is not None:
            for held in draw.held:
                self._pending[held.counter.unit] -= held.amount
        return draw

    def _count(self, model: Any, usage: Usage, cost_nano: int) -> None:
        self.calls += 1
        self.cost_nano += cost_nano
        self.usage = self.usage + usage
        if isinstance(model, str):
            self.models[model] = self.models.get(model, 0) + 1

    # -- spend made outside guarded calls (Batch API results) ---------------------------------------

    def charge(
        self, response: Any, *, model: str | None = None, batch: bool = False, provider: str | None = None
    ) -> Decimal:
        """Charge a call made outside the guard to this job, e.g. each line of a Batch API result
        (``batch=True`` prices it at the batch variant). ``response`` is anything ``Usage.from_response``
        reads (an SDK object, a dict, a ``Usage``); ``model`` defaults to the response's own.
        ``provider`` is where the call went (``"azure"``: at its deployment's type), as for ``cost``.
        Returns the cost in USD. Money already spent is never refused: it may take the job past its hold,
        which the job's commit then flags as an overrun."""
        from ._providers import response_variant, served_tier

        response = _unwrap_batch_line(response)
        name = model or _model_of(response)
        if not name:
            raise ConfigurationError("charge() needs model=... when the response names none")
        usage = Usage.from_response(response)
        variant = response_variant(served_tier(response), {"processing": "batch"} if batch else None)
        cost = self.guard.prices.cost_nano(name, usage, provider=provider, variant=variant)
        amounts = {Unit.USD: cost, Unit.TOKENS: usage.total_tokens, Unit.REQUESTS: 1}
        with self._lock:
            if self._state != "open":
                raise ConfigurationError(f"{self.scope} has ended; charge() inside its `with` block")
            for unit in self.amounts:
                self._used[unit] += amounts[unit]
            self._count(name, usage, cost)
        return to_usd(cost)

    # -- entering and leaving -------------------------------------------------------------------

    def _begin(self) -> None:
        if self._state != "new":
            raise ConfigurationError("a job runs once; call guard.reserve(...) again for another job")
        parent = current_job(self.guard)  # (an open job is a Job)
        self.parent = parent if isinstance(parent, Job) else None

    def _started(self) -> None:
        self._state = "open"
        self._token = open_jobs.set(self)

    def _finish(self) -> None:
        with self._lock:
            self._state = "closed"
            self._draws.clear()  # late settlements of these are no-ops: they are charged at their hold
        if self._token is not None:
            open_jobs.reset(self._token)
            self._token = None

    def __enter__(self) -> Job:
        self._begin()
        run(self.guard, job_flow(self.guard, self, True), no_call)
        self._started()
        return self

    def __exit__(self, *exc: object) -> None:
        drain(self.guard)  # streams dropped inside the job: settled on it, at what they cost
        unsettled = len(self._draws)
        self._finish()
        run(self.guard, job_flow(self.guard, self, False, unsettled), no_call)

    async def __aenter__(self) -> Job:
        self._begin()
        await arun(self.guard, job_flow(self.guard, self, True), no_call)
        self._started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await adrain(self.guard)
        unsettled = len(self._draws)
        self._finish()
        await arun(self.guard, job_flow(self.guard, self, False, unsettled), no_call)

    def fresh(self) -> Job:
        """A new, unopened job with the same settings (each call of a decorated function gets one)."""
        return Job(self.guard, amounts=self.amounts, scopes=self.scopes, name=self.name, lease=self.lease)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """``@guard.reserve(usd="2", feature="ingest")``: every call of ``fn`` is one job."""
        if inspect.iscoroutinefunction(inspect.unwrap(fn)):
            afn: Callable[..., Any] = fn

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self.fresh():
                    return await afn(*args, **kwargs)

            return cast(Callable[P, T], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            with self.fresh():
                return fn(*args, **kwargs)

        return wrapper


def _out(unit: Unit, amount: int) -> Any:
    return to_usd(amount) if unit is Unit.USD else amount


def _unwrap_batch_line(line: Any) -> Any:
    """A Batch API result line -> the response inside it. OpenAI: ``{"response": {"body": {...}}}``;
    Anthropic: ``result.message`` (a ``MessageBatchIndividualResponse`` or its dict)."""
    body = _get(line, "response")
    if isinstance(body, Mapping) and isinstance(body.get("body"), Mapping):
        return body["body"]
    result = _get(line, "result")
    if result is not None and _get(line, "usage") is None:
        message = _get(result, "message")
        if message is None:
            raise ConfigurationError(f"this batch line did not succeed and has no usage: {result!r}")
        return message
    return line


def _model_of(response: Any) -> str | None:
    value = _get(response, "model")
    return value if isinstance(value, str) else None


def job_flow(core: GuardCore, job: Job, opening: bool, unsettled: int = 0) -> Flow:
    """A job's own reservation as it starts (``opening``), its commit as it ends."""
    if opening:  # the job's scopes: global, the given ones and budget_context's, as it starts
        scopes = scope_set({**core.default_scopes, **current_scopes(), **job.scopes})  # literal ids
        job.labels = scopes.labels
    ctx = _JobCtx(core, job, job.labels)
    ctx.meta = {"job": job.name, "scopes": ctx.labels}  # its reservation's journal data
    if opening:
        parent = job.parent
        mode: Enforce = "shadow" if core.mode == "shadow" else True  # (a shadow guard's job: see _flow)
        unnamed = () if parent is not None else tuple(sorted(core.required_kinds - scopes.kinds))
        if unnamed:  # (a nested job draws on its parent: its scopes were checked)
            tell = lambda kind, why, data: ctx.emit(kind, reason=why, data=data)  # noqa: E731
            ctx.meta["missing_scope"] = missing_kinds(unnamed, mode, tell)  # refused, or recorded
        counters = parent.counters if parent is not None else core.counters_for(scopes.scopes)
        missing = sorted({c.unit.value for c in counters if c.unit not in job.amounts})
        if missing:
            where = parent.scope if parent is not None else ", ".join(ctx.labels)
            raise ConfigurationError(
                f"the budgets on {where} count {' and '.join(missing)}: pass "
                f"{'=..., '.join(missing)}=... to reserve() as well"
            )
        holds = tuple(Hold(c, job.amounts[c.unit]) for c in counters)
        if not holds:  # no budget applies: hold its USD on the metering counter, for the journal
            if Unit.USD not in job.amounts:
                job.metered = True  # no USD to hold: what its calls cost is held and committed at its end
                return
            holds = (Hold(core.METERING, job.amounts[Unit.USD]),)
        try:
            job.reservation = yield Reserve(holds, ctx.meta, mode, job.lease, parent)
        except BudgetExceededError as refused:
            ctx.emit("refused", reason=refused.scope)
            raise
        except LedgerError as down:
            ctx.store_down(down)  # fail_closed raises; fail_open runs the job on its own limit
            job.lost = True
            return
        ctx.reservation_id = job.reservation.id
        ctx.emit("reserved")
        if job.reservation.shadowed is not None:
            ctx.shadowed(job.reservation.shadowed, holds)
        return
    used = job.used()
    cost = used.get(Unit.USD, job.cost_nano)
    if job.metered:  # a job with no budget and no USD amount: hold what its calls cost, to commit it
        try:
            job.reservation = yield Reserve((Hold(core.METERING, cost),), ctx.meta, False, job.lease)
        except LedgerError as down:
            job.lost = True
            ctx.store_down(down)  # fail_closed raises; fail_open: reported lost below
    if job.reservation is None:
        if job.lost:
            ctx.emit("spend_lost", actual=cost, reason="fail_open: the store was unavailable")
        return
    ctx.reservation_id = job.reservation.id
    # the metering counter (a job without a USD amount) is charged what its calls cost
    actual = {h.counter.unit: used.get(h.counter.unit, job.cost_nano) for h in job.reservation.held}
    summary: dict[str, Any] = {
        "calls": job.calls,
        "usage": job.usage.to_dict(),
        "models": dict(job.models),
        "cost_nano": job.cost_nano,
    }
    if len(job.models) == 1:  # reports group by model: a one-model job is that model's spend
        summary["model"] = next(iter(job.models))
    if unsettled:
        summary["unsettled_calls"] = unsettled  # charged at their holds
    try:
        charged, outcome = yield from resolve(job.reservation, actual, summary, ctx.meta)
    except LedgerError as down:
        ctx.emit("store_unavailable", reason=str(down))
        ctx.emit("spend_lost", actual=cost, reason=f"could not record: {down}")
        if core.on_store_error == "fail_closed":
            raise
        return
    late = {"late": True} if charged is not job.reservation else None
    ctx.emit("committed", actual=cost, data=late)
    if outcome is not None and (outcome.overrun or late):
        ctx.emit("overrun", actual=cost, reason=LATE if late else None, data=late)
    if outcome is not None:
        ctx._thresholds(charged, actual, outcome.spent)


class _JobCtx(Ctx):
    """Events of a job's own reservation (``Guard.reserve``): no model, the job's hold as the estimate."""

    __slots__ = ("job",)

    def __init__(self, guard: GuardCore, job: Job, labels: tuple[str, ...]) -> None:
        self.job = job
        self.guard, self.labels, self.attempt = guard, labels, 1
        self.reservation_id = None
        self.meta = {}
        self.lost = False
        self.trackers = ()

    @property
    def model(self) -> str | None:
        return None

    @property
    def estimated(self) -> Decimal | None:
        return to_usd(self.job.amounts[Unit.USD]) if Unit.USD in self.job.amounts else None

    def emit(
        self, kind: EventKind, *, actual: int | None = None, reason: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """The job's own events say so (``data["job"]``): its calls already reported their spend."""
        super().emit(kind, actual=actual, reason=reason, data={**(data or {}), "job": self.job.name})

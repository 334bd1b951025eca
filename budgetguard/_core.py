"""What a guard is made of: its budgets, policies, hooks and stores, and the holds its budgets put on a call.

``GuardCore`` is the state the call flow (``_flow``), the job flow (``_job``), the drivers (``_drivers``)
and the settlements (``_settle``, ``_deferred``) read; ``Guard`` (``_guard``) adds the decorators and
the other public entry points on top of it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from ._actions import OpenJob
from ._budgets import Budget, Period, Scope, Unit, rolling_span
from ._cache import Bounded
from ._calibration import Calibration, Learned
from ._errors import ConfigurationError
from ._estimate import Estimate, Estimator
from ._events import Event, use_logging
from ._fit import Fit, fit_option
from ._ledger import AsyncLedger, CounterSpec, Hold, Ledger, open_async_ledger, open_ledger
from ._ledger._types import CheckedAmounts, check_lease
from ._money import INT64_MAX
from ._pricing import PriceBook, price_book
from ._providers import Variant
from ._retry import charge_if_maybe_billed, checked, retry_policy

if TYPE_CHECKING:  # (tenacity is imported at the first guarded call: see retry)
    import tenacity
    from tenacity import RetryCallState
from ._fallbacks import unnamed_hops_priced
from ._scopes import Scopes, default_ids
from ._usage import DECLINED_HOP, Usage

__all__ = ["GuardCore", "checked_hold", "default_url"]


def default_url() -> str:
    """``BUDGETGUARD_URL``, else the embedded SQLite store in the user's data directory."""
    url = os.environ.get("BUDGETGUARD_URL")
    if url:
        return url
    from pathlib import Path  # (here: pathlib and what it imports cost ~4 ms of the import)

    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'budgetguard' / 'ledger.db'}"


def checked_hold(hold: Learned | None) -> Learned | None:
    if hold is not None and not isinstance(hold, Learned):
        raise ConfigurationError(f"hold= takes a Learned(...) policy or None (the worst case), got {hold!r}")
    return hold


class GuardCore:
    """Budgets, a ledger and the policies a guard applies (see ``Guard`` for the entry points)."""

    def __init__(
        self,
        ledger: str | Ledger | AsyncLedger | None = None,
        *,
        budgets: Iterable[Budget] = (),
        prices: PriceBook | None = None,
        estimator: Estimator | None = None,
        retry: tenacity.BaseRetrying | Callable[[RetryCallState], bool] | None = None,
        stop: Callable[[RetryCallState], bool] | None = None,
        wait: Callable[[RetryCallState], float] | None = None,
        lease: float | None = None,
        on_event: Callable[[Event], None] | Iterable[Callable[[Event], None]] | None = None,
        on_store_error: Literal["fail_closed", "fail_open"] = "fail_closed",
        charge_failed: Callable[[BaseException], bool] = charge_if_maybe_billed,
        thresholds: Iterable[Decimal | str] = ("0.5", "0.8", "1"),
        missing_scope: Literal["refuse", "skip"] = "refuse",
        default_scopes: Mapping[str, str] | None = None,
        fit: bool | int | Fit = False,
        hold: Learned | None = None,
        mode: Literal["enforce", "shadow"] = "enforce",
        default_service_tier: Literal["default", "priority"] | None = None,
    ) -> None:
        """``retry``: a ``tenacity.Retrying`` (or ``AsyncRetrying``), or a ``retry_*`` strategy that, with
        ``stop`` and ``wait``, replaces the default policy's (see ``budgetguard._retry``). ``fit`` and
        ``hold``: the defaults of ``with_budget``'s (see there). ``mode="shadow"``: never refuse; a call
        that a budget would have refused goes on, and the refusal it would have been is journaled
        (``shadow_refused``, counted by ``budgetguard report``) and sent as a ``shadow_refused`` event
        (a ``Budget(..., mode="shadow")`` does so for one budget). ``default_service_tier="priority"``:
        your OpenAI project's default tier is Priority, so a request naming no ``service_tier`` (or
        ``"auto"``) reserves at priority prices (the guard's ``Estimator``'s, see there)."""
        if mode not in ("enforce", "shadow"):
            raise ConfigurationError(f"mode must be 'enforce' or 'shadow', got {mode!r}")
        self.mode = mode
        if on_store_error not in ("fail_closed", "fail_open"):
            raise ConfigurationError("on_store_error must be 'fail_closed' or 'fail_open'")
        self.budgets = tuple(budgets)
        for budget in self.budgets:
            if not isinstance(budget, Budget):
                raise ConfigurationError(f"budgets must be Budget objects, got {budget!r}")
        if missing_scope not in ("refuse", "skip"):
            raise ConfigurationError("missing_scope must be 'refuse' or 'skip'")
        self.missing_scope = missing_scope
        self.default_scopes: Mapping[str, str] = default_ids(default_scopes or {})
        """Ids for the calls that name none of a kind (under ``budget_context`` and the decorator's)."""
        per_kind = {b.target for b in self.budgets if ":" not in b.target and b.target != "global"}
        self.required_kinds = frozenset(
            per_kind - self.default_scopes.keys() if missing_scope == "refuse" else ()
        )
        """The scope kinds a guarded call must name an id for: a budget applies to each of them, there
        is no default id, and ``missing_scope="refuse"``; a call without one raises ``MissingScopeError``."""
        self.prices = prices or price_book
        if estimator is not None and default_service_tier is not None:
            raise ConfigurationError(
                "pass default_service_tier to your Estimator(default_service_tier=...), not to the Guard"
            )
        self.estimator = estimator or Estimator(prices=self.prices, default_service_tier=default_service_tier)
        self._retry: tenacity.BaseRetrying | None = None  # the default policy: made at its first use
        if retry is not None or stop is not None or wait is not None:
            self.retry = retry_policy(retry, stop, wait)
        spans = [rolling_span(b.period) for b in self.budgets if b.rolling]
        self.longest_lease: int | None = min(spans, default=None)
        """The longest lease a hold may have, in ms: the shortest rolling window among the budgets (a
        hold is counted in a rolling window only that long: ``_ledger._types.check_rolling_lease``)."""
        self.lease = self.lease_for(lease, 120.0, "Guard(lease=...)")
        """Seconds a call's hold lives: 2 minutes by default, at most the shortest rolling window."""
        use_logging()  # (the events' logger: made by the first guard, not at import)
        hooks = on_event if on_event is None or callable(on_event) else tuple(on_event)
        self.hooks: tuple[Callable[[Event], None], ...] = (
            () if hooks is None else (hooks,) if callable(hooks) else tuple(hooks)
        )
        self.on_store_error = on_store_error
        self.charge_failed = charge_failed
        self.thresholds = tuple(Decimal(t).as_integer_ratio() for t in thresholds)
        if any(not 0 < num <= den * 10 for num, den in self.thresholds):
            raise ConfigurationError("thresholds are fractions of a budget, e.g. '0.8'")
        self._url = ledger if isinstance(ledger, str) else None if ledger is not None else default_url()
        self._sync: Ledger | None = ledger if isinstance(ledger, Ledger) else None
        self._async: AsyncLedger | None = ledger if isinstance(ledger, AsyncLedger) else None
        self._open_lock = threading.Lock()
        self._counters: Bounded[tuple[Scope, ...], tuple[CounterSpec, ...]] = Bounded(
            "guard.counters", 10_000, shared=False
        )
        self._hold_sets: Bounded[tuple[tuple[tuple[str, str], ...], int, int], tuple[Hold, ...]] = Bounded(
            "guard.hold_sets", 10_000, shared=False
        )
        self._queued: deque[Any] = deque()
        """Settlements of streams dropped unsettled, queued by their finalizers (see ``_deferred``)."""
        self.fit = fit_option(fit)
        self.hold = checked_hold(hold)
        self.calibration = Calibration()
        """The learned ratios of ``hold=Learned(...)`` calls, read from the journal (see ``_calibration``)."""
        self._told: set[tuple[str, str]] = set()
        """The warnings this guard gives once per model, given: (event kind, model)."""
        self._told_lock = threading.Lock()

    def first_time(self, kind: str, model: str) -> bool:
        """Whether this guard says ``kind`` about ``model`` now: the first time it asks (any thread)."""
        with self._told_lock:
            if (kind, model) in self._told:
                return False
            self._told.add((kind, model))
            return True

    def lease_for(self, lease: float | None, default: float, where: str) -> float:
        """The lease of a call (``where``: ``Guard(lease=...)``) or job (``guard.reserve(lease=...)``):
        ``default`` seconds when ``lease`` is None, cut to the shortest rolling window of the budgets;
        a given lease longer than that window is refused here, before any call."""
        longest = self.longest_lease
        if lease is None:
            return default if longest is None else min(default, longest / 1000)
        if longest is not None and check_lease(lease) > longest:
            raise ConfigurationError(
                f"{where} is {lease!r} s, longer than the shortest rolling window of the budgets "
                f"({longest / 1000:g} s): a hold is counted in a rolling window only that long after its "
                f"reservation, so a longer one could admit spend past the limit. Pass lease= at most "
                f"{longest / 1000:g} s (or leave it out to get that), or use a calendar window"
            )
        return lease

    @property
    def retry(self) -> tenacity.BaseRetrying:
        """The retry policy (a ``tenacity.Retrying`` or ``AsyncRetrying``): each call runs on a copy of it,
        as tenacity does; setting another one is checked as the guard's ``retry=`` is."""
        if self._retry is None:
            self._retry = retry_policy()
        return self._retry

    @retry.setter
    def retry(self, retrying: tenacity.BaseRetrying) -> None:
        self._retry = checked(retrying)

    # -- stores ---------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        """The sync store (opened on first use, once, even when threads race to it)."""
        if self._sync is None:
            with self._open_lock:
                if self._sync is None:
                    if self._url is None:
                        raise ConfigurationError(
                            "this guard has only an async ledger; decorate async functions"
                        )
                    self._sync = open_ledger(self._url)
        return self._sync

    @property
    def async_ledger(self) -> AsyncLedger | Ledger:
        """The async store; local stores (memory, SQLite) are shared with the sync side."""
        if self._async is not None:
            return self._async
        if self._url is None or self._url.startswith(("memory:", "sqlite:")):
            return self.ledger  # the async driver runs local stores in a thread
        with self._open_lock:
            if self._async is None:
                self._async = open_async_ledger(self._url)
        return self._async

    METERING = CounterSpec(Scope("global"), Unit.USD, Period.TOTAL, INT64_MAX)
    """What a call or job holds its USD on when no budget applies to its scopes: a counter with no limit,
    so that it too is reserved, committed and journaled. It is the counter of a
    ``Budget("global", usd=..., per="total")``: adding one later counts the spend metered so far."""

    def counters_for(self, scopes: Iterable[Scope]) -> list[CounterSpec]:
        """The counters the budgets put on these scopes (an exact-scope budget replaces its kind's)."""
        key = tuple(scopes)
        found = self._counters.get(key)
        if found is None:
            found = self._counters.put(key, self._counters_for(key))
        return list(found)

    def _counters_for(self, scopes: Iterable[Scope]) -> tuple[CounterSpec, ...]:
        specs: list[CounterSpec] = []
        for scope in scopes:
            chosen: dict[tuple[Unit, str, str], Budget] = {}
            for budget in self.budgets:
                if budget.applies_to(scope):
                    key = (budget.unit, budget.period.value, budget.tz)
                    exact = ":" in budget.target or budget.target == "global"
                    if key not in chosen or exact:
                        chosen[key] = budget
            specs += [CounterSpec(scope, b.unit, b.period, b.limit, b.tz, b.mode == "shadow")
                      for b in chosen.values()]  # fmt: skip
        return tuple(specs)

    def holds(
        self, scopes: Scopes, est: Estimate, job: OpenJob | None, usd: int | None = None
    ) -> tuple[Hold, ...]:
        """The holds of a call: on its budgets' counters (on ``METERING`` when it has none), or on
        ``job``'s hold inside ``guard.reserve()``. ``usd``: the USD held, if not the worst case."""
        if job is not None:
            return job.draw_holds(self.counters_for(scopes.scopes), est, usd)
        tokens = est.total_tokens
        cost = est.cost_nano if usd is None else usd
        key = (scopes.key, cost, tokens)  # calls repeat: reuse the validated holds
        found = self._hold_sets.get(key)
        if found is None:
            amounts = {Unit.USD: cost, Unit.TOKENS: tokens, Unit.REQUESTS: 1}
            found = tuple(Hold(spec, amounts[spec.unit]) for spec in self.counters_for(scopes.scopes))
            if not found:  # no budget applies: hold on the metering counter, so the journal has the call
                found = (Hold(self.METERING, cost),)
            self._hold_sets.put(key, found)
        return found

    def actual(
        self, model: str, usage: Usage, est: Estimate, variant: Variant | None = None
    ) -> dict[Unit, int]:
        # served at another tier than asked, or by another model (served_flags): its own price; the
        # passes on other models (advisors) at the call's provider
        prices, provider = self.prices, est.provider
        if model == est.model and variant == est.variant:
            price = est.price
        else:  # (the fees the request's tools set stand, whoever answers)
            price = prices.get(model, provider=provider, variant=variant).with_request(est.price, est.fees)
        if usage.passes and any(hop.kind == DECLINED_HOP and hop.model is None for hop in usage.passes):
            usage = unnamed_hops_priced(
                usage, est, est.fallbacks,
                lambda hop: prices.cost_nano(price, hop, provider=provider, variant=variant),
                lambda name: prices.pass_price(name, provider=provider, variant=variant),
            )  # fmt: skip
        cost = prices.cost_nano(price, usage, provider=provider, variant=variant)
        # (settle checks the int64 bound before the store sees them)
        return CheckedAmounts({Unit.USD: cost, Unit.TOKENS: usage.total_tokens, Unit.REQUESTS: 1})

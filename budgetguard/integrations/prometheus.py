"""Prometheus: counters and gauges of spend, holds, budgets left and refusals (extra ``prometheus``).

``Guard(on_event=PrometheusHook())`` keeps, from the guard's events (``budgetguard_`` prefix):

| metric | type | labels |
|---|---|---|
| ``spent_usd_total`` | counter | ``scope_kind``, ``scope_id``, ``model`` |
| ``held_usd`` (holds of this process's calls in flight) | gauge | ``scope_kind``, ``scope_id``, ``model`` |
| ``remaining`` (after the last commit) | gauge | ``scope_kind``, ``scope_id``, ``unit``, ``period`` |
| ``burn_per_hour``, ``runs_out_timestamp_seconds`` (the forecast, see below) | gauge | as ``remaining`` |
| ``refusals_total``, ``overruns_total`` | counter | ``scope_kind``, ``scope_id``, ``model`` |
| ``routes_total`` | counter | ``from_model``, ``to_model`` |
| ``tokens_total`` | counter | ``model``, ``type`` (``input`` / ``output``) |
| ``thresholds_total`` | counter | ``scope_kind``, ``scope_id``, ``threshold`` |

Label cardinality stays bounded: ``scope_id`` is empty unless the scope's kind is in ``id_kinds``
(allow only kinds with few, non-personal ids: ``feature``, ``team``); ``remaining`` is kept only for
scopes whose id is shown (one gauge for every user at once would mean nothing) and with a limit (not
the guard's ``METERING`` counter, which calls without a budget hold on). Values are floats,
as Prometheus's are; the ledger keeps the exact amounts. The forecast (``budgetguard status``'s): the
window's spend so far over the time it has run, and when the budget stops serving (Unix seconds:
when what is left runs out at that rate, or the window's reset when it lasts), kept beside
``remaining`` (not for ``total`` budgets).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from decimal import Decimal

from .._events import Event
from .._forecast import counter_forecast
from .._money import INT64_MAX
from . import missing_extra
from ._labels import checked_kinds, scope_parts

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("prometheus", exc) from exc

__all__ = ["PrometheusHook"]

_SCOPED = ("scope_kind", "scope_id", "model")


class PrometheusHook:
    """An ``on_event`` hook that keeps Prometheus metrics in ``registry`` (default: the global one)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        id_kinds: Iterable[str] = (),
        namespace: str = "budgetguard",
    ) -> None:
        registry = registry if registry is not None else REGISTRY
        self.id_kinds = checked_kinds(id_kinds)

        def counter(name: str, doc: str, labels: tuple[str, ...] = _SCOPED) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = _SCOPED) -> Gauge:
            return Gauge(name, doc, labels, namespace=namespace, registry=registry)

        self.spent = counter("spent_usd", "USD charged to budgets")
        self.held = gauge("held_usd", "USD held by this process's calls in flight")
        self.remaining = gauge(
            "remaining",
            "Left in the budget's window after the last commit, in its unit",
            ("scope_kind", "scope_id", "unit", "period"),
        )
        window = ("scope_kind", "scope_id", "unit", "period")
        self.burn = gauge(
            "burn_per_hour", "The window's spend so far per hour it has run, in its unit", window
        )
        self.runs_out = gauge(
            "runs_out_timestamp_seconds",
            "When at that rate the budget runs out (its reset if it lasts)",
            window,
        )
        self.refusals = counter("refusals", "Calls refused by a budget")
        self.shadow_refusals = counter(
            "shadow_refusals", "Calls a budget in shadow would have refused (they went on)"
        )
        self.overruns = counter("overruns", "Calls that cost more than was reserved")
        self.fits = counter("fits", "Calls whose max output tokens were lowered to fit what was left")
        self.routes = counter("routes", "Calls routed to another model", ("from_model", "to_model"))
        self.tokens = counter("tokens", "Tokens charged", ("model", "type"))
        self.thresholds = counter(
            "thresholds", "Budget thresholds crossed", ("scope_kind", "scope_id", "threshold")
        )
        self._holds: dict[str, list[tuple[tuple[str, str, str], float]]] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        model = event.model or "unknown"
        labels = [(*scope_parts(scope, self.id_kinds), model) for scope in event.scopes]
        if event.kind == "reserved" and event.reservation_id and event.estimated is not None:
            held = _float(event.estimated)
            with self._lock:
                self._holds[event.reservation_id] = [(label, held) for label in labels]
            for label in labels:
                self.held.labels(*label).inc(held)
        elif event.kind in ("committed", "released", "spend_lost") and event.reservation_id:
            with self._lock:
                holds = self._holds.pop(event.reservation_id, ())
            for label, held in holds:
                self.held.labels(*label).dec(held)
        if event.kind == "committed":
            self._committed(event, labels, model)
        elif event.kind == "refused" and event.reason:
            self.refusals.labels(*scope_parts(event.reason, self.id_kinds), model).inc()
        elif event.kind == "shadow_refused" and "scope" in event.data:
            self.shadow_refusals.labels(*scope_parts(event.data["scope"], self.id_kinds), model).inc()
        elif event.kind == "overrun":
            for label in labels:
                self.overruns.labels(*label).inc()
        elif event.kind == "fitted":
            for label in labels:
                self.fits.labels(*label).inc()
        elif event.kind == "routed":
            self.routes.labels(model, str(event.data.get("to"))).inc()
        elif event.kind == "threshold" and "scope" in event.data:
            kind, ident = scope_parts(event.data["scope"], self.id_kinds)
            self.thresholds.labels(kind, ident, event.data["threshold"]).inc()

    def _committed(self, event: Event, labels: list[tuple[str, str, str]], model: str) -> None:
        job_total = "job" in event.data  # a job's commit sums calls that were counted one by one
        if event.actual is not None and not job_total:
            for label in labels:
                self.spent.labels(*label).inc(_float(event.actual))
        usage = event.data.get("usage")
        if usage is not None and not job_total:
            self.tokens.labels(model, "input").inc(usage.total_input_tokens)
            self.tokens.labels(model, "output").inc(usage.output_tokens)
        for counter in event.data.get("counters", ()):
            kind, ident = scope_parts(counter["scope"], self.id_kinds)
            if (ident or kind == "global") and counter["limit"] < INT64_MAX:  # no limit: nothing left
                scale = 1_000_000_000 if counter["unit"] == "usd" else 1
                budget = (kind, ident, counter["unit"], counter["period"])
                self.remaining.labels(*budget).set(max(counter["limit"] - counter["spent"], 0) / scale)
                outlook = counter_forecast(counter)
                if outlook is not None:
                    self.burn.labels(*budget).set(outlook.per_hour / scale)
                    self.runs_out.labels(*budget).set(outlook.until.timestamp())


def _float(amount: Decimal) -> float:
    return float(amount)

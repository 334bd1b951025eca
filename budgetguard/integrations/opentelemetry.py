"""OpenTelemetry: GenAI metrics, cost and budget gauges, and span attributes (extra ``otel``).

``Guard(on_event=OpenTelemetryHook())`` records, from the guard's events:

* ``gen_ai.client.token.usage`` (histogram, ``{token}``, ``gen_ai.token.type`` = ``input`` / ``output``)
  and ``gen_ai.client.operation.duration`` (histogram, ``s``, ``error.type`` on failures), with
  ``gen_ai.operation.name``, ``gen_ai.provider.name`` (and the older ``gen_ai.system``) and
  ``gen_ai.request.model``, as the GenAI semantic conventions define them;
* ``budgetguard.cost`` (counter, ``USD``), ``budgetguard.refusals`` (counter) and
  ``budgetguard.budget.remaining`` (gauge, in the budget's unit: ``USD``, ``{token}``, ``{request}``)
  by ``budgetguard.scope.kind`` (and ``budgetguard.scope.id`` for the kinds in ``id_kinds`` only), for
  budgets (not the guard's ``METERING`` counter, which has no limit), with the forecast beside it:
  ``budgetguard.budget.burn_per_hour.<unit>`` (the window's spend per hour it has run) and
  ``budgetguard.budget.runs_out`` (``s``: Unix time when at that rate it runs out, or the window's
  reset when it lasts; not for ``total`` budgets);
* on the current span (the one around the guarded call): ``budgetguard.*`` attributes (estimate,
  cost, reservation, scopes) and ``gen_ai.usage.*`` tokens, plus a span event per guard event.

Metric values are floats, as OpenTelemetry's are; the ledger keeps the exact amounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._events import Event
from .._forecast import counter_forecast
from .._money import INT64_MAX
from . import missing_extra
from ._labels import checked_kinds, scope_parts

try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("otel", exc) from exc

__all__ = ["OpenTelemetryHook", "provider_name"]

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_UNITS = {"usd": "USD", "tokens": "{token}", "requests": "{request}"}

_PROVIDERS = (
    ("claude", "anthropic"),
    ("gpt-", "openai"),
    ("chatgpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding", "openai"),
    ("gemini", "gcp.gen_ai"),
    ("mistral", "mistral_ai"),
    ("codestral", "mistral_ai"),
    ("command", "cohere"),
    ("deepseek", "deepseek"),
    ("grok", "x_ai"),
)


def provider_name(model: str) -> str:
    """``gen_ai.provider.name`` of a model, from its name (a well-known value, else ``"unknown"``)."""
    bare = model.rsplit("/", 1)[-1].lower()
    return next((name for prefix, name in _PROVIDERS if bare.startswith(prefix)), "unknown")


class OpenTelemetryHook:
    """An ``on_event`` hook that records GenAI metrics and span attributes through OpenTelemetry."""

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        id_kinds: Iterable[str] = (),
        provider: str | None = None,
    ) -> None:
        """``provider`` fixes ``gen_ai.provider.name`` (e.g. ``"azure.ai.openai"``); by default it is
        guessed from the model name. ``id_kinds``: scope kinds whose ids may become metric attributes."""
        meter = metrics.get_meter("budgetguard", meter_provider=meter_provider)
        self.id_kinds = checked_kinds(id_kinds)
        self.provider = provider
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            "budgetguard.cost", unit="USD", description="Cost charged to budgets."
        )
        self.refusals = meter.create_counter(
            "budgetguard.refusals", unit="{call}", description="Calls refused by a budget."
        )
        self.remaining = {
            unit: meter.create_gauge(
                f"budgetguard.budget.remaining.{unit}",
                unit=symbol,
                description="Left in the budget's window.",
            )
            for unit, symbol in _UNITS.items()
        }
        self.burn = {
            unit: meter.create_gauge(
                f"budgetguard.budget.burn_per_hour.{unit}",
                unit=f"{symbol}/h",
                description="The window's spend per hour it has run.",
            )
            for unit, symbol in _UNITS.items()
        }
        self.runs_out = meter.create_gauge(
            "budgetguard.budget.runs_out", unit="s", description="When at its burn rate the budget runs out."
        )

    def __call__(self, event: Event) -> None:
        model = event.model or "unknown"
        genai = self._genai(model)
        data = event.data
        if event.kind in ("committed", "released") and "duration" in data:
            failed = {"error.type": event.reason} if event.reason else {}
            self.duration.record(data["duration"], {**genai, **failed})
        usage = None if "job" in data else data.get("usage")  # a job's total: its calls were counted
        if event.kind == "committed" and usage is not None and not data.get("usage_missing"):
            self.tokens.record(usage.total_input_tokens, {**genai, "gen_ai.token.type": "input"})
            self.tokens.record(usage.output_tokens, {**genai, "gen_ai.token.type": "output"})
        if event.kind == "committed" and event.actual is not None and "job" not in data:
            self.cost.add(float(event.actual), genai)
        if event.kind == "refused" and event.reason:
            self.refusals.add(1, {**genai, **self._scope(event.reason)})
        for counter in data.get("counters", ()):
            if counter["limit"] >= INT64_MAX:  # no limit (``Guard.METERING``): nothing is left of it
                continue
            scale = 1_000_000_000 if counter["unit"] == "usd" else 1
            attributes = {**self._scope(counter["scope"]), "budgetguard.budget.period": counter["period"]}
            self.remaining[counter["unit"]].set(
                max(counter["limit"] - counter["spent"], 0) / scale, attributes
            )
            outlook = counter_forecast(counter)
            if outlook is not None:
                self.burn[counter["unit"]].set(outlook.per_hour / scale, attributes)
                self.runs_out.set(outlook.until.timestamp(), attributes)
        self._annotate(event, genai)

    def _genai(self, model: str) -> dict[str, str]:
        provider = self.provider or provider_name(model)
        return {
            "gen_ai.operation.name": "embeddings" if "embedding" in model else "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
        }

    def _scope(self, label: str) -> dict[str, str]:
        kind, ident = scope_parts(label, self.id_kinds)
        return {"budgetguard.scope.kind": kind, **({"budgetguard.scope.id": ident} if ident else {})}

    def _annotate(self, event: Event, genai: dict[str, str]) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            "budgetguard.scopes": [scope_parts(s, self.id_kinds)[0] for s in event.scopes],
        }
        if event.reservation_id:
            attributes["budgetguard.reservation_id"] = event.reservation_id
        if event.attempt:
            attributes["budgetguard.attempt"] = event.attempt
        if event.estimated is not None:
            attributes["budgetguard.estimated_usd"] = float(event.estimated)
        if event.actual is not None:
            attributes["budgetguard.cost_usd"] = float(event.actual)
        usage = event.data.get("usage")
        if event.kind == "committed" and usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.total_input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        if event.kind in ("reserved", "committed"):
            span.set_attributes({**genai, **attributes})
        if event.kind == "refused" and event.reason:
            attributes.update(self._scope(event.reason))
            span.set_attribute("budgetguard.refused", True)
        elif event.reason and event.kind in ("committed", "released"):
            attributes["error.type"] = event.reason
        span.add_event(f"budgetguard.{event.kind}", attributes)  # reasons naming scopes stay out

"""The OpenTelemetry hook against the real SDK: in-memory metric reader and span exporter."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import budgetguard as bg
from budgetguard.integrations.opentelemetry import OpenTelemetryHook, provider_name

USAGE = bg.Usage(input_tokens=120, cache_read_tokens=30, output_tokens=45)
MESSAGES = [{"role": "user", "content": "Summarise the report."}]


@pytest.fixture
def otel() -> tuple[InMemoryMetricReader, InMemorySpanExporter, TracerProvider]:
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    return InMemoryMetricReader(), spans, tracing


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


FEATURE_TOKENS = 10_000_000
"""Far above a call's tokens: the feature lasts its day at the rate of the first minutes of a UTC day too
(10,000 ran out before the reset when a test ran in its first ~10 hours: the rate is the spend per hour
the window has run)."""


def make_guard(hook: OpenTelemetryHook, **options: Any) -> bg.Guard:
    return bg.Guard(
        "memory://",
        budgets=[
            bg.Budget("user", usd="1", per="day"),
            bg.Budget("feature", tokens=FEATURE_TOKENS, per="day"),
        ],
        on_event=hook,
        **options,
    )


def test_metrics_follow_the_genai_conventions(otel: Any) -> None:
    reader, _, _ = otel
    hook = OpenTelemetryHook(meter_provider=MeterProvider(metric_readers=[reader]), id_kinds=["feature"])
    guard = make_guard(hook)

    @guard.with_budget(user="{user_id}", feature="reports")
    def summarise(
        *, model: str, messages: list[Any], max_tokens: int, user_id: str, fail: bool = False
    ) -> Any:
        if fail:
            raise ValueError("bad request")
        return USAGE

    summarise(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100, user_id="alice")
    with pytest.raises(ValueError, match="bad request"):
        summarise(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100, user_id="alice", fail=True)
    with pytest.raises(bg.BudgetExceededError):
        summarise(model="gpt-4o", messages=MESSAGES, max_tokens=200_000, user_id="alice")

    found = points(reader)
    genai = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    tokens = {p.attributes["gen_ai.token.type"]: p for p in found["gen_ai.client.token.usage"]}
    assert (tokens["input"].sum, tokens["input"].count) == (150, 1)  # cache reads are input too
    assert (tokens["output"].sum, tokens["output"].count) == (45, 1)
    assert dict(tokens["input"].attributes) == {**genai, "gen_ai.token.type": "input"}
    assert tokens["input"].explicit_bounds[:3] == (1, 4, 16)

    durations = {p.attributes.get("error.type"): p for p in found["gen_ai.client.operation.duration"]}
    assert set(durations) == {None, "ValueError"}
    assert dict(durations[None].attributes) == genai and durations[None].count == 1
    assert 0 <= durations[None].sum < 60

    cost = bg.cost("gpt-4o-mini", USAGE)
    [spent] = found["budgetguard.cost"]
    assert spent.value == pytest.approx(float(cost))

    [refused] = found["budgetguard.refusals"]
    assert refused.value == 1
    assert refused.attributes["budgetguard.scope.kind"] == "user"
    assert "budgetguard.scope.id" not in refused.attributes  # raw user ids stay out by default

    [usd] = found["budgetguard.budget.remaining.usd"]
    assert dict(usd.attributes) == {"budgetguard.scope.kind": "user", "budgetguard.budget.period": "day"}
    assert usd.value == pytest.approx(float(1 - cost))
    [tokens_left] = found["budgetguard.budget.remaining.tokens"]
    assert tokens_left.attributes["budgetguard.scope.id"] == "reports"  # an allowed kind
    assert tokens_left.value == FEATURE_TOKENS - USAGE.total_tokens
    # the forecast beside it: $1 a day lasts the day (its reset); the rate is the spend per hour so far
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    if time.time() - midnight > 60:  # (well inside the day whose window the calls were charged to)
        lasting = {
            p.attributes["budgetguard.scope.kind"]: p.value for p in found["budgetguard.budget.runs_out"]
        }
        assert lasting == {"user": midnight + 86_400, "feature": midnight + 86_400}
        [burn] = found["budgetguard.budget.burn_per_hour.usd"]
        hours = (time.time() - midnight) / 3600
        assert float(cost) / hours - 1e-9 <= burn.value and dict(burn.attributes) == dict(usd.attributes)


def test_guarded_calls_annotate_the_current_span(otel: Any) -> None:
    _, spans, tracing = otel
    guard = make_guard(OpenTelemetryHook(meter_provider=MeterProvider()), missing_scope="skip")  # no feature

    @guard.with_budget(user="bob")
    def answer(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return {"usage": {"input_tokens": 80, "output_tokens": 20}}

    tracer = tracing.get_tracer("test")
    with tracer.start_as_current_span("chat claude"):
        answer(model="claude-sonnet-4-5", messages=MESSAGES, max_tokens=300)
    with tracer.start_as_current_span("refused"), pytest.raises(bg.BudgetExceededError):
        answer(model="claude-sonnet-4-5", messages=MESSAGES, max_tokens=10_000_000)

    chat, refused = spans.get_finished_spans()
    attributes = chat.attributes or {}
    est = bg.estimate({"model": "claude-sonnet-4-5", "messages": MESSAGES, "max_tokens": 300})
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert attributes["budgetguard.estimated_usd"] == pytest.approx(float(est.cost))
    cost = bg.cost("claude-sonnet-4-5", bg.Usage(input_tokens=80, output_tokens=20))
    assert attributes["budgetguard.cost_usd"] == pytest.approx(float(cost))
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (80, 20)
    assert attributes["budgetguard.scopes"] == ("global", "user")
    assert [e.name for e in chat.events] == ["budgetguard.reserved", "budgetguard.committed"]
    assert (refused.attributes or {})["budgetguard.refused"] is True
    [event] = refused.events
    assert (
        event.name == "budgetguard.refused" and (event.attributes or {})["budgetguard.scope.kind"] == "user"
    )


def test_provider_names_are_the_well_known_values() -> None:
    assert provider_name("gpt-4o") == provider_name("o3-mini") == "openai"
    assert provider_name("anthropic/claude-haiku-4-5") == "anthropic"
    assert provider_name("gemini-2.5-flash") == "gcp.gen_ai"
    assert provider_name("mistral-large-latest") == "mistral_ai"
    assert provider_name("acme-llm") == "unknown"
    with pytest.raises(TypeError):
        OpenTelemetryHook(id_kinds="feature")


def test_a_call_without_a_budget_costs_but_has_no_remaining_gauge(otel: Any) -> None:
    """It holds on the guard's metering counter, whose limit ($9.2 billion) is no budget to show."""
    reader, _, _ = otel
    guard = bg.Guard(
        "memory://", on_event=OpenTelemetryHook(meter_provider=MeterProvider(metric_readers=[reader]))
    )

    @guard.metered
    def summarise(*, model: str, messages: list[Any], max_tokens: int) -> Any:
        return USAGE

    summarise(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100)

    found = points(reader)
    [spent] = found["budgetguard.cost"]
    assert spent.value == pytest.approx(float(bg.cost("gpt-4o-mini", USAGE)))
    assert "budgetguard.budget.remaining.usd" not in found

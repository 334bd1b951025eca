"""Malformed provider responses: missing usage, negative or absurd token counts, wrong types, truncated
SSE streams. ``Usage.from_response`` returns a valid ``Usage`` or raises ``UsageError``, nothing else;
through the guard and the real SDK clients each call ends with a clear error or the documented
fallback (the worst case charged and flagged ``usage_missing``), never a silent $0, never a held hold.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import budgetguard
from budgetguard import BudgetGuardError, Event, Guard, Usage, UsageError
from tests.guard.payloads import (
    Reply,
    anthropic_client,
    anthropic_message,
    anthropic_sse,
    anthropic_stream_events,
    chat_completion,
    chat_request,
    chat_stream_chunks,
    claude_request,
    openai_client,
    openai_sse,
    serve,
)
from tests.sdk_http import HTTP_ERRORS

from . import figures


def _settings(fast: int, long: int) -> settings:
    return settings(
        max_examples=figures.scale(fast, long),
        deadline=None,
    )


READS = _settings(150, 5000)
"""Usage.from_response alone: cheap."""
CALLS = _settings(20, 1500)
"""Whole guarded calls through the SDK clients."""
BUDGETS = [budgetguard.Budget("user", usd="1000"), budgetguard.Budget("global", usd="100000")]

# -- what a broken provider may send ----------------------------------------------------------------

WEIRD = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**15, 10**20]),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


DELETE = object()


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Pick a strategy by weight (``one_of`` would flatten WEIRD's eight branches into the draw)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


def _mutated(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``valid`` with each field kept (most often), changed to another count, to junk, or removed;
    nested details the same way; sometimes the whole usage is junk."""

    def field(value: Any) -> st.SearchStrategy[Any]:
        mutated = _mutated(value) if isinstance(value, dict) else st.integers(0, 10**7)
        return _weighted((6, st.just(value)), (2, mutated), (1, WEIRD), (1, st.just(DELETE)))

    fields = st.fixed_dictionaries({k: field(v) for k, v in valid.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not DELETE}
    )
    return _weighted((8, fields), (1, st.just({})), (1, WEIRD))


OPENAI_USAGE = _mutated(chat_completion()["usage"])
ANTHROPIC_USAGE = _mutated(anthropic_message()["usage"])
MISSING = object()


def _with_usage(body: dict[str, Any], usage: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    if usage is MISSING:
        del body["usage"]
    else:
        body["usage"] = usage
    return body


def _json_safe(value: Any) -> bool:
    """The SDKs get JSON over HTTP: NaN and infinities cannot travel (json.dumps would write NaN)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


# -- Usage.from_response ----------------------------------------------------------------------------


def _read(response: Any) -> Usage | None:
    try:
        usage = Usage.from_response(response)
    except UsageError:
        return None
    for name in ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens"):
        value = getattr(usage, name)
        assert type(value) is int and value >= 0, (name, value)
    return usage


SHAPES = {"openai": (OPENAI_USAGE, chat_completion), "anthropic": (ANTHROPIC_USAGE, anthropic_message)}
FUZZED = st.sampled_from(sorted(SHAPES)).flatmap(
    lambda p: st.tuples(st.just(p), st.one_of(st.just(MISSING), SHAPES[p][0]))
)
"""(provider, usage): a real payload's usage mutated, or missing."""


@READS
@given(fuzzed=FUZZED)
def test_usage_from_fuzzed_responses(fuzzed: tuple[str, Any]) -> None:
    provider, usage = fuzzed
    result = _read(_with_usage(SHAPES[provider][1](), usage))
    figures.record("provider_fuzz", "usage payloads read (Usage.from_response)", 1)
    figures.record("provider_fuzz", "...refused with UsageError", result is None)


# -- through the guard and the real SDK clients ------------------------------------------------------


def _fresh() -> tuple[Guard, list[Event]]:
    """A guard on a fresh memory store, and the events it emits."""
    events: list[Event] = []
    return Guard("memory://", budgets=BUDGETS, on_event=events.append), events


def _settled(guard: Guard, events: list[Event]) -> tuple[str, int]:
    """The one resolution of the call: nothing held, exactly one journal line."""
    counters = guard.counters_for([budgetguard.Scope.parse("user:fuzz")])
    assert all(s.held == 0 for s in guard.ledger.status(counters))  # no leaked hold
    (entry,) = guard.ledger.history()
    return entry.event, entry.amounts.get("usd", 0)


def _expect(guard: Guard, events: list[Event], call: Callable[[], Any], model: str) -> str:
    """Run ``call``; check the documented outcomes. Returns which one happened."""
    error: BudgetGuardError | None = None
    result = None
    try:
        result = call()
    except BudgetGuardError as exc:
        error = exc
    event, amount = _settled(guard, events)
    if error is not None:
        assert (event, amount > 0) == ("committed", True), error  # the call was made: charged, not $0
        return f"clear error ({type(error).__name__})"
    assert event == "committed"
    if "usage_missing" in [e.kind for e in events]:
        assert amount > 0  # the worst case, flagged
        return "fallback: worst case charged, usage_missing"
    parsed = Usage.from_response(result)  # what the SDK made of the payload, read as the guard read it
    assert amount == budgetguard.get_price(model).cost_nano(parsed)
    if amount == 0:  # only when the provider itself said zero tokens
        assert parsed.total_tokens == 0
        return "charged $0 because the provider reported 0 tokens"
    return "charged from the reported usage"


def _outcome(kind: str) -> None:
    figures.record("provider_fuzz", "guarded calls with a fuzzed response (real SDK clients)", 1)
    figures.record("provider_fuzz", f"...{kind}", 1)


# (request, the model charged: the one that answered, as the payload names it; the Claude payload is
# claude-sonnet-4-5-20250929, whose long-context tier sonnet-4-6 does not have)
REQUESTS = {"openai": (chat_request, "gpt-4o"), "anthropic": (claude_request, "claude-sonnet-4-5-20250929")}


@CALLS
@given(fuzzed=FUZZED)
def test_guarded_call_with_fuzzed_usage(fuzzed: tuple[str, Any]) -> None:
    provider, usage = fuzzed
    if not _json_safe(usage if usage is not MISSING else None):
        return
    body = SHAPES[provider][1]
    request, model = REQUESTS[provider]
    g, events = _fresh()
    api = serve(_with_usage(body(), usage))
    client = openai_client(api) if provider == "openai" else anthropic_client(api)
    method = client.chat.completions.create if provider == "openai" else client.messages.create
    create = g.with_budget(method, user="fuzz")
    _outcome(_expect(g, events, lambda: create(**request()), model))


@pytest.mark.parametrize("stream", [False, True])
def test_absurd_token_counts_charge_the_estimate_and_release_nothing_late(stream: bool) -> None:
    """A usage whose cost does not fit in int64 nano-USD ($9.2 billion) is corrupt: the worst-case
    estimate is charged and flagged. (It used to raise a bare ValueError from the ledger's commit and
    leave the hold to its lease.)"""
    g, events = _fresh()
    absurd = {"input_tokens": 10**17, "output_tokens": 10**17}
    if stream:
        body: Any = anthropic_sse(anthropic_stream_events(final_delta_usage=absurd))
    else:
        body = _with_usage(anthropic_message(), absurd)
    create = g.with_budget(anthropic_client(serve(body)).messages.create, user="fuzz")
    result = create(**claude_request(stream=stream))
    if stream:
        for _ in result:
            pass
    event, amount = _settled(g, events)
    assert (event, amount) == ("committed", budgetguard.estimate(claude_request()).cost_nano)
    assert "usage_missing" in [e.kind for e in events]
    figures.record("provider_fuzz", "absurd token counts (cost beyond int64) charged the estimate", 1)


# -- truncated streams ------------------------------------------------------------------------------

STREAMS = {
    "openai": (openai_sse(chat_stream_chunks()), chat_request, openai_client, "chat"),
    "anthropic": (anthropic_sse(anthropic_stream_events()), claude_request, anthropic_client, "messages"),
}


def _cut(body: bytes, at: int, error: bool) -> Callable[[ModuleType], Iterator[bytes]]:
    def chunks(http: ModuleType) -> Iterator[bytes]:
        yield body[:at]
        if error:
            raise http.ReadError("connection reset by peer")

    return chunks


@CALLS
@given(provider=st.sampled_from(sorted(STREAMS)), cut=st.floats(0, 1), error=st.booleans())
def test_truncated_streams(provider: str, cut: float, error: bool) -> None:
    g, events = _fresh()
    sse, request, client, kind = STREAMS[provider]
    body = sse.encode()
    at = math.floor(cut * len(body))
    api = serve(Reply(body=_cut(body, at, error)))
    sdk = client(api)
    create = g.with_budget(
        sdk.chat.completions.create if kind == "chat" else sdk.messages.create, user="fuzz"
    )
    try:
        stream = create(**request(stream=True))
        try:
            for _ in stream:
                pass
        finally:
            stream.close()
    except (budgetguard.BudgetGuardError, openai.APIError, anthropic.APIError, *HTTP_ERRORS):
        pass  # the SDK's own error for a broken stream passes through unchanged
    event, amount = _settled(g, events)
    assert event == "committed"
    assert amount > 0  # at least the input estimate: never $0 for a call that was made
    figures.record("provider_fuzz", "truncated or broken SSE streams (openai, anthropic)", 1)

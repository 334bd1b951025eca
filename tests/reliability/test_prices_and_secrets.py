"""Prices: an unknown model is refused before the call (or charged a configured default price); a
zero-priced model still counts against request and token budgets. Secrets: prompts, API keys and the
store's password never reach the logs, the events or the journal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, Event, Guard, LedgerError, PriceBook, PricingError, Scope
from budgetguard._ledger import open_ledger
from tests.guard.payloads import Reply, chat_completion, chat_request, fail, openai_client, serve
from tests.redis_server import free_port

from . import figures


def _guard(prices: PriceBook, budgets: list[Budget], url: str = "memory://") -> tuple[Guard, list[Event]]:
    events: list[Event] = []
    return Guard(url, budgets=budgets, prices=prices, on_event=events.append), events


def _held(guard: Guard, scope: str) -> list[tuple[str, int, int]]:
    statuses = guard.ledger.status(guard.counters_for([Scope.parse(scope)]))
    return [(s.counter.unit.value, s.spent, s.held) for s in statuses]


def _body(model: str) -> dict[str, Any]:
    body = chat_completion()
    body["model"] = model
    return body


def test_unknown_model_is_refused_before_the_call() -> None:
    guard, _ = _guard(PriceBook(), [Budget("user", usd="1")])
    api = serve(_body("gpt-nonexistent-9000"))
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    with pytest.raises(PricingError, match="gpt-nonexistent-9000"):
        create(**chat_request(model="gpt-nonexistent-9000"))
    assert api.requests == []  # never called: no price, no call, no silent $0
    assert _held(guard, "user:alice") == [("usd", 0, 0)]
    assert guard.ledger.history() == []
    figures.record("prices", "unknown model calls: refused before the SDK call (PricingError)", 1)


def test_unknown_model_with_a_default_price_is_charged_that_price() -> None:
    prices = PriceBook()
    prices.set_default(input="5", output="15")
    guard, _ = _guard(prices, [Budget("user", usd="1")])
    api = serve(_body("gpt-nonexistent-9000"))
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice")
    create(**chat_request(model="gpt-nonexistent-9000"))
    (entry,) = guard.ledger.history()
    assert entry.amounts["usd"] == (2006 * 5 + 300 * 15) * 1000  # $ per million -> nano-USD, > 0
    figures.record("prices", "unknown model calls with a default price: charged it, not $0", 1)


def test_a_free_model_still_counts_against_request_and_token_budgets() -> None:
    prices = PriceBook()
    prices.register("free-model", input="0", output="0")
    budgets = [Budget("user", usd="0.01"), Budget("user", requests=3), Budget("team", tokens=10_000)]
    guard, _ = _guard(prices, budgets)
    api = serve(_body("free-model"))
    create = guard.with_budget(openai_client(api).chat.completions.create, user="alice", team="t")
    for _ in range(3):
        create(**chat_request(model="free-model"))
    with pytest.raises(BudgetExceededError) as refused:
        create(**chat_request(model="free-model"))
    assert refused.value.unit == "requests"
    assert len(api.requests) == 3  # the fourth call was never made
    assert _held(guard, "user:alice") == [("usd", 0, 0), ("requests", 3, 0)]
    assert _held(guard, "team:t") == [("tokens", 3 * 2306, 0)]
    with pytest.raises(BudgetExceededError) as by_tokens:  # 3 x 2306 spent; one more worst case won't fit
        create(**chat_request(model="free-model", max_tokens=2000), user_id="bob")  # type: ignore[call-arg]
    assert by_tokens.value.unit in ("tokens", "requests")
    figures.record(
        "prices", "zero-priced model calls admitted before the request budget refused", len(api.requests)
    )
    figures.record("prices", "zero-priced model calls refused by request or token budgets", 2)


# -- secrets ----------------------------------------------------------------------------------------

PROMPT = "PROMPT-CANARY-7f3a: my card number is 4111 1111 1111 1111"
API_KEY = "sk-KEYCANARY-0c9d12345678901234567890"
PASSWORD = "PWCANARY-e41b"


@pytest.fixture
def seen(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Everything the library said: log records (all levels), events, errors, journal entries."""
    caplog.set_level(logging.DEBUG, logger="budgetguard")
    said: list[str] = []
    yield said
    said += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]


def _scan(texts: list[str]) -> list[str]:
    return [
        t for t in texts if any(c in t for c in (PROMPT, "PROMPT-CANARY", API_KEY, "KEYCANARY", PASSWORD))
    ]


def test_prompts_and_keys_stay_out_of_logs_events_and_journal(
    seen: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Event] = []
    guard = Guard("memory://", budgets=[Budget("user", usd="0.01")], on_event=events.append)
    api = serve(
        fail(401, f"Incorrect API key provided: {API_KEY}. Prompt was: {PROMPT}"),
        chat_completion(),
        Reply(200, {k: v for k, v in chat_completion().items() if k != "usage"}),
    )
    client = openai_client(api)
    client.api_key = API_KEY
    create = guard.with_budget(client.chat.completions.create, user="alice")
    request = chat_request(messages=[{"role": "user", "content": PROMPT}])
    errors: list[BaseException] = []
    calls = 4
    for _ in range(calls):  # an SDK error, a success, usage missing, a refusal
        try:
            create(**request)
        except Exception as exc:  # the SDK's 401 passes through unchanged (its message is the SDK's)
            errors.append(exc)
    assert [type(e).__name__ for e in errors] == ["AuthenticationError", "BudgetExceededError"]
    kinds = {e.kind for e in events}
    assert {"released", "committed", "usage_missing", "refused"} <= kinds
    texts = [repr(e) for e in events] + [repr(e) for e in guard.ledger.history()] + [str(errors[1])]
    texts += [r.getMessage() for r in caplog.records]
    assert len(api.requests) == 3
    assert _scan(texts) == []
    figures.record("secrets", "guarded calls carrying a canary prompt and API key", calls)
    figures.record("secrets", "log records, events and journal entries scanned", len(texts))
    figures.record("secrets", "...containing the prompt or the key", len(_scan(texts)))


def test_the_store_password_stays_out_of_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="budgetguard")
    urls = [  # nothing listens there: every call fails, and says why
        f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0?socket_connect_timeout=0.2",
        f"redis+cluster://:{PASSWORD}@127.0.0.1:{free_port()}?socket_connect_timeout=0.2",
    ]
    texts: list[str] = []
    for url in urls:
        events: list[Event] = []
        guard = Guard(url, budgets=[Budget("user", usd="1")], on_event=events.append)
        create = guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create, user="a")
        with pytest.raises(LedgerError) as caught:
            create(**chat_request())
        texts += [str(caught.value), repr(caught.value)] + [repr(e) for e in events]
        with pytest.raises(LedgerError) as direct:
            open_ledger(url).status([])
        texts += [str(direct.value)]
    texts += [r.getMessage() for r in caplog.records]
    assert _scan(texts) == []
    figures.record("secrets", "store errors and events scanned for the Redis password", len(texts))
    figures.record("secrets", "...containing it", len(_scan(texts)))


def test_guarded_call_meta_in_the_journal_is_bookkeeping_only() -> None:
    """What the journal keeps of a call: model, attempt, scopes, pricing variant, estimate, usage, cost,
    flags. Never the request."""
    guard = Guard("memory://", budgets=[Budget("user", usd="1")])
    create = guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create, user="a")
    create(**chat_request(messages=[{"role": "user", "content": PROMPT}]))
    (entry,) = guard.ledger.history()
    flags = {"usage_missing", "interrupted", "overrun", "error", "reasoning_worst_case", "unpriced"}
    bookkeeping = {"model", "attempt", "scopes", "variant", "job", "estimated_usd", "usage", "cost_nano"}
    bookkeeping |= {"served_model", "priced_as", "served_tier"}  # what answered, what it was charged as
    bookkeeping |= {"function", "fitted", "reserved_usd"}  # the decorated function's name, fit=, hold=
    assert set(entry.data) <= bookkeeping | flags
    assert budgetguard.Usage(**entry.data["usage"]).total_tokens == 2306

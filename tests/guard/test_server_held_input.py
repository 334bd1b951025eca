"""Requests whose bill the request body does not show: an Anthropic thread continued (the server holds the
conversation and bills all of it) and Anthropic server-side ``fallbacks`` (another, dearer model may answer
and every hop reached is billed). The reservation must stay at or above the bill, through ``guard.wrap``
and through the decorator on the SDK method alike.

The server here is a MockTransport handler behind the real anthropic SDK client: it keeps each thread's
history, counts input by the mock provider's own rule (``budgetguard.testing.count_input``, independent of
the estimator) and writes every output token the request allows, so its bills are the worst a request
can get from it.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from budgetguard import Budget, BudgetExceededError, ConfigurationError, Estimator, Guard, JournalEntry, Usage
from budgetguard.testing import count_input
from tests.guard.payloads import anthropic_client
from tests.sdk_http import http_for

JSON = dict[str, Any]
SONNET, HAIKU, OPUS = "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"
LONG = "Budgets hold because every reservation is the worst case of the bill. " * 300
TURNS = [LONG, "And then?", "Why does the hold come first?", "Summarise it in a line."]
_create = inspect.signature(anthropic.Anthropic(api_key="k").beta.messages.create).parameters
SDK_THREADS = "thread" in _create and hasattr(anthropic.Anthropic(api_key="k").beta.messages, "thread")
SDK_FALLBACKS = "fallbacks" in _create


def _message(model: str, usage: JSON, text: str = "Because.") -> JSON:
    return {
        "id": "", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, **usage},
    }  # fmt: skip


class ThreadServer:
    """Holds each thread's conversation under its last reply's id and bills the whole of it."""

    def __init__(self) -> None:
        self.held: dict[str, list[JSON]] = {}
        self.bodies: list[JSON] = []
        self.billed: list[int] = []

    def __call__(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.bodies.append(body)
        thread = body.get("thread") or {}
        history = self.held[thread["previous_message_id"]] if thread.get("type") == "continue" else []
        conversation = [*history, *body["messages"]]
        read = count_input("messages", {**body, "messages": conversation})
        reply = _message(body["model"], {"input_tokens": read, "output_tokens": body["max_tokens"]})
        reply["id"] = f"msg_{len(self.bodies)}"
        self.held[reply["id"]] = [*conversation, {"role": "assistant", "content": reply["content"]}]
        self.billed.append(read)
        return http_for(request).Response(200, json=reply)


def fallback_server(reply: JSON) -> Callable[[Any], Any]:
    def handle(request: Any) -> Any:
        return http_for(request).Response(200, json=copy.deepcopy(reply))

    return handle


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    yield made
    made.close()


def reserved_and_charged(entry: JournalEntry) -> tuple[int, int]:
    return int(Decimal(entry.data["estimated_usd"]) * 10**9), entry.amounts["usd"]


def assert_covered(guard: Guard, calls: int) -> list[JournalEntry]:
    entries = guard.ledger.history(events=["committed"])
    assert len(entries) == calls
    for entry in entries:
        reserved, charged = reserved_and_charged(entry)
        assert reserved >= charged, entry.data
        assert "overrun" not in entry.data
    return entries


# -- threads ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not SDK_THREADS, reason="this anthropic SDK has no message threads")
def test_a_thread_sent_through_wrap_is_reserved_above_each_turns_bill(guard: Guard) -> None:
    """Before: turn 2 (9 characters sent, the whole 3,000-token history billed) reserved 15 input
    tokens and was an overrun."""
    server = ThreadServer()
    thread = guard.wrap(anthropic_client(server)).beta.messages.thread(model=SONNET, max_tokens=64)
    for text in TURNS:
        thread.send({"role": "user", "content": text})
    assert [body.get("thread", {}).get("type") for body in server.bodies][1:] == ["continue"] * 3
    assert server.billed[1] > 3000 and len(json.dumps(server.bodies[1]["messages"])) < 100
    entries = assert_covered(guard, len(TURNS))
    assert [e.data.get("unseen") for e in entries] == [None, ["thread"], ["thread"], ["thread"]]


@pytest.mark.skipif(not SDK_THREADS, reason="this anthropic SDK has no thread= parameter")
def test_a_thread_continued_through_the_decorator_is_reserved_above_each_turns_bill(guard: Guard) -> None:
    server = ThreadServer()
    create = guard.with_budget(anthropic_client(server).beta.messages.create)
    reply = create(model=SONNET, max_tokens=64, messages=[{"role": "user", "content": LONG}],
                   thread={"type": "create"})  # fmt: skip
    for text in TURNS[1:]:
        reply = create(model=SONNET, max_tokens=64, messages=[{"role": "user", "content": text}],
                       thread={"type": "continue", "previous_message_id": reply.id})  # fmt: skip
    assert server.billed[-1] > server.billed[0] > 3000
    entries = assert_covered(guard, len(TURNS))
    assert [e.data.get("unseen") for e in entries] == [None, ["thread"], ["thread"], ["thread"]]


def test_a_continued_thread_is_bounded_like_server_held_openai_history() -> None:
    """One rule for both providers: the input of a continued thread is the model's context window (or
    ``unseen_tokens`` more than shown), as for OpenAI's ``previous_response_id``; exact counting by the
    endpoint does not see the thread's history either."""
    turn = {"model": SONNET, "max_tokens": 100, "messages": [{"role": "user", "content": "And then?"}]}
    held = {**turn, "thread": {"type": "continue", "previous_message_id": "msg_01"}}
    estimator = Estimator()
    plain, cont = estimator(turn), estimator(held)
    assert cont.unseen == ("thread",) and plain.unseen == ()
    assert cont.input_tokens == cont.price.context_window > plain.input_tokens
    counted = estimator(held, input_tokens=12)
    assert counted.counted and counted.input_tokens == cont.input_tokens
    assert Estimator(unseen_tokens=5000)(held).input_tokens == plain.input_tokens + 5000
    openai_held = {"model": "gpt-4o", "input": "And then?", "previous_response_id": "resp_01"}
    assert estimator(openai_held).input_tokens == estimator(openai_held).price.context_window


# -- fallbacks -------------------------------------------------------------------------------------

ASK: JSON = {"model": HAIKU, "max_tokens": 1000, "messages": [{"role": "user", "content": "Explain holds."}]}


def served_by_fallback(model: str, declined: JSON, served: JSON) -> JSON:
    """A fallback-served message: the declined hop as a ``message`` iteration, the serving hop as
    ``fallback_message`` on its model; the top level counts both, as Anthropic reports it."""
    total = {k: declined[k] + served[k] for k in ("input_tokens", "output_tokens")}
    body = _message(model, total)
    zero = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    body["usage"]["iterations"] = [
        {"type": "message", **zero, **declined},
        {"type": "fallback_message", "model": OPUS, **zero, **served},
    ]
    return body


CASES = {
    # the response names the model that answered (a refusal before any output)
    "answered-by-opus": (
        {"fallbacks": [{"model": OPUS}]},
        served_by_fallback(OPUS, {"input_tokens": 20, "output_tokens": 1},
                           {"input_tokens": 20, "output_tokens": 1000}),
    ),
    # a refusal mid-way: the response keeps Haiku's name, Haiku's partial output is billed and read (the
    # declined hop names no model: charged at Opus, the chain's dearest; its input the estimator's count)
    "declined-mid-way": (
        {"fallbacks": [{"model": OPUS}]},
        served_by_fallback(HAIKU, {"input_tokens": 15, "output_tokens": 999},
                           {"input_tokens": 1014, "output_tokens": 1000}),
    ),
    # the fallback entry writes more than the request allows Haiku
    "own-max-tokens": (
        {"fallbacks": [{"model": OPUS, "max_tokens": 4000}]},
        served_by_fallback(OPUS, {"input_tokens": 20, "output_tokens": 1},
                           {"input_tokens": 20, "output_tokens": 4000}),
    ),
    # the reviewer's reply: no iterations, the whole usage on Opus
    "no-iterations": (
        {"fallbacks": [{"model": OPUS}]}, _message(OPUS, {"input_tokens": 20, "output_tokens": 1000})
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_fallback_answered_through_wrap_is_reserved_above_its_bill(guard: Guard, case: str) -> None:
    """Before: reserved at Haiku's worst case ($0.0050), charged $0.075 to $0.30 when Opus answered."""
    extra, reply = CASES[case]
    guard.wrap(anthropic_client(fallback_server(reply))).beta.messages.create(**ASK, extra_body=extra)
    (entry,) = assert_covered(guard, 1)
    assert entry.data.get("served_model") == (OPUS if reply["model"] == OPUS else None)
    reserved, charged = reserved_and_charged(entry)
    haiku_alone = Estimator()(ASK).cost_nano
    assert charged > 10 * haiku_alone and reserved > charged


@pytest.mark.skipif(not SDK_FALLBACKS, reason="this anthropic SDK has no fallbacks= parameter")
@pytest.mark.parametrize("case", CASES)
def test_a_fallback_answered_through_the_decorator_is_reserved_above_its_bill(
    guard: Guard, case: str
) -> None:
    extra, reply = CASES[case]
    guard.with_budget(anthropic_client(fallback_server(reply)).beta.messages.create)(**ASK, **extra)
    assert_covered(guard, 1)


def test_each_fallback_hop_is_reserved_at_its_own_worst_case() -> None:
    """The chain's worst case: Haiku may write its 1,000 tokens and decline; Opus then reads the request
    and that partial output and writes its own max_tokens, at Opus' price (the commit may price every
    hop at the model the response names: Opus)."""
    estimator = Estimator()
    alone = estimator(ASK)
    chained = estimator({**ASK, "fallbacks": [{"model": OPUS, "max_tokens": 4000}]})
    opus = estimator({**ASK, "model": OPUS, "max_tokens": 4000})
    hop = opus.price.cost_nano(Usage(input_tokens=opus.input_tokens + 1000, output_tokens=4000))
    haiku_at_opus = opus.price.cost_nano(alone.usage)
    assert chained.cost_nano == haiku_at_opus + hop
    assert (chained.model, chained.input_tokens, chained.output_tokens) == (HAIKU, alone.input_tokens, 1000)
    assert [(p.kind, p.model) for p in chained.passes] == [("fallback_message", OPUS)]


def test_fit_lowers_the_fallbacks_that_keep_the_requests_max_tokens() -> None:
    """``fit=`` prices a lowered max_tokens as the estimator prices the request sent with it: the hops
    without their own max_tokens follow it, the others keep theirs."""
    estimator = Estimator()
    request = {**ASK, "fallbacks": [{"model": SONNET}, {"model": OPUS, "max_tokens": 3000}]}
    est = estimator(request)
    for lowered in (300, 700):
        fitted, sent = estimator.priced(est, lowered), estimator({**request, "max_tokens": lowered})
        assert fitted.output_tokens == sent.output_tokens == lowered
        assert (fitted.cost_nano, fitted.input_tokens, fitted.passes) == (
            sent.cost_nano, sent.input_tokens, sent.passes,
        )  # fmt: skip
        assert fitted.cost_nano < est.cost_nano


def test_fallback_entries_patch_the_request_they_retry() -> None:
    """An entry's thinking and output_config (field by field) and speed apply to its hop alone."""
    estimator = Estimator()
    schema = {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    request = {**ASK, "model": SONNET, "output_config": {"format": schema}}
    same = estimator({**request, "fallbacks": [{"model": SONNET}]})
    unformatted = estimator({**request, "fallbacks": [{"model": SONNET, "output_config": {"format": None}}]})
    assert unformatted.cost_nano < same.cost_nano
    thinking = estimator({**request, "fallbacks": [{"model": SONNET, "thinking": None}]})
    assert thinking.cost_nano > same.cost_nano  # (the model's default thinking: counted as on)


def test_default_fallbacks_are_refused_before_anything_is_sent(guard: Guard) -> None:
    """``fallbacks="default"`` lets Anthropic pick the models: no price bounds the call."""
    sent: list[Any] = []
    client = guard.wrap(anthropic_client(lambda request: sent.append(request)))
    with pytest.raises(ConfigurationError, match="name them instead"):
        client.beta.messages.create(**ASK, extra_body={"fallbacks": "default"})
    assert sent == [] and guard.ledger.history() == []
    with pytest.raises(ConfigurationError, match="a fallbacks entry names its model"):
        Estimator()({**ASK, "fallbacks": [{"max_tokens": 10}]})
    # (a review: a model name was told "lets Anthropic choose"; a bad output_config was an AttributeError)
    with pytest.raises(ConfigurationError, match="must be a list"):
        Estimator()({**ASK, "fallbacks": "claude-opus-4-1"})
    with pytest.raises(ConfigurationError, match="output_config is an object of fields"):
        Estimator()({**ASK, "fallbacks": [{"model": "claude-opus-4-1", "output_config": "x"}]})


@pytest.mark.parametrize(
    "same", [{"thread": {"type": "create"}}, {"fallbacks": []}, {"fallbacks": None}, {"thread": None}]
)
def test_a_plain_call_is_estimated_as_before(same: JSON) -> None:
    """A request that holds nothing server-side and names no fallback: the estimate of the request
    alone (15 input tokens and Haiku's $1 / $5 rates: the value before this change)."""
    plain = Estimator()(ASK)
    assert (plain.input_tokens, plain.output_tokens, plain.cost_nano) == (15, 1000, 5_015_000)
    assert plain.passes == plain.unseen == plain.fallbacks == ()
    assert Estimator()({**ASK, **same}) == plain


def test_a_token_budget_holds_every_hop_of_the_chain() -> None:
    """A token budget holds the hops too (their passes), as the commit counts them: a budget that
    Haiku's worst case alone fits but the chain does not is refused before anything is sent (before:
    admitted, then charged 1,041 tokens on a 1,030-token limit)."""
    est = Estimator()({**ASK, "fallbacks": [{"model": OPUS}]})
    alone = Estimator()(ASK)
    assert est.total_tokens == alone.total_tokens + est.passes[0].usage.total_tokens > 2 * 1000
    reply = CASES["answered-by-opus"][1]
    sent: list[Any] = []

    def handle(request: Any) -> Any:
        sent.append(request)
        return fallback_server(reply)(request)

    small = Guard("memory://", budgets=[Budget("global", tokens=1030, per="day")])
    with pytest.raises(BudgetExceededError):
        small.wrap(anthropic_client(handle)).beta.messages.create(
            **ASK, extra_body={"fallbacks": [{"model": OPUS}]}
        )
    assert sent == []
    small.close()
    enough = Guard("memory://", budgets=[Budget("global", tokens=est.total_tokens, per="day")])
    enough.wrap(anthropic_client(handle)).beta.messages.create(
        **ASK, extra_body={"fallbacks": [{"model": OPUS}]}
    )
    (entry,) = enough.ledger.history(events=["committed"])
    assert entry.amounts["tokens"] == 1041 <= est.total_tokens and "overrun" not in entry.data
    enough.close()

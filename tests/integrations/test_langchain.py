"""The LangChain callback handler on real langchain-core runnables: chat models returning usage metadata."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableParallel

import budgetguard as bg
from budgetguard.integrations.langchain import (
    BudgetCallbackHandler,
    get_budget_callback,
    request_from_run,
    usage_from_message,
    usage_from_result,
)
from tests.integrations.chat_models import UsageChat, UsageLLM, reply

PROMPT = [SystemMessage("You are terse."), HumanMessage("Name three primes.")]
OPENAI_PROMPT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three primes."},
]
LONG = [SystemMessage("You are terse."), HumanMessage("Name three primes. " * 400)]


class Overloaded(Exception):
    """A provider error the guard does not charge (an error response is not billed)."""


def make(
    usd: str = "1", hook: Callable[[bg.Event], None] | None = None, **kw: Any
) -> tuple[bg.Guard, list[bg.Event]]:
    """A guard, and the events it emitted; ``hook`` sees each event once it is listed."""
    events: list[bg.Event] = []
    guard = bg.Guard(
        "memory://",
        budgets=[bg.Budget("user", usd=usd, per="day"), bg.Budget("global", usd="100", per="day")],
        on_event=[events.append, *([hook] if hook else [])],
        **kw,
    )
    return guard, events


def spent(guard: bg.Guard, scope: str) -> tuple[int, int]:
    [counter] = guard.counters_for([bg.Scope.parse(scope)])
    [status] = guard.ledger.status([counter])
    return status.spent, status.held


def kinds(events: list[bg.Event]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.model) for e in events]


def test_a_run_reserves_its_estimate_and_commits_its_usage() -> None:
    guard, events = make()
    model = UsageChat(max_tokens=50, replies=[reply("2, 3, 5", 21, 7)])
    handler = BudgetCallbackHandler(guard, user="{user_id}", feature="primes")

    answer = model.invoke(PROMPT, config={"callbacks": [handler], "metadata": {"user_id": "alice"}})

    assert answer.content == "2, 3, 5"
    est = bg.estimate({"model": "gpt-4o-mini", "messages": OPENAI_PROMPT, "max_completion_tokens": 50})
    actual = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=21, output_tokens=7))
    assert kinds(events) == [("reserved", "gpt-4o-mini"), ("committed", "gpt-4o-mini")]
    assert events[0].scopes == ("global", "user:alice", "feature:primes")
    assert events[0].estimated == est.cost and est.output_tokens == 50
    assert events[1].actual == actual
    assert spent(guard, "user:alice") == (bg.to_nano(actual), 0)
    assert spent(guard, "global") == (bg.to_nano(actual), 0)


def test_a_refusal_stops_the_call_before_it_is_sent() -> None:
    guard, events = make(usd="0.00001")
    model = UsageChat(model="gpt-4o", max_tokens=1000, replies=[reply("never", 10, 10)])
    handler = BudgetCallbackHandler(guard, user="bob")

    with pytest.raises(bg.BudgetExceededError) as refused:
        model.invoke(PROMPT, config={"callbacks": [handler]})
    with pytest.raises(bg.BudgetExceededError):
        next(iter(model.stream(PROMPT, config={"callbacks": [handler]})))

    assert refused.value.scope == "user:bob"
    assert model.sent == []  # the model was never called
    assert [e.kind for e in events] == ["refused", "refused"]
    assert spent(guard, "user:bob") == (0, 0)


async def test_a_refusal_stops_an_async_call_too() -> None:
    guard, _ = make(usd="0.00001")
    model = UsageChat(model="gpt-4o", max_tokens=1000, replies=[reply("never", 10, 10)])
    with pytest.raises(bg.BudgetExceededError):
        await model.ainvoke(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="bob")]})
    assert model.sent == []


def test_fallbacks_route_to_a_cheaper_model_when_the_budget_refuses() -> None:
    guard, events = make(usd="0.01")  # gpt-4o x 4000 output tokens is $0.04; gpt-4o-mini's is $0.0024
    expensive = UsageChat(model="gpt-4o", max_tokens=4000, replies=[reply("dear", 20, 5)])
    cheap = UsageChat(model="gpt-4o-mini", max_tokens=4000, replies=[reply("cheap", 20, 5)])
    chain = expensive.with_fallbacks([cheap])

    answer = chain.invoke(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="carol")]})

    assert answer.content == "cheap"
    assert expensive.sent == []
    assert kinds(events) == [("refused", "gpt-4o"), ("reserved", "gpt-4o-mini"), ("committed", "gpt-4o-mini")]
    cost = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=20, output_tokens=5))
    assert spent(guard, "user:carol") == (bg.to_nano(cost), 0)


def test_retries_reserve_and_settle_every_attempt() -> None:
    guard, events = make()
    model = UsageChat(max_tokens=100, replies=[Overloaded("503"), TimeoutError("read"), reply("ok", 30, 4)])
    chain = model.with_retry(stop_after_attempt=3, wait_exponential_jitter=False)

    chain.invoke(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="dan")]})

    attempts = [e.kind for e in events]
    assert attempts == ["reserved", "released", "reserved", "committed", "reserved", "committed"]
    assert events[1].reason == "Overloaded"  # an error response is not billed: released
    est = bg.estimate({"model": "gpt-4o-mini", "messages": OPENAI_PROMPT, "max_completion_tokens": 100})
    timed_out = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=est.input_tokens))  # may have been billed
    assert events[3].reason == "TimeoutError" and events[3].actual == timed_out
    done = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=30, output_tokens=4))
    assert spent(guard, "user:dan") == (bg.to_nano(timed_out) + bg.to_nano(done), 0)


def test_a_stream_is_charged_from_its_final_usage() -> None:
    guard, events = make()
    model = UsageChat(max_tokens=100, replies=[reply("two three five", 25, 3)])
    chunks = list(model.stream(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="eve")]}))
    assert "".join(str(c.content) for c in chunks) == "two three five"
    cost = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=25, output_tokens=3))
    assert events[-1].kind == "committed" and events[-1].actual == cost


def test_a_reply_without_usage_is_charged_its_estimate_and_flagged() -> None:
    guard, events = make()
    model = UsageChat(max_tokens=40, replies=[AIMessage("no usage here")])
    model.invoke(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="fay")]})
    est = bg.estimate({"model": "gpt-4o-mini", "messages": OPENAI_PROMPT, "max_completion_tokens": 40})
    assert [e.kind for e in events] == ["reserved", "usage_missing", "committed"]
    assert events[-1].actual == est.cost


def test_an_unknown_model_is_an_error_not_free() -> None:
    guard, _ = make()
    model = UsageChat(model="acme-unpriced-9000", replies=[reply("x", 1, 1)])
    with pytest.raises(bg.PricingError):
        model.invoke(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="gus")]})
    assert model.sent == []


async def test_async_runs_and_batches_see_the_budget_context() -> None:
    guard, events = make()
    model = UsageChat(max_tokens=20, replies=[reply(f"r{i}", 10 + i, 2) for i in range(4)])
    handler = BudgetCallbackHandler(guard)
    with bg.budget_context(user="hal"):
        await model.ainvoke(PROMPT, config={"callbacks": [handler]})
        model.batch([PROMPT, PROMPT, PROMPT], config={"callbacks": [handler], "max_concurrency": 3})
    committed = [e for e in events if e.kind == "committed"]
    assert len(committed) == 4 and all(e.scopes == ("global", "user:hal") for e in committed)
    total = sum(
        bg.to_nano(bg.cost("gpt-4o-mini", bg.Usage(input_tokens=10 + i, output_tokens=2))) for i in range(4)
    )
    assert spent(guard, "user:hal") == (total, 0)


def test_a_run_that_names_no_user_is_refused_before_it_is_sent() -> None:
    """A budget applies to every user: a run without a user id is refused (not let through on global
    only), a metered one is recorded and flagged, and a default id charges one shared scope."""
    guard, events = make()
    model = UsageChat(max_tokens=20, replies=[reply("r", 10, 2), reply("s", 10, 2), reply("t", 10, 2)])

    for handler in (BudgetCallbackHandler(guard), BudgetCallbackHandler(guard, user="{user_id}")):
        with pytest.raises(bg.MissingScopeError) as refused:
            model.invoke(PROMPT, config={"callbacks": [handler], "metadata": {"user_id": None}})
        assert refused.value.kinds == ("user",)
    assert model.sent == [] and [(e.kind, e.reason) for e in events] == [("refused", "user")] * 2

    model.invoke(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, enforce=False)]})
    [entry] = guard.ledger.history(events=["committed"])
    assert list(entry.data["missing_scope"]) == ["user"]

    shared, _ = make(default_scopes={"user": "anonymous"})
    model.invoke(PROMPT, config={"callbacks": [BudgetCallbackHandler(shared)]})
    assert spent(shared, "user:anonymous")[0] == bg.to_nano(
        bg.cost("gpt-4o-mini", bg.Usage(input_tokens=10, output_tokens=2))
    )


def test_get_budget_callback_adds_up_every_model_and_charges_the_ledger() -> None:
    guard, events = make()
    gpt = UsageChat(max_tokens=30, replies=[reply("a", 40, 10), reply("b", 50, 12)])
    claude = UsageChat(
        model="claude-sonnet-4-5", provider="anthropic", max_tokens=30, replies=[reply("c", 60, 9)]
    )

    with get_budget_callback(guard, user="ivy") as cb:
        gpt.invoke(PROMPT)  # no callbacks passed: the context installs the handler
        (gpt | (lambda m: [HumanMessage(str(m.content))]) | claude).invoke(PROMPT)
    gpt.replies.append(reply("outside", 1, 1))
    gpt.invoke(PROMPT)  # after the block: not guarded

    costs = {
        "gpt-4o-mini": bg.cost("gpt-4o-mini", bg.Usage(input_tokens=40, output_tokens=10))
        + bg.cost("gpt-4o-mini", bg.Usage(input_tokens=50, output_tokens=12)),
        "claude-sonnet-4-5": bg.cost("claude-sonnet-4-5", bg.Usage(input_tokens=60, output_tokens=9)),
    }
    assert cb.successful_requests == 3
    assert (cb.prompt_tokens, cb.completion_tokens, cb.total_tokens) == (150, 31, 181)
    assert cb.total_cost == sum(costs.values()) and isinstance(cb.total_cost, Decimal)
    assert {m: t.cost for m, t in cb.by_model.items()} == costs
    assert (
        str(cb)
        == repr(cb)
        == (  # printed as get_openai_callback()'s totals are
            f"Tokens Used: 181\n\tPrompt Tokens: 150\n\t\tPrompt Tokens Cached: 0\n\tCompletion Tokens: 31\n"
            f"\t\tReasoning Tokens: 0\nSuccessful Requests: 3\nTotal Cost (USD): ${cb.total_cost:f}"
        )
    )
    assert spent(guard, "user:ivy") == (bg.to_nano(cb.total_cost), 0)
    assert len([e for e in events if e.kind == "committed"]) == 3


def test_get_budget_callback_can_meter_without_refusing() -> None:
    guard, _ = make(usd="0.000001")
    model = UsageChat(model="gpt-4o", max_tokens=1000, replies=[reply("over", 100, 50)])
    with get_budget_callback(guard, enforce=False, user="jo") as cb:
        model.invoke(PROMPT)
    assert cb.total_cost == bg.cost("gpt-4o", bg.Usage(input_tokens=100, output_tokens=50))
    assert spent(guard, "user:jo")[0] == bg.to_nano(cb.total_cost)  # recorded past the limit


def test_anthropic_runs_are_estimated_as_anthropic_requests() -> None:
    messages = [
        SystemMessage("Use the tool."),
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "t1"}]),
        ToolMessage("18C, clear", tool_call_id="t1"),
    ]
    tools = [{"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}]
    params = {"model": "claude-sonnet-4-5", "max_tokens": 300, "tools": tools}
    request, provider = request_from_run(messages, params, {"ls_provider": "anthropic"})
    assert provider == "anthropic"
    assert request == {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Use the tool."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": '{"city": "Paris"}'}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "18C, clear"}],
                    }
                ],
            },
        ],
        "tools": tools,
        "max_tokens": 300,
    }


def test_openai_runs_keep_tools_n_and_service_tier() -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
    }
    params = {"model": "gpt-4o", "max_completion_tokens": 64, "n": 2, "tools": [tool], "service_tier": "flex"}
    request, provider = request_from_run(PROMPT, params, {"ls_provider": "openai"})
    assert provider == "openai"
    assert request == {
        "model": "gpt-4o",
        "messages": OPENAI_PROMPT,
        "tools": [tool],
        "max_completion_tokens": 64,
        "n": 2,
        "service_tier": "flex",
    }
    with pytest.raises(bg.ConfigurationError, match="model name"):
        request_from_run(PROMPT, {"_type": "fake"}, {})


def test_usage_metadata_cache_and_reasoning_buckets() -> None:
    def result(message: AIMessage, llm_output: dict[str, Any] | None = None) -> LLMResult:
        return LLMResult(generations=[[ChatGeneration(message=message)]], llm_output=llm_output)

    anthropic = reply("x", 100, 10, cache_read=60, cache_creation=30, ephemeral_1h_input_tokens=10)
    assert usage_from_result(result(anthropic)) == bg.Usage(
        input_tokens=10,
        cache_read_tokens=60,
        cache_write_tokens=20,
        cache_write_1h_tokens=10,
        output_tokens=10,
    )
    priority = reply("x", 50, 40, priority_cache_read=20, reasoning=30)
    assert usage_from_result(result(priority)) == bg.Usage(
        input_tokens=30, cache_read_tokens=20, output_tokens=40, reasoning_tokens=30
    )
    raw = {"token_usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    assert usage_from_result(result(AIMessage("x"), raw)) == bg.Usage(input_tokens=12, output_tokens=3)
    with pytest.raises(bg.UsageError):
        usage_from_result(result(AIMessage("x")))
    with pytest.raises(bg.UsageError):
        usage_from_result(result(reply("x", 10, 1, cache_read=11)))


def test_a_messages_own_provider_usage_is_its_bill() -> None:
    """``usage_metadata`` carries tokens only: the provider's usage in ``response_metadata`` (as
    langchain-anthropic and langchain-openai's chat completions put it) is read by its wire format's
    parser, so server-tool requests and audio tokens are charged; one that disagrees with
    ``usage_metadata`` (stream chunks merged into it) is not used."""
    wire = {"input_tokens": 40, "output_tokens": 9, "cache_read_input_tokens": 60,
            "server_tool_use": {"web_search_requests": 2}}  # fmt: skip
    claude = reply("x", 100, 9, cache_read=60)
    claude.response_metadata = {"model_provider": "anthropic", "model": "claude-sonnet-4-5", "usage": wire}
    assert usage_from_message(claude) == bg.Usage(
        input_tokens=40, cache_read_tokens=60, output_tokens=9, web_search_calls=2
    )
    audio = {"prompt_tokens": 30, "completion_tokens": 50, "total_tokens": 80,
             "prompt_tokens_details": {"audio_tokens": 20},
             "completion_tokens_details": {"audio_tokens": 45}}  # fmt: skip
    spoken = reply("x", 30, 50)
    spoken.response_metadata = {"model_provider": "openai", "token_usage": audio}
    assert usage_from_message(spoken) == bg.Usage(
        input_tokens=10, input_audio_tokens=20, output_tokens=5, output_audio_tokens=45
    )
    merged = reply("x", 100, 9, cache_read=60)
    merged.response_metadata = {"usage": {**wire, "input_tokens": 80}}  # (disagrees: not used)
    assert usage_from_message(merged) == bg.Usage(input_tokens=40, cache_read_tokens=60, output_tokens=9)


def test_a_bad_scope_kind_fails_when_the_handler_is_built() -> None:
    with pytest.raises(bg.ConfigurationError, match="scope kind"):
        BudgetCallbackHandler(bg.Guard("memory://"), **{"User Id": "x"})


def test_a_stream_dropped_after_some_chunks_is_charged_what_it_received() -> None:
    guard, events = make()
    model = UsageChat(max_tokens=100, replies=[reply("seven eleven thirteen", 25, 3)])
    stream = model.stream(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="kim")]})
    assert next(stream).content == "seven "
    stream.close()  # the consumer stops reading: LangChain reports the run as failed, with the chunks

    est = bg.estimate({"model": "gpt-4o-mini", "messages": OPENAI_PROMPT, "max_completion_tokens": 100})
    streamed = bg.count_text_tokens("seven ", "gpt-4o-mini")
    partial = bg.Usage(input_tokens=est.input_tokens, output_tokens=streamed)
    assert [e.kind for e in events] == ["reserved", "committed"]
    assert events[-1].actual == bg.cost("gpt-4o-mini", partial)
    assert spent(guard, "user:kim") == (bg.to_nano(bg.cost("gpt-4o-mini", partial)), 0)


def test_a_run_that_failed_before_any_chunk_is_released() -> None:
    guard, events = make()
    model = UsageChat(replies=[Overloaded("overloaded")])
    with pytest.raises(Overloaded):
        list(model.stream(PROMPT, config={"callbacks": [BudgetCallbackHandler(guard, user="lee")]}))
    assert [e.kind for e in events] == ["reserved", "released"]
    assert spent(guard, "user:lee") == (0, 0)


# -- a refused run of a batch: its siblings were never sent ---------------------------------------


def short_estimate(messages: list[dict[str, Any]] = OPENAI_PROMPT) -> bg.Estimate:
    return bg.estimate({"model": "gpt-4o-mini", "messages": messages, "max_completion_tokens": 100})


def limit_of(short: bg.Estimate, times: int) -> str:
    """A user limit that admits ``times`` short runs, not one more, and never a LONG run."""
    nano = bg.to_nano(short.cost)
    return str(bg.to_usd(nano * times + nano // 2))


class Watched(BudgetCallbackHandler):
    """The handler; ``refused`` is set once it has handled a refusal (and released its batch)."""

    def __init__(self, guard: bg.Guard, **scopes: Any) -> None:
        super().__init__(guard, **scopes)
        self.refused = threading.Event()

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().on_chat_model_start(*args, **kwargs)
        except bg.BudgetExceededError:
            self.refused.set()
            raise


def test_a_refused_run_of_a_batch_releases_the_runs_started_before_it() -> None:
    short = short_estimate()
    guard, events = make(usd=limit_of(short, 1))
    model = UsageChat(max_tokens=100, replies=[reply("2, 3, 5", 21, 7)])
    handler = BudgetCallbackHandler(guard, user="max")

    with pytest.raises(bg.BudgetExceededError):
        model.generate([PROMPT, LONG, PROMPT], callbacks=[handler])  # the third never starts

    assert model.sent == []
    assert [e.kind for e in events] == ["reserved", "refused", "released"]
    assert events[2].reason == "NotSent" and events[2].estimated == short.cost
    assert spent(guard, "user:max") == (0, 0)
    assert spent(guard, "global") == (0, 0)
    model.invoke(PROMPT, config={"callbacks": [handler]})  # the released hold no longer blocks it
    cost = bg.to_nano(bg.cost("gpt-4o-mini", bg.Usage(input_tokens=21, output_tokens=7)))
    assert spent(guard, "user:max") == (cost, 0)


def test_a_refused_prompt_of_a_completion_model_batch_releases_its_siblings() -> None:
    short = short_estimate([{"role": "user", "content": "Name three primes."}])
    guard, events = make(usd=limit_of(short, 1))
    llm = UsageLLM(max_tokens=100, replies=[("2, 3, 5", 12, 7)])
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="nia")]}

    with pytest.raises(bg.BudgetExceededError):
        llm.batch(["Name three primes.", "Name three primes. " * 400], config=config)  # one generate call

    assert llm.sent == []
    assert [e.kind for e in events] == ["reserved", "refused", "released"]
    assert spent(guard, "user:nia") == (0, 0)
    assert llm.invoke("Name three primes.", config=config) == "2, 3, 5"
    cost = bg.to_nano(bg.cost("gpt-4o-mini", bg.Usage(input_tokens=12, output_tokens=7)))
    assert spent(guard, "user:nia") == (cost, 0)


async def test_an_async_batch_releases_siblings_reserved_before_and_after_the_refusal() -> None:
    fewer = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Two primes?"}]
    first, late = short_estimate(), short_estimate(fewer)
    assert first.cost != late.cost
    first_held, first_released, late_released = threading.Event(), threading.Event(), threading.Event()

    def order(event: bg.Event) -> None:
        """The runs start together in threads: make one hold before the refusal, one after it."""
        if event.kind == "reserved" and event.estimated == first.cost:
            first_held.set()
        elif event.kind == "refused":
            first_held.wait(10)
        elif event.kind == "reserved" and event.estimated == late.cost:
            first_released.wait(10)  # the batch is given up by now: this hold comes late
        elif event.kind == "released":
            (first_released if event.estimated == first.cost else late_released).set()

    guard, events = make(usd=str(bg.to_usd(bg.to_nano(first.cost) + bg.to_nano(late.cost))), hook=order)
    model = UsageChat(max_tokens=100)
    prompts = [PROMPT, LONG, [SystemMessage("You are terse."), HumanMessage("Two primes?")]]

    with pytest.raises(bg.BudgetExceededError):
        await model.agenerate(prompts, callbacks=[BudgetCallbackHandler(guard, user="oz")])

    assert await asyncio.to_thread(late_released.wait, 10)  # the late start finishes in its thread
    assert model.sent == []
    assert sorted(e.kind for e in events) == ["refused", "released", "released", "reserved", "reserved"]
    assert spent(guard, "user:oz") == (0, 0)


async def test_an_async_completion_model_batch_releases_its_siblings() -> None:
    short = short_estimate([{"role": "user", "content": "Name three primes."}])
    released = threading.Event()
    guard, events = make(usd=limit_of(short, 1), hook=lambda e: e.kind == "released" and released.set())
    llm = UsageLLM(max_tokens=100)
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="ray")]}

    with pytest.raises(bg.BudgetExceededError):
        await llm.abatch(["Name three primes. " * 400, "Name three primes."], config=config)

    assert await asyncio.to_thread(released.wait, 10)  # before or after the refusal, it is released
    assert llm.sent == []
    assert sorted(e.kind for e in events) == ["refused", "released", "reserved"]
    assert spent(guard, "user:ray") == (0, 0)


def test_a_refused_batch_leaves_a_concurrent_run_on_the_same_handler_alone() -> None:
    short = short_estimate()
    held = threading.Event()
    guard, events = make(usd=limit_of(short, 2), hook=lambda _: held.set())
    handler = Watched(guard, user="pat")
    in_flight = UsageChat(max_tokens=100, replies=[reply("7", 21, 2)], gate=handler.refused)
    model = UsageChat(max_tokens=100)

    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(in_flight.invoke, PROMPT, config={"callbacks": [handler]})  # top level too
        assert held.wait(10)  # it holds its estimate and waits in the model until the refusal is handled
        with pytest.raises(bg.BudgetExceededError):
            model.generate([PROMPT, LONG], callbacks=[handler])
        assert other.result(10).content == "7"

    assert [e.kind for e in events] == ["reserved", "reserved", "refused", "released", "committed"]
    assert events[3].reservation_id == events[1].reservation_id  # the batch's run, not the other
    cost = bg.to_nano(bg.cost("gpt-4o-mini", bg.Usage(input_tokens=21, output_tokens=2)))
    assert spent(guard, "user:pat") == (cost, 0)


class HoldBack(BaseCallbackHandler):
    """Lets gpt-4o runs start only once ``ready`` is set."""

    raise_error = True

    def __init__(self, ready: threading.Event) -> None:
        self.ready = ready

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        if kwargs["invocation_params"]["model"] == "gpt-4o":
            self.ready.wait(10)


def test_a_refusal_never_releases_a_parallel_branch_in_flight() -> None:
    held = threading.Event()
    guard, events = make(usd="0.01", hook=lambda _: held.set())
    handler = Watched(guard, user="quin")
    cheap = UsageChat(max_tokens=100, replies=[reply("cheap", 20, 5)], gate=handler.refused)
    dear = UsageChat(model="gpt-4o", max_tokens=4000)  # $0.04 worst case: refused
    both = RunnableParallel(cheap=cheap, dear=dear)  # both runs are children of the parallel's run

    with pytest.raises(bg.BudgetExceededError):
        both.invoke(PROMPT, config={"callbacks": [HoldBack(held), handler]})

    assert [(e.kind, e.model) for e in events] == [
        ("reserved", "gpt-4o-mini"),
        ("refused", "gpt-4o"),
        ("committed", "gpt-4o-mini"),
    ]
    cost = bg.to_nano(bg.cost("gpt-4o-mini", bg.Usage(input_tokens=20, output_tokens=5)))
    assert spent(guard, "user:quin") == (cost, 0)


class TextIds(BudgetCallbackHandler):
    """Passes each run's id on as text: a caller's own ids, not LangChain's UUIDs."""

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        super().on_chat_model_start(serialized, messages, run_id=str(run_id), **kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: Any, **kwargs: Any) -> None:
        super().on_llm_end(response, run_id=str(run_id), **kwargs)


def test_a_run_id_that_is_no_uuid_is_a_run_as_any_other() -> None:
    """A review found ``run_id.int`` read from every id: ``on_llm_end(..., run_id="abc")`` raised."""
    guard, events = make()
    handler = TextIds(guard, user="alice")
    handler.on_llm_end(LLMResult(generations=[]), run_id="abc")  # (a run it never saw: nothing to settle)
    UsageChat(max_tokens=50, replies=[reply("2, 3, 5", 21, 7)]).invoke(
        PROMPT, config={"callbacks": [handler]}
    )
    actual = bg.cost("gpt-4o-mini", bg.Usage(input_tokens=21, output_tokens=7))
    assert kinds(events) == [("reserved", "gpt-4o-mini"), ("committed", "gpt-4o-mini")]
    assert spent(guard, "user:alice") == (bg.to_nano(actual), 0)

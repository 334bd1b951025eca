"""Red-team of the hard limit, prices and worst cases: units the providers bill that budgetguard reserves
or charges below the bill (a request field that changes a fee, a prompt-size tier, a billed pass).

The providers' published prices are constants here, each with its source; the recorded call of
``../shared/realworld`` (read in place) grounds the compaction case. Each hole was a strict xfail on main;
each is fixed now, its test beside one for the other direction (what must not be reserved or charged).
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from typing import Any

import pytest

import budgetguard
from budgetguard import Estimator, Event, Pass, Usage, price_book
from budgetguard.testing import MockProvider
from tests.redteam import recorded, sdk_client
from tests.test_endpoints_mock import mock, server  # noqa: F401 (the mock's fixtures)

NANO = Decimal(10**9)


def usd_nano(amount: str) -> int:
    return math.ceil(Decimal(amount) * NANO)


def wrapped_call(mock: MockProvider, method: str, **request: Any) -> tuple[Event, dict[str, Any]]:  # noqa: F811
    """One call through ``guard.wrap`` (the body as sent is what the guard reads): its committed event
    and the usage the mock reported."""
    with sdk_client(mock, wrap=True) as (guarded, client):
        resource: Any = client
        for name in method.split("."):
            resource = getattr(resource, name)
        resource(**request)
    (usage,) = mock.usages
    return guarded.settled(), usage


# -- Chat Completions search models: a web search per request, in no usage field -------------------------

# https://platform.openai.com/docs/pricing (built-in tools): web search $10.00 / 1k calls at the least
# (gpt-4o-search-preview and gpt-4o-mini-search-preview: $25.00 / 1k; gpt-5-search-api: $10.00 / 1k).
LEAST_SEARCH_FEE = "0.01"


def test_a_chat_search_model_is_charged_its_web_search(mock: MockProvider) -> None:  # noqa: F811
    committed, usage = wrapped_call(
        mock,
        "chat.completions.create",
        model="gpt-4o-search-preview",
        messages=[{"role": "user", "content": "What day is today?"}],
        web_search_options={"search_context_size": "low"},
        max_tokens=50,
    )
    tokens = price_book.cost_nano("gpt-4o-search-preview", Usage.from_response({"usage": usage}))
    least_bill = tokens + usd_nano(LEAST_SEARCH_FEE)
    assert committed.actual is not None and committed.estimated is not None
    assert committed.actual * NANO >= least_bill, (committed.actual, least_bill)
    assert committed.estimated * NANO >= least_bill


@pytest.mark.parametrize(
    ("model", "fee"),
    [("gpt-4o-search-preview", "35"), ("gpt-4o-mini-search-preview", "27.5"), ("gpt-5-search-api", "10")],
)
def test_a_chat_search_reserves_one_search_at_its_fee_and_a_plain_chat_none(model: str, fee: str) -> None:
    """One search a request (not the default count of a tool the model calls at will), at the model's
    fee for the default (medium) search context; a chat model that does not search reserves no search."""
    request = {"messages": [{"role": "user", "content": "What day is today?"}], "max_tokens": 50}
    est = budgetguard.estimate({**request, "model": model})
    assert est.tool_calls == (("web_search", 1),) and est.price.base.web_search == Decimal(fee)
    assert budgetguard.estimate({**request, "model": "gpt-4o"}).tool_calls == ()


# OpenAI bills the gpt-4o search models' search by web_search_options.search_context_size, per 1k calls:
# gpt-4o-search-preview $30 / $35 / $50, gpt-4o-mini-search-preview $25 / $27.50 / $30 (low / medium /
# high; medium when not set). OpenRouter lists gpt-4o-search-preview at $35 / 1k (the medium fee).
SEARCH_FEES = {
    "gpt-4o-search-preview": {"low": "30", "medium": "35", "high": "50"},
    "gpt-4o-mini-search-preview": {"low": "25", "medium": "27.5", "high": "30"},
}


@pytest.mark.parametrize("model", sorted(SEARCH_FEES))
@pytest.mark.parametrize("size", ["low", "medium", "high", None])
def test_a_chat_search_is_reserved_and_charged_at_its_search_context_size(
    model: str, size: str | None
) -> None:
    """The request's size sets the fee, reserved and charged (it was $25 at every size: $50 billed for
    high); the model's own price (``cost``, ``price_book``, ``budgetguard prices``) says the medium fee."""
    fee = Decimal(SEARCH_FEES[model][size or "medium"])
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Today?"}],
        "max_tokens": 5,
    }
    if size is not None:
        request["web_search_options"] = {"search_context_size": size}
    est = budgetguard.estimate(request)
    assert est.price.base.web_search == fee
    usage = Usage(input_tokens=est.input_tokens, output_tokens=5, web_search_calls=1)
    assert est.cost_nano == price_book.cost_nano(est.price, usage)
    guard = budgetguard.Guard("memory://")
    bill = price_book.cost_nano(model, dataclasses.replace(usage, web_search_calls=0)) + usd_nano(
        str(fee / 1000)
    )
    assert guard.actual(model, usage, est, est.variant)[budgetguard.Unit.USD] == bill
    assert price_book.get(model).base.web_search == Decimal(SEARCH_FEES[model]["medium"])


def test_the_recorded_chat_search_is_charged_its_search() -> None:
    """The recorded gpt-4o-search-preview call (``067``, read in place) reports no search in its usage."""
    response = recorded("067-openai-chat.json")["response"]
    assert Usage.from_response(response).web_search_calls == 1
    plain = {**response, "model": "gpt-4o-2024-08-06"}
    assert Usage.from_response(plain).web_search_calls == 0


# -- Responses web_search_preview on a non-reasoning model: $25 / 1k calls, not $10 -------------------------

# https://platform.openai.com/docs/pricing (built-in tools): "Web search preview (non-reasoning models):
# $25.00 / 1k calls, search content tokens are free" (gpt-4o, gpt-4.1...); the GA web_search tool and
# reasoning models: $10.00 / 1k calls plus the search content tokens.
PREVIEW_FEE = "0.025"


def test_web_search_preview_on_a_non_reasoning_model_is_charged_its_fee(mock: MockProvider) -> None:  # noqa: F811
    committed, usage = wrapped_call(
        mock,
        "responses.create",
        model="gpt-4.1",
        input="What is the news today?",
        tools=[{"type": "web_search_preview"}],
        max_tool_calls=1,
        max_output_tokens=100,
    )
    tokens = price_book.cost_nano("gpt-4.1", Usage.from_response({"usage": usage}))
    bill = tokens + usd_nano(PREVIEW_FEE)  # (its search content tokens are free: none in the mock's usage)
    assert committed.actual is not None
    assert committed.actual * NANO >= bill, (committed.actual, Decimal(bill) / NANO)


def test_web_search_preview_on_a_reasoning_model_and_the_ga_tool_keep_the_10_fee() -> None:
    """The other direction: a reasoning model's preview search, and the GA web_search on any model,
    are $10 / 1k calls (search content tokens billed as input instead)."""
    for model, kind in (("gpt-5", "web_search_preview"), ("gpt-4.1", "web_search")):
        request = {"model": model, "input": "News?", "tools": [{"type": kind}], "max_tool_calls": 1}
        est = budgetguard.estimate({**request, "max_output_tokens": 100})
        assert est.price.base.web_search == Decimal(10), (model, kind)


def test_a_preview_search_on_a_non_reasoning_model_reserves_no_search_content() -> None:
    """Its search content is free (not in the usage: 11 prompt tokens in the recorded chat search
    ``067``), so no pass re-reading results is reserved for it; a GA search beside it is billed its
    content, and then the results are reserved as before."""
    base = {"model": "gpt-4.1", "input": "News?", "max_output_tokens": 100, "max_tool_calls": 1}
    preview = budgetguard.estimate({**base, "tools": [{"type": "web_search_preview"}]})
    assert (preview.tool_results, preview.tool_pass_tokens) == ((), 0)
    both = budgetguard.estimate({**base, "tools": [{"type": "web_search_preview"}, {"type": "web_search"}]})
    assert both.tool_results == ((23_000, 1),)
    chat = {"messages": [{"role": "user", "content": "What day is today?"}], "max_tokens": 50}
    assert budgetguard.estimate({**chat, "model": "gpt-4o-search-preview"}).tool_pass_tokens == 0
    assert budgetguard.estimate({**chat, "model": "gpt-5-search-api"}).tool_results == ((23_000, 1),)


# -- Code interpreter containers: the fee follows the container's memory ----------------------------------

# https://platform.openai.com/docs/pricing (built-in tools), code interpreter per container:
# 1 GB (default) $0.03, 4 GB $0.12, 16 GB $0.48, 64 GB $1.92.
CONTAINER_FEES = {"1g": "0.03", "4g": "0.12", "16g": "0.48", "64g": "1.92"}


def interpreter_request(memory: str) -> dict[str, Any]:
    return {
        "model": "gpt-4.1",
        "input": "Fit a model to the uploaded data.",
        "max_output_tokens": 1000,
        "max_tool_calls": 1,
        "tools": [{"type": "code_interpreter", "container": {"type": "auto", "memory_limit": memory}}],
    }


@pytest.mark.parametrize("memory", ["4g", "16g", "64g"])
def test_a_larger_code_interpreter_container_is_reserved_its_fee(memory: str) -> None:
    small = budgetguard.estimate(interpreter_request("1g"))
    large = budgetguard.estimate(interpreter_request(memory))
    extra = usd_nano(CONTAINER_FEES[memory]) - usd_nano(CONTAINER_FEES["1g"])
    assert large.cost_nano - small.cost_nano >= extra, (small.cost, large.cost)


def test_a_larger_code_interpreter_container_is_charged_its_fee() -> None:
    """The charge: the response names the container, not its size; the call is charged at the price
    its estimate reserved at (``Estimate.price``, with the request's container fee), as the guard does."""
    est = budgetguard.estimate(interpreter_request("16g"))
    response = {
        "usage": {"input_tokens": 100, "output_tokens": 10, "input_tokens_details": {"cached_tokens": 0}},
        "output": [{"type": "code_interpreter_call", "id": "ci_1", "container_id": "cntr_1"}] * 2,
    }
    usage = Usage.from_response(response)
    assert usage.code_execution_sessions == 1
    tokens = price_book.cost_nano("gpt-4.1", Usage(input_tokens=100, output_tokens=10))
    assert price_book.cost_nano(est.price, usage) == tokens + usd_nano(CONTAINER_FEES["16g"])


def test_a_default_container_keeps_its_fee_and_an_unknown_size_is_an_error() -> None:
    """The other direction: a 1 GB (or unsized) container is reserved at $0.03 and the model's own price
    is used; a size with no published price is refused, never priced as 1 GB."""
    for request in (
        interpreter_request("1g"),
        {**interpreter_request("1g"), "tools": [{"type": "code_interpreter"}]},
    ):
        est = budgetguard.estimate(request)
        assert est.price is price_book.get("gpt-4.1") and est.tool_calls == (("code_execution", 1),)
    with pytest.raises(budgetguard.ConfigurationError, match="memory_limit '2g'"):
        budgetguard.estimate(interpreter_request("2g"))


# -- Claude Sonnet 4: requests above 200k input tokens are billed at the long-context rates ----------------

# https://docs.claude.com/en/docs/about-claude/pricing#long-context-pricing: Claude Sonnet 4 (and 4.5)
# with the 1M context window, input above 200k tokens: $6 / MTok input, $22.50 / MTok output, for the
# whole request (Anthropic's 1M-context announcement for Sonnet 4, 2025-08-12, gives the same rates).
SONNET_4 = "claude-sonnet-4-20250514"
LONG_INPUT, LONG_OUTPUT = Decimal(6), Decimal("22.5")


def long_context_nano(input_tokens: int, output_tokens: int) -> int:
    return math.ceil((input_tokens * LONG_INPUT + output_tokens * LONG_OUTPUT) * 1000)


@pytest.mark.parametrize("model", [SONNET_4, "claude-sonnet-4-0"])
def test_sonnet_4_above_200k_input_is_charged_and_reserved_at_the_long_context_rates(model: str) -> None:
    usage = Usage(input_tokens=300_000, output_tokens=2_000)
    assert price_book.cost_nano(model, usage, provider="anthropic") >= long_context_nano(300_000, 2_000)
    request = {"model": model, "max_tokens": 2_000, "messages": [{"role": "user", "content": "..."}]}
    est = Estimator()(request, provider="anthropic", input_tokens=300_000)  # (an exact count_tokens)
    assert est.cost_nano >= long_context_nano(300_000, 2_000), est


def test_sonnet_4_5_above_200k_input_has_its_tier() -> None:
    """The same check passes for Sonnet 4.5, whose tier genai-prices has: the hole is Sonnet 4's data."""
    usage = Usage(input_tokens=300_000, output_tokens=2_000)
    assert price_book.cost_nano("claude-sonnet-4-5", usage, provider="anthropic") == long_context_nano(
        300_000, 2_000
    )


@pytest.mark.parametrize(
    ("model", "provider"),
    [("us.anthropic.claude-sonnet-4-20250514-v1:0", "aws"), ("claude-sonnet-4@20250514", "google")],
)
def test_sonnet_4_on_bedrock_and_vertex_has_the_long_context_tier(model: str, provider: str) -> None:
    usage = Usage(input_tokens=300_000, output_tokens=2_000)
    assert price_book.cost_nano(model, usage, provider=provider) == long_context_nano(300_000, 2_000)


@pytest.mark.parametrize("model", [SONNET_4, "claude-sonnet-4-6", "claude-sonnet-4-5"])
def test_the_long_context_tier_is_sonnet_4s_alone_and_above_200k_only(model: str) -> None:
    """The other direction: 200k input is still the base price, and Sonnet 4.6 (one price over its whole
    1M window) gets no tier from Sonnet 4's name."""
    at_threshold = Usage(input_tokens=200_000, output_tokens=2_000)
    base = math.ceil((200_000 * 3 + 2_000 * 15) * 1000)
    assert price_book.cost_nano(model, at_threshold, provider="anthropic") == base
    long = Usage(input_tokens=300_000, output_tokens=2_000)
    flat = model == "claude-sonnet-4-6"
    assert (
        price_book.cost_nano(model, long, provider="anthropic") == long_context_nano(300_000, 2_000)
    ) != flat


# The 1M context beta (context-1m-2025-08-07) of Sonnet 4 / 4.5 was retired on Anthropic's API on
# 2026-04-30: a request over 200k tokens errors (platform release notes; the Sonnet 4.5 model page: 200K).
@pytest.mark.parametrize(("model", "window"), [(SONNET_4, 200_000), ("claude-sonnet-4-5", 200_000),
                                               ("claude-sonnet-4-6", 1_000_000)])  # fmt: skip
def test_an_unseen_input_on_sonnet_4_is_bounded_by_its_200k_window(model: str, window: int) -> None:
    """A document named by file_id is reserved at the model's window: Sonnet 4 / 4.5 at 200k (it was 1M
    tokens at the long-context $6: $6.02 against a bill of at most ~$0.62)."""
    document = {"type": "document", "source": {"type": "file", "file_id": "file_abc"}}
    content = [document, {"type": "text", "text": "Summarise."}]
    request = {"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": content}]}
    est = Estimator()(request)
    assert est.unseen and est.price.context_window == window
    assert est.input_tokens == window, est


# -- Anthropic compaction: a billed pass the estimate leaves out ------------------------------------------


def compaction_fixture() -> dict[str, Any]:
    return recorded("015-anthropic-messages.json")


def test_a_compacting_request_reserves_its_compaction_pass() -> None:
    recorded = compaction_fixture()
    request, usage = recorded["request"], recorded["response"]["usage"]
    compaction, message = usage["iterations"]
    assert (compaction["type"], message["type"]) == ("compaction", "message")
    counted = compaction["input_tokens"]  # what count_tokens says of the request: the whole input
    est = Estimator()(request, input_tokens=counted)
    bill = worst_compaction_bill(recorded)
    assert est.cost_nano >= bill, (est.cost, Decimal(bill) / NANO)


def worst_compaction_bill(recorded: dict[str, Any]) -> int:
    """The recorded compacting call's bill, had its reply run to max_tokens (the reservation's case)."""
    request, usage = recorded["request"], recorded["response"]["usage"]
    compaction, message = usage["iterations"]
    summary = Usage(compaction["input_tokens"], output_tokens=compaction["output_tokens"])
    worst = Usage(
        input_tokens=message["input_tokens"],
        output_tokens=request["max_tokens"],
        passes=(Pass("compaction", None, summary),),
    )
    return price_book.cost_nano(request["model"], worst, provider="anthropic")


def test_a_compaction_pass_is_reserved_only_where_its_trigger_can_fire() -> None:
    """The other direction: below the trigger (the request's, else Anthropic's default 150k) no pass is
    reserved; above it one, and the recorded call's reservation stays within ~2x its worst bill (the
    message is reserved at the whole input: what the compacted context keeps is not documented)."""
    recorded_call = compaction_fixture()
    request, usage = recorded_call["request"], recorded_call["response"]["usage"]
    assert Estimator()(request, input_tokens=49_999).passes == ()
    default = {**request, "context_management": {"edits": [{"type": "compact_20260112"}]}}
    assert Estimator()(default, input_tokens=149_999).passes == ()
    (compacting,) = Estimator()(default, input_tokens=150_000).passes
    assert compacting.kind == "compaction" and compacting.usage.input_tokens == 150_000
    counted = usage["iterations"][0]["input_tokens"]
    assert Estimator()(request, input_tokens=counted).cost_nano <= 2.1 * worst_compaction_bill(recorded_call)


@pytest.mark.parametrize("value", [50_000.0, "50000", -1, True])
def test_an_unreadable_compaction_trigger_is_refused_not_read_as_the_default(value: object) -> None:
    """A trigger value read as the default 150k left a 60k-input request with no compaction pass
    reserved: it is a ConfigurationError that names the value; a trigger with no value is the default."""
    request = compaction_fixture()["request"]
    edit = {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": value}}
    unreadable = {**request, "context_management": {"edits": [edit]}}
    with pytest.raises(budgetguard.ConfigurationError, match=f"trigger value .* got {value!r}"):
        Estimator()(unreadable, input_tokens=60_000)
    edit["trigger"] = {"type": "input_tokens"}
    assert Estimator()(unreadable, input_tokens=149_999).passes == ()


# -- OpenAI cache writes: gpt-5.6 bills prompt-cache writes at $5 / MTok, above its $4 input --------------


@pytest.mark.parametrize("name", ["069-openai-chat.json", "084-openai-responses.json"])
def test_an_openai_cache_write_is_reserved_at_its_rate(name: str) -> None:
    fx = recorded(name)
    response = fx["response"]
    usage = Usage.from_response(response)
    assert usage.cache_write_tokens > 0
    bill = price_book.cost_nano(response["model"], usage, provider="openai")
    key = "max_completion_tokens" if "messages" in fx["request"] else "max_output_tokens"
    request = {**fx["request"], key: usage.output_tokens}  # the recorded reply, as the request's max
    est = budgetguard.estimate(request, provider="openai")
    assert est.cost_nano >= bill, (est.cost, Decimal(bill) / NANO)


def test_an_openai_input_is_reserved_at_the_write_rate_only_where_writes_are_dearer() -> None:
    """The other direction: gpt-4.1 bills cache writes at its input rate, so its input is reserved at
    input; gpt-5.6's at its $5 write rate (not more), with no cache option in the request."""
    request = {"input": "Say hello.", "max_output_tokens": 0}
    plain = budgetguard.estimate({**request, "model": "gpt-4.1"})
    assert plain.cache_write is None
    assert plain.cost_nano == price_book.cost_nano("gpt-4.1", Usage(input_tokens=plain.input_tokens))
    dear = budgetguard.estimate({**request, "model": "gpt-5.6"})
    assert dear.cache_write == "5m"
    assert dear.cost_nano == price_book.cost_nano("gpt-5.6", Usage(cache_write_tokens=dear.input_tokens))


@pytest.mark.parametrize(
    ("model", "provider"),
    [("claude-sonnet-4-5", None), ("anthropic/claude-sonnet-4.5", "openrouter"), ("kimi-k3", "moonshotai"),
     ("MiniMax-M2", "minimax")],
)  # fmt: skip
def test_a_model_that_writes_the_cache_only_when_asked_is_not_reserved_at_the_write_rate(
    model: str, provider: str | None
) -> None:
    """Claude in the OpenAI wire format (Anthropic's OpenAI-compatible endpoint, OpenRouter) writes no
    cache unless asked, nor are Kimi or MiniMax known to: their input was reserved at the dearer write
    rate (x1.16 to x1.97 the bill) because their write rate is above input; OpenAI's gpt-5.6 on
    OpenRouter still is (it writes unasked)."""
    request = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 0}
    est = budgetguard.estimate(request, provider=provider, api="openai")
    assert est.cache_write is None
    assert est.cost_nano == price_book.cost_nano(est.price, Usage(input_tokens=est.input_tokens))
    openai = budgetguard.estimate({**request, "model": "openai/gpt-5.6-sol"}, provider="openrouter")
    assert openai.cache_write == "5m"


@pytest.mark.parametrize(
    ("model", "provider"), [("claude-sonnet-4-5", None), ("anthropic/claude-sonnet-4.5", "openrouter")]
)
def test_claude_in_the_openai_wire_format_asking_for_caching_is_reserved_at_the_write_rate(
    model: str, provider: str | None
) -> None:
    """Where a request in the OpenAI wire format asks for caching (``cache_control`` on a content part, as
    OpenRouter and LiteLLM pass to Claude), its input is reserved at the write rate it asks for (a review
    found it reserved as plain input once the rule stopped applying to every model)."""
    part = {"type": "text", "text": "row " * 500, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    request = {"model": model, "messages": [{"role": "user", "content": [part]}], "max_tokens": 0}
    est = budgetguard.estimate(request, provider=provider, api="openai")
    assert est.cache_write == "1h"
    assert (
        est.cost_nano
        > budgetguard.estimate(
            {**request, "messages": [{"role": "user", "content": [{"type": "text", "text": part["text"]}]}]},
            provider=provider,
            api="openai",
        ).cost_nano
    )


# -- Anthropic: a cache breakpoint inside a tool result's content (fixed here) -----------------------------


def test_a_cache_breakpoint_inside_a_tool_result_is_reserved_as_a_cache_write() -> None:
    """A ``cache_control`` on a text block of a tool result's content (the SDK's ``TextBlockParam`` takes
    one there) writes the prefix to the cache, at 2x input for a 1-hour TTL: the estimate prices the input
    so, as for a breakpoint on a top-level block (it priced it as plain input before)."""
    cached = {"type": "text", "text": "row " * 5000, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Look it up."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [cached]}]},
        ],
    }
    est = budgetguard.estimate(request)
    assert est.cache_write == "1h"
    written = Usage(cache_write_1h_tokens=est.input_tokens, output_tokens=100)
    assert est.cost_nano == price_book.cost_nano("claude-sonnet-4-5", written)


# -- Responses hosted shell: a container the provider runs commands in, results fed back -------------------


@pytest.mark.parametrize(
    "environment", [{"type": "container_auto"}, {"type": "container_reference", "container_id": "cntr_1"}]
)
def test_a_hosted_shell_is_reserved_as_a_code_container(environment: dict[str, Any]) -> None:
    base = {"model": "gpt-5.4", "input": "Run the test suite and fix what fails.", "max_output_tokens": 2000}
    shell = budgetguard.estimate({**base, "tools": [{"type": "shell", "environment": environment}]})
    code = budgetguard.estimate(
        {**base, "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}
    )
    # the same worst case of calls and results (the two tools' definitions differ by a token of input)
    assert (shell.tool_calls, shell.tool_results) == (code.tool_calls, code.tool_results), (shell, code)
    assert shell.tool_pass_tokens >= code.tool_pass_tokens - 10 * abs(shell.input_tokens - code.input_tokens)
    assert shell.cost_nano >= code.cost_nano - usd_nano("0.03"), (
        shell.cost,
        code.cost,
    )  # (a referenced container: paid at creation)


def test_a_hosted_shell_call_is_charged_its_container_and_a_local_one_is_not() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 0}}
    hosted = {
        "type": "shell_call",
        "id": "sh_1",
        "environment": {"type": "container_reference", "container_id": "c"},
    }
    local = {"type": "shell_call", "id": "sh_2", "environment": {"type": "local"}}
    assert Usage.from_response({"usage": usage, "output": [hosted, hosted]}).code_execution_sessions == 1
    assert Usage.from_response({"usage": usage, "output": [local]}).code_execution_sessions == 0
    request = {"model": "gpt-5.4", "input": "ls", "max_output_tokens": 100}
    local_est = budgetguard.estimate(
        {**request, "tools": [{"type": "shell", "environment": {"type": "local"}}]}
    )
    assert local_est.tool_calls == () and local_est.tool_pass_tokens == 0
    big = {"type": "shell", "environment": {"type": "container_auto", "memory_limit": "64g"}}
    assert budgetguard.estimate({**request, "tools": [big]}).price.base.code_execution == Decimal(1920)

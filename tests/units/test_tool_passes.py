"""The passes server-side tools feed: a call that may make ``c`` tool calls may run ``c + 1`` passes, each
re-reading the request, the output so far and the results so far, capped at the model's context window.

Prices are registered here (a book without the price data) so that the figures are hand arithmetic:
$1 / $2 per million tokens in / out, $10 per thousand web searches, a 60k-token context window.
"""

from __future__ import annotations

from typing import Any

import pytest

from budgetguard import ConfigurationError, Estimator, PriceBook
from tests.guard.one_call import nano

HI = [{"role": "user", "content": "Hi"}]
SEARCH = {"type": "web_search_20250305", "name": "web_search"}
FETCH = {"type": "web_fetch_20250910", "name": "web_fetch"}
WINDOW = 60_000
SEARCH_FEE = 10_000_000  # $10 / 1k searches, in nano-USD per search


def book() -> PriceBook:
    prices = PriceBook(use_data=False)
    for model in ("claude-sonnet-4-5", "gpt-5"):
        prices.register(model, input="1", output="2", cache_write="1.25", web_search="10", file_search="2.5",
                        code_execution="30", context_window=WINDOW)  # fmt: skip
    prices.register("claude-in-house", input="1", output="2", web_search="10")  # no known window
    prices.register("claude-haiku-4-5", input="1", output="2", web_search="10", context_window=1_000_000,
                    tiers={100_000: {"input": "2", "output": "4"}})  # fmt: skip
    return prices


def claude(*tools: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": HI, "tools": list(tools), **extra}


def gpt(*tools: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5", "input": "Hi", "max_output_tokens": 100, "tools": list(tools), **extra}


def shown(est: Any) -> int:
    """The input the request itself shows: what the first pass reads."""
    return int(est.input_tokens - est.tool_pass_tokens)


def test_each_call_adds_a_pass_reading_the_request_the_output_and_the_results_so_far() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": 1000})
    est = estimator(claude({**SEARCH, "max_uses": 3}))
    first = shown(est)
    assert est.tool_pass_tokens == 3 * (first + 100) + (1 + 2 + 3) * 1000
    assert estimator(claude({**SEARCH, "max_uses": 0})).input_tokens == first  # no call, no pass
    assert est.tool_calls == (("web_search", 3),)
    assert est.cost_nano == nano((est.input_tokens, "1"), (100, "2")) + 3 * SEARCH_FEE
    assert est.usage.input_tokens == est.input_tokens  # what the reservation priced
    assert est.tool_results_defaulted == ()  # the caller set the result size


def test_a_tool_the_request_leaves_unbounded_runs_its_default_count_of_passes() -> None:
    est = Estimator(prices=book(), tool_calls={"web_search": 2})(claude(SEARCH))
    first = shown(est)
    assert est.tool_pass_tokens == (first + 100 + 23_000) + (first + 100 + 46_000)
    assert (est.tools_defaulted, est.tool_results_defaulted) == (("web_search",), ("web_search",))


def test_every_pass_is_capped_at_the_context_window() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": 20_000})
    est = estimator(claude({**SEARCH, "max_uses": 5}))
    first = shown(est)
    assert first + 100 + 40_000 < WINDOW < first + 100 + 60_000
    assert est.tool_pass_tokens == (first + 100 + 20_000) + (first + 100 + 40_000) + 3 * WINDOW


def test_none_reserves_the_context_window_for_every_pass_after_a_call() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": None})
    est = estimator(claude({**SEARCH, "max_uses": 2}))
    assert est.tool_pass_tokens == 2 * WINDOW
    assert est.tool_results_defaulted == ()  # the hard bound, not a calibrated size
    with pytest.raises(ConfigurationError, match="context_window"):
        estimator(claude({**SEARCH, "max_uses": 2}, model="claude-in-house"))


def test_without_a_known_window_the_passes_are_not_capped() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": 50_000})
    est = estimator(claude({**SEARCH, "max_uses": 2}, model="claude-in-house"))
    first = shown(est)
    assert est.tool_pass_tokens == (first + 100 + 50_000) + (first + 100 + 100_000)


def test_the_largest_results_come_first_and_a_fetch_is_bounded_by_its_max_content_tokens() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": 1000})
    est = estimator(claude({**SEARCH, "max_uses": 1}, {**FETCH, "max_uses": 1, "max_content_tokens": 5000}))
    first = shown(est)
    assert est.tool_pass_tokens == (first + 100 + 5000) + (first + 100 + 6000)
    assert est.tool_results_defaulted == ()
    fetched = estimator(claude({**FETCH, "max_uses": 1}))
    assert fetched.tool_pass_tokens == shown(fetched) + 100 + 25_000  # the calibrated page
    assert fetched.tool_results_defaulted == ("web_fetch",)


def test_the_output_bound_is_read_again_by_every_later_pass() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": 1000})
    short = estimator(claude({**SEARCH, "max_uses": 2}))
    longer = estimator(claude({**SEARCH, "max_uses": 2}, max_tokens=5100))
    assert longer.tool_pass_tokens - short.tool_pass_tokens == 2 * 5000


def test_the_passes_input_sets_the_prompt_size_tier_of_the_whole_call() -> None:
    """claude-haiku-4-5 is registered here with a dearer tier above 100k input tokens: the request alone
    is far below it, its passes are not."""
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": 20_000})
    est = estimator(claude({**SEARCH, "max_uses": 3}, model="claude-haiku-4-5"))
    assert shown(est) < 100_000 < est.input_tokens
    assert est.cost_nano == nano((est.input_tokens, "2"), (100, "4")) + 3 * SEARCH_FEE


def test_a_cached_request_reserves_its_passes_as_cache_writes_too() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"web_search": 1000})
    est = estimator(claude({**SEARCH, "max_uses": 1}, cache_control={"type": "ephemeral"}))
    assert est.usage.cache_write_tokens == est.input_tokens > shown(est)
    assert est.cost_nano == nano((est.input_tokens, "1.25"), (100, "2")) + SEARCH_FEE


def test_code_execution_runs_pay_one_session_and_feed_a_pass_each() -> None:
    estimator = Estimator(prices=book(), tool_result_tokens={"code_execution": 500})
    est = estimator(claude({"type": "code_execution_20250825", "name": "code_execution"}))
    first = shown(est)
    assert est.tool_calls == (("code_execution", 1),)  # one container session
    assert est.tool_pass_tokens == 10 * (first + 100) + 55 * 500  # 10 executions (the default)
    assert est.tools_defaulted == ("code_execution",)


def test_tool_search_and_mcp_servers_run_passes_without_a_fee() -> None:
    # (unseen_tokens=0: the MCP servers' own tool lists, unseen input, are not what this test measures)
    estimator = Estimator(prices=book(), tool_calls={"mcp": 1, "tool_search": 1}, unseen_tokens=0)
    mcp = estimator(claude(mcp_servers=[{"type": "url", "url": "https://mcp.example/mcp", "name": "docs"}]))
    assert (mcp.tool_calls, mcp.tool_pass_tokens) == ((), shown(mcp) + 100 + 5000)
    assert mcp.tool_results_defaulted == ("mcp",)
    found = estimator(claude({"type": "tool_search_tool_bm25_20251119", "name": "tool_search_tool_bm25"}))
    assert (found.tool_calls, found.tool_pass_tokens) == ((), shown(found) + 100 + 2000)
    assert found.cost_nano == nano((found.input_tokens, "1"), (100, "2"))


def test_responses_max_tool_calls_bounds_all_calls_together_at_the_largest_results() -> None:
    tools = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]},
             {"type": "code_interpreter", "container": {"type": "auto"}}]  # fmt: skip
    estimator = Estimator(prices=book(), tool_result_tokens={"file_search": 30_000})
    est = estimator(gpt(*tools, max_tool_calls=2))
    first = shown(est)
    assert est.tool_pass_tokens == (first + 100 + 30_000) + WINDOW  # two file searches, the largest
    assert dict(est.tool_calls) == {"web_search": 2, "code_execution": 1}  # fees: on the dearest tool
    assert est.tools_defaulted == ()
    # (unseen_tokens=0: the MCP server's tool list, unseen input, is not what this test measures)
    estimator = Estimator(prices=book(), tool_result_tokens={"file_search": 30_000}, unseen_tokens=0)
    unbounded = estimator(gpt({"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example"}))
    assert unbounded.tools_defaulted == ("mcp",)
    assert unbounded.tool_pass_tokens == 10 * (shown(unbounded) + 100) + 55 * 5000  # 10 calls (the default)


def test_a_request_without_server_tools_has_no_passes() -> None:
    est = Estimator(prices=book())(claude({"name": "weather", "input_schema": {"type": "object"}}))
    assert (est.tool_pass_tokens, est.tool_results_defaulted) == (0, ())
    searched_by_caller = Estimator(prices=book())(gpt({"type": "tool_search", "execution": "client"}))
    assert searched_by_caller.tool_pass_tokens == 0
    hosted = Estimator(prices=book())(gpt({"type": "tool_search"}))
    assert hosted.tool_pass_tokens == 5 * (shown(hosted) + 100) + 15 * 2000  # 5 searches (the default)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [({"web_searches": 1}, "unknown tool 'web_searches'"), ({"web_search": -1}, "non-negative"),
     ({"web_search": True}, "non-negative"), ({"web_search": 1.5}, "non-negative")],
)  # fmt: skip
def test_tool_result_tokens_are_checked(bounds: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Estimator(tool_result_tokens=bounds)

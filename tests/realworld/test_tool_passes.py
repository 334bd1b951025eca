"""Calls whose provider ran server-side tools and fed their results back are reserved at least their bill.

* Every recorded request of ``token_pairs.jsonl`` whose count covers tool passes (web search, web fetch,
  code execution, file search, tool search, MCP, advisor) is estimated at or above the input tokens the
  provider counted, and its reservation covers at least what that input costs (at the same price and
  variant: a long-context tier included).
* Every recorded response (``responses/*.json``) that used a server-side tool is reserved at or above
  what the provider billed for the whole call (``bills.billed_nano``: every unit, every pass).

Read in place from ``<repo>/../shared/realworld/fixtures`` (``BUDGETGUARD_REALWORLD_DIR`` overrides);
without it every test here skips, saying where it looked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from budgetguard import Estimate, Estimator, Usage, price_book
from tests.realworld.bills import billed_nano, final_body
from tests.realworld.conftest import ABSENT, load, realworld_dir, response_files
from tests.realworld.pairs import Pair, load_pairs, pairs_file

JSON = dict[str, Any]
SERVER_ITEMS = {
    "web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call", "mcp_call",
    "mcp_list_tools", "tool_search_call",
}  # fmt: skip


def _estimate(request: JSON, provider: str) -> Estimate:
    return Estimator()({k: v for k, v in request.items() if k != "stream"}, provider=provider, api=provider)


def _pairs() -> list[Any]:
    pairs = [pair for pair in load_pairs() if pair.kind == "tool passes"]
    if not pairs:
        return [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT.format(pairs_file())))]
    return [pytest.param(pair, id=pair.id) for pair in pairs]


@pytest.mark.parametrize("pair", _pairs())
def test_tool_passes_are_reserved_at_least_their_input_bill(pair: Pair, realworld: Path) -> None:
    est = _estimate(pair.request, pair.provider)
    assert est.input_tokens >= pair.counted, (
        f"estimated {est.input_tokens} input tokens ({est.tool_pass_tokens} of them tool passes), "
        f"{pair.provider} counted {pair.counted} for {pair.source}"
    )
    input_bill = price_book.cost_nano(
        pair.request["model"], Usage(input_tokens=pair.counted), provider=pair.provider, variant=est.variant
    )
    assert est.cost_nano >= input_bill, f"reserved {est.cost} for an input bill of {input_bill} nano-USD"


def used_server_tools(fx: JSON) -> bool:
    """The recorded call ran a server-side tool: an Anthropic ``server_tool_use`` / ``mcp_tool_use``
    block (in the body or the stream), a Responses output item of a built-in tool."""
    if fx["provider"] == "anthropic":
        text = fx["response_sse"] if fx["stream"] else json.dumps(fx["response"])
        compact = text.replace(" ", "")
        return '"type":"server_tool_use"' in compact or '"type":"mcp_tool_use"' in compact
    if fx["endpoint"] != "responses":
        return False
    return any(item.get("type") in SERVER_ITEMS for item in final_body(fx).get("output") or ())


def _recordings() -> list[Any]:
    chosen = [pytest.param(path, id=path.stem) for path in response_files() if used_server_tools(load(path))]
    return chosen or [
        pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT.format(realworld_dir())))
    ]


@pytest.mark.parametrize("recording", _recordings())
def test_a_call_with_server_tools_is_reserved_at_least_its_bill(recording: Path, realworld: Path) -> None:
    fx = load(recording)
    est = _estimate(fx["request"], fx["provider"])
    bill = billed_nano(fx)
    assert est.cost_nano >= bill, f"reserved {est.cost}, billed {bill} nano-USD ({est.tool_pass_tokens=})"

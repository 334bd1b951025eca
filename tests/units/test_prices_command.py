"""``budgetguard prices`` shows every rate a model is charged: tokens, audio and image tokens, tool fees."""

from __future__ import annotations

import json

from click.testing import CliRunner

from budgetguard._cli import cli


def test_prices_lists_tool_fees_and_audio_rates() -> None:
    result = CliRunner().invoke(cli, ["prices", "gpt-audio", "claude-sonnet-4-5", "--json"])
    assert result.exit_code == 0, result.output
    audio, claude = json.loads(result.output)
    assert (audio["input_audio"], audio["output_audio"], audio["web_search"]) == ("32", "64", "10")
    assert audio["web_fetch"] is None  # no price: a call that uses it is a PricingError
    assert (claude["web_search"], claude["web_fetch"], claude["code_execution"]) == ("10", "0", "4.17")
    assert claude["tiers"][0]["web_search"] == "10"


def test_prices_table_names_each_unit_and_the_provider_option() -> None:
    result = CliRunner().invoke(cli, ["prices", "sonar", "--provider", "perplexity"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "$12 / 1k requests" in result.output
    assert "web search calls" in result.output
    assert "not priced: PricingError" in result.output

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

import budgetguard
from budgetguard import (
    ConfigurationError,
    Price,
    PriceBook,
    PricingError,
    Rates,
    Usage,
    cost,
    get_price,
)
from tests.sdk_payloads import anthropic_message, chat_completion

M = 1_000_000
AFTER_VARIANTS_START = datetime(2026, 11, 1, tzinfo=UTC)  # genai-prices' tier variants apply from 2026-10-12


def rates(price: Price) -> tuple[Decimal, ...]:
    r = price.base
    return (r.input, r.output, r.cache_read, r.cache_write, r.cache_write_1h)


# -- exact costs from the price data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "usage", "usd"),
    [
        ("gpt-4o", Usage(input_tokens=1000, output_tokens=500), "0.0075"),
        ("gpt-4o", Usage(input_tokens=M), "2.5"),
        ("gpt-4o", Usage(output_tokens=M), "10"),
        ("gpt-4o", Usage(cache_read_tokens=M), "1.25"),
        ("gpt-4o", Usage(input_tokens=1, output_tokens=1), "0.0000125"),
        ("gpt-4o-mini", Usage(input_tokens=900, cache_read_tokens=100, output_tokens=50), "0.0001725"),
        ("gpt-4o-mini", Usage(input_tokens=M, output_tokens=M), "0.75"),
        ("gpt-4o-mini", Usage(cache_read_tokens=1), "0.000000075"),
        ("claude-sonnet-4-5", Usage(input_tokens=1000, output_tokens=1000), "0.018"),
        ("claude-sonnet-4-5", Usage(cache_read_tokens=100_000), "0.03"),
        ("claude-sonnet-4-5", Usage(cache_write_tokens=100_000), "0.375"),
        ("claude-sonnet-4-5", Usage(cache_write_1h_tokens=100_000), "0.6"),
        ("text-embedding-3-small", Usage(input_tokens=M), "0.02"),
        ("text-embedding-3-small", Usage(input_tokens=1234), "0.00002468"),
    ],
)
def test_exact_costs(model: str, usage: Usage, usd: str) -> None:
    assert cost(model, usage) == Decimal(usd)
    assert budgetguard.price_book.cost_nano(model, usage) == budgetguard.to_nano(usd)


def test_openai_completion_costs_cached_tokens_at_the_cache_price() -> None:
    usage = Usage.from_response(ChatCompletion.model_validate(chat_completion()))
    # 86 uncached x $2.50 + 1920 cached x $1.25 + 300 output x $10, per million
    assert cost("gpt-4o-2024-08-06", usage) == Decimal("0.005615")


def test_anthropic_message_costs_every_bucket_at_its_price() -> None:
    usage = Usage.from_response(Message.model_validate(anthropic_message()))
    # 50 x $3 + 10000 reads x $0.30 + 1500 5m writes x $3.75 + 500 1h writes x $6 + 503 x $15, per million
    assert cost("claude-sonnet-4-5-20250929", usage) == Decimal("0.01932")


def test_one_hour_writes_cost_more_than_five_minute_writes() -> None:
    five = cost("claude-sonnet-4-5", Usage(cache_write_tokens=10_000))
    hour = cost("claude-sonnet-4-5", Usage(cache_write_1h_tokens=10_000))
    assert (five, hour) == (Decimal("0.0375"), Decimal("0.06"))


# -- the 200k-token tier of claude-sonnet-4-5 ------------------------------------------------------


def test_tier_boundary_is_above_200k_input_tokens() -> None:
    at_limit = Usage(input_tokens=200_000, output_tokens=1000)
    over = Usage(input_tokens=200_001, output_tokens=1000)
    assert cost("claude-sonnet-4-5", at_limit) == Decimal("0.615")  # 200000 x $3 + 1000 x $15
    assert cost("claude-sonnet-4-5", over) == Decimal("1.222506")  # 200001 x $6 + 1000 x $22.50


def test_tier_is_picked_by_total_input_including_cache() -> None:
    under = Usage(input_tokens=1000, cache_read_tokens=199_000, output_tokens=1000)
    over = Usage(input_tokens=1000, cache_read_tokens=199_001, output_tokens=1000)
    assert cost("claude-sonnet-4-5", under) == Decimal("0.0777")  # 1000x3 + 199000x0.3 + 1000x15
    assert cost("claude-sonnet-4-5", over) == Decimal("0.1479006")  # 1000x6 + 199001x0.6 + 1000x22.5


def test_tier_rates_from_the_data() -> None:
    price = get_price("claude-sonnet-4-5")
    assert rates(price) == tuple(map(Decimal, ("3", "15", "0.3", "3.75", "6")))
    [(threshold, tier)] = price.tiers
    assert threshold == 200_000
    assert (tier.input, tier.output, tier.cache_read, tier.cache_write, tier.cache_write_1h) == tuple(
        map(Decimal, ("6", "22.5", "0.6", "7.5", "12"))
    )
    assert price.rates_for(200_000) is price.base
    assert price.rates_for(200_001) is tier


# -- names: snapshots and provider prefixes --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "same_as"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ],
)
def test_snapshots_and_prefixes_resolve(name: str, same_as: str) -> None:
    price = get_price(name)
    assert price.model == name
    assert price.base == get_price(same_as).base
    assert price.tiers == get_price(same_as).tiers
    assert price.source.startswith("genai-prices")


def test_claude_sonnet_4_snapshot() -> None:
    price = get_price("claude-sonnet-4-20250514")
    assert "claude-sonnet-4" in price.source
    assert rates(price) == tuple(map(Decimal, ("3", "15", "0.3", "3.75", "6")))
    assert cost("claude-sonnet-4-20250514", Usage(input_tokens=1000, output_tokens=1000)) == Decimal("0.018")


def test_gpt_4o_snapshot_costs_like_gpt_4o() -> None:
    usage = Usage(input_tokens=123_457, cache_read_tokens=2048, output_tokens=789)
    assert cost("gpt-4o-2024-08-06", usage) == cost("gpt-4o", usage) == Decimal("0.3190925")


def test_embedding_price_has_no_output_rate() -> None:
    price = get_price("text-embedding-3-small")
    assert price.base.input == Decimal("0.02")
    assert price.base.output == 0
    assert price.context_window == 8192


def test_context_windows_come_from_the_data_and_the_limits_table() -> None:
    assert get_price("gpt-4o").context_window == 128_000
    assert get_price("claude-3-5-haiku-20241022").context_window == 200_000
    # 200k: the 1M-context beta (which genai-prices prices above 200k input) was retired on 2026-04-30
    assert get_price("claude-sonnet-4-5").context_window == 200_000
    assert get_price("claude-sonnet-4-6").context_window == 1_000_000  # (the table's: wider than the data's)
    # genai-prices has no window for gpt-4.5-preview: the table's
    assert get_price("gpt-4.5-preview").context_window == 128_000


# -- price variants --------------------------------------------------------------------------------


def test_priority_service_tier_variant() -> None:
    book = PriceBook()
    priority = book.get("gpt-4o", variant={"service_tier": "priority"}, at=AFTER_VARIANTS_START)
    standard = book.get("gpt-4o", at=AFTER_VARIANTS_START)
    assert (priority.base.input, priority.base.output, priority.base.cache_read) == (
        Decimal("4.25"),
        Decimal("17"),
        Decimal("2.125"),
    )
    assert standard.base.input == Decimal("2.5")  # the variant did not leak into the cached standard price
    assert priority.cost(Usage(input_tokens=M, output_tokens=M)) == Decimal("21.25")


def test_batch_variant_keeps_tiers() -> None:
    price = PriceBook().get("claude-sonnet-4-5", variant={"processing": "batch"}, at=AFTER_VARIANTS_START)
    assert price.base.input == Decimal("1.5")
    assert price.cost(Usage(input_tokens=200_001)) == Decimal("0.600003")  # 200001 x $3 (the batch tier)


def test_variant_respects_the_date() -> None:
    # the data starts gpt-4o's priority prices on 2026-10-12: before that it has none, and the base
    # price would be 1.7x under what priority was billed at: a PricingError, never the base price
    before = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(PricingError, match=r"service_tier='priority'.*register_price"):
        PriceBook().get("gpt-4o", variant={"service_tier": "priority"}, at=before)
    book = PriceBook()
    book.register("gpt-4o", input="4.25", output="17")  # a configured price is charged instead
    assert book.get("gpt-4o", variant={"service_tier": "priority"}, at=before).base.input == Decimal("4.25")


# -- overrides -------------------------------------------------------------------------------------


def test_register_price_wins_over_the_data() -> None:
    book = PriceBook()
    assert book.get("gpt-4o").base.input == Decimal("2.5")
    book.register("gpt-4o", input="1", output="2")  # invalidates the cached data price
    price = book.get("gpt-4o")
    assert price.source == "override"
    assert book.cost("gpt-4o", Usage(input_tokens=M, output_tokens=M)) == Decimal("3")
    # snapshots and prefixed names of an overridden model use the override too
    assert book.get("gpt-4o-2024-08-06") is price
    assert book.get("openai/gpt-4o") is price
    # the process-wide book is untouched
    assert get_price("gpt-4o").base.input == Decimal("2.5")


def test_override_fallbacks() -> None:
    price = PriceBook(use_data=False).register("m", input="2", cache_write="2.5")
    assert price.base.cache_read == Decimal("2")  # reads default to the input price
    assert price.base.cache_write_1h == Decimal("2.5")  # 1h writes default to the 5m write price
    assert price.base.output == 0


def test_override_tiers() -> None:
    book = PriceBook(use_data=False)
    book.register("m", input="1", output="2", tiers={1000: {"input": "3", "output": "4"}})
    assert book.cost("m", Usage(input_tokens=1000, output_tokens=1000)) == Decimal("0.003")
    assert book.cost("m", Usage(input_tokens=1001, output_tokens=1000)) == Decimal("0.007003")


def test_module_level_register_price(global_prices: PriceBook) -> None:
    budgetguard.register_price("acme-test-model", input="0.5", output="1.5")
    assert cost("acme-test-model", Usage(input_tokens=M, output_tokens=M)) == Decimal("2")
    assert global_prices.get("acme/acme-test-model-2025-01-01").source == "override"


@pytest.mark.parametrize(
    ("rates_kwargs", "error"),
    [
        ({"input": 0.5}, TypeError),
        ({"input": "1", "output": 1.5}, TypeError),
        ({"input": True}, TypeError),
        ({"input": None}, TypeError),
        ({"input": [1]}, TypeError),
        ({"input": "-1"}, ValueError),
        ({"input": "NaN"}, ValueError),
        ({"input": "Infinity"}, ValueError),
        ({"input": "abc"}, ValueError),
    ],
)
def test_register_refuses_bad_rates(rates_kwargs: dict[str, object], error: type[Exception]) -> None:
    book = PriceBook(use_data=False)
    with pytest.raises(error):
        book.register("m", **rates_kwargs)  # type: ignore[arg-type]
    with pytest.raises(PricingError):
        book.get("m")


def test_register_needs_a_name() -> None:
    with pytest.raises(ConfigurationError):
        PriceBook().register("", input="1")


def test_float_rate_hint() -> None:
    with pytest.raises(TypeError, match="string or Decimal"):
        PriceBook().register("m", input=0.3)  # type: ignore[arg-type]


# -- rounding --------------------------------------------------------------------------------------


def test_cost_rounds_up_to_a_whole_nano_once() -> None:
    book = PriceBook(use_data=False)
    book.register("m", input="0.0001", output="0.0001")  # 0.1 nano-USD per token
    assert book.cost_nano("m", Usage(input_tokens=1)) == 1
    assert book.cost_nano("m", Usage(input_tokens=10)) == 1
    assert book.cost_nano("m", Usage(input_tokens=11)) == 2
    # rounding applies to the whole call, not to each bucket: 0.5 + 0.5 = 1, not 1 + 1
    assert book.cost_nano("m", Usage(input_tokens=5, output_tokens=5)) == 1
    assert book.cost("m", Usage(input_tokens=11)) == Decimal("0.000000002")
    assert book.cost_nano("m", Usage()) == 0


def test_tiny_rates_are_not_lost() -> None:
    book = PriceBook(use_data=False)
    book.register("m", input="0.000000000001")
    assert book.cost_nano("m", Usage(input_tokens=1)) == 1  # 1e-9 of a nano still costs a nano
    assert book.cost_nano("m", Usage(input_tokens=10**9)) == 1
    assert book.cost_nano("m", Usage(input_tokens=10**9 + 1)) == 2


def test_rates_cost_is_exact_for_many_decimals() -> None:
    r = Rates.of(input="1.23456789", output="9.87654321", cache_read="0.1")
    usage = Usage(input_tokens=1_000_003, cache_read_tokens=7, output_tokens=999_999)
    exact = (
        Decimal("1.23456789") * 1_000_003 + Decimal("0.1") * 7 + Decimal("9.87654321") * 999_999
    ) * 1000  # nano-USD
    assert r.cost_nano(usage) == math.ceil(exact) == 11_111_105_628
    assert exact != exact.to_integral_value()  # the case exercises rounding


# -- unknown models and the default price ----------------------------------------------------------


def test_unknown_model_is_a_pricing_error_never_zero() -> None:
    with pytest.raises(PricingError) as info:
        PriceBook().get("acme-unknown-model-9000")
    assert info.value.model == "acme-unknown-model-9000"
    message = str(info.value)
    assert "'acme-unknown-model-9000'" in message
    assert "register_price" in message
    assert "set_default_price" in message
    with pytest.raises(PricingError):
        PriceBook().cost("acme-unknown-model-9000", Usage(input_tokens=1))


@pytest.mark.parametrize("model", ["", None, 42])
def test_bad_model_names_are_pricing_errors(model: object) -> None:
    with pytest.raises(PricingError):
        PriceBook().get(model)  # type: ignore[arg-type]


def test_without_data_only_overrides_are_known() -> None:
    with pytest.raises(PricingError):
        PriceBook(use_data=False).get("gpt-4o")


def test_set_default_price(global_prices: PriceBook) -> None:
    with pytest.raises(PricingError):
        get_price("acme-unknown-model-9000")
    budgetguard.set_default_price(input="1", output="3")
    price = get_price("acme-unknown-model-9000")
    assert price.source == "default"
    assert cost("acme-unknown-model-9000", Usage(input_tokens=M, output_tokens=M)) == Decimal("4")
    assert get_price("gpt-4o").base.input == Decimal("2.5")  # known models keep their price
    global_prices.clear_default()
    with pytest.raises(PricingError):
        get_price("acme-unknown-model-9000")


def test_default_price_refuses_floats() -> None:
    with pytest.raises(TypeError):
        PriceBook().set_default(input=1.0)  # type: ignore[arg-type]


def test_lookups_are_cached_and_invalidated() -> None:
    book = PriceBook()
    first = book.get("gpt-4o-mini")
    assert book.get("gpt-4o-mini") is first
    book.set_default(input="1")
    assert book.get("gpt-4o-mini") is not first
    assert book.get("gpt-4o-mini").base == first.base


# -- price files -----------------------------------------------------------------------------------


def test_load_toml_reads_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."acme-large"]\n'
        "input = 0.1\n"
        "output = 0.3\n"
        "cache_read = 0.01\n"
        "context_window = 32000\n"
        '[models."acme-large".tiers.1000]\n'
        "input = 0.2\n"
        "output = 0.6\n"
        '[models."acme-small"]\n'
        'input = "0.05"\n'
    )
    book = PriceBook(use_data=False)
    loaded = book.load(path)
    assert [p.model for p in loaded] == ["acme-large", "acme-small"]
    price = book.get("acme-large")
    # a float parse would give 0.1000000000000000055511151231257827...
    assert price.base.input == Decimal("0.1")
    assert price.base.cache_read == Decimal("0.01")
    assert price.context_window == 32000
    assert book.cost("acme-large", Usage(input_tokens=1000, output_tokens=1000)) == Decimal("0.0004")
    assert book.cost("acme-large", Usage(input_tokens=1001)) == Decimal("0.0002002")
    assert book.get("acme-small").base.input == Decimal("0.05")


def test_load_json_reads_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"acme-json": {"input": 0.1, "output": 0.7}}}))
    book = PriceBook(use_data=False)
    book.load(str(path))
    assert book.get("acme-json").base.input == Decimal("0.1")
    assert book.cost("acme-json", Usage(input_tokens=3, output_tokens=3)) == Decimal("0.0000024")


def test_load_json_without_models_key(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"acme-flat": {"input": 0.25}}')
    book = PriceBook(use_data=False)
    book.load(path)
    assert book.get("acme-flat").base.input == Decimal("0.25")


def test_module_level_load_prices(tmp_path: Path, global_prices: PriceBook) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."acme-global"]\ninput = 1.5\noutput = 6.0\n')
    budgetguard.load_prices(path)
    assert cost("acme-global", Usage(input_tokens=M, output_tokens=M)) == Decimal("7.5")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("syntax.toml", "this is = = not toml"),
        ("syntax.json", "{not json"),
        ("no-input.toml", '[models."m"]\noutput = 1.0\n'),
        ("not-a-number.toml", '[models."m"]\ninput = "abc"\n'),
        ("negative.toml", '[models."m"]\ninput = -1.0\n'),
        ("bool.json", '{"models": {"m": {"input": true}}}'),
        ("null.json", '{"models": {"m": {"input": null}}}'),
        ("unknown-key.json", '{"models": {"m": {"input": 1, "inptu_cached": 2}}}'),
        ("bad-tier-key.toml", '[models."m"]\ninput = 1.0\n[models."m".tiers.lots]\ninput = 2.0\n'),
        ("tier-without-input.toml", '[models."m"]\ninput = 1.0\n[models."m".tiers.1000]\noutput = 2.0\n'),
        ("tiers-not-a-table.toml", '[models."m"]\ninput = 1.0\ntiers = [1, 2]\n'),
        ("list.json", "[1, 2, 3]"),
        ("models-list.json", '{"models": [1]}'),
        ("spec-not-a-table.json", '{"models": {"m": 1.5}}'),
    ],
)
def test_bad_price_files_are_configuration_errors(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    book = PriceBook(use_data=False)
    with pytest.raises(ConfigurationError) as info:
        book.load(path)
    assert name in str(info.value)
    with pytest.raises(PricingError):
        book.get("m")


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read prices"):
        PriceBook().load(tmp_path / "nope.toml")


def test_a_bad_entry_loads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."good"]\ninput = 1.0\n[models."bad"]\ninput = -1.0\n')
    book = PriceBook(use_data=False)
    with pytest.raises(ConfigurationError, match="'bad'"):
        book.load(path)
    with pytest.raises(PricingError):
        book.get("good")

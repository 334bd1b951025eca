"""The table of model limits: it covers every OpenAI and Anthropic model genai-prices prices, matches
the names callers use, and feeds prices; registered prices take limits too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from genai_prices import data_snapshot, types

import budgetguard
from budgetguard import ConfigurationError, Estimator, ModelLimits, PriceBook, PricingError, model_limits


def _genai_models() -> list[tuple[str, types.ModelInfo]]:
    snapshot = data_snapshot.get_snapshot()
    return [(p.id, m) for p in snapshot.providers if p.id in ("openai", "anthropic") for m in p.models]


def _exact_names(clause: Any) -> list[str]:
    """The exact names a genai-prices match clause lists (``equals``), at any depth."""
    if isinstance(clause, types.ClauseEquals):
        return [clause.equals]
    found: list[str] = []
    for inner in (getattr(clause, "or_", None) or []) + (getattr(clause, "and_", None) or []):
        found.extend(_exact_names(inner))
    return found


def _priced(book: PriceBook, name: str, provider: str) -> budgetguard.Price | None:
    try:
        return book.get(name, provider=provider)
    except PricingError:  # priced per character, minute or second: budgetguard never estimates them
        return None


def test_every_priced_openai_and_anthropic_model_has_limits() -> None:
    book = PriceBook()
    unlisted, unpriced = [], []
    for provider, info in _genai_models():
        for name in dict.fromkeys([info.id, *_exact_names(info.match)]):
            price = _priced(book, name, provider)
            if price is None:
                unpriced.append(name)
                continue
            limits = model_limits(name, info.id)
            if limits is None:
                unlisted.append(f"{provider}/{name}")
                continue
            assert price.max_output_tokens == limits.max_output_tokens, name
            if limits.context_window is not None:
                assert price.context_window is not None and price.context_window >= limits.context_window
    assert not unlisted, f"no limits for {unlisted}: add them to budgetguard/_limits.py"
    assert len(unpriced) < 20, unpriced  # (tts-1, whisper-1, moderation, live and transcription models)


def test_models_without_published_limits_are_few_and_of_known_kinds() -> None:
    unpublished = [
        info.id
        for provider, info in _genai_models()
        if (limits := model_limits(info.id)) is not None and limits.max_output_tokens is None
    ]
    kinds = ("image", "cyber", "rosalind", "-tts", "-search-api", "chat-latest")
    assert all(any(kind in name for kind in kinds) for name in unpublished), unpublished
    assert len(unpublished) <= 20


@pytest.mark.parametrize(
    ("name", "context", "output"),
    [
        ("gpt-4o-2024-08-06", 128_000, 16_384),
        ("openai/gpt-4.1-mini", 1_047_576, 32_768),
        ("gpt-5-chat-latest", 128_000, 16_384),  # not gpt-5's 128k output
        ("gpt-5", 400_000, 128_000),
        ("o3-mini-high", 200_000, 100_000),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", 128_000, 16_384),  # a fine-tune: its base's limits
        ("gpt-4-0613", 8_192, 8_192),
        ("gpt-4-32k-0613", 32_768, 32_768),
        ("claude-3-7-sonnet-20250219", 200_000, 128_000),  # with the output-128k beta header
        ("claude-3-5-sonnet-v2@20241022", 200_000, 8_192),  # Vertex
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", 200_000, 8_192),  # Bedrock
        ("anthropic.claude-opus-4-1-20250805-v1:0", 200_000, 32_000),
        ("claude-opus-4-20250514", 200_000, 32_000),
        ("claude-opus-4-6", 1_000_000, 128_000),
        ("text-embedding-3-small", 8_192, 0),
    ],
)
def test_names_match_their_models_limits(name: str, context: int, output: int) -> None:
    assert model_limits(name) == ModelLimits(context, output)


@pytest.mark.parametrize("name", ["gpt-4.7", "gpt-4-9", "claude-opus-4-9", "gpt-5-5", "my-finetune", "o9"])
def test_a_name_that_only_shares_a_prefix_has_no_limits(name: str) -> None:
    # never the limits of a different model: gpt-4's 8,192 would under-bound a new gpt-4.7
    assert model_limits(name) is None


def test_the_name_wins_over_the_id_genai_prices_resolves_it_to() -> None:
    # genai-prices prices gpt-5-chat-latest as gpt-5; its limits are its own
    assert model_limits("gpt-5-chat-latest", "gpt-5") == ModelLimits(128_000, 16_384)
    assert model_limits("gpt-35-turbo", "gpt-3.5-turbo") == ModelLimits(16_385, 4_096)  # Azure's name


def test_register_price_takes_the_models_limits() -> None:
    book = PriceBook(use_data=False)
    price = book.register("acme-llm", input="1", output="2", context_window=32_000, max_output_tokens=2_000)
    assert (price.context_window, price.max_output_tokens) == (32_000, 2_000)
    est = Estimator(prices=book)({"model": "acme-llm", "messages": [{"role": "user", "content": "Hi"}]})
    assert est.output_tokens == 2_000
    # a known model registered without limits keeps its published ones; given ones win
    assert book.register("gpt-4o-mini", input="1", output="2").max_output_tokens == 16_384
    tuned = book.register("ft:gpt-4o-mini-2024-07-18:acme::x1", input="1", output="2", max_output_tokens=99)
    assert (tuned.context_window, tuned.max_output_tokens) == (128_000, 99)
    assert book.register("unknown-llm", input="1", output="2").max_output_tokens is None


@pytest.mark.parametrize(
    "limits",
    [{"context_window": 0}, {"context_window": 1.5}, {"max_output_tokens": -1}, {"max_output_tokens": "4096"},
     {"max_output_tokens": True}],
)  # fmt: skip
def test_register_price_refuses_bad_limits(limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="whole number of tokens"):
        PriceBook(use_data=False).register("acme-llm", input="1", output="2", **limits)


def test_a_prices_file_carries_limits(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."acme-llm"]\ninput = 0.5\noutput = 1.5\ncontext_window = 64000\nmax_output_tokens = 8000\n'
    )
    book = PriceBook(use_data=False)
    [price] = book.load(path)
    assert (price.context_window, price.max_output_tokens) == (64_000, 8_000)
    path.write_text('[models."acme-llm"]\ninput = 0.5\nmax_output_tokens = -5\n')
    with pytest.raises(ConfigurationError, match="acme-llm"):
        book.load(path)


def test_an_advisor_without_max_tokens_writes_at_most_its_models_maximum() -> None:
    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-1", "max_uses": 1}
    request = {"model": "claude-sonnet-4-5", "max_tokens": 100, "tools": [advisor]}
    est = budgetguard.estimate({**request, "messages": [{"role": "user", "content": "Plan a trip."}]})
    assert est.passes[0].usage.output_tokens == 32_000  # claude-opus-4-1's maximum output
    book = PriceBook()
    book.register("acme-advisor", input="1", output="2")  # no limits known
    with pytest.raises(ConfigurationError, match="the advisor tool sets no max_tokens"):
        Estimator(prices=book)(
            {
                **request,
                "tools": [{**advisor, "model": "acme-advisor"}],
                "messages": [{"role": "user", "content": "Hi"}],
            }
        )
    opted_in = Estimator(prices=book, default_output_tokens=300)(
        {
            **request,
            "tools": [{**advisor, "model": "acme-advisor"}],
            "messages": [{"role": "user", "content": "Hi"}],
        }
    )
    assert opted_in.passes[0].usage.output_tokens == 300


def test_a_bedrock_answer_names_the_asked_id_by_its_anthropic_name() -> None:
    from budgetguard._limits import answers_as

    for asked in (
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "us-gov.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ):
        assert answers_as(asked, "claude-sonnet-4-5-20250929"), asked
        assert not answers_as(asked, "claude-opus-4-1-20250805"), asked
    assert not answers_as("claude-sonnet-4-5", "claude-sonnet-4-5-20250929")  # (not Bedrock: priced apart)
    assert not answers_as("gpt-4o", "gpt-4o-2024-08-06")

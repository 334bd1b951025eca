"""``import budgetguard`` stays cheap: genai-prices (and its pydantic models) load at the first price
lookup, asyncio at the first coroutine that needs it, tomllib at the first TOML file, none at import.
Each check runs in a fresh interpreter; no timing is asserted here (``benchmarks/bench_import.py``
measures it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NOT_AT_IMPORT = (
    "genai_prices",
    "pydantic",
    "pydantic_core",
    "importlib.metadata",
    "asyncio",
    "tomllib",
    "rich",
    "openai",
    "anthropic",
    "tiktoken",
    "sqlite3",
    "zoneinfo",
    "tenacity",
    "concurrent.futures",
    "logging",
    "pickle",
    "budgetguard._report",
    "budgetguard._ledger._sqlite_report",
    "budgetguard._ledger._memory",
)
"""Modules ``import budgetguard`` must not load (before issue 17 it loaded the first five, ~180 ms, and
tiktoken, sqlite3 and zoneinfo, ~15 ms more; tenacity with concurrent.futures, logging, the reports
and the memory store with pickle, ~20 % of the import's instructions, until session 8)."""

LOADED_BY_A_LOOKUP = ("genai_prices", "genai_prices.types", "genai_prices.data_snapshot")


def _loaded_after(code: str) -> dict[str, bool]:
    """Which of the modules above are in ``sys.modules`` after running ``code`` in a fresh process."""
    names = sorted({*NOT_AT_IMPORT, *LOADED_BY_A_LOOKUP})
    script = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {names!r}}}))\n"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    loaded: dict[str, bool] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def test_import_budgetguard_loads_no_price_data_nor_sdk() -> None:
    loaded = _loaded_after("import budgetguard")
    assert [m for m in NOT_AT_IMPORT if loaded[m]] == []
    assert [m for m in LOADED_BY_A_LOOKUP if loaded[m]] == []


@pytest.mark.parametrize(
    "lookup",
    [
        "print(budgetguard.cost('gpt-4o-mini', budgetguard.Usage(input_tokens=1000, output_tokens=10)))",
        "print(budgetguard.estimate({'model': 'gpt-4o-mini', 'max_tokens': 5,"
        " 'messages': [{'role': 'user', 'content': 'hi'}]}).cost_nano)",
        "print(budgetguard.get_price('claude-sonnet-4-20250514').source)",
    ],
    ids=["cost", "estimate", "get_price"],
)
def test_the_first_price_lookup_loads_genai_prices(lookup: str) -> None:
    loaded = _loaded_after(f"import budgetguard\n{lookup}")
    assert [m for m in LOADED_BY_A_LOOKUP if not loaded[m]] == []


def test_a_price_from_the_lazily_loaded_data_names_its_version() -> None:
    code = "import budgetguard\nprint(budgetguard.get_price('gpt-4o-mini').source)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    from importlib.metadata import version

    assert out.stdout.strip() == f"genai-prices {version('genai-prices')}: openai/gpt-4o-mini"


def test_a_model_genai_prices_does_not_know_is_still_refused_at_the_first_lookup() -> None:
    code = (
        "import budgetguard\n"
        "try:\n"
        "    budgetguard.get_price('no-such-model-anywhere')\n"
        "except budgetguard.PricingError as exc:\n"
        "    print(type(exc).__name__, exc.model)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "PricingError no-such-model-anywhere"


DECORATED = {
    "openai chat": ("openai.OpenAI", "client.chat.completions", "create"),
    "openai responses": ("openai.OpenAI", "client.responses", "create"),
    "openai embeddings": ("openai.AsyncOpenAI", "client.embeddings", "create"),
    "anthropic messages": ("anthropic.Anthropic", "client.messages", "create"),
    "anthropic stream": ("anthropic.AsyncAnthropic", "client.messages", "stream"),
}


@pytest.mark.parametrize("case", DECORATED.values(), ids=DECORATED.keys())
def test_decorating_an_sdk_method_imports_nothing_of_the_sdk_beyond_its_resource(
    case: tuple[str, str, str],
) -> None:
    """Before issue 17, decorating the first OpenAI method instantiated every resource of a copy of
    the client to find the method again (~1,500 modules, seconds)."""
    client_class, resource, method = case
    sdk = client_class.split(".")[0]
    code = (
        f"import sys, json, {sdk}, budgetguard\n"
        f"client = {client_class}(api_key='k', base_url='http://127.0.0.1:9', max_retries=3)\n"
        f"resource = {resource}\n"
        "before = set(sys.modules)\n"
        f"guarded = budgetguard.Guard().metered(resource.{method}, user='u')\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    new = json.loads(out.stdout.splitlines()[-1])
    assert [m for m in new if m.split(".")[0] in ("openai", "anthropic")] == []


FIRST_CALL = (
    "guard = budgetguard.Guard('memory://', budgets=[budgetguard.Budget('user', usd='1', per='day')])\n"
    "def reply(*, model, messages, max_tokens):\n"
    "    return {'usage': {'prompt_tokens': 3, 'completion_tokens': 2}}\n"
    "guarded = guard.with_budget(user='u')(reply)\n"
)


def test_a_guard_and_a_decoration_load_no_retry_policy_the_first_call_does() -> None:
    """tenacity (and concurrent.futures, which it imports) loads at the first guarded call, which builds
    the default retry policy; logging with the first guard (its events' logger), the memory store with
    the first ``memory://`` store."""
    decorated = _loaded_after(f"import budgetguard\n{FIRST_CALL}")
    assert [m for m in ("tenacity", "concurrent.futures", "budgetguard._report") if decorated[m]] == []
    assert decorated["logging"]
    called = _loaded_after(
        f"import budgetguard\n{FIRST_CALL}"
        "guarded(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}], max_tokens=5)\n"
    )
    assert called["tenacity"] and called["budgetguard._ledger._memory"] and called["pickle"]


def test_the_report_functions_load_at_their_first_use() -> None:
    code = (
        "import budgetguard, sys\n"
        "before = 'budgetguard._report' in sys.modules\n"
        "from budgetguard import ReportRow, read_journal, report\n"
        "print(before, report.__module__, ReportRow.__name__, read_journal is budgetguard.read_journal)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "budgetguard._report", "ReportRow", "True"]
    missing = subprocess.run(
        [sys.executable, "-c", "import budgetguard; budgetguard.no_such_name"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "has no attribute 'no_such_name'" in missing.stderr

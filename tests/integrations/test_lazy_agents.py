"""The agent framework integrations are optional: importing budgetguard loads none of the frameworks, and
a missing one is a ConfigurationError naming the extra to install."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

FRAMEWORKS = ("agents", "pydantic_ai", "litellm")


def test_importing_budgetguard_loads_no_agent_framework() -> None:
    code = (
        "import sys, budgetguard, budgetguard.integrations, budgetguard.integrations.httpx\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("openai_agents", "agents", "openai-agents"),
        ("pydantic_ai", "pydantic_ai.models", "pydantic-ai"),
        ("litellm", "litellm", "litellm"),
    ],
)
def test_a_missing_framework_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    import budgetguard as bg

    monkeypatch.setitem(sys.modules, library, None)  # what an uninstalled package looks like to import
    monkeypatch.delitem(sys.modules, f"budgetguard.integrations.{module}", raising=False)
    with pytest.raises(bg.ConfigurationError, match=rf"pip install 'llm-budgetguard\[{extra}\]'"):
        importlib.import_module(f"budgetguard.integrations.{module}")

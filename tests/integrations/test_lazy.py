"""Integrations are optional: importing budgetguard loads none of their libraries, and a missing one
is a ConfigurationError naming the extra to install."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import budgetguard as bg

LIBRARIES = (
    "langchain",
    "langchain_core",
    "langchain_openai",
    "langgraph",
    "fastapi",
    "starlette",
    "opentelemetry",
    "prometheus_client",
    "django",
    "flask",
    "werkzeug",
    "celery",
    "kombu",
)


def test_importing_budgetguard_loads_no_integration_library() -> None:
    code = (
        "import sys, budgetguard, budgetguard.integrations\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {LIBRARIES!r})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("langchain", "langchain_core.callbacks", "langchain"),
        ("langchain_agents", "langchain.agents.middleware", "langchain-agents"),
        ("fastapi", "starlette.requests", "fastapi"),
        ("opentelemetry", "opentelemetry", "otel"),
        ("prometheus", "prometheus_client", "prometheus"),
        ("django", "django.conf", "django"),
        ("flask", "flask", "flask"),
        ("celery", "celery", "celery"),
    ],
)
def test_a_missing_library_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # what an uninstalled package looks like to import
    monkeypatch.delitem(sys.modules, f"budgetguard.integrations.{module}", raising=False)
    with pytest.raises(bg.ConfigurationError, match=rf"pip install 'llm-budgetguard\[{extra}\]'"):
        importlib.import_module(f"budgetguard.integrations.{module}")

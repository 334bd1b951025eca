"""The packages that still need openai 2 (llama-index-llms-openai pins ``openai<3``; instructor pins a
``jiter`` below openai 3's): they cannot share the main test environment, whose openai 3 the Agents SDK
needs, so ``.ci/run`` tests them in a job of their own (``.venv-openai2``), where
``BUDGETGUARD_REQUIRE_OPENAI2=1`` makes a missing package fail instead of skip."""

from __future__ import annotations

import importlib.util
import os

import pytest

PACKAGES = {"instructor": "instructor", "llama_index.llms.openai": "llama-index-llms-openai"}


def require(module: str) -> None:
    """Skip the calling test module in the main environment when ``module`` is not installed (it runs in
    ``.ci/run``'s openai 2 job); fail where that job asks for it."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return
    reason = f"{PACKAGES[module]} needs openai 2: tested in .ci/run's openai 2 job (.venv-openai2)"
    if os.environ.get("BUDGETGUARD_REQUIRE_OPENAI2"):
        pytest.fail(f"BUDGETGUARD_REQUIRE_OPENAI2 is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

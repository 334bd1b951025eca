"""No recorded response writes more output tokens than budgetguard's table of model limits says the
model that answered can (times ``n`` choices): the output bound of a request without a maximum is a
true bound on these calls. Each extra sampling pass (Anthropic ``usage.iterations``) is held to its
own model's maximum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import budgetguard
from tests.realworld.bills import final_body
from tests.realworld.conftest import load

_OUTPUT_KEY = {"messages": "output_tokens", "chat": "completion_tokens", "responses": "output_tokens"}


def _max_output(model: str) -> int:
    limits = budgetguard.model_limits(model)
    assert limits is not None and limits.max_output_tokens is not None, f"no max output known for {model}"
    return limits.max_output_tokens


def test_no_response_writes_more_than_its_models_max_output(realworld: Path, fixture_file: Path) -> None:
    fx: dict[str, Any] = load(fixture_file)
    body = final_body(fx)
    model = body.get("model") or fx["request"]["model"]
    usage = body.get("usage") or {}
    if fx["endpoint"] == "embeddings":
        assert _max_output(model) == 0 and not usage.get("completion_tokens")
        return
    written = usage[_OUTPUT_KEY[fx["endpoint"]]]
    choices = fx["request"].get("n") or 1
    assert 0 <= written <= choices * _max_output(model), (model, written)
    for extra in usage.get("iterations") or ():
        if extra.get("type") != "message":
            assert extra["output_tokens"] <= _max_output(extra.get("model") or model), extra

"""Every recorded call, served to the real SDK clients through ``with_budget``, is charged exactly what the
provider's reported usage costs: every billed unit (tokens by bucket, audio tokens, server-side tool calls,
Anthropic's extra sampling passes), to the nano-USD, sync and async, streamed and not.

The expected charge is computed apart from budgetguard's own reading of usage: genai-prices extracts the
usage from the final response body (its own extractors) and prices it (its own unit decomposition). What
genai-prices does not read or price is added here from the body: the Responses API's built-in tool calls
(one output item per call, code interpreter sessions per container), Anthropic ``usage.iterations`` that
the top-level usage leaves out (each at its own model), and the units genai-prices has no price for, at
the providers' published prices (``budgetguard.PUBLISHED_PRICES``, documented in the README).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import budgetguard
from budgetguard import Budget, Guard
from tests.guard.payloads import (
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
    serve,
)
from tests.realworld.bills import billed_nano, final_body
from tests.realworld.conftest import load

JSON = dict[str, Any]

# -- serving a recording to the real SDK clients ------------------------------------------------------


def _client(fx: JSON, body: JSON | str, *, sync: bool) -> Any:
    api = serve(body)
    if fx["provider"] == "anthropic":
        return (anthropic_client if sync else async_anthropic_client)(api)
    return (openai_client if sync else async_openai_client)(api)


def _method(client: Any, endpoint: str) -> Any:
    if endpoint == "messages":
        return client.messages.create
    if endpoint == "chat":
        return client.chat.completions.create
    return client.responses.create if endpoint == "responses" else client.embeddings.create


def _arguments(method: Any, request: JSON) -> JSON:
    """The recorded request as SDK keyword arguments: fields the installed SDK does not name go in
    ``extra_body``, as a caller on this SDK version would send them."""
    known = inspect.signature(method).parameters
    arguments = {k: v for k, v in request.items() if k in known}
    extra = {k: v for k, v in request.items() if k not in known}
    if extra:
        arguments["extra_body"] = extra
    return arguments


def _guard() -> Guard:
    return Guard("memory://", budgets=[Budget("global", usd="1000", per="day")])


def _charged(guard: Guard) -> tuple[int, JSON]:
    (entry,) = guard.ledger.history(events=["committed"])
    assert "usage_missing" not in entry.data, entry.data
    return entry.amounts["usd"], entry.data


def test_sync_charge_is_the_bill(fixture_file: Path, realworld: Path) -> None:
    fx = load(fixture_file)
    guard = _guard()
    client = _client(fx, fx["response_sse"] if fx["stream"] else fx["response"], sync=True)
    method = _method(client, fx["endpoint"])
    reply = guard.with_budget(method)(**_arguments(method, fx["request"]))
    if fx["stream"]:
        for _ in reply:
            pass
    charged, data = _charged(guard)
    guard.close()
    assert charged == billed_nano(fx), data


async def test_async_charge_is_the_bill(fixture_file: Path, realworld: Path) -> None:
    fx = load(fixture_file)
    guard = _guard()
    client = _client(fx, fx["response_sse"] if fx["stream"] else fx["response"], sync=False)
    method = _method(client, fx["endpoint"])
    reply = await guard.with_budget(method)(**_arguments(method, fx["request"]))
    if fx["stream"]:
        async for _ in reply:
            pass
    charged, data = _charged(guard)
    guard.close()
    assert charged == billed_nano(fx), data


def test_the_recordings_exercise_every_unit_read(realworld: Path) -> None:
    """The tier is not vacuous: the recordings hold each kind of billed unit that budgetguard reads."""
    from tests.realworld.conftest import response_files

    seen: set[str] = set()
    for path in response_files():
        usage = budgetguard.Usage.from_response(final_body(load(path)))
        seen.update(k for k, v in usage.to_dict().items() if v)
    assert {
        "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "input_audio_tokens",
        "web_search_calls", "file_search_calls", "code_execution_sessions", "passes",
    } <= seen  # fmt: skip

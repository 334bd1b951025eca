"""Real recorded calls (other projects' public HTTP cassettes, read in place): the model that answered
and the chat stream helper.

* Every call whose response names another model than the one asked (``gpt-4o`` answered by
  ``gpt-4o-2024-08-06``, ``claude-3-5-haiku-latest`` by ``claude-3-5-haiku-20241022``, ``gpt-5.6`` by
  ``gpt-5.6-sol``) is charged what its reported usage costs *at the model that answered*, and the journal
  records that model. Sync and async, streamed and not.
* Every recorded chat stream, served to ``client.chat.completions.stream(...)``, is charged its reported
  usage (it was charged its worst case, flagged ``usage_missing``).

The expected charge is computed apart from budgetguard (``bills.billed_nano``: every billed unit, priced
at the answering model).

The recordings live at ``<repo>/../shared/realworld/fixtures`` (``BUDGETGUARD_REALWORLD_DIR`` overrides);
without them every test here skips, saying where it looked. Never copy them into the repository.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from budgetguard import Budget, Guard
from budgetguard._providers import may_reason
from tests.guard.payloads import (
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
    serve,
)
from tests.realworld.bills import billed_nano, final_body
from tests.realworld.conftest import ABSENT, load, realworld_dir, response_files
from tests.sdk_http import chat_completions_stream

JSON = dict[str, Any]


def _recordings(keep: Any) -> list[Any]:
    chosen = [pytest.param(path, id=path.stem) for path in response_files() if keep(load(path))]
    return chosen or [
        pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT.format(realworld_dir())))
    ]


def _answered_by_another_name(fx: JSON) -> bool:
    if fx["endpoint"] == "embeddings":
        return False
    return final_body(fx)["model"] != fx["request"]["model"]


def _method(client: Any, fx: JSON, *, helper: bool = False) -> Any:
    if fx["endpoint"] == "messages":
        return client.messages.create
    if fx["endpoint"] == "chat":
        return chat_completions_stream(client) if helper else client.chat.completions.create
    return client.responses.create


def _arguments(method: Any, request: JSON) -> JSON:
    """The recorded request as SDK keyword arguments (fields this SDK does not name: ``extra_body``)."""
    known = inspect.signature(method).parameters
    arguments = {k: v for k, v in request.items() if k in known}
    extra = {k: v for k, v in request.items() if k not in known}
    if extra:
        arguments["extra_body"] = extra
    return arguments


def _client(fx: JSON, *, sync: bool) -> Any:
    api = serve(fx["response_sse"] if fx["stream"] else fx["response"])
    if fx["provider"] == "anthropic":
        return (anthropic_client if sync else async_anthropic_client)(api)
    return (openai_client if sync else async_openai_client)(api)


def _charged(guard: Guard) -> tuple[int, JSON]:
    (entry,) = guard.ledger.history(events=["committed"])
    guard.close()
    assert "usage_missing" not in entry.data, entry.data
    return entry.amounts["usd"], dict(entry.data)


def _guard() -> Guard:
    return Guard("memory://", budgets=[Budget("global", usd="1000", per="day")])


@pytest.mark.parametrize("recording", _recordings(_answered_by_another_name))
def test_the_model_that_answered_is_charged(recording: Path, realworld: Path) -> None:
    fx = load(recording)
    guard = _guard()
    method = _method(_client(fx, sync=True), fx)
    reply = guard.with_budget(method)(**_arguments(method, fx["request"]))
    if fx["stream"]:
        for _ in reply:
            pass
    charged, data = _charged(guard)
    assert data["served_model"] == final_body(fx)["model"]
    assert charged == billed_nano(fx), data


@pytest.mark.parametrize("recording", _recordings(_answered_by_another_name))
async def test_the_model_that_answered_is_charged_async(recording: Path, realworld: Path) -> None:
    fx = load(recording)
    guard = _guard()
    method = _method(_client(fx, sync=False), fx)
    reply = await guard.with_budget(method)(**_arguments(method, fx["request"]))
    if fx["stream"]:
        async for _ in reply:
            pass
    charged, data = _charged(guard)
    assert data["served_model"] == final_body(fx)["model"]
    assert charged == billed_nano(fx), data


def _chat_stream(fx: JSON) -> bool:
    return fx["endpoint"] == "chat" and fx["stream"]


def _helper_request(fx: JSON) -> JSON:
    request = {k: v for k, v in fx["request"].items() if k != "stream"}  # the helper streams by itself
    # the helper parses tool calls: some releases (openai 1.78's async helper) refuse a function tool
    # not marked strict before sending anything
    tools = request.get("tools")
    if tools:
        request["tools"] = [{**tool, "function": {**tool["function"], "strict": True}} for tool in tools]
    return request


@pytest.mark.parametrize("recording", _recordings(_chat_stream))
def test_chat_completions_stream_is_charged_its_usage(recording: Path, realworld: Path) -> None:
    fx = load(recording)
    guard = _guard()
    method = _method(_client(fx, sync=True), fx, helper=True)
    with guard.with_budget(method)(**_arguments(method, _helper_request(fx))) as events:
        events.get_final_completion()  # read through the guard, as iterating would
    charged, _ = _charged(guard)
    assert charged == billed_nano(fx)


@pytest.mark.parametrize("recording", _recordings(_chat_stream))
async def test_chat_completions_stream_is_charged_its_usage_async(recording: Path, realworld: Path) -> None:
    fx = load(recording)
    guard = _guard()
    method = _method(_client(fx, sync=False), fx, helper=True)
    async with guard.with_budget(method)(**_arguments(method, _helper_request(fx))) as events:
        async for _ in events:
            pass
    charged, _ = _charged(guard)
    assert charged == billed_nano(fx)


# -- a reasoning stream that ends before its usage ------------------------------------------------------


def _reasoning_stream(fx: JSON) -> bool:
    if not fx["stream"] or fx["endpoint"] == "chat":
        return False
    if fx["provider"] == "anthropic":
        sse = fx["response_sse"].replace(" ", "")
        return '"type":"thinking"' in sse or '"type":"redacted_thinking"' in sse
    return may_reason(fx["request"]["model"])


def _without_usage(fx: JSON) -> str:
    """The recorded stream up to its last event without the final usage (Anthropic's final
    ``message_delta``, the Responses API's ``response.completed``)."""
    blocks = [b for b in fx["response_sse"].split("\n\n") if b.strip()]
    final = ('"type":"message_delta"', '"type":"response.completed"')
    keep: list[str] = []
    for block in blocks:
        if any(marker in block.replace(" ", "") for marker in final):
            break
        keep.append(block)
    return "\n\n".join(keep) + "\n\n"


@pytest.mark.parametrize("recording", _recordings(_reasoning_stream))
def test_a_reasoning_stream_without_usage_is_charged_at_least_its_bill(
    recording: Path, realworld: Path
) -> None:
    """Everything was generated, the usage never came: the charge covers what the provider billed for the
    whole call (its hidden or summarized reasoning included), flagged."""
    fx = load(recording)
    guard = _guard()
    api = serve(_without_usage(fx))
    client = anthropic_client(api) if fx["provider"] == "anthropic" else openai_client(api)
    method = _method(client, fx)
    for _ in guard.with_budget(method)(**_arguments(method, fx["request"])):
        pass
    (entry,) = guard.ledger.history(events=["committed"])
    guard.close()
    assert entry.data["usage_missing"] is True and entry.data["reasoning_worst_case"] is True
    assert entry.amounts["usd"] >= billed_nano(fx)

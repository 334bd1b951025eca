"""A ``BudgetHTTP`` given to ``litellm.completion`` / ``litellm.acompletion`` itself (``client=``), not
through budgetguard's ``completion``: LiteLLM took it for no client of its own (its HTTP handlers test
``isinstance(client, HTTPHandler)``) and sent the call unguarded with a client it made, a review found. Now
LiteLLM takes it as its handler and every way it sends with it raises a ``ConfigurationError`` that says
to call budgetguard's ``completion``: nothing sent, nothing charged. The real ``litellm`` against
``MockProvider``."""

from __future__ import annotations

import inspect
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # (its bundled prices: no network)

import litellm
import pytest

import budgetguard as bg
from budgetguard.integrations._refusal import refusal_in
from budgetguard.integrations.litellm import BudgetHTTP, NotALiteLLMClient, acompletion
from budgetguard.testing import MockProvider
from tests.integrations.test_litellm import (  # noqa: F401 - its fixtures and marks
    api,
    guard,
    pytestmark,
    quiet_litellm,
)

HI = [{"role": "user", "content": "Why reserve before calling?"}]
MODELS = [  # LiteLLM's own HTTP handler (anthropic, groq, deepseek), an OpenAI SDK client (the others)
    "anthropic/claude-sonnet-4-5",
    "groq/llama-3.3-70b-versatile",
    "deepseek/deepseek-chat",
    "perplexity/sonar",
    "openai/gpt-4o-mini",
]
SAYS = r"BudgetHTTP is no client to give litellm itself \(LiteLLM would send unguarded\): call budgetguard"


def base(mock: MockProvider, model: str) -> dict[str, object]:
    url = mock.anthropic_base_url if model.startswith("anthropic/") else mock.openai_base_url
    return {"model": model, "messages": HI, "max_tokens": 50, "api_base": url, "api_key": "k"}


# (async first, as in test_litellm.py: LiteLLM leaks a loop when an acompletion follows a completion)
@pytest.mark.parametrize("model", MODELS)
async def test_a_budget_http_given_to_litellm_acompletion_is_refused_loudly(
    api: MockProvider,  # noqa: F811
    guard: bg.Guard,  # noqa: F811
    model: str,
) -> None:
    async with BudgetHTTP(guard, user="alice") as http:
        with pytest.raises(Exception, match=SAYS) as raised:  # (LiteLLM raises it as its own error)
            await litellm.acompletion(client=http, **base(api, model))
    assert isinstance(refusal_in(raised.value, bg.ConfigurationError), NotALiteLLMClient)
    assert api.requests == [] and guard.ledger.history() == []


@pytest.mark.parametrize("model", MODELS)
def test_a_budget_http_given_to_litellm_completion_is_refused_loudly(
    api: MockProvider,  # noqa: F811
    guard: bg.Guard,  # noqa: F811
    model: str,
) -> None:
    with BudgetHTTP(guard, user="alice") as http:
        with pytest.raises(Exception, match=SAYS) as raised:
            litellm.completion(client=http, **base(api, model))
        assert isinstance(refusal_in(raised.value, bg.ConfigurationError), NotALiteLLMClient)
        with pytest.raises(Exception, match=SAYS):
            litellm.completion(client=http, stream=True, **base(api, model))
    assert api.requests == [] and guard.ledger.history() == []


async def test_through_budgetguards_completion_the_same_budget_http_is_charged(
    api: MockProvider,  # noqa: F811
    guard: bg.Guard,  # noqa: F811
) -> None:
    """(The handlers ``BudgetHTTP`` gives LiteLLM are its own; the ``BudgetHTTP`` is never sent with.)"""
    async with BudgetHTTP(guard, user="alice") as http:
        await acompletion(http, **base(api, "groq/llama-3.3-70b-versatile"))
    [usage] = api.usages
    price = bg.get_price("llama-3.3-70b-versatile", provider="groq")
    cost = price.cost_nano(
        bg.Usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"])
    )
    assert [(e.event, e.amounts["usd"]) for e in guard.ledger.history()] == [("committed", cost)]


class Recorder(BaseHTTPRequestHandler):
    """Answers every request 400 and records its path: what LiteLLM sent, unguarded."""

    hits: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.hits.append(self.path)
        body = b'{"error":{"message":"no"}}'
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


IGNORED = [  # (call, model, extra arguments): LiteLLM sends these with a client of its own
    ("completion", "gemini/gemini-2.0-flash", {}),
    ("completion", "cohere_chat/command-r", {}),
    ("acompletion", "cohere_chat/command-r", {}),
    ("embedding", "ollama/nomic-embed-text", {}),
    ("aembedding", "ollama/nomic-embed-text", {}),
    (
        "completion",
        "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
        {"aws_access_key_id": "a", "aws_secret_access_key": "b", "aws_region_name": "us-east-1"},
    ),
]


async def send(call: Any, **arguments: Any) -> Any:
    sent = call(**arguments)
    return await sent if inspect.isawaitable(sent) else sent


@pytest.mark.parametrize(("call", "model", "extra"), IGNORED)
async def test_the_providers_that_ignore_litellms_client_send_unguarded_as_the_readme_says(
    guard: bg.Guard,  # noqa: F811
    call: str,
    model: str,
    extra: dict[str, str],
) -> None:
    """What the README warns of: these LiteLLM paths ignore ``client=`` (a ``BudgetHTTP`` too) and send the
    call with a client of their own; budgetguard never sees it. (Should LiteLLM start sending with the
    client given, this fails: the README's list is then to be shortened.)"""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Recorder.hits = []
    arguments: dict[str, Any] = {"model": model, "api_base": f"http://127.0.0.1:{server.server_port}"}
    arguments |= {"api_key": "k", **extra}
    arguments |= {"input": ["hi"]} if "embedding" in call else {"messages": HI, "max_tokens": 5}
    try:
        async with BudgetHTTP(guard, user="alice") as http:
            with pytest.raises(Exception) as raised:  # (the server's 400, as LiteLLM's error)
                await send(getattr(litellm, call), client=http, **arguments)
        assert refusal_in(raised.value, bg.ConfigurationError) is None
        assert len(Recorder.hits) == 1 and guard.ledger.history() == []
    finally:
        server.shutdown()
        server.server_close()

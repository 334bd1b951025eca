"""The HTTP library under each SDK, so tests build mock transports and transport errors with it.

openai up to 2.x and anthropic up to 0.x are built on ``httpx``; openai 3 and anthropic 1 moved to
``httpx2``. An SDK accepts only its own library's clients and turns only its own library's errors into
``APIConnectionError`` / ``APITimeoutError``, so the suite asks each SDK which one it uses: it then runs on
the oldest and the newest releases ``pyproject.toml`` admits (``.ci/run`` tests both).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import anthropic
import openai


def http_of(sdk: ModuleType) -> ModuleType:
    """The ``httpx``-like module an SDK's default HTTP client is built on."""
    base = sdk.DefaultHttpxClient.__mro__[1]  # httpx.Client or httpx2.Client
    return importlib.import_module(base.__module__.split(".")[0])


def http_for(request: Any) -> ModuleType:
    """The module of a request a ``MockTransport`` hands its handler: reply with the same library."""
    return importlib.import_module(type(request).__module__.split(".")[0])


OPENAI_HTTP = http_of(openai)
ANTHROPIC_HTTP = http_of(anthropic)
HTTP_ERRORS: tuple[type[Exception], ...] = tuple({OPENAI_HTTP.HTTPError, ANTHROPIC_HTTP.HTTPError})
"""The base transport error of every installed SDK's HTTP library."""

OPENAI_STREAM_CUT: tuple[type[Exception], ...] = (openai.APIConnectionError, OPENAI_HTTP.TransportError)
"""What the openai SDK raises when a stream's connection is lost mid-way: recent releases wrap the
transport's error in ``APIConnectionError``, older ones let it through. Either passes the guard unchanged."""
ANTHROPIC_STREAM_CUT: tuple[type[Exception], ...] = (
    anthropic.APIConnectionError,
    ANTHROPIC_HTTP.TransportError,
)
"""The same for the anthropic SDK (it wraps the transport's error from 2.17 on)."""


def unpooled_openai_http() -> dict[str, Any]:
    """``http_client`` and ``http_async_client`` for a LangChain ``ChatOpenAI`` on a test's mock server,
    keeping no connection alive: nothing is left open when the test ends. Without them langchain-openai
    shares clients it caches per base URL (the 128 last used): each test's server is a new URL, and a
    cached client pushed out mid-suite was collected with its idle socket open, a ResourceWarning (an
    error here) in whichever test ran then, or at the end of the run."""
    limits = OPENAI_HTTP.Limits(max_keepalive_connections=0)
    return {
        "http_client": OPENAI_HTTP.Client(limits=limits),
        "http_async_client": OPENAI_HTTP.AsyncClient(limits=limits),
    }


def chat_completions_stream(client: Any) -> Any:
    """``client.chat.completions.stream`` of an ``OpenAI`` / ``AsyncOpenAI`` client: older openai releases
    (1.78 among them) have the helper only as ``client.beta.chat.completions.stream``."""
    completions = client.chat.completions
    return completions.stream if hasattr(completions, "stream") else client.beta.chat.completions.stream

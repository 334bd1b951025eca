"""The mock provider's server: ``MockProvider`` (lifecycle, SDK clients, scripted faults, what was
received and reported) and the HTTP handler that routes each request to ``_openai`` or ``_anthropic``."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar

from .._cache import Bounded
from ._anthropic import count_tokens, messages
from ._openai import chat, embeddings, responses
from ._wire import JSON, Answer, Context, Events, anthropic_error, bedrock_frame, openai_error

if TYPE_CHECKING:
    import anthropic as _anthropic_sdk
    import openai as _openai_sdk

__all__ = ["MockProvider", "RecordedRequest"]

_Client = TypeVar(
    "_Client", "_openai_sdk.OpenAI", "_anthropic_sdk.Anthropic", "_anthropic_sdk.AnthropicBedrock"
)

ROUTES: dict[str, Callable[[JSON, Context], Answer]] = {
    "/v1/chat/completions": chat,
    "/v1/responses": responses,
    "/v1/embeddings": embeddings,
    "/v1/messages": messages,
    "/v1/messages/count_tokens": count_tokens,
}
BEDROCK = re.compile(r"^/model/(.+)/(invoke|invoke-with-response-stream)$")
"""Bedrock runtime's Anthropic calls (``AnthropicBedrock``): the model id in the path, streams framed as
AWS event streams, answers naming Anthropic's model name (``claude-...``) as Bedrock's do."""
SEEN_PREFIXES = 4096
"""How many prompt-cache prefixes one mock remembers (the oldest is forgotten first)."""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: JSON


@dataclass
class _Fault:
    path: str | None
    times: int
    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    cut_after: int | None = None
    drop: bool = False

    def matches(self, path: str) -> bool:
        return self.times > 0 and (self.path is None or self.path == path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN
    """Connections waiting to be accepted (socketserver's default is 5): a burst of concurrent clients
    overflows a short queue, and the kernel resets some of them (a provider error nobody scripted)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that closes its keep-alive connection is normal, not an error to print."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Abort(Exception):
    """Drop the connection without finishing the response."""


@dataclass
class MockProvider:
    """A local OpenAI- and Anthropic-compatible HTTP server with rule-based usage and scripted faults."""

    host: str = "127.0.0.1"
    port: int = 0
    reply_text: str | None = None
    """Fix the assistant's reply (otherwise a deterministic text chosen from the prompt)."""
    project_service_tier: str = "default"
    """The tier an OpenAI request that names no ``service_tier`` (or ``"auto"``) is served and reported
    at: its project's default (``"priority"`` for a project whose default tier is Priority)."""
    requests: list[RecordedRequest] = field(default_factory=list)
    usages: list[JSON] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list, repr=False)
    _seen_prefixes: Bounded[str, bool] = field(
        default_factory=lambda: Bounded("testing.seen_prefixes", SEEN_PREFIXES, shared=False), repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _ids: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _declines: dict[str, int] = field(default_factory=dict, repr=False)
    _clients: list[Any] = field(default_factory=list, repr=False)
    """The synchronous SDK clients made here, closed (their pooled sockets) when the server stops."""

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> MockProvider:
        provider = self

        class Handler(_Handler):
            mock = provider

        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="budgetguard-mock", daemon=True).start()
        return self

    def stop(self) -> None:
        while self._clients:
            self._clients.pop().close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MockProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the mock provider is not running: use `with MockProvider() as mock:`")
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # -- clients -------------------------------------------------------------------------------------

    def openai(self, **kwargs: Any) -> _openai_sdk.OpenAI:
        import openai

        client = openai.OpenAI(**{"base_url": self.openai_base_url, "api_key": "mock-key", **kwargs})
        return self._held(client)

    def async_openai(self, **kwargs: Any) -> _openai_sdk.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(**{"base_url": self.openai_base_url, "api_key": "mock-key", **kwargs})

    def anthropic(self, **kwargs: Any) -> _anthropic_sdk.Anthropic:
        import anthropic

        return self._held(
            anthropic.Anthropic(**{"base_url": self.anthropic_base_url, "api_key": "mock-key", **kwargs})
        )

    def async_anthropic(self, **kwargs: Any) -> _anthropic_sdk.AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic(
            **{"base_url": self.anthropic_base_url, "api_key": "mock-key", **kwargs}
        )

    def bedrock(self, **kwargs: Any) -> _anthropic_sdk.AnthropicBedrock:
        """An ``AnthropicBedrock`` client on this server (fake AWS keys: the mock checks no signature;
        the SDK signs and reads streams with botocore: ``pip install 'llm-budgetguard[bedrock]'``)."""
        import anthropic

        keys = {"aws_access_key": "AKIDMOCK", "aws_secret_key": "mock-secret", "aws_region": "us-east-1"}
        return self._held(anthropic.AnthropicBedrock(**{"base_url": self.url, **keys, **kwargs}))

    def _held(self, client: _Client) -> _Client:
        """Keep a synchronous client to close when the server stops (an async one is the caller's to
        ``await client.close()`` on its own event loop)."""
        self._clients.append(client)
        return client

    # -- scripted faults -------------------------------------------------------------------------------

    def fail(
        self, status: int = 500, *, times: int = 1, path: str | None = None, retry_after: str | None = None
    ) -> None:
        """Answer the next ``times`` requests (to ``path``, or any) with an error ``status``."""
        self._add(_Fault(path, times, status=status, retry_after=retry_after))

    def delay(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Answer the next ``times`` requests only after ``seconds`` (for client timeouts)."""
        self._add(_Fault(path, times, delay=seconds))

    def cut(self, after: int = 2, *, times: int = 1, path: str | None = None) -> None:
        """Drop the connection of the next ``times`` streams after ``after`` events."""
        self._add(_Fault(path, times, cut_after=after))

    def drop(self, *, times: int = 1, path: str | None = None) -> None:
        """Close the connection of the next ``times`` requests once they are received, without an answer
        (the SDKs raise ``APIConnectionError``: the request may have been billed)."""
        self._add(_Fault(path, times, drop=True))

    def decline(self, model: str, *, after: int = 0) -> None:
        """Make ``model`` decline every Anthropic request that offers ``fallbacks`` (a refusal), after
        writing ``after`` tokens: the server retries it on the next entry, as Anthropic's server-side
        fallbacks do (``usage.iterations``: a ``message`` per declined hop, on its model, and the serving
        hop's ``fallback_message``; the top-level usage counts them all; the answer names the model that
        served it)."""
        with self._lock:
            self._declines[model] = after

    def reset(self) -> None:
        """Forget what was received and reported, the scripted faults and the prompt caches (to share one
        running server between tests)."""
        with self._lock:
            self.requests.clear()
            self.usages.clear()
            self._faults.clear()
            self._seen_prefixes.clear()
            self._declines.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _record_usage(self, usage: JSON) -> None:
        with self._lock:
            self.usages.append(usage)

    def _seen(self, key: str) -> bool:
        """Whether a cache prefix was seen before (and remember it)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            seen = digest in self._seen_prefixes
            self._seen_prefixes.put(digest, True)
        return seen

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_mock{next(self._ids):06d}"

    def _context(self) -> Context:
        with self._lock:
            declines = dict(self._declines)
        return Context(self.reply_text, self._seen, self._new_id, declines, self.project_service_tier)


class _Handler(BaseHTTPRequestHandler):
    mock: MockProvider
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small replies in several writes: no 40 ms delayed-ACK stalls
    server_version = "budgetguard-mock/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_POST(self) -> None:
        try:
            self._serve()
        except (_Abort, ConnectionError):  # a scripted cut, or the client hung up mid-reply
            self.close_connection = True

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        error = anthropic_error if path.startswith("/v1/messages") else openai_error
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, error(400, "the request body is not valid JSON"))
            return
        self.mock._record(RecordedRequest("POST", path, dict(self.headers.items()), body))
        fault = self.mock._take_fault(path)
        if fault is not None and fault.drop:
            raise _Abort
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            self._json(fault.status, error(fault.status, f"mock fault: HTTP {fault.status}"), headers)
            return
        route = ROUTES.get(path)
        bedrock = BEDROCK.match(path)
        if bedrock is not None:  # (the path is percent-encoded: an inference profile's ARN has slashes)
            route, stream = ROUTES["/v1/messages"], bedrock[2] != "invoke"
            body = {**body, "model": urllib.parse.unquote(bedrock[1]), "stream": stream}
        if route is None:
            self._json(404, error(404, f"the mock provider has no route {path}"))
            return
        if not isinstance(body.get("model"), str):
            self._json(400, error(400, "model: a string is required"))
            return
        try:
            answer = route(body, self.mock._context())
        except (KeyError, TypeError, ValueError) as exc:
            self._json(400, error(400, f"invalid request: {exc!r}"))
            return
        if answer.usage is not None:
            self.mock._record_usage(answer.usage)
        if bedrock is not None:
            answer = _as_bedrock(answer)
        if answer.events is not None:
            self._sse(answer.events, None if fault is None else fault.cut_after, bedrock is not None)
        else:
            self._json(answer.status, answer.body or {})

    def _json(self, status: int, body: JSON, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", self.mock._new_id("req"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Events, cut_after: int | None, bedrock: bool = False) -> None:
        """Stream ``(event name, data)`` pairs as chunked SSE (as AWS event-stream frames on Bedrock);
        drop the connection after ``cut_after``."""
        self.send_response(200)
        kind = "application/vnd.amazon.eventstream" if bedrock else "text/event-stream"
        self.send_header("content-type", kind)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-request-id", self.mock._new_id("req"))
        self.end_headers()
        for sent, (name, data) in enumerate(events):
            if cut_after is not None and sent >= cut_after:
                self.wfile.flush()
                raise _Abort
            text = data if isinstance(data, str) else json.dumps(data)
            if bedrock:
                frame = bedrock_frame(text.encode())
            else:
                frame = ((f"event: {name}\n" if name else "") + f"data: {text}\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        self.wfile.write(b"0\r\n\r\n")


_BEDROCK_ID = re.compile(r"^(?:.*/)?(?:[a-z-]+\.)?anthropic\.(.+?)(?:-v\d+:\d+)?$")


def _anthropic_name(model: str) -> str:
    """The model name a Bedrock answer gives: ``us.anthropic.claude-x-v1:0`` answers as ``claude-x``."""
    found = _BEDROCK_ID.match(model)
    return model if found is None else found[1]


def _as_bedrock(answer: Answer) -> Answer:
    """An Anthropic answer as Bedrock gives it: the model named by Anthropic's name."""
    if answer.body is not None and isinstance(answer.body.get("model"), str):
        return Answer(
            answer.usage, {**answer.body, "model": _anthropic_name(answer.body["model"])}, None, answer.status
        )
    events: Events = []
    for name, data in answer.events or ():
        if isinstance(data, dict) and data.get("type") == "message_start":
            message = data["message"]
            data = {**data, "message": {**message, "model": _anthropic_name(message["model"])}}
        events.append((name, data))
    return Answer(answer.usage, None, events, answer.status)

"""A local mock of the OpenAI and Anthropic HTTP APIs, for demos and tests without a key or a network.

``MockProvider`` is a real HTTP server on 127.0.0.1 (a free port, a daemon thread) that the real
``openai`` and ``anthropic`` SDK clients talk to. It answers chat completions, the Responses API,
embeddings, Anthropic messages and ``messages/count_tokens``, as JSON or as SSE streams, with the usage
the real services would report for the request:

* OpenAI input tokens are budgetguard's count (``count_openai_request``: OpenAI's published counting
  rules plus the overheads measured on real requests); output is a deterministic reply
  capped by the request's max tokens; reasoning models (o1, o3, o4, gpt-5) also "think"; a prompt whose
  prefix (every message but the last, >= 1024 tokens) was seen before reports cached tokens in 128-token
  steps, as OpenAI's prompt cache does.
* Claude input tokens follow budgetguard's Claude rules with o200k_base x 1.2 (Claude's tokenizer is not
  public; budgetguard's offline estimate uses x 1.4 or more, so estimates stay above what is charged);
  a ``cache_control`` prefix of >= 1024 tokens is a cache write the first time (5-minute or 1-hour by
  its ``ttl``) and a cache read afterwards.

Faults are scripted: ``fail()`` answers the next requests with an error status, ``delay()`` answers late,
``cut()`` drops a stream's connection after some events (an incomplete chunked body, as a real network
cut looks to the client). Everything received and every usage reported is recorded.

```python
with MockProvider() as mock:
    client = mock.openai()
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[...], max_tokens=50)
```
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ._limits import UNKNOWN, model_limits
from ._pricing import is_claude
from ._tokens import count_text_tokens, encoding_for_model
from ._tokens_claude import count_anthropic_tokens, count_claude_request
from ._tokens_openai import count_message_tokens, count_openai_request, count_responses_tokens

if TYPE_CHECKING:
    import anthropic as _anthropic
    import openai as _openai

__all__ = ["MockProvider", "RecordedRequest"]

JSON = dict[str, Any]

CLAUDE_FACTOR = Decimal("1.2")
_CLAUDE_NUM, _CLAUDE_DEN = CLAUDE_FACTOR.as_integer_ratio()
"""Claude input tokens, as the mock reports them, per o200k_base token."""

CACHE_MIN_TOKENS = 1024
REASONING_EFFORT_TOKENS = {"minimal": 16, "low": 64, "medium": 256, "high": 1024}
_TEXT = (
    "budgets keep spending honest because every call reserves its worst case before it runs and gives back "
    "what it did not use so that many workers sharing one limit can never pass it together while the "
    "ledger stays exact to the nano dollar across retries streams and restarts"
)
_WORDS = _TEXT.split(" ")


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

    def matches(self, path: str) -> bool:
        return self.times > 0 and (self.path is None or self.path == path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that closes its keep-alive connection is normal, not an error to print."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Abort(Exception):
    """Drop the connection without finishing the response."""


@dataclass
class MockProvider:
    """A local OpenAI- and Anthropic-compatible HTTP server with realistic usage and scripted faults."""

    host: str = "127.0.0.1"
    port: int = 0
    reply_text: str | None = None
    """Fix the assistant's reply (otherwise a deterministic text chosen from the prompt)."""
    requests: list[RecordedRequest] = field(default_factory=list)
    usages: list[JSON] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list, repr=False)
    _seen_prefixes: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _ids: Iterator[int] = field(default_factory=itertools.count, repr=False)

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

    def openai(self, **kwargs: Any) -> _openai.OpenAI:
        import openai

        return openai.OpenAI(**{"base_url": self.openai_base_url, "api_key": "mock-key", **kwargs})

    def async_openai(self, **kwargs: Any) -> _openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(**{"base_url": self.openai_base_url, "api_key": "mock-key", **kwargs})

    def anthropic(self, **kwargs: Any) -> _anthropic.Anthropic:
        import anthropic

        return anthropic.Anthropic(**{"base_url": self.anthropic_base_url, "api_key": "mock-key", **kwargs})

    def async_anthropic(self, **kwargs: Any) -> _anthropic.AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic(
            **{"base_url": self.anthropic_base_url, "api_key": "mock-key", **kwargs}
        )

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

    def reset(self) -> None:
        """Forget what was received and reported, the scripted faults and the prompt caches (to share one
        running server between tests)."""
        with self._lock:
            self.requests.clear()
            self.usages.clear()
            self._faults.clear()
            self._seen_prefixes.clear()

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
            self._seen_prefixes.add(digest)
        return seen

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_mock{next(self._ids):06d}"

    # -- replies ---------------------------------------------------------------------------------

    def _reply(self, model: str, prompt: str, limit: int | None) -> tuple[str, int]:
        """The visible reply text and its token count, at most ``limit`` tokens."""
        encoding = encoding_for_model(model) if not is_claude(model) else None
        if self.reply_text is not None:
            text = self.reply_text
        else:
            seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
            words = 12 + seed % 60
            text = " ".join(_WORDS[(seed + i) % len(_WORDS)] for i in range(words)).capitalize() + "."
        tokens = _claude_tokens(text) if encoding is None else count_text_tokens(text, encoding)
        if limit is not None and tokens > limit:
            # cut the reply at the limit, as a provider stopping at max tokens does
            ratio = limit / tokens
            text = text[: int(len(text) * ratio)]
            tokens = limit
        return text, tokens


def _claude_tokens(text: str) -> int:
    raw = count_text_tokens(text, "o200k_base")
    return -(-raw * _CLAUDE_NUM // _CLAUDE_DEN)


def _is_reasoning(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4", "gpt-5"))


def _pieces(text: str, n: int = 4) -> list[str]:
    """Split ``text`` into about ``n`` stream deltas."""
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    return [
        " ".join(words[i : i + size]) + (" " if i + size < len(words) else "")
        for i in range(0, len(words), size)
    ]


def _last_text(items: Any) -> str:
    """The text of the last user message (for choosing a reply)."""
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        content = item.get("content") if isinstance(item, Mapping) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _openai_error(status: int, message: str) -> JSON:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }
    return {
        "error": {"message": message, "type": kinds.get(status, "server_error"), "param": None, "code": None}
    }


def _anthropic_error(status: int, message: str) -> JSON:
    kinds = {
        400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
        429: "rate_limit_error", 529: "overloaded_error",
    }  # fmt: skip
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}


class _Handler(BaseHTTPRequestHandler):
    mock: MockProvider
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small replies in several writes: no 40 ms delayed-ACK stalls
    server_version = "budgetguard-mock/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # -- plumbing ---------------------------------------------------------------------------------------

    def do_POST(self) -> None:
        try:
            self._serve()
        except (_Abort, ConnectionError):  # a scripted cut, or the client hung up mid-reply
            self.close_connection = True

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        anthropic_api = path.startswith("/v1/messages")
        error = _anthropic_error if anthropic_api else _openai_error
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, error(400, "the request body is not valid JSON"))
            return
        self.mock._record(RecordedRequest("POST", path, dict(self.headers.items()), body))
        fault = self.mock._take_fault(path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            self._json(fault.status, error(fault.status, f"mock fault: HTTP {fault.status}"), headers)
            return
        routes = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/embeddings": self._embeddings,
            "/v1/messages": self._messages,
            "/v1/messages/count_tokens": self._count_tokens,
        }
        route = routes.get(path)
        if route is None:
            self._json(404, error(404, f"the mock provider has no route {path}"))
            return
        if not isinstance(body.get("model"), str):
            self._json(400, error(400, "model: a string is required"))
            return
        try:
            route(body, None if fault is None else fault.cut_after)
        except (KeyError, TypeError, ValueError) as exc:
            self._json(400, error(400, f"invalid request: {exc!r}"))

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

    def _sse(self, events: Sequence[tuple[str | None, JSON | str]], cut_after: int | None) -> None:
        """Stream ``(event name, data)`` pairs as chunked SSE; drop the connection after ``cut_after``."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-request-id", self.mock._new_id("req"))
        self.end_headers()
        for sent, (name, data) in enumerate(events):
            if cut_after is not None and sent >= cut_after:
                self.wfile.flush()
                raise _Abort
            text = data if isinstance(data, str) else json.dumps(data)
            frame = ((f"event: {name}\n" if name else "") + f"data: {text}\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        self.wfile.write(b"0\r\n\r\n")

    # -- OpenAI chat completions ---------------------------------------------------------------------

    def _openai_output(self, body: JSON, model: str, prompt: str, limit: int | None) -> tuple[str, int, int]:
        """(visible text, output tokens, reasoning tokens within them) for an OpenAI request."""
        reasoning = 0
        if limit is None:  # no maximum on the request: the model stops at its own, as a provider's does
            limit = (model_limits(model) or UNKNOWN).max_output_tokens
        if _is_reasoning(model):
            effort = (body.get("reasoning") or {}).get("effort") or body.get("reasoning_effort") or "medium"
            reasoning = REASONING_EFFORT_TOKENS.get(effort, 256)
            if limit is not None:
                reasoning = min(reasoning, limit)
                limit -= reasoning
        text, visible = self.mock._reply(model, prompt, limit)
        return text, visible + reasoning, reasoning

    def _cached(self, key: Any, prompt_tokens: int, tail_tokens: int) -> int:
        """OpenAI's prompt cache: a prefix seen before, >= 1024 tokens, counted in 128-token steps."""
        prefix_tokens = prompt_tokens - tail_tokens
        if prefix_tokens < CACHE_MIN_TOKENS or not self.mock._seen(json.dumps(key, sort_keys=True)):
            return 0
        return prefix_tokens // 128 * 128

    def _chat(self, body: JSON, cut_after: int | None) -> None:
        model, messages = body["model"], body["messages"]
        tools = body.get("tools")
        prompt_tokens = count_openai_request(body)
        tail = count_message_tokens(messages[-1:], model) if messages else 0
        cached = self._cached({"m": messages[:-1], "t": tools, "model": model}, prompt_tokens, tail)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        n = int(body.get("n") or 1)
        text, output, reasoning = self._openai_output(body, model, _last_text(messages), limit)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": output * n,
            "total_tokens": prompt_tokens + output * n,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning * n,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        self.mock._record_usage(usage)
        finish = "length" if limit is not None and output >= limit else "stop"
        base = {
            "id": self.mock._new_id("chatcmpl"),
            "created": int(time.time()),
            "model": model,
            "service_tier": body.get("service_tier") or "default",
            "system_fingerprint": "fp_mock",
        }
        if not body.get("stream"):
            reply: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            choices = [
                {"index": i, "message": reply, "logprobs": None, "finish_reason": finish} for i in range(n)
            ]
            self._json(200, {**base, "object": "chat.completion", "choices": choices, "usage": usage})
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunk: JSON = {**base, "object": "chat.completion.chunk"}
        if include_usage:
            chunk["usage"] = None
        deltas: list[tuple[JSON, str | None]] = [
            ({"role": "assistant", "content": "", "refusal": None}, None)
        ]
        deltas += [({"content": piece}, None) for piece in _pieces(text)]
        deltas.append(({}, finish))
        events: list[tuple[str | None, JSON | str]] = [
            (None, {**chunk, "choices": [{"index": i, "delta": d, "logprobs": None, "finish_reason": f}]})
            for d, f in deltas
            for i in range(n)
        ]
        if include_usage:
            events.append((None, {**chunk, "choices": [], "usage": usage}))
        events.append((None, "[DONE]"))
        self._sse(events, cut_after)

    # -- OpenAI Responses API ---------------------------------------------------------------------------

    def _responses(self, body: JSON, cut_after: int | None) -> None:
        model, items = body["model"], body.get("input")
        tools = body.get("tools")
        instructions = body.get("instructions")
        input_tokens = count_openai_request(body)
        tail = 0 if isinstance(items, str) or not items else count_responses_tokens(items[-1:], model)
        earlier = None if isinstance(items, str) or not items else items[:-1]
        key = {"i": earlier, "s": instructions, "t": tools, "model": model}
        cached = self._cached(key, input_tokens, tail or input_tokens)
        limit = body.get("max_output_tokens")
        text, output, reasoning = self._openai_output(body, model, _last_text(items), limit)
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output,
        }
        self.mock._record_usage(usage)
        response_id, message_id = self.mock._new_id("resp"), self.mock._new_id("msg")
        incomplete = limit is not None and output >= limit
        part = {"type": "output_text", "text": text, "annotations": []}
        message: JSON = {"type": "message", "id": message_id, "status": "completed", "role": "assistant"}
        message["content"] = [part]
        output_items: list[JSON] = []
        if reasoning:
            output_items.append({"type": "reasoning", "id": self.mock._new_id("rs"), "summary": []})
        output_items.append(message)
        done: JSON = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if incomplete else "completed",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": instructions,
            "max_output_tokens": limit,
            "model": model,
            "output": output_items,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "service_tier": body.get("service_tier") or "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": tools or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": {},
        }
        if not body.get("stream"):
            self._json(200, done)
            return
        started = {**done, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
        index = len(output_items) - 1
        empty_message = {**message, "status": "in_progress", "content": []}
        events: list[JSON] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
        ]
        if reasoning:
            events += [
                {"type": "response.output_item.added", "output_index": 0, "item": output_items[0]},
                {"type": "response.output_item.done", "output_index": 0, "item": output_items[0]},
            ]
        where = {"item_id": message_id, "output_index": index, "content_index": 0}
        events += [
            {"type": "response.output_item.added", "output_index": index, "item": empty_message},
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        ]
        events += [
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            for piece in _pieces(text)
        ]
        events += [
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": index, "item": message},
            {"type": "response.incomplete" if incomplete else "response.completed", "response": done},
        ]
        self._sse([(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)], cut_after)

    # -- OpenAI embeddings ---------------------------------------------------------------------------

    def _embeddings(self, body: JSON, cut_after: int | None) -> None:
        model, given = body["model"], body["input"]
        encoding = encoding_for_model(model)
        inputs: list[Any] = (
            [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else given
        )
        if not inputs:
            raise ValueError("input must not be empty")
        counts = [len(x) if isinstance(x, list) else count_text_tokens(str(x), encoding) for x in inputs]
        dims = int(body.get("dimensions") or 8)
        data = []
        for index, item in enumerate(inputs):
            seed = hashlib.sha256(json.dumps(item).encode()).digest()
            vector = [(seed[i % 32] - 128) / 128 for i in range(dims)]
            value: Any = vector
            if body.get("encoding_format") == "base64":
                value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        self.mock._record_usage(usage)
        self._json(200, {"object": "list", "data": data, "model": model, "usage": usage})

    # -- Anthropic messages ------------------------------------------------------------------------------

    def _claude_input(self, body: JSON) -> tuple[int, int, str, str]:
        """(all input tokens, tokens of the cache_control prefix, its ttl, its identity) of a Claude request.

        The cached prefix runs up to the last block marked ``cache_control``, in tools, system, messages
        order, as Anthropic defines it.
        """
        model, messages = body["model"], body["messages"]
        system, tools = body.get("system"), body.get("tools")
        total = count_claude_request(body, model, CLAUDE_FACTOR)
        blocks: list[tuple[str, int, Any]] = [("tools", -1, t) for t in tools or []]
        blocks += [("system", -1, b) for b in system] if isinstance(system, list) else []
        for i, message in enumerate(messages):
            content = message.get("content")
            blocks += [(message["role"], i, b) for b in content] if isinstance(content, list) else []
        marked = [
            n for n, (_, _, b) in enumerate(blocks) if isinstance(b, Mapping) and b.get("cache_control")
        ]
        if not marked:
            return total, 0, "5m", ""
        prefix = blocks[: marked[-1] + 1]
        ttl = str(prefix[-1][2]["cache_control"].get("ttl", "5m"))
        by_message: dict[int, tuple[str, list[Any]]] = {}
        for role, i, block in prefix:
            if i >= 0:
                by_message.setdefault(i, (role, []))[1].append(block)
        prefix_tokens = count_anthropic_tokens(
            [{"role": role, "content": parts} for role, parts in by_message.values()],
            model,
            system=[b for kind, _, b in prefix if kind == "system"] or None,
            tools=[b for kind, _, b in prefix if kind == "tools"] or None,
            factor=CLAUDE_FACTOR,
        )
        return total, min(prefix_tokens, total), ttl, json.dumps([model, prefix], sort_keys=True)

    def _claude_usage(self, body: JSON) -> JSON:
        total, prefix, ttl, key = self._claude_input(body)
        write_5m = write_1h = read = 0
        if prefix >= CACHE_MIN_TOKENS:
            if self.mock._seen(key):
                read = prefix
            elif ttl == "1h":
                write_1h = prefix
            else:
                write_5m = prefix
        return {
            "input_tokens": total - write_5m - write_1h - read,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": 0,
            "service_tier": "priority" if body.get("service_tier") == "priority" else "standard",
        }

    def _messages(self, body: JSON, cut_after: int | None) -> None:
        if not isinstance(body.get("max_tokens"), int):
            self._json(400, _anthropic_error(400, "max_tokens: Field required"))
            return
        model = body["model"]
        usage = self._claude_usage(body)
        text, output = self.mock._reply(model, _last_text(body["messages"]), body["max_tokens"])
        usage["output_tokens"] = output
        self.mock._record_usage(usage)
        stop = "max_tokens" if output >= body["max_tokens"] else "end_turn"
        message: JSON = {
            "id": self.mock._new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            self._json(200, message)
            return
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[JSON] = [
            {"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
        ]
        pieces = _pieces(text)
        for number, piece in enumerate(pieces, 1):
            events.append(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            )
            if number == len(pieces) // 2:  # a cumulative interim count, as Anthropic sends on long replies
                interim = max(1, output * number // len(pieces))
                events.append(
                    {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
                     "usage": {"output_tokens": interim}}
                )  # fmt: skip
        final_usage = {
            key: usage[key]
            for key in (
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "output_tokens",
            )
        }
        events += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": final_usage,
            },
            {"type": "message_stop"},
        ]
        self._sse([(e["type"], e) for e in events], cut_after)

    def _count_tokens(self, body: JSON, cut_after: int | None) -> None:
        total, *_ = self._claude_input(body)
        self._json(200, {"input_tokens": total})

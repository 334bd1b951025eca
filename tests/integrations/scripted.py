"""A local OpenAI chat completions server that answers with scripted replies (tool calls, then text), for
the agent frameworks' tests: ``MockProvider`` answers with text only, and an agent's tool loop needs the
model to call a tool. Each reply is a realistic chat completion (``tests/sdk_payloads.chat_completion``:
its usage with cached tokens and details), with its usage kept for the test to price."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from budgetguard import Usage, get_price
from tests.sdk_payloads import chat_completion

JSON = dict[str, Any]


def tool_call(name: str, arguments: JSON, call_id: str, **usage: Any) -> JSON:
    """A completion whose message calls the tool ``name`` with ``arguments``."""
    reply = chat_completion(**usage)
    reply["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }
    reply["choices"][0]["finish_reason"] = "tool_calls"
    return reply


def text(content: str, **usage: Any) -> JSON:
    reply = chat_completion(**usage)
    reply["choices"][0]["message"]["content"] = content
    return reply


def cost(model: str, reply: JSON) -> int:
    """What a reply's usage costs, in nano-USD, by the prices the guard uses."""
    reported = reply["usage"]
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    usage = Usage(
        input_tokens=reported["prompt_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=reported["completion_tokens"],
    )
    return get_price(model).cost_nano(usage)


class Scripted:
    """The server's state: the replies still to give and the request bodies received."""

    def __init__(self, replies: list[JSON]) -> None:
        self.replies = [copy.deepcopy(r) for r in replies]
        self.requests: list[JSON] = []
        self.url = ""
        self._lock = threading.Lock()

    def take(self, body: JSON) -> JSON | None:
        with self._lock:
            self.requests.append(body)
            return self.replies.pop(0) if self.replies else None


@contextmanager
def serve(replies: list[JSON], path: str = "/v1/chat/completions") -> Iterator[Scripted]:
    """Serve ``replies`` in order to POST ``path`` (a 500 once they are used up), a chat completion as a
    stream (``sse``) when the request asks for one; ``.url`` is the OpenAI base URL (``.../v1``)."""
    state = Scripted(replies)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            reply = state.take(body) if self.path == path else None
            status, payload = (200, reply) if reply else (500, {"error": {"message": "no reply scripted"}})
            streamed = reply is not None and body.get("stream") is True
            data = sse(reply) if streamed and reply else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "text/event-stream" if streamed else "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def sse(reply: JSON) -> bytes:
    """``reply`` as a chat completions stream: its message in one chunk, its finish reason, then its
    usage in a last chunk without choices (as OpenAI sends with ``stream_options.include_usage``)."""
    base = {k: reply[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    message = reply["choices"][0]["message"]
    delta: JSON = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    finish = reply["choices"][0]["finish_reason"]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        {**base, "choices": [], "usage": reply["usage"]},
    ]
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"

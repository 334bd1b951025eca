"""What the mock's routes share: the answer a route returns, the per-request context it reads, the
providers' error bodies and how a reply is cut into stream deltas."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
Events = list[tuple[str | None, JSON | str]]
"""An SSE stream: (event name or None, data) pairs."""

CACHE_MIN_TOKENS = 1024
"""The shortest prefix either provider caches."""


@dataclass(frozen=True)
class Context:
    """What a route reads from the running mock for one request."""

    reply_text: str | None
    seen: Callable[[str], bool]
    """Whether a cache prefix (its identity) was seen before; remembers it."""
    new_id: Callable[[str], str]
    declines: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """The models that decline a request offering ``fallbacks``, each after writing that many tokens."""
    project_tier: str = "default"
    """The tier an OpenAI request naming none (or ``"auto"``) is served at (``served_tier``)."""

    def served_tier(self, body: JSON) -> str:
        """The ``service_tier`` an OpenAI answer reports: the one the request names, else the project's."""
        tier = body.get("service_tier")
        return self.project_tier if tier in (None, "auto") else str(tier)


@dataclass(frozen=True)
class Answer:
    """A route's reply: a JSON body or an SSE stream, and the usage it reports (recorded by the mock)."""

    usage: JSON | None
    body: JSON | None = None
    events: Events | None = None
    status: int = 200


def pieces(text: str, n: int = 4) -> list[str]:
    """Split ``text`` into about ``n`` stream deltas."""
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    return [
        " ".join(words[i : i + size]) + (" " if i + size < len(words) else "")
        for i in range(0, len(words), size)
    ]


def last_text(items: Any) -> str:
    """The text of the last message with text (for choosing a reply)."""
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        content = item.get("content") if isinstance(item, Mapping) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str) -> JSON:
    kind = _KINDS.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def anthropic_error(status: int, message: str) -> JSON:
    kind = {**_KINDS, 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def bedrock_frame(event: bytes) -> bytes:
    """One event of a Bedrock stream: an AWS event-stream frame (prelude with its CRC32, the string
    headers Bedrock sends, a JSON payload carrying ``event`` in base64, the frame's CRC32)."""
    headers = b""
    for name, value in (
        (":event-type", "chunk"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ):
        headers += (
            bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        )
    payload = json.dumps({"bytes": base64.b64encode(event).decode(), "p": "abcdefghij"}).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))

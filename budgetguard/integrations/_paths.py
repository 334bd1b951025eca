"""Which HTTP requests the httpx transport (``integrations.httpx``) guards: the billed endpoints it reads,
the free ones it passes on, and the rest, refused."""

from __future__ import annotations

import re

from .._errors import ConfigurationError
from .._price_data import is_claude

__all__ = ["Route", "anthropic_body", "routed", "vertex_location"]

_BILLED = (("/chat/completions", "openai"), ("/responses", "openai"), ("/embeddings", "openai"),
           ("/messages", "anthropic"))  # fmt: skip
"""The endpoints whose requests and usage the guard reads (a path ends with one), and their wire format."""

_FREE = re.compile(
    r"/(files|uploads(/[^/]+/(parts|complete|cancel))?|moderations|messages/count_tokens|responses/input_tokens"
    r"|models|conversations(/[^/]+/items)?|threads|threads/[^/]+/messages|chat/completions/[^/]+|(batches|responses|fine_tuning/jobs|vector_stores/[^/]+/file_batches)"
    r"/[^/]+/cancel)$"
)
"""The POSTs that bill nothing (uploads, token counts, cancellations), by the end of their path: sent as
is. (By the whole end: ``/v1/complete``, Anthropic's text completions, bills.)"""

_VERTEX = re.compile(r"/publishers/anthropic/models/([^/:]+):(?:rawPredict|streamRawPredict)$")
"""Anthropic messages on Vertex AI: the model is in the path, not the body (``count-tokens`` counts)."""

_LOCATION = re.compile(r"/locations/([^/]+)/publishers/anthropic/models/")
"""A Vertex AI path's location: ``global``, a region (``us-east5``) or a multi-region (``us``, ``eu``)."""


def vertex_location(path: str) -> str | None:
    """The location of a Vertex AI Anthropic request's path (which prices it: a regional endpoint bills
    newer Claude models above the global one), else ``None``."""
    found = _LOCATION.search(path)
    return None if found is None else found[1]


_BEDROCK = re.compile(r"/model/(.+)/(invoke|invoke-with-response-stream|count-tokens)$")
"""Bedrock runtime's model calls: the model id (or inference profile ARN) is in the path; ``count-tokens``
counts. The body is the model's own format: the guard reads Anthropic's (Claude models) only."""


def anthropic_body(path: str, model: str, body: dict[str, object], hint: str) -> None:
    """Refuse a request whose path names its model (Vertex, Bedrock) unless its body is Anthropic's: a
    Claude model, or the ``anthropic_version`` Bedrock and Vertex require of Anthropic bodies (an
    inference profile's ARN need not name its model)."""
    if not is_claude(model) and "anthropic_version" not in body:
        raise ConfigurationError(
            f"budgetguard cannot price POST {path}: it reads Anthropic message bodies only there, and this "
            f"one for {model!r} is not one (no anthropic_version). Make that call with a client the guard "
            "does not guard (and budget it with guard.reserve() or a decorator's estimate=), or send it "
            f"unguarded by choice: {_allowing(hint, path)}"
        )


Route = tuple[str, str | None]
"""A billed request's wire format, and its model when the path names it (Vertex, Bedrock) rather than
the body."""


def _allowing(hint: str, path: str) -> str:
    return hint.replace("allow=...", f"allow=({path!r},)")


def routed(method: str, path: str, allow: tuple[str, ...], hint: str) -> Route | None:
    """How to read a billed request, or ``None`` for one sent as is; raises for a POST that may bill and
    that the guard cannot read (``hint``: how the caller's surface takes ``allow=``, for the message)."""
    if method != "POST" or any(path.startswith(prefix) for prefix in allow):
        return None
    path = path.rstrip("/")
    for suffix, api in _BILLED:
        if path.endswith(suffix) and not _FREE.search(path):  # (an Assistants thread's messages: free)
            return api, None
    vertex = _VERTEX.search(path)
    if vertex is not None:
        return None if vertex[1] == "count-tokens" else ("anthropic", vertex[1])
    bedrock = _BEDROCK.search(path)
    if bedrock is not None:  # (a body that is not Anthropic's is refused once read: see anthropic_body)
        return None if bedrock[2] == "count-tokens" else ("anthropic", bedrock[1])
    if _FREE.search(path):
        return None
    raise ConfigurationError(
        f"budgetguard cannot price POST {path}: it reads OpenAI chat completions, responses and "
        "embeddings and Anthropic messages (Vertex AI's and Bedrock's too) only. Make that call with a "
        "client the guard does not guard (and budget it with guard.reserve() or a decorator's estimate=), "
        f"or send it unguarded by choice: {_allowing(hint, path)}"
    )

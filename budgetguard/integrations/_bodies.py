"""The streamed response bodies the httpx transport (``integrations.httpx``) reads on their way to the
client: events parsed out of the upstream's bytes (SSE, or AWS event-stream frames on Bedrock), each
event's bytes passed on unchanged, and the body that settles the guarded stream when it ends or closes."""

from __future__ import annotations

import functools
import gc
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from ._eventstream import FrameError, bedrock_event, read_frame

__all__ = ["AsyncBody", "AsyncEvents", "Body", "Events", "SyncEvents", "body_class", "framing_of"]

Framing = Callable[[bytes, bool], "tuple[int, dict[str, Any]] | None"]
"""Finds the first event in a buffer: its end and its JSON data (``{}`` for one without), or ``None``
while it is incomplete. ``final``: no more bytes will come (what is left is one last event)."""


def sse_event(buffer: bytes, final: bool) -> tuple[int, dict[str, Any]] | None:
    """Server-sent events: an event ends at a blank line; its ``data:`` lines hold its JSON."""
    ends = [(i, len(sep)) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep)) >= 0]
    if ends:
        index, width = min(ends)
        end = index + width
    elif final and buffer:
        end = len(buffer)
    else:
        return None
    data = [line[5:].removeprefix(b" ") for line in buffer[:end].splitlines() if line.startswith(b"data:")]
    if not data:
        return end, {}
    try:
        event = json.loads(b"\n".join(data))
    except ValueError:
        return end, {}
    return end, event if isinstance(event, dict) else {}


class BedrockFrames:
    """AWS event-stream frames (``_eventstream``), each carrying one provider event. Bytes that are no
    frame (a damaged checksum, a length out of range) stop the stream with ``FrameError``: neither they
    nor anything after them reach the client, so no content the guard could not count is delivered,
    and the stream is settled from the events read before, as a cut one is. (The SDK's decoder refuses
    the same bytes: it would raise there too, with nothing after them read.)"""

    def __init__(self) -> None:
        self.read = 0  # the bytes of the frames read so far

    def __call__(self, buffer: bytes, final: bool) -> tuple[int, dict[str, Any]] | None:
        try:
            found = read_frame(buffer)
        except FrameError as exc:
            raise FrameError(
                f"budgetguard cannot read Bedrock's event stream at byte {self.read}: {exc}. The stream "
                "is stopped there (nothing after it reaches the client) and charged for the events "
                "before it, flagged usage_missing; retry the request"
            ) from None
        if found is not None:
            frame, end = found
            self.read += end
            return end, bedrock_event(frame)
        if final and buffer:
            return len(buffer), {}  # (an incomplete last frame: no decoder reads it; passed on as it came)
        return None


def framing_of(response: Any) -> Framing | None:
    """How a successful response streams its events, or ``None`` for a whole (JSON) body."""
    kind = response.headers.get("content-type", "")
    if "text/event-stream" in kind:
        return sse_event
    if "application/vnd.amazon.eventstream" in kind:
        return BedrockFrames()
    return None


class Events:
    """Parsed events out of a byte stream: each step returns the next event's JSON data and keeps its
    bytes, unchanged, in ``raw`` for the client."""

    def __init__(self, framing: Framing) -> None:
        self._framing = framing
        self._buffer = b""
        self.raw = b""

    def _next_event(self, final: bool) -> dict[str, Any] | None:
        found = self._framing(self._buffer, final)
        if found is None:
            return None
        end, event = found
        self.raw, self._buffer = self._buffer[:end], self._buffer[end:]
        return event

    def take(self) -> bytes:
        raw, self.raw = self.raw, b""
        return raw


class SyncEvents(Events):
    def __init__(self, response: Any, framing: Framing) -> None:
        super().__init__(framing)
        self._response = response
        self._chunks = response.iter_bytes()

    def __iter__(self) -> SyncEvents:
        return self

    def __next__(self) -> dict[str, Any]:
        while (event := self._next_event(False)) is None:
            chunk = next(self._chunks, None)
            if chunk is None:
                event = self._next_event(True)
                if event is None:
                    raise StopIteration
                return event
            self._buffer += chunk
        return event

    def close(self) -> None:
        self._response.close()


class AsyncEvents(Events):
    def __init__(self, response: Any, framing: Framing) -> None:
        super().__init__(framing)
        self._response = response
        self._chunks = response.aiter_bytes()

    def __aiter__(self) -> AsyncEvents:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while (event := self._next_event(False)) is None:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                event = self._next_event(True)
                if event is None:
                    raise
                return event
            self._buffer += chunk
        return event

    async def close(self) -> None:
        await self._response.aclose()


_collecting = threading.local()
"""``on`` while the cyclic garbage collector runs in this thread (``gc.callbacks``): a body closed then
is closed by a finalizer (an SDK stream's generator, collected), which may run anywhere an allocation
triggers it, in a store's lock or transaction: its settlement is queued for the guard's next operation
(``_deferred``). Per thread: a body closed by another thread meanwhile is closed as ever."""


def _on_gc(phase: str, info: Mapping[str, Any]) -> None:
    _collecting.on = phase == "start"


gc.callbacks.append(_on_gc)


Hidden = Callable[[Mapping[str, Any]], bool] | None
"""Which events are read and not passed on (an event the guard asked for and the client did not)."""


class Body:
    """A streamed response body for the client: the upstream's bytes, event by event, through the
    guarded stream (which reads their usage, and settles when the body ends or is closed), but for the
    events ``hidden`` names."""

    def __init__(self, guarded: Any, events: SyncEvents, hidden: Hidden = None) -> None:
        self._guarded = guarded
        self._events = events
        self._hidden = hidden

    def __iter__(self) -> Iterator[bytes]:
        hidden = self._hidden
        for event in self._guarded:
            raw = self._events.take()
            if raw and (hidden is None or not hidden(event)):
                yield raw

    def close(self) -> None:
        if getattr(_collecting, "on", False):  # closed by a finalizer: no ledger I/O here
            self._events.close()
            self._guarded._settle.queue()
            return
        self._guarded.close()


class AsyncBody:
    def __init__(self, guarded: Any, events: Events, hidden: Hidden = None) -> None:
        self._guarded = guarded
        self._events = events
        self._hidden = hidden

    async def __aiter__(self) -> AsyncIterator[bytes]:
        hidden = self._hidden
        async for event in self._guarded:
            raw = self._events.take()
            if raw and (hidden is None or not hidden(event)):
                yield raw

    async def aclose(self) -> None:
        await self._guarded.aclose()


@functools.cache
def body_class(body: type, base: type) -> type:
    """``body`` as a subclass of the library's byte stream class (the clients check it)."""
    return type(body.__name__, (body, base), {})

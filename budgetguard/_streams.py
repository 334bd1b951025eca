"""Provider streams under the guard: each commits its reservation exactly once, from its usage or
from what was received (an interrupted or abandoned stream is charged what it streamed, flagged).

The wrappers feed what a stream yields to its ``Settlement`` (``_deferred``) and settle it when the
stream ends or is closed; a stream dropped unread only queues its settlement (see ``_deferred``).

A stream its consumer closes after the model finished generating but before the final usage came
(LiteLLM stops reading an Anthropic stream at its first ``message_delta``, which may be an interim
count; a loop that breaks at a chat chunk's ``finish_reason``, before the usage chunk) is read on to
that usage first, within ``DRAIN`` (bytes and seconds): the rest of the body is in flight already, and
the usage is what the provider bills. One closed while the model still generates is not read on (a
caller closes a stream to stop the generation: reading on would make it bill the rest). Past the
bound, or when the stream breaks meanwhile, it is closed and settled as an interrupted one, from
everything read (the last cumulative usage seen, the text, the estimate's rules): never below that. A
stream that broke (a dropped connection) is not read again.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._deferred import Settlement
from ._providers import (
    is_stream_manager,
    served_model,
    served_tier,
)
from ._usage import Usage

__all__ = [
    "DRAIN", "Drain", "GuardedAsyncResponseStream", "GuardedAsyncStream", "GuardedResponseStream",
    "GuardedStream", "GuardedStreamManager", "wrap_stream",
]  # fmt: skip


def wrap_stream(stream: Any, settle: Settlement) -> Any:
    if is_stream_manager(stream):
        return GuardedStreamManager(stream, settle)
    if hasattr(stream, "__anext__"):
        return GuardedAsyncStream(stream, settle)
    return GuardedStream(stream, settle)


@dataclass(frozen=True, slots=True)
class Drain:
    """How far the guard reads a stream its consumer closed before the final usage came (see the module
    docstring): at most ``bytes`` more of its body (as downloaded; a stream that does not show its
    bytes counts its items' text) and for at most ``seconds`` (checked between reads, and on an
    event loop as a timeout on each read; a sync read that stalls waits for the client's read timeout)."""

    bytes: int = 1024 * 1024
    seconds: float = 5.0


DRAIN = Drain()
"""The bound of every drain."""


def _downloaded(stream: Any) -> int | None:
    """The bytes of a stream's HTTP body read so far, when it shows them (an SDK stream's ``response``,
    the transport's events' ``_response``)."""
    for name in ("response", "_response"):
        read = getattr(getattr(stream, name, None), "num_bytes_downloaded", None)
        if isinstance(read, int):
            return read
    return None


class _Reading:
    """One drain's bound: the bytes read and the time since it began (``DRAIN``)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.start = _downloaded(stream)
        self.counted = 0  # (the items' text, when the stream does not show its bytes)
        self.deadline = time.monotonic() + DRAIN.seconds

    def read(self, item: Any) -> None:
        if self.start is None:
            self.counted += len(str(item))

    def more(self) -> bool:
        """Whether to read on."""
        now = _downloaded(self.stream)
        read = self.counted if now is None or self.start is None else now - self.start
        return read < DRAIN.bytes and time.monotonic() < self.deadline


def _drain(step: Callable[[], Any], unfinished: Callable[[], bool], stream: Any) -> None:
    """Call ``step`` (which reads the next item of ``stream`` and feeds it where it is counted) while the
    stream is ``unfinished``, within ``DRAIN``. An error reading (a drop, its end) stops it."""
    reading = _Reading(stream)
    try:
        while unfinished() and reading.more():
            reading.read(step())
    except Exception:  # (StopIteration too: it ended)
        pass


async def _adrain(step: Callable[[], Awaitable[Any]], unfinished: Callable[[], bool], stream: Any) -> None:
    """``_drain`` on an event loop: each read also times out at the bound's deadline (on asyncio)."""
    import asyncio  # (loaded already: an event loop runs this; not at import)

    reading = _Reading(stream)
    try:
        while unfinished() and reading.more():
            if not _on_asyncio():  # (another event loop: the deadline is checked between reads)
                reading.read(await step())
                continue
            async with asyncio.timeout(reading.deadline - time.monotonic()):
                reading.read(await step())
    except Exception:  # (StopAsyncIteration too; TimeoutError: past the bound)
        pass


def _unfinished(settle: Settlement, broken: bool) -> bool:
    """A stream closed after the model finished generating but before its final usage came, and still
    readable: a drain reads on to the usage. (One closed while the model still generates is not read
    on: closing it is how a caller stops the generation, and what it would bill.)"""
    folder = settle.folder
    return folder.generated and not (settle.done or settle.ended or folder.complete or broken)


def _on_asyncio() -> bool:
    import asyncio

    try:
        return asyncio.current_task() is not None
    except RuntimeError:
        return False


def _block_text(block: Any) -> str:
    """What a content block of an Anthropic message snapshot streamed: text, thinking or tool input."""
    for name in ("text", "thinking"):
        value = getattr(block, name, None)
        if isinstance(value, str):
            return value
    value = getattr(block, "input", None)
    return json.dumps(value) if isinstance(value, dict) and value else ""


class GuardedStream(Iterator[Any]):
    """A provider stream that commits its reservation once: at the end, on close, or when collected."""

    _broken = False
    """Reading it raised (a dropped connection, a timeout): it is not read again."""

    def __init__(self, stream: Any, settle: Settlement) -> None:
        self._stream = stream
        self._settle = settle
        self._iter = iter(stream)

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._iter)
        except StopIteration:
            self._settle.ended = True
            self._settle.settle_sync()
            raise
        except BaseException:
            self._broken = True
            raise
        self._settle.folder.feed(item)
        return item

    def _unfinished(self) -> bool:
        return _unfinished(self._settle, self._broken)

    def drain(self) -> None:
        """Read on to the final usage, within ``DRAIN`` (see the module docstring); what is read is fed
        to the settlement, not returned. An error reading stops it: the stream is then a cut one."""
        _drain(self.__next__, self._unfinished, self._stream)

    def close(self) -> None:
        try:
            if self._unfinished():
                self.drain()
            closer = getattr(self._stream, "close", None)
            if closer is not None:
                closer()
        finally:
            self._settle.settle_sync()

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._settle.queue()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class GuardedAsyncStream(AsyncIterator[Any]):
    """The async twin of ``GuardedStream``."""

    _broken = False

    def _unfinished(self) -> bool:
        return _unfinished(self._settle, self._broken)

    def __init__(self, stream: Any, settle: Settlement) -> None:
        self._stream = stream
        self._settle = settle
        self._iter = stream.__aiter__()

    def __aiter__(self) -> GuardedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._iter.__anext__()
        except StopAsyncIteration:
            self._settle.ended = True
            await self._settle.settle_async()
            raise
        except BaseException:
            self._broken = True
            raise
        self._settle.folder.feed(item)
        return item

    async def drain(self) -> None:
        """``GuardedStream.drain``, each read also under a timeout at the bound's deadline (asyncio)."""
        await _adrain(self.__anext__, self._unfinished, self._stream)

    async def aclose(self) -> None:
        try:
            if self._unfinished():
                await self.drain()
            closer = getattr(self._stream, "close", None)
            if closer is not None:
                result = closer()
                if inspect.isawaitable(result):
                    await result
        finally:
            await self._settle.settle_async()

    async def close(self) -> None:
        """The SDKs' async streams close with ``await stream.close()``: as ``aclose`` (a review found it
        passed to the SDK's stream, neither settled nor read on)."""
        await self.aclose()

    async def __aenter__(self) -> GuardedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._settle.queue()  # not a task: the loop may be shutting down, and cancel it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class GuardedResponseStream(GuardedStream):
    """OpenAI's ``ResponseStream`` (from ``client.responses.stream(...)``) or ``ChatCompletionStream``
    (from ``client.chat.completions.stream(...)``), its events read on the way."""

    def until_done(self) -> GuardedResponseStream:
        for _ in self:
            pass
        return self

    def get_final_response(self) -> Any:
        self.until_done()
        return self._stream.get_final_response()

    def get_final_completion(self) -> Any:
        """``client.chat.completions.stream(...)``'s: read to the end through the guard first."""
        self.until_done()
        return self._stream.get_final_completion()


class GuardedAsyncResponseStream(GuardedAsyncStream):
    """The async twin of ``GuardedResponseStream``."""

    async def until_done(self) -> GuardedAsyncResponseStream:
        async for _ in self:
            pass
        return self

    async def get_final_response(self) -> Any:
        await self.until_done()
        return await self._stream.get_final_response()

    async def get_final_completion(self) -> Any:
        await self.until_done()
        return await self._stream.get_final_completion()


class GuardedStreamManager:
    """A stream manager: Anthropic's ``client.messages.stream(...)`` (entering yields the SDK's
    ``MessageStream``, its helpers work as usual; leaving settles from the accumulated message) or
    OpenAI's ``client.responses.stream(...)`` / ``client.chat.completions.stream(...)`` (entering
    yields the SDK's stream wrapped so its events feed the settlement; ``response.completed`` or the
    final usage chunk carries the usage)."""

    def __init__(self, manager: Any, settle: Settlement) -> None:
        self._manager = manager
        self._settle = settle
        self._stream: Any = None
        self._guarded: Any = None  # (OpenAI's: the SDK's stream, wrapped)
        settle.sent = False  # the SDKs send the request on entering

    def _read_on(self) -> None:
        """Leaving after the model finished, before the final usage: read on to it first (``_drain``).
        (Anthropic's helper is settled from its snapshot, whose stop reason comes with the final
        ``message_delta``, usage and all: left before it, the model still generated: not read on.)"""
        if self._guarded is not None and self._guarded._unfinished():
            self._guarded.drain()

    async def _aread_on(self) -> None:
        if self._guarded is not None and self._guarded._unfinished():
            await self._guarded.drain()

    def _observe(self) -> None:
        snapshot = getattr(self._stream, "current_message_snapshot", None) if self._stream else None
        folder = self._settle.folder
        if snapshot is None:
            return
        folder.usage = Usage.from_response(snapshot)
        folder.complete = getattr(snapshot, "stop_reason", None) is not None
        blocks = getattr(snapshot, "content", ())
        folder.text = [_block_text(block) for block in blocks]
        for block in blocks:  # (thinking, code run, server tools used)
            folder.block(block)
        folder.tier = served_tier(snapshot) or folder.tier
        folder.model = served_model(snapshot) or folder.model

    def __enter__(self) -> Any:
        try:
            self._stream = self._manager.__enter__()
        except BaseException as exc:  # the request may have gone out (a read timeout): a failed attempt
            self._settle.fail(exc)
            self._settle.settle_sync()
            raise
        self._settle.sent = True
        if hasattr(type(self._stream), "current_message_snapshot"):  # Anthropic: read at exit
            return self._stream
        self._guarded = GuardedResponseStream(self._stream, self._settle)
        return self._guarded

    def __exit__(self, *exc: Any) -> Any:
        try:
            try:
                self._read_on()
            finally:
                left = self._manager.__exit__(*exc)
            return left
        finally:
            self._observe()
            self._settle.ended = self._settle.folder.complete
            self._settle.settle_sync()

    async def __aenter__(self) -> Any:
        try:
            self._stream = await self._manager.__aenter__()
        except BaseException as exc:
            self._settle.fail(exc)
            await self._settle.settle_async()
            raise
        self._settle.sent = True
        if hasattr(type(self._stream), "current_message_snapshot"):  # Anthropic: read at exit
            return self._stream
        self._guarded = GuardedAsyncResponseStream(self._stream, self._settle)
        return self._guarded

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            try:
                await self._aread_on()
            finally:
                left = await self._manager.__aexit__(*exc)
            return left
        finally:
            self._observe()
            self._settle.ended = self._settle.folder.complete
            await self._settle.settle_async()

    def __del__(self) -> None:
        self._settle.queue()

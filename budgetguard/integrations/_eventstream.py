"""AWS event-stream framing, as Bedrock streams a model's answer (``application/vnd.amazon.eventstream``):
frames read out of bytes with both checksums checked, and the provider events Bedrock's frames carry.

A frame (a "message" in AWS's words) is::

    total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes      <- the 12-byte prelude
    headers: name length (uint8), name (UTF-8), value type (uint8), value           <- headers length bytes
    payload                                                                         <- the rest
    CRC32 of everything before it (uint32)

all big-endian. Bedrock's ``InvokeModelWithResponseStream`` sends one ``chunk`` event per provider event:
headers ``:message-type: event``, ``:event-type: chunk``, and a JSON payload whose ``bytes`` is the
provider's event (for Claude, an Anthropic stream event: ``message_start``, ``message_delta``...) in
base64; an error mid-stream is a frame with ``:message-type: exception`` (``:exception-type`` names it)
and a JSON payload with its ``message``. Nothing here needs ``botocore``.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_FRAME", "Frame", "FrameError", "bedrock_event", "read_frame"]

PRELUDE = 12
"""The prelude's bytes: total length, headers length, and their CRC32."""
MAX_FRAME = 16 * 1024 * 1024 + 1024
"""The longest frame read (AWS caps a message's payload at 16 MiB): a longer length is a corrupt prelude."""

HeaderValue = bool | int | bytes | str


class FrameError(ValueError):
    """Bytes that are no AWS event-stream frame (a checksum that does not match, a length out of range)."""


@dataclass(frozen=True, slots=True)
class Frame:
    headers: Mapping[str, HeaderValue]
    payload: bytes


_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}
"""The header value types of a fixed size: byte, short, integer, long, timestamp (ms since the epoch)."""


def read_frame(buffer: bytes | bytearray | memoryview) -> tuple[Frame, int] | None:
    """The first frame of ``buffer`` and its length in bytes, or ``None`` while the frame is incomplete.
    Raises ``FrameError`` when the bytes are not a frame."""
    if len(buffer) < PRELUDE:
        return None
    view = memoryview(buffer)
    total, headers_length, prelude_crc = struct.unpack_from(">III", view)
    if zlib.crc32(view[:8]) != prelude_crc:
        raise FrameError("the prelude's checksum does not match: not an AWS event-stream frame")
    if not PRELUDE + headers_length + 4 <= total <= MAX_FRAME:
        raise FrameError(f"a frame of {total} bytes with {headers_length} bytes of headers cannot be")
    if len(buffer) < total:
        return None
    (message_crc,) = struct.unpack_from(">I", view, total - 4)
    if zlib.crc32(view[: total - 4]) != message_crc:
        raise FrameError("the frame's checksum does not match: its bytes were damaged")
    headers = _headers(bytes(view[PRELUDE : PRELUDE + headers_length]))
    return Frame(headers, bytes(view[PRELUDE + headers_length : total - 4])), total


def _headers(raw: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode()
            at += 1 + size
            kind = raw[at]
            at += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                (value,) = struct.unpack_from(_FIXED[kind], raw, at)
                at += struct.calcsize(_FIXED[kind])
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", raw, at)
                data = raw[at + 2 : at + 2 + length]
                if len(data) != length:
                    raise FrameError(f"header {name!r} runs past the headers")
                value = data.decode() if kind == 7 else data
                at += 2 + length
            elif kind == 9:  # a UUID
                value = raw[at : at + 16]
                at += 16
            else:
                raise FrameError(f"header {name!r} has an unknown value type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise FrameError(f"the frame's headers cannot be read: {exc}") from None
    if at != len(raw):
        raise FrameError("the frame's headers run past their length")
    return headers


def bedrock_event(frame: Frame) -> dict[str, Any]:
    """The provider event a Bedrock frame carries: a ``chunk``'s ``bytes`` decoded; an exception frame as
    an Anthropic ``error`` event (its type the ``:exception-type``); ``{}`` for anything else."""
    kind = frame.headers.get(":message-type")
    try:
        body = json.loads(frame.payload) if frame.payload else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if kind == "exception" or kind == "error":
        name = frame.headers.get(":exception-type") or frame.headers.get(":error-code") or "error"
        message = body.get("message") or frame.headers.get(":error-message") or ""
        return {"type": "error", "error": {"type": str(name), "message": str(message)}}
    if kind != "event" or frame.headers.get(":event-type") != "chunk":
        return {}
    encoded = body.get("bytes")
    if not isinstance(encoded, str):
        return {}
    try:
        event = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return {}
    return event if isinstance(event, dict) else {}

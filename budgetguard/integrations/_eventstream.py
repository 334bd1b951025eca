"""AWS event-stream framing, as Bedrock streams a model's answer (``application/vnd.amazon.eventstream``):
frames read out of bytes with both checksums checked, and the provider events Bedrock's frames carry,
read by the rules of the decoder the SDK reads them with (botocore's ``eventstream`` and its
``EventStreamJSONParser``): what it reads, this reads the same; what it refuses, this refuses.

A frame (a "message" in AWS's words) is::

    total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes      <- the 12-byte prelude
    headers: name length (uint8), name (UTF-8), value type (uint8), value           <- headers length bytes
    payload                                                                         <- the rest
    CRC32 of everything before it (uint32)

all big-endian. Bedrock's ``InvokeModelWithResponseStream`` sends one ``chunk`` event per provider event:
headers ``:message-type: event``, ``:event-type: chunk``, and a JSON payload whose ``bytes`` is the
provider's event (for Claude, an Anthropic stream event: ``message_start``, ``message_delta``...) in
base64; an error mid-stream is a frame with ``:message-type: exception`` (``:exception-type`` names it)
and a JSON payload with its ``message``. botocore reads any other (or no) ``:message-type`` as an event,
decodes base64 leniently (characters outside the alphabet skipped), and bounds a frame by its headers
(128 KiB) and payload (24 MiB), not by its total: so does this. Nothing here needs ``botocore``.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import UsageError

__all__ = ["MAX_HEADERS", "MAX_PAYLOAD", "Frame", "FrameError", "bedrock_event", "read_frame"]

PRELUDE = 12
"""The prelude's bytes: total length, headers length, and their CRC32."""
MAX_HEADERS = 128 * 1024
"""The longest headers read (botocore's ``_MAX_HEADERS_LENGTH``): longer is a corrupt prelude."""
MAX_PAYLOAD = 24 * 1024 * 1024
"""The longest payload read (botocore's ``_MAX_PAYLOAD_LENGTH``): longer is a corrupt prelude."""

HeaderValue = bool | int | bytes | str


class FrameError(UsageError):
    """Bytes that are no AWS event-stream frame (a checksum that does not match, a length out of range):
    the SDK's decoder refuses them too."""


@dataclass(frozen=True, slots=True)
class Frame:
    headers: Mapping[str, HeaderValue]
    payload: bytes


_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}
"""The header value types of a fixed size: byte, short, integer, long, timestamp (ms since the epoch)."""


def read_frame(buffer: bytes | bytearray | memoryview) -> tuple[Frame, int] | None:
    """The first frame of ``buffer`` and its length in bytes, or ``None`` while the frame is incomplete.
    Raises ``FrameError`` when the bytes are not a frame.

    As botocore reads a frame given its bytes alone (the guard passes frames on one at a time, so the
    SDK's buffer holds exactly the frame): a total length too short for the headers and checksum it
    declares reads the headers and payload cut at the frame's end (botocore slices them so); one shorter
    than the prelude is refused (botocore then reads its checksum out of the prelude)."""
    if len(buffer) < PRELUDE:
        return None
    view = memoryview(buffer)
    total, headers_length, prelude_crc = struct.unpack_from(">III", view)
    if zlib.crc32(view[:8]) != prelude_crc:
        raise FrameError("the prelude's checksum does not match: not an AWS event-stream frame")
    if headers_length > MAX_HEADERS or total - headers_length - PRELUDE - 4 > MAX_PAYLOAD:
        raise FrameError(f"a frame of {total} bytes with {headers_length} bytes of headers is too long")
    if total < PRELUDE:
        raise FrameError(f"a frame of {total} bytes cannot be: shorter than its prelude")
    if len(buffer) < total:
        return None
    frame = view[:total]
    (message_crc,) = struct.unpack_from(">I", frame, total - 4)
    if zlib.crc32(frame[: total - 4]) != message_crc:
        raise FrameError("the frame's checksum does not match: its bytes were damaged")
    headers_end = PRELUDE + headers_length
    headers = _headers(bytes(frame[PRELUDE:headers_end]))
    return Frame(headers, bytes(frame[headers_end : total - 4])), total


def _headers(raw: bytes) -> dict[str, HeaderValue]:
    """The headers, as botocore's ``EventStreamHeaderParser`` reads them: a string, byte array or UUID
    cut short by the end of the headers is read cut short; a name or a fixed-size value cut short, an
    unknown value type, a name given twice, or a name or string that is no UTF-8 is an error."""
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
                value = data.decode() if kind == 7 else data
                at += 2 + length
            elif kind == 9:  # a UUID
                value = raw[at : at + 16]
                at += 16
            else:
                raise FrameError(f"header {name!r} has an unknown value type {kind}")
            if name in headers:
                raise FrameError(f"header {name!r} is given twice")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise FrameError(f"the frame's headers cannot be read: {exc}") from None
    return headers


def bedrock_event(frame: Frame) -> dict[str, Any]:
    """The provider event a Bedrock frame carries, as the SDK reads it: a ``chunk``'s ``bytes`` decoded;
    an ``exception`` or ``error`` frame as an Anthropic ``error`` event (its type the
    ``:exception-type``); ``{}`` for anything else (what the SDK skips or fails on)."""
    kind = frame.headers.get(":message-type")
    body = _json(frame.payload)
    if kind == "exception" or kind == "error":
        body = body if isinstance(body, dict) else {}
        name = frame.headers.get(":exception-type") or frame.headers.get(":error-code") or "error"
        message = body.get("message") or frame.headers.get(":error-message") or ""
        return {"type": "error", "error": {"type": str(name), "message": str(message)}}
    if frame.headers.get(":event-type") != "chunk" or not isinstance(body, dict):
        return {}
    encoded = body.get("bytes")
    if encoded is None:
        return {}
    try:  # botocore's blob parser: base64.b64decode, lenient (not validate=True)
        event = json.loads(base64.b64decode(encoded).decode())
    except (TypeError, ValueError):  # (binascii.Error and UnicodeDecodeError are ValueErrors)
        return {}
    return event if isinstance(event, dict) else {}


def _json(payload: bytes) -> Any:
    """A payload's JSON as botocore reads it: UTF-8 text (no byte-order mark), ``{}`` when empty."""
    if not payload:
        return {}
    try:
        return json.loads(payload.decode())
    except ValueError:
        return None

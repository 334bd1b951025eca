"""A cheaper ``__init__`` for the frozen, slotted dataclasses a guarded call builds.

``@dataclass(frozen=True, slots=True)`` generates an ``__init__`` that sets each field with
``object.__setattr__(self, name, value)``: a global lookup, an attribute lookup and a call that looks the
name up again in the class, per field. ``fast_init`` replaces it with one with the same signature,
defaults, default factories and ``__post_init__`` that, for a class deriving from ``object`` alone,
switches the new instance to a mutable twin with the very same slots (``__class__`` assignment, which
CPython allows between identical layouts), stores each field with a plain attribute store (the
interpreter's specialized slot store) and switches it back; for a class with other bases, it calls each
slot's own member descriptor (``Cls.field.__set__``), bound once. Either way about a third to a half of
the generated ``__init__``'s cost. Instances stay frozen: ``__setattr__`` still raises.

``fast_new(cls)`` gives the same steps as a plain function (same parameters) that returns the new
instance: calling it skips the class call's own layers (``type.__call__``, ``__new__``, the ``__init__``
lookup and its argument tuple), for the objects a hot path builds on every call.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["fast_init", "fast_new"]


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass ``cls`` the cheaper ``__init__`` (see the module docstring)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init takes a @dataclass(frozen=True, slots=True) class, not {cls!r}")
    twin = cls.__bases__ == (object,)  # a twin needs the same layout: the same slots on object alone
    namespace: dict[str, Any] = {"_new_missing": _MISSING, "_cls": cls, "_set_class": object.__setattr__}
    if twin:
        namespace["_twin"] = type(f"_{cls.__name__}Init", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    namespace["_object_new"] = object.__new__
    args: list[str] = []
    body: list[str] = []
    for i, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not f.init:
            continue  # set by __post_init__, as the generated __init__ leaves it
        if f.kw_only:
            raise TypeError(f"fast_init does not handle keyword-only fields ({cls.__name__}.{f.name})")
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
            value = f.name
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{i}"] = f.default_factory
            args.append(f"{f.name}=_new_missing")
            value = f"_factory{i}() if {f.name} is _new_missing else {f.name}"
        else:
            args.append(f.name)
            value = f.name
        if twin:
            body.append(f"self.{f.name} = {value}")
        else:
            slot = next(k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__)  # (a base's too)
            namespace[f"_set{i}"] = slot.__set__
            body.append(f"_set{i}(self, {value})")
    if twin:
        body.append("self.__class__ = _cls")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    init_body = ['_set_class(self, "__class__", _twin)', *body] if twin else body or ["pass"]
    new_body = ["self = _twin()" if twin else "self = _object_new(_cls)", *body, "return self"]
    source = f"def __init__(self, {', '.join(args)}):\n" + "".join(f"    {line}\n" for line in init_body)
    source += f"def _new({', '.join(args)}):\n" + "".join(f"    {line}\n" for line in new_body)
    exec(source, namespace)
    init = namespace["__init__"]
    _factories[cls] = namespace["_new"]
    generated = cls.__init__
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__signature__ = inspect.signature(generated)  # what help() and IDEs show: the dataclass's own
    init.__annotations__ = generated.__annotations__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def fast_new(cls: type[T]) -> Callable[..., T]:
    """A function taking ``cls``'s fields as its ``__init__`` does and returning the new instance, built
    as ``fast_init``'s ``__init__`` builds it, without the class call (see the module docstring)."""
    found = _factories.get(cls)
    if found is None:
        raise TypeError(f"fast_new takes a class decorated with @fast_init, not {cls!r}")
    return found


_MISSING = object()
_factories: dict[type, Callable[..., Any]] = {}
"""``fast_new``'s factory of each ``@fast_init`` class: one entry per decorated class, written when the class
is defined, so bounded by the code itself. Not a ``_cache.Bounded``: a forgotten entry could not be
derived again (``fast_new`` would refuse its class), and emptying it would break every such class."""

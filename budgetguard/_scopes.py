"""Scopes of a call: ``global``, the decorator's specs over ``budget_context()``'s over the guard's defaults.

A spec is a literal id (``feature="search"``), a template over the call's arguments (``user="{user_id}"``)
or a callable of them; the set a call resolves to is validated once and kept (calls repeat their scopes).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ._budgets import Scope
from ._cache import Bounded, memo
from ._context import current_scopes
from ._errors import ConfigurationError

__all__ = ["ScopeSpec", "Scopes", "default_ids", "resolve_scopes", "scope_set"]

ScopeSpec = str | Callable[..., Any]


def resolve_scopes(
    specs: Mapping[str, ScopeSpec],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    arguments: Mapping[str, Any],
    defaults: Mapping[str, str],
) -> Scopes:
    """A call's scopes: the decorator's specs over ``budget_context()``'s over the guard's default ids.
    A spec that gives ``None`` (a callable's result, a template argument) names no id."""
    ids: dict[str, str] = {**defaults, **current_scopes()} if defaults else dict(current_scopes())
    for kind, spec in specs.items():
        if callable(spec):
            value = spec(*args, **kwargs)
        elif "{" in spec:
            try:
                if any(arguments[name] is None for name in template_arguments(spec)):
                    continue  # user="{user_id}" with user_id=None: no id (not the id "None")
                value = spec.format_map(arguments)
            except (KeyError, IndexError) as exc:
                raise ConfigurationError(
                    f"scope template {spec!r} names an argument the call lacks: {exc}"
                ) from None
        else:
            value = spec
        if value is not None:
            ids[kind] = str(value)
    return scope_set(ids)


@memo("guard.template_arguments", 1024)
def template_arguments(spec: str) -> tuple[str, ...]:
    """The arguments a template reads: ``"{user.id}-{team}"`` -> ``("user", "team")``."""
    names = (field for _, field, _, _ in string.Formatter().parse(spec) if field)
    return tuple(re.split(r"[.\[]", name, maxsplit=1)[0] for name in names)


def default_ids(ids: Mapping[str, str]) -> Mapping[str, str]:
    for kind, ident in ids.items():
        if kind == "global" or not isinstance(ident, str):
            raise ConfigurationError(
                "default_scopes maps a scope kind to an id, e.g. {'user': 'anonymous'}; "
                f"got {kind!r}: {ident!r}"
            )
        Scope(kind, ident)  # a bad kind or id fails when the guard is built
    return MappingProxyType(dict(ids))


@dataclass(frozen=True, slots=True)
class Scopes:
    """A call's scopes (``global`` and one per kind), their labels, and their ids as a cache key."""

    scopes: tuple[Scope, ...]
    labels: tuple[str, ...]
    """The journal's and events' names of the scopes."""
    key: tuple[tuple[str, str], ...]
    """``(kind, id)`` pairs: hashed in C, where hashing the ``Scope`` dataclasses runs Python."""
    kinds: frozenset[str]
    """The kinds named (``global`` included): a call checks ``Guard.required_kinds`` against it."""


def scope_set(ids: Mapping[str, str]) -> Scopes:
    """``global`` and a scope per kind: id, validated once per distinct set (calls repeat them)."""
    key = tuple(ids.items())
    found = _scope_sets.get(key)
    if found is None:
        scopes = (Scope("global"), *(Scope(kind, ident) for kind, ident in key if kind != "global"))
        found = Scopes(scopes, tuple(str(s) for s in scopes), key, frozenset(s.kind for s in scopes))
        _scope_sets.put(key, found)
    return found


_scope_sets: Bounded[tuple[tuple[str, str], ...], Scopes] = Bounded("guard.scope_sets", 10_000)

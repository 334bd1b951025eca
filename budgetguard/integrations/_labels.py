"""Metric labels from scope labels, with bounded cardinality: ids only for the kinds a user allows."""

from __future__ import annotations

from collections.abc import Collection, Iterable


def scope_parts(label: str, id_kinds: Collection[str]) -> tuple[str, str]:
    """``"user:alice"`` -> ``("user", "")``, or ``("user", "alice")`` when ``"user"`` is in ``id_kinds``.

    Raw ids are unbounded (one series per end user); only kinds whose ids are few and not personal
    (``feature``, ``team``) should be allowed.
    """
    kind, _, ident = label.partition(":")
    return kind, ident if kind in id_kinds else ""


def checked_kinds(kinds: Iterable[str]) -> frozenset[str]:
    if isinstance(kinds, str):
        raise TypeError("id_kinds is a collection of scope kinds, e.g. ('feature', 'team')")
    return frozenset(kinds)

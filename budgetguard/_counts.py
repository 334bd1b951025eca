"""The one rule for a token count a provider reports: a non-negative int, else a ``UsageError``."""

from __future__ import annotations

from typing import Any

from ._errors import UsageError

__all__ = ["checked"]


def checked(value: Any, name: str, obj: Any, *, required: bool = False) -> int:
    """``value``, read from ``obj``'s field ``name``, as a token count (0 when absent and optional); a
    count that is not a non-negative int (a string, a float, a bool, a negative) is a ``UsageError``."""
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

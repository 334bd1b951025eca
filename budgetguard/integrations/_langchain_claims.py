"""Which handler of a guard claimed a LangChain run first: by the run's id, gone with the id."""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["first_claim"]

_claims: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
"""Per run id (LangChain's ``UUID``, weakly held), the first claimer of each guard."""
_lock = threading.Lock()


def first_claim(run_id: Any, guard: object, handler: object) -> Any:
    """Claim the run for ``handler`` on ``guard``: ``None`` if it is the first (or the id takes no weak
    reference, a caller's own: never claimed), else the handler that claimed it first (``handler`` itself
    when it claimed it before)."""
    with _lock:
        try:
            owners = _claims.setdefault(run_id, {})
        except TypeError:
            return None
        first = owners.get(guard)
        if first is None:
            owners[guard] = handler
        return first

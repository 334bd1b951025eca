"""Which handlers of a guard guard a LangChain run: claims by run id and start, ended as the run settles."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Protocol, TypeVar

__all__ = ["Claimer", "claim", "forget", "holds"]


class Claimer(Protocol):
    middleware: bool
    """An agent middleware's handler: the others of its guard leave a run to it, or give it up to it."""


C = TypeVar("C", bound=Claimer)


class _Claim:
    """The handlers of one guard guarding one start of a run: a middleware's, or plain ones (each charges
    its own scopes)."""

    __slots__ = ("failed", "mark", "middleware", "plain")

    def __init__(self, mark: object) -> None:
        self.mark = mark  # (held: no other start reuses its id while the claim is kept)
        self.middleware: Any = None  # (a Claimer)
        self.plain: list[Any] = []
        self.failed = False  # (its start failed: kept for the start's later handlers, till another start)

    def __contains__(self, handler: Claimer) -> bool:
        return handler is self.middleware or any(held is handler for held in self.plain)


_claims: weakref.WeakKeyDictionary[Any, dict[Any, list[_Claim]]] = weakref.WeakKeyDictionary()
"""Per run id (LangChain's ``UUID``, weakly held), per guard, the claims of its starts in flight."""
_lock = threading.Lock()


def _of(run_id: Any, guard: object, mark: object, *, new: bool) -> _Claim | None:
    try:
        starts = _claims.get(run_id) if not new else _claims.setdefault(run_id, {})
    except TypeError:  # (an id that takes no weak reference, a caller's own: never claimed)
        return None
    if starts is None:
        return None
    claims = starts.setdefault(guard, []) if new else starts.get(guard, [])
    found = next((held for held in claims if held.mark is mark), None)
    if found is None and new:
        found = _Claim(mark)
        claims[:] = [*(held for held in claims if not held.failed), found]
    return found


def claim(run_id: Any, guard: object, handler: C, mark: object) -> tuple[bool, list[C]]:
    """Claim the start ``mark`` (the objects LangChain passes each handler of one start: ``options``) of
    the run ``run_id`` for ``handler`` on ``guard``. Whether it guards the run (not when it claimed it
    before, an async call's twin, nor when a middleware's handler holds it, nor after the start failed),
    and the plain handlers a middleware's takes it from, whose holds are to be released: the middleware's
    claim comes first, in whichever order LangChain dispatches the start. An id that takes no weak
    reference is always guarded."""
    with _lock:
        found = _of(run_id, guard, mark, new=True)
        if found is None:
            return True, []
        if handler in found or found.middleware is not None or found.failed:
            return False, []
        if not handler.middleware:
            found.plain.append(handler)
            return True, []
        found.middleware, taken, found.plain = handler, found.plain, []
        return True, taken


def holds(run_id: Any, guard: object, handler: Claimer, mark: object) -> bool:
    """Whether ``handler`` still holds its claim of the start (a middleware's handler took none from it)."""
    with _lock:
        found = _of(run_id, guard, mark, new=False)
        return found is None or handler in found


_EVERY: Any = object()


def forget(
    run_id: Any, guard: object, handler: Claimer, mark: object = _EVERY, *, failed: bool = False
) -> None:
    """Drop ``handler``'s claims of the run (it settled): of its start ``mark`` when given (another run in
    flight may share a caller's id), else of every start. A later start with the same id (a caller's
    ``run_id`` reused) is claimed anew. A start that ``failed`` (a refusal) keeps its claim for the start's
    handlers still to come (LangChain runs an async handler's coroutine after a sync handler raised),
    until the id's next start."""
    with _lock:
        try:
            starts = _claims.get(run_id)
        except TypeError:
            return
        claims = starts.get(guard) if starts is not None else None
        if claims is None:
            return
        for found in claims:
            if mark is not _EVERY and found.mark is not mark:
                continue
            if failed and handler in found:
                found.failed = True
                continue
            if found.middleware is handler:
                found.middleware = None
            found.plain = [held for held in found.plain if held is not handler]
        claims[:] = [found for found in claims if found.middleware is not None or found.plain]
        if not claims:
            del starts[guard]  # type: ignore[union-attr]
            if not starts:
                del _claims[run_id]

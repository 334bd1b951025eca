"""Finding the guard's refusal inside a framework's error: the frameworks catch what their client raised
and raise their own errors, the refusal as their cause or context."""

from __future__ import annotations

from .._errors import BudgetExceededError

__all__ = ["refusal_in"]


def refusal_in(exc: BaseException) -> BudgetExceededError | None:
    """The refusal ``exc`` is, or carries in its chain of causes and contexts (a few links deep)."""
    link: BaseException | None = exc
    for _ in range(8):
        if link is None:
            return None
        if isinstance(link, BudgetExceededError):
            return link
        link = link.__cause__ or link.__context__
    return None

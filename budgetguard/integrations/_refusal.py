"""Finding the guard's refusal inside a framework's error, and keeping it out of the framework's logs: the
frameworks catch what their client (or a callback) raised and raise their own errors, the refusal as their
cause or context, and some log it on the way as a failure it is not."""

from __future__ import annotations

import logging
import sys
from typing import TypeVar

from .._errors import BudgetExceededError

E = TypeVar("E", bound=BaseException)

__all__ = ["quiet_refusals", "refusal_in"]


def refusal_in(exc: BaseException, kind: type[E] = BudgetExceededError) -> E | None:  # type: ignore[assignment]
    """The refusal ``exc`` is, or carries in its chain of causes and contexts (a few links deep); or the
    error of another ``kind`` (the guard's ``PricingError``, say)."""
    link: BaseException | None = exc
    for _ in range(8):
        if link is None:
            return None
        if isinstance(link, kind):
            return link
        link = link.__cause__ or link.__context__
    return None


class _QuietRefusals(logging.Filter):
    """Drops the framework's record of a refusal (its "Error in ..." line), logged inside the ``except``
    that handles the refusal itself: the refusal goes on to the caller, as an error or to a fallback, and
    is no failure to log. Only a record whose message starts with one of ``prefixes`` and whose handled
    exception is the refusal: any other record passes, an error of another handler raised while a
    refusal was being handled too."""

    def __init__(self) -> None:
        super().__init__()
        self.prefixes: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(sys.exc_info()[1], BudgetExceededError):
            return True
        return not record.getMessage().startswith(self.prefixes)


_QUIET: dict[str, _QuietRefusals] = {}


def quiet_refusals(logger_name: str, prefix: str) -> None:
    """Keep the records of a refusal that start with ``prefix`` out of the logger ``logger_name``
    (idempotent)."""
    quiet = _QUIET.get(logger_name)
    if quiet is None:
        quiet = _QUIET[logger_name] = _QuietRefusals()
        logging.getLogger(logger_name).addFilter(quiet)
    if prefix not in quiet.prefixes:
        quiet.prefixes += (prefix,)

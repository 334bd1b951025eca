"""Finding the guard's refusal inside a framework's error, and keeping it out of the framework's logs: the
frameworks catch what their client (or a callback) raised and raise their own errors, the refusal as their
cause or context, and some log it on the way as a failure it is not."""

from __future__ import annotations

import logging
import sys

from .._errors import BudgetExceededError

__all__ = ["quiet_refusals", "refusal_in"]


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


class _QuietRefusals(logging.Filter):
    """Drops a record logged inside the ``except`` that handles a refusal (the framework's "Error in ..."
    line): the refusal goes on to the caller, as an error or to a fallback, and is no failure to log.
    Every other record of the logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        handling = sys.exc_info()[1]
        return handling is None or refusal_in(handling) is None


_QUIET = _QuietRefusals()


def quiet_refusals(logger_name: str) -> None:
    """Keep refusals out of the records of the logger ``logger_name`` (idempotent)."""
    logger = logging.getLogger(logger_name)
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)

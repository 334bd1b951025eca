"""Finding the guard's refusal inside a framework's error, and keeping it out of the framework's logs: the
frameworks catch what their client (or a callback) raised and raise their own errors, the refusal as their
cause or context (or a member of an exception group), and some log it on the way as a failure it is not.

One walk (``_found_in``) for every integration: an error's chain as Python prints it (its ``__cause__``,
else its ``__context__`` unless ``raise ... from None`` suppressed it), a few links deep, into the members of
an exception group when every member carries a refusal (a group with another failure in it is that
failure's to report). The web middlewares follow causes only (``raise ... from refusal``, as instructor
and tenacity chain): an error raised while an app handled a refusal (its fallback failed) is another
failure, a 500 to log, not the refusal; and they name the framework's own answers (an ``HTTPException``,
Django's ``Http404``): an app that answered a refusal with one of those chose its status, and the walk
stops there.
"""

from __future__ import annotations

import logging
import sys
from typing import TypeVar

from .._errors import BudgetExceededError, MissingScopeError

E = TypeVar("E", bound=BaseException)

__all__ = ["quiet_refusals", "refusal_in", "request_refusal_in"]

_LINKS = 8  # how far down a chain (and into nested groups) the walk looks
Kinds = tuple[type[BaseException], ...]  # exception classes


def refusal_in(exc: BaseException, kind: type[E] = BudgetExceededError) -> E | None:  # type: ignore[assignment]
    """The refusal ``exc`` is, or carries in its chain of causes and contexts (a few links deep); or the
    error of another ``kind`` (the guard's ``PricingError``, say)."""
    found = _found_in(exc, (kind,), (), _LINKS, True, {})
    return found if isinstance(found, kind) else None


def request_refusal_in(
    exc: BaseException, answers: Kinds = ()
) -> BudgetExceededError | MissingScopeError | None:
    """What a web middleware answers for an error that escaped the app: the refusal (429/402) or the
    missing scope id (400) it is or carries as its cause, unless an error of the framework's ``answers``
    (its ``HTTPException``) comes first in the chain: the app chose that status itself."""
    found = _found_in(exc, (BudgetExceededError, MissingScopeError), answers, _LINKS, False, {})
    return found if isinstance(found, BudgetExceededError | MissingScopeError) else None


def _found_in(
    exc: BaseException,
    kinds: Kinds,
    answers: Kinds,
    depth: int,
    contexts: bool,
    seen: dict[int, BaseException | None],
) -> BaseException | None:
    """The error of ``kinds`` in ``exc``'s chain (``contexts``: its contexts too), ``depth`` links deep;
    ``seen``: the groups' members walked already (a group may hold one error many times)."""
    link: BaseException | None = exc
    for _ in range(depth):
        if link is None or isinstance(link, answers):
            return None
        if isinstance(link, kinds):
            return link
        if isinstance(link, BaseExceptionGroup):
            first: BaseException | None = None
            for member in link.exceptions:
                if id(member) not in seen:
                    seen[id(member)] = _found_in(member, kinds, answers, depth - 1, contexts, seen)
                found = seen[id(member)]
                if found is None:
                    return None  # (a member without one: the group is that failure's)
                first = first or found
            return first
        if link.__cause__ is not None or link.__suppress_context__ or not contexts:
            link = link.__cause__
        else:
            link = link.__context__
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

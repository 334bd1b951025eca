"""Context that follows a call: the scopes of ``budget_context`` and the trackers of ``track``.

Both live in ``contextvars``, so they follow asyncio tasks (each task copies its creator's context).
Python threads start with an empty context, so the first ``budget_context()`` or ``track()`` calls
``follow_threads()``: from then on a ``threading.Thread`` runs in a copy of the context of the code that
started it, and a ``ThreadPoolExecutor`` task in a copy of the context that submitted it (what Python
3.14's ``thread_inherit_context`` flag does for threads). Set ``BUDGETGUARD_FOLLOW_THREADS=0`` to keep
Python's behaviour and carry contexts by hand with ``budgetguard.propagate(fn)``.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from ._money import to_usd
from ._usage import Usage

__all__ = [
    "ModelTotals", "Tracker", "budget_context", "current_scopes", "follow_threads", "propagate", "track",
]  # fmt: skip

P = ParamSpec("P")
T = TypeVar("T")

_scopes: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "budgetguard_scopes", default=MappingProxyType({})
)
_trackers: contextvars.ContextVar[tuple[Tracker, ...]] = contextvars.ContextVar(
    "budgetguard_trackers", default=()
)


_following = False
_follow_lock = threading.Lock()


def follow_threads() -> None:
    """Make contexts follow threads: each ``Thread`` runs in a copy of its starter's context, each
    ``ThreadPoolExecutor`` task in a copy of its submitter's. Idempotent; patches ``Thread.start``
    and ``ThreadPoolExecutor.submit`` once per process (as OpenTelemetry's threading instrumentation
    does)."""
    global _following
    with _follow_lock:
        if _following:
            return
        _following = True
        start, submit = threading.Thread.start, ThreadPoolExecutor.submit

        def start_in_context(self: threading.Thread) -> None:
            run, context = self.run, contextvars.copy_context()
            self.run = lambda: context.run(run)  # type: ignore[method-assign]
            start(self)

        def submit_in_context(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

        threading.Thread.start = start_in_context  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = submit_in_context  # type: ignore[method-assign,assignment]


def _auto_follow() -> None:
    if not _following and os.environ.get("BUDGETGUARD_FOLLOW_THREADS", "1") != "0":
        follow_threads()


@contextmanager
def budget_context(**scopes: str | None) -> Iterator[Mapping[str, str]]:
    """Scope ids for every guarded call inside: ``with budget_context(user="alice", feature="search")``.

    Nested contexts add to (and override) the outer one; ``None`` removes a scope.
    """
    _auto_follow()
    merged = dict(_scopes.get())
    for kind, ident in scopes.items():
        if ident is None:
            merged.pop(kind, None)
        else:
            merged[kind] = str(ident)
    token = _scopes.set(merged)
    try:
        yield merged
    finally:
        _scopes.reset(token)


def current_scopes() -> Mapping[str, str]:
    return _scopes.get()


def propagate(fn: Callable[P, T]) -> Callable[P, T]:
    """Wrap ``fn`` to run in a copy of the current context (for ``threading.Thread(target=...)``)."""
    context = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return context.run(fn, *args, **kwargs)

    return run


@dataclass
class ModelTotals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost(self) -> Decimal:
        return to_usd(self.cost_nano)


@dataclass
class Tracker:
    """Totals of the guarded and metered calls made inside ``with track() as t:``."""

    by_model: dict[str, ModelTotals] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, model: str, usage: Usage, cost_nano: int) -> None:
        with self._lock:
            totals = self.by_model.setdefault(model, ModelTotals())
            totals.calls += 1
            totals.input_tokens += usage.total_input_tokens
            totals.output_tokens += usage.output_tokens
            totals.cost_nano += cost_nano

    def _sum(self, name: str) -> int:
        with self._lock:
            return sum(getattr(t, name) for t in self.by_model.values())

    @property
    def calls(self) -> int:
        return self._sum("calls")

    @property
    def input_tokens(self) -> int:
        return self._sum("input_tokens")

    @property
    def output_tokens(self) -> int:
        return self._sum("output_tokens")

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost(self) -> Decimal:
        """Total cost in USD (exact)."""
        return to_usd(self._sum("cost_nano"))

    def __str__(self) -> str:
        return (
            f"Tokens Used: {self.total_tokens}\n\tPrompt Tokens: {self.input_tokens}\n"
            f"\tCompletion Tokens: {self.output_tokens}\nSuccessful Requests: {self.calls}\n"
            f"Total Cost (USD): ${self.cost:f}"
        )


@contextmanager
def track() -> Iterator[Tracker]:
    """Add up every guarded or metered call inside (like LangChain's ``get_openai_callback``), in this
    task and in the threads it starts."""
    _auto_follow()
    tracker = Tracker()
    token = _trackers.set((*_trackers.get(), tracker))
    try:
        yield tracker
    finally:
        _trackers.reset(token)


def record_usage(model: str, usage: Usage, cost_nano: int) -> None:
    for tracker in _trackers.get():
        tracker.add(model, usage, cost_nano)

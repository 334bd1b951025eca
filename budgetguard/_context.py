"""Context that follows a call: the scopes of ``budget_context`` and the trackers of ``track``.

Both live in ``contextvars``, so they follow asyncio tasks (each task copies its creator's context).
Python threads start with an empty context, so the first ``budget_context()`` or ``track()`` makes
``ThreadPoolExecutor`` tasks run in a copy of their submitter's context (``BUDGETGUARD_FOLLOW_THREADS=0``
keeps Python's behaviour). Plain ``threading.Thread``s follow after ``follow_threads()`` (opt-in: a
long-lived thread would keep its starter's scopes), or run their target through ``propagate(fn)``.
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


_patched: set[str] = set()
_patch_lock = threading.Lock()


def follow_threads(*, threads: bool = True) -> None:
    """Make contexts follow work handed to other threads.

    Each ``ThreadPoolExecutor`` task runs in a copy of its submitter's context (the first
    ``budget_context()`` or ``track()`` turns this on: a task's context lives as long as the task).
    With ``threads=True`` each ``threading.Thread`` also runs in a copy of its starter's context, as
    Python 3.14's ``thread_inherit_context`` flag does: opt in only if your process does not start
    long-lived background threads inside a request's context, or they would keep its scopes for life.
    Idempotent; patches ``ThreadPoolExecutor.submit`` (and ``Thread.start``) once per process, as
    OpenTelemetry's threading instrumentation does."""
    with _patch_lock:
        if "submit" not in _patched:
            _patched.add("submit")
            submit = ThreadPoolExecutor.submit

            def submit_in_context(
                self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any
            ) -> Future[Any]:
                return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

            ThreadPoolExecutor.submit = submit_in_context  # type: ignore[method-assign,assignment]
        if threads and "start" not in _patched:
            _patched.add("start")
            start = threading.Thread.start

            def start_in_context(self: threading.Thread) -> None:
                run, context = self.run, contextvars.copy_context()
                self.run = lambda: context.run(run)  # type: ignore[method-assign]
                start(self)

            threading.Thread.start = start_in_context  # type: ignore[method-assign]


def _auto_follow() -> None:
    if not _patched and os.environ.get("BUDGETGUARD_FOLLOW_THREADS", "1") != "0":
        follow_threads(threads=False)


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

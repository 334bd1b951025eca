"""Context that follows a call: the scopes of ``budget_context``, the trackers of ``track``, and the
thread patches that carry them into pools and threads (on first use, or ``follow_threads()``).

The scopes and trackers live in ``contextvars``, so they follow asyncio tasks (each task copies its
creator's context).
Python threads start with an empty context, so the first ``budget_context()`` or ``track()`` makes
``ThreadPoolExecutor`` tasks run in a copy of their submitter's context, and the first ``track()``
makes a ``threading.Thread`` started while trackers are open add to them (``BUDGETGUARD_FOLLOW_THREADS=0``
keeps Python's behaviour). Scopes follow plain threads only after ``follow_threads()`` (opt-in: a
long-lived thread would keep its starter's scopes, and bill them, for life), or through ``propagate(fn)``.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

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
_whole_context = False  # follow_threads(threads=True): a Thread runs in a copy of its starter's context


def follow_threads(*, threads: bool = True) -> None:
    """Make contexts follow work handed to other threads.

    Each ``ThreadPoolExecutor`` task runs in a copy of its submitter's context (the first
    ``budget_context()`` or ``track()`` turns this on: a task's context lives as long as the task; the
    pool's own worker threads start with an empty one). With ``threads=True`` each ``threading.Thread``
    also runs in a copy of its starter's context, as Python 3.14's ``thread_inherit_context`` flag does:
    opt in only if your process does not start long-lived background threads inside a request's
    context, or they would keep its scopes for life. Without it a thread gets only its starter's open
    ``track()`` trackers (the first ``track()`` turns that on). ``threads=False`` never undoes an earlier
    ``threads=True``. Patches ``ThreadPoolExecutor.submit`` and ``Thread.start`` once per process, as
    OpenTelemetry's threading instrumentation does."""
    global _whole_context
    with _patch_lock:
        _patch(start=threads)
        _whole_context = _whole_context or threads


def _patch(*, start: bool) -> None:
    """Patch ``submit`` (and ``Thread.start`` if ``start``) unless done; the caller holds ``_patch_lock``."""
    if "submit" not in _patched:
        from concurrent.futures import ThreadPoolExecutor  # (imported at the first patch, not at import)

        _patched.add("submit")
        submit: Callable[..., Future[Any]] = ThreadPoolExecutor.submit

        def submit_in_context(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            # the task carries the submitter's context; a worker the pool starts now gets an empty one
            task = contextvars.copy_context().run
            return contextvars.Context().run(submit, self, task, fn, *args, **kwargs)

        ThreadPoolExecutor.submit = submit_in_context  # type: ignore[method-assign,assignment]
    if start and "start" not in _patched:
        _patched.add("start")
        thread_start = threading.Thread.start

        def start_following(self: threading.Thread) -> None:
            if _whole_context:
                run, context = self.run, contextvars.copy_context()
                self.run = lambda: context.run(run)  # type: ignore[method-assign]
            elif trackers := _trackers.get():  # no tracker open: the thread starts as Python starts it
                run = self.run

                def run_tracked() -> None:
                    _trackers.set(trackers)  # in the thread's own context: only the trackers follow
                    run()

                self.run = run_tracked  # type: ignore[method-assign]
            thread_start(self)

        threading.Thread.start = start_following  # type: ignore[method-assign]


def _auto_follow(*, threads: bool) -> None:
    """Pool tasks follow from the first ``budget_context()``, trackers follow threads from the first
    ``track()``, unless ``BUDGETGUARD_FOLLOW_THREADS=0``."""
    if ("start" if threads else "submit") in _patched:  # "start" is only ever patched with "submit"
        return
    if os.environ.get("BUDGETGUARD_FOLLOW_THREADS", "1") != "0":
        with _patch_lock:
            _patch(start=threads)


@contextmanager
def budget_context(**scopes: str | None) -> Iterator[Mapping[str, str]]:
    """Scope ids for every guarded call inside: ``with budget_context(user="alice", feature="search")``.

    Nested contexts add to (and override) the outer one; ``None`` removes a scope.
    """
    _auto_follow(threads=False)
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
    cached_input_tokens: int = 0
    """Of ``input_tokens``, those read from the provider's prompt cache."""
    reasoning_tokens: int = 0
    """Of ``output_tokens``, the model's reasoning."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost(self) -> Decimal:
        return to_usd(self.cost_nano)


@dataclass
class Tracker:
    """Totals of the guarded and metered calls made inside ``with track() as t:``, and the amount held
    by those admitted and not settled yet (a stream still being read)."""

    by_model: dict[str, ModelTotals] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _holds: dict[object, int] = field(default_factory=dict, repr=False)
    """Nano-USD held by each call admitted and not settled yet, by its attempt."""

    def hold(self, attempt: object, nano: int) -> None:
        with self._lock:
            self._holds[attempt] = nano

    def settled(self, attempt: object) -> None:
        with self._lock:
            self._holds.pop(attempt, None)

    @property
    def open_calls(self) -> int:
        """How many calls made inside were admitted and are not settled yet (a stream still being read:
        it settles when it ends or is closed)."""
        with self._lock:
            return len(self._holds)

    @property
    def held(self) -> Decimal:
        """USD the open calls hold (each its reservation: the worst case, not what it will cost)."""
        with self._lock:
            return to_usd(sum(self._holds.values()))

    def add(self, model: str, usage: Usage, cost_nano: int) -> None:
        with self._lock:
            totals = self.by_model.setdefault(model, ModelTotals())
            totals.calls += 1
            totals.input_tokens += usage.total_input_tokens
            totals.output_tokens += usage.total_output_tokens
            totals.cost_nano += cost_nano
            totals.cached_input_tokens += usage.cache_read_tokens
            totals.reasoning_tokens += usage.reasoning_tokens

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

    @property
    def cached_input_tokens(self) -> int:
        return self._sum("cached_input_tokens")

    @property
    def reasoning_tokens(self) -> int:
        return self._sum("reasoning_tokens")

    def __str__(self) -> str:
        """As LangChain's ``get_openai_callback()`` prints its totals."""
        return (
            f"Tokens Used: {self.total_tokens}\n\tPrompt Tokens: {self.input_tokens}\n"
            f"\t\tPrompt Tokens Cached: {self.cached_input_tokens}\n"
            f"\tCompletion Tokens: {self.output_tokens}\n\t\tReasoning Tokens: {self.reasoning_tokens}\n"
            f"Successful Requests: {self.calls}\nTotal Cost (USD): ${self.cost:f}"
        )


@contextmanager
def track() -> Iterator[Tracker]:
    """Add up every guarded or metered call inside (like LangChain's ``get_openai_callback``): nested
    blocks, and the asyncio tasks, pool tasks and threads started inside (threads started by those
    threads too). The budget scopes do not follow plain threads (see ``follow_threads``).

    A task or thread that outlives the block keeps adding to the tracker it started under, as long as it
    runs: read the totals after joining the threads you started inside."""
    _auto_follow(threads=True)
    tracker = Tracker()
    token = _trackers.set((*_trackers.get(), tracker))
    try:
        yield tracker
    finally:
        _trackers.reset(token)


def open_trackers() -> tuple[Tracker, ...]:
    """The trackers open here (``track()`` blocks): a call's, taken when it starts, for its hold and
    its cost wherever it settles (a dropped stream settles in the guard's next operation, elsewhere)."""
    return _trackers.get()


def record_usage(trackers: tuple[Tracker, ...], model: str, usage: Usage, cost_nano: int) -> None:
    for tracker in trackers:
        tracker.add(model, usage, cost_nano)


def record_hold(trackers: tuple[Tracker, ...], attempt: object, nano: int) -> None:
    """An admitted call's hold, added to its trackers (``Tracker.settled`` tells them it settled)."""
    for tracker in trackers:
        tracker.hold(attempt, nano)

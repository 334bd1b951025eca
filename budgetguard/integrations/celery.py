"""Celery: a task runs in the budget context of the code that enqueued it (extra ``celery``).

``install()`` connects three Celery signals, once per process (call it where the app is made, so that
both the web process and the worker run it):

* ``before_task_publish``: the scope ids of the current ``budget_context`` (a request's user, feature,
  tenant) go into the task message's ``budgetguard_scopes`` header (a header set by the caller, with
  ``apply_async(headers={"budgetguard_scopes": {...}})``, is kept);
* ``task_prerun``: the worker enters that ``budget_context`` for the task's run, so every guarded call
  of the task is charged to the enqueuing request's scopes;
* ``task_postrun``: it leaves them, whatever the task's outcome.

Trackers follow a task as far as a process reaches: in eager mode (``task_always_eager``, ``.apply()``)
the task runs in the caller's own context, and a worker in the enqueuing process (a thread, as in tests)
adds the task's calls to the ``track()`` blocks that were open when it was enqueued (while their owner
still holds them). A worker in another process cannot reach them: the ledger and the journal have the
task's spend, under the enqueuer's scopes.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from .._context import Tracker, budget_context, current_scopes
from .._context import _trackers as _open_trackers  # (as the thread patch there sets them)
from .._errors import ConfigurationError
from . import missing_extra

try:
    from celery import signals
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("celery", exc) from exc

__all__ = ["HEADER", "install", "uninstall"]

HEADER = "budgetguard_scopes"
"""The task message header that carries the scope ids: ``{"user": "alice", "feature": "chat"}``."""
_TRACKERS = "budgetguard_trackers"  # keys of the enqueuer's open trackers, for a worker in its process

_lock = threading.Lock()
_running: dict[tuple[str, int], ExitStack] = {}
"""(task id, thread) -> the context a task runs in, while it runs: per run (a redelivered task may run
twice at once on a threads pool; prerun and postrun of one run are on its thread)."""
_trackers_by_key: weakref.WeakValueDictionary[str, Tracker] = weakref.WeakValueDictionary()
"""This process's trackers that tasks were enqueued under, kept only as long as their ``track()``
block's owner keeps them (a finished request lets them go)."""


def install() -> None:
    """Connect the publish, prerun and postrun signals (idempotent)."""
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="budgetguard.publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="budgetguard.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="budgetguard.postrun")


def uninstall() -> None:
    """Disconnect them (tests, or an app that stops propagating scopes)."""
    signals.before_task_publish.disconnect(dispatch_uid="budgetguard.publish")
    signals.task_prerun.disconnect(dispatch_uid="budgetguard.prerun")
    signals.task_postrun.disconnect(dispatch_uid="budgetguard.postrun")


def _on_publish(*, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:  # (task protocol 1 has no headers; Celery 5 sends protocol 2)
        return
    scopes = current_scopes()
    if scopes and HEADER not in headers:
        headers[HEADER] = dict(scopes)
    if trackers := _open_trackers.get():
        keys = [uuid.uuid4().hex for _ in trackers]
        with _lock:
            _trackers_by_key.update(zip(keys, trackers, strict=True))
        headers[_TRACKERS] = keys


def _header(request: Any, name: str) -> Any:
    """A task message header: Celery makes it a request attribute (and keeps ``request.headers``)."""
    value = getattr(request, name, None)
    return value if value is not None else (getattr(request, "headers", None) or {}).get(name)


def _scopes_of(request: Any) -> Mapping[str, str]:
    scopes = _header(request, HEADER)
    if scopes is None:
        return {}
    if not isinstance(scopes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scopes.items()
    ):
        raise ConfigurationError(
            f"the task header {HEADER} must map scope kinds to ids, like {{'user': 'alice'}}; got {scopes!r}"
        )
    return scopes


@contextmanager
def _following(trackers: tuple[Tracker, ...]) -> Iterator[None]:
    """The task adds to these trackers too (those of ``track()`` blocks open where it was enqueued)."""
    token = _open_trackers.set((*_open_trackers.get(), *trackers))
    try:
        yield
    finally:
        _open_trackers.reset(token)


def _on_prerun(*, task_id: str, task: Any, **_: Any) -> None:
    request = task.request
    stack = ExitStack()
    stack.enter_context(budget_context(**_scopes_of(request)))
    keys = _header(request, _TRACKERS)
    if isinstance(keys, list) and keys:
        with _lock:
            found = tuple(
                t for k in keys if isinstance(k, str) and (t := _trackers_by_key.get(k)) is not None
            )
        if found and not set(map(id, found)) & set(map(id, _open_trackers.get())):  # (eager: already open)
            stack.enter_context(_following(found))
    with _lock:
        _running[task_id, threading.get_ident()] = stack


def _on_postrun(*, task_id: str, **_: Any) -> None:
    with _lock:
        stack = _running.pop((task_id, threading.get_ident()), None)
    if stack is not None:
        stack.close()

"""Celery tasks run in the budget context of the code that enqueued them: a real Celery app with a real
worker (in-process, ``memory://`` broker, the scopes travel in the task message's headers) and in eager
mode; the ledger checked to the nano-USD."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import budgetguard as bg
from budgetguard._context import current_scopes
from budgetguard.integrations import celery as bg_celery
from budgetguard.testing import MockProvider
from tests.integrations.web_helpers import COST, REQUEST, TOO_BIG, make_guard, usage_reply
from tests.integrations.web_helpers import user_spent as spent

GUARD: dict[str, bg.Guard] = {}
HEADERS: list[dict[str, Any]] = []  # what each task saw of its message (the header carries the scopes)

app = Celery("budget_tests", broker="memory://", backend="cache+memory://", set_as_current=False)
app.conf.update(task_always_eager=False, worker_hijack_root_logger=False, result_expires=None)


@app.task(name="budget_tests.summarise")
def summarise(times: int = 1, big: bool = False) -> str:
    HEADERS.append(dict(current_scopes()))
    ask = GUARD["guard"].with_budget(feature="summaries")(usage_reply)
    for _ in range(times):
        ask(**(TOO_BIG if big else REQUEST))
    return "done"


@app.task(name="budget_tests.stream")
def stream(base_url: str) -> int:
    from openai import OpenAI

    client = GUARD["guard"].wrap(OpenAI(base_url=base_url, api_key="mock-key"))
    return sum(1 for _ in client.chat.completions.create(**REQUEST, stream=True))


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    GUARD["guard"] = made = make_guard()
    HEADERS.clear()
    bg_celery.install()
    yield made
    bg_celery.uninstall()
    made.close()


@pytest.fixture
def worker(guard: bg.Guard) -> Iterator[None]:
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield


def test_a_worker_task_is_charged_to_the_scopes_of_the_request_that_enqueued_it(
    guard: bg.Guard, worker: None
) -> None:
    with bg.budget_context(user="alice", team="red"), bg.track() as tracker:
        assert summarise.delay(times=2).get(timeout=20) == "done"
    with bg.budget_context(user="bob"):
        refused = summarise.delay(big=True)
        with pytest.raises(bg.BudgetExceededError) as raised:  # (through the default JSON result backend)
            refused.get(timeout=20)
    assert refused.failed() and "budget exceeded for user:bob (day usd budget)" in refused.traceback
    assert (raised.value.scope, raised.value.spent, raised.value.unit) == ("user:bob", 0, "usd")
    assert raised.value.requested > raised.value.limit and "user:bob" in raised.value.reason
    assert HEADERS == [{"user": "alice", "team": "red"}, {"user": "bob"}]
    assert spent(guard, "alice") == 2 * bg.to_nano(COST) and spent(guard, "bob") == 0
    assert [e.event for e in guard.ledger.history()] == ["committed", "committed", "refused"]
    assert tracker.calls == 2 and tracker.cost == 2 * COST  # the worker runs in this process
    assert current_scopes() == {}  # the task's context is left behind in the worker


def test_a_task_enqueued_without_scopes_is_refused_and_an_explicit_header_wins(
    guard: bg.Guard, worker: None
) -> None:
    anonymous = summarise.delay()
    with pytest.raises(bg.MissingScopeError) as missing:
        anonymous.get(timeout=20)
    assert anonymous.failed() and "_errors.MissingScopeError" in anonymous.traceback
    assert missing.value.kinds == ("user",)
    with bg.budget_context(user="carol"):
        result = summarise.apply_async(headers={bg_celery.HEADER: {"user": "dana"}})
        assert result.get(timeout=20) == "done"
    assert spent(guard, "dana") == bg.to_nano(COST) and spent(guard, "carol") == 0
    # a header that is not scope ids (Celery logs the signal's error): the task runs with no scopes,
    # so its guarded call is refused, not charged to anyone
    bad = summarise.apply_async(headers={bg_celery.HEADER: {"user": 42}})
    bad.get(timeout=20, propagate=False)
    assert bad.failed() and "_errors.MissingScopeError" in bad.traceback
    assert [e.event for e in guard.ledger.history()] == ["committed"]


def test_a_streaming_task_is_charged_its_stream(guard: bg.Guard, worker: None) -> None:
    with MockProvider() as api, bg.budget_context(user="erin"):
        assert stream.delay(api.openai_base_url).get(timeout=20) > 0
    from tests.integrations.web_helpers import stream_cost

    assert spent(guard, "erin") == stream_cost(api.usages[0])
    assert [e.event for e in guard.ledger.history()] == ["committed"]


def test_eager_tasks_run_in_the_callers_context(guard: bg.Guard) -> None:
    app.conf.task_always_eager = True
    try:
        with bg.budget_context(user="finn"), bg.track() as tracker:
            assert summarise.delay(times=3).get() == "done"
    finally:
        app.conf.task_always_eager = False
    assert spent(guard, "finn") == 3 * bg.to_nano(COST) and tracker.calls == 3


def test_one_task_id_running_twice_at_once_keeps_each_runs_scopes() -> None:
    """A redelivered task (``acks_late``) may run twice at once on a threads pool: each run's scopes are
    its own, and each run's end restores its own thread's (signals driven as a worker does)."""
    import threading
    import types

    from budgetguard._context import current_scopes
    from budgetguard.integrations import celery as integration

    def task(user: str) -> Any:
        request = types.SimpleNamespace(
            budgetguard_scopes={"user": user}, budgetguard_trackers=None, headers={}
        )
        return types.SimpleNamespace(request=request)

    started, second, first_done, seen = threading.Event(), threading.Event(), threading.Event(), {}

    def first() -> None:
        integration._on_prerun(task_id="same", task=task("alice"))
        seen["first runs as"] = dict(current_scopes())
        started.set()
        second.wait(30)
        integration._on_postrun(task_id="same")
        seen["first after"] = dict(current_scopes())
        first_done.set()

    def other() -> None:
        started.wait(30)
        integration._on_prerun(task_id="same", task=task("bob"))
        seen["second runs as"] = dict(current_scopes())
        second.set()
        first_done.wait(30)
        integration._on_postrun(task_id="same")
        seen["second after"] = dict(current_scopes())

    threads = [threading.Thread(target=first), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen == {"first runs as": {"user": "alice"}, "second runs as": {"user": "bob"},
                    "first after": {}, "second after": {}}  # fmt: skip

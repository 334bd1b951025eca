"""``metered``: spend is recorded, never refused. ``track()``: totals of the calls made inside it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

import budgetguard
from budgetguard import Budget, BudgetExceededError, Scope, budget_context, to_usd, track
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    CLAUDE_USAGE,
    GPT4O_USAGE,
    O3_MINI_USAGE,
    anthropic_client,
    anthropic_message,
    async_openai_client,
    chat_completion,
    chat_request,
    claude_request,
    nano,
    openai_client,
    reasoning_chat_completion,
    serve,
)

COST = nano("gpt-4o", GPT4O_USAGE)
CLAUDE_COST = nano("claude-sonnet-4-6", CLAUDE_USAGE)
TINY = [Budget("user", usd="0.001", per="day"), Budget("global", usd="0.001", per="day")]


def test_metered_records_spend_past_the_limit(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=TINY)
    api = serve(chat_completion())
    client = openai_client(api)
    metered = h.guard.metered(client.chat.completions.create, user="alice")

    metered(**chat_request())
    metered(**chat_request())

    assert len(api.requests) == 2
    h.assert_settled({"user:alice": 2 * COST, "global": 2 * COST})  # 11x the $0.001 limit
    assert [e.event for e in h.history()] == ["committed", "committed"]
    assert all(e.model == "gpt-4o" and e.data["usage"] == GPT4O_USAGE.to_dict() for e in h.history())
    # the same counters refuse an enforced call
    enforced = h.guard.with_budget(client.chat.completions.create, user="alice")
    with pytest.raises(BudgetExceededError) as caught:
        enforced(**chat_request())
    assert caught.value.spent == to_usd(2 * COST)
    assert len(api.requests) == 2


def test_metered_never_refuses_even_with_a_runtime_limit(make_guard: MakeGuard) -> None:
    """An operator's ``limits set`` override caps enforced calls; metered calls are still only counted."""
    h = make_guard(budgets=TINY)
    h.set_limit("user:alice", 0)
    api = serve(chat_completion())
    metered = h.guard.metered(openai_client(api).chat.completions.create, user="alice")

    metered(**chat_request())

    assert len(api.requests) == 1
    h.assert_settled({"user:alice": COST, "global": COST})


def test_metered_function_with_estimate(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=TINY)
    api = serve(anthropic_message())
    client = anthropic_client(api)

    @h.guard.metered(feature="ingest", estimate=lambda doc: claude_request())
    def ingest(doc: str) -> Any:
        return client.messages.create(**claude_request())

    with budgetguard.budget_context(user="alice"):
        ingest("a.pdf")

    h.assert_settled({"user:alice": CLAUDE_COST, "global": CLAUDE_COST})


async def test_metered_async(amake_guard: MakeGuard) -> None:
    h = amake_guard(budgets=TINY)
    api = serve(chat_completion())
    client = async_openai_client(api)

    @h.guard.metered(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    await asyncio.gather(*(ask("alice", **chat_request()) for _ in range(3)))

    h.assert_settled({"user:alice": 3 * COST, "global": 3 * COST})


# -- track() --------------------------------------------------------------------------------------------


def test_track_totals(make_guard: MakeGuard) -> None:
    h = make_guard()
    chat = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create, user="alice")
    reason = h.guard.with_budget(
        openai_client(serve(reasoning_chat_completion())).chat.completions.create, user="alice"
    )
    claude = h.guard.metered(anthropic_client(serve(anthropic_message())).messages.create, user="alice")

    with track() as t:
        chat(**chat_request())
        chat(**chat_request())
        reason(**chat_request("o3-mini"))
        claude(**claude_request())

    assert t.calls == 4
    assert t.input_tokens == 2 * 2006 + 1500 + (50 + 10000 + 2000)
    assert t.output_tokens == 2 * 300 + 2048 + 503
    assert t.total_tokens == t.input_tokens + t.output_tokens
    total = 2 * COST + nano("o3-mini", O3_MINI_USAGE) + CLAUDE_COST
    assert t.cost == to_usd(total)
    assert isinstance(t.cost, Decimal)
    assert set(t.by_model) == {"gpt-4o", "o3-mini", "claude-sonnet-4-6"}
    gpt4o = t.by_model["gpt-4o"]
    assert (gpt4o.calls, gpt4o.input_tokens, gpt4o.output_tokens, gpt4o.cost_nano) == (2, 4012, 600, 2 * COST)
    assert t.by_model["claude-sonnet-4-6"].cost == to_usd(CLAUDE_COST)
    assert f"Successful Requests: 4\nTotal Cost (USD): ${to_usd(total):f}" in str(t)
    h.assert_settled({"user:alice": total})


def test_track_nested(make_guard: MakeGuard) -> None:
    h = make_guard()
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)

    with track() as outer:
        create(**chat_request())
        with track() as inner:
            create(**chat_request())
        create(**chat_request())
    create(**chat_request())  # outside both

    assert (outer.calls, inner.calls) == (3, 1)
    assert (outer.cost, inner.cost) == (to_usd(3 * COST), to_usd(COST))
    h.assert_settled({"global": 4 * COST})


def test_track_counts_failed_attempts_it_was_charged_for(make_guard: MakeGuard) -> None:
    """A refused call adds nothing; a successful one adds exactly what the ledger was charged."""
    h = make_guard(budgets=[Budget("user", usd="0.006")])
    create = h.guard.with_budget(
        openai_client(serve(chat_completion())).chat.completions.create, user="alice"
    )

    with track() as t:
        create(**chat_request())
        with pytest.raises(BudgetExceededError):
            create(**chat_request())

    assert t.calls == 1
    assert t.cost == to_usd(h.spent("user:alice")) == to_usd(COST)


async def test_track_across_asyncio_tasks(amake_guard: MakeGuard) -> None:
    h = amake_guard()
    api = serve(chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(user_id: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        await asyncio.sleep(0)
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    async def two_calls(user: str) -> budgetguard.Tracker:
        with track() as mine:
            await ask(user, **chat_request())
            await ask(user, **chat_request())
        return mine

    with track() as t:
        per_task = await asyncio.gather(*(two_calls(u) for u in ("a", "b", "c")))
        await asyncio.create_task(ask("d", **chat_request()))

    assert t.calls == 7
    assert t.cost == to_usd(7 * COST)
    assert [m.calls for m in per_task] == [2, 2, 2]  # each task's own tracker sees only its calls
    assert sum(h.spent(f"user:{u}") for u in "abcd") == 7 * COST


def test_track_follows_threads_and_pools_and_scopes_follow_pools(
    make_guard: MakeGuard, thread_mode: str
) -> None:
    """A plain thread started inside ``track()`` (or by such a thread) adds to it; the user scope goes
    with pool tasks, and with plain threads only after ``follow_threads()``."""
    h = make_guard()
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)

    def work() -> None:
        create(**chat_request())

    def nested() -> None:
        inner = threading.Thread(target=work)  # a thread started by a thread
        inner.start()
        inner.join()

    with track() as t, budget_context(user="zoe"):
        threads = [threading.Thread(target=work), threading.Thread(target=nested)]
        for thread in threads:
            thread.start()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda _: work(), range(2)))
        for thread in threads:
            thread.join()
    work()  # outside the block: not tracked, no user scope

    assert (t.calls, t.by_model["gpt-4o"].calls) == (4, 4)
    assert (t.input_tokens, t.output_tokens) == (4 * 2006, 4 * 300)
    assert t.cost == to_usd(4 * COST)
    zoe = 4 if thread_mode == "whole context" else 2  # the pool tasks, and plain threads if asked
    h.assert_settled({"user:zoe": zoe * COST, "global": 5 * COST})
    assert sorted(len(e.scopes) for e in h.committed()) == [1] * (5 - zoe) + [2] * zoe


def test_track_counts_threads_started_inside_it_even_after_it_ends(make_guard: MakeGuard) -> None:
    """A thread started before the block is not counted, even for calls made while the block is open;
    one started inside keeps adding to the tracker after the block ends (read it after joining)."""
    h = make_guard()
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)
    opened, closed = threading.Event(), threading.Event()

    def call_after(gate: threading.Event) -> None:
        assert gate.wait(10)
        create(**chat_request())

    before = threading.Thread(target=call_after, args=(opened,))
    before.start()
    assert "run" not in vars(before)  # no tracker open: the thread starts unwrapped
    with track() as t:
        opened.set()
        before.join()
        outliving = threading.Thread(target=call_after, args=(closed,))
        outliving.start()
    assert t.calls == 0
    closed.set()
    outliving.join()

    assert t.calls == 1
    assert t.cost == to_usd(COST)
    assert h.spent("global") == 2 * COST


def test_nested_trackers_both_count_a_thread(make_guard: MakeGuard) -> None:
    h = make_guard()
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)

    def run_thread() -> None:
        thread = threading.Thread(target=lambda: create(**chat_request()))
        thread.start()
        thread.join()

    with track() as outer:
        run_thread()
        with track() as inner:
            run_thread()
            run_thread()

    assert (outer.calls, inner.calls) == (3, 2)
    assert (outer.cost, inner.cost) == (to_usd(3 * COST), to_usd(2 * COST))
    assert h.spent("global") == 3 * COST


def test_pool_workers_do_not_keep_the_context_they_were_started_in(
    make_guard: MakeGuard, thread_mode: str
) -> None:
    """A pool's worker threads live as long as the pool: each task runs in its submitter's context, and
    a done callback, which runs in the worker's own, gets neither tracker nor scope."""
    h = make_guard()
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)

    def work(*_: Any) -> None:
        create(**chat_request())

    with ThreadPoolExecutor(max_workers=1) as pool:
        with track() as t, budget_context(user="yann"):
            pool.submit(work).result()  # starts the pool's worker
        gate = threading.Event()
        later = pool.submit(gate.wait, 10)
        later.add_done_callback(work)  # runs in the worker once the task is done
        gate.set()

    assert t.calls == 1
    h.assert_settled({"user:yann": COST, "global": 2 * COST})


def test_a_fresh_process_follows_pools_and_tracks_threads_without_their_scopes() -> None:
    """A fresh process: pool tasks follow the context and plain threads add to the open trackers, but a
    plain thread, which may outlive the request that started it, gets the scopes only through
    ``propagate`` or after ``follow_threads()``, which reuses the one ``Thread.start`` patch.
    ``BUDGETGUARD_FOLLOW_THREADS=0`` keeps Python's behaviour (and its ``Thread.start``)."""
    script = textwrap.dedent(
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor
        import budgetguard as bg

        guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1"), bg.Budget("global", usd="1")])
        reply = {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}
        call = guard.metered(
            lambda **kw: reply, estimate=lambda **kw: {"model": "gpt-4o", "messages": [], "max_tokens": 5}
        )
        out = []
        for run in ("plain", "propagated", "pool", "follow_threads"):
            if run == "follow_threads":
                start = threading.Thread.start
                out.append(start.__module__)
                bg.follow_threads()
                out.append("same" if threading.Thread.start is start else "new")
            with bg.budget_context(user="u"), bg.track() as t:
                if run == "pool":
                    with ThreadPoolExecutor(1) as pool:
                        pool.submit(call).result()
                else:
                    thread = threading.Thread(target=bg.propagate(call) if run == "propagated" else call)
                    thread.start()
                    thread.join()
            entry = guard.ledger.history(events=["committed"])[-1]
            out.append(f"{t.calls}{'u' if 'user:u' in entry.scopes else '-'}")
        print(*out)
        """
    )
    for env, expected in [
        ("1", "1- 1u 1u budgetguard._context same 1u"),
        ("0", "0- 1u 0- threading new 1u"),  # follow_threads() still works when asked
    ]:
        done = subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "BUDGETGUARD_FOLLOW_THREADS": env},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == expected, env


def test_track_without_budgets(make_guard: MakeGuard) -> None:
    """No budget applies: nothing is reserved, the call is still priced and tracked."""
    h = make_guard(budgets=[])
    create = h.guard.with_budget(
        openai_client(serve(chat_completion())).chat.completions.create, user="alice"
    )

    with track() as t:
        create(**chat_request())

    assert t.cost == to_usd(COST)
    assert h.guard.counters_for([Scope("user", "alice")]) == []
    # the store was up and nothing was lost: no store_unavailable / spend_lost alarm
    assert [e.kind for e in h.events if e.kind in ("spend_lost", "store_unavailable")] == []

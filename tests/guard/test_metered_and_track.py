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


def test_track_and_scopes_follow_threads_and_pools(make_guard: MakeGuard) -> None:
    h = make_guard()
    create = h.guard.with_budget(openai_client(serve(chat_completion())).chat.completions.create)

    def work() -> None:
        create(**chat_request())

    def nested() -> None:
        inner = threading.Thread(target=work)  # a thread started by a thread
        inner.start()
        inner.join()

    budgetguard.follow_threads()  # plain threads too (pools follow by default)
    with track() as t, budget_context(user="zoe"):
        threads = [threading.Thread(target=work), threading.Thread(target=nested)]
        for thread in threads:
            thread.start()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda _: work(), range(2)))
        for thread in threads:
            thread.join()
    work()  # outside the block: not tracked, no user scope

    assert t.calls == 4
    assert h.spent("user:zoe") == 4 * COST
    assert h.spent("global") == 5 * COST


@pytest.mark.parametrize(("env", "expected"), [("1", "0 1 1"), ("0", "0 1 0")])
def test_by_default_pools_follow_and_plain_threads_need_propagate(env: str, expected: str) -> None:
    """A fresh process: pool tasks follow the context (unless BUDGETGUARD_FOLLOW_THREADS=0); a plain
    thread, which may outlive the request that started it, follows only through ``propagate``."""
    script = textwrap.dedent(
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor
        import budgetguard as bg

        guard = bg.Guard("memory://")
        call = guard.metered(lambda **kw: {"usage": {"prompt_tokens": 10, "completion_tokens": 5}},
                             estimate=lambda **kw: {"model": "gpt-4o-mini", "messages": [], "max_tokens": 5})
        counts = []
        for run in ("plain", "propagated", "pool"):
            with bg.track() as t:
                if run == "pool":
                    with ThreadPoolExecutor(1) as pool:
                        pool.submit(call).result()
                else:
                    thread = threading.Thread(target=call if run == "plain" else bg.propagate(call))
                    thread.start()
                    thread.join()
            counts.append(t.calls)
        print(*counts)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "BUDGETGUARD_FOLLOW_THREADS": env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == expected


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

"""budgetguard patches ``ThreadPoolExecutor.submit`` and ``Thread.start`` only when asked: never at import,
never for a plain guarded call; the first ``budget_context()`` or ``track()`` (documented to follow pool
tasks and threads, ``BUDGETGUARD_FOLLOW_THREADS=0`` to keep Python's behaviour) or ``follow_threads()``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    submit, start = ThreadPoolExecutor.submit, threading.Thread.start

    def state():
        return ("submit" if ThreadPoolExecutor.submit is not submit else "-") + "/" + (
            "start" if threading.Thread.start is not start else "-"
        )

    out = []
    import budgetguard as bg
    import budgetguard.integrations.langchain
    out.append(state())  # imported

    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1"), bg.Budget("global", usd="1")])
    reply = {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    hello = [{"role": "user", "content": "hi"}]
    request = lambda **kw: {"model": "gpt-4o", "messages": hello, "max_tokens": 5}
    guarded = guard.with_budget(lambda **kw: reply, estimate=request, user="alice")
    metered = guard.metered(lambda **kw: reply, estimate=request, user="alice")

    async def answer(**kw):
        return reply

    guarded_async = guard.with_budget(answer, estimate=request, user="alice")
    guarded(), metered(), asyncio.run(guarded_async()), bg.estimate(request())
    with ThreadPoolExecutor(2) as pool:  # calls made from pool tasks and threads, outside any context
        pool.submit(guarded).result()
    thread = threading.Thread(target=guarded)
    thread.start()
    thread.join()
    out.append(state())  # plain guarded calls

    with bg.budget_context(user="bob"):
        guarded()
    out.append(state())
    with bg.track():
        guarded()
    out.append(state())
    bg.follow_threads()
    out.append(state())
    print(*out)
    """
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("1", "-/- -/- submit/- submit/start submit/start"),
        ("0", "-/- -/- -/- -/- submit/start"),
    ],
)
def test_threads_are_patched_only_when_asked(env: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "BUDGETGUARD_FOLLOW_THREADS": env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected

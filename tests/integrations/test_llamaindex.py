"""LlamaIndex's OpenAI LLM (the real ``llama-index-llms-openai``) on ``OpenAI(openai_client=guard.wrap(...),
async_openai_client=guard.wrap(...))``, against ``MockProvider``: chat, streamed chat (the transport asks
the stream for its usage) and async completion each charged to the nano-USD; a refusal reaches the caller
as budgetguard's error, before anything is sent, and is not retried by LlamaIndex."""

from __future__ import annotations

from tests.integrations.openai2 import require

require("llama_index.llms.openai")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from llama_index.core.llms import ChatMessage  # noqa: E402
from llama_index.llms.openai import OpenAI  # noqa: E402

import budgetguard as bg  # noqa: E402
from budgetguard.testing import MockProvider  # noqa: E402
from tests.integrations.scripted import cost  # noqa: E402

ASK = [ChatMessage(role="user", content="Why reserve before calling?")]


@pytest.fixture
def api() -> Iterator[MockProvider]:
    with MockProvider() as mock:
        yield mock


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="0.01", per="day")])
    yield made
    made.close()


async def test_chat_streams_and_async_calls_are_charged(api: MockProvider, guard: bg.Guard) -> None:
    sync, async_ = guard.wrap(api.openai(), user="alice"), guard.wrap(api.async_openai(), user="alice")
    llm = OpenAI(model="gpt-4o-mini", max_tokens=100, openai_client=sync, async_openai_client=async_)

    assert llm.chat(ASK).message.content
    assert "".join(chunk.delta or "" for chunk in llm.stream_chat(ASK))
    assert (await llm.acomplete("Why budgets?")).text
    await async_.close()
    sync.close()

    assert [r.body.get("stream_options") for r in api.requests] == [None, {"include_usage": True}, None]
    expected = [cost("gpt-4o-mini", {"usage": usage}) for usage in api.usages]
    assert [e.amounts["usd"] for e in guard.ledger.history()] == expected
    [status] = guard.ledger.status(guard.counters_for([bg.Scope("user", "alice")])[:1])
    assert (status.spent, status.held) == (sum(expected), 0)


def test_a_refusal_is_raised_before_anything_is_sent(api: MockProvider, guard: bg.Guard) -> None:
    with guard.wrap(api.openai(), user="bo") as client:
        llm = OpenAI(model="gpt-4o", max_tokens=4000, max_retries=3, openai_client=client)  # $0.04 worst case
        with pytest.raises(bg.BudgetExceededError) as raised:
            llm.chat(ASK)

    assert raised.value.scope == "user:bo"
    assert api.requests == []
    assert [e.event for e in guard.ledger.history()] == ["refused"]  # LlamaIndex did not retry it

"""instructor (the real package) on ``instructor.from_openai(guard.wrap(client))``, against a local server
scripting the model's tool calls: each of instructor's own retries after a validation error is a request
of its own, reserved and charged to the nano-USD; a refusal stops the retries before anything is sent."""

from __future__ import annotations

from tests.integrations.openai2 import require

require("instructor")

from collections.abc import Iterator  # noqa: E402

import instructor  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402
from instructor.core import InstructorRetryException  # noqa: E402
from pydantic import BaseModel, field_validator  # noqa: E402

import budgetguard as bg  # noqa: E402
from tests.integrations.scripted import cost, serve, tool_call  # noqa: E402

MODEL = "gpt-4o"  # (the model the scripted replies report, and so the one they are priced as)
ASK = [{"role": "user", "content": "The capital of France?"}]
UNCACHED = {"prompt_tokens_details": {"cached_tokens": 0}}


class City(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def upper_case(cls, name: str) -> str:
        if name != name.upper():
            raise ValueError("the name must be upper case")
        return name


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")])
    yield made
    made.close()


def spent(guard: bg.Guard, user: str) -> tuple[int, int]:
    [status] = guard.ledger.status(guard.counters_for([bg.Scope("user", user)])[:1])
    return status.spent, status.held


def test_each_validation_retry_is_charged(guard: bg.Guard) -> None:
    replies = [
        tool_call("City", {"name": "paris"}, "c1", prompt_tokens=90, completion_tokens=9, **UNCACHED),
        tool_call("City", {"name": "Paris"}, "c2", prompt_tokens=170, completion_tokens=9, **UNCACHED),
        tool_call("City", {"name": "PARIS"}, "c3", prompt_tokens=250, completion_tokens=9, **UNCACHED),
    ]
    with serve(replies) as api:
        raw = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        client = instructor.from_openai(guard.wrap(raw, user="alice"))
        city = client.chat.completions.create(
            model=MODEL, response_model=City, messages=ASK, max_tokens=50, max_retries=3
        )

    assert city.name == "PARIS"
    assert len(api.requests) == 3
    assert "must be upper case" in api.requests[1]["messages"][-1]["content"]  # instructor's own retry
    expected = [cost(MODEL, reply) for reply in replies]
    assert [e.amounts["usd"] for e in guard.ledger.history()] == expected
    assert spent(guard, "alice") == (sum(expected), 0)


async def test_async_client_and_a_refusal_that_stops_the_retries(guard: bg.Guard) -> None:
    replies = [
        tool_call("City", {"name": "paris"}, "c1", prompt_tokens=90, completion_tokens=9, **UNCACHED),
        tool_call("City", {"name": "PARIS"}, "c2", prompt_tokens=170, completion_tokens=9, **UNCACHED),
    ]
    [counter] = guard.counters_for([bg.Scope("user", "bo")])[:1]
    guard.ledger.set_limit(counter, bg.to_nano("0.0012"))  # the first call's worst case ($0.000735), not two
    with serve(replies) as api:
        raw = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
        async with guard.wrap(raw, user="bo") as wrapped:
            client = instructor.from_openai(wrapped)
            with pytest.raises(InstructorRetryException) as raised:
                await client.chat.completions.create(
                    model=MODEL, response_model=City, messages=ASK, max_tokens=50, max_retries=3
                )

    refusal = raised.value.__cause__  # instructor's error when it stops retrying: the refusal chained
    assert isinstance(refusal, bg.BudgetExceededError) and refusal.scope == "user:bo"
    assert len(api.requests) == 1  # the retry was refused before it was sent
    assert [e.event for e in guard.ledger.history()] == ["committed", "refused"]
    assert spent(guard, "bo") == (cost(MODEL, replies[0]), 0)

"""LiteLLM (the real ``litellm``) through ``completion`` / ``acompletion`` on a guarded client, against
``MockProvider``: every HTTP attempt (SDK retries included) charged to the nano-USD, streams too, a
refusal raised as LiteLLM's ``BudgetExceededError`` with the refusal chained, and a model LiteLLM would
send with its own HTTP client refused rather than sent unguarded."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # (its bundled prices: no network)

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import litellm
import pytest

import budgetguard as bg
from budgetguard import Usage
from budgetguard.integrations.litellm import BudgetExceeded, acompletion, completion
from budgetguard.testing import MockProvider

pytestmark = [  # what LiteLLM's own code makes pydantic warn about (its typed dicts, its stream chunks)
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

HI = [{"role": "user", "content": "Why reserve before calling?"}]


@pytest.fixture
def api() -> Iterator[MockProvider]:
    with MockProvider() as mock:
        yield mock


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")])
    yield made
    made.close()


@pytest.fixture(autouse=True)
def quiet_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(litellm, "suppress_debug_info", True)  # (its "Give Feedback" banner on errors)


def chat_cost(model: str, reported: dict[str, Any]) -> int:
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    usage = Usage(
        input_tokens=reported["prompt_tokens"] - cached,
        cache_read_tokens=cached,
        output_tokens=reported["completion_tokens"],
    )
    return bg.get_price(model).cost_nano(usage)


def committed(guard: bg.Guard) -> list[tuple[str, int | None]]:
    return [(e.event, e.amounts["usd"] if e.event == "committed" else None) for e in guard.ledger.history()]


# The async test comes first: LiteLLM itself (1.110, with plain openai clients too) leaks an event loop
# when an acompletion follows a completion in one process (an unclosed-loop ResourceWarning at exit).
async def test_acompletion_is_charged(api: MockProvider, guard: bg.Guard) -> None:
    async with guard.wrap(api.async_openai(), user="alice") as client:
        await acompletion(client, model="gpt-4o-mini", messages=HI, max_tokens=100)

    assert committed(guard) == [("committed", chat_cost("gpt-4o-mini", api.usages[0]))]


def test_completion_retries_and_streams_are_charged(api: MockProvider, guard: bg.Guard) -> None:
    api.fail(500, retry_after="0")
    with guard.wrap(api.openai(max_retries=1), user="alice") as client:
        reply = completion(client, model="openai/gpt-4o-mini", messages=HI, max_tokens=100, max_retries=1)
        chunks = list(completion(client, model="gpt-4o-mini", messages=HI, max_tokens=100, stream=True))

    assert reply.choices[0].message.content and chunks
    assert api.requests[2].body["stream_options"] == {"include_usage": True}
    answered, streamed = api.usages
    assert committed(guard) == [
        ("released", None),  # the 500, retried by the SDK
        ("committed", chat_cost("gpt-4o-mini", answered)),
        ("committed", chat_cost("gpt-4o-mini", streamed)),
    ]


@pytest.mark.parametrize("num_retries", [0, 2])
def test_a_refusal_is_litellms_budget_error(api: MockProvider, guard: bg.Guard, num_retries: int) -> None:
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], 1)
    refused = pytest.raises(litellm.BudgetExceededError)
    with guard.wrap(api.openai(), user="alice") as client, refused as raised:
        completion(client, model="gpt-4o-mini", messages=HI, max_tokens=100, num_retries=num_retries)

    error = raised.value
    assert isinstance(error, BudgetExceeded) and isinstance(error, bg.BudgetExceededError)
    assert isinstance(error.__cause__, bg.BudgetExceededError) and error.scope == "user:alice"
    assert (error.max_budget, error.current_cost) == (error.limit, error.spent) == (Decimal("1e-9"), 0)
    assert api.requests == []  # nothing sent
    assert {e.event for e in guard.ledger.history()} == {"refused"}


def test_a_provider_litellm_sends_itself_is_refused(api: MockProvider, guard: bg.Guard) -> None:
    with guard.wrap(api.openai(), user="alice") as client:
        with pytest.raises(bg.ConfigurationError, match="own HTTP client"):
            completion(client, model="anthropic/claude-sonnet-4-6", messages=HI, max_tokens=100)
        with pytest.raises(bg.ConfigurationError, match=r"guard\.wrap"):
            completion(api.openai(), model="gpt-4o-mini", messages=HI)
    assert api.requests == []

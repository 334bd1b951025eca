"""Review of red team 3: holes its fixes left, each a call charged below its bill.

- A LangChain stream of a model that reasons unseen (gpt-5), cut before it showed any text (while it
  reasoned, the likely time for a timeout), is charged as a failed call, its input, where ``guard.wrap``
  charges the same cut stream its output bound by the rule red team 3 shares (``received``).
- A LangChain stream whose first chunk carries the input's usage (``usage_metadata`` of Anthropic's
  ``message_start``: langchain-aws's Claude on Bedrock, langchain-anthropic before 0.3.19) and that broke
  off later was charged that usage as its bill: no output, whatever it streamed (thinking, text), where
  ``guard.wrap`` charges the same cut stream by ``received`` (its output bound, for a Claude that
  thought). So was a Claude stream whose thinking came in a block of another shape than ``thinking``
  (LangChain's standard ``reasoning``, Bedrock Converse's ``reasoning_content``): charged as a Claude
  that did not think.
- An Anthropic-shaped LangChain run was estimated from its messages, tools and max_tokens alone: none of
  its other invocation params (red team 3 copied them for OpenAI-shaped runs only), nor ChatAnthropic's
  ``model_kwargs``, which its invocation params nest and it sends merged into the request: Claude's fast
  mode (``speed="fast"``) was reserved at the base price.

Each test failed on ``redteam3`` with the figure its docstring gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from budgetguard import Budget, Guard
from budgetguard.integrations.langchain import BudgetCallbackHandler
from tests.guard.one_call import committed, nano
from tests.guard.payloads import anthropic_client, cut_stream, openai_client, serve
from tests.sdk_http import ANTHROPIC_STREAM_CUT, OPENAI_STREAM_CUT
from tests.sdk_payloads import anthropic_sse
from tests.test_redteam3 import (
    ASK,
    HI,
    charged_usd,
    chat_openai,
    gpt5_stream,
    run,
)


@pytest.fixture
def guard() -> Iterator[Guard]:
    made = Guard("memory://", budgets=[Budget("user", usd="100", per="day")])
    yield made
    made.close()


def test_a_langchain_stream_of_a_hidden_reasoner_cut_before_its_text_is_charged_its_bound(
    guard: Guard,
) -> None:
    """On redteam3: a gpt-5 LangChain stream cut after its first chunk (the role, no text: gpt-5 reasons
    unseen before it writes) was charged its input alone, $0.000015, where ``guard.wrap`` charges the
    same cut stream $0.0400: its reasoning may have billed the whole 4,000-token bound ($10 / M)."""
    after = 1
    api = serve(cut_stream(gpt5_stream(), after_events=after))
    with pytest.raises(OPENAI_STREAM_CUT):
        run(guard, chat_openai(api, "gpt-5", max_tokens=4000, stream_usage=True), stream=True)
    langchain = charged_usd(guard)

    wrapped = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    try:
        client = wrapped.wrap(openai_client(serve(cut_stream(gpt5_stream(), after_events=after))))
        with pytest.raises(OPENAI_STREAM_CUT):
            for _ in client.chat.completions.create(
                model="gpt-5", messages=HI, max_completion_tokens=4000, stream=True
            ):
                pass
        assert langchain == charged_usd(wrapped)
    finally:
        wrapped.close()
    assert langchain >= Decimal(nano((4000, "10"))) / 10**9


THOUGHT = "Budgets bound spending; I should weigh reservations against commits first. " * 30
ANSWER = "A budget is a plan for money."
CLAUDE = "claude-sonnet-4-5"  # (https://claude.com/pricing: $3 in, $15 out per MTok)


class StartUsageClaude(BaseChatModel):
    """A Claude chat model streaming as langchain-aws's ``ChatAnthropicBedrock`` (and langchain-anthropic
    before 0.3.19) do: ``message_start``'s input usage on the first chunk, then a thinking block and
    text; then the connection is lost, before ``message_delta`` (the output usage). ``start_usage=False``
    and a ``thinking`` block of another shape: as langchain-anthropic 1.x streams with
    ``output_version="v1"`` (a standard ``reasoning`` block), or ``ChatBedrockConverse``
    (``reasoning_content``)."""

    max_tokens: int = 4000
    start_usage: bool = True
    thinking: dict[str, Any] = Field(
        default_factory=lambda: {"type": "thinking", "thinking": THOUGHT, "index": 0}
    )

    @property
    def _llm_type(self) -> str:
        return "start-usage-claude"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": CLAUDE, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="anthropic", ls_model_name=CLAUDE)
        return params

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        raise NotImplementedError

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        start = {"input_tokens": 5000, "output_tokens": 0, "total_tokens": 5000} if self.start_usage else None
        yield ChatGenerationChunk(message=AIMessageChunk(content=[], usage_metadata=start))  # type: ignore[arg-type]
        yield ChatGenerationChunk(message=AIMessageChunk(content=[self.thinking]))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content=[{"type": "text", "text": ANSWER, "index": 1}])
        )
        raise ConnectionError("connection reset by peer")


def claude_thinking_events() -> list[dict[str, Any]]:
    """The same stream on Anthropic's wire, up to where it breaks."""
    start = {
        "type": "message", "id": "msg_1", "role": "assistant", "model": CLAUDE, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 5000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 0},
    }  # fmt: skip
    block = {"type": "content_block_delta", "index": 0}
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {**block, "delta": {"type": "thinking_delta", "thinking": THOUGHT}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {**block, "index": 1, "delta": {"type": "text_delta", "text": ANSWER}},
    ]


def test_a_langchain_stream_with_its_input_usage_first_is_charged_what_it_streamed(guard: Guard) -> None:
    """On redteam3: a LangChain Claude stream cut after its thinking and first words, whose first chunk
    carried ``message_start``'s usage (5,000 input tokens, no output yet), was charged that usage,
    $0.0150, as if it were the bill; ``guard.wrap`` charges the same cut stream $0.0750: Claude's thinking
    bills as output, up to the 4,000-token bound ($15 / M)."""
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="alice")]}
    with pytest.raises(ConnectionError):
        for _ in StartUsageClaude().stream(ASK, config=config):
            pass
    langchain = charged_usd(guard)

    wrapped = Guard("memory://", budgets=[Budget("global", usd="100", per="day")])
    try:
        client = wrapped.wrap(anthropic_client(serve(cut_stream(anthropic_sse(claude_thinking_events()), 6))))
        with pytest.raises(ANTHROPIC_STREAM_CUT):
            for _ in client.messages.create(model=CLAUDE, messages=HI, max_tokens=4000, stream=True):
                pass
        assert langchain == charged_usd(wrapped)
    finally:
        wrapped.close()
    assert langchain == Decimal(nano((5000, "3"), (4000, "15"))) / 10**9


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "reasoning", "reasoning": THOUGHT, "index": 0},
        {"type": "reasoning_content", "reasoning_content": {"text": THOUGHT}, "index": 0},
    ],
    ids=["v1 reasoning", "bedrock converse"],
)
def test_a_langchain_claude_stream_that_thought_in_another_block_shape_is_charged_its_bound(
    guard: Guard, thinking: dict[str, Any]
) -> None:
    """On redteam3: a LangChain Claude stream cut after its thinking and first words, its thinking in a
    LangChain standard ``reasoning`` block (langchain-anthropic's ``output_version="v1"``) or Bedrock
    Converse's ``reasoning_content``, was charged its input and those words, $0.000231: only a
    ``thinking`` block told it thought; it may have billed its whole 4,000-token bound ($0.060 at
    $15 / M), as ``guard.wrap`` charges a Claude stream that showed thinking."""
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="alice")]}
    with pytest.raises(ConnectionError):
        for _ in StartUsageClaude(start_usage=False, thinking=thinking).stream(ASK, config=config):
            pass
    assert charged_usd(guard) >= Decimal(nano((4000, "15"))) / 10**9


class ClaudeParams(StartUsageClaude):
    """A Claude chat model whose invocation params are langchain-anthropic's ``ChatAnthropic``'s: its
    settings, ``model_kwargs`` nested (sent merged into the request), ``thinking``."""

    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": CLAUDE_FAST, "max_tokens": self.max_tokens, "temperature": None, "top_k": None,
            "top_p": None, "model_kwargs": self.model_kwargs, "streaming": False, "max_retries": 2,
            "default_request_timeout": None, "thinking": None,
        }  # fmt: skip

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_model_name=CLAUDE_FAST)
        return params

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        usage = {"input_tokens": 12, "output_tokens": 8, "total_tokens": 20}
        message = AIMessageChunk(content="A plan.", usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


CLAUDE_FAST = "claude-opus-4-8"  # (its fast mode, ``speed="fast"``, is priced apart, above its base)


def test_a_langchain_claude_run_is_reserved_with_its_model_kwargs(guard: Guard) -> None:
    """On redteam3: an Anthropic-shaped LangChain run kept only its messages, tools and max_tokens:
    ChatAnthropic's ``model_kwargs`` (nested in its invocation params, sent merged into the request),
    here ``speed="fast"``, were not read, so fast mode was reserved at the base price."""
    config: Any = {"callbacks": [BudgetCallbackHandler(guard, user="alice")]}
    ClaudeParams(model_kwargs={"speed": "fast"}).invoke(ASK, config=config)
    sent = {"model": CLAUDE_FAST, "max_tokens": 4000, "speed": "fast", "messages": HI}
    fast = guard.estimator(sent)
    assert committed(guard).data["estimated_usd"] == str(fast.cost)

"""LangChain models for tests: canned replies that carry usage, as provider models do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, BaseLLM, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation, LLMResult
from pydantic import Field


def usage(input_tokens: int, output_tokens: int, **details: Any) -> dict[str, Any]:
    """LangChain ``UsageMetadata`` (its ``input_tokens`` includes cache reads and writes)."""
    meta: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    inputs = {k: v for k, v in details.items() if k != "reasoning"}
    if inputs:
        meta["input_token_details"] = inputs
    if "reasoning" in details:
        meta["output_token_details"] = {"reasoning": details["reasoning"]}
    return meta


def reply(text: str, input_tokens: int, output_tokens: int, **details: Any) -> AIMessage:
    return AIMessage(text, usage_metadata=usage(input_tokens, output_tokens, **details))  # type: ignore[arg-type]


class UsageChat(BaseChatModel):
    """Replies (or raises) from ``replies`` in order; records the calls that reached the model."""

    model: str = "gpt-4o-mini"
    provider: str = "openai"
    max_tokens: int | None = None
    replies: list[Any] = Field(default_factory=list)
    """AIMessages to reply with, or exceptions to raise, in order."""
    sent: list[list[BaseMessage]] = Field(default_factory=list)
    gate: Any = None
    """A ``threading.Event`` the model waits for (10 s at most) before it replies."""

    @property
    def _llm_type(self) -> str:
        return "usage-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = self.model
        return params

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        self.sent.append(messages)
        if self.gate is not None and not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        answer = self.replies.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        answer = self._next(messages)
        words = str(answer.content).split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=word if last else word + " ",
                    usage_metadata=answer.usage_metadata if last else None,
                )
            )


class UsageLLM(BaseLLM):
    """A completion model: one generation per prompt, usage in ``llm_output["token_usage"]``."""

    model: str = "gpt-4o-mini"
    max_tokens: int | None = None
    replies: list[tuple[str, int, int]] = Field(default_factory=list)
    """(text, prompt tokens, completion tokens) to reply with, in order."""
    sent: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "usage-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens}

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        self.sent += prompts
        answers = [self.replies.pop(0) for _ in prompts]
        usage = {
            "prompt_tokens": sum(a[1] for a in answers),
            "completion_tokens": sum(a[2] for a in answers),
            "total_tokens": sum(a[1] + a[2] for a in answers),
        }
        return LLMResult(
            generations=[[Generation(text=text)] for text, _, _ in answers], llm_output={"token_usage": usage}
        )

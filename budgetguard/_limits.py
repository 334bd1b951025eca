"""Model limits: the context window and maximum output tokens of each OpenAI and Anthropic model.

genai-prices gives a context window for many models and a maximum output for none; the estimator
needs the output maximum to bound a request that sets none. This table holds both, from the
providers' published model pages (checked 2026-12-06):

* Anthropic: https://platform.claude.com/docs/en/models/overview and each model's page,
  https://platform.claude.com/docs/en/models/<model>/overview ("Context window: ... · Max output: ...");
  the legacy Claude 3.x limits from the same site's legacy-models table.
* OpenAI: https://developers.openai.com/api/docs/models/<model> (formerly
  https://platform.openai.com/docs/models/<model>): "N context window, M max output tokens".

Where sources disagree, the larger figure is kept: a bound that is too high reserves more than needed,
one that is too low lets a call cost more than was reserved. Opt-in extensions that any caller can
turn on with a header are included, since the request that uses them looks the same to the estimator:
Claude Sonnet 3.7's 128K output (``output-128k-2025-02-19``) and the 1M context of Claude Sonnet 4 and
4.5 (``context-1m-2025-08-07``). Anthropic's batch-only 300K output beta is not: a Messages request
always carries ``max_tokens``, which bounds it.

A name is matched after ``model_names`` strips a provider prefix (``openai/``, Bedrock's
``us.anthropic.``), a fine-tune's ``ft:`` wrapper and a date or ``-latest`` suffix; the longest table
prefix that equals the name, or is followed in it by ``-`` and a non-digit (``gpt-4o`` for
``gpt-4o-search-preview``, never ``gpt-4`` for ``gpt-4.1`` or ``claude-opus-4`` for ``claude-opus-4-9``),
wins. A model that no row matches has no known limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import ConfigurationError

__all__ = [
    "CHAT_SEARCH_BILLED_AT", "ModelLimits", "answers_as", "chat_search", "checked_limits", "model_limits",
    "model_names", "writes_cache_unasked",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """A model's context window (input plus output, tokens) and the most output tokens one response
    may have; ``None`` where no published figure is known."""

    context_window: int | None
    max_output_tokens: int | None


_K = 1_000
_KI = 1_024

# (context window, max output tokens, model name prefixes...). None: not published on the pages searched.
# fmt: off
_TABLE: tuple[tuple[int | None, int | None, *tuple[str, ...]], ...] = (
    # -- Anthropic -------------------------------------------------------------------------------
    # platform.claude.com/docs/en/models/<fable-5|fable-5-1|opus-5|opus-5-5|sonnet-5|sonnet-5-5|haiku-5-5>
    # (Mythos 5 "shares Claude Fable 5's specifications")
    (1_000_000, 128 * _K, "claude-fable-5", "claude-fable-5-1", "claude-fable-5-2", "claude-mythos-5",
        "claude-mythos-5-2", "claude-opus-5", "claude-opus-5-5", "claude-sonnet-5", "claude-sonnet-5-5",
        "claude-haiku-5-5"),
    # .../opus-4-6/overview, models overview (Opus 4.7, Opus 4.8, Sonnet 4.6: 1M, 128K; one older
    # overview lists Sonnet 4.6 at 64K output, the model page at 128K: 128K kept)
    (1_000_000, 128 * _K, "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-4-6"),
    # legacy-model table: Opus 4.5, Sonnet 4.5, Haiku 4.5 64K; Opus 4 / 4.1 32K; Sonnet 4 64K;
    # Sonnet 4 / 4.5: 200K. Their 1M context beta (context-1m-2025-08-07) was retired on 2026-04-30:
    # a request over 200K now errors (platform release notes; the Sonnet 4.5 model page says 200K)
    (200 * _K, 64 * _K, "claude-opus-4-5"),
    (200 * _K, 64 * _K, "claude-sonnet-4-5"),
    (200 * _K, 64 * _K, "claude-haiku-4-5"),
    (200 * _K, 32 * _K, "claude-opus-4-1", "claude-opus-4", "claude-opus-4-0"),
    (200 * _K, 64 * _K, "claude-sonnet-4", "claude-sonnet-4-0"),
    # Sonnet 3.7: 64K, 128K with the output-128k-2025-02-19 beta header; 3.5: 8,192; 3: 4,096
    (200 * _K, 128 * _K, "claude-3-7-sonnet"),
    (200 * _K, 8_192, "claude-3-5-sonnet", "claude-3-5-haiku"),
    # (Claude 2.0 100K, 2.1 200K context; 4,096 output)
    (200 * _K, 4_096, "claude-3-opus", "claude-3-sonnet", "claude-3-haiku", "claude-2"),
    (100 * _K, 4_096, "claude-instant-1"),
    (100 * _K, 100 * _K, "claude-v1"),  # no separate output limit published: the window bounds it
    # -- OpenAI ----------------------------------------------------------------------------------
    # developers.openai.com/api/docs/models/<gpt-6-*, gpt-6.1-*, gpt-6.2-*>: 1,050,000 / 128,000
    (1_050_000, 128 * _K, "gpt-6-astra", "gpt-6-sol", "gpt-6-luna", "gpt-6.1-sol", "gpt-6.1-terra",
        "gpt-6.2-astra", "gpt-6.2-sol"),
    # gpt-5.6-*: 1,050,000 context; output listed as 128,000 for Sol and 272,000 for Terra "matching
    # the rest of the family": 272,000 kept for all three
    (1_050_000, 272 * _K, "gpt-5.6", "gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna"),
    # gpt-5.5: 1,050,000 context; output listed as 128,000 and as 272,000: 272,000 kept
    (1_050_000, 272 * _K, "gpt-5.5"),
    (1_050_000, 128 * _K, "gpt-5.5-pro"),
    # .../gpt-5.4, gpt-5.4-pro: 1,050,000 / 128,000; gpt-5.4-mini, gpt-5.4-nano: 400,000 / 128,000
    (1_050_000, 128 * _K, "gpt-5.4", "gpt-5.4-pro"),
    (400 * _K, 128 * _K, "gpt-5.4-mini", "gpt-5.4-nano"),
    # gpt-5 ... gpt-5.3: 400,000 / 128,000 (gpt-5-pro 272,000); the chat snapshots 128,000 / 16,384
    (400 * _K, 128 * _K, "gpt-5.3-codex"),
    (128 * _K, 16_384, "gpt-5.3", "gpt-5.3-chat"),
    (400 * _K, 128 * _K, "gpt-5.2", "gpt-5.2-pro", "gpt-5.2-codex"),
    (128 * _K, 16_384, "gpt-5.2-chat"),
    (400 * _K, 128 * _K, "gpt-5.1", "gpt-5.1-codex"),
    (128 * _K, 16_384, "gpt-5.1-chat"),
    (400 * _K, 128 * _K, "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-codex"),
    (400 * _K, 272 * _K, "gpt-5-pro"),
    (128 * _K, 16_384, "gpt-5-chat"),
    # gpt-4.1 family: 1,047,576 / 32,768
    (1_047_576, 32_768, "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"),
    (128 * _K, 16_384, "gpt-4.5-preview"),
    # gpt-4o family: 128,000 / 16,384 (the 2024-05-13 snapshot 4,096: its date is stripped, 16,384 kept)
    (128 * _K, 16_384, "gpt-4o", "chatgpt-4o", "gpt-4o-mini"),
    (128 * _K, 64 * _K, "gpt-4o:extended"),  # the 64K-output long-output variant
    (128 * _K, 16_384, "gpt-4o-audio-preview", "gpt-4o-mini-audio-preview", "gpt-4o-search-preview",
        "gpt-4o-mini-search-preview", "gpt-audio", "gpt-audio-mini"),
    # realtime: gpt-4o-realtime-preview 128,000 (later 32,000) / 4,096; gpt-realtime 32,000 / 4,096;
    # gpt-realtime-2, gpt-realtime-2.1-mini 128,000 / 32,000
    (128 * _K, 4_096, "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview"),
    (32 * _K, 4_096, "gpt-realtime", "gpt-realtime-1.5"),
    (128 * _K, 4_096, "gpt-realtime-mini"),
    (128 * _K, 32 * _K, "gpt-realtime-2", "gpt-realtime-2.1", "gpt-realtime-2.1-mini"),
    (16 * _K, 2 * _K, "gpt-4o-transcribe", "gpt-4o-mini-transcribe"),
    # GPT-4 and GPT-3.5: gpt-4 8,192 / 8,192; gpt-4-32k 32,768 / 32,768; turbo and vision previews
    # 128,000 / 4,096; gpt-3.5-turbo 16,385 / 4,096 (16k and instruct: the window bounds the output)
    (8_192, 8_192, "gpt-4"),
    (32_768, 32_768, "gpt-4-32k"),
    (128 * _K, 4_096, "gpt-4-turbo", "gpt-4-1106-preview", "gpt-4-0125-preview", "gpt-4-vision-preview",
        "gpt-4-1106-vision-preview"),
    (16_385, 4_096, "gpt-3.5-turbo", "gpt-3.5"),  # (gpt-3.5: gpt-3.5-0301)
    (16_385, 16_385, "gpt-3.5-turbo-16k", "gpt-3.5-turbo-instruct"),
    # reasoning models: o1, o1-pro, o3, o3-pro, o3-mini, o4-mini, deep research, codex-mini 200,000 /
    # 100,000; o1-mini 128,000 / 65,536; o1-preview 128,000 / 32,768; computer-use-preview 8,192 / 1,024
    (200 * _K, 100 * _K, "o1", "o1-pro"),
    (128 * _K, 65_536, "o1-mini"),
    (128 * _K, 32_768, "o1-preview"),
    (200 * _K, 100 * _K, "o3", "o3-pro", "o3-mini", "o3-deep-research", "o4-mini", "o4-mini-deep-research",
        "codex-mini"),
    (8_192, _KI, "computer-use-preview", "computer-use"),
    # gpt-oss: 131,072 / 131,072
    (131_072, 131_072, "gpt-oss-120b", "gpt-oss-20b", "gpt-oss-safeguard-20b"),
    # embeddings: 8,192 input, no output tokens
    (8_192, 0, "text-embedding-3-large", "text-embedding-3-small", "text-embedding-ada-002"),
    # legacy completions models: no separate output limit, the window bounds it
    (16_384, 16_384, "davinci-002", "babbage-002"),
    (4_097, 4_097, "text-davinci-003", "text-davinci-002"),
    (2_049, 2_049, "text-davinci-001", "text-curie-001", "text-ada-001", "davinci", "curie", "babbage",
        "ada"),
    # no limits published on the pages searched: a request to these needs its own max (or
    # register_price(..., max_output_tokens=...)). Image generation (output is images, sized by the
    # request), text to speech, the access-restricted cyber / life-sciences variants, and aliases
    # whose target the pages do not state.
    (None, None, "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "gpt-image-2.5-flare",
        "gpt-image-2.5-sunburst", "chatgpt-image", "gpt-5-image", "gpt-5-image-mini", "gpt-5.4-image-2",
        "gpt-4o-mini-tts", "gpt-5-search-api", "gpt-chat", "gpt-5.5-cyber", "gpt-5.6-cyber", "gpt-6-cyber",
        "gpt-6-rosalind", "gpt-rosalind-discovery", "gpt-rosalind-research"),
)
# fmt: on
_BY_PREFIX = {prefix: ModelLimits(context, output) for context, output, *names in _TABLE for prefix in names}
_LONGEST_FIRST = sorted(_BY_PREFIX, key=len, reverse=True)

DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-\d{4}|-latest)$")
_VENDOR = re.compile(
    r"^(?:[a-z]{2,6}(?:-[a-z]{2,4})?\.)?anthropic\."
)  # Bedrock: anthropic.claude-..., us.anthropic.
_BEDROCK_VERSION = re.compile(r"-v\d+:\d+$")  # ...-20241022-v2:0


def model_names(model: str) -> list[str]:
    """``model``, then without a provider prefix (``openai/``), then without a date suffix."""
    names = [model]
    bare = model.rsplit("/", 1)[-1] if "/" in model else model
    for candidate in (bare, DATE_SUFFIX.sub("", bare)):
        if candidate and candidate not in names:
            names.append(candidate)
    return names


def _bare(model: str) -> str:
    """The name a model's limits are listed under: no provider prefix, fine-tune wrapper, Bedrock
    vendor and version, Vertex ``@date`` or date suffix."""
    name = model.rsplit("/", 1)[-1].lower()
    if name.startswith("ft:"):  # ft:gpt-4o-mini-2024-07-18:org::id -> the base model's limits
        name = name[3:].split(":", 1)[0]
    name = _BEDROCK_VERSION.sub("", _VENDOR.sub("", name)).split("@", 1)[0]
    return DATE_SUFFIX.sub("", name)


def answers_as(asked: str, served: str) -> bool:
    """Whether ``served`` (the model a response names) is ``asked`` under its vendor's own name: Bedrock
    asked for ``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` (or an inference profile's ARN ending in
    it) answers as ``claude-sonnet-4-5-20250929``. The asked id keeps its price then: it names the
    endpoint (a global or a regional profile) that the answer's name does not."""
    name = asked.rsplit("/", 1)[-1]
    return _VENDOR.match(name) is not None and _BEDROCK_VERSION.sub("", _VENDOR.sub("", name)) == served


def _matches(prefix: str, name: str) -> bool:
    if name == prefix:
        return True
    rest = name[len(prefix) :]
    return name.startswith(prefix) and len(rest) > 1 and rest[0] == "-" and not rest[1].isdigit()


def model_limits(*names: str) -> ModelLimits | None:
    """The published limits of the first of ``names`` the table knows (a request's model name, then
    the id genai-prices resolved it to), or ``None``."""
    for model in names:
        name = _bare(model)
        for prefix in _LONGEST_FIRST:
            if _matches(prefix, name):
                return _BY_PREFIX[prefix]
    return None


UNKNOWN = ModelLimits(None, None)


def checked_limits(context_window: object, max_output_tokens: object) -> ModelLimits:
    """Limits a caller gives (``register_price``, a prices file), validated: whole numbers of tokens."""
    for what, value, least in (
        ("context_window", context_window, 1),
        ("max_output_tokens", max_output_tokens, 0),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ConfigurationError(
                f"{what} must be a whole number of tokens (at least {least}) or None, got {value!r}"
            )
    return ModelLimits(context_window, max_output_tokens)  # type: ignore[arg-type]


CHAT_SEARCH_BILLED_AT = frozenset({"openai", "azure", "openrouter"})
"""The providers that serve OpenAI's Chat Completions search models and bill each request's search at
OpenAI's fee: OpenAI, Azure OpenAI (priced from OpenAI's listing), and OpenRouter (it lists
``openai/gpt-4o-search-preview`` at $35 per 1k searches, OpenAI's medium fee)."""


def chat_search(model: object, provider: str | None = None) -> bool:
    """Whether ``model`` is a Chat Completions search model (gpt-4o-search-preview, gpt-5-search-api and
    their snapshots) at ``provider``: it searches the web once for every request (billed per call, where
    a provider of ``CHAT_SEARCH_BILLED_AT`` serves it) and reports it in no usage field. ``None``: a host
    priced by the name (as OpenAI's), or a response read without its provider. The one rule of the
    search's count and fee (estimate, price, a call charged its input only)."""
    return (
        type(model) is str
        and "-search-" in model.rsplit("/", 1)[-1]
        and (provider is None or provider in CHAT_SEARCH_BILLED_AT)
    )


_OPENAI_FAMILY = re.compile(r"(?:^|[/.])(?:gpt-|chatgpt-|codex-|o\d)")


def writes_cache_unasked(model: object) -> bool:
    """Whether ``model`` writes the prompt cache on its own, asked or not: OpenAI's models (by their
    name, also on OpenRouter, Azure, Bedrock: ``openai/gpt-5.6-sol``, ``global.openai.gpt-5.6-sol``;
    gpt-5.6 wrote 4,418 tokens of a request that asked nothing, fixture 095). Claude writes only where a
    request sets ``cache_control``, whatever the wire format; Kimi, MiniMax and the others are not
    known to write unasked."""
    return type(model) is str and _OPENAI_FAMILY.search(model) is not None

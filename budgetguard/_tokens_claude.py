"""Claude request token counts: an upper estimate, since Claude has no public offline tokenizer.

A Claude request counts as what the model reads. Text (system, messages, client tool definitions,
tool calls and results, thinking, structured-output schemas, documents) is counted with o200k_base
times the model family's factor (``claude_factor``); what Anthropic adds that the request does not
show is added as calibrated constants: the request's framing, each message's, the tool-use system
prompt (by ``tool_choice``), server and Anthropic-defined tools' hidden definitions (by type),
thinking, structured-output and task-budget instructions. Images count by their pixel size or the
model's largest image. What a request only references (a continued thread's held history, documents
and files by URL or id, MCP servers' tools, skills, a server tool call left for the server to run) is
named by ``unseen_inputs`` for the estimator to bound.

The constants were measured on the real-world tier's recorded requests (``token_pairs.jsonl``,
``python -m tests.realworld.pairs``: the line numbers cited below), rounded up with a margin.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

from ._errors import ConfigurationError
from ._events import use_logging
from ._tokens import _cache, as_mapping, get_encoding
from ._tokens_media import image_size, pdf_facts

__all__ = [
    "ANTHROPIC_SAFETY_FACTOR",
    "cache_ttl",
    "compaction_trigger",
    "CLAUDE_FACTORS",
    "claude_factor",
    "COUNT_KEYS",
    "count_anthropic_tokens",
    "count_claude_request",
    "count_failed",
    "counted",
    "is_async_counter",
    "unseen_inputs",
]

# -- o200k_base -> Claude, per model family ----------------------------------------------------

ANTHROPIC_SAFETY_FACTOR = Decimal("1.4")
"""o200k_base tokens x this factor bound the count of Claude 3 to Claude 4.6 (one tokenizer).

Measured on the recorded requests: 1.006x on English prose (lines 230-232), 1.12x on a JSON schema
in prose (303), 1.16x on news text (612-615); published comparisons put code at up to ~1.3x. Text
in scripts other than Latin can exceed it: use the token counting endpoint for such workloads."""

CLAUDE_NEW_TOKENIZER_FACTOR = Decimal("1.55")
"""The factor of Claude Opus 4.7 and every later or unknown model.

Opus 4.7 brought a new tokenizer that Anthropic documents at up to ~1.35x its predecessor's count;
independent counts put English prose and technical documentation at 1.45-1.47x Opus 4.6. Measured
here: 1.407x o200k on structured English (line 339, claude-opus-4-8). 1.55 keeps 10% above that."""

CLAUDE_FACTORS: tuple[tuple[str, Decimal], ...] = (
    ("claude-3", ANTHROPIC_SAFETY_FACTOR),  # Claude 3, 3.5, 3.7 (and Bedrock's anthropic.claude-3-...)
    ("claude-2", ANTHROPIC_SAFETY_FACTOR),
    ("claude-instant", ANTHROPIC_SAFETY_FACTOR),
    ("claude-opus-4-0", ANTHROPIC_SAFETY_FACTOR),
    ("claude-opus-4-1", ANTHROPIC_SAFETY_FACTOR),
    ("claude-opus-4-2", ANTHROPIC_SAFETY_FACTOR),  # dated Opus 4: claude-opus-4-20250514
    ("claude-opus-4-5", ANTHROPIC_SAFETY_FACTOR),
    ("claude-opus-4-6", ANTHROPIC_SAFETY_FACTOR),
    ("claude-sonnet-4-0", ANTHROPIC_SAFETY_FACTOR),
    ("claude-sonnet-4-2", ANTHROPIC_SAFETY_FACTOR),  # dated Sonnet 4: claude-sonnet-4-20250514
    ("claude-sonnet-4-5", ANTHROPIC_SAFETY_FACTOR),
    ("claude-sonnet-4-6", ANTHROPIC_SAFETY_FACTOR),
    ("claude-haiku-4-5", ANTHROPIC_SAFETY_FACTOR),
)
"""Claude model-name prefixes (after any ``provider/``, ``anthropic.`` or region prefix, with Vertex's
``@`` read as ``-``) and their factor; any other model, Opus 4.7 and later included, gets
``CLAUDE_NEW_TOKENIZER_FACTOR``. ``Estimator(anthropic_factors={prefix: factor})`` overrides."""


def claude_factor(model: str) -> Decimal:
    """The o200k_base -> Claude factor of ``model``'s family (``CLAUDE_FACTORS``)."""
    bare = model.rsplit("/", 1)[-1].rpartition("anthropic.")[2].replace("@", "-")
    for prefix, factor in CLAUDE_FACTORS:
        if bare.startswith(prefix):
            return factor
    return CLAUDE_NEW_TOKENIZER_FACTOR


# -- what Anthropic adds that the request does not show ----------------------------------------

REQUEST_TOKENS = 6
"""Once per request. With its message's 4, a one-message request counts 10 over its text, where the
recordings count 7 ("Hi" alone: 8, lines 304, 329; lines 053, 198, 295, 336, 663...)."""
MESSAGE_TOKENS = 4
"""Per message (its role turn); a system prompt counts as one more: three messages count 15 over their
text, one 7 (lines 664, 232, 278; 340-349 with a system prompt)."""
TOOL_PROMPT_TOKENS = {"auto": 530, "none": 530, "any": 610, "tool": 610}
"""The tool-use system prompt Anthropic adds when a request has tools, by ``tool_choice``.

Anthropic publishes 346 (auto, none) and 313 (any, tool) tokens for Claude 4 models; recordings of
Claude Sonnet 4.5, 4.6 and Haiku 4.5 show about 500 (auto: lines 202, 213, 355-370, 577, 586, 681)
and 600 (any / tool: lines 189, 195, 583, 589, 592, 595) over the tool definitions' text."""
SERVER_TOOL_TOKENS: tuple[tuple[str, int], ...] = (
    ("web_search_", 1750),  # line 305: 2,218 for a 5-token question with web_search_20250305 alone
    ("web_fetch_", 1100),  # line 223: +525 next to web_search; alone (line 323) at most ~1,300
    ("code_execution_", 1900),  # lines 012, 021: two passes of 20260120 count 4,723-4,727: <= 2,361 each
    ("memory_", 1100),  # lines 239, 273: 1,577-1,581 for a 5-8 token question with memory_20250818
    ("tool_search_tool_", 150),  # lines 070, 097: bm25 / regex next to one deferred tool
    ("advisor_", 600),  # line 226, and lines 224-228: two passes of 2,390-2,482
    ("bash_", 245),  # Anthropic: the bash tool adds 245 input tokens
    ("text_editor_", 700),  # Anthropic: the text editor tool adds 700 input tokens
    ("computer_", 1250),  # Anthropic: 735 for the tool, 466-499 of computer-use system prompt
)
"""The hidden definition of each server or Anthropic-defined tool, by ``type`` prefix, on top of the
tool-use system prompt."""
UNKNOWN_SERVER_TOOL_TOKENS = 2500
"""A tool ``type`` not in ``SERVER_TOOL_TOKENS``: above the largest known definition."""
THINKING_TOKENS = 32
"""``thinking`` enabled or adaptive: 36-40 over the text where plain requests count 7 (lines 001,
002, 281, 288, 549, 617, 674, 682: enabled; 294, 671: adaptive on Opus 4.6)."""
STRUCTURED_OUTPUT_TOKENS = 120
"""``output_config.format`` / ``output_format``: the schema counts as text, plus instructions of
114-131 tokens (lines 196, 199, 292, 616, 673, 676; 185 next to tools for a 65-token schema, 191)."""
TASK_BUDGET_TOKENS = 48
"""``output_config.task_budget``: 53-54 for a 7-token question that counts 13 without it (308, 309)."""
CONTEXT_MANAGEMENT_TOKENS = 128
"""``context_management`` edits (compaction): line 238 counts ~90 more than its text."""
COMPACTION_TRIGGER = 150_000
"""The input at which a ``compact_*`` edit compacts when its ``trigger`` names none (Anthropic's default,
https://platform.claude.com/docs/en/build-with-claude/compaction-threshold)."""


def compaction_trigger(request: Mapping[str, Any]) -> int | None:
    """The least input at which ``request``'s ``context_management`` compacts (its ``compact_*`` edits'
    ``trigger``), or ``None`` when it asks for no compaction. A trigger ``value`` that is not a whole
    number of tokens (``50000.0``, ``"50000"``) is a ``ConfigurationError``: read as the default, a
    request above it would reserve no compaction pass."""
    management = request.get("context_management")
    edits = management.get("edits") if isinstance(management, Mapping) else None
    found = None
    for edit in edits if isinstance(edits, list | tuple) else ():
        if isinstance(edit, Mapping) and str(edit.get("type", "")).startswith("compact_"):
            trigger = edit.get("trigger")
            value = trigger.get("value") if isinstance(trigger, Mapping) else None
            if value is None:
                at = COMPACTION_TRIGGER
            elif type(value) is int and value >= 0:
                at = value
            else:
                raise ConfigurationError(
                    f"context_management: a {edit.get('type')!s} edit's trigger value must be a whole "
                    f"number of input tokens (an int, at least 0) or left out, got {value!r}"
                )
            found = at if found is None else min(found, at)
    return found


BLOCK_TOKENS = 8
"""Per tool result and per image: its framing (lines 683-684: two calls and their results count 136
over one turn; lines 669-670: a 166x282 image, 66 patches, counts 69-71)."""
DOCUMENT_TOKENS = 48
"""Per document: its framing (line 337: a 4-token text document counts 39 more than its text)."""

# -- content that is not text ------------------------------------------------------------------

IMAGE_PATCH = 28
"""Claude reads images in 28x28 pixel patches, one token each, after resizing to its maximum."""
IMAGE_LONG_EDGE, IMAGE_MAX_TOKENS = 1568, 1600
"""Claude up to 4.6 resizes an image to 1568 px on its long edge and about 1.15 megapixels."""
NEW_IMAGE_LONG_EDGE, NEW_IMAGE_MAX_TOKENS = 2576, 4784
"""Opus 4.7 reads up to 2576 px and ~3.75 megapixels: the bound of every model ``CLAUDE_FACTORS`` does
not list as Claude 4.6 or earlier."""


def count_anthropic_tokens(
    messages: Iterable[Mapping[str, Any]],
    model: str,
    *,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    factor: Decimal | None = None,
) -> int:
    """A safe upper estimate of a Claude request's input tokens (messages, system and tools).

    ``factor`` defaults to the model family's (``claude_factor``). ``count_claude_request`` reads the
    other request fields too (``tool_choice``, ``thinking``, ``output_config``...)."""
    request: dict[str, Any] = {"messages": list(messages), "system": system, "tools": tools}
    return count_claude_request(request, model, factor)


def count_claude_request(
    request: Mapping[str, Any], model: str | None = None, factor: Decimal | None = None
) -> int:
    """A safe upper estimate of the input tokens of a ``messages.create`` request (its keyword arguments).

    ``model`` defaults to the request's; ``factor`` to the model family's (``claude_factor``)."""
    model = model or str(request.get("model") or "")
    factor = claude_factor(model) if factor is None else factor
    counter = _Counter(model)
    fixed = REQUEST_TOKENS
    system = request.get("system")
    if system:
        counter.content(system)
        fixed += MESSAGE_TOKENS
    for message in request.get("messages") or ():
        counter.content(message.get("content"))
        fixed += MESSAGE_TOKENS
    tools = request.get("tools") or ()
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind in (None, "custom"):
            counter.json(tool)
        else:
            fixed += server_tool_tokens(str(kind))
    if tools:
        choice = request.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, Mapping) else None
        fixed += (
            TOOL_PROMPT_TOKENS.get(str(kind), max(TOOL_PROMPT_TOKENS.values()))
            if kind
            else TOOL_PROMPT_TOKENS["auto"]
        )
    thinking = request.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        fixed += THINKING_TOKENS
    config = request.get("output_config")
    schema = (config.get("format") if isinstance(config, Mapping) else None) or request.get("output_format")
    if schema:
        counter.json(schema)
        fixed += STRUCTURED_OUTPUT_TOKENS
    if isinstance(config, Mapping) and config.get("task_budget"):
        counter.json(config["task_budget"])
        fixed += TASK_BUDGET_TOKENS
    if request.get("context_management"):
        fixed += CONTEXT_MANAGEMENT_TOKENS
    return math.ceil(counter.text * factor) + counter.other + fixed


def server_tool_tokens(kind: str) -> int:
    """The hidden definition of a tool of ``type`` ``kind`` (``SERVER_TOOL_TOKENS``)."""
    for prefix, tokens in SERVER_TOOL_TOKENS:
        if kind.startswith(prefix):
            return tokens
    return UNKNOWN_SERVER_TOOL_TOKENS


class _Counter:
    """Sums a request's text (o200k_base tokens, to be scaled) and its other content (images, PDFs)."""

    __slots__ = ("encoding", "model", "other", "text")

    def __init__(self, model: str) -> None:
        self.encoding: tiktoken.Encoding = get_encoding("o200k_base")
        self.model = model
        self.text = 0
        self.other = 0

    def add_text(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.text += _cache.count(self.encoding, value)

    def json(self, value: Any) -> None:
        self.text += _cache.count(self.encoding, json.dumps(value, sort_keys=True, default=str))

    def content(self, content: Any) -> None:
        if isinstance(content, str):
            self.add_text(content)
            return
        if isinstance(content, Mapping):
            content = [content]
        if not isinstance(content, list | tuple):
            return
        for block in content:
            self.block(block if isinstance(block, Mapping) else as_mapping(block, "a content block"))

    def block(self, block: Mapping[str, Any]) -> None:
        kind = block.get("type")
        if kind == "text":
            self.add_text(block.get("text"))
        elif kind == "thinking":  # the signature is not read
            self.add_text(block.get("thinking"))
        elif kind == "redacted_thinking":
            self.add_text(block.get("data"))
        elif kind == "compaction":
            self.content(block.get("content"))
        elif kind == "image":
            self.other += self.image(block.get("source")) + BLOCK_TOKENS
        elif kind == "document":
            self.document(block)
            self.other += DOCUMENT_TOKENS
        elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):  # as JSON: id, name, input
            self.json({k: v for k, v in block.items() if k != "cache_control"})
        elif kind in ("tool_result", "mcp_tool_result", "search_result") or isinstance(
            block.get("content"), list
        ):
            for key in ("tool_use_id", "title", "source"):
                self.add_text(block.get(key))
            self.content(block.get("content"))
            self.other += BLOCK_TOKENS
        else:  # web_search_tool_result, web_fetch results, container_upload...: their JSON
            self.json({k: v for k, v in block.items() if k not in ("cache_control", "citations")})

    def document(self, block: Mapping[str, Any]) -> None:
        for key in ("title", "context"):
            self.add_text(block.get(key))
        source = block.get("source")
        if not isinstance(source, Mapping):
            return
        kind = source.get("type")
        if kind == "text":
            self.add_text(source.get("data"))
        elif kind == "content":
            self.content(source.get("content"))
        elif kind == "base64":
            data = source.get("data")
            pages, text = pdf_facts(data) if isinstance(data, str) else (0, 0)
            self.text += text  # at most a token a byte of its text, times the factor like any text
            self.other += pages * self.image_max()[1]
        # url / file: unseen (unseen_inputs)

    def image_max(self) -> tuple[int, int]:
        if claude_factor(self.model) == CLAUDE_NEW_TOKENIZER_FACTOR:
            return NEW_IMAGE_LONG_EDGE, NEW_IMAGE_MAX_TOKENS
        return IMAGE_LONG_EDGE, IMAGE_MAX_TOKENS

    def image(self, source: Any) -> int:
        """An image's tokens: by its pixel size when it is sent inline, else the model's largest."""
        edge, most = self.image_max()
        data = source.get("data") if isinstance(source, Mapping) else None
        size = image_size(data) if isinstance(data, str) else None
        if size is None:
            return most
        width, height = size
        scale = min(1.0, edge / max(width, height, 1))
        width, height = max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))
        return min(most, math.ceil(width / IMAGE_PATCH) * math.ceil(height / IMAGE_PATCH))


# -- what a request references without carrying it ---------------------------------------------


def unseen_inputs(request: Mapping[str, Any], *, counted: bool = False) -> tuple[str, ...]:
    """What a Claude request makes the model read without carrying it: a continued thread's history
    (``thread={"type": "continue", ...}``: the server holds the conversation, the request carries only
    the new turn), documents by URL or file id, PDFs whose pages cannot be counted offline, MCP servers'
    tools, skills, and server tool calls the request leaves for the server to run (their results).

    ``counted``: the input was counted by the token counting endpoint, which reads the references but
    not a thread's history (it takes no ``thread``): only the thread is unseen then."""
    found: list[str] = []
    thread = request.get("thread")
    if isinstance(thread, Mapping) and thread.get("type") == "continue":
        found.append("thread")
    if counted:
        return tuple(found)
    if request.get("mcp_servers"):
        found.append("mcp_servers")
    for tool in request.get("tools") or ():
        if isinstance(tool, Mapping) and str(tool.get("type", "")).startswith("mcp_toolset"):
            found.append("mcp_toolset")
    container = request.get("container")
    if isinstance(container, Mapping) and container.get("skills"):
        found.append("skills")
    calls: set[str] = set()
    answered: set[str] = set()
    for message in request.get("messages") or ():
        for block in _blocks(message.get("content")):
            kind = block.get("type")
            if kind in ("server_tool_use", "mcp_tool_use"):
                calls.add(str(block.get("id")))
            elif "tool_use_id" in block:
                answered.add(str(block.get("tool_use_id")))
            elif kind == "document":
                source = block.get("source")
                if not isinstance(source, Mapping):
                    continue
                if source.get("type") == "url":
                    found.append("document url")
                elif source.get("type") == "file":
                    found.append("file_id")
                elif source.get("type") == "base64" and not pdf_facts(str(source.get("data") or ""))[0]:
                    found.append("document")
    if calls - answered:
        found.append("server tool call")
    return tuple(dict.fromkeys(found))


def _blocks(content: Any) -> Iterable[Mapping[str, Any]]:
    """Every block of a message's content, nested tool results' blocks included."""
    if not isinstance(content, list | tuple):
        return
    for item in content:
        block = item if isinstance(item, Mapping) else as_mapping(item, "a content block")
        yield block
        if isinstance(block.get("content"), list):
            yield from _blocks(block["content"])


def cache_ttl(request: Mapping[str, Any]) -> str | None:
    """``"1h"``/``"5m"`` if any block of the request asks for prompt caching (a block nested in a tool
    result's content too), else ``None``."""
    ttl: str | None = None
    blocks: list[Any] = []
    for key in ("system", "tools"):
        value = request.get(key)
        if isinstance(value, list):
            blocks.extend(value)
    for message in request.get("messages") or ():  # (an SDK object fed back too: its content)
        mapping = isinstance(message, Mapping)
        content = message.get("content") if mapping else getattr(message, "content", None)
        blocks.extend(_blocks(content))
    if isinstance(request.get("cache_control"), Mapping):
        blocks.append(request)
    for block in blocks:
        control = block.get("cache_control") if isinstance(block, Mapping) else None
        if isinstance(control, Mapping):
            if control.get("ttl") == "1h":
                return "1h"
            ttl = "5m"
    return ttl


# -- Anthropic's token counting endpoint (``Estimator(anthropic_count_tokens=client)``) ------------------

COUNT_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config", "speed")
"""The request keys ``messages.count_tokens`` is asked with."""


def is_async_counter(client: Any) -> bool:
    """Whether ``client``'s ``messages.count_tokens`` is a coroutine function (an async client)."""
    return inspect.iscoroutinefunction(getattr(getattr(client, "messages", None), "count_tokens", None))


def counted(result: Any) -> int:
    """The input tokens a ``count_tokens`` answer gives, or ``ValueError``."""
    value = getattr(result, "input_tokens", None)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"count_tokens returned no usable input_tokens: {result!r}")
    return value


def count_failed(ask: Mapping[str, Any], exc: BaseException) -> int | None:
    """Log a failed ``count_tokens`` call; ``None``: the offline estimate is used."""
    use_logging().warning(
        "budgetguard count_tokens failed for %s (%s: %s); using the offline estimate",
        ask.get("model"), type(exc).__name__, exc,
    )  # fmt: skip
    return None

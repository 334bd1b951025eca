"""Server-side tools: the calls a request lets the provider make, their fees and the passes they feed.

A request that offers server-side tools lets the provider run a tool, feed its result back and sample
again, all within the one call: the usage's input tokens cover every pass, and none of the results is in
the request. A call that may make ``c`` server-tool calls may run ``c + 1`` passes; the ``k``-th extra
pass re-reads the request, what the model wrote before it and the results of ``k`` calls. Their worst
order is the largest results first (running calls side by side in one pass only removes passes), so::

    extra input = sum for k in 1..c of min(context window, input + output bound + the k largest results)

What is a hard bound and what is calibrated:

* hard: the model's context window caps every pass (``price.context_window``: no pass reads more); the
  call's output bound (``max_tokens`` / ``max_output_tokens``, else the model's limit) caps what the
  model wrote before a pass; ``max_uses`` / ``max_tool_calls`` cap the calls; an advisor's result is at
  most its ``max_tokens``, a web fetch's at most its ``max_content_tokens``;
* calibrated: any other result's size, ``DEFAULT_TOOL_RESULT_TOKENS`` per tool kind (overridden with
  ``Estimator(tool_result_tokens=...)``, where ``None`` for a kind reserves the context window for every
  pass after one of its calls: the hard bound), and the count of calls the request leaves unbounded
  (``DEFAULT_TOOL_CALLS``). An estimate says which kinds it bounded at the calibrated sizes
  (``Estimate.tool_results_defaulted``, in the journal as ``tool_results_defaulted``).

Kinds: Anthropic ``web_search_*`` / ``web_fetch_*`` / ``code_execution_*`` / ``tool_search_tool_*`` /
``mcp_toolset`` tools and ``mcp_servers``; Responses ``web_search*`` / ``file_search`` /
``code_interpreter`` / hosted ``shell`` / ``image_generation`` / ``tool_search`` / ``mcp`` tools; the one
search of a Chat Completions search model. A request's tools can set a fee (``ToolUse.rates``): an
OpenAI container's ``memory_limit``, a ``web_search_preview`` on a model that does not reason. Every
execution in a code execution session feeds a pass (``DEFAULT_TOOL_CALLS["code_execution"]`` counts
executions; the fee is one session a container). Anthropic advisor uses are passes on the advisor's
model (``Estimator._advisor_passes``) whose advice the call then reads: a result of at most the
advisor's ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._errors import ConfigurationError, PricingError
from ._image_tool import image_generation_bounds, image_generation_fee
from ._price_data import chat_search_fee, published_prices
from ._rates import _FEE_UNITS, ImageBounds, Price

__all__ = [
    "DEFAULT_TOOL_CALLS",
    "DEFAULT_TOOL_RESULT_TOKENS",
    "FILE_SEARCH_RESULTS",
    "NO_TOOLS",
    "ServerTools",
    "ToolUse",
    "largest_read",
    "pass_input",
    "server_tool",
]

DEFAULT_TOOL_CALLS: Mapping[str, int] = {
    "web_search": 10,
    "web_fetch": 10,
    "file_search": 10,
    "code_execution": 10,
    "image_generation": 10,
    "tool_search": 5,
    "mcp": 10,
    "advisor": 3,
}
"""Calls reserved per server-side tool that the request does not bound (``max_uses``, ``max_tool_calls``):
one rule for every tool billed per call, 10 (a model may call any of them again within one call, and
each reported call is charged). Code execution counts executions, each feeding a pass (its fee is one
session, a container, per call). Override with ``Estimator(tool_calls=...)``."""

DEFAULT_TOOL_RESULT_TOKENS: Mapping[str, int | None] = {
    "web_search": 23_000,
    "web_fetch": 25_000,
    "file_search": 16_000,
    "code_execution": 10_000,
    "image_generation": 3_000,
    "tool_search": 2_000,
    "mcp": 5_000,
}
"""Input tokens one server-side tool call may add to every later pass, by tool kind: calibrated, not
a bound. Each is 1.5 times the most one call of that kind added to the provider's count in the recorded
calls (``tests/realworld``: a one-call request's count less twice its own input, or the sequential share
of a multi-call one), rounded up to a thousand, or the provider's documented size where that is larger:

* ``web_search``: 15.2k recorded (Claude; OpenAI 9.8k) -> 23k. OpenAI bills the "search content tokens"
  as input; Anthropic counts the results as input;
* ``web_fetch``: 6.4k recorded; Anthropic documents ~2.5k for an average page, ~25k for a large
  documentation page and ~125k for a research-paper PDF -> 25k (a request bounds it with the tool's
  ``max_content_tokens``, which then counts instead);
* ``file_search``: 1.0k recorded; 20 results (the default) of 800-token chunks (the default chunking)
  -> 16k, grown in proportion for a request whose ``max_num_results`` asks for more (50: 40k);
* ``code_execution``: 6.3k recorded (one execution, its files included) -> 10k;
* ``image_generation``: 1.7k recorded -> 3k; ``tool_search``: 0.8k recorded -> 2k; ``mcp``: 3.0k
  recorded -> 5k (a remote server's answer has no bound but the context window: ``None`` reserves it).
"""

FILE_SEARCH_RESULTS = 20
"""The results a file search returns by default (gpt-4* and later models; a request's ``max_num_results``
asks for 1 to 50): ``DEFAULT_TOOL_RESULT_TOKENS``' file_search is that many 800-token chunks."""

_ANTHROPIC_PREFIXES = (
    ("web_search_", "web_search"),
    ("web_fetch_", "web_fetch"),
    ("code_execution_", "code_execution"),
    ("tool_search_tool_", "tool_search"),
    ("mcp_toolset", "mcp"),
)
_RESPONSES_KINDS = {
    "file_search": "file_search",
    "code_interpreter": "code_execution",
    "image_generation": "image_generation",
    "tool_search": "tool_search",
    "mcp": "mcp",
}
_HOSTED_SHELL = frozenset({"container_auto", "container_reference"})
"""The ``shell`` tool environments OpenAI runs the commands in (its container); ``local``: the caller."""
CONTAINER_SIZES: Mapping[str, int] = {"1g": 1, "4g": 4, "16g": 16, "64g": 64}
"""An OpenAI container's ``memory_limit`` as the multiple of the 1 GB container fee it is billed at:
https://platform.openai.com/docs/pricing (built-in tools): $0.03 (1 GB, the default), $0.12 (4 GB),
$0.48 (16 GB), $1.92 (64 GB) a container, for code interpreter and the hosted shell alike."""


def server_tool(kind: str, api: str, tool: Mapping[str, Any] | None = None) -> str | None:
    """The kind of server-side tool a tool of type ``kind`` (the request's ``tool``) is, or ``None``
    (client-side tools: a ``shell`` whose environment is not one of OpenAI's containers)."""
    if api == "anthropic":
        for prefix, name in _ANTHROPIC_PREFIXES:
            if kind.startswith(prefix):
                return name
        return None
    if kind.startswith("web_search"):  # web_search, web_search_preview, dated versions
        return "web_search"
    if kind == "shell":
        environment = tool.get("environment") if tool is not None else None
        hosted = isinstance(environment, Mapping) and environment.get("type") in _HOSTED_SHELL
        return "code_execution" if hosted else None
    return _RESPONSES_KINDS.get(kind)


def _container_size(tool: Mapping[str, Any]) -> int:
    """The multiple of the 1 GB fee an OpenAI container tool's container is billed at: its
    ``memory_limit`` (code interpreter's ``container``, the hosted shell's ``environment``). A container
    referenced by id was sized where it was created: reserved at the 1 GB default (register a dearer
    ``code_execution`` price for a model used with larger named containers)."""
    container = tool.get("container") if tool.get("type") == "code_interpreter" else tool.get("environment")
    limit = container.get("memory_limit") if isinstance(container, Mapping) else None
    if limit is None:
        return 1
    size = CONTAINER_SIZES.get(limit) if isinstance(limit, str) else None
    if size is None:
        raise ConfigurationError(
            f"a {tool.get('type')} container's memory_limit {limit!r} has no known price; known: "
            f"{', '.join(CONTAINER_SIZES)} (register the model's code_execution fee for another size)"
        )
    return size


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The worst case of a request's server-side tools."""

    fees: tuple[tuple[str, int], ...]
    """The billed calls by fee name: ``(("web_search", 10), ("code_execution", 1))``."""
    results: tuple[tuple[int | None, int], ...]
    """What the calls feed back, as ``(tokens per call, calls)`` (``None``: the context window)."""
    defaulted: tuple[str, ...]
    """The tools whose count the request left unbounded: reserved at ``DEFAULT_TOOL_CALLS``."""
    sized: tuple[str, ...]
    """The tools whose results were bounded at the calibrated ``DEFAULT_TOOL_RESULT_TOKENS``."""
    rates: tuple[tuple[str, Decimal], ...] = ()
    """The call fees the request's tools set over the model's (a larger container, a preview search),
    USD per thousand calls: what the call is reserved and charged at (``Estimate.fees``)."""
    image: ImageBounds | None = None
    """The request's image generation tool: what a call no report covers is charged by (``Price``'s)."""


class ServerTools:
    """The bounds a request's server-side tools are reserved at: calls per tool that the request leaves
    unbounded, and tokens per result (``Estimator(tool_calls=..., tool_result_tokens=...)``)."""

    def __init__(
        self, calls: Mapping[str, int] | None = None, results: Mapping[str, int | None] | None = None
    ) -> None:
        self.calls = {**DEFAULT_TOOL_CALLS, **(calls or {})}
        for name, count in self.calls.items():
            if name not in DEFAULT_TOOL_CALLS:
                known = ", ".join(DEFAULT_TOOL_CALLS)
                raise ConfigurationError(f"tool_calls: unknown tool {name!r}; known: {known}")
            if _count(count) is None:
                raise ConfigurationError(f"tool_calls[{name!r}] must be a non-negative int, got {count!r}")
        self.results = {**DEFAULT_TOOL_RESULT_TOKENS, **(results or {})}
        for name, tokens in self.results.items():
            if name not in DEFAULT_TOOL_RESULT_TOKENS:
                known = ", ".join(DEFAULT_TOOL_RESULT_TOKENS)
                raise ConfigurationError(f"tool_result_tokens: unknown tool {name!r}; known: {known}")
            if tokens is not None and _count(tokens) is None:
                raise ConfigurationError(
                    f"tool_result_tokens[{name!r}] must be a non-negative int, or None for the model's "
                    f"context window, got {tokens!r}"
                )
        self.chosen = frozenset(results or ())

    def read(
        self,
        request: Mapping[str, Any],
        api: str,
        price: Price,
        shown: int,
        model: str,
        provider: str | None,
        output: int = 0,
    ) -> ToolUse:
        """The worst case of ``request``'s server-side tools: each at Anthropic's ``max_uses``, the
        Responses API's ``max_tool_calls`` (all built-in calls together: fees on the dearest tool, the
        largest results), else the default count; each result at a web fetch's ``max_content_tokens``,
        else the configured size. One call of each is priced at ``price`` (for a request that shows
        ``shown`` input tokens) to find the dearest. An image generation call's fee is all it bills but
        its prompt (what its image model reads of the request's images and writes: what the other
        tools' fees and a registered fee are compared with); the prompts, which the calling model
        writes, are at most ``output`` (its output bound) tokens together: a request's, reserved once
        over the fees whenever the tool is offered (``Price.image_prompts_nano``). A chat search
        model searches once a request, where ``provider`` bills it (``chat_search``)."""
        tools = request.get("tools")
        servers = request.get("mcp_servers") if api == "anthropic" else None
        searched = price.chat_search(provider) if api != "anthropic" and "messages" in request else None
        if not tools and not servers and not searched:
            return NO_TOOLS
        tools = list(tools) if isinstance(tools, list | tuple) else []
        if servers:
            tools.append({"type": "mcp_toolset"})  # the MCP connector: its servers' tools run server-side
        counts: dict[str, int] = {}
        sizes: dict[str, int] = {}
        more: dict[str, int] = {}  # (results asked above the calibrated size's count, by tool kind)
        defaulted: list[str] = []
        bounded = _count(request.get("max_tool_calls")) if api != "anthropic" else None
        containers, fees_set = 0, _ToolFees(price, price.served)
        free: set[str] = set()  # (searches whose content no pass reads: previews on models that don't reason)
        if searched:  # a chat search model: one search a request, priced as a preview search
            counts["web_search"] = 1
            free = {"web_search"} if fees_set.preview_search() else free
            options = request.get("web_search_options")
            size = options.get("search_context_size") if isinstance(options, Mapping) else None
            search_fee = chat_search_fee(searched, "medium" if size is None else size)
            if search_fee is not None:  # (the fee of the size asked, below the model's medium fee or above)
                fees_set.exact("web_search", search_fee)
        for tool in tools:
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            name = server_tool(kind, api, tool) if isinstance(kind, str) else None
            if name is None or tool.get("execution") == "client":  # (a tool search the caller runs)
                continue
            if name == "code_execution":
                containers += 1
                if api != "anthropic":
                    fees_set.scale("code_execution", _container_size(tool))
            elif name == "image_generation":  # (its model, size, quality: budgetguard._image_tool)
                images = count_images(request.get("input"))
                fees_set.image(image_generation_fee(tool, images), tool, images, output)
            elif name == "web_search" and api != "anthropic":  # (free content if every search is a preview)
                preview = str(kind).startswith("web_search_preview") and fees_set.preview_search()
                free = {name} if preview and (name not in counts or name in free) else set()
            count = _count(tool.get("max_uses")) if api == "anthropic" else None
            if count is None:
                count = bounded
            if count is None:
                count = self.calls[name]
                defaulted.append(name)
            counts[name] = max(counts.get(name, 0), count)
            fetched = _count(tool.get("max_content_tokens")) if name == "web_fetch" else None
            if fetched is not None:  # a web fetch truncates what it feeds back to this
                sizes[name] = max(sizes.get(name, 0), fetched)
            found = _count(tool.get("max_num_results")) if name == "file_search" else None
            if found is not None and found > FILE_SEARCH_RESULTS:  # more results than the size's
                more[name] = max(more.get(name, 0), found)
        fees = {
            name: min(count, containers) if name == "code_execution" else count  # a session per container
            for name, count in counts.items()
            if name in _FEE_UNITS
        }
        price = fees_set.price
        per_call = [name for name in fees if name != "code_execution"]  # (sessions: one at most)
        if len(per_call) > 1 and bounded is not None:
            # max_tool_calls bounds all built-in calls together: the worst is all of them on the dearest
            rates = price.rates_for(shown)
            dearest = max(per_call, key=lambda name: rates.fees_nano({name: 1}, model))
            fees = {name: count for name, count in fees.items() if name in (dearest, "code_execution")}
        results = [(self._size(name, sizes, more), n) for name, n in counts.items() if name not in free]
        if bounded is not None:  # and the worst results are the largest ones
            results = _keep_largest(results, bounded)
        sized = tuple(
            name for name in counts if name not in free
            and name not in sizes and name not in self.chosen and self.results[name] is not None
        )  # fmt: skip
        own = tuple(fees_set.fees.items())
        return ToolUse(tuple(fees.items()), tuple(results), tuple(defaulted), sized, own, fees_set.bounds)

    def _size(self, name: str, sizes: Mapping[str, int], more: Mapping[str, int]) -> int | None:
        """What one call of ``name`` feeds back: the tool's own bound (``sizes``), else the configured
        size, grown in proportion to the results asked above its count (``more``: a file search's
        ``max_num_results`` above 20); ``None``: the context window."""
        if name in sizes:
            return sizes[name]
        size, asked = self.results[name], more.get(name)
        return size if size is None or asked is None else -(-size * asked // FILE_SEARCH_RESULTS)


NO_TOOLS = ToolUse((), (), (), ())


class _ToolFees:
    """The call fees a request's tools set on its price: the dearest of each, over the model's own. A
    fee set from a published one is charged at the price's ``fee_premium`` (an Azure deployment's type),
    as the price's own fees are."""

    def __init__(self, price: Price, model: str) -> None:
        self.asked = self.price = price
        self.model = model
        self.fees: dict[str, Decimal] = {}
        self.premium = price.fee_premium
        self.least_image: Decimal | None = None
        """The least of the request's image tools' fees less what their image model reads and writes."""
        self.bounds: ImageBounds | None = None
        """The request's image tools' bounds (``image``)."""

    def _set(self, name: str, rate: Decimal) -> None:
        if rate > self.fees.get(name, getattr(self.asked.base, name) or 0):
            self.fees[name] = rate
            self.price = self.asked.with_fees(self.fees, self.bounds)

    def exact(self, name: str, rate: Decimal) -> None:
        """``name``'s fee is the published ``rate``, above or below the model's own (a chat search's
        context size)."""
        self.fees[name] = rate * self.premium
        self.price = self.asked.with_fees(self.fees, self.bounds)

    def scale(self, name: str, times: int) -> None:
        """``name``'s fee ``times`` over (a container ``times`` the 1 GB one); an unknown fee stays
        unknown (the call is then refused when priced)."""
        base = getattr(self.asked.base, name)
        if base is not None and times != 1:
            self._set(name, base * times)

    def image(self, rate: Decimal | None, tool: Mapping[str, Any], images: int, prompts: int) -> None:
        """An ``image_generation`` tool's own fee (``rate``, its worst case but its prompt), the dearest
        of the request's image tools, in place of the published one (which bounds an open tool). A fee
        registered for the model is reserved when it is the dearer (a response charges the image model's
        reported tokens, at most the worst case); where the tool's worst case is not known (``rate``
        None: its model, quality or output has no published price) the registered fee is the bound,
        reserved and charged (``_image_bill`` charges no report for such a tool), and without one the
        tool is a ``PricingError``. An unknown fee stays unknown. With a known fee go the tool's bounds
        (``_rates.ImageBounds``: a call no report covers is charged by them): what a call's image model
        reads of the request's ``images`` images and writes (the fee less the least image of the
        request's tools: above the tool's own where a registered fee is the dearer), and the prompts,
        at most ``prompts`` tokens together at the dearest text input rate of the image models."""
        base = self.asked.base.image_generation
        if base is None:
            return
        published = published_prices(self.model, None).get("image_generation")
        published = None if published is None else published * self.premium
        if rate is None:
            if base == published:
                named = {k: tool[k] for k in ("model", "quality", "size", "output_format") if tool.get(k)}
                raise PricingError(
                    f"no price is known for the image_generation tool {named or '(the default model)'}: "
                    f"budgetguard never reserves an image below its bill. Register the most one call may "
                    f"bill (USD per thousand calls) with the model's price: budgetguard.register_price("
                    f"{self.model!r}, input=..., output=..., image_generation=...); each call of such a "
                    f"tool is then reserved and charged that fee",
                    model=self.model,
                )
            return
        io, prompt_rate = image_generation_bounds(tool, images)
        rate, io, prompt_rate = rate * self.premium, io * self.premium, prompt_rate * self.premium
        registered = base != published
        if rate > self.fees.get("image_generation", base if registered else -1):
            self.fees["image_generation"] = rate
        fee = self.fees.get("image_generation", base)
        image = rate - io
        self.least_image = image if self.least_image is None else min(self.least_image, image)
        prompt_rate = max(prompt_rate, self.bounds.rate) if self.bounds else prompt_rate
        self.bounds = ImageBounds(fee - self.least_image, prompts, prompt_rate)
        self.price = self.asked.with_fees(self.fees, self.bounds)

    def preview_search(self) -> bool:
        """A ``web_search_preview`` call's fee: the published preview fee of a model that does not
        reason (``PUBLISHED_PRICES``' ``web_search_preview``; its search content is free: whether it
        applies), the model's web search fee otherwise."""
        rate = published_prices(self.model, None).get("web_search_preview")
        if rate is not None:
            self._set("web_search", rate * self.premium)
        return rate is not None


"""The worst case of a request without server-side tools (nor tools of any kind)."""


_IMAGE_PARTS = frozenset({"input_image", "image_url", "image_generation_call"})


def count_images(value: Any) -> int:
    """The images in a Responses request's ``input`` (parts and earlier generated images, at any depth):
    what an image generation call may read."""
    if isinstance(value, Mapping):
        own = 1 if value.get("type") in _IMAGE_PARTS else 0
        return own + sum(count_images(v) for v in value.values() if isinstance(v, Mapping | list | tuple))
    if isinstance(value, list | tuple):
        return sum(count_images(v) for v in value)
    return 0


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _largest_first(group: tuple[int | None, int]) -> int:
    return -1 if group[0] is None else -group[0]


def _keep_largest(results: Iterable[tuple[int | None, int]], calls: int) -> list[tuple[int | None, int]]:
    """The ``calls`` largest of ``results`` (``(tokens, count)`` groups): what ``max_tool_calls``, a
    bound on all built-in calls together, leaves at worst."""
    kept = []
    for tokens, count in sorted(results, key=_largest_first):
        take = min(count, calls)
        if take > 0:
            kept.append((tokens, take))
        calls -= take
    return kept


def pass_input(
    shown: int, output: int, results: Iterable[tuple[int | None, int]], context_window: int | None, model: str
) -> int:
    """The input of every pass after the first: one pass per tool result (``(tokens, count)`` groups),
    the largest results first, each reading ``shown`` (the request's input) + ``output`` (the most the
    model wrote before it) + the results so far, capped at ``context_window``. A ``None`` result is
    unbounded: each pass after it reads the context window (without a known window, an error)."""
    cap = context_window
    total, read = 0, shown + output
    for tokens, count in sorted(results, key=_largest_first):
        if count <= 0:
            continue
        if tokens is None:
            if cap is None:
                raise ConfigurationError(
                    "a server-side tool's results are reserved at the context window (tool_result_tokens "
                    f"None) and {model!r} has no known context window: pass Estimator(tool_result_tokens="
                    "{kind: tokens}) or register the model's context_window"
                )
            total, read = total + count * cap, cap
            continue
        # the j-th of these passes reads read + j * tokens: the first `under` of them stay under the cap
        if cap is None:
            under = count
        elif read >= cap:
            under = 0
        else:
            under = count if tokens == 0 else min(count, (cap - read) // tokens)
        total += under * read + tokens * under * (under + 1) // 2
        total += (count - under) * (cap or 0)
        read += count * tokens
    return total


def largest_read(
    shown: int, output: int, results: Iterable[tuple[int | None, int]], context_window: int | None
) -> int:
    """The most any pass of the call reads: the request, the output bound and every result, capped at
    the context window (what an advisor, reading the whole conversation, may read)."""
    read = shown + output
    for tokens, count in results:
        if count > 0:
            if tokens is None:
                return context_window if context_window is not None else read
            read += tokens * count
    return read if context_window is None else min(read, context_window)

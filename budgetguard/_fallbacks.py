"""Anthropic server-side fallbacks: the request each ``fallbacks`` entry makes, and what the chain may bill.

``beta.messages.create(model=A, fallbacks=[{"model": B}, ...])`` asks the server to retry a request that
``A`` declines on ``B``, then on the next entry, within one call. Every hop reached is billed: a declined
hop for what it read and wrote before it declined (``usage.iterations`` entries of type ``message``), the
hop that answers on its own model (``fallback_message``). A hop may read the hops before it's partial
output (the refused turn is continued as a prefill), so it reads up to that much more. Each entry is a
patch on the request as sent (``fallback_request``): ``model``, and ``max_tokens``, ``thinking``,
``output_config`` (field by field) and ``speed`` when the entry sets them.

The estimator reserves the chain's worst case (``fallback_passes``): every hop at its own worst case
(its own output bound, thinking, tools, price variant), each priced at whichever model of the chain
makes it dearest, since the commit prices the top-level counts at the model the response names
(``budgetguard._core``). The commit prices every iteration that names its model at that model
(``_usage``), a declined hop that names none at the dearest of the chain's models and the serving one
(``unnamed_hops_priced``), and a stream cut before its usage, whose streaming hop is unknown, at the
chain's dearest model for what it received (``dearest_hop``). ``fallbacks="default"``
lets Anthropic pick the models: nothing bounds their price, so it is a ``ConfigurationError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from ._errors import ConfigurationError
from ._pricing import PriceBook
from ._rates import Price
from ._usage import DECLINED_HOP, Pass, Usage

__all__ = [
    "FALLBACK_PASS",
    "chain_cost",
    "dearest_hop",
    "fallback_passes",
    "fallback_requests",
    "unnamed_hops_priced",
]

FALLBACK_PASS = "fallback_message"
"""The kind of the passes a fallback hop is reserved as (the ``usage.iterations`` type it is billed as)."""

_OVERRIDES = ("max_tokens", "thinking", "speed")
_ADAPTIVE = {"type": "adaptive"}
"""A hop whose entry sets ``thinking`` to ``null`` runs at its model's default: counted as thinking."""


class Hop(Protocol):
    """A hop's worst case, as the estimator gives it (``budgetguard.Estimate``)."""

    @property
    def model(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def price(self) -> Price: ...
    @property
    def variant(self) -> Mapping[str, str] | None: ...
    @property
    def usage(self) -> Usage: ...


H = TypeVar("H", bound=Hop)


def fallback_requests(
    request: Mapping[str, Any],
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bool]]]:
    """``request`` without its ``fallbacks``, and the request each entry makes with whether it keeps
    the request's ``max_tokens`` (``fit=`` lowers those with the request's)."""
    entries = request.get("fallbacks")
    base = {key: value for key, value in request.items() if key != "fallbacks"}
    if entries is None:
        return base, []
    if entries == "default":
        raise ConfigurationError(
            f"fallbacks={entries!r} lets Anthropic choose the fallback models, so no price bounds what "
            "the call may cost; name them instead (fallbacks=[{'model': 'claude-opus-4-1'}]) so that "
            "each is reserved at its own price"
        )
    if isinstance(entries, str) or not isinstance(entries, list | tuple):
        raise ConfigurationError(f"fallbacks must be a list of {{'model': ...}} entries, got {entries!r}")
    hops: list[tuple[dict[str, Any], bool]] = []
    for entry in entries:
        model = entry.get("model") if isinstance(entry, Mapping) else None
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"a fallbacks entry names its model: {entry!r}")
        hop = {**base, "model": model}
        for key in _OVERRIDES:
            if key not in entry:
                continue
            value = entry[key]
            if value is not None:
                hop[key] = value
            elif key == "thinking":
                hop[key] = _ADAPTIVE
            elif key == "speed":
                hop.pop(key, None)
        if "output_config" in entry:
            hop["output_config"] = _merged_config(base.get("output_config"), entry["output_config"])
            if hop["output_config"] is None:
                del hop["output_config"]
        hops.append((hop, entry.get("max_tokens") is None))
    return base, hops


def _merged_config(asked: Any, patch: Any) -> dict[str, Any] | None:
    """The hop's ``output_config``: the request's, patched one field at a time (``None`` drops one)."""
    if patch is None:
        return None
    if not isinstance(patch, Mapping):
        raise ConfigurationError(f"a fallbacks entry's output_config is an object of fields, got {patch!r}")
    merged = dict(asked) if isinstance(asked, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def fallback_passes(
    output_tokens: int, hops: tuple[tuple[H, bool], ...], priced: Callable[[H, int, int], H]
) -> tuple[tuple[Pass, ...], tuple[Pass, ...]]:
    """``(the hops' own passes, a FALLBACK_PASS per hop)``: what the fallback ``hops`` may bill after a
    request that writes up to ``output_tokens`` (``priced(hop, output, input)`` re-prices a hop).

    A hop that keeps the request's ``max_tokens`` writes ``output_tokens``; each reads its own request
    and the output of the hops before it (a prefill), within its model's context window. Its passes
    (advisors) join the call's; ``chain_cost`` prices the hops."""
    advised: list[Pass] = []
    passes: list[Pass] = []
    written = output_tokens
    for hop, inherits in hops:
        output = output_tokens if inherits else hop.output_tokens
        window, shown = hop.price.context_window, hop.input_tokens
        read = shown + written if window is None else max(shown, min(shown + written, window))
        est = priced(hop, output, read) if (output, read) != (hop.output_tokens, shown) else hop
        usage = est.usage
        passes.append(Pass(FALLBACK_PASS, est.model, dataclasses.replace(usage, passes=())))
        advised.extend(usage.passes)
        written += est.output_tokens
    return tuple(advised), tuple(passes)


def chain_cost(
    prices: PriceBook, cost_nano: int, worst: Usage, hops: tuple[Pass, ...], price: Price,
    chain: tuple[tuple[H, bool], ...], provider: str | None,
) -> int:  # fmt: skip
    """The worst cost of a request whose own usage ``worst`` costs ``cost_nano`` at its ``price``, with
    the fallback ``hops`` (``fallback_passes``) of ``chain``: its own usage at whichever model of the
    chain makes it dearest (the commit prices it at the model the response names), plus each hop at
    whichever model makes that hop dearest. Each hop's cost is rounded up on its own (never below)."""
    for est, _ in chain:
        cost_nano = max(cost_nano, prices.cost_nano(est.price, worst, provider=provider, variant=est.variant))
    dearest = [price, *(est.price for est, _ in chain)]
    return cost_nano + sum(max(p.cost_nano(hop.usage) for p in dearest) for hop in hops)


def dearest_hop(usage: Usage, asked: H, chain: tuple[tuple[H, bool], ...]) -> H:
    """The hop of a fallback chain (``asked``, then ``chain``'s) at whose price ``usage`` costs the most
    (the first of equals): what a response whose serving hop is unknown (a stream cut before its usage)
    is priced at."""
    bare = dataclasses.replace(usage, passes=()) if usage.passes else usage
    return max((asked, *(hop for hop, _ in chain)), key=lambda hop: hop.price.cost_nano(bare))


def unnamed_hops_priced(
    usage: Usage, asked: H, chain: tuple[tuple[H, bool], ...], served: Callable[[Usage], int],
    price_of: Callable[[str], Price],
) -> Usage:  # fmt: skip
    """``usage`` with each declined hop that names no model (a ``DECLINED_HOP`` pass of no model: which
    model declined is unknown) on the model of the request (``asked``, then ``chain``'s) that makes it
    dearest, when that is dearer than ``served`` (its cost at the serving model's price, where a pass of
    no model is priced): never below any model it may have run on. ``price_of(model)`` is a pass's price
    (``PriceBook.pass_price`` at the call's provider and variant)."""
    passes = list(usage.passes)
    for index, hop in enumerate(passes):
        if hop.kind != DECLINED_HOP or hop.model is not None:
            continue
        costs = {
            est.model: price_of(est.model).cost_nano(hop.usage) for est in (asked, *(e for e, _ in chain))
        }
        dearest = max(costs, key=costs.__getitem__)
        if costs[dearest] > served(hop.usage):
            passes[index] = dataclasses.replace(hop, model=dearest)
    return dataclasses.replace(usage, passes=tuple(passes))

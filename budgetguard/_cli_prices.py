"""The ``budgetguard prices`` and ``estimate`` commands: what models cost, and a request's worst case."""

from __future__ import annotations

import io
import json
from typing import Any

import click
from rich.table import Table

from ._cli_base import CLIError, _friendly, console
from ._estimate import estimate as estimate_request
from ._money import format_usd
from ._pricing import Price, Rates, price_book


@click.command()
@click.argument("models", nargs=-1)
@click.option("--prices", "prices_file", type=click.Path(exists=True, dir_okay=False), help="Your overrides.")
@click.option("--provider", help="The provider whose prices apply (default: found from the model name).")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def prices(models: tuple[str, ...], prices_file: str | None, provider: str | None, as_json: bool) -> None:
    """Every rate budgetguard charges MODELS: tokens (USD per million), audio and image tokens, server-side
    tool fees and per-request fees (USD per thousand calls), and where the price comes from."""
    if prices_file:
        price_book.load(prices_file)
    if not models:
        raise CLIError("name one or more models, e.g. `budgetguard prices gpt-4o claude-sonnet-4-6`")
    found = [price_book.get(m, provider=provider) for m in models]
    if as_json:
        click.echo(json.dumps([_price_json(m, p) for m, p in zip(models, found, strict=True)], indent=2))
        return
    table = Table(title="USD per million tokens", title_justify="left")
    columns = (
        "model",
        "input",
        "output",
        "cache read",
        "cache write 5m/1h",
        "context",
        "max output",
        "source",
    )
    for name in columns:
        table.add_column(name, justify="left" if name in ("model", "source") else "right")
    for model, p in zip(models, found, strict=True):
        for label, rates in [(model, p.base), *((f"  > {t:,} input tokens", r) for t, r in p.tiers)]:
            first = label == model
            table.add_row(
                label, f"${rates.input}", f"${rates.output}", f"${rates.cache_read}",
                f"${rates.cache_write} / ${rates.cache_write_1h}",
                _tokens(p.context_window) if first else "", _tokens(p.max_output_tokens) if first else "",
                p.source if first else "",
            )  # fmt: skip
    console.print(table)
    units = Table(title="Other billed units", title_justify="left")
    for name in ("model", "unit", "price"):
        units.add_column(name, justify="right" if name == "price" else "left")
    for model, p in zip(models, found, strict=True):
        for unit, text in _unit_rates(p.base):
            units.add_row(model, unit, text)
            model = ""
    console.print(units)


def _tokens(count: int | None) -> str:
    return "unknown" if count is None else f"{count:,}"


_UNIT_LABELS = (
    ("input_audio", "audio input tokens", "MTok"),
    ("output_audio", "audio output tokens", "MTok"),
    ("input_image", "image input tokens", "MTok"),
    ("output_image", "image output tokens", "MTok"),
    ("web_search", "web search calls", "1k calls"),
    ("web_fetch", "web fetch calls", "1k calls"),
    ("file_search", "file search calls", "1k calls"),
    ("code_execution", "code execution sessions", "1k sessions"),
    ("image_generation", "image generation calls", "1k images"),
    ("request", "requests", "1k requests"),
)


def _unit_rates(rates: Rates) -> list[tuple[str, str]]:
    """Each non-token unit with its rate, or what happens without one."""
    shown = []
    for key, label, per in _UNIT_LABELS:
        value = getattr(rates, key)
        if key == "request" and not value:
            continue  # no per-request fee
        if value is None and key in ("input_image", "output_image"):
            text = f"${rates.input if key == 'input_image' else rates.output} / {per} (text rate)"
        elif value is None:
            text = "not priced: PricingError"
        else:
            text = f"${value} / {per}"
        shown.append((label, text))
    return shown


def _price_json(model: str, price: Price) -> dict[str, Any]:
    def rates(r: Rates) -> dict[str, str | None]:
        keys = (
            "input",
            "output",
            "cache_read",
            "cache_write",
            "cache_write_1h",
            *(k for k, _, _ in _UNIT_LABELS),
        )
        return {k: None if getattr(r, k) is None else str(getattr(r, k)) for k in keys}

    tiers = [{"above_input_tokens": t, **rates(r)} for t, r in price.tiers]
    return {"model": model, "source": price.source, "context_window": price.context_window,
            "max_output_tokens": price.max_output_tokens, **rates(price.base), "tiers": tiers}  # fmt: skip


@click.command()
@click.option("--model", "-m", help="The model (required unless the request JSON names one).")
@click.option("--max-tokens", type=int, help="The output limit to reserve for (default: the request's).")
@click.option("--json", "as_json", is_flag=True)
@click.argument("source", default="-", type=click.File("r"))
@_friendly
def estimate(model: str | None, max_tokens: int | None, as_json: bool, source: io.TextIOBase) -> None:
    """Tokens and worst-case cost of a prompt or a request JSON, read from SOURCE (a file or - for stdin)."""
    text = source.read()
    try:
        request = json.loads(text)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        request = {"messages": [{"role": "user", "content": text}]}
    if model:
        request["model"] = model
    if not request.get("model"):
        raise CLIError('which model? pass --model, or put "model" in the request JSON')
    if max_tokens is not None:
        request.pop("max_completion_tokens", None)
        request["max_tokens" if "messages" in request else "max_output_tokens"] = max_tokens
    est = estimate_request(request)
    if as_json:
        click.echo(json.dumps({"model": est.model, "input_tokens": est.input_tokens,
                               "output_tokens": est.output_tokens, "cost_usd": str(est.cost),
                               "price_source": est.price.source}))  # fmt: skip
        return
    console.print(
        f"{est.model}: {est.input_tokens:,} input tokens + up to {est.output_tokens:,} output tokens"
    )
    console.print(f"worst case: {format_usd(est.cost_nano)}  (price: {est.price.source})")
    if all(request.get(k) is None for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")):
        console.print("the request sets no output limit, so the model's maximum output is reserved; "
                      "pass --max-tokens or set one on your requests", style="yellow")  # fmt: skip

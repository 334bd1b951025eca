"""The mock's Anthropic routes: messages (JSON or SSE, with cache writes and reads) and
``messages/count_tokens``, counted by the mock's own rule (``_rule``)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ._rule import claude_blocks, claude_count, reply
from ._wire import CACHE_MIN_TOKENS, JSON, Answer, Context, anthropic_error, last_text, pieces


def _input(body: JSON) -> tuple[int, int, str, str]:
    """(all input tokens, tokens of the cache_control prefix, its ttl, its identity) of a Claude request.

    The cached prefix runs up to the last block marked ``cache_control``, in tools, system, messages
    order, as Anthropic defines it.
    """
    model, blocks = body["model"], claude_blocks(body)
    total = claude_count(model, blocks)
    marked = [n for n, (_, b) in enumerate(blocks) if isinstance(b, Mapping) and b.get("cache_control")]
    if not marked:
        return total, 0, "5m", ""
    prefix = blocks[: marked[-1] + 1]
    ttl = str(prefix[-1][1]["cache_control"].get("ttl", "5m"))
    return total, min(claude_count(model, prefix), total), ttl, json.dumps([model, prefix], sort_keys=True)


def _usage(body: JSON, ctx: Context) -> JSON:
    total, prefix, ttl, key = _input(body)
    write_5m = write_1h = read = 0
    if prefix >= CACHE_MIN_TOKENS:
        if ctx.seen(key):
            read = prefix
        elif ttl == "1h":
            write_1h = prefix
        else:
            write_5m = prefix
    return {
        "input_tokens": total - write_5m - write_1h - read,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": 0,
        "service_tier": "priority" if body.get("service_tier") == "priority" else "standard",
    }


_COUNTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


def _declined(body: JSON, ctx: Context) -> tuple[JSON, list[JSON], list[JSON], int]:
    """A request offering ``fallbacks`` whose model declines (``MockProvider.decline``) is retried on its
    next entry, which reads what the hops before it wrote (a prefill): the request of the hop that
    answers, the declined hops' ``message`` iterations (each on its model), their content (the partial
    text, a ``fallback`` block) and the tokens they wrote."""
    hop, written = body, 0
    iterations: list[JSON] = []
    content: list[JSON] = []
    for entry in body.get("fallbacks") or ():
        declines = ctx.declines.get(hop["model"])
        if declines is None:
            break
        usage = _usage(hop, ctx)
        partial, out = reply(
            hop["model"], last_text(body["messages"]), min(declines, hop["max_tokens"]), None
        )
        usage["input_tokens"] += written
        iterations.append({"type": "message", "model": hop["model"], **_counts(usage), "output_tokens": out})
        to = {"model": entry["model"]}
        content += [{"type": "text", "text": partial}] if out else []
        content.append({"type": "fallback", "from": {"model": hop["model"]}, "to": to,
                        "trigger": {"type": "refusal", "category": None}})  # fmt: skip
        written += out
        hop = {**body, **to, "max_tokens": entry.get("max_tokens") or body["max_tokens"]}
    return hop, iterations, content, written


def _counts(usage: JSON) -> JSON:
    return {key: usage[key] for key in _COUNTS}


def messages(body: JSON, ctx: Context) -> Answer:
    if not isinstance(body.get("max_tokens"), int):
        return Answer(None, anthropic_error(400, "max_tokens: Field required"), status=400)
    hop, iterations, content, written = _declined(body, ctx)
    model = hop["model"]
    usage = _usage(hop, ctx)
    text, output = reply(model, last_text(body["messages"]), hop["max_tokens"], ctx.reply_text)
    usage["input_tokens"] += written
    usage["output_tokens"] = output
    if iterations:  # the top level counts every hop
        iterations.append({"type": "fallback_message", "model": model, **_counts(usage)})
        usage.update({key: sum(i[key] for i in iterations) for key in _COUNTS}, iterations=iterations)
    stop = "max_tokens" if output >= hop["max_tokens"] else "end_turn"
    message: JSON = {
        "id": ctx.new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [*content, {"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return Answer(usage, message)
    start_usage = {**usage, "output_tokens": 1}
    start_usage.pop("iterations", None)
    start = {**message, "model": body["model"], "content": [], "stop_reason": None, "usage": start_usage}
    events: list[JSON] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(content):  # (a declined hop's partial text, its fallback block)
        empty = {**block, "text": ""} if block["type"] == "text" else block
        events.append({"type": "content_block_start", "index": index, "content_block": empty})
        if block["type"] == "text":
            delta = {"type": "text_delta", "text": block["text"]}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    last = len(content)
    events += [
        {"type": "content_block_start", "index": last, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    deltas = pieces(text)
    for number, piece in enumerate(deltas, 1):
        events.append(
            {"type": "content_block_delta", "index": last, "delta": {"type": "text_delta", "text": piece}}
        )
        if number == len(deltas) // 2:  # a cumulative interim count, as Anthropic sends on long replies
            interim = max(1, output * number // len(deltas))
            events.append(
                {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
                 "usage": {"output_tokens": interim}}
            )  # fmt: skip
    final = {**_counts(usage), **({"iterations": iterations} if iterations else {})}
    events += [
        {"type": "content_block_stop", "index": last},
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": final},
        {"type": "message_stop"},
    ]
    return Answer(usage, events=[(e["type"], e) for e in events])


def count_tokens(body: JSON, ctx: Context) -> Answer:
    total, *_ = _input(body)
    return Answer(None, {"input_tokens": total})

"""budgetguard against its peers, each pair timed in the same run (``_harness.compare``).

Estimate: ``budgetguard.estimate(request)`` against ``tokencost.count_message_tokens(messages, model)``
on the same messages, and both against one raw tiktoken encode of the same text (as in
``bench_estimate``). Every call is unique (a counter in the text), so budgetguard's content cache
cannot help. tokencost is asked for ``gpt-4o``: the same o200k_base encoding and counting rules as
``gpt-4o-mini``, without the warning it logs (and the recursion it makes) for models it maps to a
snapshot. It gets the very ``Encoding`` object budgetguard uses, registered in tiktoken's registry,
so no side loads files (tiktoken alone would download them). A check before timing asserts that
all sides count the same tokens.

Guarded call: one call through ``@guard.with_budget`` (memory store, a tiny prompt, one user budget)
of a function that returns a canned OpenAI chat completion at once, against:

* the bare call;
* LiteLLM's ``BudgetManager(client_type="local")`` as its docs use it: ``is_valid_user``, then
  ``get_current_cost`` <= ``get_total_budget``, the call (returning a ``litellm.ModelResponse``), then
  ``update_cost(completion_obj=...)``. ``update_cost`` prices the response and starts a thread that
  rewrites ``user_cost.json`` (in a temporary directory here); the last call of each batch waits for
  those threads, so their work is counted on LiteLLM's side and not left to run during budgetguard's
  batch. ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps LiteLLM offline;
* LangChain's ``get_openai_callback``: the call (returning the ``LLMResult`` that ``ChatOpenAI``
  builds, with ``usage_metadata`` and ``llm_output``), then the callback's ``on_llm_end``, the whole of
  its accounting for a call. It only counts: it neither checks nor reserves anything.

Before timing, a check asserts that budgetguard and both peers charge the same (nonzero) cost for the
call. The peers come from ``benchmarks/requirements.txt``; a peer that is not installed gets a SKIP row.
Targets are proposals (the issue sets none): budgetguard's estimate, which also prices the request,
within 10 % of tokencost's count alone (the bar ``bench_estimate`` sets against a raw encode), and a
guarded call no slower than LiteLLM's non-atomic check-and-update. The other rows carry no target.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import tiktoken.registry

import budgetguard as bg
from budgetguard import _tokens

from ._common import NOT_INSTALLED, peer, row, skipped
from ._harness import compare
from .bench_estimate import ENCODING, MODEL, _check, _document, _large_request, _short_request, _text

PEER_MODEL = "gpt-4o"  # tokencost: o200k_base and the 3-per-message rules, like gpt-4o-mini
USER = "alice"
MESSAGES = [{"role": "user", "content": "Hi"}]
PROMPT_TOKENS = 8  # 3 per message + "user" + "Hi" + 3 to prime the reply
COMPLETION_TOKENS = 5
SNAPSHOT = "gpt-4o-mini-2024-07-18"
TOKEN_USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
COMPLETION = {
    "id": "chatcmpl-BENCH0000000000000000000001",
    "object": "chat.completion",
    "created": 1763800000,
    "model": SNAPSHOT,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help?", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": TOKEN_USAGE,
    "service_tier": "default",
    "system_fingerprint": "fp_b376dfbbd5",
}

# (candidate, baseline, target) of each estimate comparison
PAIRS = (("estimate", "tokencost", 1.1), ("tokencost", "raw encode", None), ("estimate", "raw encode", None))

_counter = itertools.count(1)


# -- estimate ----------------------------------------------------------------------------------------


def _estimate_rows(quick: bool) -> list[dict[str, Any]]:
    enc = bg.get_encoding(ENCODING)
    tokencost = peer("tokencost")
    if tokencost is not None:
        tiktoken.registry.ENCODINGS.setdefault(ENCODING, enc)
        if tiktoken.encoding_for_model(PEER_MODEL) is not enc:
            raise RuntimeError(f"tokencost would not use budgetguard's {ENCODING} Encoding object")
    body = _document(seed=3, tokens=5_000, enc=enc)
    scenarios: list[tuple[str, Callable[[int], dict[str, Any]], tuple[int, int]]] = [
        ("short request (~30 tokens, unique)", _short_request, (5, 300) if quick else (21, 2000)),
        ("5k-token request (unique)", lambda n: _large_request(n, body), (5, 10) if quick else (21, 100)),
    ]
    rows: list[dict[str, Any]] = []
    for label, build, (trials, iterations) in scenarios:
        tokens = _check(build(0), enc)
        sides: dict[str, tuple[Callable[[Any], object], Callable[[dict[str, Any]], Any]]] = {
            "estimate": (bg.estimate, lambda request: request),
            "raw encode": (enc.encode_ordinary, _text),
        }
        if tokencost is not None:
            count = tokencost.count_message_tokens
            request = build(0)
            peer_tokens = count(request["messages"], PEER_MODEL)
            if peer_tokens != bg.estimate(request).input_tokens:
                raise RuntimeError(f"tokencost counted {peer_tokens} tokens, budgetguard a different number")
            sides["tokencost"] = (functools.partial(_count, count), lambda request: request["messages"])
        for cand, base, target in PAIRS:
            name = f"{label}: {cand} vs {base}"
            if cand not in sides or base not in sides:
                rows.append(skipped(name, NOT_INSTALLED, peer="tokencost"))
                continue
            _tokens._cache.clear()
            result = compare(
                sides[cand][0],
                sides[base][0],
                functools.partial(_inputs, build, sides[cand][1], sides[base][1]),
                trials=trials,
                iterations=iterations,
            )
            extra = {"target_is": "proposed (the issue sets none)"} if target is not None else {}
            rows.append(row(name, result, target=target, text_tokens=tokens, **extra))
    _tokens._cache.clear()
    return rows


def _count(count: Callable[[list[dict[str, str]], str], int], messages: list[dict[str, str]]) -> int:
    return count(messages, PEER_MODEL)


def _inputs(
    build: Callable[[int], dict[str, Any]],
    cand: Callable[[dict[str, Any]], Any],
    base: Callable[[dict[str, Any]], Any],
    n: int,
) -> tuple[Sequence[Any], Sequence[Any]]:
    """``n`` fresh, unique requests for each side, in the shape each side takes."""
    return [cand(build(next(_counter))) for _ in range(n)], [base(build(next(_counter))) for _ in range(n)]


# -- guarded call ------------------------------------------------------------------------------------


def _bare(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return COMPLETION


def _call(fn: Callable[..., Any]) -> Callable[[object], Any]:
    return lambda _: fn(model=MODEL, messages=MESSAGES, max_tokens=50)


def _same(n: int) -> tuple[list[bool], list[bool]]:
    return [False] * n, [False] * n


@contextmanager
def _litellm_side() -> Iterator[tuple[Callable[[bool], Any], Callable[[], float]] | None]:
    """LiteLLM's check + call + update_cost, and the cost it charged per call so far; None when
    LiteLLM is not installed. Runs in a temporary directory, where ``user_cost.json`` goes."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before the import: stay offline
    litellm = peer("litellm")
    if litellm is None:
        yield None
        return
    response = litellm.ModelResponse(**COMPLETION)
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bg-bench-litellm-") as folder:
        os.chdir(folder)
        try:
            manager = litellm.BudgetManager(project_name="budgetguard-bench", client_type="local")
            calls = 0

            def bare(**_: Any) -> Any:
                return response

            def call(last: bool) -> Any:
                nonlocal calls
                if not manager.is_valid_user(USER):
                    manager.create_budget(total_budget=1_000_000.0, user=USER)
                if manager.get_current_cost(USER) > manager.get_total_budget(USER):
                    raise RuntimeError("over budget")
                out = bare(model=MODEL, messages=MESSAGES, max_tokens=50)
                manager.update_cost(user=USER, completion_obj=out)
                calls += 1
                if last:
                    _join_saves()
                return out

            yield call, lambda: float(manager.get_current_cost(USER)) / calls
        finally:
            _join_saves()
            os.chdir(home)


def _join_saves() -> None:
    """Wait for the threads ``BudgetManager.update_cost`` started to rewrite its JSON file."""
    for thread in threading.enumerate():
        if thread.name.endswith("(save_data)"):
            thread.join()


def _last_marked(n: int) -> tuple[list[bool], list[bool]]:
    """Inputs for (budgetguard, LiteLLM): LiteLLM's last call of a batch waits for its saves."""
    return [False] * n, [False] * (n - 1) + [True]


def _langchain_side() -> tuple[Callable[[object], Any], Any] | None:
    """The call + ``on_llm_end`` on one ``OpenAICallbackHandler`` (from ``get_openai_callback``)."""
    if peer("langchain_core") is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community is being sunset
        callbacks = peer("langchain_community.callbacks.manager")
    if callbacks is None:
        return None
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    metadata = {"token_usage": TOKEN_USAGE, "model_name": SNAPSHOT, "system_fingerprint": "fp_b376dfbbd5"}
    message = AIMessage(
        content="Hello! How can I help?",
        id="run-00000000-0000-0000-0000-000000000001-0",
        response_metadata={**metadata, "finish_reason": "stop", "logprobs": None},
        usage_metadata={
            "input_tokens": PROMPT_TOKENS,
            "output_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "input_token_details": {"audio": 0, "cache_read": 0},
            "output_token_details": {"audio": 0, "reasoning": 0},
        },
    )
    result = LLMResult(
        generations=[[ChatGeneration(message=message, generation_info={"finish_reason": "stop"})]],
        llm_output=metadata,
    )
    with callbacks.get_openai_callback() as handler:
        pass

    def bare(**_: Any) -> LLMResult:
        return result

    def call(_: object) -> LLMResult:
        out = bare(model=MODEL, messages=MESSAGES, max_tokens=50)
        handler.on_llm_end(out)
        return out

    return call, handler


def _check_cost(name: str, expected: Decimal, got: float) -> None:
    if not math.isclose(float(expected), got, rel_tol=1e-9):
        raise RuntimeError(f"{name} charged {got} USD per call, budgetguard {expected}: not the same call")


def _guard_rows(quick: bool) -> list[dict[str, Any]]:
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1000000", per="day")])
    guarded = _call(guard.with_budget(user=USER)(_bare))
    with bg.track() as tracked:
        guarded(None)
    cost = tracked.cost
    if cost <= 0:
        raise RuntimeError(f"budgetguard charged {cost} for the call")
    rows: list[dict[str, Any]] = []
    trials, iterations = (5, 200) if quick else (21, 2000)
    result = compare(guarded, _call(_bare), _same, trials=trials, iterations=iterations)
    rows.append(row("guarded call (memory) vs bare call", result, target=None))

    name = "guarded call (memory) vs LiteLLM BudgetManager check+update"
    trials, iterations = (5, 40) if quick else (15, 300)
    with _litellm_side() as litellm:
        if litellm is None:
            rows.append(skipped(name, NOT_INSTALLED, peer="litellm"))
        else:
            call, per_call = litellm
            call(True)
            _check_cost("LiteLLM", cost, per_call())
            result = compare(
                lambda _: guarded(None), call, _last_marked, trials=trials, iterations=iterations
            )
            rows.append(row(name, result, target=1.0, target_is="proposed (the issue sets none)"))

    name = "guarded call (memory) vs LangChain get_openai_callback"
    langchain = _langchain_side()
    if langchain is None:
        rows.append(skipped(name, NOT_INSTALLED, peer="langchain-community"))
    else:
        call, handler = langchain
        call(None)
        _check_cost("LangChain's callback", cost, handler.total_cost / handler.successful_requests)
        trials, iterations = (5, 200) if quick else (21, 2000)
        result = compare(guarded, call, _same, trials=trials, iterations=iterations)
        rows.append(row(name, result, target=None))
    guard.close()
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    return _estimate_rows(quick) + _guard_rows(quick)

"""Red-team of the hard limit, guarded SDK calls: real openai clients against the MockProvider, where a
call's worst case was reserved below what it is billed, or what it showed was charged at $0.

Each hole is a strict xfail on main (the reason says what breaks and the fix); when the fix lands, the
test passes, the xfail fails, and the mark goes.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, Optional

import pydantic
import pytest

import budgetguard
from budgetguard import Event, Guard
from budgetguard.testing import MockProvider
from tests.sdk_http import OPENAI_STREAM_CUT
from tests.test_endpoints_mock import mock, server  # noqa: F401 (the mock's fixtures)

LONG_REPLY = "A budget is a plan for money: what comes in, what goes out, and what is kept back. " * 400


def make_guard(events: list[Event]) -> Guard:
    budgets = [budgetguard.Budget("feature", usd="5", per="day")]
    return Guard("memory://", budgets=budgets, on_event=events.append)


def settled(events: list[Event]) -> Event:
    (committed,) = [e for e in events if e.kind == "committed"]
    return committed


# -- extra_body: the SDKs merge it over the named arguments, the decorator path never reads it -----------


def reserved_as_sent(events: list[Event], mock: MockProvider, api: str) -> None:  # noqa: F811
    """The call was reserved at the estimate of the body the SDK sent (``as_read``: what it counts)."""
    committed = settled(events)
    body = mock.requests[-1].body
    assert committed.estimated == budgetguard.estimate(body, api=api).cost, body
    assert committed.actual is not None and committed.estimated >= committed.actual
    assert "overrun" not in [e.kind for e in events]


@pytest.mark.parametrize("wrapped", [False, True], ids=["decorated", "wrapped"])
def test_extra_body_output_and_n_are_reserved(mock: MockProvider, wrapped: bool) -> None:  # noqa: F811
    """``extra_body`` asks for four long choices: reserved at that worst case, decorated (the estimate
    reads the request as the SDK merges it) or through ``guard.wrap`` (the transport reads the body)."""
    mock.reply_text = LONG_REPLY
    events: list[Event] = []
    guard = make_guard(events)
    client = guard.wrap(mock.openai(), feature="chat") if wrapped else mock.openai()
    try:
        create = client.chat.completions.create
        create = create if wrapped else guard.with_budget(create, feature="chat")
        create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What is a budget?"}],
            max_tokens=10,
            extra_body={"n": 4, "max_tokens": 400},
        )
    finally:
        client.close()
    (usage,) = mock.usages
    assert usage["completion_tokens"] > 4 * 10  # the body sent asked for four long choices
    committed = settled(events)
    assert committed.actual is not None and committed.estimated is not None
    assert committed.estimated >= committed.actual, (committed.estimated, committed.actual)
    assert "overrun" not in [e.kind for e in events]
    reserved_as_sent(events, mock, "openai")


def test_an_extra_body_that_is_not_a_dict_is_refused_unsent(mock: MockProvider) -> None:  # noqa: F811
    guard = make_guard([])
    client = mock.openai()
    try:
        create = guard.with_budget(client.chat.completions.create, feature="chat")
        with pytest.raises(budgetguard.ConfigurationError, match="extra_body must be a dict"):
            create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], extra_body=[("n", 4)])
    finally:
        client.close()
    assert mock.requests == []


def test_fit_lowers_the_output_extra_body_sets(mock: MockProvider) -> None:  # noqa: F811
    """``fit=`` lowers the max output the SDK sends: extra_body's, which wins over the named argument."""
    mock.reply_text = LONG_REPLY
    events: list[Event] = []
    guard = Guard("memory://", budgets=[budgetguard.Budget("feature", usd="0.001", per="day")],
                  on_event=events.append)  # fmt: skip
    client = mock.openai()
    try:
        create = guard.with_budget(client.chat.completions.create, feature="chat", fit=True)
        create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What is a budget?"}],
            max_tokens=10,
            extra_body={"max_tokens": 4000},
        )
    finally:
        client.close()
    (fitted,) = [e for e in events if e.kind == "fitted"]
    sent = mock.requests[-1].body
    assert fitted.data["from"] == 4000 and sent["max_tokens"] == fitted.data["to"] < 4000, sent
    reserved_as_sent(events, mock, "openai")


@pytest.mark.parametrize("how", ["positional", "keyword"])
@pytest.mark.parametrize("change", ["fit", "route"])
def test_a_function_of_yours_sends_what_fit_and_route_chose_in_its_extra_body(
    mock: MockProvider,  # noqa: F811
    change: str,
    how: str,
) -> None:
    """A decorated function of yours taking ``extra_body``: ``fit=`` and ``route=`` change its model and
    max output there too (the SDK sends extra_body's over the named ones), called either way."""
    mock.reply_text = LONG_REPLY
    events: list[Event] = []
    usd = "0.001" if change == "fit" else "0.01"
    guard = Guard(
        "memory://", budgets=[budgetguard.Budget("feature", usd=usd, per="day")], on_event=events.append
    )
    client = mock.openai()
    options: dict[str, Any] = {"fit": True} if change == "fit" else {"route": ["gpt-4o", "gpt-4o-mini"]}
    extra_body = {"max_tokens": 4000} if change == "fit" else {"model": "gpt-4o"}

    @guard.with_budget(feature="chat", **options)
    def ask(
        model: str, messages: list[Any], max_tokens: int = 10, extra_body: dict[str, Any] | None = None
    ) -> Any:
        return client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, extra_body=extra_body
        )

    messages = [{"role": "user", "content": "What is a budget?"}]
    model, max_tokens = ("gpt-4o-mini", 10) if change == "fit" else ("gpt-4o", 1000)
    try:
        if how == "positional":
            ask(model, messages, max_tokens, extra_body)
        else:
            ask(model=model, messages=messages, max_tokens=max_tokens, extra_body=extra_body)
    finally:
        client.close()
    sent = mock.requests[-1].body
    if change == "fit":
        (fitted,) = [e for e in events if e.kind == "fitted"]
        assert sent["max_tokens"] == fitted.data["to"] < 4000, sent
    else:
        assert sent["model"] == "gpt-4o-mini", sent  # the route chose it: gpt-4o is 16x the price
    committed = settled(events)
    assert committed.actual is not None and committed.estimated is not None
    assert committed.estimated >= committed.actual, (committed.estimated, committed.actual)
    assert "overrun" not in [e.kind for e in events]


@pytest.mark.parametrize("where", ["named", "extra_body"])
def test_a_chat_stream_asks_for_its_usage_wherever_its_stream_options_are(
    mock: MockProvider,  # noqa: F811
    where: str,
) -> None:
    """``stream_options`` given in ``extra_body`` replace the named ones whole (the SDK's merge is
    shallow): ``include_usage`` is set there too, or the stream ends without its usage."""
    events: list[Event] = []
    guard = make_guard(events)
    client = mock.openai()
    options = {"include_obfuscation": False}
    given: dict[str, Any] = (
        {"stream_options": options} if where == "named" else {"extra_body": {"stream_options": options}}
    )
    try:
        create = guard.with_budget(client.chat.completions.create, feature="chat")
        messages = [{"role": "user", "content": "What is a budget?"}]
        list(create(model="gpt-4o-mini", messages=messages, max_tokens=50, stream=True, **given))
    finally:
        client.close()
    assert mock.requests[-1].body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert options == {"include_obfuscation": False}  # the caller's dict is left as it was
    committed = settled(events)
    assert not committed.data.get("usage_missing"), committed.data
    assert committed.actual is not None and committed.estimated is not None
    assert committed.estimated >= committed.actual


# -- an interrupted Responses stream: what it showed, charged ----------------------------------------------


def test_an_interrupted_responses_stream_charges_the_web_search_it_delivered(mock: MockProvider) -> None:  # noqa: F811
    events: list[Event] = []
    guard = make_guard(events)
    client = mock.openai()
    # created, in_progress, the search's item added and done, the message item, its part, one delta
    mock.cut(after=7, path="/v1/responses")
    try:
        create = guard.with_budget(client.responses.create, feature="search")
        stream = create(
            model="gpt-4.1",
            input="What is the news today?",
            tools=[{"type": "web_search"}],
            max_output_tokens=200,
            max_tool_calls=1,
            stream=True,
        )
        seen: list[Any] = []
        with pytest.raises(OPENAI_STREAM_CUT):
            seen.extend(stream)
        stream.close()
    finally:
        client.close()
    searches = [e for e in seen if e.type == "response.output_item.done" and e.item.type == "web_search_call"]
    assert len(searches) == 1 and searches[0].item.status == "completed"
    (entry,) = guard.ledger.history(events=["committed"])
    assert entry.data["interrupted"] is True
    assert entry.data["usage"].get("web_search_calls") == 1, entry.data["usage"]


# -- the SDKs' structured-output helpers: the schema a class becomes is sent, never counted ---------------


class Step(pydantic.BaseModel):
    explanation: str
    output: str


class Report(pydantic.BaseModel):
    """An analysis report."""

    title: str
    summary: str
    steps: list[Step]
    risks: list[str]
    score: float


REPORT = Report(
    title="Budget",
    summary="A plan for money.",
    steps=[Step(explanation="count what comes in", output="income")] * 3,
    risks=["overspend"],
    score=0.5,
)


def test_a_parse_helpers_schema_is_reserved(mock: MockProvider) -> None:  # noqa: F811
    reply = REPORT.model_dump_json()
    mock.reply_text = reply
    events: list[Event] = []
    guard = make_guard(events)
    client = mock.openai()
    try:
        parse = guard.with_budget(client.chat.completions.parse, feature="chat")
        completion = parse(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Report on budgets."}],
            response_format=Report,
            max_tokens=budgetguard.count_text_tokens(reply, "gpt-4o") + 1,  # the reply, whole
        )
    finally:
        client.close()
    assert completion.choices[0].message.parsed == REPORT
    committed = settled(events)
    assert committed.actual is not None and committed.estimated is not None
    assert committed.estimated >= committed.actual, (committed.estimated, committed.actual)
    assert "overrun" not in [e.kind for e in events]
    reserved_as_sent(events, mock, "openai")


@pytest.mark.parametrize("helper", ["responses", "anthropic"])
def test_the_other_parse_helpers_schemas_are_reserved_as_sent(mock: MockProvider, helper: str) -> None:  # noqa: F811
    """``responses.parse(text_format=...)`` and Anthropic's ``messages.parse(output_format=...)``: the
    reservation is the estimate of the body the SDK sent, its schema counted."""
    reply = REPORT.model_dump_json()
    mock.reply_text = reply
    events: list[Event] = []
    guard = make_guard(events)
    client: Any = mock.openai() if helper == "responses" else mock.anthropic()
    ask = "Report on budgets."
    try:
        if helper == "responses":
            parse = guard.with_budget(client.responses.parse, feature="chat")
            parsed = parse(model="gpt-4o", input=ask, text_format=Report, max_output_tokens=400).output_parsed
        else:
            parse = guard.with_budget(client.messages.parse, feature="chat")
            messages = [{"role": "user", "content": ask}]
            parsed = parse(model="claude-sonnet-4-5", messages=messages, output_format=Report, max_tokens=400)
            parsed = parsed.parsed_output
    finally:
        client.close()
    assert parsed == REPORT
    body = mock.requests[-1].body
    assert "text_format" not in body and "output_format" not in body
    assert (body.get("text") or body.get("output_config"))["format"]["type"] == "json_schema"
    reserved_as_sent(events, mock, "openai" if helper == "responses" else "anthropic")
    without = {k: v for k, v in body.items() if k not in ("text", "output_config")}
    assert budgetguard.estimate(body).input_tokens > budgetguard.estimate(without).input_tokens + 50


@pytest.mark.parametrize(
    ("output_format", "reply"),
    [
        (list[Report], f"[{REPORT.model_dump_json()}]"),
        (Optional[Report], REPORT.model_dump_json()),  # noqa: UP045 (typing.Optional: another type object)
        (Report | None, REPORT.model_dump_json()),
        (Annotated[list[Report], pydantic.Field(min_length=1)], f"[{REPORT.model_dump_json()}]"),
    ],
    ids=["list", "Optional", "union", "Annotated"],
)
def test_an_anthropic_output_format_that_is_not_a_class_is_reserved_as_sent(
    mock: MockProvider,  # noqa: F811
    output_format: Any,
    reply: str,
) -> None:
    """Anthropic's ``messages.parse`` runs ``pydantic.TypeAdapter`` on any type it is given, not classes
    only: its schema is sent, and counted."""
    mock.reply_text = reply
    events: list[Event] = []
    guard = make_guard(events)
    client = mock.anthropic()
    try:
        parse = guard.with_budget(client.messages.parse, feature="chat")
        messages = [{"role": "user", "content": "Report on budgets."}]
        parse(model="claude-sonnet-4-5", messages=messages, output_format=output_format, max_tokens=400)
    finally:
        client.close()
    body = mock.requests[-1].body
    assert body["output_config"]["format"]["type"] == "json_schema"
    reserved_as_sent(events, mock, "anthropic")
    without = {k: v for k, v in body.items() if k != "output_config"}
    assert budgetguard.estimate(body).input_tokens > budgetguard.estimate(without).input_tokens + 50


def test_a_class_the_sdk_cannot_turn_into_a_schema_is_refused() -> None:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "response_format": int}
    with pytest.raises(budgetguard.ConfigurationError, match="cannot read the schema response_format=int"):
        budgetguard.estimate(request)


# -- interrupted streams: what was delivered, charged (a stream a function of yours yields) ------------------

ARGUMENTS = (
    '{"rows": [' + ", ".join(f'{{"id": {i}, "note": "a row of the export"}}' for i in range(300)) + "]}"
)


def responses_function_call_stream(**request: Any) -> Iterator[dict[str, Any]]:
    """A Responses API stream of gpt-4.1 (no hidden reasoning) cut while it writes a function call's
    arguments: every argument delta it wrote was delivered, then the connection dropped."""
    started = {"id": "resp_1", "object": "response", "model": request["model"], "status": "in_progress"}
    yield {"type": "response.created", "response": started}
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "export", "arguments": ""}
    yield {"type": "response.output_item.added", "output_index": 0, "item": call}
    for i in range(0, len(ARGUMENTS), 40):
        yield {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "delta": ARGUMENTS[i : i + 40],
        }
    raise ConnectionError("the connection dropped")


def claude_web_search_stream(**request: Any) -> Iterator[dict[str, Any]]:
    """An Anthropic stream cut after a web search ran and its results were delivered (one billed search)."""
    usage = {"input_tokens": 500, "output_tokens": 1, "server_tool_use": {"web_search_requests": 0}}
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": request["model"],
        "usage": usage,
    }
    yield {"type": "message_start", "message": {**message, "content": []}}
    use = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    yield {"type": "content_block_start", "index": 0, "content_block": use}
    query = '{"query": "budget news"}'
    yield {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": query},
    }
    yield {"type": "content_block_stop", "index": 0}
    hits = [
        {"type": "web_search_result", "url": "https://example.com", "title": "News", "encrypted_content": "x"}
    ]
    result = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": hits}
    yield {"type": "content_block_start", "index": 1, "content_block": result}
    yield {"type": "content_block_stop", "index": 1}
    raise ConnectionError("the connection dropped")


def chat_search_stream(cut: bool, **request: Any) -> Iterator[dict[str, Any]]:
    """A gpt-4o-search-preview stream with no usage chunk (``include_usage`` off): it ends, or is cut,
    after its answer's text; the search it ran before answering is in no chunk."""
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-search-preview-2025-03-11",
    }
    yield {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Today is Monday."}}]}
    if cut:
        raise ConnectionError("the connection dropped")
    yield {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


@pytest.mark.parametrize("cut", [False, True])
def test_a_chat_search_stream_without_usage_charges_its_search(cut: bool) -> None:
    """It was charged its input and streamed text alone: $0.025 of search (~100x the tokens) dropped."""
    events: list[Event] = []
    guard = make_guard(events)
    send = guard.with_budget(functools.partial(chat_search_stream, cut), feature="search")
    question = [{"role": "user", "content": "What day is today?"}]
    stream = send(model="gpt-4o-search-preview", messages=question, max_tokens=50, stream=True)
    with pytest.raises(ConnectionError) if cut else contextlib.nullcontext():
        list(stream)
    stream.close()
    (entry,) = guard.ledger.history(events=["committed"])
    assert entry.data["usage_missing"] is True
    assert entry.data["usage"].get("web_search_calls") == 1, entry.data["usage"]
    charged = settled(events).actual
    assert charged is not None and charged >= Decimal("0.025"), charged  # ($25 / 1k searches)


def test_an_interrupted_responses_stream_charges_the_function_call_it_delivered() -> None:
    events: list[Event] = []
    guard = make_guard(events)
    send = guard.with_budget(responses_function_call_stream, feature="export")
    tool = {"type": "function", "name": "export", "parameters": {"type": "object"}}
    stream = send(model="gpt-4.1", input="Export the rows.", tools=[tool], max_output_tokens=8000)
    with pytest.raises(ConnectionError):
        list(stream)
    stream.close()
    (entry,) = guard.ledger.history(events=["committed"])
    assert entry.data["interrupted"] is True
    written = budgetguard.count_text_tokens(ARGUMENTS, "gpt-4.1")
    assert entry.data["usage"].get("output_tokens", 0) >= written, (entry.data["usage"], written)


SHELL = {"type": "container_reference", "container_id": "cntr_1"}


STARTED_TOOLS = {
    "web_search_call": {"id": "ws_1", "status": "in_progress"},
    "file_search_call": {"id": "fs_1", "status": "in_progress"},
    "image_generation_call": {"id": "ig_1", "status": "in_progress"},
    "code_interpreter_call": {"id": "ci_1", "container_id": "cntr_1", "status": "in_progress"},
    "shell_call": {"id": "sh_1", "environment": SHELL, "action": {"commands": ["ls"]}},
}
"""An item of each billed built-in tool, as a stream delivers it when the tool starts."""


def billed_tool_kinds() -> list[str]:
    from budgetguard._tool_items import BILLED_TOOL_ITEMS

    return sorted(BILLED_TOOL_ITEMS)


@pytest.mark.parametrize("kind", billed_tool_kinds())
def test_an_interrupted_responses_stream_charges_each_billed_tool_it_started(kind: str) -> None:
    """A built-in tool's output item delivered before the stream was cut is charged as the final
    response's would be (a hosted shell: its container). The billed kinds are one list
    (``BILLED_TOOL_ITEMS``; they were two, the stream's and the final output's, kept alike by this test's
    own list): every kind of it is tested here."""
    from budgetguard._providers import StreamFolder
    from budgetguard._usage import with_tool_items

    item = {"type": kind, **STARTED_TOOLS[kind]}
    usage = budgetguard.Usage(input_tokens=1)
    charged = with_tool_items(usage, [item])
    assert charged != usage
    folder = StreamFolder()
    folder.feed({"type": "response.output_item.added", "output_index": 0, "item": item})
    assert folder.with_tool_calls(usage) == charged


def test_a_billed_tool_kind_is_billed_by_the_list_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """``with_tool_items`` reads how each kind is billed from ``BILLED_TOOL_ITEMS`` alone: it kept its
    own branch per container kind (``code_interpreter_call``, ``shell_call``) beside the list (a review),
    so a container kind added to the list would be kept by a stream and never billed."""
    from budgetguard import _tool_items
    from budgetguard._usage import with_tool_items

    kinds = dict(_tool_items.BILLED_TOOL_ITEMS)
    kinds["hosted_notebook_call"] = _tool_items.Billed(
        _tool_items.CONTAINER_SESSIONS, "sandbox", ("type", "hosted")
    )
    monkeypatch.setattr("budgetguard._usage.BILLED_TOOL_ITEMS", kinds)
    hosted = {
        "type": "hosted_notebook_call",
        "id": "nb_1",
        "sandbox": {"type": "hosted", "container_id": "c1"},
    }
    again = {**hosted, "id": "nb_2"}  # (the same container: one session)
    local = {"type": "hosted_notebook_call", "id": "nb_3", "sandbox": {"type": "local"}}
    usage = with_tool_items(budgetguard.Usage(input_tokens=1), [hosted, again, local])
    assert usage.code_execution_sessions == 1


def test_an_interrupted_claude_stream_charges_the_web_search_it_delivered() -> None:
    events: list[Event] = []
    guard = make_guard(events)
    send = guard.with_budget(claude_web_search_stream, feature="search")
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]
    stream = send(
        model="claude-sonnet-4-5",
        max_tokens=1000,
        tools=tools,
        messages=[{"role": "user", "content": "Budget news?"}],
    )
    with pytest.raises(ConnectionError):
        list(stream)
    stream.close()
    (entry,) = guard.ledger.history(events=["committed"])
    assert entry.data["interrupted"] is True
    assert entry.data["usage"].get("web_search_calls") == 1, entry.data["usage"]


@pytest.mark.parametrize(
    ("content", "charged"),
    [
        (None, 1),  # the search started, the stream cut before its results: it ran (or runs on)
        ([{"type": "web_search_result", "url": "https://example.com"}], 1),
        ({"type": "web_search_tool_result_error", "error_code": "unavailable"}, 0),  # not billed
    ],
)
def test_a_claude_stream_shows_the_searches_it_is_billed(content: Any, charged: int) -> None:
    from budgetguard._providers import StreamFolder

    folder = StreamFolder()
    use = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    folder.feed({"type": "content_block_start", "index": 0, "content_block": use})
    fetch = {"type": "server_tool_use", "id": "srvtoolu_2", "name": "web_fetch", "input": {}}
    folder.feed({"type": "content_block_start", "index": 1, "content_block": fetch})
    if content is not None:
        result = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": content}
        folder.feed({"type": "content_block_start", "index": 2, "content_block": result})
    shown = folder.with_tool_calls(budgetguard.Usage(input_tokens=10))
    assert (shown.web_search_calls, shown.web_fetch_calls) == (charged, 1)


@pytest.mark.parametrize(
    "kind",
    [
        "response.custom_tool_call_input.delta",
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.code_interpreter_call_code.delta",
        "response.mcp_call_arguments.delta",
        "response.shell_call_command.delta",
        "response.audio.transcript.delta",
    ],
)
def test_every_text_delta_of_a_responses_stream_is_counted(kind: str) -> None:
    """What the model wrote, whatever it wrote it for (and audio, base64, is not text)."""
    from budgetguard._providers import StreamFolder

    folder = StreamFolder()
    folder.feed({"type": kind, "item_id": "x", "delta": "written"})
    folder.feed({"type": "response.audio.delta", "item_id": "x", "delta": "UklGRg=="})
    assert folder.text == ["written"]


# -- background responses: closing the stream does not stop them -------------------------------------------


@pytest.mark.parametrize("path", ["decorator", "wrap", "estimate", "yours"])
def test_an_interrupted_background_stream_is_charged_its_worst_case(mock: MockProvider, path: str) -> None:  # noqa: F811
    """However the call is guarded: the request says it runs in the background (``estimate=`` answering
    for it or not), or only the stream does (a function of yours whose arguments do not say so)."""
    mock.reply_text = LONG_REPLY
    events: list[Event] = []
    guard = make_guard(events)
    client: Any = mock.openai()
    mock.cut(after=6, path="/v1/responses")  # created, in_progress, the message item, its part, 2 deltas
    request = {"model": "gpt-4.1", "input": "Write the quarterly report.", "max_output_tokens": 2000}
    try:
        if path == "wrap":
            client = guard.wrap(client, feature="report")
            create = client.responses.create
        elif path == "estimate":
            create = guard.with_budget(
                client.responses.create, feature="report", estimate=lambda **_: request
            )
        elif path == "yours":

            @guard.with_budget(feature="report")
            def report(model: str, input: str, max_output_tokens: int) -> Any:
                return client.responses.create(
                    model=model,
                    input=input,
                    max_output_tokens=max_output_tokens,
                    background=True,  # (not in the arguments: the stream says so)
                    stream=True,
                )

            create = report
        else:
            create = guard.with_budget(client.responses.create, feature="report")
        stream = create(**request) if path == "yours" else create(**request, background=True, stream=True)
        with pytest.raises(OPENAI_STREAM_CUT):
            list(stream)
        stream.close()
    finally:
        client.close()
    committed = settled(events)
    assert committed.actual is not None and committed.estimated is not None
    assert committed.actual >= committed.estimated, (committed.actual, committed.estimated)
    assert committed.data["background"] is True and committed.data["interrupted"] is True


def test_a_stream_that_says_it_runs_in_the_background_is_one() -> None:
    """The request may not say so (a guarded function of yours streams): the stream's first event does."""
    from budgetguard._providers import StreamFolder

    folder = StreamFolder()
    folder.feed({"type": "response.created", "response": {"id": "resp_1", "background": True}})
    assert folder.background
    plain = StreamFolder()
    plain.feed({"type": "response.created", "response": {"id": "resp_2", "background": False}})
    assert not plain.background


# -- a wrapped client's copy with an HTTP client of its own -----------------------------------------------


@pytest.mark.parametrize("how", ["with_options", "copy"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_wrapped_clients_copy_with_its_own_http_client_stays_guarded(
    mock: MockProvider,  # noqa: F811
    sdk: str,
    how: str,
) -> None:
    """The copy sends through the HTTP client it was given, on the same guard's transport: its scopes
    kept, nothing sent unguarded (the copy of a wrapped copy too)."""
    events: list[Event] = []
    guard = make_guard(events)
    wrapped: Any = guard.wrap(getattr(mock, sdk)(), feature="chat")
    http_lib = type(wrapped._client).__module__.partition(".")[0]  # (httpx or httpx2, as the SDK uses)
    own = __import__(http_lib).Client()
    copy = getattr(wrapped, how)(http_client=own, max_retries=0)
    again = copy.with_options(timeout=30)  # a copy of the guarded copy: the same transport
    try:
        for client in (copy, again):
            if sdk == "openai":
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
                )
            else:
                client.messages.create(
                    model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
                )
    finally:
        own.close()
        wrapped.close()
    assert [e.kind for e in events] == ["reserved", "committed"] * 2
    assert all("feature:chat" in e.scopes for e in events), [e.scopes for e in events]
    assert copy.max_retries == 0 and type(copy) is type(wrapped)

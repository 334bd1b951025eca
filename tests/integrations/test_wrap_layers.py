"""``guard.wrap(client)`` where it meets other layers, over real HTTP (``MockProvider``): WebSockets it
cannot guard (refused), a client wrapped twice or called inside a decorated function (charged once),
``BudgetTransport`` under an SDK client (the refusal raised as it is, not retried), the usage chunk the
guard asks a chat stream for (kept from a caller who did not ask), and scopes named like its options."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

import budgetguard as bg
from budgetguard import Usage
from budgetguard.integrations.httpx import AsyncBudgetTransport, BudgetTransport
from budgetguard.testing import MockProvider
from tests.integrations import test_httpx as over_http
from tests.sdk_http import ANTHROPIC_HTTP, OPENAI_HTTP

HI = [{"role": "user", "content": "Why reserve before calling?"}]
CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 50}


api, guard = over_http.api, over_http.guard  # (the fixtures: a MockProvider, a guard of $1 a day per user)


def chat_cost(reported: dict[str, Any]) -> int:
    return over_http.price("gpt-4o-mini", over_http.openai_usage(reported))


def charges(guard: bg.Guard) -> list[tuple[str, int | None, tuple[str, ...]]]:
    """Each journal entry's event, amount charged (a commit's) and scopes (global aside)."""
    return [
        (
            e.event,
            e.amounts["usd"] if e.event == "committed" else None,
            tuple(sorted(s for s in e.data.get("scopes", e.scopes) if s != "global")),
        )
        for e in guard.ledger.history()
    ]


def settled_once_each(guard: bg.Guard, api: MockProvider, scopes: tuple[str, ...] = ("user:alice",)) -> None:
    """One commit per request the server answered, at its usage's cost, nothing held."""
    assert charges(guard) == [("committed", chat_cost(u), scopes) for u in api.usages]
    for scope in scopes:
        kind, _, ident = scope.partition(":")
        for status in guard.ledger.status(guard.counters_for([bg.Scope(kind, ident)])):
            assert status.held == 0


# -- WebSockets: refused, never opened ---------------------------------------------------------------

SOCKETS: dict[str, tuple[str, dict[str, Any]]] = {
    "responses": ("responses", {}),
    "beta.responses": ("beta.responses", {}),
    "realtime": ("realtime", {"model": "gpt-realtime"}),
    "beta.realtime": ("beta.realtime", {"model": "gpt-4o-realtime-preview"}),
    "realtime.translations": ("realtime.translations", {"model": "gpt-realtime"}),
    "live": ("live", {}),
    "live.forks": ("live.forks", {"call_id": "call_1", "session_id": "sess_1"}),
    "live.sideband": ("live.sideband", {"call_id": "call_1", "session_id": "sess_1"}),
}
"""The openai SDK's WebSocket resources (those this release has are tested; the refusal itself does not
list them: see ``integrations.httpx._NoWebSockets``)."""


def resource(client: Any, path: str) -> Any:
    for name in path.split("."):
        client = getattr(client, name, None)
    return client


def connect_args(method: Callable[..., Any], wanted: dict[str, Any]) -> dict[str, Any]:
    import inspect

    params = inspect.signature(method).parameters
    return {k: v for k, v in wanted.items() if k in params}


@pytest.mark.parametrize("name", list(SOCKETS))
def test_a_wrapped_client_opens_no_websocket(
    api: MockProvider, guard: bg.Guard, name: str, request: pytest.FixtureRequest
) -> None:
    path, wanted = SOCKETS[name]
    client = guard.wrap(api.openai(), user="alice")
    request.addfinalizer(client.close)
    found = resource(client, path)
    if found is None or not hasattr(found, "connect"):
        pytest.skip(f"this openai release has no {path}.connect()")
    manager = found.connect(**connect_args(found.connect, wanted))
    with pytest.raises(bg.ConfigurationError, match="does not guard WebSocket traffic"), manager:
        pass
    copied = resource(client.with_options(timeout=5), path).connect(**connect_args(found.connect, wanted))
    with pytest.raises(bg.ConfigurationError, match="WebSocket"), copied:  # a copy of it too
        pass
    assert api.requests == [] and guard.ledger.history() == []
    client.chat.completions.create(**CHAT)  # its HTTP calls are guarded as ever
    settled_once_each(guard, api)


def test_async_and_azure_clients_open_no_websocket(api: MockProvider, guard: bg.Guard) -> None:
    async def run() -> None:
        client = guard.wrap(api.async_openai(), user="alice")
        with pytest.raises(bg.ConfigurationError, match="WebSocket"):
            async with client.responses.connect():
                pass
        with pytest.raises(bg.ConfigurationError, match="WebSocket"):
            async with client.realtime.connect(model="gpt-realtime"):
                pass

    asyncio.run(run())
    azure = openai.AzureOpenAI(api_key="k", azure_endpoint=api.url, api_version="2024-10-01-preview")
    wrapped = guard.wrap(azure, user="alice")
    with (
        pytest.raises(bg.ConfigurationError, match="WebSocket"),
        wrapped.realtime.connect(model="gpt-realtime"),
    ):
        pass
    assert api.requests == []
    assert azure.websocket_base_url is None  # (the client wrapped is untouched)


# -- one request, one charge -------------------------------------------------------------------------


def test_a_client_wrapped_twice_is_charged_once(api: MockProvider, guard: bg.Guard) -> None:
    once = guard.wrap(api.openai(), user="alice")
    assert guard.wrap(once) is once  # nothing added: the same client
    twice = guard.wrap(once, feature="chat")  # rewrapped with both wraps' scopes
    copy = guard.wrap(once.with_options(timeout=5), feature="chat")  # (a copy is recognized too)

    for client in (guard.wrap(once, user="alice"), twice, copy):
        client.chat.completions.create(**CHAT)
    once.close()  # (closes the pool they share)

    first, second, third = api.usages
    assert charges(guard) == [
        ("committed", chat_cost(first), ("user:alice",)),
        ("committed", chat_cost(second), ("feature:chat", "user:alice")),
        ("committed", chat_cost(third), ("feature:chat", "user:alice")),
    ]


def test_wraps_of_two_guards_each_charge_their_own(api: MockProvider, guard: bg.Guard) -> None:
    other = bg.Guard("memory://", budgets=[bg.Budget("team", usd="1", per="day")])
    client = other.wrap(guard.wrap(api.openai(), user="alice"), team="core")
    with client:
        client.chat.completions.create(**CHAT)

    [usage] = api.usages
    assert charges(guard) == [("committed", chat_cost(usage), ("user:alice",))]
    assert charges(other) == [("committed", chat_cost(usage), ("team:core",))]
    other.close()


def test_a_copy_with_its_own_http_client_keeps_both_guards(api: MockProvider, guard: bg.Guard) -> None:
    other = bg.Guard("memory://", budgets=[bg.Budget("team", usd="1", per="day")])
    client = other.wrap(guard.wrap(api.openai(), user="alice"), team="core")
    own = __import__(type(client._client).__module__.partition(".")[0]).Client()
    with own, client:
        client.with_options(http_client=own).chat.completions.create(**CHAT)

    [usage] = api.usages
    assert charges(guard) == [("committed", chat_cost(usage), ("user:alice",))]
    assert charges(other) == [("committed", chat_cost(usage), ("team:core",))]
    other.close()


def test_a_decorated_function_calling_a_wrapped_client_enforces_both_layers(
    api: MockProvider, guard: bg.Guard
) -> None:
    """A decorated function calling a client its guard wraps: each layer reserves and charges on its own
    budgets (the decorator its call, on ``user:alice``; the transport each request it sends, on
    ``user:bob``), so neither layer's limit is skipped: an outer layer cannot see every request an inner
    one sends (a review found requests of a task outliving the call, and all but the last of several
    calls, charged nothing when the transport left them to the decorator)."""
    client = guard.wrap(api.openai(), user="bob")

    @guard.with_budget(user="alice")
    def call(**kwargs: Any) -> Any:
        client.chat.completions.create(**kwargs)  # (a first request, its response not returned)
        return client.chat.completions.create(**kwargs)

    with client:
        call(**CHAT)

    assert len(api.requests) == 2
    bob = [c for c in charges(guard) if c[2] == ("user:bob",)]
    alice = [c for c in charges(guard) if c[2] == ("user:alice",)]
    assert bob == [("committed", chat_cost(u), ("user:bob",)) for u in api.usages]  # every request
    assert [c[0] for c in alice] == ["committed"]  # the call, on its own budget


def test_pydantic_ai_and_agents_models_on_a_wrapped_client_charge_once(
    api: MockProvider, guard: bg.Guard
) -> None:
    from agents import Agent, RunConfig, Runner, set_tracing_disabled
    from pydantic_ai import Agent as PydanticAgent

    from budgetguard.integrations.openai_agents import BudgetProvider
    from budgetguard.integrations.pydantic_ai import openai_model

    wrapped = guard.wrap(api.async_openai(), user="alice")
    model = openai_model(guard, "gpt-4o-mini", wrapped)
    provider = BudgetProvider(guard, wrapped, use_responses=False)
    assert model.client is wrapped and provider.client is wrapped
    set_tracing_disabled(True)

    async def run() -> None:
        await PydanticAgent(model, model_settings={"max_tokens": 50}).run("Why?")
        agent = Agent(name="a", model="gpt-4o-mini")
        await Runner.run(agent, "Why?", run_config=RunConfig(model_provider=provider))
        await wrapped.close()

    try:
        asyncio.run(run())
    finally:
        set_tracing_disabled(False)
    assert len(api.requests) == 2
    settled_once_each(guard, api)


def test_agents_websocket_transport_is_not_used(api: MockProvider, guard: bg.Guard) -> None:
    """The Agents SDK's WebSocket transport for the Responses API would send every model call unguarded:
    ``BudgetProvider``'s models send over HTTP whatever the SDK's default."""
    from agents import Agent, RunConfig, Runner, set_default_openai_responses_transport, set_tracing_disabled

    from budgetguard.integrations.openai_agents import BudgetProvider

    async def run() -> Any:
        provider = BudgetProvider(guard, api.async_openai())
        async with provider.client:
            with bg.budget_context(user="alice"):
                agent = Agent(name="a", model="gpt-4o-mini")
                return await Runner.run(agent, "Why?", run_config=RunConfig(model_provider=provider))

    set_tracing_disabled(True)
    set_default_openai_responses_transport("websocket")
    try:
        result = asyncio.run(run())
    finally:
        set_default_openai_responses_transport("http")
        set_tracing_disabled(False)

    assert result.final_output
    [usage] = api.usages
    assert [r.path for r in api.requests] == ["/v1/responses"]
    cost = bg.get_price("gpt-4o-mini").cost_nano(
        Usage(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"])
    )
    assert charges(guard) == [("committed", cost, ("user:alice",))]


# -- BudgetTransport under an SDK client: the refusal, as it is ------------------------------------


def test_transport_refusal_under_either_sdk_is_raised_once_unretried(
    api: MockProvider, guard: bg.Guard
) -> None:
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], 1)
    claude: dict[str, Any] = {"model": "claude-sonnet-4-6", "messages": HI, "max_tokens": 50}
    sync_calls: list[Callable[[], Any]] = [
        lambda: openai.OpenAI(
            base_url=api.openai_base_url, api_key="k", max_retries=2,
            http_client=OPENAI_HTTP.Client(transport=BudgetTransport(guard, user="alice")),
        ).chat.completions.create(**CHAT),
        lambda: anthropic.Anthropic(
            base_url=api.anthropic_base_url, api_key="k", max_retries=2,
            http_client=ANTHROPIC_HTTP.Client(transport=BudgetTransport(guard, user="alice")),
        ).messages.create(**claude),
    ]  # fmt: skip

    async def async_calls() -> list[BaseException]:
        made = [
            openai.AsyncOpenAI(
                base_url=api.openai_base_url, api_key="k", max_retries=2,
                http_client=OPENAI_HTTP.AsyncClient(transport=AsyncBudgetTransport(guard, user="alice")),
            ).chat.completions.create(**CHAT),
            anthropic.AsyncAnthropic(
                base_url=api.anthropic_base_url, api_key="k", max_retries=2,
                http_client=ANTHROPIC_HTTP.AsyncClient(transport=AsyncBudgetTransport(guard, user="alice")),
            ).messages.create(**claude),
        ]  # fmt: skip
        return [
            r for r in await asyncio.gather(*made, return_exceptions=True) if isinstance(r, BaseException)
        ]

    raised: list[BaseException] = []
    for call in sync_calls:
        with pytest.raises(bg.BudgetExceededError) as refused:
            call()
        raised.append(refused.value)
    raised += asyncio.run(async_calls())

    assert len(raised) == 4 and all(isinstance(e, bg.BudgetExceededError) for e in raised)
    assert isinstance(raised[0], openai.OpenAIError) and isinstance(raised[1], anthropic.AnthropicError)
    assert all(str(e.scope) == "user:alice" for e in raised if isinstance(e, bg.BudgetExceededError))
    for error in raised:  # (pickled as the guard's own error: a process pool, a task queue)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is bg.BudgetExceededError and str(copy) == str(error) and copy.scope == error.scope
    assert [e[0] for e in charges(guard)] == ["refused"] * 4  # one each: no SDK retried it
    assert api.requests == []


def test_a_plain_http_client_gets_the_plain_refusal(api: MockProvider, guard: bg.Guard) -> None:
    guard.ledger.set_limit(guard.counters_for([bg.Scope("user", "alice")])[0], 1)
    with (
        OPENAI_HTTP.Client(
            transport=BudgetTransport(guard, user="alice"), base_url=api.openai_base_url
        ) as http,
        pytest.raises(bg.BudgetExceededError) as refused,
    ):
        http.post("/chat/completions", json=CHAT)
    assert type(refused.value) is bg.BudgetExceededError


# -- the usage chunk the guard asks for ----------------------------------------------------------------


def test_the_plain_streaming_loop_runs_on_a_wrapped_client(
    api: MockProvider, guard: bg.Guard, request: pytest.FixtureRequest
) -> None:
    plain, wrapped = api.openai(), guard.wrap(api.openai(), user="alice")
    request.addfinalizer(plain.close)
    request.addfinalizer(wrapped.close)

    texts = [
        "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**CHAT, stream=True))
        for client in (plain, wrapped)
    ]
    asked = list(wrapped.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))

    assert texts[0] == texts[1] != ""
    assert asked[-1].choices == [] and asked[-1].usage is not None
    _, charged, answered = api.usages  # (the plain client's call is not the guard's)
    assert asked[-1].usage.completion_tokens == answered["completion_tokens"]
    assert charges(guard) == [
        ("committed", chat_cost(charged), ("user:alice",)),
        ("committed", chat_cost(answered), ("user:alice",)),
    ]


# -- scopes and options --------------------------------------------------------------------------------


def test_scopes_named_like_options_are_scopes(api: MockProvider) -> None:
    guard = bg.Guard("memory://", budgets=[bg.Budget("provider", usd="1", per="day")])
    with guard.wrap(api.openai(), provider="acme", inner="x", guard="y", client="z") as client:
        client.chat.completions.create(**CHAT)
    from budgetguard.integrations.openai_agents import BudgetProvider

    assert BudgetProvider(guard, api.async_openai(), provider="acme", guard="y").client is not None
    [entry] = guard.ledger.history()
    assert entry.event == "committed"
    assert set(entry.data["scopes"]) == {"global", "provider:acme", "inner:x", "guard:y", "client:z"}
    guard.close()


def test_wrap_allow_sends_a_path_unguarded_by_choice(api: MockProvider, guard: bg.Guard) -> None:
    client = guard.wrap(api.openai(max_retries=0), user="alice")
    with pytest.raises(
        bg.ConfigurationError, match=r"guard\.wrap\(client, allow=\('/v1/images/generations',\)\)"
    ):
        client.images.generate(model="gpt-image-1", prompt="a piggy bank")
    allowed = guard.wrap(api.openai(max_retries=0), allow=("/v1/images/",), user="alice")
    with pytest.raises(openai.NotFoundError):  # sent (the mock has no images route), not refused
        allowed.images.generate(model="gpt-image-1", prompt="a piggy bank")
    allowed.chat.completions.create(**CHAT)
    allowed.close()
    client.close()

    assert [r.path for r in api.requests] == ["/v1/images/generations", "/v1/chat/completions"]
    settled_once_each(guard, api)
    with pytest.raises(bg.ConfigurationError, match="tuple of path prefixes"):
        guard.wrap(api.openai(), allow="/v1/images/")  # type: ignore[arg-type]

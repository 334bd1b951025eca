"""A call that names no id for a scope kind a budget applies to is refused (``MissingScopeError``), never
let through without that limit; ``missing_scope="skip"`` or a default id are the explicit ways out.

The rest of the guard suite opts out (``make_guard`` passes ``missing_scope="skip"``): its tests name
only the scopes they look at. Here the guard's own default, ``"refuse"``, is given explicitly.
"""

from __future__ import annotations

from typing import Any

import pytest

import budgetguard
from budgetguard import (
    Budget,
    BudgetExceededError,
    BudgetGuardError,
    ConfigurationError,
    Guard,
    MissingScopeError,
    budget_context,
)
from tests.guard.conftest import MakeGuard
from tests.guard.payloads import (
    GPT4O_USAGE,
    MESSAGES,
    async_openai_client,
    chat_completion,
    chat_request,
    nano,
    openai_client,
    serve,
)

COST = nano("gpt-4o", GPT4O_USAGE)
EST = budgetguard.estimate(chat_request())
PER_USER = Budget("user", usd=budgetguard.to_usd(25 * COST), per="day")
"""25 calls' worth per user: 50 calls without an id spent twice that before the fix."""
BUDGETS = (PER_USER, Budget("global", usd="100", per="day"))
REFUSE: dict[str, Any] = {"budgets": BUDGETS, "missing_scope": "refuse"}


def test_the_guard_refuses_by_default() -> None:
    guard = Guard("memory://", budgets=BUDGETS)
    assert guard.missing_scope == "refuse"
    assert guard.required_kinds == {"user"}


def test_calls_without_a_user_id_are_refused_and_never_sent(make_guard: MakeGuard) -> None:
    h = make_guard(**REFUSE)
    api = serve(*[chat_completion()] * 50)
    client = openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    def ask(user_id: str | None, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    unscoped = h.guard.with_budget(client.chat.completions.create)  # no spec, no budget_context
    for call in [lambda: ask(None, "gpt-4o", MESSAGES, 300)] * 25 + [lambda: unscoped(**chat_request())] * 25:
        with pytest.raises(MissingScopeError) as caught:
            call()
        assert caught.value.kinds == ("user",)

    assert api.requests == []  # nothing sent, nothing spent: not on global, not on a user "None"
    assert h.history() == []
    h.assert_settled({"global": 0, "user:None": 0})
    refused = h.of("refused")
    assert len(refused) == 50 and {e.reason for e in refused} == {"user"}
    assert refused[0].data == {"missing_scope": ("user",)}

    error = caught.value
    assert isinstance(error, BudgetGuardError) and not isinstance(error, BudgetExceededError)
    for advice in (
        "budget_context(user=...)",
        "default_scopes={'user': 'anonymous'}",
        "missing_scope='skip'",
    ):
        assert advice in str(error)


async def test_async_calls_without_a_user_id_are_refused(amake_guard: MakeGuard) -> None:
    h = amake_guard(**REFUSE)
    api = serve(chat_completion())
    client = async_openai_client(api)

    @h.guard.with_budget(user="{user_id}")
    async def ask(model: str, messages: list[Any], max_tokens: int, user_id: str | None = None) -> Any:
        return await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    with pytest.raises(MissingScopeError):
        await ask(**chat_request())  # user_id: None, its default
    with budget_context(user="alice"):
        await ask(**chat_request())

    assert len(api.requests) == 1
    h.assert_settled({"user:alice": COST, "global": COST})


def test_a_template_argument_that_is_none_names_no_id(make_guard: MakeGuard) -> None:
    """``user="{user_id}"`` with ``user_id=None`` is no id (it was the id ``"None"``, one user shared by
    every such call): budget_context's id applies, else the call is refused."""
    h = make_guard(**REFUSE)
    api = serve(chat_completion())
    client = openai_client(api)

    @h.guard.with_budget(user="{user_id}", team="{org}-{user_id}")
    def ask(user_id: str | None, org: str, model: str, messages: list[Any], max_tokens: int) -> Any:
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    with budget_context(user="bob"):
        ask(None, "acme", "gpt-4o", MESSAGES, 300)

    (entry,) = h.committed()
    assert list(entry.data["scopes"]) == ["global", "user:bob"]  # no team "acme-None" either
    h.assert_settled({"user:bob": COST, "user:None": 0})


def test_a_default_id_charges_every_call_without_one_to_one_shared_scope(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=BUDGETS, default_scopes={"user": "anonymous"})
    assert h.guard.required_kinds == set()
    api = serve(*[chat_completion()] * 30)
    create = h.guard.with_budget(openai_client(api).chat.completions.create, user="{user}")
    anonymous = h.guard.with_budget(openai_client(api).chat.completions.create)

    for _ in range(12):
        create(**chat_request(user=None))
        anonymous(**chat_request())
    create(**chat_request(user="alice"))  # an id of its own: its own budget
    with pytest.raises(BudgetExceededError) as caught:  # the 25th is past the shared budget
        anonymous(**chat_request(max_tokens=16_000))

    assert caught.value.scope == "user:anonymous"
    assert len(api.requests) == 25
    h.assert_settled({"user:anonymous": 24 * COST, "user:alice": COST, "global": 25 * COST})
    with budget_context(user="carol"):  # budget_context and the decorator's ids come first
        anonymous(**chat_request())
    h.assert_settled({"user:carol": COST})


def test_skip_leaves_the_budgets_of_that_kind_off_the_call(make_guard: MakeGuard) -> None:
    h = make_guard(budgets=BUDGETS, missing_scope="skip")
    assert h.guard.required_kinds == set()
    api = serve(*[chat_completion()] * 30)
    create = h.guard.with_budget(openai_client(api).chat.completions.create)

    for _ in range(30):
        create(**chat_request())

    h.assert_settled({"global": 30 * COST})


def test_exact_scope_budgets_do_not_make_a_kind_required(make_guard: MakeGuard) -> None:
    h = make_guard(
        budgets=[Budget("user:alice", usd="1"), Budget("feature", usd="1")], missing_scope="refuse"
    )
    assert h.guard.required_kinds == {"feature"}
    api = serve(chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create, feature="chat")

    create(**chat_request())  # no user id, and only one user has a budget

    h.assert_settled({"feature:chat": COST, "user:alice": 0})


def test_a_metered_call_without_an_id_is_recorded_and_flagged(make_guard: MakeGuard) -> None:
    h = make_guard(**REFUSE)
    api = serve(chat_completion())
    metered = h.guard.metered(openai_client(api).chat.completions.create)

    metered(**chat_request())

    assert len(api.requests) == 1
    (entry,) = h.committed()
    assert list(entry.data["missing_scope"]) == ["user"]
    assert list(entry.data["scopes"]) == ["global"]
    h.assert_settled({"global": COST})
    (event,) = h.of("scope_missing")
    assert event.data == {"missing_scope": ("user",)} and event.scopes == ("global",)
    assert h.kinds()[:2] == ["scope_missing", "committed"] and "refused" not in h.kinds()


def test_a_job_without_an_id_is_refused_and_its_calls_draw_on_it(make_guard: MakeGuard) -> None:
    h = make_guard(**REFUSE)
    api = serve(chat_completion(), chat_completion())
    create = h.guard.with_budget(openai_client(api).chat.completions.create)

    with pytest.raises(MissingScopeError), h.guard.reserve(usd="0.5", feature="ingest"):
        pytest.fail("a job without a user id must not start")
    assert [(e.kind, e.reason) for e in h.events] == [("refused", "user")]

    with h.guard.reserve(usd="0.1", user="alice") as job:
        create(**chat_request())  # names no user: it draws on the job, which holds alice's budget
        with h.guard.reserve(usd="0.05", feature="nested"):  # a nested job draws on its parent too
            create(**chat_request())

    assert job.calls == 2 and len(api.requests) == 2
    h.assert_settled({"user:alice": 2 * COST, "global": 2 * COST})


def test_an_attempt_without_an_id_is_refused(make_guard: MakeGuard) -> None:
    h = make_guard(**REFUSE)

    with pytest.raises(MissingScopeError):
        h.guard.attempt(chat_request()).reserve()
    metered = h.guard.attempt(chat_request(), enforce=False)
    metered.reserve()
    metered.commit(chat_completion())
    attempt = h.guard.attempt(chat_request(), scopes={"user": "{user_id}"}, arguments={"user_id": "ann"})
    attempt.reserve()
    attempt.commit(chat_completion())

    assert [list(e.data.get("missing_scope", [])) for e in h.committed()] == [["user"], []]
    h.assert_settled({"user:ann": COST, "global": 2 * COST})


def test_settings_are_checked_when_the_guard_is_built() -> None:
    with pytest.raises(ConfigurationError, match="'refuse' or 'skip'"):
        Guard("memory://", missing_scope="allow")  # type: ignore[arg-type]
    for bad in ({"global": "x"}, {"user": ""}, {"User": "x"}, {"user": 7}):
        with pytest.raises(ConfigurationError):
            Guard("memory://", default_scopes=bad)  # type: ignore[arg-type]
    guard = Guard("memory://", budgets=BUDGETS, default_scopes={"user": "anonymous"}, missing_scope="refuse")
    assert dict(guard.default_scopes) == {"user": "anonymous"}
    assert guard.required_kinds == set()

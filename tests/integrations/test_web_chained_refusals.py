"""A refusal that reaches the web middlewares inside another error, as libraries raise it (instructor's
``InstructorRetryException`` from the refusal): Flask, FastAPI and Django, through their real test
clients, sync and async views. Chained as a cause or as the members of an exception group, it is
answered as the refusal (429 with ``Retry-After``, or 400 for a missing scope id) and nothing is logged;
an error raised while the app handled a refusal (its fallback failed: the refusal only its context) is
that failure's, a 500 logged (a review found it answered 429, the failure hidden); an error the app
chose to answer it with (an ``HTTPException``, Django's ``PermissionDenied``) keeps its status;
``raise ... from None``, a group with another failure in it and any other error stay the framework's
500, logged as before."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn

import django
import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.urls import path
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from flask import Flask, abort

import budgetguard as bg
from budgetguard.integrations.django import BudgetMiddleware as DjangoMiddleware
from budgetguard.integrations.fastapi import BudgetMiddleware, budget_exceeded_handler
from budgetguard.integrations.flask import BudgetGuard
from tests.integrations.web_helpers import TOO_BIG, make_guard, usage_reply

if not settings.configured:
    settings.configure()
django.setup()

# shape -> (status for a refusal, status for a missing id): how the app raises what it caught
SHAPES: dict[str, tuple[int | None, int | None]] = {
    "cause": (429, 400),  # raise Wrapped(...) from refusal (instructor)
    "context": (500, 500),  # raise Wrapped(...) inside the except: the handling failed, a 500
    "group": (429, 400),  # an ExceptionGroup of the refusal (a task group)
    "answer": (None, None),  # the framework's own answer, raised from the refusal: the app's choice
    "from_none": (500, 500),  # raise Wrapped(...) from None: not the refusal's doing, says the app
    "mixed_group": (500, 500),  # a group with another failure in it: that failure is reported
    "other": (500, 500),  # no refusal at all
}


class Wrapped(Exception):
    """A library's own error, raised when its call to the guarded client failed."""


def misbehave(shape: str, refusal: Exception, answer: Callable[[], BaseException]) -> NoReturn:
    """Raise what the app raises in ``shape``, inside the ``except`` that caught ``refusal``."""
    if shape == "cause":
        raise Wrapped("failed after 1 attempt") from refusal
    if shape == "context":
        raise Wrapped("failed after 1 attempt")
    if shape == "group":
        raise ExceptionGroup("tasks", [refusal])
    if shape == "answer":
        raise answer() from refusal
    if shape == "from_none":
        raise Wrapped("failed after 1 attempt") from None
    if shape == "mixed_group":
        raise ExceptionGroup("tasks", [refusal, KeyError("a bug")])
    raise Wrapped("a bug") from KeyError("a bug")


def call(ask: Callable[..., Any], shape: str, answer: Callable[[], BaseException]) -> None:
    try:
        ask(**TOO_BIG)
    except bg.BudgetGuardError as refusal:
        misbehave(shape, refusal, answer)


async def acall(aask: Callable[..., Awaitable[Any]], shape: str, answer: Callable[[], BaseException]) -> None:
    try:
        await aask(**TOO_BIG)
    except bg.BudgetGuardError as refusal:
        misbehave(shape, refusal, answer)


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = make_guard()
    yield made
    made.close()


def guarded(guard: bg.Guard) -> tuple[Callable[..., Any], Callable[..., Awaitable[Any]]]:
    async def aask(**request: Any) -> dict[str, Any]:
        return usage_reply()

    return guard.with_budget()(usage_reply), guard.with_budget()(aask)


def expected(shape: str, user: str | None, answered: int = 503) -> int:
    """The status of a request: ``answered`` is that of the framework's answer the app raised."""
    return SHAPES[shape][0 if user else 1] or answered


def check(
    shape: str, user: str | None, status: int, headers: Any, body: Any, errors: list[str], answered: int = 503
) -> None:
    """The answer and the log of one request; ``body`` is the response's JSON (``None`` for a 500)."""
    assert status == expected(shape, user, answered)
    if status == 429:
        assert int(headers["Retry-After"]) > 0
        assert body["error"] == "budget_exceeded" and body["scope"] == f"user:{user}"
        assert not errors  # a refusal is no failure: no traceback logged
    elif status == 400:
        assert body["error"] == "missing_scope" and body["kinds"] == ["user"]
        assert not errors


def add_views(
    get: Callable[[str], Callable[[Callable[[], Any]], Any]],
    guard: bg.Guard,
    shape: str,
    answer: Callable[[], BaseException],
) -> None:
    """``/sync`` and ``/async``, on a Flask or FastAPI app's ``get`` decorator."""
    ask, aask = guarded(guard)

    @get("/sync")
    def sync_view() -> dict[str, Any]:
        call(ask, shape, answer)
        return {}

    @get("/async")
    async def async_view() -> dict[str, Any]:
        await acall(aask, shape, answer)
        return {}


def user_headers(user: str | None) -> dict[str, str]:
    return {"x-user-id": user} if user else {}


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("user", ["alice", None])
@pytest.mark.parametrize("view", ["sync", "async"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_flask(
    guard: bg.Guard, shape: str, view: str, user: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask(__name__)
    BudgetGuard(app, guard=guard, scopes={"user": "X-User-Id"})

    def answer() -> BaseException:
        try:
            abort(503)
        except Exception as made:
            return made
        raise AssertionError("abort returned")

    add_views(app.get, guard, shape, answer)

    response = app.test_client().get(f"/{view}", headers=user_headers(user))
    body = response.get_json(silent=True)
    check(shape, user, response.status_code, response.headers, body, error_lines(caplog))
    if response.status_code == 500:  # Flask's own answer, and its log of the error
        assert any(line.startswith("Exception on /") for line in error_lines(caplog))


@pytest.mark.parametrize("own", [Wrapped, Exception])
def test_flask_apps_own_handler_of_the_wrapping_error_answers_it(
    guard: bg.Guard, own: type[Exception]
) -> None:
    """An app (or blueprint) with its own handler for the error that carries a refusal answers it (a
    review found the refusal's 429 put in its place); a handler of every ``Exception`` does not count:
    the refusal is answered."""
    from flask import Blueprint

    ask, _ = guarded(guard)
    app, part = Flask(__name__), Blueprint("part", __name__)
    BudgetGuard(app, guard=guard, scopes={"user": "X-User-Id"})
    (part if own is Wrapped else app).register_error_handler(own, lambda error: ("handled by the app", 418))

    @part.get("/ask")
    def view() -> str:
        call(ask, "cause", lambda: RuntimeError())
        return "unreachable"

    app.register_blueprint(part)
    response = app.test_client().get("/ask", headers=user_headers("alice"))
    assert response.status_code == (418 if own is Wrapped else 429)


@pytest.mark.parametrize("user", ["alice", None])
@pytest.mark.parametrize("view", ["sync", "async"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fastapi(
    guard: bg.Guard, shape: str, view: str, user: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    app.add_middleware(BudgetMiddleware, guard=guard, scopes={"user": "x-user-id"})

    def answer() -> BaseException:
        return HTTPException(503, "the model is resting")

    add_views(app.get, guard, shape, answer)

    client = TestClient(app)  # (an error that escapes the app is raised here: the server's 500)
    if expected(shape, user) == 500:
        with pytest.raises((Wrapped, ExceptionGroup)):
            client.get(f"/{view}", headers=user_headers(user))
        return
    response = client.get(f"/{view}", headers=user_headers(user))
    check(shape, user, response.status_code, response.headers, response.json(), error_lines(caplog))


def test_fastapis_exception_handler_answers_the_refusal_inside_an_error_it_is_registered_for(
    guard: bg.Guard,
) -> None:
    """``budget_exceeded_handler`` registered for a library's error (``budget_scope`` routes, no
    middleware) answers the refusal it carries; an error of that class carrying none stays a 500."""
    ask, _ = guarded(guard)
    app = FastAPI()
    app.add_exception_handler(Wrapped, budget_exceeded_handler)

    @app.get("/{shape}")
    def view(shape: str) -> dict[str, Any]:
        with bg.budget_context(user="alice"):
            call(ask, shape, lambda: HTTPException(503))
        return {}

    client = TestClient(app, raise_server_exceptions=False)
    refused = client.get("/cause")
    assert refused.status_code == 429 and refused.json()["scope"] == "user:alice"
    assert client.get("/other").status_code == 500


DJANGO: dict[str, Any] = {}  # what the views do: the test's guarded functions and shape


def django_sync(request: HttpRequest) -> JsonResponse:
    call(DJANGO["ask"], DJANGO["shape"], lambda: PermissionDenied("not now"))
    return JsonResponse({})


async def django_async(request: HttpRequest) -> JsonResponse:
    await acall(DJANGO["aask"], DJANGO["shape"], lambda: PermissionDenied("not now"))
    return JsonResponse({})


urlpatterns = [path("sync", django_sync), path("async", django_async)]


@pytest.fixture
def django_app(guard: bg.Guard) -> Iterator[None]:
    DJANGO["ask"], DJANGO["aask"] = guarded(guard)
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["budgetguard.integrations.django.BudgetMiddleware"],
        BUDGETGUARD={"guard": guard, "scopes": {"user": "x-user-id"}},
    ):
        yield


def check_django(shape: str, user: str | None, response: Any, errors: list[str]) -> None:
    body = response.json() if response.status_code in (429, 400) else None
    check(shape, user, response.status_code, response, body, errors, answered=403)  # (PermissionDenied)
    if response.status_code == 500:  # Django's own answer, and its log of the error
        assert any(line.startswith("Internal Server Error") for line in errors)


@pytest.mark.parametrize("user", ["alice", None])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_django_wsgi_sync_view(
    django_app: None, shape: str, user: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    DJANGO["shape"] = shape
    response = Client(raise_request_exception=False).get("/sync", headers=user_headers(user))
    check_django(shape, user, response, error_lines(caplog))


@pytest.mark.parametrize("user", ["alice", None])
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_django_asgi_async_view(
    django_app: None, shape: str, user: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    DJANGO["shape"] = shape
    response = await AsyncClient(raise_request_exception=False).get("/async", headers=user_headers(user))
    check_django(shape, user, response, error_lines(caplog))


def test_djangos_middleware_called_directly_answers_a_chained_refusal(guard: bg.Guard) -> None:
    """Outside Django's handler (``get_response`` raising, as a test's own chain does): the same answer;
    another error goes on."""
    ask, _ = guarded(guard)

    for shape, status in (("cause", 429), ("context", None), ("other", None)):

        def view(request: HttpRequest, shape: str = shape) -> JsonResponse:
            call(ask, shape, lambda: PermissionDenied())
            return JsonResponse({})

        middleware = DjangoMiddleware(view, guard=guard, scopes={"user": "x-user-id"})
        request = RequestFactory().get("/", headers={"x-user-id": "carol"})
        if status is None:
            with pytest.raises(Wrapped):
                middleware(request)
        else:
            assert middleware(request).status_code == status

"""A lone script call's round trip straight on the socket (``_deadline.Connection.round_trip``): taken by
``open_ledger``'s connections, redis-py's own path kept where it does more (health checks), and the
errors a server can answer with on the way (a ``-LOADING`` reply is a connection error, retried)."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, open_ledger
from budgetguard._ledger import _deadline as deadline_module
from tests.redis_server import delete_namespace

COUNTER = CounterSpec(Scope("user", "rt"), Unit.USD, Period.DAY, 10**12)


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    ns = "t" + secrets.token_hex(6)
    yield ns
    delete_namespace(redis_url, ns)


@pytest.fixture
def redis_py_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls of redis-py's ``send_packed_command`` and ``read_response`` on ``open_ledger``'s
    connections, by name."""
    seen: list[str] = []
    cls: Any = deadline_module.Connection
    for name in ("send_packed_command", "read_response"):
        method = getattr(cls, name)

        def counted(self: Any, *args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            seen.append(_name)
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)
    return seen


def _pairs(url: str, count: int) -> list[int]:
    with open_ledger(url) as store:
        spent = []
        for _ in range(count):
            outcome = store.commit(store.reserve([Hold(COUNTER, 1_000)]), {"usd": 700})
            spent.append(outcome.spent[0])
        status = store.status([COUNTER])[0]
        assert (status.spent, status.held) == (700 * count, 0)
        return spent


def test_a_lone_call_goes_straight_on_the_socket(
    redis_url: str, namespace: str, redis_py_calls: list[str]
) -> None:
    with open_ledger(f"{redis_url}?namespace={namespace}") as store:
        store.commit(store.reserve([Hold(COUNTER, 1_000)]), {"usd": 700})  # (connects, names the counter)
        before = len(redis_py_calls)
        for _ in range(5):
            outcome = store.commit(store.reserve([Hold(COUNTER, 1_000)]), {"usd": 700})
        assert outcome.spent == (6 * 700,)
        assert len(redis_py_calls) == before  # 10 script calls, none through redis-py's connection methods


def test_health_checks_keep_redis_pys_own_path(
    redis_url: str, namespace: str, redis_py_calls: list[str]
) -> None:
    with open_ledger(f"{redis_url}?namespace={namespace}&health_check_interval=30") as store:
        store.commit(store.reserve([Hold(COUNTER, 1_000)]), {"usd": 700})
        before = len(redis_py_calls)
        for _ in range(5):
            outcome = store.commit(store.reserve([Hold(COUNTER, 1_000)]), {"usd": 700})
        assert outcome.spent == (6 * 700,)
        calls = redis_py_calls[before:]
        assert calls.count("send_packed_command") == calls.count("read_response") == 10  # (its checks)


class _LoadingOnce:
    """A TCP front of a Redis server whose first connection answers its first script call with
    ``-LOADING`` (as a server still loading its data does) and closes; later connections are relayed."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.loading_sent = 0
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._relay, args=(a, b, a is client), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _relay(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client and b"EVALSHA" in data and not self.loading_sent:
                    self.loading_sent += 1
                    source.sendall(b"-LOADING Redis is loading the dataset in memory\r\n")
                    continue
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()


def test_a_loading_reply_is_a_connection_error_and_retried(redis_url: str, namespace: str) -> None:
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    front = _LoadingOnce(parts.hostname, parts.port)
    try:
        url = f"redis://127.0.0.1:{front.port}/{parts.path.lstrip('/') or '0'}?namespace={namespace}"
        assert _pairs(url, 2) == [700, 1_400]  # the first call retried: held and charged once
    finally:
        front.close()
    assert front.loading_sent == 1


def test_a_reader_whose_no_reply_yet_is_not_the_known_one_keeps_redis_pys_path(
    redis_url: str, namespace: str, redis_py_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if redis-py renamed or replaced its parser's "not enough data" sentinel: the reader's answer
    # before a reply is whole is no longer the one ``round_trip`` waits on (read straight, it would
    # pass that answer on as the script's reply)
    monkeypatch.setattr(deadline_module, "_EMPTY", object())
    assert _pairs(f"{redis_url}?namespace={namespace}", 3) == [700, 1_400, 2_100]
    calls = redis_py_calls
    assert calls.count("send_packed_command") >= 6 and calls.count("read_response") >= 6


@pytest.mark.parametrize("name", ["_PARSER", "_READER", "_BUFFER", "_PUSH", "_HOST_ERROR"])
def test_a_redis_py_internal_gone_keeps_redis_pys_path(
    redis_url: str, namespace: str, redis_py_calls: list[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # as if redis-py renamed the private attribute: ``round_trip`` finds it missing at its first call
    # on a connection and goes on through redis-py's own methods, not an AttributeError mid-call
    monkeypatch.setattr(deadline_module, name, getattr(deadline_module, name) + "_renamed")
    import hiredis

    if name == "_PUSH" and not hasattr(hiredis, "PushNotification"):
        pytest.skip("hiredis before 3.2 makes no push objects: redis-py's parser has no push type to find")
    assert _pairs(f"{redis_url}?namespace={namespace}", 3) == [700, 1_400, 2_100]
    calls = redis_py_calls
    assert calls.count("send_packed_command") >= 6 and calls.count("read_response") >= 6


class _PushFirst(_LoadingOnce):
    """A TCP front of a Redis server that puts a RESP3 push (an ``invalidate``, as client-side caching
    or a maintenance notice may send unasked) before the reply to each script call; all else relayed."""

    PUSH = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n"

    def _relay(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client and b"EVALSHA" in data:
                    self.loading_sent += 1  # (here: script calls that a push will come before)
                elif not from_client and self.loading_sent:
                    self.loading_sent -= 1
                    data = self.PUSH + data
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_a_push_before_a_reply_goes_to_redis_pys_handler_and_the_reply_is_read(
    redis_url: str, namespace: str, redis_py_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hiredis
    from redis._parsers import hiredis as parser_module

    if not hasattr(hiredis, "PushNotification"):
        pytest.skip("hiredis before 3.2 makes no push objects (redis-py 5 reads a push as the reply)")
    handled: list[Any] = []
    handle = parser_module._HiredisParser.handle_push_response

    def counted(self: Any, response: Any, **kwargs: Any) -> Any:
        handled.append(response)
        return handle(self, response, **kwargs)

    monkeypatch.setattr(parser_module._HiredisParser, "handle_push_response", counted)
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    front = _PushFirst(parts.hostname, parts.port)
    url = f"redis://127.0.0.1:{front.port}/{parts.path.lstrip('/') or '0'}?protocol=3&namespace={namespace}"
    try:
        with open_ledger(url) as store:
            store.commit(store.reserve([Hold(COUNTER, 1_000)]), {"usd": 700})  # (connects, loads)
            before, pushes = len(redis_py_calls), len(handled)
            for _ in range(3):
                outcome = store.commit(store.reserve([Hold(COUNTER, 1_000)]), {"usd": 700})
            assert outcome.spent == (4 * 700,)
            assert len(redis_py_calls) == before  # read by round_trip, not redis-py's methods
            assert [push[0] for push in handled[pushes:]] == ["invalidate"] * 6  # one before each reply
    finally:
        front.close()

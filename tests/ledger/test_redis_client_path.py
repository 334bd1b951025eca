"""The Redis store's client path as a review of its micro-optimisations checked it: results built by
``_frozen.fast_new`` are the objects the classes build, a commit's id is checked unless it is the very
string the latest reserve checked, packing stays right while its cache starts again inside one call or
under threads, and a round trip waits what the connection's timeout says now."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, _redis_pack, open_ledger
from budgetguard._ledger import _deadline as deadline_module
from budgetguard._ledger._redis import RedisLedger
from budgetguard._ledger._redis_pack import Packer
from budgetguard._ledger._redis_wire import Call
from budgetguard._ledger._types import HeldCounter, Outcome, Reservation
from tests.redis_server import delete_namespace

from .test_redis_packing import SHAS, _alone
from .test_redis_round_trip import _LoadingOnce

COUNTERS = (
    CounterSpec(Scope("user", "cp"), Unit.USD, Period.DAY, 10**12),
    CounterSpec(Scope("team", "cp"), Unit.TOKENS, Period.DAY, 10**12),
)


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisLedger]:
    namespace = "c" + secrets.token_hex(6)
    ledger = open_ledger(f"{redis_url}?namespace={namespace}")
    assert isinstance(ledger, RedisLedger)
    try:
        yield ledger
    finally:
        ledger.close()
        delete_namespace(redis_url, namespace)


def _rebuilt(obj: object) -> object:
    """``obj`` as its class builds it from its fields."""
    cls = type(obj)
    return cls(*(getattr(obj, f.name) for f in dataclasses.fields(cls)))  # type: ignore[arg-type]


@pytest.mark.parametrize("holds", [1, 2])
def test_a_reserve_and_commit_return_the_objects_their_classes_build(store: RedisLedger, holds: int) -> None:
    reservation = store.reserve([Hold(c, 5) for c in COUNTERS[:holds]], id=f"same-{holds}")
    outcome = store.commit(reservation, {c.unit: 3 for c in COUNTERS[:holds]})
    for made in (reservation, reservation.held[0], outcome):
        assert type(made) in (Reservation, HeldCounter, Outcome)
        again = _rebuilt(made)
        assert made == again and repr(made) == repr(again)
        assert pickle.dumps(made) == pickle.dumps(again)
        assert pickle.loads(pickle.dumps(made)) == made
        assert dataclasses.replace(made) == made
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, dataclasses.fields(made)[0].name, "x")  # type: ignore[arg-type]
    assert hash(reservation) == hash(_rebuilt(reservation))


def test_a_commit_checks_every_id_but_the_very_one_the_latest_reserve_checked(store: RedisLedger) -> None:
    reservation = store.reserve([Hold(COUNTERS[0], 5)], id="checked-id")
    for bad in ("bad id!", "", "x" * 129, 7):
        forged = dataclasses.replace(reservation, id=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="must be 1-128 characters"):
            store.commit(forged, {"usd": 1})
        with pytest.raises(ValueError, match="must be 1-128 characters"):
            store.release(bad)  # type: ignore[arg-type]
    # the same text in another str object, or unpickled: checked, and resolved as the same reservation
    copy = pickle.loads(pickle.dumps(reservation))
    assert store.commit(copy, {"usd": 2}).state == "committed"
    assert store.commit(reservation, {"usd": 2}).duplicate


def test_another_threads_reserve_between_a_reserve_and_its_commit(store: RedisLedger) -> None:
    mine = store.reserve([Hold(COUNTERS[0], 5)])
    other = threading.Thread(target=lambda: store.reserve([Hold(COUNTERS[0], 5)], id="other-thread"))
    other.start()
    other.join()
    assert store.commit(mine, {"usd": 4}).charged == {Unit.USD: 4}
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        store.commit(dataclasses.replace(mine, id="not ok"), {"usd": 1})


def test_the_packers_cache_starting_again_inside_one_call_keeps_every_items_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_redis_pack, "KNOWN", 3)
    pack = Packer(SHAS)
    call = Call("reserve", tuple(f"k{i % 5}" for i in range(17)), (*range(9), "a", 1, True, "a", 0))
    for _ in range(3):
        assert pack.wire([pack(call)]) == (_alone(call), 0)
        assert len(pack._known) <= 3
    monkeypatch.setattr(_redis_pack, "KNOWN", 4096)
    wide = Call("status", tuple(f"key:{i}" for i in range(5000)), tuple(range(5000)))
    assert pack.wire([pack(wide)]) == (_alone(wide), 0)
    assert len(pack._known) <= 4096


def test_threads_sharing_a_packer_get_their_own_calls_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_redis_pack, "KNOWN", 7)  # (starting again all the time)
    pack = Packer(SHAS)
    wrong: list[Call] = []

    def run(n: int) -> None:
        for i in range(300):
            call = Call("commit", (f"t{n}:{i % 11}", "j"), (f"id-{n}-{i}", i, n, "{}"))
            if pack.wire([pack(call)]) != (_alone(call), 0):
                wrong.append(call)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_a_round_trip_waits_what_the_connections_timeout_says_now(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    conn = deadline_module.Connection(host=parts.hostname, port=parts.port, socket_timeout=5)
    ping = b"*1\r\n$4\r\nPING\r\n"
    try:
        conn.connect()
        assert conn.round_trip(ping) in ("PONG", b"PONG")
        sock = conn._sock
        assert sock is not None and sock.gettimeout() == 5
        conn.socket_timeout = 3.25  # (redis-py's maintenance notifications relax it so)
        conn.round_trip(ping)
        assert sock.gettimeout() == 3.25
        token = deadline_module.DEADLINE.set(time.monotonic() + 1)
        try:
            conn.round_trip(ping)
            assert sock.gettimeout() is not None and sock.gettimeout() <= 1
        finally:
            deadline_module.DEADLINE.reset(token)
        conn.round_trip(ping)
        assert sock.gettimeout() == 3.25
        token = deadline_module.DEADLINE.set(time.monotonic() - 1)
        try:
            with pytest.raises(deadline_module.DeadlineExceeded):
                conn.round_trip(ping)
            assert conn._sock is None  # dropped: a reply may be on its way
        finally:
            deadline_module.DEADLINE.reset(token)
    finally:
        conn.disconnect()


@pytest.mark.parametrize("reserved", ["nothing", "shadowed"])
def test_a_reservation_without_an_id_gets_the_clear_error_before_any_reserve(
    store: RedisLedger, redis_url: str, reserved: str
) -> None:
    """A store that has returned no plain reservation yet (new, or only ones admitted in shadow past a
    limit) keeps no id to skip the check for: ``None`` (e.g. a reservation rebuilt from JSON's null) is
    no such id."""
    other = open_ledger(f"{redis_url}?namespace={store.namespace}")
    try:
        made = other.reserve([Hold(COUNTERS[0], 5)])
    finally:
        other.close()
    if reserved == "shadowed":
        tight = CounterSpec(Scope("user", "tight"), Unit.USD, Period.DAY, 1)
        assert store.reserve([Hold(tight, 5)], enforce="shadow").shadowed is not None
    nameless = dataclasses.replace(made, id=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        store.commit(nameless, {"usd": 1})
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        store.release(nameless)


@pytest.mark.parametrize(
    "where", ["AbstractConnection", "Connection", "SSLConnection", "UnixDomainSocketConnection"]
)
def test_a_timeout_property_that_does_more_than_return_its_field_is_read_as_a_property(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The round trip reads redis-py's ``_socket_timeout`` directly only where every connection class
    it is mixed into gets ``socket_timeout`` from a property that just returns that field."""
    import redis.connection

    scaled = property(lambda self: self._socket_timeout * 2)  # (reads only that field, returns another value)
    monkeypatch.setattr(getattr(redis.connection, where), "socket_timeout", scaled, raising=False)
    assert deadline_module._timeout_attribute() == "socket_timeout"


class _PushThenWait(_LoadingOnce):
    """A TCP front that puts a push before the reply to each ``PING`` and sends the reply only once the
    client has handled the push (``handled``): the reply then needs a read of its own."""

    PUSH = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n"

    def __init__(self, host: str, port: int) -> None:
        self.handled = threading.Event()
        self.pings = 0
        super().__init__(host, port)

    def _relay(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client and b"PING" in data:
                    self.pings += 1
                elif not from_client and self.pings:
                    self.pings -= 1
                    self.handled.clear()
                    sink.sendall(self.PUSH)
                    self.handled.wait(10)
                sink.sendall(data)


def test_a_timeout_a_push_handler_changes_bounds_the_rest_of_that_round_trip(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's maintenance notices relax a connection's timeout from the push handler, mid-read: the
    reads after it wait what the timeout is now (with a deadline set: the relaxed one, if sooner)."""
    import hiredis
    from redis._parsers import hiredis as parser_module

    if not hasattr(hiredis, "PushNotification"):
        pytest.skip("hiredis before 3.2 makes no push objects")
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    front = _PushThenWait(parts.hostname, parts.port)
    conn = deadline_module.Connection(host="127.0.0.1", port=front.port, socket_timeout=5, protocol=3)
    handle = parser_module._HiredisParser.handle_push_response

    def relaxing(self: Any, response: Any, **kwargs: Any) -> Any:
        conn.socket_timeout = 20  # (as redis-py's set_tmp_settings does on a maintenance notice)
        front.handled.set()
        return handle(self, response, **kwargs)

    monkeypatch.setattr(parser_module._HiredisParser, "handle_push_response", relaxing)
    token = deadline_module.DEADLINE.set(time.monotonic() + 3600)
    try:
        conn.connect()
        assert conn.round_trip(b"*1\r\n$4\r\nPING\r\n") in ("PONG", b"PONG")
        assert conn._fit is not None and conn._fit[1] is not None  # (round_trip's own path)
        assert conn._sock is not None and conn._sock.gettimeout() == 20
    finally:
        deadline_module.DEADLINE.reset(token)
        conn.disconnect()
        front.close()

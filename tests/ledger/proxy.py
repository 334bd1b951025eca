"""A TCP proxy between redis-py and a test Redis server that can lose one reply on purpose.

``LossyProxy(host, port).drop_next_reply(trigger)`` arms it: the next client request that contains
``trigger`` (e.g. the SHA1 of one Lua script) is forwarded to the server as usual, but when the
server's reply comes back the proxy closes the client's connection instead of forwarding it. The
server has executed the command; the client sees "connection closed" and never learns the result -
the "lost reply" a redis-py retry must survive without charging twice.

A ``-NOSCRIPT`` error reply does not count (redis-py answers it with SCRIPT LOAD and a second
EVALSHA, which is the request whose reply is then dropped).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

__all__ = ["LossyProxy", "SilentServer"]


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.drop_reply: bytes | None = None
        """The trigger of the request whose reply is to be dropped."""
        self.closed = False
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class LossyProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._trigger: bytes | None = None
        self._stop = threading.Event()
        self._pairs: list[_Pair] = []
        self._threads: list[threading.Thread] = []
        self.dropped = 0
        """How many replies were dropped so far."""
        self.connections = 0
        """How many client connections were accepted so far."""
        self._acceptor = threading.Thread(target=self._accept_loop, name="lossy-proxy-accept", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_next_reply(self, trigger: bytes) -> None:
        with self._lock:
            self._trigger = trigger

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._trigger is not None

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
            for target, name in ((self._requests, "requests"), (self._replies, "replies")):
                thread = threading.Thread(
                    target=target, args=(pair,), name=f"lossy-proxy-{name}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _requests(self, pair: _Pair) -> None:
        """client -> server, chunk by chunk, while ``_on_request`` lets each one through."""
        self._pump(pair, pair.client, pair.upstream, self._on_request)

    def _replies(self, pair: _Pair) -> None:
        """server -> client, chunk by chunk, while ``_on_reply`` lets each one through."""
        self._pump(pair, pair.upstream, pair.client, self._on_reply)

    @staticmethod
    def _pump(
        pair: _Pair, src: socket.socket, dst: socket.socket, allow: Callable[[_Pair, bytes], bool]
    ) -> None:
        try:
            while data := src.recv(65536):
                if not allow(pair, data):
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            pair.close()

    def _on_request(self, pair: _Pair, data: bytes) -> bool:
        """Arms the pair when a request carries the trigger."""
        with self._lock:
            if self._trigger is not None and self._trigger in data:
                pair.drop_reply = self._trigger
                self._trigger = None
        return True

    def _on_reply(self, pair: _Pair, data: bytes) -> bool:
        """Drops the reply to an armed request by closing the client's socket."""
        if pair.drop_reply is None:
            return True
        with self._lock:
            if data.startswith(b"-NOSCRIPT"):  # not executed: re-arm for redis-py's EVALSHA after SCRIPT LOAD
                self._trigger = pair.drop_reply
                pair.drop_reply = None
                return True
            self.dropped += 1
        return False

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def __enter__(self) -> LossyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentServer:
    """A TCP server that accepts connections and never answers: a hung (or SIGSTOPped) Redis."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._accepted.append(conn)  # kept open, never read from nor written to

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._accepted:
            conn.close()
        self._listener.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

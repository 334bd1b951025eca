"""A TCP proxy between redis-py and a test Redis server that misbehaves at random, on purpose.

For each chunk a client sends, with probability ``reset`` the proxy closes both sockets instead of
forwarding it (the server never sees the request). For each chunk the server sends back, with
probability ``drop`` the proxy closes the client's socket instead of forwarding it (the server executed
the command, the client never learns the result: a lost reply), and with probability ``delay`` it holds
the chunk for ``delay_s`` seconds first. Counts of each fault are kept for the figures.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections import Counter

__all__ = ["ChaosProxy"]


class ChaosProxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        drop: float = 0.0,
        reset: float = 0.0,
        delay: float = 0.0,
        delay_s: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.upstream = upstream
        self.drop, self.reset, self.delay, self.delay_s = drop, reset, delay, delay_s
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="chaos-accept", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def calm(self) -> None:
        """Stop injecting faults (to read the final state through the same proxy)."""
        self.drop = self.reset = self.delay = 0.0

    def _roll(self, p: float) -> bool:
        with self._lock:
            return p > 0 and self._rng.random() < p

    def _count(self, fault: str) -> None:
        with self._lock:
            self.faults[fault] += 1

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for args in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if requests and self._roll(self.reset):
                    self._count("connection resets before the request reached Redis")
                    break
                if not requests and self._roll(self.drop):
                    self._count("replies dropped after Redis executed the command")
                    break
                if not requests and self._roll(self.delay):
                    self._count("replies delayed")
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

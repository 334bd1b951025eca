"""Private PostgreSQL servers for the test suite.

``BUDGETGUARD_TEST_POSTGRES_URL`` points the tests at an existing server; they then work only inside
a schema of their own (``private_schema``), which they drop at the end, and touch nothing else.
Without it, the tests start a private server on a free loopback port, in a temporary directory:
``initdb`` and ``postgres`` from PATH or from Debian's ``/usr/lib/postgresql/<version>/bin``, else the
binaries of the ``pgserver`` wheel. The server runs with ``fsync`` and ``synchronous_commit`` on (the
defaults): a commit it acknowledged is on disk. As root (CI), the server runs as the ``postgres`` user
(or ``nobody``): PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.redis_server import free_port

ENV = "BUDGETGUARD_TEST_POSTGRES_URL"


def bindir() -> Path:
    """The directory of ``initdb`` and ``postgres``."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "postgres").exists():
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            f"no PostgreSQL for the tests: set {ENV}, install PostgreSQL (Debian: apt-get install "
            "postgresql; initdb on PATH), or pip install pgserver"
        ) from None
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _account() -> tuple[int, int] | None:
    """The (uid, gid) the server runs as: ours, unless we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root, and no postgres or nobody user to run PostgreSQL as")


@dataclass
class PostgresServer:
    """A postgres process owned by the tests (its data directory made by ``initdb`` on first start)."""

    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bg-postgres-")))
    settings: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as(self) -> dict[str, int]:
        account = _account()
        return {} if account is None else {"user": account[0], "group": account[1]}

    def start(self, timeout: float = 60.0) -> PostgresServer:
        data = self.workdir / "data"
        account = _account()
        if account is not None:
            os.chown(self.workdir, *account)
        if not data.exists():
            subprocess.run(
                [str(bindir() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--locale=C", "--no-sync"],
                check=True, capture_output=True, cwd=self.workdir, **self._run_as(),  # type: ignore[call-overload]
            )  # fmt: skip
        args = [
            str(bindir() / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.workdir),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on",
            "-c", "max_connections=200", "-c", "shared_buffers=32MB", *self.settings,
        ]  # fmt: skip
        with open(self.workdir / "server.log", "ab") as log:
            self.process = subprocess.Popen(  # its own session: kill() reaches every server process
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
                **self._run_as(),  # type: ignore[call-overload]
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=1).close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"postgres did not start: {(self.workdir / 'server.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 of every server process at once (the postmaster and its backends): a crash."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: open transactions rolled back, everything committed kept)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def libpq_url(url: str) -> str:
    """A store's URL without budgetguard's options (what libpq takes)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("namespace", "journal_retention_days")]
    return parts._replace(query=urlencode(query)).geturl()


def configured_url() -> str | None:
    return os.environ.get(ENV) or None


def with_options(url: str, **options: str) -> str:
    """``url`` with query options added."""
    from urllib.parse import urlencode

    return f"{url}{'&' if '?' in url else '?'}{urlencode(options)}"


@contextlib.contextmanager
def private_schema(url: str) -> Iterator[str]:
    """A schema of our own on a server we did not start (``ENV``): the URL whose tables live there;
    the schema is dropped afterwards, with everything the tests made in it (and nothing else)."""
    name = "budgetguard_test_" + secrets.token_hex(6)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield with_options(url, options=f"-csearch_path={name}")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def delete_namespace(url: str, namespace: str) -> None:
    """Delete the rows of one test namespace, and nothing else."""
    from budgetguard._ledger._postgres_tx import COUNTERS, JOURNAL, LEASES, LIMITS, META, RESERVATIONS

    with psycopg.connect(libpq_url(url), autocommit=True) as conn, conn.transaction():
        for table in (COUNTERS, LEASES, RESERVATIONS, LIMITS, JOURNAL, META):
            with contextlib.suppress(psycopg.errors.UndefinedTable), conn.transaction():
                conn.execute(f"DELETE FROM {table} WHERE ns = %s", (namespace,))


def age(url: str, namespace: str, ms: int) -> None:
    """Make every journal entry of a test namespace ``ms`` older (a test of retention: the store's clock
    is the server's, which a test cannot set)."""
    from budgetguard._ledger._postgres_tx import JOURNAL

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f"UPDATE {JOURNAL} SET ts = ts - %s WHERE ns = %s", (ms, namespace))

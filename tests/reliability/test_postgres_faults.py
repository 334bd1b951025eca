"""PostgreSQL: a connection cut in the middle of a transaction, and a reply lost after the server
committed, charge nothing twice (the store runs the operation again on a fresh connection, and every
operation is idempotent by reservation id); a server that is down is a ``LedgerError``.

The cuts are made by a TCP proxy between psycopg and the tests' private server (``LossyProxy``: the
connection is closed instead of the server's reply to the request that carries a trigger).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from budgetguard import LedgerError
from budgetguard._budgets import Unit
from budgetguard._ledger import Hold, open_ledger
from tests import postgres_server
from tests.ledger.helpers import counter
from tests.ledger.proxy import LossyProxy
from tests.postgres_server import with_options

from . import figures

SPEC = counter("user:cut", limit=1000)
GLOBAL = counter("global", limit=5000)


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[LossyProxy, str]]:
    """A proxy to the tests' server, and a store URL (a namespace of its own) through it."""
    parts = urlsplit(postgres_url)
    ns = "f" + secrets.token_hex(6)
    with LossyProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}")).geturl()
        yield proxy, with_options(url, namespace=ns)
    postgres_server.delete_namespace(postgres_url, ns)


@pytest.mark.parametrize(
    "trigger",
    [b"INSERT INTO budgetguard_journal", b"INSERT INTO budgetguard_reservations", b"COMMIT"],
    ids=["cut mid-transaction (journal)", "cut mid-transaction (record)", "reply to COMMIT lost"],
)
def test_a_cut_connection_charges_once(proxied: tuple[LossyProxy, str], trigger: bytes) -> None:
    proxy, url = proxied
    cuts_reserve = b"journal" not in trigger  # (an admitted reserve journals nothing)
    with open_ledger(url) as ledger:
        proxy.drop_next_reply(trigger)
        res = ledger.reserve([Hold(SPEC, 100), Hold(GLOBAL, 100)], id="cut-1")
        assert proxy.dropped == int(cuts_reserve)
        proxy.drop_next_reply(trigger)
        out = ledger.commit(res, {Unit.USD: 60})
        assert proxy.dropped == 1 + int(cuts_reserve)
        assert out.charged == {Unit.USD: 60}
        # the same calls repeated by a caller that saw an error: first outcomes, nothing more
        again = ledger.commit("cut-1", {Unit.USD: 60})
        assert again.duplicate and again.charged == {Unit.USD: 60}
        assert ledger.reserve([Hold(SPEC, 100), Hold(GLOBAL, 100)], id="cut-1").duplicate
        found = ledger.status([SPEC, GLOBAL])
        assert [(s.spent, s.held) for s in found] == [(60, 0), (60, 0)]
        assert [e.event for e in ledger.history()] == ["committed"]
    name = trigger.decode().replace("INSERT INTO budgetguard_", "insert into ")
    figures.record("postgres_faults", f"connections cut at the reply to {name}", proxy.dropped)
    figures.record("postgres_faults", f"nano-USD charged twice after a cut at {name}", found[0].spent - 60)


def test_a_fresh_id_whose_commit_reply_was_lost_is_held_once(proxied: tuple[LossyProxy, str]) -> None:
    """A reserve without an id (drawn by the store) whose COMMIT reply was lost: run again, it finds the
    first write instead of holding twice."""
    proxy, url = proxied
    with open_ledger(url) as ledger:
        proxy.drop_next_reply(b"COMMIT")
        res = ledger.reserve([Hold(SPEC, 100)])
        assert proxy.dropped == 1
        assert res.duplicate  # (the second run found the first)
        held = ledger.status([SPEC])[0].held
        assert held == 100
    figures.record(
        "postgres_faults", "nano-USD held twice by a drawn id whose COMMIT reply was lost", held - 100
    )


class _AlwaysCut(LossyProxy):
    """Cuts every connection whose request carries ``cut`` (while it is set)."""

    cut: bytes | None = None

    def _on_request(self, pair: Any, data: bytes) -> bool:
        if self.cut is not None and self.cut in data:
            pair.drop_reply = self.cut
        return True


def test_cuts_on_every_try_end_in_a_ledger_error_and_change_nothing(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    ns = "f" + secrets.token_hex(6)
    with _AlwaysCut(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}")).geturl()
        with open_ledger(with_options(url, namespace=ns)) as ledger:
            res = ledger.reserve([Hold(SPEC, 100)], id="cut-every")
            proxy.cut = b"INSERT INTO budgetguard_journal"  # (each run of the commit is cut)
            with pytest.raises(LedgerError, match="PostgreSQL ledger operation failed"):
                ledger.commit(res, {Unit.USD: 10})
            assert proxy.dropped == 3  # (the first run and its two retries)
            proxy.cut = None
            cut_runs, landed = proxy.dropped, ledger.status([SPEC])[0].spent
            assert landed == 0  # (nothing of the cut transactions landed)
            assert ledger.commit(res, {Unit.USD: 10}).charged == {Unit.USD: 10}
            assert ledger.status([SPEC])[0].spent == 10
    figures.record("postgres_faults", "runs of one commit cut before it gave up (LedgerError)", cut_runs)
    figures.record("postgres_faults", "nano-USD of those cut runs that landed", landed)
    postgres_server.delete_namespace(postgres_url, ns)


def test_a_server_that_went_down_is_a_ledger_error(postgres_url: str) -> None:
    proxy_ns = "f" + secrets.token_hex(6)
    parts = urlsplit(postgres_url)
    proxy = LossyProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    url = parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}")).geturl()
    ledger = open_ledger(with_options(url, namespace=proxy_ns, connect_timeout="1"))
    try:
        ledger.reserve([Hold(SPEC, 1)])
        proxy.close()  # (every connection cut, and no new one accepted)
        with pytest.raises(LedgerError, match="PostgreSQL ledger"):
            ledger.reserve([Hold(SPEC, 1)])
    finally:
        ledger.close()
        postgres_server.delete_namespace(postgres_url, proxy_ns)

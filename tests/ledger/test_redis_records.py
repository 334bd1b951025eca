"""What a Redis reservation leaves behind: a compact record and journal entry, and state written by the
previous version (hash records, long journal entries) still read and resolved the same."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
import redis

from budgetguard import BudgetExceededError
from budgetguard._ledger import Hold, open_ledger
from budgetguard._ledger._redis import RedisLedger
from tests.redis_server import delete_namespace

from .helpers import counter


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisLedger]:
    name = "t" + secrets.token_hex(6)
    with open_ledger(f"{redis_url}?namespace={name}") as ledger:
        assert isinstance(ledger, RedisLedger)
        yield ledger
    delete_namespace(redis_url, name)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _to_legacy(raw: redis.Redis, key: str) -> None:
    """Rewrite a record as the previous version stored it: a hash (see lua/_lib.lua's layouts)."""
    text = raw.get(key)
    assert isinstance(text, str)
    head, middle, holds = text.split("\n", 2)
    code, *fields = head.split(" ")
    if code == "x":
        idx, limit, spent, held, requested, wend = fields
        mapping = {"state": "refused", "idx": idx, "limit": limit, "spent": spent, "held": held,
                   "requested": requested, "wend": wend, "holds": holds}  # fmt: skip
    elif code == "h":
        created, expires, lims, amts = fields
        mapping = {"state": "held", "created": created, "expires": expires, "lims": lims, "amts": amts,
                   "held": holds, "meta": middle, "n": str(len(amts.split(",")))}  # fmt: skip
    else:
        created, expires, lims, flags, spent = fields
        mapping = {"state": {"c": "committed", "r": "released"}[code], "created": created, "expires": expires,
                   "lims": lims, "held": holds, "charged": middle, "overrun": flags[0], "expired": flags[1],
                   "spent": spent}  # fmt: skip
    ttl = raw.pttl(key)
    raw.delete(key)
    raw.hset(key, mapping=mapping)
    raw.pexpire(key, ttl)


def test_a_record_is_one_compact_string(store: RedisLedger, raw: redis.Redis) -> None:
    spec = counter(limit=10**9)
    res = store.reserve([Hold(spec, 1000)], meta={"model": "gpt-4o"})
    key = store._flows.keys.record(res.id)
    assert raw.type(key) == "string"
    store.commit(res, {"usd": 900})
    # the previous hash took the hashtable encoding (its held JSON is over 64 bytes): ~1 KB
    assert raw.memory_usage(key, samples=0) < 400
    [entry] = raw.xrange(store._flows.keys.journal)
    assert sorted(entry[1]) == ["amounts", "data", "event", "id", "scopes", "ts"]
    assert (entry[1]["event"], json.loads(entry[1]["data"])) == ("c", {"model": "gpt-4o"})


def test_records_of_the_previous_version_resolve_once(store: RedisLedger, raw: redis.Redis) -> None:
    user, glob = counter(limit=10_000), counter("global", limit=10**6)
    keys = store._flows.keys
    held = store.reserve([Hold(user, 500), Hold(glob, 500)], id="old-held", meta={"a": 1})
    _to_legacy(raw, keys.record("old-held"))
    again = store.reserve([Hold(user, 1), Hold(glob, 1)], id="old-held")  # a repeat: the first holds
    assert (again.duplicate, again.held, again.expires_at) == (True, held.held, held.expires_at)
    out = store.commit("old-held", {"usd": 300}, meta={"b": 2})  # by id: the holds from the hash
    assert (out.duplicate, out.charged, out.spent) == (False, {user.unit: 300}, (300, 300))
    assert raw.type(keys.record("old-held")) == "string"  # rewritten in the new form
    assert store.commit("old-held", {"usd": 300}).duplicate

    done = store.reserve([Hold(user, 100)], id="old-done")
    store.commit(done, {"usd": 150})
    _to_legacy(raw, keys.record("old-done"))
    repeat = store.commit("old-done", {"usd": 1})
    assert (repeat.duplicate, repeat.charged, repeat.overrun, repeat.spent) == (
        True,
        {user.unit: 150},
        True,
        (450,),
    )
    assert store.reserve([Hold(user, 100)], id="old-done").held == done.held

    store.set_limit(user, 500)
    with pytest.raises(BudgetExceededError):
        store.reserve([Hold(user, 100)], id="old-refused")
    _to_legacy(raw, keys.record("old-refused"))
    with pytest.raises(BudgetExceededError) as info:
        store.reserve([Hold(user, 1)], id="old-refused")
    assert info.value.requested * 10**9 == 100
    [status] = store.status([user])
    assert (status.spent, status.held) == (450, 0)
    committed = [e for e in store.history(events=["committed"]) if e.reservation_id == "old-held"]
    assert [e.data for e in committed] == [{"a": 1, "b": 2}]  # the reserve's meta, then the commit's


def test_journal_entries_of_the_previous_version_read_the_same(store: RedisLedger, raw: redis.Redis) -> None:
    raw.xadd(store._flows.keys.journal, {
        "ts": 1_700_000_000_000, "event": "committed", "id": "old", "scopes": '["user:alice"]',
        "amounts": '{"usd":5}', "rdata": '{"model":"m","x":1}', "data": '{"x":2}',
        "flags": '{"overrun":true,"expired":false}',
    })  # fmt: skip
    [entry] = store.history()
    assert (entry.event, entry.reservation_id, entry.scopes, entry.amounts) == (
        "committed", "old", ("user:alice",), {"usd": 5})  # fmt: skip
    assert entry.data == {"model": "m", "x": 2, "overrun": True}

"""The guard's compact journal data (``_ledger/_meta.py``): written short on every store, read back as
the dict reports, exports and ``history`` always saw; data in any other form reads as it was written."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import budgetguard as bg
from budgetguard import Budget, Guard
from budgetguard._budgets import Period, Scope, Unit
from budgetguard._ledger import CounterSpec, Hold, _redis_names, open_async_ledger, open_ledger
from budgetguard._ledger._meta import ESTIMATE, MODEL, USAGE, expand, restore, trimmable
from budgetguard._ledger._meta import FUNCTION as FUNCTION_KEY
from budgetguard._ledger._types import JournalData
from budgetguard._money import to_usd
from budgetguard._report import summarize as summary

STORE_KINDS = ("memory", "sqlite", "redis")

RESPONSE = {"usage": {"prompt_tokens": 9, "completion_tokens": 5}}


def summarize(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return RESPONSE


def reply(*, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return {
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    }


HI = [{"role": "user", "content": "Hi"}]
FUNCTION = f"{__name__}.summarize"


@contextlib.contextmanager
def _guard(url: str, budgets: list[Budget]) -> Iterator[Guard]:
    made = Guard(url, budgets=budgets)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def guard(store_url: str) -> Iterator[Guard]:
    with _guard(store_url, [Budget("user", usd="1", per="day")]) as made:
        yield made


def _expected(cost: int, *, scopes: Any) -> dict[str, Any]:
    estimate = bg.estimate({"model": "gpt-4o-mini", "messages": HI, "max_tokens": 50})
    return {
        "model": "gpt-4o-mini",
        "attempt": 1,
        "estimated_usd": str(to_usd(estimate.cost_nano)),
        "scopes": scopes,
        "function": FUNCTION,
        "usage": {"input_tokens": 9, "output_tokens": 5},
        "cost_nano": cost,
    }


def _as_stored(store_url: str, labels: list[str]) -> Any:
    """Lists as the store gives them back: the memory store keeps the guard's tuples."""
    return tuple(labels) if store_url.startswith("memory") else labels


def test_a_guarded_call_reads_back_as_before(guard: Guard, store_url: str) -> None:
    guard.with_budget(user="alice")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
    (entry,) = guard.ledger.history()
    assert entry.event == "committed" and entry.scopes == ("user:alice",)
    cost = entry.amounts["usd"]
    assert cost > 0
    assert entry.data == _expected(cost, scopes=_as_stored(store_url, ["global", "user:alice"]))
    assert entry.amounts == {"usd": cost, "tokens": 14, "requests": 1}
    assert list(entry.amounts) == ["usd", "tokens", "requests"]
    assert entry.model == "gpt-4o-mini"
    (streamed,) = guard.ledger.stream_history()
    assert streamed.data == entry.data


def test_scopes_the_entry_cannot_give_back_are_kept(store_url: str) -> None:
    """A call on two budgeted scopes: a refusal names only the failing one, so the call's scopes are
    journaled; a call on one scope with a second, unbudgeted, kind too."""
    budgets = [Budget("user", usd="1", per="day"), Budget("feature", usd="0.0000001", per="day")]
    with _guard(store_url, budgets) as guard:
        call = guard.with_budget(user="bob", feature="chat")(summarize)
        with pytest.raises(bg.BudgetExceededError):
            call(model="gpt-4o-mini", messages=HI, max_tokens=50)
        (refused,) = guard.ledger.history()
    assert refused.event == "refused" and refused.scopes == ("feature:chat",)
    labels = _as_stored(store_url, ["global", "user:bob", "feature:chat"])
    assert refused.data["scopes"] == labels and refused.data["attempt"] == 1
    assert "usage" not in refused.data and "cost_nano" not in refused.data
    with _guard(store_url, [Budget("user", usd="1", per="day")]) as guard:
        guard.with_budget(user="bob", team="red")(reply)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        entry = guard.ledger.history()[-1]
    assert entry.data["scopes"] == _as_stored(store_url, ["global", "user:bob", "team:red"])
    assert entry.data["usage"] == {"input_tokens": 9, "output_tokens": 5, "reasoning_tokens": 2}
    assert entry.data["function"] == f"{__name__}.reply" and entry.data["cost_nano"] == entry.amounts["usd"]


def test_a_refused_single_scope_call_gets_its_scopes_back(store_url: str) -> None:
    with _guard(store_url, [Budget("user", usd="0.0000001", per="day")]) as guard:
        with pytest.raises(bg.BudgetExceededError):
            guard.with_budget(user="carol")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        (refused,) = guard.ledger.history()
    assert refused.data["scopes"] == _as_stored(store_url, ["global", "user:carol"])
    assert refused.data["model"] == "gpt-4o-mini" and refused.data["attempt"] == 1


LONG = {
    "model": "gpt-4o",
    "attempt": 2,
    "estimated_usd": "0.0012",
    "scopes": ["global", "user:dan"],
    "function": "app.chat",
}
"""Journal data written before the compact form (and by anyone passing meta to a store): read as is."""


def test_data_in_any_other_form_reads_as_written(ledger: Any) -> None:
    counter = CounterSpec(Scope("user", "dan"), Unit.USD, Period.DAY, 10**12)
    odd = {"a": 5, "e": "x", "u": [1, 2], "s": "not scopes", "f": None}  # one-letter keys, no model marker
    hashes = ({"#": 1, "x": "y"}, {"#": [1], "e": 2}, {"#": "1", "e": 2})  # not the interned form
    for meta in (LONG, odd, *hashes):
        reservation = ledger.reserve([Hold(counter, 1000)], meta=meta)
        ledger.commit(reservation, {"usd": 700}, meta={"usage": {"input_tokens": 1}, "cost_nano": 700})
    read = [entry.data for entry in ledger.history()]
    assert read == [{**m, "usage": {"input_tokens": 1}, "cost_nano": 700} for m in (LONG, odd, *hashes)]


def test_a_repeated_commit_tells_what_the_first_charged(ledger: Any) -> None:
    """A guarded commit repeated (the store's retry after a lost reply) answers the first one's
    amounts, all three units, on every store (Redis journaled the first with its USD amount alone)."""
    counter = CounterSpec(Scope("user", "rep"), Unit.USD, Period.DAY, 10**12)
    reservation = ledger.reserve(
        [Hold(counter, 9000)], meta=JournalData({MODEL: "m", ESTIMATE: 5, FUNCTION_KEY: "f"})
    )
    actual = {"usd": 4000, "tokens": 12, "requests": 1}
    first = ledger.commit(reservation, actual, meta=JournalData({USAGE: [7, 5]}))
    again = ledger.commit(reservation, actual, meta=JournalData({USAGE: [7, 5]}))
    assert again.duplicate and not first.duplicate
    assert dict(again.charged) == dict(first.charged) == {Unit.USD: 4000, Unit.TOKENS: 12, Unit.REQUESTS: 1}
    (entry,) = ledger.history()
    assert entry.amounts == actual


def test_sqlite_reports_read_the_compact_form(tmp_path: Any) -> None:
    """The SQLite journal's report columns (``GROUP BY`` in SQL) are computed from the expanded data."""
    with _guard(f"sqlite:///{tmp_path / 'l.db'}", [Budget("user", usd="1", per="day")]) as guard:
        for user in ("erin", "fay"):
            guard.with_budget(user=user)(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        by_function = summary(guard.ledger, "function", since=None)
        by_user = summary(guard.ledger, "user", since=None)
        costs = sum(e.amounts["usd"] for e in guard.ledger.history())
    rows = [(r.key, r.calls, r.input_tokens, r.output_tokens, r.cost_nano) for r in by_function.rows]
    assert rows == [(FUNCTION, 2, 18, 10, costs)]
    assert by_function.rows[0].estimated_nano == 2 * bg.estimate({"model": "gpt-4o-mini", "messages": HI,
                                                                  "max_tokens": 50}).cost_nano  # fmt: skip
    assert sorted(r.key for r in by_user.rows) == ["erin", "fay"]


def test_redis_keeps_the_compact_text(redis_url: str) -> None:
    """On Redis, the model and function are a number of the namespace's names table, and a commit on
    USD alone journals its USD amount only."""
    namespace = "tmeta"
    with _guard(f"{redis_url}?namespace={namespace}", [Budget("user", usd="1", per="day")]) as guard:
        guard.with_budget(user="gil")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ((_, fields),) = client.xrange(f"bg:{{{namespace}}}:journal")
        names = client.hgetall(f"bg:{{{namespace}}}:names")
        for key in client.scan_iter(match=f"bg:{{{namespace}}}:*"):
            client.delete(key)
    finally:
        client.close()
    assert fields["data"] == f'{{"e":{json.loads(fields["data"])["e"]},"#":1,"u":[9,5]}}'
    assert json.loads(fields["amounts"]) == {"usd": json.loads(fields["amounts"])["usd"]}
    name = json.dumps(["gpt-4o-mini", FUNCTION], separators=(",", ":"))
    assert names == {"#": "1", "1": name, f"={name}": "1"}


def test_expand_keeps_what_it_cannot_read() -> None:
    """A corrupt value stays as written; a usage of other counts stays a dict; no usd, no cost."""
    data = {"": None, "e": "0.5", "u": {"input_tokens": 3}, "late": True}
    assert expand(data, ("user:x",), {"tokens": 3}) == {
        "model": None,
        "estimated_usd": "0.5",
        "usage": {"input_tokens": 3},
        "late": True,
        "attempt": 1,
        "scopes": ["global", "user:x"],
    }
    plain = {"model": "m"}
    assert expand(plain, (), {}) is plain


def test_the_store_gets_the_compact_form(store_url: str) -> None:
    """Opened directly, a store of each kind reads what the guard wrote the same way."""
    with _guard(store_url, [Budget("user", usd="1", per="day")]) as guard:
        guard.with_budget(user="hal")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        expected = guard.ledger.history()[0].data
    if store_url.startswith("memory"):
        return  # (its journal lives in the guard's store object)
    with open_ledger(store_url) as other:
        assert other.history()[0].data == expected


# -- Redis: interned call names and trimmed amounts (``_redis_names``, ``_meta.unintern``/``restore``)

HOSTILE = [
    "gpt-4o-mini",
    "\x00\x1b[31mred\x1b[0m\n\r\t\u2028",  # control characters, an ANSI escape, a line separator
    "<script>alert('x')</script> & \"quoted\" \\\\ [bold]markup[/bold] {}",
    "modèle-日本語-🙂",
    "f" * 300,  # longer than LONGEST: journaled as it is
    "",
]


def _pair(
    store: Any, model: Any, function: Any, flags: dict[str, Any], user: str, commit: bool = True,
    extra: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """What the guard sends a store for one call (its ``JournalData``), on ``user``'s USD counter."""
    counter = CounterSpec(Scope("user", user), Unit.USD, Period.DAY, 10**12)
    reserve = {MODEL: model, ESTIMATE: 5000, **({} if function is None else {FUNCTION_KEY: function})}
    reserve.update(extra or {})
    reservation = store.reserve([Hold(counter, 9000)], meta=JournalData(reserve))
    if commit:
        store.commit(reservation, {"usd": 4000, "tokens": 12, "requests": 1},
                     meta=JournalData({**flags, USAGE: [7, 5]}))  # fmt: skip
    else:
        store.release(reservation, meta=JournalData(flags))


def _calls(store: Any) -> None:
    for i, name in enumerate(HOSTILE):
        _pair(store, name, HOSTILE[-1 - i], {}, f"h{i}")
    _pair(store, "gpt-4o", None, {}, "nofunction")  # a call without a function
    _pair(store, "gpt-4o", "app.f", {"error": "boom"}, "rel", commit=False)  # a release: keys past "f"
    _pair(store, "gpt-4o", "app.f", {"a": 1, "usage_missing": True}, "odd")  # resolution keys around "f"
    rare = {"a": 2, "s": ["global", "user:x", "team:y"], "variant": {"service_tier": "flex"},
            "fallback": "gpt-4o-mini", "fitted": "0.5", "missing_scope": ["team"]}  # fmt: skip
    _pair(store, "gpt-4o", "app.f", {"error": "x"}, "rare", extra=rare)  # reservation keys after "f"
    _pair(store, "gpt-4o", None, {}, "rare2", extra=rare)
    for i, meta in enumerate(NOT_INTERNED):
        counter = CounterSpec(Scope("user", f"n{i}"), Unit.USD, Period.DAY, 10**12)
        reservation = store.reserve([Hold(counter, 9000)], meta=JournalData(meta))
        store.commit(
            reservation, {"usd": 4000, "tokens": 12, "requests": 1}, meta=JournalData({USAGE: [7, 5]})
        )


NOT_INTERNED = (
    {"": "m", "e": 2, "f": None},
    {"": "m", "e": True},
    {"": "m", "e": 2, "#": 1},
    {"": ["m"], "e": 2},
)
"""Meta with a model key that is not the guard's form: journaled as it is."""


def _as_json(entries: Any) -> list[str]:
    """Entries as exports write them (key order included)."""
    return [json.dumps([e.event, e.scopes, e.amounts, e.data]) for e in entries]


def test_redis_reads_what_it_read_before(redis_url: str, tmp_path: Any, monkeypatch: Any) -> None:
    """The same calls, hostile names included, read the same entries (as exports write them: key order
    too) from Redis written interned as from Redis written as before (no name interned: its previous
    form), the same dicts as SQLite's, and the same from a store with a cold cache."""
    url = f"{redis_url}?namespace=tnames"
    with open_ledger(f"{redis_url}?namespace=tliteral") as literal:
        with monkeypatch.context() as patched:
            patched.setattr(_redis_names, "LONGEST", 0)
            _calls(literal)
        expected = _as_json(literal.history())
    _drop_url(redis_url, "tliteral")
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as plain, open_ledger(url) as interned:
        _calls(plain)
        _calls(interned)
        assert _as_json(interned.history()) == expected
        assert [(e.amounts, e.data) for e in interned.history()] == [
            (e.amounts, e.data) for e in plain.history()
        ]
    with open_ledger(url) as cold:
        assert _as_json(cold.history()) == expected
        assert [e.data.get("function") for e in cold.history()][:6] == HOSTILE[::-1]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        data = [f["data"] for _, f in client.xrange("bg:{tnames}:journal")]
        names = client.hgetall("bg:{tnames}:names")
        _drop(client, "tnames")
    finally:
        client.close()
    # the two names over LONGEST and NOT_INTERNED stay literal
    assert sum(json.loads(d).get("") is None for d in data) == len(data) - 2 - len(NOT_INTERNED)
    assert int(names["#"]) == len(names) // 2 == 6  # (each distinct name once)


async def test_the_async_store_interns_and_reads_the_same(redis_url: str) -> None:
    url = f"{redis_url}?namespace=tasync"
    with open_ledger(url) as store:
        _calls(store)
        expected = _as_json(store.history())
    async with open_async_ledger(f"{redis_url}?namespace=tasync2") as store:
        for i, name in enumerate(HOSTILE):
            counter = CounterSpec(Scope("user", f"h{i}"), Unit.USD, Period.DAY, 10**12)
            meta = {MODEL: name, ESTIMATE: 5000, FUNCTION_KEY: HOSTILE[-1 - i]}
            reservation = await store.reserve([Hold(counter, 9000)], meta=JournalData(meta))
            await store.commit(reservation, {"usd": 4000, "tokens": 12, "requests": 1},
                               meta=JournalData({USAGE: [7, 5]}))  # fmt: skip
        read = _as_json(await store.history())
    assert read == expected[: len(HOSTILE)]
    async with open_async_ledger(url) as cold:
        assert _as_json(await cold.history()) == expected
    _drop_url(redis_url, "tasync")
    _drop_url(redis_url, "tasync2")


def test_reports_read_the_same_from_interned_entries(redis_url: str, monkeypatch: Any) -> None:
    """Reports by model and function over guarded calls: the same rows from an interned journal as from
    one written as before (no name interned)."""
    rows = []
    for namespace, longest in (("trep1", 0), ("trep2", _redis_names.LONGEST)):
        monkeypatch.setattr(_redis_names, "LONGEST", longest)
        with _guard(f"{redis_url}?namespace={namespace}", [Budget("user", usd="1", per="day")]) as guard:
            for user, fn in (("a", summarize), ("b", summarize), ("a", reply)):
                guard.with_budget(user=user)(fn)(model="gpt-4o-mini", messages=HI, max_tokens=50)
            rows.append([
                [(r.key, r.calls, r.input_tokens, r.output_tokens, r.cost_nano, r.estimated_nano)
                 for r in summary(guard.ledger, by, since=None).rows]
                for by in ("model", "function", "user")
            ])  # fmt: skip
        _drop_url(redis_url, namespace)
    assert rows[0] == rows[1]
    assert {r[0] for r in rows[1][1]} == {FUNCTION, f"{__name__}.reply"}
    assert {r[0] for r in rows[1][0]} == {"gpt-4o-mini"}


def test_a_process_reads_what_another_wrote(redis_url: str) -> None:
    """Another interpreter, which never saw the names, reads the entries as the writer does."""
    url = f"{redis_url}?namespace=tproc"
    with open_ledger(url) as store:
        _calls(store)
        expected = _as_json(store.history())
    code = (
        "import json, sys\n"
        "from budgetguard._ledger import open_ledger\n"
        "with open_ledger(sys.argv[1]) as s:\n"
        "    print(json.dumps([json.dumps([e.event, e.scopes, e.amounts, e.data]) for e in s.history()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == expected
    _drop_url(redis_url, "tproc")


def test_an_older_reader_shows_no_name_and_the_same_money(redis_url: str) -> None:
    """What a reader of the previous version makes of a new entry (its ``journal_entry``: the data
    parsed and ``expand``ed, the amounts as written): no model, no function, no number shown as a
    name; the USD amount exact. Entries of that version read as before."""
    url = f"{redis_url}?namespace=told"
    with _guard(url, [Budget("user", usd="1", per="day")]) as guard:
        guard.with_budget(user="ivy")(summarize)(model="gpt-4o-mini", messages=HI, max_tokens=50)
        (new,) = guard.ledger.history()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ((_, fields),) = client.xrange("bg:{told}:journal")
        old_view = expand(
            json.loads(fields["data"]), json.loads(fields["scopes"]), json.loads(fields["amounts"])
        )
        assert "model" not in old_view and "function" not in old_view and "gpt" not in json.dumps(old_view)
        assert json.loads(fields["amounts"])["usd"] == new.amounts["usd"]
        # an entry as the previous version wrote it: the names literal, the amounts whole
        literal = {"": "gpt-4o-mini", "e": 31200, "f": FUNCTION, "u": [9, 5]}
        client.xadd("bg:{told}:journal", {
            "ts": fields["ts"], "event": "c", "id": "a" * 24, "scopes": fields["scopes"],
            "amounts": json.dumps({"usd": 700, "tokens": 14, "requests": 1}, separators=(",", ":")),
            "data": json.dumps(literal, separators=(",", ":")),
        })  # fmt: skip
        with open_ledger(url) as store:
            _, old = store.history()
        assert old.amounts == {"usd": 700, "tokens": 14, "requests": 1}
        assert old.data == {**new.data, "estimated_usd": str(to_usd(31200)), "cost_nano": 700}
    finally:
        _drop(client, "told")
        client.close()


def test_names_are_bounded_and_survive_a_trimmed_journal(redis_url: str, monkeypatch: Any) -> None:
    """Past CAP names, a name is journaled as it is; trimming the journal keeps the table; a table
    deleted by hand shows no name (never a number or an error) and is written again within REFRESH_S."""
    monkeypatch.setattr(_redis_names, "CAP", 2)
    url = f"{redis_url}?namespace=tcap"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with open_ledger(url) as store:
            for i in range(4):
                _pair(store, f"m{i}", "app.f", {}, f"c{i}")
            assert [e.data["model"] for e in store.history()] == ["m0", "m1", "m2", "m3"]
            data = [f["data"] for _, f in client.xrange("bg:{tcap}:journal")]
            assert ['"#":' in d for d in data] == [True, True, False, False]
            assert client.hlen("bg:{tcap}:names") == 5
            client.xtrim("bg:{tcap}:journal", maxlen=0)
            _pair(store, "m0", "app.f", {}, "again")  # its number, still in the table
            assert [e.data["model"] for e in store.history()] == ["m0"]
            client.delete("bg:{tcap}:names")
            _pair(store, "m1", "app.f", {}, "lost")  # this store still uses m1's number for REFRESH_S
            with open_ledger(url) as cold:
                lost = cold.history()[-1]
            assert lost.data["model"] is None and "function" not in lost.data
            assert lost.amounts == {"usd": 4000, "tokens": 12, "requests": 1}
            monkeypatch.setattr(_redis_names, "REFRESH_S", 0.0)
            _pair(store, "m1", "app.f", {}, "back")
            with open_ledger(url) as cold:
                assert cold.history()[-1].data["model"] == "m1"
    finally:
        _drop(client, "tcap")
        client.close()


def test_restore_gives_back_only_what_was_left_out() -> None:
    assert trimmable({"usd": 1, "tokens": 12, "requests": 1}, [7, 5])
    assert not trimmable({"usd": 1, "tokens": 13, "requests": 1}, [7, 5])
    assert not trimmable({"usd": 1, "tokens": 12, "requests": 2}, [7, 5])
    assert not trimmable({"usd": 1, "tokens": 12, "requests": 1}, {"input_tokens": 7})
    compact = {MODEL: "m", USAGE: [7, 5]}
    assert restore({"usd": 1}, compact) == {"usd": 1, "tokens": 12, "requests": 1}
    for amounts, data in (({"usd": 1}, {"u": [7, 5]}), ({"usd": 1, "tokens": 3}, compact),
                          ({"usd": 1}, {MODEL: "m", USAGE: ["7", "5"]})):  # fmt: skip
        assert restore(amounts, data) is amounts


def _drop(client: Any, namespace: str) -> None:
    for key in client.scan_iter(match=f"bg:{{{namespace}}}:*"):
        client.delete(key)


def _drop_url(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        _drop(client, namespace)
    finally:
        client.close()

"""The Redis batcher's RESP bytes (``_redis_pack.Packer``) against a plain encoder written here."""

from __future__ import annotations

from budgetguard._ledger._redis_pack import KEPT_LENGTH, KNOWN, Packer
from budgetguard._ledger._redis_wire import Call

SHAS = {"reserve": "a" * 40, "commit": "b" * 40, "release": "c" * 40, "batch": "d" * 40, "status": "e" * 40}


def _resp(*parts: str | int | bytes) -> bytes:
    out = b"*%d\r\n" % len(parts)
    for part in parts:
        data = part if isinstance(part, bytes) else str(int(part) if isinstance(part, int) else part).encode()
        out += b"$%d\r\n" % len(data) + data + b"\r\n"
    return out


CALLS = [
    Call("reserve", ("k1", "clé", "x" * 1500), ("id", 60_000, 2**63 - 1, "", "{}", -5, "ü" * 600)),
    Call("commit", ("k",), ("a", 0, True)),
    Call("status", ("s",), (1, "2")),
    Call("release", (), ()),
]


def _alone(call: Call) -> bytes:
    return _resp("EVALSHA", SHAS[call.op], len(call.keys), *call.keys, *call.args)


def test_a_call_alone_is_its_own_evalsha() -> None:
    pack = Packer(SHAS)
    for call in CALLS:
        assert pack.wire([pack(call)]) == (_alone(call), 0)


def test_batchable_calls_at_the_end_go_as_one_batch_call_after_the_others() -> None:
    pack = Packer(SHAS)
    reserve, commit, status, release = CALLS
    keys = [*reserve.keys, *commit.keys, *release.keys]
    args: list[str | int] = []
    for call in (reserve, commit, release):
        args += [f"{call.op} {len(call.keys)} {len(call.args)}", *call.args]
    batch = _resp("EVALSHA", SHAS["batch"], len(keys), *keys, *args)
    assert pack.wire([pack(c) for c in (status, reserve, commit, release)]) == (_alone(status) + batch, 3)
    # one batchable call at the end: each its own command
    assert pack.wire([pack(reserve), pack(status)]) == (_alone(reserve) + _alone(status), 0)
    assert pack.wire([pack(status), pack(reserve)]) == (_alone(status) + _alone(reserve), 0)


class _Name(str):
    """A str subclass: equal to its text, packed as that text."""


def test_items_packed_again_from_what_the_packer_keeps_are_the_same_bytes() -> None:
    """A packer keeps each item's bytes (key names and arguments repeat); items equal across types (1,
    True, 1.0's kin) or a str subclass stay what a plain encoder makes of them, and past ``KNOWN``
    items it starts again."""
    pack = Packer(SHAS)
    mixed = Call("commit", ("k", _Name("k")), (1, True, "1", False, 0, "0", _Name("1"), 2**63 - 1))
    many = [Call("status", (f"key:{i}",), (i, f"{i}")) for i in range(KNOWN + 50)]
    for _ in range(2):  # the second time from what it kept
        for call in [*CALLS, mixed, *many, *CALLS, mixed]:
            assert pack.wire([pack(call)]) == (_alone(call), 0)
    assert 0 < len(pack._known) <= KNOWN


def test_a_long_item_is_packed_each_time_never_kept() -> None:
    """A call's meta JSON has no size cap: a packer keeps short items only, so its memory stays small
    however large and unique the meta (a review measured 55 MB kept with 20 KB metas)."""
    pack = Packer(SHAS)
    for i in range(50):
        call = Call("reserve", ("k",), (f"id-{i}", "m" * (KEPT_LENGTH + 1) + str(i), "s" * 200))
        assert pack.wire([pack(call)]) == (_alone(call), 0)
    assert sum(len(bulk) for bulk in pack._known.values()) < 10 * (KEPT_LENGTH + 10)
    assert "s" * 200 in pack._known

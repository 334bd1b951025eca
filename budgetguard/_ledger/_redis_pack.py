"""The RESP bytes of the Redis store's script calls: one call's ``EVALSHA``, several reserves, commits and
releases as one ``EVALSHA`` of ``lua/batch.lua`` (``_redis_batch`` sends them), the bulk strings of
items that repeat made once."""

from __future__ import annotations

from ._redis_wire import Call

__all__ = ["BATCHED", "KEPT_LENGTH", "KNOWN", "Packed", "Packer"]


BATCHED = frozenset(("reserve", "commit", "release", "reserve_fast", "commit_fast"))
"""The operations ``lua/batch.lua`` runs: several queued ones go as one call."""

Packed = tuple[str, int, int, bytes, bytes]
"""A script call, encoded: op, number of keys, number of args, its keys as RESP bulk strings, its args
as RESP bulk strings (a lone call sends ``EVALSHA`` with both; a batch puts every call's keys first)."""

_CRLF = b"\r\n"
_LENGTHS = tuple(b"$%d\r\n" % n for n in range(1024))
"""A bulk string's header by its length (``bytes % ...`` costs ~1.2k instructions; an index, ~30)."""


KNOWN = 4096
"""Items whose RESP bulk string a ``Packer`` keeps (then it starts again): key names, counters' packed
arguments, JSON that repeats from call to call; an id or a key that holds one is made once and
dropped with the rest. An item whose bulk string is over ``KEPT_LENGTH`` bytes (meta JSON: no cap) is not."""
KEPT_LENGTH = 256


class _Known(dict[str | int, bytes]):
    """Items' RESP bulk strings: a missing one is made (``__missing__``) and kept while it may repeat. A
    call's items are looked up by ``map`` over ``__getitem__``, in C: no Python-level step per item
    (~1k instructions an item, 25 a pair) but for the few made (a new id, its record's key)."""

    __slots__ = ("encoding",)

    def __init__(self, encoding: str) -> None:
        super().__init__()
        self.encoding = encoding

    def __missing__(self, item: str | int) -> bytes:
        bulk = _encoded(item, self.encoding)
        # (not a bool nor a subclass: they may equal another item; a long one, e.g. meta, seldom repeats)
        if type(item) is int or (type(item) is str and len(bulk) <= KEPT_LENGTH):
            if len(self) >= KNOWN:
                self.clear()
            self[item] = bulk
        return bulk


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _encoded(item: str | int, encoding: str) -> bytes:
    """One item as a RESP bulk string (a str subclass as a str, anything else as an integer)."""
    data = item.encode(encoding) if isinstance(item, str) else b"%d" % item
    size = len(data)
    return (_LENGTHS[size] if size < 1024 else b"$%d\r\n" % size) + data + _CRLF


class Packer:
    """The RESP bytes of ``EVALSHA <sha> <numkeys> keys... args...``, the fixed head encoded once; of
    several reserves, commits and releases as one ``EVALSHA`` of the batch script; of its load."""

    def __init__(self, shas: dict[str, str], encoding: str = "utf-8", batch_text: str = "") -> None:
        self._shas = {op: _bulk(b"EVALSHA") + _bulk(sha.encode()) for op, sha in shas.items()}
        self._heads: dict[tuple[str, int, int], bytes] = {}
        self._ops: dict[tuple[str, int, int], bytes] = {}  # a batch's '<op> <nkeys> <nargs>' argument
        self._known = _Known(encoding)
        self._bulk_of = self._known.__getitem__
        self.load_batch = b"*3\r\n" + _bulk(b"SCRIPT") + _bulk(b"LOAD") + _bulk(batch_text.encode())
        """``SCRIPT LOAD`` of the batch script, for its NOSCRIPT."""

    def __call__(self, call: Call) -> Packed:
        keys, args = call.keys, call.args
        bulk_of = self._bulk_of
        return call.op, len(keys), len(args), b"".join(map(bulk_of, keys)), b"".join(map(bulk_of, args))

    def command(self, packed: Packed) -> bytes:
        """One call's own ``EVALSHA``."""
        shape = packed[:3]
        head = self._heads.get(shape)
        if head is None:
            head = self._heads[shape] = b"*%d\r\n%b%b" % (
                3 + shape[1] + shape[2], self._shas[shape[0]], _bulk(b"%d" % shape[1]),
            )  # fmt: skip
        return head + packed[3] + packed[4]

    def batch(self, items: list[Packed]) -> bytes:
        """One ``EVALSHA`` of ``lua/batch.lua`` over ``items`` (ops in ``BATCHED``): every item's keys,
        then per item ``'<op> <nkeys> <nargs>'`` and its args."""
        nkeys = nargs = 0
        out = [b""]
        ops = self._ops
        for item in items:
            nkeys += item[1]
            nargs += item[2]
            out.append(item[3])
        for item in items:
            shape = item[:3]
            op = ops.get(shape)
            if op is None:
                op = ops[shape] = _bulk(b"%s %d %d" % (shape[0].encode(), shape[1], shape[2]))
            out.append(op)
            out.append(item[4])
        out[0] = b"*%d\r\n%b%b" % (3 + nkeys + len(items) + nargs, self._shas["batch"], _bulk(b"%d" % nkeys))
        return b"".join(out)

    def wire(self, items: list[Packed]) -> tuple[bytes, int]:
        """The bytes of ``items`` in one write, and how many of them, at the end, go as one batch call
        (0: each is its own command). The batch's reply comes last."""
        if len(items) == 1:
            return self.command(items[0]), 0
        tail = 0
        while tail < len(items) and items[len(items) - 1 - tail][0] in BATCHED:
            tail += 1
        if tail < 2:
            return b"".join([self.command(p) for p in items]), 0
        head = items[: len(items) - tail]
        return b"".join([*(self.command(p) for p in head), self.batch(items[len(items) - tail :])]), tail

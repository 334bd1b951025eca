"""The Redis journal's interned call names: a namespace's table of ``[model, function]`` by number.

A guarded call's model and function are most of its journal entry's data, and calls repeat them: the
Redis store journals their number instead (``_meta``'s ``"#"``). The table (``Keys.names``, one hash,
``intern.lua``) is written before the first entry that names a number, never expires (nothing in a
namespace deletes keys: it lives as long as the journal that reads it, trimmed or not), and holds at
most ``CAP`` names of at most ``LONGEST`` characters: past either, the name is journaled as it is.

Each store keeps what it learnt, both ways: a name's number for ``REFRESH_S`` (then it asks again, so
that a table deleted by hand is written again within that time), a number's name for good (numbers
are never reused while the table exists).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from .._cache import Bounded
from ._meta import ESTIMATE, FUNCTION, INTERNED, MODEL
from ._redis_wire import Call, meta_json
from ._types import check_meta

__all__ = ["CAP", "LONGEST", "REFRESH_S", "Names"]

CAP = 1024
"""Names a namespace's table holds at most."""
LONGEST = 256
"""The longest name (its JSON text, in characters) interned."""
REFRESH_S = 60.0
"""How long a store uses a name's number before it asks the table again."""

_NUMBER = re.compile(r'"#":(\d+)')


class Names:
    """One store's side of its namespace's names table (flows: the store's driver performs the calls)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._numbers: Bounded[tuple[str, str | None], tuple[int | None, float]] = Bounded(
            "ledger.redis.names", 4 * CAP, shared=False)  # fmt: skip
        self._names: Bounded[int, list[Any]] = Bounded("ledger.redis.numbers", 4 * CAP, shared=False)

    def known(self, meta: Mapping[str, Any] | None) -> str | None:
        """A reservation's meta as the journal keeps it, when no call is needed (``None``: its name is
        to be interned first, ``meta_json``): interned when it is the guard's compact form (``_name``)
        and its number is known."""
        if not meta:  # (no meta: as check_meta and meta_json make it, without their calls)
            return "{}"
        meta = check_meta(meta)
        name = _name(meta)
        if name is None:
            return meta_json(meta)  # (not the guard's: as it is)
        found = self._numbers.get(name)
        if found is None or time.monotonic() - found[1] > REFRESH_S:
            return None
        return _text(meta, found[0])

    def meta_json(self, meta: Mapping[str, Any] | None) -> Generator[Any, Any, str]:
        """``known``'s text, the meta's name interned first (``intern.lua``) when it is not known."""
        text = self.known(meta)
        if text is not None:
            return text
        meta = check_meta(meta)
        name = _name(meta)
        assert name is not None  # (known said so)
        text = json.dumps(name, separators=(",", ":"))
        number = None
        if len(text) <= LONGEST:
            reply = yield Call("intern", (self.key,), (text, CAP))
            number = None if reply is None else int(reply)
        self._numbers.put(name, (number, time.monotonic()))
        return _text(meta, number)

    def learn(self, data: Iterable[str]) -> Generator[Any, Any, Mapping[int, list[Any]]]:
        """The names of the numbers journal entries' ``data`` texts name (one read of those not known)."""
        wanted = set(_NUMBER.findall("\n".join(data)))  # (one scan in C: no loop per entry)
        known = self._names
        unknown = [number for number in map(int, wanted) if number not in known]
        if unknown:
            reply = yield Call("hmget", (self.key,), tuple(unknown))
            for number, text in zip(unknown, reply, strict=True):
                if text is not None:
                    known.put(number, json.loads(text))
        return known


def _name(meta: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The name of the guard's compact reservation meta (a string model under ``""``, an integer
    estimate, a string function or no ``"f"``), or ``None`` for other meta, journaled as it is."""
    model, function = meta.get(MODEL), meta.get(FUNCTION)
    if (
        type(model) is not str or (FUNCTION in meta and type(function) is not str)
        or type(meta.get(ESTIMATE)) is not int or INTERNED in meta
    ):  # fmt: skip
        return None
    return model, function


def _text(meta: Mapping[str, Any], number: int | None) -> str:
    """The journal text of compact meta whose name has ``number`` (``None``: too long, or the table is
    full: the meta as it is): its other keys sorted, then ``"#"``."""
    if number is None:
        return meta_json(meta)
    if len(meta) == (2 if FUNCTION not in meta else 3):  # the guard's usual meta: "e" alone is left
        return f'{{"{ESTIMATE}":{meta[ESTIMATE]},"{INTERNED}":{number}}}'
    rest = meta_json({k: v for k, v in meta.items() if k != MODEL and k != FUNCTION})
    return f'{rest[:-1]}{"," if len(rest) > 2 else ""}"{INTERNED}":{number}}}'

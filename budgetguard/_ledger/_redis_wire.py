"""What the Redis store sends and reads back: the Lua scripts, key names, packed arguments, journal entries.

Each operation is one Lua script (``lua/*.lua``, after what it uses of the shared ``_time.lua`` and
``_lib.lua``). Key names: every key of a namespace shares the hash tag ``{namespace}`` (Redis Cluster
runs each script on one node); scope ids are user data and enter keys only as a hash of the counter's
identity. Money travels as int64 decimal strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, NamedTuple

from .._budgets import Unit, Window
from .._cache import Bounded
from ._base import check_namespace
from ._expiry import counter_expiry, prior_windows, trailing_ms
from ._meta import INTERNED, expand, interned, restore, unintern
from ._stored import held_fields
from ._types import (
    CounterSpec,
    CounterStatus,
    HeldCounter,
    JournalEntry,
    check_meta,
    scope_labels,
    to_datetime,
)

__all__ = ["JOURNAL_MAXLEN", "LIBRARY", "SCRIPTS", "Call", "CounterArgs", "Keys"]


class Call(NamedTuple):
    """One server call a flow needs (``_redis_flows``): a script (``op`` names it) or a plain command.
    (A named tuple: made twice a pair, a frozen dataclass's ``__init__`` cost ~2k instructions more.)"""

    op: str
    keys: tuple[str, ...] = ()
    args: tuple[str | int, ...] = ()


JOURNAL_MAXLEN = 1_000_000
"""The journal stream keeps about this many newest entries (``XADD MAXLEN ~``; ``?journal_maxlen=``);
``journal_complete_since`` says when it dropped some."""


def _lua(name: str) -> str:
    return resources.files("budgetguard._ledger").joinpath("lua", f"{name}.lua").read_text()


LIBRARY = _lua("_time") + "\n" + _lua("_lib") + "\n" + _lua("_raise")
"""What every script starts with: the time arithmetic (``_expiry.py``'s mirror), the helpers, the
temporary raise's live limit."""


_SCRIPT_NAMES = ("reserve", "commit", "release", "record", "status", "set_limit", "batch", "get_limit",
                 "adjust", "raise_limit", "set_limits", "intern", "reserve_fast", "commit_fast")  # fmt: skip


_TOP_LOCAL = re.compile(r"^local (?:function (\w+)|([\w, ]+?)\s*(?:=|--|$))", re.M)
"""A top-level ``local`` statement and the names it defines (``local a, b = ...``, ``local x -- note``)."""
_NAME = re.compile(r"(?<![.:\w])[A-Za-z_]\w*")  # (not a field: string.sub is no use of sub)


def _names(code: str) -> set[str]:
    """The names ``code`` uses (comments dropped; ``'x'..f()`` uses ``f``: a concatenation is no field)."""
    return set(_NAME.findall(re.sub(r"--[^\n]*", "", code).replace("..", " ")))


def _library_for(code: str, library: str = LIBRARY) -> str:
    """LIBRARY without the top-level definitions ``code`` never reaches: each ``local function`` a
    script defines costs every call of it a closure, and each local it captures an upvalue. (The
    library's files hold only top-level ``local`` statements; a definition is kept with every name it
    uses, transitively, and in its place.)"""
    starts = [m.start() for m in _TOP_LOCAL.finditer(library)] + [len(library)]
    blocks = []  # (names a top-level local statement defines, its text up to the next one)
    for m, end in zip(_TOP_LOCAL.finditer(library), starts[1:], strict=True):
        defined = {m.group(1)} if m.group(1) else {n.strip() for n in m.group(2).split(",")}
        blocks.append((defined, library[m.start() : end]))
    needed: set[str] = set()
    wanted = _names(code)
    while wanted - needed:
        needed |= wanted
        for defined, text in blocks:
            if defined & needed:
                wanted |= _names(text)
    return "\n".join(text for defined, text in blocks if defined & needed)


_RESOLVE = "local function resolve(mode, KEYS, ARGV, now)"
_ALONE = {
    "reserve": ("_reserve", "local function reserve(KEYS, ARGV, now)", "local now"),
    "commit": ("_resolve", _RESOLVE, "local mode, now = 'committed', nil"),
    "release": ("_resolve", _RESOLVE, "local mode, now = 'released', nil"),
    "reserve_fast": ("_reserve_fast", "local function reserve_fast(KEYS, ARGV, now)", "local now"),
    "commit_fast": ("_commit_fast", "local function commit_fast(KEYS, ARGV, now)", "local now"),
}
"""The scripts of one operation: its function's body run as the script's own code, its parameters bound
(KEYS and ARGV are the script's; now nil: read there). A function would be a closure made at every call,
with an upvalue for each library function it uses (~5-8k instructions a call); batch.lua calls them."""


def _alone(part: str, header: str, binding: str) -> str:
    text = _lua(part)
    start = text.index(header + "\n")  # (ValueError if the function's signature changed)
    end = text.rstrip().rindex("\nend")
    return text[:start] + binding + "\n" + text[start + len(header) + 1 : end]


def _load_scripts() -> dict[str, str]:
    operations = "\n".join(_lua(part) for part in ("_reserve", "_resolve", "_reserve_fast", "_commit_fast"))
    scripts = {}
    for name in _SCRIPT_NAMES:
        code = _alone(*_ALONE[name]) if name in _ALONE else _lua(name)
        if name == "batch":
            code = operations + "\n" + code
        scripts[name] = _library_for(code) + "\n" + code
    return scripts


SCRIPTS = _load_scripts()


_digests: Bounded[str, str] = Bounded("ledger.redis.digests", 100_000)


def _digest(text: str) -> str:
    """A short, collision-free name for a counter's identity (memoized: counters repeat)."""
    found = _digests.get(text)
    if found is None:
        found = _digests.put(
            text, base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:18]).decode()
        )
    return found


class Keys:
    """Key names. Scope ids are user data: they enter keys only as a hash of the counter's identity."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"bg:{{{check_namespace(namespace)}}}:"
        self.limits = self.prefix + "limits"
        self.journal = self.prefix + "journal"
        self.names = self.prefix + "names"  # (the journal's interned call names: _redis_names)

    def record(self, res_id: str) -> str:
        return f"{self.prefix}r:{res_id}"

    def counter(self, counter: CounterSpec, window_start: int) -> tuple[str, str]:
        base = f"{self.prefix}c:{_digest(counter.limit_field)}:{window_start}"
        return base, base + ":l"

    @staticmethod
    def limit_field(counter: CounterSpec) -> str:
        return _digest(counter.limit_field)


def label_json(counter: CounterSpec) -> str:
    scope = counter.scope
    return json.dumps([str(scope)]) if scope.id is not None else '["global"]'


_UNIT_KEYS = {unit: f'"{unit.value}":' for unit in Unit}
"""Each unit as a JSON object's key (units are plain words), made once: ``Unit.value`` is a Python-level
property, two frames a read."""


def amounts_json(amounts: Mapping[Unit, int]) -> str:
    keys = _UNIT_KEYS
    if len(amounts) == 1:  # (usually USD alone: no comprehension)
        for u, v in amounts.items():
            return f"{{{keys[u]}{v}}}"
    return "{" + ",".join([f"{keys[u]}{v}" for u, v in amounts.items()]) + "}"


_scopes: Bounded[tuple[str, ...], str] = Bounded("ledger.redis.scopes", 10_000)


def scopes_json(held: Sequence[HeldCounter]) -> str:
    labels = (held[0].counter.label,) if len(held) == 1 else tuple([h.counter.label for h in held])
    found = _scopes.get(labels)
    return _scopes.put(labels, json.dumps(scope_labels(held))) if found is None else found


class CounterArgs:
    """What a call says about one counter in one window, encoded once (counters repeat)."""

    __slots__ = ("commit_arg", "expire_at", "held_json", "keys", "prior", "reserve_arg")

    def __init__(self, keys: Keys, counter: CounterSpec, start: int, end: int | None) -> None:
        self.keys = keys.counter(counter, start)
        label, unit = label_json(counter), counter.unit.value
        expiry = counter_expiry(end, trailing_ms(counter))
        earlier = prior_windows(counter, Window(start, end))
        self.prior = tuple(key for w in earlier for key in keys.counter(counter, w.start))
        """A rolling counter's earlier buckets' keys (counter, leases), which a check counts too."""
        self.expire_at = expire_at = "" if expiry is None else expiry
        """When the counter's key is dropped ('': never): its window's end, plus a rolling bucket's
        ``trailing_ms``, plus retention."""
        window_end = "" if end is None else end
        field = keys.limit_field(counter)
        self.reserve_arg = f",{counter.limit},{start},{window_end},{expire_at},{unit},{field},{label}"
        """Follows the amount: the packed per-hold argument of the reserve script (``lua/_reserve.lua``)."""
        self.held_json = json.dumps(held_fields(counter, start, end), separators=(",", ":"))[:-1] + ","
        """A hold on this counter as ``encode_held`` writes it, up to its amount and limit."""
        self.commit_arg = f",{expire_at},{unit},{label}"
        """Follows the charge: the packed per-counter argument of the commit and release scripts
        (``lua/_resolve.lua``)."""


def server_time_outside(reply: list[str]) -> int | None:
    return int(reply[1]) if reply[0] == "WINDOW" else None


XRANGE_BATCH = 1000


def complete_since(info: Mapping[str, Any], maxlen: int) -> datetime | None:
    """From XINFO STREAM: the instant (a stream id's time) from which no entry was trimmed. Redis 7+
    counts the entries ever added; an older server only tells that the stream is at its cap."""
    added, length = info.get("entries-added"), int(info["length"])
    dropped = length >= maxlen if added is None else int(added) > length
    if not dropped:
        return None
    first = info.get("first-entry")
    first_id = str(first[0] if first else info.get("recorded-first-entry-id", "0-0"))
    ms, _, seq = first_id.partition("-")
    # entries of the first entry's millisecond with a lower sequence number were trimmed
    return to_datetime(int(ms) + (0 if seq in ("", "0") else 1))


EVENTS = {"c": "committed", "r": "released", "e": "expired", "x": "refused", "s": "shadow_refused"}
"""A journal entry's event as the scripts write it (one letter), and its name."""


def journal_entry(fields: Mapping[str, str], names: Mapping[int, Sequence[Any]] = {}) -> JournalEntry:
    """A journal stream entry: ``ts``, ``event`` (``EVENTS``), ``id``, ``scopes``, ``amounts`` and
    ``data`` (one JSON object: the reservation's meta, the resolution's, and its true flags; an
    interned call name is read from ``names``, ``_redis_names``). Entries written before the compact
    form (full event names; the reserve's meta in ``rdata``, the flags in ``flags``) read the same."""
    data = json.loads(fields.get("data") or "{}")
    if "rdata" in fields:
        data = {**json.loads(fields["rdata"] or "{}"), **data}
        data.update({k: v for k, v in json.loads(fields.get("flags") or "{}").items() if v})
    if interned(data):
        data = unintern(data, names.get(data[INTERNED]))
    event, amounts = fields["event"], restore(json.loads(fields["amounts"]), data)
    scopes = tuple(json.loads(fields["scopes"]))
    return JournalEntry(
        ts=int(fields["ts"]),
        event=EVENTS.get(event, event),  # type: ignore[arg-type]
        reservation_id=fields["id"],
        scopes=scopes,
        amounts=amounts,
        data=expand(data, scopes, amounts),  # (the guard's compact form: _meta)
    )


def meta_json(meta: Mapping[str, Any] | None) -> str:
    if not meta:
        return "{}"
    return json.dumps(check_meta(meta), separators=(",", ":"), sort_keys=True)


def statuses(
    reply: list[str], counters: Sequence[CounterSpec], windows: Sequence[Window], read: Sequence[int]
) -> list[CounterStatus]:
    """``status.lua``'s reply: limit, spent and held and overridden per counter read, after its ``OK``;
    ``read``: the counter asked that each read is part of (a rolling counter's buckets are summed)."""
    sums = [[0, 0] for _ in counters]
    for n, i in enumerate(read):
        sums[i][0] += int(reply[2 + 4 * n])
        sums[i][1] += int(reply[3 + 4 * n])
    first = {i: n for n, i in reversed(list(enumerate(read)))}  # (a counter's first read: its limit)
    return [
        CounterStatus(
            counter=counter,
            window_start=window.start - trailing_ms(counter),
            window_end=window.end,
            limit=int(reply[1 + 4 * first[i]]),
            spent=sums[i][0],
            held=sums[i][1],
            overridden=reply[4 + 4 * first[i]] == "1",
        )
        for i, (counter, window) in enumerate(zip(counters, windows, strict=True))
    ]

"""The guard's journal data in its compact form, and the one rule that reads it back.

Every guarded call journals its model, attempt, estimate, scopes, function, usage and cost with its
entry (``_flow`` writes the reservation's part, ``_settle`` the commit's). On Redis that text is most of
an entry's bytes, so the guard writes it compact, and every journal reader (``journal_entry`` of each
store, the SQLite report columns) expands it with ``expand``: reports, exports, ``history`` and
``stream_history`` see the same dict as before.

The compact form (keys: the constants below):

* ``""``: the model. Its presence marks the compact form: data without it (entries written before,
  a job's, meta passed to a store directly) is read as written.
* ``"e"``: the estimate as integer nano-USD (``estimated_usd`` is its text, ``str(to_usd(nano))``,
  exactly as the guard wrote it before).
* ``"a"``: the attempt, left out when it is 1.
* ``"s"``: the call's scopes, left out when the entry's own scopes give them back (``derivable``):
  ``global`` then the entry's scopes. That holds for every event the reservation can journal
  (committed, released, refused on any of its counters) only when all its counters are on one scope.
* ``"f"``: the decorated function.
* ``"u"``: the usage; ``[input, output]`` when it has exactly those two counts. ``cost_nano`` is left
  out: a guarded commit's amounts carry it (``usd``).

On Redis two more things shrink (the journal's bytes are memory there). SQLite and PostgreSQL keep
the form above: their exports write the stored amounts text in SQL, their report columns are the
entry's, and their rows are not counted in memory.

* ``"#"`` (``INTERNED``): the call's model and function, interned: the number of ``[model, function]``
  in the namespace's names table (``_redis_names``). The reservation's part is written without ``""``
  and ``"f"`` and with ``"#"`` as its last key (its other keys sorted, ``"e"`` always among them:
  ``interned`` tells the form by both), so ``unintern`` puts them back where the sorted form had them.
  Readers of earlier versions find no ``""``: they show the data as written, without a model or
  function.
* A guarded commit's amounts on a reservation that held only USD: ``{"usd": ...}``. Its tokens and
  requests (``usage``'s two counts summed, and 1) are put back by ``restore`` (``trimmable``: only
  when they are exactly that; earlier versions read the USD amount alone).

Any other key (the rarer ones: ``variant``, ``fitted``, ``error``..., ``fallback`` (``FALLBACK``), and
the flags the stores add, ``overrun``, ``expired``) is written and read as is. The stores merge the
reservation's and the resolution's parts as text (Redis) or as dicts: their keys never overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._cache import memo
from .._money import to_usd
from ._types import Hold

__all__ = [
    "ATTEMPT", "ESTIMATE", "FALLBACK", "FUNCTION", "INTERNED", "MODEL", "SCOPES", "USAGE",
    "derivable", "expand", "interned", "model_of", "pack_usage", "restore", "trimmable", "unintern",
    "usage_of", "usd_text",
]  # fmt: skip

MODEL, ESTIMATE, ATTEMPT, SCOPES, FUNCTION, USAGE = "", "e", "a", "s", "f", "u"
INTERNED = "#"
FALLBACK = "fallback"
"""The cheaper model a call routes to if this reservation is refused (``with_budget(route=...)``): a
refusal whose data has it was routed, not raised to the caller (reports count both)."""


def derivable(labels: Sequence[str], holds: Sequence[Hold]) -> bool:
    """Whether ``expand`` gives a call's scopes ``labels`` back from any entry of a reservation on
    ``holds`` (``global`` first, then at most one scope, which every counter is on)."""
    if len(labels) > 2 or not holds:
        return False
    last = labels[-1]
    return all(h.counter.label == last for h in holds)


def pack_usage(usage: dict[str, Any]) -> Any:
    """A usage's ``to_dict()`` as the compact form keeps it."""
    if len(usage) == 2 and "input_tokens" in usage and "output_tokens" in usage:
        return [usage["input_tokens"], usage["output_tokens"]]
    return usage


@memo("ledger.meta.usd", 4096)
def usd_text(nano: int) -> str:
    """An amount of nano-USD as the journal's data writes it (calls repeat their estimates: memoized)."""
    return str(to_usd(nano))


_NAMES = {MODEL: "model", ESTIMATE: "estimated_usd", ATTEMPT: "attempt", SCOPES: "scopes",
          FUNCTION: "function", USAGE: "usage"}  # fmt: skip


def expand(
    data: dict[str, Any], scopes: Sequence[str], amounts: Mapping[str, Any],
    sequence: Callable[[list[str]], Any] = list,
) -> dict[str, Any]:  # fmt: skip
    """Journal data as the guard meant it: the compact form expanded (see the module), anything else
    as it is. ``scopes``, ``amounts``: the entry's; ``sequence``: the type a store gives lists back as
    (``tuple`` for the memory store, which keeps Python values)."""
    if MODEL not in data:
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _NAMES.get(key)
        if name is None:
            out[key] = value
        elif key == ESTIMATE and type(value) is int:
            out[name] = usd_text(value)
        elif key == USAGE and type(value) is list and len(value) == 2:
            out[name] = {"input_tokens": value[0], "output_tokens": value[1]}
        else:
            out[name] = value
    if "attempt" not in out:
        out["attempt"] = 1
    if "scopes" not in out:
        out["scopes"] = sequence(["global", *(s for s in scopes if s != "global")])
    if "usage" in out and "cost_nano" not in out and "usd" in amounts:
        out["cost_nano"] = amounts["usd"]
    return out


def model_of(meta: Mapping[str, Any]) -> Any:
    """The model of journal data in either form (a job's draw reads it from its call's meta)."""
    return meta[MODEL] if MODEL in meta else meta.get("model")


def usage_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The usage (``to_dict()``) of journal data in either form."""
    found = meta[USAGE] if USAGE in meta else meta.get("usage", {})
    if type(found) is list and len(found) == 2:
        return {"input_tokens": found[0], "output_tokens": found[1]}
    return dict(found)


def interned(data: Mapping[str, Any]) -> bool:
    """Whether journal data is in the interned form (``"#"`` and ``"e"`` integers, no ``""``)."""
    return MODEL not in data and type(data.get(INTERNED)) is int and type(data.get(ESTIMATE)) is int


def unintern(data: dict[str, Any], name: Sequence[Any] | None) -> dict[str, Any]:
    """Data with ``"#"`` as the guard wrote it before interning: ``name`` (``[model, function]``, from the
    names table) back under ``""`` and ``"f"``, in the sorted order of the reservation's part (the keys
    before ``"#"``; the resolution's follow it). A number the table does not name (``None``: its table
    was deleted) shows no model and no function, never the number."""
    model, function = (None, None) if name is None else name
    out = {MODEL: model}
    placed = function is None
    for key, value in data.items():
        if not placed and (key == INTERNED or key > FUNCTION):
            out[FUNCTION] = function
            placed = True
        if key != INTERNED:
            out[key] = value
    return out


_TRIMMED = ["usd", "tokens", "requests"]


def trimmable(amounts: Mapping[str, int], usage: Any) -> bool:
    """Whether a commit's amounts (by unit name, all three) are what ``restore`` gives back from its
    compact usage: tokens its two counts summed, one request."""
    return (
        type(usage) is list and len(usage) == 2 and list(amounts) == _TRIMMED
        and amounts["tokens"] == usage[0] + usage[1] and amounts["requests"] == 1
    )  # fmt: skip


def restore(amounts: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """An entry's amounts with the tokens and requests ``trimmable`` left out put back (``data``: in
    the compact form, before ``expand``); any other amounts as they are."""
    if len(amounts) != 1 or "usd" not in amounts or MODEL not in data:
        return amounts
    usage = data.get(USAGE)
    if type(usage) is not list or len(usage) != 2 or type(usage[0]) is not int or type(usage[1]) is not int:
        return amounts
    return {"usd": amounts["usd"], "tokens": usage[0] + usage[1], "requests": 1}

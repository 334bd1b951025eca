"""``redis_floor --check``: each prototype's guarantees, asserted on a private redis-server (no valgrind).

Per design, in its own namespace: a new counter (general path) then the fast path; a repeated reserve
holding nothing more; all or nothing over 3 counters (one past its limit: none held, the refusal
recorded and repeated); the limit against spent + held + amount; a commit charged and released, and
repeated without a second effect; leases that end reclaimed by the next reserve, and a late commit
charging once without releasing again; one journal entry a commit, refusal and expiry; a limit override
below and above the caller's limit (not ``min``'s, which claims none of this: it only checks the
counted pair); the counted pair taking its fast path only. Then ``compat``, ``lean`` and ``fold`` from
4 processes on one namespace: 400 pairs of 3 scopes stopping exactly at the limit, every counter's
spent equal to the journal's commits; and, as in a rolling upgrade, today's store beside ``compat``:
each committing the other's reservation, and 2 processes of each in one such race.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

from ._redis_floor_designs import Wire, make

SHORT = 1500
"""A lease (ms) the check lets end (it sleeps past it)."""


def check_design(d: Any) -> None:
    a, b, c = "a", "b", "c"
    name = d.name
    # a new counter (the general path), then the fast path
    assert d.reserve("r1", ((a, 100, 1000),), SHORT), name
    assert d.counter(a) == (0, 100), (name, d.counter(a))
    assert d.reserve("r2", ((a, 100, 1000), (b, 100, 1000))), name
    assert (d.counter(a), d.counter(b)) == ((0, 200), (0, 100)), name
    # a repeat holds nothing more
    assert d.reserve("r2", ((a, 100, 1000), (b, 100, 1000))), name
    assert d.counter(a) == (0, 200), name
    # all or nothing: c over its limit, a and b untouched; the refusal is recorded and repeats
    assert not d.reserve("r3", ((a, 10, 1000), (b, 10, 1000), (c, 10, 5))), name
    assert (d.counter(a), d.counter(b), d.counter(c)) == ((0, 200), (0, 100), (0, 0)), name
    assert not d.reserve("r3", ((a, 10, 1000),)), name
    # the limit counts spent + held + amount
    assert not d.reserve("r4", ((a, 801, 1000),)), name
    assert d.reserve("r4b", ((a, 800, 1000),), SHORT), name
    assert d.counter(a) == (0, 1000), name
    # commit: charged, released; a repeat answers the same and changes nothing
    assert d.commit("r2", 70) == ((70, 70), False), (name, d.commit("r2", 70))
    assert d.commit("r2", 70) == ((70, 70), False), name
    assert (d.counter(a), d.counter(b)) == ((70, 900), (70, 0)), (name, d.counter(a), d.counter(b))
    # r6 holds on b; then r1's, r4b's and r6's leases end: the next reserve on a reclaims a's (one that
    # fits without reclaiming: a's held must drop all the same)
    assert d.reserve("r6", ((b, 5, 1000),), SHORT), name
    time.sleep(SHORT / 1000 + 0.1)
    assert d.reserve("r5", ((a, 20, 1000),)), name
    assert d.counter(a) == (70, 20), (name, d.counter(a))
    # a late commit charges, its hold was given back already; then a commit in time (an overrun)
    assert d.commit("r1", 30) == ((100,), True), (name, d.commit("r1", 30))
    assert d.counter(a) == (100, 20), (name, d.counter(a))
    assert d.commit("r5", 900) == ((1000,), False), name
    assert d.counter(a) == (1000, 0), (name, d.counter(a))
    # a commit after its lease ended, nothing reclaimed on b since: expired, released once
    late = not name.startswith("lean-trim")  # (lean-trim: a hold not reclaimed yet is committed in time)
    assert d.commit("r6", 5) == ((75,), late), (name, d.commit("r6", 5))
    assert d.counter(b) == (75, 0), (name, d.counter(b))
    # a limit override: below the caller's limit, then above it
    d.put_limit(a, 1000)
    assert not d.reserve("r7", ((a, 1, 5000),)), name
    d.put_limit(a, 2000)
    assert d.reserve("r8", ((a, 900, 1100),)), name
    assert d.counter(a) == (1000, 900), (name, d.counter(a))
    assert d.commit("r8", 0) == ((1000,), False), name
    # the journal: one entry a commit, a refusal, an expiry
    entries = d.entries()
    commits = [(i, n) for event, i, n in entries if event == "c"]
    assert commits == [("r2", 70), ("r1", 30), ("r5", 900), ("r6", 5), ("r8", 0)], (name, commits)
    refusals = sorted(i for event, i, _ in entries if event == "x")
    assert refusals == ["r3", "r4", "r7"], (name, refusals)
    expiries = sorted((i, n) for event, i, n in entries if event == "e")
    expected = [("r1", 100), ("r4b", 800), ("r6", 5)] if late else [("r1", 100), ("r4b", 800)]
    assert expiries == expected, (name, expiries)


def check_pair(d: Any) -> None:
    """The counted pair (3 scopes) runs its fast path only, and charges each counter."""
    from .redis_floor import NAMES, pair_of

    pair = pair_of(d, 1 if d.name == "min" else 3)
    pair(0)  # (new counters: the general path)
    general = getattr(d, "general_calls", 0)
    before = d.counter(NAMES[0]) if d.name != "min" else None
    pair(1)
    assert getattr(d, "general_calls", 0) == general, (d.name, "the pair took the general path")
    if before is not None:
        assert d.counter(NAMES[0]) == (before[0] + 900_000, before[1]), d.name


def check_mixed(port: int) -> None:
    """A rolling upgrade: ``compat``'s fast path and today's store each commit the other's reservation
    (as ``Reservation``s: by id alone, either takes today's scripts)."""
    new, old = make("compat", Wire(port), "check-mixed"), make("today", Wire(port), "check-mixed")
    hold = (("a", 100, 1000),)
    assert new.reserve("m1", hold)  # (a new counter: the general path)
    general = new.general_calls
    assert new.reserve("m2", hold)
    assert new.general_calls == general  # (the fast path)
    old.mine["m2"] = new.mine["m2"]
    assert old.commit("m2", 70) == ((70,), False)
    assert old.reserve("m3", hold)
    new.mine["m3"] = old.mine["m3"]
    assert new.commit("m3", 30) == ((100,), False)
    assert new.general_calls == general  # (the fast path)
    assert new.counter("a") == old.counter("a") == (100, 100)  # (m1 still held)
    assert new.entries() == [("c", "m2", 70), ("c", "m3", 30)], new.entries()


def check(port: int, names: Sequence[str]) -> None:
    for name in names:
        d = make(name, Wire(port), f"check-{name}")
        if name != "min":
            check_design(d)
        check_pair(d)
        print(f"{name:>12}: ok", flush=True)
    if "compat" in names:
        check_mixed(port)
        print(f"{'compat-today':>12}: ok (each commits the other's reservation)", flush=True)
    races = [(name, (name,) * 4) for name in ("compat", "lean", "fold") if name in names]
    if "compat" in names:  # a rolling upgrade: today's store and compat's fast path on one namespace
        races.append(("compat-today", ("compat", "today", "compat", "today")))
    for name, kinds in races:
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            admitted = sum(
                pool.starmap(_process_pairs, [(port, kind, i, name) for i, kind in enumerate(kinds)])
            )
        d = make(kinds[0], Wire(port), f"race-{name}")
        charged = admitted * 900_000
        counters = [d.counter(n) for n in ("x", "y", "z")]
        assert counters == [(charged, 0)] * 3, (name, counters, admitted)
        commits = [n for event, _, n in d.entries() if event == "c"]
        assert (len(commits), sum(commits)) == (admitted, charged), (name, len(commits), admitted)
        assert 0 < charged <= LIMIT < charged + 1_000_000, (name, charged)
        print(f"{name:>12}: 4 processes ok ({admitted} of 400 pairs admitted, the rest refused at the limit)")


LIMIT = 150 * 900_000 + 1_000_000
"""The limit of the processes' counters: 150 pairs' charges and one hold."""


def _process_pairs(port: int, name: str, seed: int, race: str) -> int:
    """100 reserve + commit pairs of 3 scopes; how many were admitted."""
    d = make(name, Wire(port), f"race-{race}")
    holds = tuple((n, 1_000_000, LIMIT) for n in ("x", "y", "z"))
    admitted = 0
    for i in range(100):
        res_id = f"p{seed}-{i}"
        if d.reserve(res_id, holds):
            d.commit(res_id, 900_000)
            admitted += 1
    return admitted

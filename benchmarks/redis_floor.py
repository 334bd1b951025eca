"""The Redis pair's floor (issue 17): lean reserve + commit designs, prototyped apart from budgetguard
and counted by callgrind (server and client) against one raw ``EVALSHA`` of ``return 1``.

```sh
python -m benchmarks.redis_floor --check              # each design's guarantees (a private redis-server)
python -m benchmarks.redis_floor [CALLS] [DESIGN...]  # server instructions a pair: 1, 3 scopes, batches
python -m benchmarks.redis_floor --client [CALLS] [DESIGN...]   # client instructions a pair
python -m benchmarks.redis_floor --profile DESIGN:N[:batch] [CALLS] [--raw]   # the server's by function
```

Not a ``bench_*`` module: ``python -m benchmarks`` does not run it. The designs (``_redis_floor_lua``'s
docstring has their data models): ``compat`` (today's keys and formats, a fast path of the fewest
commands, today's scripts for everything else), ``lean`` (no leases set, a per-counter lower bound of
lease ends, the override mirrored in the counter, a one-field journal entry) and its variants (one
change each; ``lean-trim``: the client's digits trusted, no clock at a commit), ``fold`` (``lean``
without a record key), ``min`` (no record, lease, override or repeat: a reference floor).
``today`` is the library itself (``open_ledger``), ``raw`` one ``EVALSHA`` of ``return 1``.

Server side: a private ``redis-server`` per design under ``valgrind --tool=callgrind
--instr-atstart=no``, counting only while N pairs run (as ``bench_footprint --server-callgrind``): per
pair as a caller runs them (reserve, commit, reserve, ...), 1 and 3 scopes, and per pair in batches
of 16 (16 callers' reserves as one script call, then their commits as another; each caller its own
user counter, and for 3 scopes a team's and the global counter all share). Client side: ``python -m
benchmarks.redis_floor --count-side client:DESIGN:N`` under callgrind (``_harness.run_counted``),
against a plain server.
"""

from __future__ import annotations

import glob
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from budgetguard._budgets import Period

from . import _redis_floor_designs as designs
from ._harness import count_here, run_counted
from ._redis_floor_designs import DESIGNS, Wire, make, new_id

BATCH = 16
K = 1000  # (counts are printed in thousands)
HOLD, CHARGE, LIMIT = 1_000_000, 900_000, 10**18
NAMES = ("alice-day", "search-month", "global-month")
"""``bench_ledger``'s three counters (user, feature, global), as the prototypes name them."""


def holds_for(scopes: int, names: Sequence[str] = NAMES) -> designs.Holds:
    return tuple((name, HOLD, LIMIT) for name in names[:scopes])


def pair_of(design: Any, scopes: int) -> Callable[[object], object]:
    holds = holds_for(scopes)
    reserve, commit = design.reserve, design.commit

    def pair(_: object) -> object:
        res_id = new_id()
        if not reserve(res_id, holds):
            raise AssertionError("refused")
        return commit(res_id, CHARGE)

    return pair


def batch_rounds(design: Any, scopes: int) -> Callable[[int], None]:
    """``rounds(k)``: k times, 16 callers' reserves as one batch call, then their commits as another
    (each caller on its own counter; with 3 scopes also on a team's and the global one they share)."""
    callers = [(f"b{i}", *NAMES[1:scopes]) for i in range(BATCH)]
    head = design.heads["batch"]
    for names in callers:  # (each counter made by a pair of its own: the general path)
        res_id = new_id()
        design.reserve(res_id, holds_for(scopes, names))
        design.commit(res_id, CHARGE)

    def send(op: str, calls: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        keys: list[str] = []
        args: list[str | int] = []
        for k, a in calls:
            keys += k
            args += (f"{op} {len(k)} {len(a)}", *a)
        return list(design.wire.call(head, keys, args))

    def rounds(k: int) -> None:
        for _ in range(k):
            ids = [new_id() for _ in callers]
            holds = [holds_for(scopes, names) for names in callers]
            replies = send("r", [design.reserve_call(i, h, 120_000) for i, h in zip(ids, holds, strict=True)])
            for res_id, h, reply in zip(ids, holds, replies, strict=True):
                if type(reply[0]) is not int:
                    raise AssertionError(f"{design.name}: a batched reserve took the general path: {reply}")
                design.admitted(res_id, h, reply)
            replies = send("c", [design.commit_call(i, CHARGE) for i in ids])
            if any(r[0] == "G" for r in replies):
                raise AssertionError(f"{design.name}: a batched commit took the general path")

    return rounds


# -- a private redis-server, plain or under callgrind ----------------------------------------------


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(callgrind: str | None = None) -> Iterator[int]:
    """A private redis-server's port (``callgrind``: a folder for its profiles, counting off; the
    server's pid is written there as ``pid``: valgrind runs it in its own process)."""
    import redis

    port = _port()
    binary = shutil.which("redis-server") or "redis-server"
    args = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    if callgrind is not None:
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        args = [*valgrind, f"--callgrind-out-file={callgrind}/cg.%p", *args]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if callgrind is not None:
        with open(f"{callgrind}/pid", "w") as out:
            out.write(str(process.pid))
    try:
        client = redis.Redis(port=port)
        for _ in range(600):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        process.terminate()
        process.wait(30)


def _toggle(pid: int, *actions: list[str]) -> None:
    for action in actions:
        subprocess.run(["callgrind_control", *action, str(pid)], capture_output=True, check=True)


def count_server(folder: str, work: Callable[[], object], dumps: list[str] | None = None) -> int:
    """The instructions the callgrind server spends while ``work()`` runs (its one valgrind process);
    the profile's path appended to ``dumps``."""
    with open(f"{folder}/pid") as found:
        pid = int(found.read())
    before = set(glob.glob(f"{folder}/cg.*"))
    _toggle(pid, ["-z"], ["-i", "on"])
    work()
    _toggle(pid, ["-i", "off"], ["-d"])
    for _ in range(300):  # the dump is written by the server, in its own time
        for dump in set(glob.glob(f"{folder}/cg.*")) - before:
            with open(dump) as lines:
                totals = [int(line.split()[1]) for line in lines if line.startswith("totals:")]
            if totals:
                if dumps is not None:
                    dumps.append(dump)
                return totals[0]
        time.sleep(0.1)
    raise RuntimeError("no callgrind dump from redis-server")


def server_counts(calls: int, names: Sequence[str]) -> dict[str, float]:
    """Server instructions (k) a pair of each design, 1 and 3 scopes, as run and in batches of 16; each
    design on a server of its own (what ran before moves a count by up to 7 %: the Lua heap, the
    stream's nodes), with its own count of ``return 1`` (``raw:<design>``)."""
    out: dict[str, float] = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="bg-redis-floor-") as folder, server(folder) as port:
            raw = out[f"raw:{name}"] = _raw(folder, port, calls)
            out.update(_today(folder, port, calls) if name == "today" else _design(folder, port, calls, name))
        mine = (f"{k} {v:.1f}k" for k, v in out.items() if k.startswith(name + ":"))
        print(f"  {name}: " + ", ".join(mine) + f" (return 1: {raw:.1f}k)", flush=True)
    return out


def _times(fn: Callable[[int], object], count: int) -> Callable[[], None]:
    """The work a count runs: ``fn(0)``, ..., ``fn(count - 1)``."""

    def work() -> None:
        for i in range(count):
            fn(i)

    return work


def _raw(folder: str, port: int, calls: int) -> float:
    """Server instructions (k) of one ``EVALSHA`` of ``return 1``."""
    wire = Wire(port)
    head = wire.load("return 1")
    return count_server(folder, _times(lambda _: wire.call(head, [], []), calls)) / calls / K


def _today(folder: str, port: int, calls: int) -> dict[str, float]:
    """The library's pair (``bench_ledger``'s) and batches (``bench_footprint``'s) on the server."""
    from budgetguard._ledger import open_ledger

    from .bench_footprint import _batched_pairs
    from .bench_ledger import _holds, _pair

    out = {}
    ledger: Any = open_ledger(f"redis://127.0.0.1:{port}/0{designs.SLOW}", namespace="today")
    for n in (1, 3):
        pair, holds = _pair(ledger), _holds(n)
        for _ in range(20):
            pair(holds)
        out[f"today:{n}"] = count_server(folder, _times(partial(_ignore, pair, holds), calls)) / calls / K
    for n, shared in ((1, False), (3, True)):
        batched = _batched_pairs(ledger, BATCH, shared)
        batched(2)
        rounds = calls // BATCH
        out[f"today:{n}:batch"] = count_server(folder, partial(batched, rounds)) / (rounds * BATCH) / K
    ledger.close()
    return out


def _ignore(fn: Callable[[Any], object], arg: Any, _: int) -> object:
    return fn(arg)


def _design(folder: str, port: int, calls: int, name: str) -> dict[str, float]:
    out = {}
    design = make(name, Wire(port), name, Period.DAY)
    for n in (1,) if name == "min" else (1, 3):
        pair = pair_of(design, n)
        for i in range(20):
            pair(i)
        general = getattr(design, "general_calls", 0)
        out[f"{name}:{n}"] = count_server(folder, _times(pair, calls)) / calls / K
        if getattr(design, "general_calls", 0) != general:
            raise AssertionError(f"{name}:{n}: a counted pair took the general path")
        if "batch" in design.heads:
            rounds_of = batch_rounds(design, n)
            rounds_of(2)
            rounds = calls // BATCH
            counted = count_server(folder, partial(rounds_of, rounds))
            out[f"{name}:{n}:batch"] = counted / (rounds * BATCH) / K
    return out


PROFILED = (
    "evalGenericCommand", "fcallCommandGeneric", "luaCallFunction", "luaRedisGenericCommand", "scriptCall",
    "call", "redisProtocolToLuaType", "luaCreateArray", "luaSetResp", "luaReplyToRedisReply",
    "readQueryFromClient", "writeToClient", "luaS_newlstr", "luaC_step", "luaV_execute",
)  # fmt: skip
"""Functions of the server whose inclusive counts ``--profile`` prints (where they have symbols)."""


def profile(side: str, calls: int) -> None:
    """``DESIGN:N`` (or ``DESIGN:N:batch``): its server instructions by function, inclusive, a pair."""
    name, scopes, *batch = side.split(":")
    with tempfile.TemporaryDirectory(prefix="bg-redis-floor-") as folder, server(folder) as port:
        design = make(name, Wire(port), name, Period.DAY)
        dumps: list[str] = []
        if batch:
            rounds_of = batch_rounds(design, int(scopes))
            rounds_of(2)
            count_server(folder, partial(rounds_of, calls // BATCH), dumps)
            calls = calls // BATCH * BATCH
        else:
            pair = pair_of(design, int(scopes))
            for i in range(20):
                pair(i)
            count_server(folder, _times(pair, calls), dumps)
        text = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", dumps[0]],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    if "--raw" in sys.argv:
        print(text[:12000])
    for line in text.splitlines():
        found = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*:(\w+)", line)
        if found and (found.group(2) in PROFILED or line.strip().endswith("PROGRAM TOTALS")):
            print(f"{int(found.group(1).replace(',', '')) / calls / K:8.1f}k  {found.group(2)}")
        elif "PROGRAM TOTALS" in line:
            print(f"{int(line.split()[0].replace(',', '')) / calls / K:8.1f}k  total")


# -- the client side -----------------------------------------------------------------------------------


def _count_side(side: str, calls: int) -> None:
    """In the valgrind child: ``client:DESIGN:N`` pairs (``today``: the library's; ``raw``: one redis-py
    ``EVALSHA`` of ``return 1``, as ``bench_ledger``'s baseline), against a plain private server."""
    from budgetguard._ledger import open_ledger

    from .bench_ledger import _holds, _pair

    _, name, scopes = side.split(":")
    with server() as port:
        if name in ("raw", "today"):
            ledger: Any = open_ledger(f"redis://127.0.0.1:{port}/0", namespace="client")
            if name == "raw":
                raw = ledger.client.register_script("return 1")
                count_here(lambda _: raw(), calls)
            else:
                pair, holds = _pair(ledger), _holds(int(scopes))
                count_here(lambda _: pair(holds), calls)
            ledger.close()
            return
        count_here(pair_of(make(name, Wire(port), "client", Period.DAY), int(scopes)), calls)


def client_counts(calls: int, names: Sequence[str]) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ["raw:1", *(f"{n}:{s}" for n in names for s in (1, 3) if n != "min" or s == 1)]:
            out[side] = run_counted("redis_floor", f"client:{side}", calls, f"{tmp}/out")[0] / calls / K
            print(f"  {side}: {out[side]:.1f}k", flush=True)
    return out


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--count-side"]:
        _count_side(argv[1], int(argv[2]))
        return
    if argv[:1] == ["--profile"]:
        profile(argv[1], int(argv[2]) if argv[2:] else 320)
        return
    if argv[:1] == ["--check"]:
        from ._redis_floor_check import check

        with server() as port:
            check(port, [a for a in argv[1:] if a in DESIGNS] or list(DESIGNS))
        return
    calls = next((int(a) for a in argv if a.isdigit()), 320)
    names = [a for a in argv if a in (*DESIGNS, "today")] or ["today", *DESIGNS]
    if argv[:1] == ["--client"]:
        counts = client_counts(calls, names)
        raw = counts["raw:1"]
        for side, k in counts.items():
            print(f"{side:>18} {k:8.1f}k  ({k / raw:.2f}x raw)")
        return
    counts = server_counts(calls, names)
    raws = [v for k, v in counts.items() if k.startswith("raw:")]
    print(f"server instructions a pair, {calls} pairs after 20 of warm-up, each design on its own server; "
          f"raw EVALSHA return 1: {min(raws):.1f}-{max(raws):.1f}k")  # fmt: skip
    print(f"{'design':>12} {'1 scope':>9} {'3 scopes':>9} {'batch 1':>9} {'batch 3':>9}")
    for name in names:
        cells = [counts.get(f"{name}:{key}") for key in ("1", "3", "1:batch", "3:batch")]
        print(f"{name:>12} " + " ".join(f"{c:8.1f}k" if c is not None else f"{'':>9}" for c in cells))


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn", force=True)
    main(sys.argv[1:])

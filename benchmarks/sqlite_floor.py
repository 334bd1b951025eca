"""The SQLite pair's floor (issue 17): the leanest correct reserve + commit designs, prototyped apart
from budgetguard and counted by callgrind against the issue's raw write transaction in the same run.

```sh
python -m benchmarks.sqlite_floor --check        # each design's guarantees, without valgrind (~1 s)
python -m benchmarks.sqlite_floor [CALLS] [DESIGN...]   # instructions per pair, 1 and 3 scopes (minutes)
python -m benchmarks.sqlite_floor --side SIDE [CALLS]   # one side, e.g. dry-lean:1 (no SQL: its Python)
```

Not a ``bench_*`` module: ``python -m benchmarks`` does not run it. Every design keeps the ledger's
guarantees: a reservation holds on all its counters or none (``spent + held + amount <= limit`` on each,
the caller's limit), its hold has a lease whose expiry lets any later operation reclaim it, reserve and
commit repeat by id without a second effect (a refusal is recorded too), the commit charges each counter,
releases the hold and writes one journal row with the amount, amounts are SQLite integers (``STRICT``
tables: a sum past int64 becomes a REAL, which they refuse). A design has a fast path (what the counted
pair runs) and falls back, in a new transaction, to the general path (``General``) for anything
unusual: an expired lease to reclaim, a counter without a row, a refusal, a repeat.

Sides: ``raw`` (``bench_ledger``'s raw write transaction, the issue's baseline: a ``Connection.execute``
per statement), ``rawcur`` (the same through one cursor), ``today:N`` (today's statements with bound
parameters and the least Python: ``today_pair``), and each design, ``DESIGN:N`` (``_floor_designs``; the
tables, the general path and the base class are ``_floor_base``):

- ``stmts``: a statement per step from Python: reserve = a guarded ``UPDATE`` per counter (``spent +
  held + amount <= limit`` and its ``lease_min``, a lower bound of its leases' ends, past now) + the
  reservation's ``INSERT``; commit = the reservation's guarded ``UPDATE`` + an ``UPDATE`` per counter + the
  journal ``INSERT`` (the holds of a reservation this process made are known without a read).
- ``lean``: ``stmts`` with its Python inline; ``ulid``: ``lean`` with time-ordered ids.
- ``lean-spent`` / ``lean-returning``: ``lean`` whose commit returns each counter's spent after it (as
  the library's ``Outcome.spent``), read by a ``SELECT`` / by ``UPDATE ... RETURNING``.
- ``proposal``: ``lean-spent`` with the rest of today's contract a pair pays for (the ``limits``
  override check, the journal's report columns and index on ``ts``); ``proposal-lean``: the override as a
  counter column, the journal without its ``ts`` index (``ts`` kept non-decreasing in ``seq`` order);
  ``trimmed``: ``proposal-lean`` without the spent read and the report columns.
- ``lean-journal``: ``lean`` writing today's journal row (its table and ``journal_row``);
  ``journal-sql``: that table, the row by the least Python; ``journal-noauto``, ``journal-noindex``:
  without ``AUTOINCREMENT``, and without the ``ts`` index too.
- ``stmts-index``, ``trigger-index``: the lease check a ``NOT EXISTS`` on a partial index of held
  reservations by expiry, instead of ``lease_min``.
- ``trigger``: one statement a transaction: the reservation's ``INSERT``, whose trigger updates the
  counters from its holds (``json_each``) and ``RAISE(ABORT)``s unless each admitted; the commit's
  ``UPDATE`` of its state, whose trigger settles the counters and writes the journal row.
  ``trigger1``: one scope's hold in columns (no ``json_each``); ``implicit``: ``trigger`` through the
  ``sqlite3`` module's own transactions (``isolation_level="IMMEDIATE"``, ``Connection.commit``);
  ``script``: each transaction one ``executescript`` (literals: no bound parameters there).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path

from ._floor_base import NEVER, Design, Holds, connect
from ._floor_designs import DESIGNS, Ulid
from ._harness import count_here, run_counted
from .bench_ledger import _raw_write_tx

# -- the raw side and the counted pairs ----------------------------------------------------------------


def raw_transaction(db: sqlite3.Connection) -> Callable[[object], None]:
    """The raw side through one cursor (``rawcur``): ``bench_ledger._raw_write_tx`` (``raw``, the issue's
    baseline) runs each statement with ``Connection.execute``, which makes a cursor each time."""
    db.execute("CREATE TABLE IF NOT EXISTS bench_raw (k INTEGER PRIMARY KEY, v INTEGER NOT NULL) STRICT")
    db.execute("INSERT OR IGNORE INTO bench_raw (k, v) VALUES (1, 0)")
    cur = db.cursor()

    def transaction(_: object) -> None:
        cur.execute("BEGIN IMMEDIATE")
        cur.execute("UPDATE bench_raw SET v = v + 1 WHERE k = 1")
        cur.execute("COMMIT")

    return transaction


_KEYS = (
    '["user", "alice", "usd", "day", "UTC"]@1796601600000',
    '["feature", "search", "usd", "month", "UTC"]@1796083200000',
    '["global", "usd", "month", "UTC"]@1796083200000',
)
"""``bench_ledger``'s three counters, keyed as the library keys them (scope, unit, period, window)."""


def holds_for(scopes: int) -> Holds:
    """The benchmark's holds: ``bench_ledger``'s (its counters, 1,000,000 nano-USD each, limits far
    away); the commit charges 900,000."""
    return tuple((key, 1_000_000, 10**18) for key in _KEYS[:scopes])


LEASE_MS = 600_000


def pair_of(design: Design, scopes: int) -> Callable[[object], object]:
    """One reserve + commit, as the library's would run: a random id (``new_id``), the wall clock in ms."""
    holds = holds_for(scopes)
    reserve, commit = design.reserve, design.commit
    for key, _, _ in holds:  # (a counter row exists: the first reservation of a window makes it)
        design.cur.execute(
            f"INSERT OR IGNORE INTO counters (key, spent, held, lease_min) VALUES (?, 0, 0, {NEVER})", (key,)
        )

    ulid = type(design) is Ulid

    def pair(_: object) -> object:
        res_id = f"{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}" if ulid else os.urandom(12).hex()
        if not reserve(res_id, holds, time.time_ns() // 1_000_000, LEASE_MS):
            raise AssertionError("refused")
        return commit(res_id, 900_000, time.time_ns() // 1_000_000)

    return pair


def today_pair(path: Path, scopes: int) -> tuple[Callable[[object], object], sqlite3.Connection]:
    """Today's SQL, as ``bench_ledger``'s pair sends it on its fast path (the library's tables and
    statements, bound parameters: 3 + 2N statements at the reserve, 5 + 3N at the commit), with the
    least Python around it: its record and journal texts are the library's, made by f-strings. What the
    store's statements cost apart from budgetguard's Python (``bench_ledger``'s ``replay`` inlines the
    parameters, so each statement is compiled again: not the floor of the same SQL)."""
    from budgetguard._ledger._sqlite import SQLiteLedger
    from budgetguard._ledger._sqlite_report import COLUMNS

    from .bench_ledger import _holds, _pair

    ledger = SQLiteLedger(path, namespace="bench")
    _pair(ledger)(_holds(scopes))  # (the counter rows, a record and a journal row to copy)
    sql, cur = ledger._sql, ledger._cursor()
    ex = cur.execute
    names = sql.names
    keys = [k for (k,) in ex(f"SELECT key FROM {names['counters']}")]
    record = json.loads(ex(f"SELECT record FROM {names['reservations']}").fetchone()[0])
    held_q = _quote(record["held"])
    journal = ex(f"SELECT scopes, amounts, data, {', '.join(COLUMNS)} FROM {names['journal']}").fetchone()
    slots = [(key, key.rsplit("@", 1)[0]) for key in keys]
    amount, charge, lease, keep = 1_000_000, 900_000, 120_000, 900_000

    def pair(_: object) -> object:
        res_id = os.urandom(12).hex()
        now = time.time_ns() // 1_000_000
        ends = now + lease
        ex("BEGIN IMMEDIATE")
        for key, field in slots:
            if not ex(sql.admit, (key, amount, 10**18 - amount, now, field)).rowcount:
                raise AssertionError("refused")
        for key, _ in slots:
            ex(sql.add_lease, (key, res_id, ends, amount))
        text = f'{{"state": "held", "created": {now}, "expires": {ends}, "held": {held_q}, "meta": {{}}}}'
        ex(sql.put_record, (res_id, text, ends + keep))
        ex("COMMIT")
        now = time.time_ns() // 1_000_000
        ex("BEGIN IMMEDIATE")
        ex(sql.record, (res_id,)).fetchone()
        spent = []
        for key, _ in slots:
            found = ex(sql.spent, (key, now)).fetchone()
            ex(sql.drop_lease, (key, ends, res_id))
            ex(sql.settle, (found[0] + charge, amount, key))
            spent.append(str(found[0] + charge))
        outcome = (
            f'{{"state": "committed", "charged": {{"usd": {charge}}}, "overrun": false, "expired": false, '
            f'"spent": [{", ".join(spent)}]}}'
        )
        text = (
            f'{{"state": "committed", "created": {now}, "expires": {ends}, "held": {held_q}, '
            f'"outcome": {outcome}}}'
        )
        ex(sql.set_record, (text, res_id))
        ex(sql.journal, (now, "committed", res_id, *journal))
        ex("COMMIT")
        return None

    return pair, ledger._db()


def side_work(side: str, path: Path) -> tuple[Callable[[object], object], list[sqlite3.Connection]]:
    """One call of ``side`` on a new file at ``path`` (``raw``, ``rawcur``, ``today:N`` or
    ``DESIGN:N``), and the connections that write it."""
    if side in ("raw", "rawcur"):
        DESIGNS["stmts"](path).db.close()  # (the same kind of file)
        db = connect(path)
        return (_raw_write_tx(db) if side == "raw" else raw_transaction(db)), [db]
    if side.startswith("today:"):
        work, db = today_pair(path, int(side[-1]))
        return work, [db]
    name, scopes = side.split(":")
    dry = name.startswith("dry-")  # (the design's Python alone: a cursor whose ``execute`` does nothing)
    design = DESIGNS[name.removeprefix("dry-")](path)
    pair = pair_of(design, int(scopes))
    if dry:
        design.cur = design.general.cur = _Dry()  # type: ignore[assignment]
        design.ex = design.cur.execute  # type: ignore[attr-defined]
    return pair, [design.db]


class _Dry:
    """A cursor that does nothing: every statement changed one row and reads ``(0,)``."""

    rowcount = 1

    def execute(self, sql: str, params: object = ()) -> _Dry:
        return self

    def fetchone(self) -> tuple[int]:
        return (0,)


def _count_side(side: str, calls: int) -> None:
    """In the valgrind child: ``side``, ``calls`` times after a warm-up."""
    with tempfile.TemporaryDirectory(prefix="bg-sqlite-floor-") as folder:
        count_here(side_work(side, Path(folder) / "ledger.db")[0], calls)


def wal_frames(side: str, pairs: int = 300) -> float:
    """WAL frames (4 KB pages) ``side`` writes a call: the WAL's growth with checkpoints off, after a
    warm-up (no valgrind)."""
    with tempfile.TemporaryDirectory(prefix="bg-sqlite-floor-") as folder:
        path = Path(folder) / "ledger.db"
        work, connections = side_work(side, path)
        for db in connections:  # (a per-connection setting)
            db.execute("PRAGMA wal_autocheckpoint = 0")
        wal = Path(f"{path}-wal")
        for i in range(100):
            work(i)
        before = wal.stat().st_size
        for i in range(pairs):
            work(i)
        return (wal.stat().st_size - before) / (4096 + 24) / pairs


_OBJECTS = {"libsqlite3": "SQLite", "libpython": "Python", "python3": "Python", "_sqlite3": "sqlite3 module"}


def counted(side: str, calls: int) -> dict[str, float]:
    """Instructions per call of ``side`` under callgrind, in all and by object (SQLite's library, the
    interpreter, the ``_sqlite3`` module, the rest: libc's memcpy, malloc, ...), and SQLite's part in its
    WAL frames' checksums (the function holding the most instructions of the WAL write)."""
    with tempfile.TemporaryDirectory() as tmp:
        total = run_counted("sqlite_floor", side, calls, f"{tmp}/out")[0]
        annotated = subprocess.run(
            ["callgrind_annotate", "--threshold=100", f"{tmp}/out"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    parts = {"all": total / calls}
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):(\S+)(?: \[(\S+)\])?$", line)
        if m is None or m.group(2) == "PROGRAM":
            continue
        count = int(m.group(1).replace(",", "")) / calls
        obj = Path(m.group(4) or "python3").name  # (no object named: the interpreter's own code)
        group = next((g for prefix, g in _OBJECTS.items() if obj.startswith(prefix)), "other")
        parts[group] = parts.get(group, 0.0) + count
    return parts


def check(folder: Path) -> None:
    """Each design's guarantees, asserted (no valgrind); then ``proposal-lean`` from 4 processes."""
    for name, kind in DESIGNS.items():
        design = kind(folder / f"{name}.db")
        statements = check_design(design)
        print(f"{name:>15}: ok ({statements} statements a 3-scope pair, a trigger's included)")
        design.db.close()
    path = folder / "processes.db"
    DESIGNS["proposal-lean"](path).db.close()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        admitted = sum(pool.starmap(_process_pairs, [(str(path), i) for i in range(4)]))
    db = connect(path)
    spent = list(db.execute("SELECT spent, held FROM counters ORDER BY key"))
    journal = db.execute("SELECT count(*), sum(r_cost) FROM journal3").fetchone()
    charged = admitted * 900_000
    assert spent == [(charged, 0)] * 3, (spent, admitted)  # (every counter: each admitted pair's charge)
    assert journal == (admitted, charged), journal
    assert 0 < charged <= _PROCESS_LIMIT < charged + 1_000_000, (charged, admitted)
    print(f"4 processes, proposal-lean: ok ({admitted} of 400 pairs admitted, the rest refused at the limit)")


_PROCESS_LIMIT = 150 * 900_000 + 1_000_000
"""The limit of ``check``'s processes: 150 pairs' charges and one hold."""


def _process_pairs(path: str, seed: int) -> int:
    """100 reserve + commit pairs of 3 scopes on ``path`` (``proposal-lean``); how many were admitted."""
    design = DESIGNS["proposal-lean"](Path(path))
    holds = tuple((key, 1_000_000, _PROCESS_LIMIT) for key in _KEYS)
    admitted = 0
    for i in range(100):
        res_id = f"p{seed}-{i}"
        if design.reserve(res_id, holds, time.time_ns() // 1_000_000, LEASE_MS):
            design.commit(res_id, 900_000, time.time_ns() // 1_000_000)
            admitted += 1
    return admitted


def check_design(d: Design) -> int:
    """One design's guarantees on a new file; the statements its 3-scope pair runs."""
    ex = d.cur.execute

    def counter(key: str) -> tuple[int, int]:
        spent, held = ex("SELECT spent, held FROM counters WHERE key = ?", (key,)).fetchone()
        return spent, held

    def committed(res_id: str, actual: int, now: int, spent: tuple[int, ...]) -> None:
        out = d.commit(res_id, actual, now)
        assert out == (spent if d.spent_column else actual), (d.name, res_id, out)

    a, b, c = "a@1", "b@1", "c@1"  # (a counter key: its field, @, its window)
    # a new counter (general path), then the fast path
    assert d.reserve("r1", ((a, 100, 1000),), 0, 50)
    assert counter(a) == (0, 100), (d.name, counter(a))
    assert d.reserve("r2", ((a, 100, 1000), (b, 100, 1000)), 1, 50)
    assert (counter(a), counter(b)) == ((0, 200), (0, 100)), d.name
    # a repeat holds nothing more
    assert d.reserve("r2", ((a, 100, 1000), (b, 100, 1000)), 2, 50)
    assert counter(a) == (0, 200), d.name
    # all or nothing: c over its limit, a and b untouched; the refusal is recorded and repeats
    assert not d.reserve("r3", ((a, 10, 1000), (b, 10, 1000), (c, 10, 5)), 3, 50)
    assert (counter(a), counter(b), counter(c)) == ((0, 200), (0, 100), (0, 0)), d.name
    assert not d.reserve("r3", ((a, 10, 1000),), 3, 50)
    # the limit counts spent + held + amount
    assert not d.reserve("r4", ((a, 801, 1000),), 4, 50)
    assert d.reserve("r4b", ((a, 800, 1000),), 4, 50)
    assert counter(a) == (0, 1000), d.name
    # commit: charged, released, journaled once; a repeat answers the same
    committed("r2", 70, 5, (70, 70))
    committed("r2", 70, 6, (70, 70))
    assert (counter(a), counter(b)) == ((70, 900), (70, 0)), (d.name, counter(a), counter(b))
    # the leases of r1 and r4b (ends 50, 54) expire: the next reserve reclaims them
    assert d.reserve("r5", ((a, 900, 1000),), 60, 50)
    assert counter(a) == (70, 900), (d.name, counter(a))
    # a late commit charges, its hold was given back already
    committed("r1", 30, 61, (100,))
    assert counter(a) == (100, 900), (d.name, counter(a))
    committed("r5", 900, 62, (1000,))
    assert counter(a) == (1000, 0), (d.name, counter(a))
    # a commit past int64 is refused, nothing written; it can be committed after
    assert d.reserve("r6", ((b, 1, 2**63 - 1),), 63, 50)
    try:
        d.commit("r6", 2**63 - 10, 64)
    except sqlite3.Error:
        pass
    else:
        raise AssertionError(f"{d.name}: a sum past int64 was stored")
    assert counter(b) == (70, 1), (d.name, counter(b))
    committed("r6", 1, 65, (71,))
    assert counter(b) == (71, 0), (d.name, counter(b))
    # the journal: one row per commit, with its amount (a's spent, 1,000, is r2's, r1's and r5's)
    found = ex(f"SELECT res_id, {d.journal_amount} FROM {d.journal_table} ORDER BY seq").fetchall()
    rows = [(r, c if type(c) is int else json.loads(c)["usd"]) for r, c in found]
    assert rows == [("r2", 70), ("r1", 30), ("r5", 900), ("r6", 1)], (d.name, rows)
    if d.general.overrides:  # a limit override: below the caller's limit, then above it
        d.put_limit("a", 1000)  # (a's spent is 1,000 now)
        assert not d.reserve("r7", ((a, 1, 5000),), 66, 50), d.name
        d.put_limit("a", 2000)
        assert d.reserve("r8", ((a, 900, 1100),), 67, 50), d.name
        assert counter(a) == (1000, 900), (d.name, counter(a))
        committed("r8", 0, 68, (1000,))
    # the counted pair runs, and only its fast path (the general path starts by reading the state)
    pair = pair_of(d, 3)
    traced: list[str] = []
    d.db.set_trace_callback(traced.append)
    pair(None)
    d.db.set_trace_callback(None)
    assert not any(s.startswith(("ROLLBACK", "SELECT state")) for s in traced), (d.name, traced)
    return len(traced)


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--count-side"]:
        _count_side(argv[1], int(argv[2]))
        return
    if argv[:1] == ["--side"]:  # one side, e.g. ``dry-proposal-lean:1``
        found = counted(argv[1], int(argv[2]) if argv[2:] else 500)
        print(", ".join(f"{part}: {count / 1000:.1f}k" for part, count in found.items()))
        return
    if argv[:1] == ["--check"]:
        with tempfile.TemporaryDirectory(prefix="bg-sqlite-floor-") as folder:
            check(Path(folder))
        return
    calls = next((int(a) for a in argv if a.isdigit()), 500)
    names = [a for a in argv if a in DESIGNS] or list(DESIGNS)
    raw = counted("raw", calls)
    print(
        f"{calls} calls after 300 of warm-up; instructions a call (user space), by object: SQLite's library "
        "(its VM, b-trees, pager, WAL), the interpreter, the sqlite3 module, the rest (libc: locks, "
        "malloc, memcpy); WAL frames a call by the WAL's growth"
    )
    print(f"{'side':>18} {'instr':>9} {'/raw':>6} {'/rawcur':>7} {'frames':>6} {'SQLite':>8} "
          f"{'Python':>8} {'sqlite3':>8} {'libc':>7}")  # fmt: skip

    def show(side: str, c: dict[str, float], raws: tuple[float, float]) -> None:
        k = {part: c.get(part, 0.0) / 1000 for part in ("SQLite", "Python", "sqlite3 module", "other")}
        print(f"{side:>18} {c['all'] / 1000:8.1f}k {c['all'] / raws[0]:6.2f} {c['all'] / raws[1]:7.2f} "
              f"{wal_frames(side):6.2f} {k['SQLite']:7.1f}k {k['Python']:7.1f}k {k['sqlite3 module']:7.1f}k "
              f"{k['other']:6.1f}k", flush=True)  # fmt: skip

    rawcur = counted("rawcur", calls)
    raws = (raw["all"], rawcur["all"])
    show("raw", raw, raws)
    show("rawcur", rawcur, raws)
    for scopes in (1, 3):
        show(f"today:{scopes}", counted(f"today:{scopes}", calls), raws)
    for name in names:
        for scopes in (1, 3):
            side = f"{name}:{scopes}"
            show(side, counted(side, calls), raws)


if __name__ == "__main__":
    main(sys.argv[1:])

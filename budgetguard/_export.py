"""Exports of the ledger's journal for finance: each entry a CSV or JSON line (``budgetguard export``).

``export_row`` is what an entry shows; ``export_text`` renders a time range as text, inside SQLite or
PostgreSQL where the store is one (``_ledger._sqlite_export``, ``_ledger._postgres_export``: the same
bytes), else entry by entry. The CSV gives each scope kind of the range its column (``ScopeColumns``),
the JSON lines a list of scopes.
``export_utf8`` gives the lines SQLite renders together as its UTF-8 bytes, which ``write_utf8`` puts
in a file as they are.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from ._errors import LedgerError
from ._ledger import JournalEntry, Ledger
from ._ledger._base import JournalQuery
from ._ledger._facts import KNOWN, tokens
from ._ledger._facts import call_scopes as scopes_of
from ._money import to_usd
from ._report import _utc, call_scopes, entry_cost, stream_journal

__all__ = [
    "EXPORT_FIELDS",
    "ScopeColumns",
    "export_row",
    "export_text",
    "export_utf8",
    "streamed_text",
    "write_utf8",
]


def export_row(entry: JournalEntry) -> dict[str, Any]:
    """One journal entry as a flat record for finance (CSV or JSON lines): ``scopes`` is the list of the
    call's scopes (the CSV gives each its column: ``export_text``)."""
    n_in, n_out = tokens(entry.data)
    return {
        "time": entry.time.isoformat(),
        "event": entry.event,
        "reservation_id": entry.reservation_id,
        "scopes": call_scopes(entry),
        "model": entry.model or "",
        "function": entry.data.get("function", ""),
        "attempt": entry.data.get("attempt", ""),
        "cost_usd": str(to_usd(entry_cost(entry))),
        "estimated_usd": entry.data.get("estimated_usd", ""),
        "input_tokens": n_in,
        "output_tokens": n_out,
        "amounts": dict(entry.amounts),
        "flags": {k: v for k, v in entry.data.items() if k not in KNOWN},
    }


EXPORT_FIELDS = ("time", "event", "reservation_id", "scopes", "model", "function", "attempt", "cost_usd",
                 "estimated_usd", "input_tokens", "output_tokens", "amounts", "flags")  # fmt: skip
"""``export_row``'s keys, in order (the CSV's columns, ``scopes`` spread over ``ScopeColumns``)."""
_FIRST_KINDS = {"global": 0, "user": 1, "feature": 2}


class ScopeColumns:
    """The CSV export's scope columns: one per scope kind seen in the range (``scope_global``,
    ``scope_user``, ``scope_feature``, then the other kinds in alphabetical order), and
    ``scope_<kind>_2``, ``_3``... where a call has several scopes of one kind. A call's cell holds the
    scope's id (the whole label for a scope without one: ``global``), empty when it has none of that
    kind."""

    def __init__(self, lists: Iterable[Sequence[str]]) -> None:
        most: dict[str, int] = {}
        for labels in lists:
            seen: dict[str, int] = {}
            for label in labels:
                kind = label.partition(":")[0]
                seen[kind] = n = seen.get(kind, 0) + 1
                if n > most.get(kind, 0):
                    most[kind] = n
        kinds = sorted(most, key=lambda k: (_FIRST_KINDS.get(k, 3), k))
        self.columns = [(kind, i) for kind in kinds for i in range(most[kind])]
        self.names = [f"scope_{kind}" if not i else f"scope_{kind}_{i + 1}" for kind, i in self.columns]
        self._at = {column: at for at, column in enumerate(self.columns)}

    def cells(self, labels: Sequence[str]) -> list[str]:
        """A call's cells (``labels``: its scopes); a kind the columns lack is an error (the journal
        changed between the export's two reads)."""
        cells = [""] * len(self.columns)
        seen: dict[str, int] = {}
        for label in labels:
            kind, colon, ident = label.partition(":")
            n = seen[kind] = seen.get(kind, -1) + 1
            at = self._at.get((kind, n))
            if at is None:
                raise LedgerError("the journal changed while it was exported: run the export again")
            cells[at] = ident if colon else label
        return cells

    def text(self, labels: Sequence[str]) -> str:
        """A call's cells as CSV text, each after a comma (as in a line)."""
        cells = self.cells(labels)
        text = "".join("," + cell for cell in cells)
        if _bare(text, len(cells)):  # (the common case: no cell the csv module would quote)
            return text
        return _csv_line(["", *cells])[:-1]  # (as in a line: a lone empty field is quoted)


def _bare(text: str, n: int) -> bool:
    """The ``n`` cells of ``text`` (each after a comma) are written as they are by the ``csv`` module in
    a line of several fields (no quoting): all printable, none with a comma or a double quote."""
    return text.isprintable() and text.count(",") == n and '"' not in text


def _csv_line(fields: Sequence[Any]) -> str:
    """``fields`` as one CSV line (``csv.writer``'s rules, ``\n`` at its end)."""
    out = _CSV
    out.text.seek(0)
    out.text.truncate()
    out.writer.writerow(fields)
    return out.text.getvalue()


class _CsvOut(threading.local):
    """A thread's CSV writer and its text (exports in several threads at once each write their own)."""

    def __init__(self) -> None:
        self.text = io.StringIO()
        self.writer = csv.writer(self.text, lineterminator="\n")


_CSV = _CsvOut()


def export_header(columns: ScopeColumns) -> str:
    """The CSV export's header line."""
    return _csv_line([n for f in EXPORT_FIELDS for n in (columns.names if f == "scopes" else [f])])


def csv_layout(lists: Iterable[str]) -> tuple[ScopeColumns, str, Callable[[str], str]]:
    """The CSV's scope columns for calls of the lists of scopes ``lists`` (as the journal keeps them:
    JSON; read once, none kept: a range of a million users' calls holds as many lists), its header, and
    a list's cells (``ScopeColumns.text``; the first ``CELLS_KEPT`` lists' kept)."""
    columns = ScopeColumns(_parsed(text) for text in lists)
    return columns, export_header(columns), _Cells(columns).__getitem__


CELLS_KEPT = 65536
"""Lists of scopes whose CSV cells an export keeps (the common range holds a few hundred)."""


class _Cells(dict[str, str]):
    """Lists of scopes' CSV cells by their JSON, each rendered when first asked, the first ``CELLS_KEPT``
    kept (a list kept is found by ``dict``'s own lookup: no Python frame a row)."""

    def __init__(self, columns: ScopeColumns) -> None:
        super().__init__()
        self._columns = columns

    def __missing__(self, text: str) -> str:
        cells = self._columns.text(_parsed(text))
        if len(self) < CELLS_KEPT:
            self[text] = cells
        return cells


def _parsed(text: str) -> list[str]:
    return scopes_of({"scopes": json.loads(text)}, ())


def export_line(row: dict[str, Any], fmt: str, columns: ScopeColumns | None = None) -> str:
    """An ``export_row`` as a line of ``fmt`` (``csv``: with ``columns``; ``jsonl``)."""
    if fmt != "csv":
        return json.dumps(row) + "\n"
    assert columns is not None
    fields: list[Any] = []
    for key, value in row.items():
        if key == "scopes":
            fields += columns.cells(value)
        else:
            fields.append(json.dumps(value) if isinstance(value, dict) else value)
    return _csv_line(fields)


def export_text(
    ledger: Ledger, *, since: datetime | None, until: datetime | None = None, fmt: str = "csv"
) -> Iterator[str]:
    """The export of a time range as ``fmt`` (``csv``, ``jsonl``), in pieces of text (each one or many
    lines; a CSV's header first). SQLite and PostgreSQL render the lines in SQL (``_sqlite_export``,
    ``_postgres_export``); other stores' entries are streamed through ``export_row`` (twice for a CSV:
    its scope columns first). Nothing at all (no entry, JSON lines) is no text."""
    for piece in export_utf8(ledger, since=since, until=until, fmt=fmt):
        yield piece if isinstance(piece, str) else piece.decode()


def export_utf8(
    ledger: Ledger, *, since: datetime | None, until: datetime | None = None, fmt: str = "csv"
) -> Iterator[str | bytes]:
    """``export_text``, its pieces text or that text's UTF-8 (the lines SQLite renders together: a file
    takes them as they are, ~0.2 s less per 1M CSV lines holding non-ASCII text than a decode and an
    encode)."""
    from ._ledger._postgres import PostgresLedger  # (psycopg only when the store opens)
    from ._ledger._sqlite import SQLiteLedger  # (sqlite3 at the first export, not at import)

    if isinstance(ledger, SQLiteLedger):
        return _sqlite_text(ledger, _utc(since), _utc(until), fmt)
    if isinstance(ledger, PostgresLedger):
        return _postgres_text(ledger, _utc(since), _utc(until), fmt)
    return streamed_text(ledger, since=since, until=until, fmt=fmt)


def streamed_text(
    ledger: Ledger, *, since: datetime | None, until: datetime | None = None, fmt: str = "csv"
) -> Iterator[str]:
    """``export_text`` through ``export_row``, entry by entry (any store)."""
    columns = None
    if fmt == "csv":
        columns = ScopeColumns(map(call_scopes, stream_journal(ledger, since=since, until=until)))
        yield export_header(columns)
    for entry in stream_journal(ledger, since=since, until=until):
        yield export_line(export_row(entry), fmt, columns)


def _sqlite_text(
    ledger: Any, since: datetime | None, until: datetime | None, fmt: str
) -> Iterator[str | bytes]:
    """``export_text`` of a SQLite store (``sql_export``), the journal's report columns filled first
    when the range's first rows lack them (a file written before them: ``_sqlite_report.fill``)."""
    from ._ledger._sqlite_export import sql_export
    from ._ledger._sqlite_report import fill

    sql = ledger._sql.report

    def filled() -> None:
        fill(ledger._db(), sql)

    def export(bounds: tuple[int, int], layout: _Layout | None) -> Iterator[str | bytes | JournalEntry]:
        return sql_export(
            str(ledger.path), sql, *bounds, fmt, timeout=ledger.timeout, fill=filled, layout=layout
        )

    return _in_store(export, since, until, fmt)


def _postgres_text(ledger: Any, since: datetime | None, until: datetime | None, fmt: str) -> Iterator[str]:
    """``export_text`` of a PostgreSQL store (``PostgresLedger.export_journal``)."""

    def export(bounds: tuple[int, int], layout: _Layout | None) -> Iterator[str | JournalEntry]:
        return ledger.export_journal(*bounds, fmt, layout)  # type: ignore[no-any-return]

    return _in_store(export, since, until, fmt)  # type: ignore[return-value]  # (no bytes: texts only)


_Layout = Callable[[Iterable[str]], tuple[str, Callable[[str], str]]]
"""A CSV export's scope columns from the range's distinct lists of scopes (``csv_layout``)."""


def _in_store(
    export: Callable[[tuple[int, int], _Layout | None], Iterator[str | bytes | JournalEntry]],
    since: datetime | None, until: datetime | None, fmt: str,
) -> Iterator[str | bytes]:  # fmt: skip
    """The pieces of an export the store renders (``export``, given the range in ms and the CSV's
    ``layout``), each entry it cannot render put through ``export_row`` in its place."""
    query = JournalQuery.parse(since, until, None, None, None, None)
    bounds = (-(2**62) if query.since is None else query.since, 2**62 if query.until is None else query.until)
    columns: list[ScopeColumns] = []

    def layout(lists: Iterable[str]) -> tuple[str, Callable[[str], str]]:
        found, header, cells = csv_layout(lists)
        columns.append(found)
        return header, cells

    for piece in export(bounds, layout if fmt == "csv" else None):
        yield piece if isinstance(piece, (str, bytes)) else export_line(export_row(piece), fmt, *columns)


def write_utf8(f: TextIO, pieces: Iterable[str | bytes]) -> None:
    """``pieces`` (text, or text's UTF-8) written to the text file ``f``: UTF-8 straight to its buffer
    where ``f`` would write the same bytes (it encodes as UTF-8 and writes a newline as it is: ``f``
    opened with the default ``newline``, as the CLI opens it; a text file does not say which it has)."""
    raw = codecs.lookup(f.encoding).name == "utf-8" and os.linesep == "\n"
    for piece in pieces:
        if isinstance(piece, str):
            f.write(piece)
        elif raw:
            f.flush()
            f.buffer.write(piece)
        else:
            f.write(piece.decode())

"""``budgetguard report`` and ``export`` say when the journal no longer covers the asked range, and only
then (issue 13, item 9). The command line opens the store by URL, so memory (each ``memory://`` is a
new, empty store) is tested through the report API in test_journal_coverage.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from budgetguard._cli import cli
from budgetguard._ledger import Ledger

from .trimming import Trimmed, fill, trimmed_store

STORE_KINDS = ["sqlite", "redis", "cluster"]


@pytest.fixture
def trimmed(store_url: str, tmp_path: Path) -> Iterator[Trimmed]:
    with trimmed_store(store_url, tmp_path) as found:
        yield found


def _cli(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args])


def test_report_and_export_warn_when_the_journal_dropped_part_of_the_range(trimmed: Trimmed) -> None:
    url = trimmed.url
    since = trimmed.store.journal_complete_since()
    assert since is not None
    table = _cli(url, "report", "--since", "7d")
    assert table.exit_code == 0, table.output
    assert "alice" in table.stdout
    assert "the journal covers only from" in table.stdout and "not in this report" in table.stdout
    as_json = _cli(url, "report", "--since", "7d", "--format", "json")
    document = json.loads(as_json.stdout)
    assert document["journal_complete_since"] == since.isoformat()
    assert "not in this report" in document["warning"] and "the journal covers only" in as_json.stderr
    as_csv = _cli(url, "report", "--since", "7d", "--format", "csv")
    assert "covers only" not in as_csv.stdout and "not in this report" in as_csv.stderr
    for fmt in ("csv", "jsonl"):
        exported = _cli(url, "export", "--since", "7d", "--format", fmt)
        assert exported.exit_code == 0, exported.output
        assert "covers only" not in exported.stdout  # the data stays clean
        assert "the journal covers only from" in exported.stderr and "not in this export" in exported.stderr
    # a range the journal covers: no warning
    for args in (["report", "--format", "json"], ["export"]):
        quiet = _cli(url, *args, "--since", since.isoformat())
        assert quiet.exit_code == 0 and quiet.stderr == "" and "covers only" not in quiet.stdout


def test_report_and_export_do_not_warn_when_nothing_was_dropped(ledger: Ledger, store_url: str) -> None:
    fill(ledger, 3)
    table = _cli(store_url, "report", "--since", "3650d")
    assert table.exit_code == 0 and "alice" in table.stdout and "covers only" not in table.output
    document = json.loads(_cli(store_url, "report", "--since", "3650d", "--format", "json").stdout)
    assert (document["journal_complete_since"], document["warning"]) == (None, None)
    assert document["total"]["calls"] == 3
    exported = _cli(store_url, "export", "--since", "3650d")
    assert exported.exit_code == 0 and exported.stderr == "" and len(exported.stdout.splitlines()) == 4

"""Each Redis script carries only the library functions it reaches (``_redis_wire._library_for``): every
library name its text calls or reads is defined in it, before its first use (a Lua local is visible
only below its definition); a missing one would be a global, an error only when that line runs."""

from __future__ import annotations

import re

import pytest

from budgetguard._ledger._redis_wire import LIBRARY, SCRIPTS, _library_for

DEFINED = re.compile(r"^local (?:function (\w+)|([\w, ]+?)\s*(?:=|--|$))", re.M)


def _definitions(text: str) -> dict[str, int]:
    out = {}
    for m in DEFINED.finditer(text):
        for name in [m.group(1)] if m.group(1) else m.group(2).split(","):
            out.setdefault(name.strip(), m.start())
    return out


LIBRARY_NAMES = set(_definitions(LIBRARY))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_library_name_a_script_uses_is_defined_above_its_use(name: str) -> None:
    code = re.sub(r"--[^\n]*", "", SCRIPTS[name]).replace("..", "  ")  # (same offsets)
    defined = _definitions(code)
    for use in re.finditer(r"(?<![.:\w])(\w+)\b", code):
        if use.group(1) in LIBRARY_NAMES:
            assert use.group(1) in defined, (name, use.group(1))
            assert defined[use.group(1)] <= use.start(), (name, use.group(1))


def test_a_script_leaves_out_what_it_never_reaches() -> None:
    assert "local function reserve" not in SCRIPTS["commit"]
    assert "local function live_limit" not in SCRIPTS["commit"]  # (reserve's run-time limits)
    assert "local function merge" not in SCRIPTS["reserve"]  # (a resolution's journal data)
    assert "local function reserve" not in SCRIPTS["reserve"]  # (its body is the script's own code)
    assert "local function reserve" in SCRIPTS["batch"]
    assert "local function live_limit" in SCRIPTS["reserve"]


def test_a_name_after_a_concatenation_or_a_local_with_a_note_is_kept() -> None:
    """The shapes a script or the library may take: ``'x'..f()`` uses ``f`` (no field), and ``local x  --
    a note`` defines ``x`` (a review found both left out: a global read, an error only where it runs)."""
    library = "local function unused() end\nlocal BAR  -- set by batch\nlocal function fail(m) return m end\n"
    assert "local function fail" in _library_for("return 'x'..fail('y')", library)
    assert "local BAR" in _library_for("return BAR", library)
    assert "unused" not in _library_for("return BAR..fail('y')", library)

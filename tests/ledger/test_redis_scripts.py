"""Each Redis script carries only the library functions it reaches (``_redis_wire._library_for``): every
library name its text calls or reads is defined in it, before its first use (a Lua local is visible
only below its definition); a missing one would be a global, an error only when that line runs."""

from __future__ import annotations

import re

import pytest

from budgetguard._ledger._redis_wire import LIBRARY, SCRIPTS

DEFINED = re.compile(r"^local (?:function (\w+)|([\w, ]+?)\s*(?:=|$))", re.M)


def _definitions(text: str) -> dict[str, int]:
    out = {}
    for m in DEFINED.finditer(text):
        for name in [m.group(1)] if m.group(1) else m.group(2).split(","):
            out.setdefault(name.strip(), m.start())
    return out


LIBRARY_NAMES = set(_definitions(LIBRARY))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_library_name_a_script_uses_is_defined_above_its_use(name: str) -> None:
    code = re.sub(r"--[^\n]*", "", SCRIPTS[name])
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

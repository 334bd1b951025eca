"""The decorators' signatures are written once (``_options``) and still type user code: a decorated function
keeps its signature, bare or called, on a guard or on the default guard, and a wrong option is an error."""

from __future__ import annotations

from pathlib import Path

from mypy import api

USER_CODE = """
import budgetguard
from budgetguard import Guard

guard = Guard("memory://")

@guard.with_budget(user="{uid}", route=["gpt-4o", "gpt-4o-mini"], at=0.8)
def ask(uid: str, prompt: str) -> str:
    return prompt

@guard.metered
async def meter(x: int) -> int:
    return x

@budgetguard.with_budget(feature="search")
def default(a: int) -> int:
    return a

reveal_type(ask)
reveal_type(meter)
reveal_type(default)
reveal_type(budgetguard.metered(default, feature="x"))
guard.with_budget(ask, at="high")
guard.metered(ask, route=["gpt-4o-mini"])
"""


def test_decorated_functions_keep_their_types_and_bad_options_are_errors(tmp_path: Path) -> None:
    code = tmp_path / "user_code.py"
    code.write_text(USER_CODE)
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), str(code)]
    )
    revealed = [line.split("Revealed type is ", 1)[1] for line in out.splitlines() if "Revealed type" in line]
    assert revealed == [
        '"def (uid: str, prompt: str) -> str"',
        '"def (x: int) -> typing.Coroutine[Any, Any, int]"',
        '"def (a: int) -> int"',
        '"def (a: int) -> int"',
    ], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 2 and status == 1, out
    assert all('No overload variant of "__call__"' in line for line in errors), out

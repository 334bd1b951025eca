"""The bounded-cache facility: a full table forgets its oldest entry; named tables are listed and emptied."""

from __future__ import annotations

import pytest

from budgetguard._cache import Bounded, caches, clear_caches, memo

from ..racing import race


def test_a_full_table_forgets_its_oldest_entry_only() -> None:
    table: Bounded[int, str] = Bounded("test.oldest", 3, shared=False)
    for key in range(5):
        assert table.put(key, str(key)) == str(key)
    assert dict(table) == {2: "2", 3: "3", 4: "4"}
    table.put(3, "three")  # a key already held replaces its value, forgetting nothing
    assert dict(table) == {2: "2", 3: "three", 4: "4"}


def test_racing_writers_never_grow_a_table_past_its_limit() -> None:
    table: Bounded[tuple[int, int], int] = Bounded("test.racing", 100, shared=False)

    def write(worker: int) -> None:
        for key in range(2_000):
            if table.get((worker, key)) is None:
                table.put((worker, key), key)

    race(write, [(worker,) for worker in range(8)])
    assert 0 < len(table) <= 100


def test_a_large_full_table_forgets_its_oldest_sixteenth() -> None:
    """One entry at a time would leave holes that each later eviction scans again (a put in a full table
    of 65,536 cost 31 us); a sixteenth at a time scans each hole once."""
    table: Bounded[int, int] = Bounded("test.sixteenth", 64, shared=False)
    for key in range(64):
        table.put(key, key)
    table.put(64, 64)
    assert list(table) == list(range(4, 65))
    for key in range(65, 1000):
        table.put(key, key)
        assert len(table) <= 64
    assert 999 in table and 0 < len(table) <= 64


def test_named_tables_are_listed_and_emptied_together() -> None:
    table: Bounded[str, int] = Bounded("test.listed", 10)
    calls: list[int] = []

    @memo("test.memo", 2)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    table.put("a", 1)
    assert (double(1), double(1), double(2), double(3), double(1)) == (2, 2, 4, 6, 2)
    assert calls == [1, 2, 3, 1]  # a bound of 2: 1 went when 3 came
    listed = caches()
    assert listed["test.listed"] == 1 and listed["test.memo"] == 2
    clear_caches()
    assert caches()["test.listed"] == 0 and caches()["test.memo"] == 0
    assert "a" not in table


def test_an_owned_table_is_not_listed() -> None:
    Bounded("test.owned", 1, shared=False).put("k", 1)
    assert "test.owned" not in caches()


def test_a_table_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Bounded("test.empty", 0)

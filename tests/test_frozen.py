"""``fast_init``: the hot-path dataclasses build the same frozen objects as their generated ``__init__``."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

import budgetguard as bg
from budgetguard._estimate import Estimate
from budgetguard._frozen import fast_init, fast_new
from budgetguard._ledger._types import HeldCounter, Outcome, Reservation


def _pair() -> tuple[type[Any], type[Any]]:
    """The same frozen, slotted dataclass twice: with the generated ``__init__`` and with fast_init's."""

    def make() -> type[Any]:
        @dataclass(frozen=True, slots=True)
        class Point:
            x: int
            y: int = 2
            tags: list[str] = field(default_factory=list)
            label: str = field(init=False, default="")

            def __post_init__(self) -> None:
                if self.x < 0:
                    raise ValueError("x < 0")
                object.__setattr__(self, "label", f"{self.x},{self.y}")

        return Point

    return make(), fast_init(make())


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, 5), {}), ((1,), {"y": 7}), ((), {"x": 3, "y": 4, "tags": ["a"]}), ((1, 2, ["t"]), {})],
)
def test_fast_init_builds_what_the_generated_init_builds(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    plain, fast = _pair()
    a, b, c = plain(*args, **kwargs), fast(*args, **kwargs), fast_new(fast)(*args, **kwargs)
    assert dataclasses.astuple(a) == dataclasses.astuple(b) == dataclasses.astuple(c)
    assert (
        repr(a).replace("make.<locals>.", "")
        == repr(b).replace("make.<locals>.", "")
        == repr(c).replace("make.<locals>.", "")
    )
    assert b.label == f"{b.x},{b.y}" and c.label == f"{c.x},{c.y}"  # __post_init__ ran
    assert type(c) is fast and c == b


def test_fast_init_keeps_factories_validation_errors_and_frozenness() -> None:
    plain, fast = _pair()
    assert fast(1).tags is not fast(1).tags  # a new list per instance, as default_factory promises
    with pytest.raises(ValueError, match="x < 0"):
        fast(-1)
    for cls in (plain, fast):  # same argument errors as the generated __init__
        with pytest.raises(TypeError):
            cls()
        with pytest.raises(TypeError):
            cls(1, 2, [], 4)
        with pytest.raises(TypeError):
            cls(1, z=2)
    point = fast(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2
    assert inspect.signature(fast) == inspect.signature(plain)


def test_fast_init_refuses_classes_it_cannot_speed_up() -> None:
    @dataclass
    class Mutable:
        x: int

    with pytest.raises(TypeError, match="frozen=True, slots=True"):
        fast_init(Mutable)
    with pytest.raises(TypeError, match="@fast_init"):
        fast_new(_pair()[0])


def test_the_hot_path_types_use_it_and_stay_frozen() -> None:
    counter = bg.CounterSpec(bg.Scope("user", "a"), bg.Unit.USD, bg.Period.DAY, 10)
    held = HeldCounter(counter, 0, None, 5, 10)
    reservation = Reservation("r1", (held,), 1, 2)
    outcome = Outcome("r1", "committed", {bg.Unit.USD: 5})
    usage = bg.Usage(8, output_tokens=5)
    price = bg.PriceBook().get("gpt-4o-mini")
    estimate = Estimate("gpt-4o-mini", 8, 50, 31200, price)
    for obj in (held, reservation, outcome, usage, estimate):
        assert "_twin" in type(obj).__init__.__code__.co_names  # fast_init's __init__, by a twin
        assert type(obj) is not type(obj).__init__.__globals__["_twin"]  # switched back
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.__setattr__(dataclasses.fields(obj)[0].name, None)
    assert outcome == Outcome("r1", "committed", {bg.Unit.USD: 5}, False, False, False, ())
    assert Outcome("x", "released").charged == {} and Outcome("x", "released").charged is not outcome.charged
    assert reservation.duplicate is False and estimate.counted is False and estimate.variant is None
    with pytest.raises(bg.UsageError):
        bg.Usage(output_tokens=1, reasoning_tokens=2)
    with pytest.raises(bg.UsageError, match="cache_read_tokens"):
        bg.Usage(1, True)


def test_a_class_with_bases_sets_its_slots_by_their_descriptors() -> None:
    """No twin can share a layout built on other bases: such a class keeps the descriptor stores."""

    @dataclass(frozen=True, slots=True)
    class Base:
        x: int

    @fast_init
    @dataclass(frozen=True, slots=True)
    class Child(Base):
        y: int = 2

    child = Child(1)
    assert (child.x, child.y, type(child)) == (1, 2, Child)
    assert fast_new(Child)(1, 3) == Child(1, 3) and type(fast_new(Child)(1)) is Child
    assert "_set0" in Child.__init__.__code__.co_names and "_twin" not in Child.__init__.__code__.co_names
    with pytest.raises(dataclasses.FrozenInstanceError):
        child.__setattr__("y", 3)

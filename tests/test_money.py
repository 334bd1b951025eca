from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetguard import format_usd, to_nano, to_usd
from budgetguard._money import INT64_MAX, NANO_PER_USD


@pytest.mark.parametrize(
    ("amount", "nano"),
    [
        ("0.25", 250_000_000),
        ("0.1", 100_000_000),
        (Decimal("0.1"), 100_000_000),
        (1, 1_000_000_000),
        (0, 0),
        ("0", 0),
        ("0.000000001", 1),
        ("1e-9", 1),
        ("2.5E-6", 2_500),
        ("1E+3", 1_000_000_000_000),
        ("$12.50", 12_500_000_000),
        ("  7.000000000000  ", 7_000_000_000),
        ("123456789.123456789", 123_456_789_123_456_789),
        ("9223372036.854775807", INT64_MAX),
        (Decimal("-0"), 0),
    ],
)
def test_to_nano_is_exact(amount: object, nano: int) -> None:
    result = to_nano(amount)  # type: ignore[arg-type]
    assert result == nano
    assert type(result) is int


def test_tenths_add_up_exactly() -> None:
    # the classic float failure: 0.1 + 0.2 != 0.3
    assert to_nano("0.1") + to_nano("0.2") == to_nano("0.3")


@pytest.mark.parametrize(
    "amount",
    [
        "0.0000000001",
        "0.0000000015",
        Decimal("1.0000000001"),
        # 29 significant digits: the default decimal context (28 digits) would round this to $1 exactly
        "1.0000000000000000000000000001",
        "0.1000000000000000000000000000001",
        "1E-999999999",
    ],
)
def test_finer_than_a_nano_is_refused_not_rounded(amount: object) -> None:
    with pytest.raises(ValueError, match="finer than one nano-USD"):
        to_nano(amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [0.1, 1.0, 0.0, float("nan"), float("inf")])
def test_floats_are_refused_with_a_hint(amount: float) -> None:
    with pytest.raises(TypeError, match="float") as info:
        to_nano(amount)  # type: ignore[arg-type]
    assert "Decimal" in str(info.value)
    assert "string" in str(info.value)


def test_float_hint_shows_the_value_to_type() -> None:
    with pytest.raises(TypeError, match=r'Decimal\("0.1"\)'):
        to_nano(0.1, what="limit")  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [True, False])
def test_bools_are_refused(amount: bool) -> None:
    with pytest.raises(TypeError):
        to_nano(amount)


@pytest.mark.parametrize("amount", [None, [1], b"1", object()])
def test_other_types_are_refused(amount: object) -> None:
    with pytest.raises(TypeError):
        to_nano(amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", ["NaN", "sNaN", "Infinity", "-inf", Decimal("NaN"), Decimal("Infinity")])
def test_non_finite_is_refused(amount: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        to_nano(amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", ["abc", "", "1,5", "$", "0.1.2"])
def test_garbage_strings_are_refused(amount: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        to_nano(amount)


@pytest.mark.parametrize("amount", ["-1", "-0.000000001", Decimal("-5"), -3])
def test_negative_is_refused_unless_allowed(amount: object) -> None:
    with pytest.raises(ValueError, match="negative"):
        to_nano(amount)  # type: ignore[arg-type]
    assert to_nano(amount, allow_negative=True) < 0  # type: ignore[arg-type]


def test_negative_allowed_is_exact() -> None:
    assert to_nano("-1.5", allow_negative=True) == -1_500_000_000
    assert to_nano(f"-{to_usd(INT64_MAX)}", allow_negative=True) == -INT64_MAX


@pytest.mark.parametrize(
    "amount",
    ["9223372036.854775808", "1e10", 10**10, "1E+999999999", Decimal("123456789012345678901234567890")],
)
def test_int64_overflow_is_refused(amount: object) -> None:
    with pytest.raises(ValueError, match="too large"):
        to_nano(amount)  # type: ignore[arg-type]


def test_overflow_negative_is_refused_too() -> None:
    with pytest.raises(ValueError, match="too large"):
        to_nano("-9223372036.854775808", allow_negative=True)


def test_what_names_the_amount() -> None:
    with pytest.raises(ValueError, match=r"^limit must not be negative"):
        to_nano("-1", what="limit")


@pytest.mark.parametrize(
    ("nano", "usd"),
    [
        (0, Decimal("0")),
        (1, Decimal("0.000000001")),
        (2_500, Decimal("0.0000025")),
        (7_500_000, Decimal("0.0075")),
        (NANO_PER_USD, Decimal("1")),
        (12 * NANO_PER_USD, Decimal("12")),
        (-5, Decimal("-0.000000005")),
        (INT64_MAX, Decimal("9223372036.854775807")),
    ],
)
def test_to_usd(nano: int, usd: Decimal) -> None:
    result = to_usd(nano)
    assert isinstance(result, Decimal)
    assert result == usd


@pytest.mark.parametrize(
    ("nano", "text"),
    [
        (0, "$0"),
        (1, "$0.000000001"),
        (7_500_000, "$0.0075"),
        (-1_500_000_000, "-$1.5"),
        (12 * NANO_PER_USD, "$12"),
        (1_000 * NANO_PER_USD, "$1000"),
        (INT64_MAX, "$9223372036.854775807"),
    ],
)
def test_format_usd(nano: int, text: str) -> None:
    assert format_usd(nano) == text


@given(st.integers(min_value=-INT64_MAX, max_value=INT64_MAX))
def test_nano_round_trips_through_usd(nano: int) -> None:
    assert to_nano(to_usd(nano), allow_negative=True) == nano
    assert to_nano(str(to_usd(nano)), allow_negative=True) == nano
    assert to_nano(format_usd(nano).replace("-$", "-"), allow_negative=True) == nano


@given(st.decimals(min_value=0, max_value=Decimal("9223372036.854775807"), places=9, allow_nan=False))
def test_usd_round_trips_through_nano(usd: Decimal) -> None:
    assert to_usd(to_nano(usd)) == usd


@given(
    st.decimals(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=30),
)
def test_finer_amounts_never_round(base: Decimal, extra_places: int) -> None:
    # append a digit below the nano (as text: Decimal arithmetic would itself round to 28 digits)
    nanos = base.quantize(Decimal(1).scaleb(-9))
    amount = Decimal(f"{nanos:f}" + "0" * (extra_places - 1) + "1")
    assert amount > nanos
    with pytest.raises(ValueError, match="finer"):
        to_nano(amount)

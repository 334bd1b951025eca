"""Money: integer nano-USD inside the library, ``Decimal`` USD at the edges.

One nano-USD is 1e-9 USD; a signed 64-bit integer holds about $9.2 billion. Charges computed from
prices round UP to a whole nano-USD (the provider is never under-charged in our books). Amounts a
user types (limits, prices) must be exact: ``"0.1"``, ``Decimal("0.1")`` or an ``int`` of whole
dollars. A ``float`` is refused with a ``TypeError``: ``0.1`` is not one tenth in binary, and money
that drifts by a rounding error per call is exactly what this library exists to prevent.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation

__all__ = ["INT64_MAX", "NANO_PER_USD", "Money", "format_usd", "to_nano", "to_usd"]

NANO_PER_USD = 1_000_000_000
INT64_MAX = 2**63 - 1

Money = Decimal | int | str
"""What the public API accepts as an amount of USD: ``Decimal``, ``str`` or ``int`` (whole dollars)."""


def _as_decimal(amount: object, what: str) -> Decimal:
    if isinstance(amount, bool):
        raise TypeError(f"{what} must be an amount of USD, got {amount!r}")
    if isinstance(amount, float):
        raise TypeError(
            f"{what} is the float {amount!r}; floats cannot hold money exactly. "
            f'Pass a string or a Decimal instead, e.g. "{amount!r}" or Decimal("{amount!r}").'
        )
    if isinstance(amount, Decimal):
        value = amount
    elif isinstance(amount, int):
        value = Decimal(amount)
    elif isinstance(amount, str):
        try:
            value = Decimal(amount.strip().removeprefix("$"))
        except InvalidOperation:
            raise ValueError(f"{what} {amount!r} is not a number of USD, e.g. '0.25'") from None
    else:
        raise TypeError(f"{what} must be a Decimal, str or int of USD, got {type(amount).__name__}")
    if not value.is_finite():
        raise ValueError(f"{what} must be a finite amount, got {amount!r}")
    return value


def to_nano(amount: Money, *, what: str = "amount", allow_negative: bool = False) -> int:
    """Convert an exact USD amount to integer nano-USD.

    Raises ``ValueError`` if the amount has more precision than a nano-USD, is negative (unless
    ``allow_negative``) or does not fit a signed 64-bit counter, and ``TypeError`` for floats.
    """
    value = _as_decimal(amount, what)
    # Exact: the default context (28 digits) would silently round a longer amount to a whole nano-USD.
    exact = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact])
    try:
        scaled = value.scaleb(9, exact)
    except Inexact:  # an exponent beyond even the widest context: absurdly small or large
        raise ValueError(f"{what} {amount!r} is not a representable amount of USD") from None
    if scaled != scaled.to_integral_value(context=exact):
        raise ValueError(f"{what} {amount!r} is finer than one nano-USD (1e-9); round it first")
    if scaled < 0 and not allow_negative:
        raise ValueError(f"{what} must not be negative, got {amount!r}")
    if scaled.copy_abs() > INT64_MAX:  # compared as a Decimal: no huge int is ever built
        raise ValueError(f"{what} {amount!r} is too large: at most ${to_usd(INT64_MAX)}")
    return int(scaled)


def to_usd(nano: int) -> Decimal:
    """Integer nano-USD to an exact ``Decimal`` of USD (``2500`` -> ``Decimal('0.0000025')``)."""
    return Decimal(nano).scaleb(-9).normalize() if nano else Decimal(0)


def format_usd(nano: int) -> str:
    """Integer nano-USD as a readable dollar string: ``"$0.0075"``, ``"-$1.5"``, ``"$12"``."""
    usd = to_usd(abs(nano))
    return f"{'-' if nano < 0 else ''}${usd:f}"

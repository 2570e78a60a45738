"""Exact money: Decimal with at most two decimals, never float; the database holds NUMERIC."""

from decimal import Decimal, InvalidOperation

# The largest amount PostgreSQL's NUMERIC(15,2) range holds, which the money_amount domain enforces.
MAX_AMOUNT = Decimal("9999999999999.99")


class InvalidAmount(ValueError):
    """A value that is not an exact, finite amount of money."""


def to_money(value: str | int | Decimal) -> Decimal:
    """Parse an amount exactly. Floats are refused: they cannot represent most cents."""
    if isinstance(value, (float, bool)):
        raise InvalidAmount(f"{value!r} is a {type(value).__name__}; money is a decimal string or Decimal")
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmount(f"{value!r} is not a decimal number") from None
    if problem := amount_problem(amount):
        raise InvalidAmount(problem)
    return amount


def amount_problem(amount: Decimal) -> str | None:
    """Why a Decimal is not an amount of money (not finite, or out of range), or None if it is one.
    The check of every amount in every message: no parsing, no exception on the common path."""
    if not amount.is_finite():
        return f"{amount} is not a finite amount"
    # copy_abs, not abs(): abs() rounds to the context's 28 digits (9999999999999.99000000000000001 would pass)
    # and raises Overflow for an exponent past its range (1E+1000000), which no caller expects
    if amount.copy_abs() > MAX_AMOUNT:
        return f"{amount} exceeds the largest amount, {MAX_AMOUNT}"
    return None


def has_at_most_two_decimals(amount: Decimal) -> bool:
    return amount.as_tuple().exponent >= -2

"""Money is an integer number of paise (1 INR = 100 paise). Never float.

Rounding rule (the only one in the system): every fractional amount is computed
exactly with integers and rounded **half-up to the paisa once, at line level**.
A line's amount is never re-rounded after it is computed, and totals are sums of
rounded lines, so a total always equals the sum of the lines it shows.
"""

from __future__ import annotations

PAISE_PER_RUPEE = 100


def round_half_up_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-up (away from zero on .5)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return sign * quotient


def prorate(amount_paise: int, part: int, whole: int) -> int:
    """The share ``part / whole`` of an amount, rounded half-up to the paisa."""
    if not 0 <= part <= whole:
        raise ValueError(f"part {part} must lie within 0..{whole}")
    return round_half_up_div(amount_paise * part, whole)


def percent_of(amount_paise: int, basis_points: int) -> int:
    """``amount * basis_points / 10_000`` rounded half-up (9 % = 900 bp)."""
    return round_half_up_div(amount_paise * basis_points, 10_000)


def format_inr(amount_paise: int) -> str:
    """Human form for documents and messages, in Indian digit grouping:
    ``₹1,234.50``, ``₹12,34,567.00`` (lakh and crore, not millions)."""
    sign = "-" if amount_paise < 0 else ""
    rupees, paise = divmod(abs(amount_paise), PAISE_PER_RUPEE)
    return f"{sign}₹{_indian_grouping(rupees)}.{paise:02d}"


def _indian_grouping(rupees: int) -> str:
    digits = str(rupees)
    head, last_three = digits[:-3], digits[-3:]
    pairs = [head[max(0, end - 2) : end] for end in range(len(head), 0, -2)][::-1]
    return ",".join([*pairs, last_three])

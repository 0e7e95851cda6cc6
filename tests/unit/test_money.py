"""Money rules (shared.money): integer paise, half-up once at line level."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.money import format_inr, percent_of, prorate, round_half_up_div

amounts = st.integers(min_value=0, max_value=10**12)
signed = st.integers(min_value=-(10**12), max_value=10**12)
denominators = st.integers(min_value=1, max_value=10**9)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 3),  # 2.5 -> 3: exactly half goes up
        (3, 2, 2),  # 1.5 -> 2
        (7, 2, 4),  # 3.5 -> 4 (not banker's rounding to even)
        (1, 3, 0),  # 0.33 -> 0
        (2, 3, 1),  # 0.67 -> 1
        (299, 100, 3),
        (250, 100, 3),
        (249, 100, 2),
        (0, 7, 0),
        (-5, 2, -3),  # half away from zero for credits
        (-3, 2, -2),
        (-1, 3, 0),
        (-2, 3, -1),
        (10, 5, 2),
    ],
)
def test_round_half_up_div(numerator: int, denominator: int, expected: int) -> None:
    assert round_half_up_div(numerator, denominator) == expected


@pytest.mark.parametrize("denominator", [0, -1])
def test_round_half_up_div_rejects_non_positive_denominator(denominator: int) -> None:
    with pytest.raises(ValueError, match="denominator"):
        round_half_up_div(10, denominator)


@given(signed, denominators)
def test_round_half_up_div_is_nearest_with_halves_away_from_zero(n: int, d: int) -> None:
    result = round_half_up_div(n, d)
    exact = Fraction(n, d)
    error = abs(Fraction(result) - exact)
    assert error <= Fraction(1, 2)
    if error == Fraction(1, 2):
        assert abs(result) > abs(exact)  # a tie goes away from zero
    assert round_half_up_div(-n, d) == -result  # credits mirror charges


def test_prorate_examples() -> None:
    # 29900 * 18 / 28 = 19221.43 -> 19221
    assert prorate(29900, 18, 28) == 19221
    # 39900 * 15 / 30 = 19950 exactly
    assert prorate(39900, 15, 30) == 19950
    # 39900 * 6 h / 720 h = 332.5 -> 333
    assert prorate(39900, 21_600, 2_592_000) == 333


@given(amounts, st.integers(min_value=1, max_value=10**7))
def test_prorate_ends_are_exact(amount: int, whole: int) -> None:
    assert prorate(amount, 0, whole) == 0
    assert prorate(amount, whole, whole) == amount


@pytest.mark.parametrize(("part", "whole"), [(-1, 10), (11, 10)])
def test_prorate_rejects_part_outside_whole(part: int, whole: int) -> None:
    with pytest.raises(ValueError, match="part"):
        prorate(1000, part, whole)


@given(amounts, st.data())
def test_prorate_is_monotonic_in_part(amount: int, data: st.DataObject) -> None:
    whole = data.draw(st.integers(min_value=1, max_value=10**7))
    a = data.draw(st.integers(min_value=0, max_value=whole))
    b = data.draw(st.integers(min_value=a, max_value=whole))
    assert prorate(amount, a, whole) <= prorate(amount, b, whole)


@given(amounts, st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12))
def test_prorated_parts_sum_to_the_whole_within_rounding(amount: int, parts: list[int]) -> None:
    """Splitting a price into n periods loses or gains at most half a paisa per
    line, so the lines sum to within n/2 (hence within n-1) paise of the price."""
    whole = sum(parts)
    if whole == 0:
        return
    total = sum(prorate(amount, part, whole) for part in parts)
    n = len(parts)
    assert 2 * abs(total - amount) <= n
    assert abs(total - amount) <= max(n - 1, 0)


@pytest.mark.parametrize(
    ("amount", "basis_points", "expected"),
    [
        (39900, 900, 3591),  # CGST 9 % on a 399 rental
        (39900, 1800, 7182),  # IGST 18 %
        (50, 900, 5),  # 4.5 -> 5
        (49, 900, 4),  # 4.41 -> 4
        (-50, 900, -5),
        (12345, 0, 0),
    ],
)
def test_percent_of(amount: int, basis_points: int, expected: int) -> None:
    assert percent_of(amount, basis_points) == expected


@given(signed)
def test_percent_of_whole_and_halves(amount: int) -> None:
    assert percent_of(amount, 10_000) == amount
    # CGST + SGST are computed and rounded separately; together within a paisa of IGST
    assert abs(2 * percent_of(amount, 900) - percent_of(amount, 1800)) <= 1


@pytest.mark.parametrize(
    ("paise", "text"),
    [
        (123450, "₹1,234.50"),
        (5, "₹0.05"),
        (-5, "-₹0.05"),
        (0, "₹0.00"),
        (29900, "₹299.00"),
        (12345600, "₹1,23,456.00"),  # one lakh twenty-three thousand...
        (123456789012, "₹1,23,45,67,890.12"),  # crore grouping, not millions
        (-10000000, "-₹1,00,000.00"),
    ],
)
def test_format_inr(paise: int, text: str) -> None:
    assert format_inr(paise) == text

"""GST invoice numbering: financial year in IST, <= 16 characters, consecutive."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.invoice_numbers import (
    MAX_LENGTH,
    MAX_SEQUENCE,
    InvoiceNumber,
    financial_year,
    format_invoice_number,
    invoice_number_for,
    is_gst_compliant,
    parse_invoice_number,
)
from tests.unit.billing.builders import ist


@pytest.mark.parametrize(
    ("moment", "fy"),
    [
        (ist(2027, 3, 31, 23, 59, second=59), "2627"),
        (ist(2027, 4, 1, 0, 0, second=0), "2728"),
        # The same boundary seen in UTC: 1 April 00:00 IST is 31 March 18:30 UTC.
        (datetime(2027, 3, 31, 18, 29, 59, tzinfo=UTC), "2627"),
        (datetime(2027, 3, 31, 18, 30, 0, tzinfo=UTC), "2728"),
        (ist(2026, 4, 1), "2627"),
        (ist(2027, 1, 15), "2627"),
        (date(2027, 3, 31), "2627"),  # a date is an IST calendar date
        (date(2027, 4, 1), "2728"),
        (date(2099, 4, 1), "9900"),  # the century wraps
        (date(2100, 3, 31), "9900"),
    ],
)
def test_financial_year_runs_april_to_march_in_ist(moment: datetime | date, fy: str) -> None:
    assert financial_year(moment) == fy


def test_a_naive_datetime_has_no_financial_year() -> None:
    with pytest.raises(ValueError, match="naive"):
        financial_year(datetime(2027, 3, 31, 23, 59))


def test_format_and_the_largest_sequence_fit_16_characters() -> None:
    assert format_invoice_number("2627", 1) == "TB/2627/00000001"
    largest = format_invoice_number("2627", MAX_SEQUENCE)
    assert largest == "TB/2627/99999999"
    assert len(largest) == MAX_LENGTH == 16
    assert is_gst_compliant(largest)


@pytest.mark.parametrize(
    ("fy", "sequence", "prefix", "message"),
    [
        ("2627", 0, "TB", "sequence"),
        ("2627", MAX_SEQUENCE + 1, "TB", "sequence"),
        ("2628", 1, "TB", "consecutive"),
        ("26-7", 1, "TB", "consecutive"),
        ("2627", 1, "TBX", "prefix"),
        ("2627", 1, "tb", "prefix"),
        ("2627", 1, "T#", "prefix"),
    ],
)
def test_format_refuses_what_breaks_the_rules(
    fy: str, sequence: int, prefix: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        format_invoice_number(fy, sequence, prefix=prefix)


@pytest.mark.parametrize(
    "number",
    ["TB/2627/0000001", "TB/2627/000000001", "TB/2628/00000001", "TB/2627/00000000",
     "TB 2627 00000001", "tb/2627/00000001", ""],
)  # fmt: skip
def test_parse_refuses_malformed_numbers(number: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several distinct messages
        parse_invoice_number(number)


@pytest.mark.parametrize(
    ("number", "compliant"),
    [
        ("TB/2627/00000001", True),
        ("A-1", True),
        ("TB/2627/000000001", False),  # 17 characters
        ("TB_2627_1", False),
        ("TB 1", False),
        ("", False),
    ],
)
def test_gst_character_rule(number: str, compliant: bool) -> None:
    assert is_gst_compliant(number) is compliant


@given(
    prefix=st.from_regex(r"[A-Z0-9]{1,2}", fullmatch=True),
    start_year=st.integers(0, 99),
    sequence=st.integers(1, MAX_SEQUENCE),
)
def test_every_number_is_compliant_and_round_trips(
    prefix: str, start_year: int, sequence: int
) -> None:
    fy = f"{start_year:02d}{(start_year + 1) % 100:02d}"
    number = format_invoice_number(fy, sequence, prefix=prefix)
    assert len(number) <= MAX_LENGTH
    assert is_gst_compliant(number)
    assert parse_invoice_number(number) == InvoiceNumber(prefix, fy, sequence)
    assert str(parse_invoice_number(number)) == number


def test_numbers_are_consecutive_within_a_year_and_restart_at_the_boundary() -> None:
    """Bills issued around 1 April 00:00 IST, numbered from a per-FY counter (as the
    store will): consecutive and unique within each FY, restarting at 1."""
    moments = [
        ist(2027, 3, 31, 23, 58),
        ist(2027, 3, 31, 23, 59),
        ist(2027, 3, 31, 23, 59, second=59),
        ist(2027, 4, 1, 0, 0, second=0),
        ist(2027, 4, 1, 0, 0, second=1),
    ]
    counters: dict[str, int] = {"2627": 4_211_907}  # earlier bills of FY 2026-27
    numbers = []
    for moment in moments:
        fy = financial_year(moment)
        counters[fy] = counters.get(fy, 0) + 1
        numbers.append(invoice_number_for(moment, counters[fy]))
    assert numbers == [
        "TB/2627/04211908",
        "TB/2627/04211909",
        "TB/2627/04211910",
        "TB/2728/00000001",
        "TB/2728/00000002",
    ]
    assert len(set(numbers)) == len(numbers)
    assert all(len(number) <= 16 and is_gst_compliant(number) for number in numbers)
    parsed = [parse_invoice_number(number) for number in numbers]
    for fy in ("2627", "2728"):
        sequences = [p.sequence for p in parsed if p.financial_year == fy]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))

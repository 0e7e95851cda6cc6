"""The billing service's pure helpers: which cycle days a date bills, the cycle
ending on a bill date, invoice ids, and the final invoice's cut-off."""

from __future__ import annotations

from datetime import date

import pytest

from shared.services.billing import (
    InvoiceNotFound,
    cycle_days_billed_on,
    cycle_ending_on,
    parse_invoice_id,
)
from tests.unit.billing.builders import ist


@pytest.mark.parametrize(
    ("day", "cycle_days"),
    [
        (date(2027, 1, 15), [15]),
        (date(2027, 1, 31), [31]),
        (date(2027, 2, 28), [28, 29, 30, 31]),  # 28-day February
        (date(2028, 2, 28), [28]),  # leap year: the 29th comes
        (date(2028, 2, 29), [29, 30, 31]),
        (date(2026, 4, 30), [30, 31]),
    ],
)
def test_short_months_bill_days_29_to_31_on_their_last_day(
    day: date, cycle_days: list[int]
) -> None:
    assert cycle_days_billed_on(day) == cycle_days


def test_the_cycle_ending_on_a_bill_date() -> None:
    cycle = cycle_ending_on(31, date(2027, 2, 28))
    assert cycle is not None
    assert (cycle.start, cycle.end) == (ist(2027, 1, 31), ist(2027, 2, 28))
    assert cycle_ending_on(15, date(2027, 2, 28)) is None  # day 15 does not end today


@pytest.mark.parametrize(
    ("invoice_id", "user_id", "label"),
    [
        ("INV-u1-2026-11-01", "u1", "2026-11-01"),
        ("INV-demo-post-paid-2027-02-28", "demo-post-paid", "2027-02-28"),  # hyphens in ids
    ],
)
def test_invoice_ids_name_their_subscriber_and_cycle(
    invoice_id: str, user_id: str, label: str
) -> None:
    assert parse_invoice_id(invoice_id) == (user_id, label)


@pytest.mark.parametrize("bad", ["INV-2026-11-01", "inv-u1-2026-11-01", "INV-u1-2026-11", "x"])
def test_malformed_invoice_ids_are_unknown_invoices(bad: str) -> None:
    with pytest.raises(InvoiceNotFound):
        parse_invoice_id(bad)

"""GST invoice numbering rules (CGST Rules 2017, rule 46(b)): a consecutive
serial number unique within the financial year, at most 16 characters, only
letters, digits, "-" and "/".

Format: ``{prefix}/{fy}/{sequence}``, e.g. ``TB/2627/00000001`` for the first
invoice of FY 2026-27.

- prefix: 1-2 upper-case letters or digits (``TB``), room for a second series
  later (one per GST registration) without changing the width.
- fy: the last two digits of the April year and of the March year ("2627").
  The financial year runs 1 April 00:00 IST to 31 March 23:59:59 IST; the
  invoice date (bill date, IST) decides it.
- sequence: 8 digits, zero-padded, starting at 1 every financial year. With the
  2-character prefix that is exactly 16 characters at the largest allowed
  sequence, 99,999,999 invoices per year (8.3 million monthly bills); 7 digits
  would cap a series at under a million monthly subscribers.

The counter itself (one atomic DynamoDB counter per FY, incremented in the
same transaction that writes the invoice so no number is skipped or reused) is
the store's job; this module is the pure rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from shared.clock import to_ist

MAX_LENGTH = 16
SEQUENCE_DIGITS = 8
MAX_SEQUENCE = 10**SEQUENCE_DIGITS - 1
DEFAULT_PREFIX = "TB"
FIRST_MONTH = 4  # April
_PREFIX = re.compile(r"[A-Z0-9]{1,2}")
_FY = re.compile(r"[0-9]{4}")
_NUMBER = re.compile(r"(?P<prefix>[A-Z0-9]{1,2})/(?P<fy>[0-9]{4})/(?P<sequence>[0-9]{8})")
_GST_ALLOWED = re.compile(r"[A-Za-z0-9/-]{1,16}")


@dataclass(frozen=True, slots=True)
class InvoiceNumber:
    prefix: str
    financial_year: str
    sequence: int

    def __str__(self) -> str:
        return format_invoice_number(self.financial_year, self.sequence, prefix=self.prefix)


def _ist_date(moment: datetime | date) -> date:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("a naive datetime has no financial year: give it a UTC offset")
        return to_ist(moment).date()
    return moment  # a plain date is taken as an IST calendar date


def financial_year(moment: datetime | date) -> str:
    """FY "2627" for any instant from 1 April 2026 00:00 IST to 31 March 2027 23:59:59 IST."""
    day = _ist_date(moment)
    start_year = day.year if day.month >= FIRST_MONTH else day.year - 1
    return f"{start_year % 100:02d}{(start_year + 1) % 100:02d}"


def _check_financial_year(fy: str) -> None:
    if not _FY.fullmatch(fy) or (int(fy[:2]) + 1) % 100 != int(fy[2:]):
        raise ValueError(f"financial year must be two consecutive years like 2627, got {fy!r}")


def is_gst_compliant(number: str) -> bool:
    """At most 16 characters, only letters, digits, "-" and "/"."""
    return _GST_ALLOWED.fullmatch(number) is not None


def format_invoice_number(fy: str, sequence: int, *, prefix: str = DEFAULT_PREFIX) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError("prefix must be 1-2 upper-case letters or digits")
    _check_financial_year(fy)
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence must lie within 1..{MAX_SEQUENCE}, got {sequence}")
    number = f"{prefix}/{fy}/{sequence:0{SEQUENCE_DIGITS}d}"
    if not is_gst_compliant(number):  # guards future changes to the format
        raise ValueError(f"{number!r} breaks the GST numbering rule")
    return number


def invoice_number_for(
    bill_date: datetime | date, sequence: int, *, prefix: str = DEFAULT_PREFIX
) -> str:
    return format_invoice_number(financial_year(bill_date), sequence, prefix=prefix)


def parse_invoice_number(number: str) -> InvoiceNumber:
    match = _NUMBER.fullmatch(number)
    if match is None:
        raise ValueError(f"not an invoice number: {number!r}")
    fy = match["fy"]
    _check_financial_year(fy)
    sequence = int(match["sequence"])
    if sequence == 0:
        raise ValueError("invoice sequences start at 1")
    return InvoiceNumber(prefix=match["prefix"], financial_year=fy, sequence=sequence)

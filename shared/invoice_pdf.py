"""The tax invoice as a PDF (reportlab platypus), byte-for-byte deterministic.

Choices:
- Fonts: the standard Helvetica family, which PDF readers supply, so nothing
  is embedded. It has no rupee sign (U+20B9), and neither has the only TTF
  shipped with reportlab (Bitstream Vera, which predates the sign), so amounts
  read "Rs. 1,180.00" (Indian grouping from shared.money.format_inr).
- Determinism: reportlab's ``invariant`` mode fixes the creation date and the
  document id, so the same invoice always renders to the same bytes (tests
  compare renders; the S3 key can be content-addressed).
- Dates are IST calendar dates; the billing period shows its last day
  inclusive (the cycle end is exclusive at 00:00 IST).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    Spacer,
    Table,
    TableStyle,
)

from shared.billing import Invoice, InvoiceLine, OperatorDetails, TaxLine
from shared.clock import to_ist
from shared.money import PAISE_PER_RUPEE, format_inr
from shared.pdf import BODY, TITLE, a4_pdf, para
from shared.validation import region

SAC_TELECOM = "9984"  # SAC group: telecommunications services
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --- text helpers ------------------------------------------------------------------


def pdf_amount(paise: int) -> str:
    """``Rs. 1,180.00``: format_inr's grouping, without the glyph Helvetica lacks."""
    return format_inr(paise).replace("₹", "Rs. ")


def pdf_date(day: date) -> str:
    """``05 Mar 2027`` (month names fixed here, not taken from the process locale)."""
    return f"{day.day:02d} {_MONTHS[day.month - 1]} {day.year}"


def _ist_day(moment: datetime) -> date:
    return to_ist(moment).date()


def billing_period_text(invoice: Invoice) -> str:
    last_day = _ist_day(invoice.period_end - timedelta(microseconds=1))
    return f"{pdf_date(_ist_day(invoice.period_start))} to {pdf_date(last_day)}"


_ONES = (
    "", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
    "Eleven", "Twelve", "Thirteen", "Fourteen", "Fifteen", "Sixteen", "Seventeen",
    "Eighteen", "Nineteen",
)  # fmt: skip
_TENS = ("", "", "Twenty", "Thirty", "Forty", "Fifty", "Sixty", "Seventy", "Eighty", "Ninety")
# Indian scale: crore (10^7), lakh (10^5), thousand, hundred.
_SCALES = ((10**7, "Crore"), (10**5, "Lakh"), (1000, "Thousand"), (100, "Hundred"))


def _below_hundred(number: int) -> list[str]:
    if number < 20:
        return [_ONES[number]] if number else []
    tens, ones = divmod(number, 10)
    return [_TENS[tens], *([_ONES[ones]] if ones else [])]


def _words(number: int) -> list[str]:
    words: list[str] = []
    for scale, name in _SCALES:
        count, number = divmod(number, scale)
        if count:
            words += [*_words(count), name]
    return words + _below_hundred(number)


def amount_in_words(paise: int) -> str:
    """``Rupees One Thousand One Hundred Eighty and Fifty Paise Only`` (lakh/crore)."""
    rupees, rest = divmod(abs(paise), PAISE_PER_RUPEE)
    text = "Rupees " + (" ".join(_words(rupees)) or "Zero")
    if rest:
        text += " and " + " ".join(_below_hundred(rest)) + " Paise"
    return text + " Only"


# --- flowables ---------------------------------------------------------------------

_SMALL = ParagraphStyle("small", parent=BODY, fontSize=8, textColor=colors.grey)
_HEAD = ParagraphStyle("head", parent=BODY, fontName="Helvetica-Bold", fontSize=10)
_GRID = TableStyle(
    [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 9),
        ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.lightgrey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("ALIGN", (-1, 0), (-1, -1), "RIGHT"),
    ]
)
_KEY_VALUE = TableStyle(
    [
        ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9),
        ("FONT", (1, 0), (1, -1), "Helvetica", 9),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


def _place_text(state: str) -> str:
    area = region(state)
    return f"{area.name} ({area.gst_code})"


def _header(invoice: Invoice, operator: OperatorDetails) -> list[Any]:
    number = invoice.invoice_number or ""
    seller = [
        para(operator.name, _HEAD),
        *(para(line) for line in operator.address),
        para(f"GSTIN: {operator.gstin}"),
        para(f"State: {_place_text(operator.state)}"),
    ]
    customer = invoice.subscriber
    buyer = [
        para("Bill to", _HEAD),
        para(customer.name or customer.user_id),
        *([para(f"Mobile: {customer.msisdn}")] if customer.msisdn else []),
        para(f"Customer id: {customer.user_id}"),
        para(f"Place of supply: {_place_text(invoice.place_of_supply_state)}"),
    ]
    details = Table(
        [
            ["Invoice number", number],
            ["Invoice date", pdf_date(invoice.bill_date)],
            ["Billing period", billing_period_text(invoice)],
            ["Due date", pdf_date(invoice.due_date)],
            ["Reference", invoice.invoice_id],
            ["SAC", f"{SAC_TELECOM} (telecommunication services)"],
        ],
        colWidths=[32 * mm, 70 * mm],
        style=_KEY_VALUE,
    )
    parties = Table([[seller, buyer]], colWidths=[90 * mm, 90 * mm], style=_KEY_VALUE)
    return [para("TAX INVOICE", TITLE), parties, Spacer(1, 4 * mm), details]


def _line_period(line: InvoiceLine) -> str:
    if line.period_start is None or line.period_end is None:
        return ""
    last = _ist_day(line.period_end - timedelta(microseconds=1))
    return f"{pdf_date(_ist_day(line.period_start))} - {pdf_date(last)}"


def _lines_table(invoice: Invoice) -> Table:
    rows: list[list[Any]] = [["Description", "Period", "Quantity", "Amount"]]
    rows += [
        [para(line.description), _line_period(line), line.quantity or "",
         pdf_amount(line.amount_paise)]
        for line in invoice.lines
    ]  # fmt: skip
    return Table(rows, colWidths=[78 * mm, 44 * mm, 30 * mm, 28 * mm], style=_GRID, repeatRows=1)


def _tax_label(tax: TaxLine) -> str:
    return f"{tax.kind.value} @ {tax.rate_text} on {pdf_amount(tax.taxable_amount_paise)}"


def _totals_table(invoice: Invoice) -> Table:
    rows = [
        ["Subtotal", pdf_amount(invoice.subtotal_paise)],
        ["Taxable value", pdf_amount(invoice.taxable_value_paise)],
        *([_tax_label(tax), pdf_amount(tax.amount_paise)] for tax in invoice.tax_lines),
        ["Total tax", pdf_amount(invoice.tax_paise)],
        ["Total amount due", pdf_amount(invoice.total_paise)],
    ]
    style = TableStyle(
        [
            ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
            ("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 11),
            ("ALIGN", (1, 0), (1, -1), "RIGHT"),
            ("LINEABOVE", (0, -1), (-1, -1), 0.75, colors.black),
        ]
    )
    return Table(rows, colWidths=[70 * mm, 36 * mm], style=style, hAlign="RIGHT")


def _carry_note(invoice: Invoice) -> list[Any]:
    carry = invoice.carried_forward
    if carry.is_empty:
        return []
    parts = []
    if carry.credit_note_paise:
        parts.append(f"credit note balance {pdf_amount(carry.credit_note_paise)} (before tax)")
    if carry.credit_paise:
        parts.append(f"credit {pdf_amount(carry.credit_paise)}")
    return [para("Carried to your next invoice: " + "; ".join(parts) + ".")]


def _how_to_pay(invoice: Invoice, operator: OperatorDetails) -> list[Any]:
    due = pdf_date(invoice.due_date)
    return [
        para("How to pay", _HEAD),
        para(f"Pay {pdf_amount(invoice.total_paise)} by {due}."),
        para(f"UPI: {operator.upi_id}"),
        para(f"Online: {operator.payment_url}"),
        para(operator.late_fee_note),
        *([para(f"Help: {operator.support}")] if operator.support else []),
        Spacer(1, 4 * mm),
        para("This is a computer-generated invoice and needs no signature.", _SMALL),
    ]


def render_invoice_pdf(invoice: Invoice, operator: OperatorDetails) -> bytes:
    """The issued invoice (it must carry its GST number) as PDF bytes."""
    if invoice.invoice_number is None:
        raise ValueError("only an issued invoice (with its invoice number) can be rendered")
    story = [
        *_header(invoice, operator),
        Spacer(1, 6 * mm),
        _lines_table(invoice),
        Spacer(1, 4 * mm),
        _totals_table(invoice),
        para(amount_in_words(invoice.total_paise), _SMALL),
        Spacer(1, 4 * mm),
        *_carry_note(invoice),
        *_how_to_pay(invoice, operator),
    ]
    return a4_pdf(
        story,
        title=f"Invoice {invoice.invoice_number}",
        author=operator.name,
        subject=f"Invoice {invoice.invoice_id}",
    )

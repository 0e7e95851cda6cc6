"""The invoice PDF: read back with pypdf; deterministic bytes."""

from __future__ import annotations

from io import BytesIO

import pytest
from pypdf import PdfReader

from shared.billing import (
    Adjustment,
    BilledSubscriber,
    CreditNote,
    Invoice,
    OneTimeCharge,
    OperatorDetails,
    build_invoice,
)
from shared.cycles import cycle_containing
from shared.invoice_pdf import amount_in_words, pdf_amount, render_invoice_pdf
from shared.rating import UsageBalance
from tests.unit.billing.builders import ist, period

OPERATOR = OperatorDetails(
    name="TB Telecom Pvt Ltd",
    gstin="29ABCDE1234F1Z5",
    address=("12 MG Road", "Bengaluru 560001"),
    state="KA",
    upi_id="tbtelecom@upi",
    payment_url="https://pay.tbtelecom.example.in",
    late_fee_note="A late fee of Rs. 100 applies after the due date.",
)
MAY_2026 = cycle_containing(1, ist(2026, 5, 10))


def issued(state: str = "KA", **kwargs: object) -> Invoice:
    change = ist(2026, 5, 20, 14, 30)
    draft = build_invoice(
        subscriber=BilledSubscriber(user_id="u1", name="Asha <Rao> & Sons", msisdn="9800000001",
                                    state=state),
        cycle=MAY_2026,
        operator_state="KA",
        periods=[
            period(39900, ist(2026, 1, 1), change, plan_id="POST_BASIC_399"),
            period(149900, change, plan_id="POST_BUSINESS_1499"),
        ],
        plan_names={"POST_BASIC_399": "Postpaid Basic 399",
                    "POST_BUSINESS_1499": "Postpaid Business 1499"},
        usage=UsageBalance(overage_voice_paise=4560, used_voice_seconds=3725),
        one_time=[OneTimeCharge(description="SIM replacement", amount_paise=2500)],
        credit_notes=[CreditNote(credit_note_id="CN-3", against_invoice_id="INV-u1-2026-04-01",
                                 amount_paise=5000, reason="Outage on 3 April")],
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    return draft.with_number("TB/2627/00012345")


def text_of(pdf: bytes) -> str:
    reader = PdfReader(BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def test_the_pdf_shows_number_dates_lines_taxes_and_total() -> None:
    invoice = issued()
    pdf = render_invoice_pdf(invoice, OPERATOR)
    assert pdf.startswith(b"%PDF-")
    text = text_of(pdf)
    assert "TB/2627/00012345" in text
    assert f"Total amount due {pdf_amount(invoice.total_paise)}" in text
    assert "Due date 16 Jun 2026" in text
    assert "Invoice date 01 Jun 2026" in text
    assert "Billing period 01 May 2026 to 31 May 2026" in text
    for line in invoice.lines:
        assert line.description in text
        assert pdf_amount(line.amount_paise) in text
    for tax in invoice.tax_lines:
        label = f"{tax.kind.value} @ 9% on {pdf_amount(tax.taxable_amount_paise)}"
        assert f"{label} {pdf_amount(tax.amount_paise)}" in text
    for expected in ("TB Telecom Pvt Ltd", "GSTIN: 29ABCDE1234F1Z5", "Asha <Rao> & Sons",
                     "Place of supply: Karnataka (29)", "UPI: tbtelecom@upi",
                     "https://pay.tbtelecom.example.in", "late fee", "SAC 9984"):  # fmt: skip
        assert expected in text


def test_hand_checked_total_in_the_pdf() -> None:
    """Rental: 399 for 19d 14h 30m of 31d = 39900*1693800/2678400 = 25232.46 -> 25232;
    1499 for 11d 9h 30m = 149900*984600/2678400 = 55104.37 -> 55104. Plus voice 45.60,
    SIM 25.00, less credit note 50.00: taxable 823.96; CGST = SGST = 74.1564 -> 74.16;
    total 823.96 + 148.32 = 972.28."""
    invoice = issued()
    assert [line.amount_paise for line in invoice.lines] == [25232, 55104, 4560, 2500, -5000]
    assert [line.quantity for line in invoice.lines[:2]] == [
        "19d 14h 30m of 31d",
        "11d 9h 30m of 31d",
    ]
    assert invoice.total_paise == 97228
    assert "Total amount due Rs. 972.28" in text_of(render_invoice_pdf(invoice, OPERATOR))


def test_inter_state_pdf_shows_igst() -> None:
    invoice = issued("MH")
    text = text_of(render_invoice_pdf(invoice, OPERATOR))
    assert f"IGST @ 18% on {pdf_amount(invoice.taxable_value_paise)}" in text
    assert "CGST" not in text
    assert "Place of supply: Maharashtra (27)" in text


def test_rendering_is_deterministic() -> None:
    first = render_invoice_pdf(issued(), OPERATOR)
    assert render_invoice_pdf(issued(), OPERATOR) == first
    other = issued(adjustments=[Adjustment(description="Roaming pack", amount_paise=100)])
    assert render_invoice_pdf(other, OPERATOR) != first


def test_a_long_invoice_spans_pages_and_keeps_every_line() -> None:
    extras = [Adjustment(description=f"Adjustment number {i}", amount_paise=-(i + 1))
              for i in range(80)]  # fmt: skip
    invoice = issued(adjustments=extras)
    reader = PdfReader(BytesIO(render_invoice_pdf(invoice, OPERATOR)))
    assert len(reader.pages) > 1
    text = text_of(render_invoice_pdf(invoice, OPERATOR))
    assert all(f"Adjustment number {i} " in text for i in range(80))


def test_carried_credit_is_explained() -> None:
    invoice = issued(adjustments=[Adjustment(description="Goodwill", amount_paise=-200000)])
    text = text_of(render_invoice_pdf(invoice, OPERATOR))
    assert "Total amount due Rs. 0.00" in text
    carried = pdf_amount(invoice.carried_forward.credit_paise)
    assert f"Carried to your next invoice: credit {carried}" in text


def test_only_an_issued_invoice_renders() -> None:
    draft = issued().model_copy(update={"invoice_number": None})
    with pytest.raises(ValueError, match="invoice number"):
        render_invoice_pdf(draft, OPERATOR)


@pytest.mark.parametrize(
    ("paise", "words"),
    [
        (0, "Rupees Zero Only"),
        (97228, "Rupees Nine Hundred Seventy Two and Twenty Eight Paise Only"),
        (118000, "Rupees One Thousand One Hundred Eighty Only"),
        (12345678905, "Rupees Twelve Crore Thirty Four Lakh Fifty Six Thousand Seven Hundred "
                       "Eighty Nine and Five Paise Only"),
        (1_000_000_000_000, "Rupees One Thousand Crore Only"),
    ],
)  # fmt: skip
def test_amount_in_words_uses_lakh_and_crore(paise: int, words: str) -> None:
    assert amount_in_words(paise) == words


def test_pdf_amount_keeps_indian_grouping_without_the_rupee_glyph() -> None:
    assert pdf_amount(123456789) == "Rs. 12,34,567.89"
    assert pdf_amount(-5000) == "-Rs. 50.00"

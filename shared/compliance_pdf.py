"""The compliance report's PDF summary (reportlab platypus): a title, the month,
when it was generated, and one table per section of the CSV, in the CSV's order,
so the two documents always say the same thing.

Like the invoice (:mod:`shared.invoice_pdf`): standard Helvetica (amounts read
"Rs."), and reportlab's invariant mode, so the same report renders to the same bytes.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import groupby
from typing import Any

from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    Spacer,
    Table,
    TableStyle,
)

from shared.invoice_pdf import pdf_amount, pdf_date
from shared.pdf import BODY, CREATOR, TITLE, a4_pdf, para
from shared.services.compliance_report import ComplianceReport, Row, report_rows

_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)  # fmt: skip
_TITLES = {
    "activations": "Activations by subscriber type",
    "kyc_rejections": "KYC rejections",
    "escalations": "Escalations to operations",
    "blocks": "Blocks by reason applied",
    "unblocks": "Unblocks by reason lifted",
    "disconnection_requests": "Disconnection requests by reason",
    "disconnections": "Disconnections completed by reason",
    "invoices_issued": "Invoices issued",
    "credit_notes": "Credit notes",
    "payments_succeeded": "Payments succeeded",
    "payments_by_method": "Payments succeeded by method",
    "payments_failed": "Payments failed",
    "refunds": "Refunds",
    "reconciliations": "Payment reconciliations by outcome",
    "staff_actions": "Agent and admin actions (state-changing calls; refused: 4xx/5xx)",
}

# The CSV's metric names as the PDF shows them ("" when the section title says it).
_UNLABELLED = frozenset({"count", "by_reason", "by_outcome", "calls_by_action"})
_METRICS = {"amount_paise": "amount", "tax_paise": "tax"}

_HEAD = ParagraphStyle(
    "head", parent=BODY, fontName="Helvetica-Bold", fontSize=10, spaceBefore=4 * mm
)
_GRID = TableStyle(
    [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.lightgrey),
        ("ALIGN", (-1, 0), (-1, -1), "RIGHT"),
    ]
)


def month_title(label: str) -> str:
    """``2026-11`` -> ``November 2026``."""
    year, month = label.split("-")
    return f"{_MONTH_NAMES[int(month) - 1]} {year}"


def _value(row: Row) -> str:
    """Money in rupees as people read it; counts as they are."""
    if row.metric.endswith("_paise"):
        return pdf_amount(int(row.value))
    return row.value


def _label(row: Row) -> str:
    """``UPI: amount``, ``agent:a1: refused``, ``OVERDUE``, ``count``."""
    metric = "" if row.metric in _UNLABELLED else _METRICS.get(row.metric, row.metric)
    parts = [part for part in (row.dimension.replace("|", " "), metric) if part]
    return ": ".join(parts) or "count"


def _section(section: str, rows: list[Row]) -> list[Any]:
    shown = [[para(_label(row)), _value(row)] for row in rows if "rupees" not in row.metric]
    table = Table(shown, colWidths=[140 * mm, 40 * mm], style=_GRID, hAlign="LEFT")
    return [para(_TITLES.get(section, section), _HEAD), table]


def _heading(report: ComplianceReport) -> list[Any]:
    generated = report.generated_at
    first = report.period_start.date()
    last = (report.period_end - timedelta(microseconds=1)).date()
    scope = "" if report.complete else " (before the month ended: partial)"
    return [
        para(f"Compliance report: {month_title(report.month)} ({report.month})", TITLE),
        para(f"Period: {pdf_date(first)} to {pdf_date(last)} (IST)"),
        para(f"Generated: {pdf_date(generated.date())} {generated:%H:%M} IST{scope}"),
        para(f"Audit records counted: {report.records}"),
        Spacer(1, 2 * mm),
    ]


def render_compliance_pdf(report: ComplianceReport) -> bytes:
    story = _heading(report)
    body = (row for row in report_rows(report) if row.section != "report")
    for section, rows in groupby(body, key=lambda row: row.section):
        story += _section(section, list(rows))
    title = f"Compliance report {report.month}"
    return a4_pdf(story, title=title, author=CREATOR, subject=title)

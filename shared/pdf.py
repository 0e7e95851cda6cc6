"""What every TB-CSS PDF shares (invoices, compliance reports): A4 with 15 mm
margins, Helvetica body and title styles, and reproducible bytes."""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.platypus import Paragraph, SimpleDocTemplate  # type: ignore[import-untyped]

CREATOR = "TB-CSS"
MARGIN = 15 * mm

_STYLES = getSampleStyleSheet()
BODY = ParagraphStyle("body", parent=_STYLES["Normal"], fontName="Helvetica", fontSize=9)
TITLE = ParagraphStyle("title", parent=_STYLES["Title"], fontName="Helvetica-Bold", fontSize=16)


def para(text: str, style: ParagraphStyle = BODY) -> Paragraph:
    """A paragraph of plain text (escaped: names and ids are never markup)."""
    return Paragraph(escape(text), style)


def a4_pdf(story: Sequence[Any], *, title: str, author: str, subject: str) -> bytes:
    """The flowables as PDF bytes; invariant: a fixed creation date and document
    id, so the same document renders to the same bytes."""
    buffer = BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
        title=title,
        author=author,
        subject=subject,
        creator=CREATOR,
        invariant=True,
    )
    document.build(list(story))
    return buffer.getvalue()

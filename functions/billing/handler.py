"""Billing API: invoices (list, one, PDF) and credit notes.

Thin: routing, validation and the owner check of an invoice id (who may call
which route is the authorization matrix's, shared.authorization, checked before
the handler runs); the rules live in shared.services.billing.

The PDF is returned as the response body (base64 with ``isBase64Encoded``,
``application/pdf``; the REST API lists application/pdf as a binary media type),
not as a presigned link: an invoice is a few KB, far below the payload limits;
one authorized request serves it, and no bearer-less link to a tax document can
be forwarded or leak through logs and referrers.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from functions.billing.wiring import billing
from shared.auth import require_owner_or
from shared.billing import Invoice
from shared.logs import service_logger
from shared.services.billing import (
    HistoryEntry,
    InvoiceRecord,
    InvoiceStatus,
    IssuedCreditNote,
    parse_invoice_id,
    pdf_path,
)
from shared.web import Idempotency, IdempotencyKey, caller, create_resolver, documented

logger = service_logger()
app = create_resolver()
idempotency = Idempotency("billing")

USER_ID = r"^[A-Za-z0-9_-]{1,64}$"
INVOICE_ID = r"^INV-[A-Za-z0-9_-]{1,64}-\d{4}-\d{2}-\d{2}$"
PDF = "application/pdf"


class InvoiceView(Invoice):
    status: InvoiceStatus
    history: tuple[HistoryEntry, ...]
    credit_notes: tuple[IssuedCreditNote, ...]
    pdf_url: str = Field(description="GET this path for the PDF")

    @classmethod
    def of(cls, record: InvoiceRecord) -> InvoiceView:
        return cls(
            **dict(record.invoice),
            status=record.status,
            history=record.history,
            credit_notes=record.credit_notes,
            pdf_url=pdf_path(record.invoice_id),
        )


class InvoiceSummary(BaseModel):
    invoice_id: str
    invoice_number: str | None
    status: InvoiceStatus
    period_start: datetime
    period_end: datetime
    bill_date: date
    due_date: date
    total_paise: int
    pdf_url: str


class InvoiceList(BaseModel):
    user_id: str
    invoices: list[InvoiceSummary]


class CreditNoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_paise: Annotated[int, Field(gt=0, description="Pre-tax value reversed")]
    reason: Annotated[str, Field(min_length=3, max_length=200)]


class KeyedCreditNote(BaseModel):
    invoice_id: str
    request: CreditNoteRequest


def _visible(record: InvoiceRecord) -> InvoiceRecord:
    require_owner_or(caller(app), record.invoice.subscriber.user_id)
    return record


def _owned(invoice_id: str) -> InvoiceRecord:
    # Authorize on the id first (it names its subscriber): a stranger learns nothing more.
    user_id, _ = parse_invoice_id(invoice_id)
    require_owner_or(caller(app), user_id)
    return _visible(billing().invoice(invoice_id))


@app.get(
    "/users/<user_id>/invoices",
    summary="A subscriber's invoices, newest first",
    responses=documented(200, "Invoices", InvoiceList, 401, 403, 404),
)
def list_invoices(
    user_id: Annotated[str, Path(pattern=USER_ID)],
    limit: Annotated[int, Query(ge=1, le=100)] = 24,
) -> InvoiceList:
    records = billing().invoices_of(user_id, limit)
    return InvoiceList(
        user_id=user_id,
        invoices=[
            InvoiceSummary(
                invoice_id=r.invoice_id,
                invoice_number=r.invoice.invoice_number,
                status=r.status,
                period_start=r.invoice.period_start,
                period_end=r.invoice.period_end,
                bill_date=r.invoice.bill_date,
                due_date=r.invoice.due_date,
                total_paise=r.invoice.total_paise,
                pdf_url=pdf_path(r.invoice_id),
            )
            for r in records
        ],
    )


@app.get(
    "/invoices/<invoice_id>",
    summary="One invoice: lines, taxes, totals, due date, status, history",
    responses=documented(200, "The invoice", InvoiceView, 401, 403, 404),
)
def get_invoice(invoice_id: Annotated[str, Path(pattern=INVOICE_ID)]) -> InvoiceView:
    return InvoiceView.of(_owned(invoice_id))


@app.get(
    "/invoices/<invoice_id>/pdf",
    summary="The invoice PDF (application/pdf)",
    responses={
        200: {"description": "The PDF", "content": {PDF: {}}},
        **{k: v for k, v in documented(200, "", InvoiceView, 401, 403, 404).items() if k != 200},
    },
)
# No return annotation on purpose: Powertools then skips response validation, which
# would try to serialize the PDF bytes as JSON text.
def get_invoice_pdf(invoice_id: Annotated[str, Path(pattern=INVOICE_ID)]):  # type: ignore[no-untyped-def]
    record = _owned(invoice_id)
    return Response(
        status_code=200,
        content_type=PDF,
        body=billing().pdf(record),
        headers={"Content-Disposition": f'inline; filename="{invoice_id}.pdf"'},
    )


@app.post(
    "/invoices/<invoice_id>/credit-notes",
    summary="Issue a credit note against an invoice (admin); it lands on the next invoice",
    responses=documented(201, "Credit note issued", IssuedCreditNote, 401, 403, 404, 409, 415),
)
def credit_note(
    invoice_id: Annotated[str, Path(pattern=INVOICE_ID)],
    body: CreditNoteRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response[IssuedCreditNote]:
    principal = caller(app)
    # The key is scoped to the route template: the invoice id goes into the hashed body.
    keyed = KeyedCreditNote(invoice_id=invoice_id, request=body)
    token = idempotency.request_token(app, invoice_id)

    def action() -> tuple[int, IssuedCreditNote]:
        note = billing().issue_credit_note(
            invoice_id, body.amount_paise, body.reason, principal.subject, request_token=token
        )
        return 201, note

    return idempotency.run(app, keyed, action)  # type: ignore[return-value]


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register(context)
    return app.resolve(event, context)

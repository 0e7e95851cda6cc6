"""The monthly compliance report: IST months, what is counted from the audit
records (made from real event shapes), the CSV, the PDF and the service that
stores both."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pypdf import PdfReader

from functions.audit.report import requested_month
from shared.audit import AuditRecord
from shared.clock import FixedClock
from shared.compliance_pdf import render_compliance_pdf
from shared.models import SubscriberStatus
from shared.payment_gateway import GatewayStatus, GatewayTransaction
from shared.payments import PaymentMethod
from shared.service_control import BlockReason
from shared.services.compliance_report import (
    ComplianceReport,
    ComplianceReports,
    InvalidMonth,
    ReportMonth,
    compile_report,
    render_csv,
)
from shared.services.payments import PaymentRequest
from tests.apigw import Caller
from tests.unit.audit.events import (
    activated,
    activation_step,
    credit_note,
    disconnection,
    invoice_issued,
    records,
    staff_call,
    status_change,
)
from tests.unit.payments.fakes import (
    INVOICE,
    OWNER,
    POSTPAID_USER,
    PREPAID_OWNER,
    PREPAID_USER,
    World,
    make_world,
)

NOVEMBER = ReportMonth(2026, 11)
IN_NOVEMBER = datetime(2026, 11, 10, 5, 0, tzinfo=UTC)
GENERATED = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # the monthly rule: 06:00 IST on the 1st
AGENT = Caller("a1", "agent")
ADMIN = Caller("root", "admin")
B = BlockReason
JANITOR = timedelta(minutes=16)  # past the janitor's 15 minutes


def report_of(events_records: list[AuditRecord]) -> ComplianceReport:
    return compile_report(events_records, NOVEMBER, GENERATED)


def csv_rows(report: ComplianceReport) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(render_csv(report).decode("utf-8"))))


def csv_value(report: ComplianceReport, section: str, metric: str, dimension: str = "") -> str:
    rows = csv_rows(report)
    [value] = [
        r["value"]
        for r in rows
        if (r["section"], r["metric"], r["dimension"]) == (section, metric, dimension)
    ]
    return value


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


# --- months ---------------------------------------------------------------------------


def test_a_month_is_an_ist_calendar_month() -> None:
    assert NOVEMBER.start == datetime(2026, 10, 31, 18, 30, tzinfo=UTC)
    assert NOVEMBER.end == datetime(2026, 11, 30, 18, 30, tzinfo=UTC)
    assert ReportMonth.containing(datetime(2026, 10, 31, 18, 30, tzinfo=UTC)) == NOVEMBER
    assert ReportMonth.containing(datetime(2026, 10, 31, 18, 29, 59, tzinfo=UTC)).label == "2026-10"
    assert ReportMonth(2026, 12).end == datetime(2026, 12, 31, 18, 30, tzinfo=UTC)


def test_the_monthly_run_reports_the_month_that_just_ended() -> None:
    assert requested_month({"time": "2026-12-01T00:30:00Z"}) == NOVEMBER
    assert requested_month({"time": "2027-01-01T00:30:00Z"}).label == "2026-12"
    # A retry late on the 1st (IST) still reports the same month.
    assert requested_month({"time": "2026-12-01T18:00:00Z"}) == NOVEMBER
    assert requested_month({"month": "2026-09", "time": "2026-12-01T00:30:00Z"}).label == "2026-09"


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-11", "November", ""])
def test_a_month_not_written_yyyy_mm_is_refused_saying_how_to_write_it(text: str) -> None:
    with pytest.raises(InvalidMonth, match=r"month must be YYYY-MM \(e\.g\. 2026-11\)"):
        requested_month({"month": text})


# --- what is counted --------------------------------------------------------------------


def test_the_lifecycle_of_lines_is_counted_by_type_kind_and_reason() -> None:
    t = IN_NOVEMBER
    month = records(
        activated(t, "u1", "prepaid"),
        activated(t, "u2", "postpaid"),
        activated(t, "u3", "postpaid"),
        activation_step("KycRejected", t, "u4"),
        activation_step("ActivationEscalated", t, "u5"),
        *status_change(t, "u1", applied={B.OVERDUE}),
        *status_change(t, "u2", applied={B.LOST_SIM, B.FRAUD_SUSPECTED}, actor="agent:a1"),
        *status_change(t, "u1", lifted={B.OVERDUE}, actor="system:PaymentSucceeded"),
        # The line held for its dues before a disconnection: blocked, no reason of its own.
        *status_change(t, "u3", status_after=SubscriberStatus.PENDING_DISCONNECT),
        disconnection("DisconnectionRequested", t, "u3", "USER_REQUEST"),
        disconnection("DisconnectionRequested", t, "u6", "PORT_OUT"),
        disconnection("DisconnectionEscalated", t, "u6", "PORT_OUT"),
        disconnection("SubscriberDisconnected", t, "u3", "USER_REQUEST"),
    )

    report = report_of(month)

    assert report.records == len(month)
    assert report.activations == {"postpaid": 2, "prepaid": 1}
    assert report.kyc_rejections == 1
    assert report.escalations == {"activation": 1, "disconnection": 1, "payment": 0}
    blocks = {reason: n for reason, n in report.blocks_by_reason.items() if n}
    assert blocks == {"OVERDUE": 1, "LOST_SIM": 1, "FRAUD_SUSPECTED": 1, "PENDING_DISCONNECT": 1}
    assert {reason: n for reason, n in report.unblocks_by_reason.items() if n} == {"OVERDUE": 1}
    requests = report.disconnection_requests_by_reason
    assert (requests["USER_REQUEST"], requests["PORT_OUT"], requests["FRAUD"]) == (1, 1, 0)
    assert report.disconnections_by_reason["USER_REQUEST"] == 1
    assert sum(report.disconnections_by_reason.values()) == 1
    assert report.staff_actions == {}  # an agent's block is a domain event, not a call


def test_invoices_and_credit_notes_are_counted_with_their_amounts() -> None:
    month = records(
        invoice_issued(IN_NOVEMBER, "u1", total_paise=118_000, tax_paise=18_000),
        invoice_issued(IN_NOVEMBER, "u2", total_paise=70_682, tax_paise=10_782),
        credit_note(IN_NOVEMBER, "u1", 5_000),
    )

    report = report_of(month)

    assert report.invoices_issued.count == 2
    assert report.invoices_issued.amount_paise == 188_682
    assert report.invoices_issued.amount_rupees == "1886.82"
    assert report.invoices_issued.tax_paise == 28_782
    assert (report.credit_notes.count, report.credit_notes.amount_paise) == (1, 5_000)


def pay(world: World, method: PaymentMethod, scenario: str, **request: Any) -> None:
    """One payment through the gateway simulator (``scenario``), its webhook delivered."""
    world.gateway.script = [scenario]
    if method is PaymentMethod.UPI:
        owner, payer = OWNER, {"user_id": POSTPAID_USER, "vpa": "asha@okhdfc"}
    else:
        owner, payer = PREPAID_OWNER, {"user_id": PREPAID_USER, "token": "tok_test"}
    fields = {"method": method, **payer, **request}
    world.service.create(owner, PaymentRequest.model_validate(fields))
    world.deliver()


@pytest.fixture
def payments() -> World:
    """The payment service, on the gateway simulator, taking every kind of payment."""
    world = make_world()
    world.invoices.add()
    world.invoices.add("INV-u1-2026-10-01", total_paise=20_000)
    pay(world, PaymentMethod.UPI, "decline", invoice_id=INVOICE)
    pay(world, PaymentMethod.WALLET, "capture", amount_paise=50_000)  # a top-up
    pay(world, PaymentMethod.CARD, "capture", plan_id="PRE_SMART_299")  # a recharge
    pay(world, PaymentMethod.UPI, "capture", invoice_id=INVOICE)  # in full
    pay(world, PaymentMethod.UPI, "debitfail", invoice_id="INV-u1-2026-10-01")
    world.janitor(JANITOR)  # refunds the debit reported failed; re-checks the decline
    return world


def test_payments_are_counted_by_outcome_and_method_with_their_amounts(payments: World) -> None:
    plan_price = payments.catalog.get("PRE_SMART_299").price_paise
    report = report_of(records(*payments.events.events))

    assert report.payments_succeeded.count == 3
    assert report.payments_succeeded.amount_paise == 50_000 + plan_price + 70_682
    by_method = {m: (t.count, t.amount_paise) for m, t in report.payments_by_method.items()}
    assert by_method == {
        "CARD": (1, plan_price),
        "MANDATE": (0, 0),
        "UPI": (1, 70_682),
        "WALLET": (1, 50_000),
    }
    assert (report.payments_failed.count, report.payments_failed.amount_paise) == (2, 90_682)
    assert (report.refunds.count, report.refunds.amount_paise) == (1, 20_000)
    outcomes = report.reconciliations_by_outcome
    assert {o: n for o, n in outcomes.items() if n} == {"failed": 1, "refunded": 1}
    assert set(outcomes) == {"applied", "closed", "escalated", "failed", "refunded"}


def test_a_payment_handed_to_operations_is_an_escalation() -> None:
    world = make_world()
    world.invoices.add()
    pay(world, PaymentMethod.UPI, "nowebhook", invoice_id=INVOICE)
    [payment] = world.store.payments.values()
    txn = world.gateway.transaction_of(payment.payment_id)
    pending = {**txn.model_dump(), "status": GatewayStatus.PENDING, "captured_paise": 0}
    world.gateway.ledger.put(GatewayTransaction.model_validate(pending))
    world.janitor(JANITOR)
    world.janitor(timedelta(hours=2))  # still pending at the gateway: to operations

    report = report_of(records(*world.events.events))

    assert report.escalations["payment"] == 1
    assert report.reconciliations_by_outcome["escalated"] == 1


def test_staff_calls_are_counted_per_actor_and_action_refused_ones_too() -> None:
    t = IN_NOVEMBER
    unblock = "/service-control/unblock/{user_id}"
    month = records(
        staff_call(t, AGENT, "POST", "/activate-sim", 202),
        staff_call(t, AGENT, "POST", unblock, 409, user_id="u1"),
        staff_call(t, AGENT, "POST", unblock, 200, user_id="u2"),
        staff_call(t, ADMIN, "POST", "/invoices/{invoice_id}/credit-notes", 201, invoice_id="I1"),
    )

    report = report_of(month)

    agent = report.staff_actions["agent:a1"]
    assert (agent.role, agent.calls, agent.refused) == ("agent", 3, 1)
    assert agent.by_action == {"POST /activate-sim": 1, f"POST {unblock}": 2}
    admin = report.staff_actions["admin:root"]
    assert (admin.calls, admin.refused, admin.by_action) == (
        1,
        0,
        {"POST /invoices/{invoice_id}/credit-notes": 1},
    )
    assert list(report.staff_actions) == ["admin:root", "agent:a1"]


def test_an_event_announced_twice_is_one_change() -> None:
    """A retried step publishes the same event id again, at a later time: two
    audit items, one change."""
    first = activation_step("KycRejected", IN_NOVEMBER, "u4")
    again = first.model_copy(update={"occurred_at": IN_NOVEMBER + timedelta(minutes=3)})

    report = report_of(records(first, again))

    assert report.kyc_rejections == 1
    assert report.records == 1


def test_only_the_months_records_count_its_edges_in_ist() -> None:
    month = records(
        activated(NOVEMBER.start - timedelta(seconds=1), "october"),  # 31 Oct 23:59:59 IST
        activated(NOVEMBER.start, "first"),  # 1 Nov 00:00 IST
        activated(NOVEMBER.end - timedelta(microseconds=1), "last"),
        activated(NOVEMBER.end, "december"),
    )

    assert report_of(month).activations["prepaid"] == 2


def test_every_known_reason_method_and_outcome_is_listed_at_zero() -> None:
    report = report_of([])

    assert set(report.blocks_by_reason) == {r.value for r in BlockReason} | {"PENDING_DISCONNECT"}
    assert set(report.disconnections_by_reason) == {
        "USER_REQUEST",
        "FRAUD",
        "PORT_OUT",
        "DECEASED",
        "INACTIVITY",
    }
    assert set(report.payments_by_method) == {"UPI", "CARD", "WALLET", "MANDATE"}
    assert report.records == 0
    assert report.complete


# --- the CSV --------------------------------------------------------------------------


def sample_month() -> list[AuditRecord]:
    t = IN_NOVEMBER
    return records(
        activated(t, "u1", "postpaid"),
        *status_change(t, "u1", applied={B.OVERDUE}),
        invoice_issued(t, "u1", total_paise=118_050, tax_paise=18_008),
        staff_call(t, AGENT, "POST", "/service-control/unblock/{user_id}", 409, user_id="u1"),
    )


def test_the_csv_has_a_row_per_count_named_by_section_metric_and_dimension() -> None:
    report = report_of(sample_month())
    rows = csv_rows(report)
    raw = render_csv(report)

    assert raw.startswith(b"section,metric,dimension,value\r\n")
    assert raw.decode("utf-8")  # UTF-8
    assert csv_value(report, "report", "month") == "2026-11"
    assert csv_value(report, "report", "period_start") == "2026-11-01T00:00:00+05:30"
    assert csv_value(report, "report", "period_end") == "2026-12-01T00:00:00+05:30"
    assert csv_value(report, "report", "complete") == "true"
    assert csv_value(report, "activations", "count", "postpaid") == "1"
    assert csv_value(report, "blocks", "by_reason", "OVERDUE") == "1"
    assert csv_value(report, "blocks", "by_reason", "THEFT") == "0"
    assert csv_value(report, "invoices_issued", "count") == "1"
    assert csv_value(report, "invoices_issued", "amount_paise") == "118050"
    assert csv_value(report, "invoices_issued", "amount_rupees") == "1180.50"
    assert csv_value(report, "invoices_issued", "tax_rupees") == "180.08"
    assert csv_value(report, "staff_actions", "refused", "agent:a1") == "1"
    action = "agent:a1|POST /service-control/unblock/{user_id}"
    assert csv_value(report, "staff_actions", "calls_by_action", action) == "1"
    assert len({(r["section"], r["metric"], r["dimension"]) for r in rows}) == len(rows)


def test_the_csv_is_the_same_whatever_order_the_records_come_in() -> None:
    month = sample_month()
    shuffled = month[::-1]
    random.Random(3).shuffle(shuffled)

    assert render_csv(report_of(shuffled)) == render_csv(report_of(month))


def test_a_name_a_spreadsheet_would_run_as_a_formula_is_written_as_text() -> None:
    [call] = records(staff_call(IN_NOVEMBER, AGENT, "POST", "/activate-sim", 202))
    hostile = call.model_copy(update={"actor": "=HYPERLINK(evil)"})

    report = report_of([hostile])

    assert csv_value(report, "staff_actions", "calls", "'=HYPERLINK(evil)") == "1"


# --- the PDF --------------------------------------------------------------------------


def test_the_pdf_summary_names_the_month_and_shows_the_counts() -> None:
    report = report_of(sample_month())

    pdf = render_compliance_pdf(report)

    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert "Compliance report: November 2026 (2026-11)" in text
    assert "Period: 01 Nov 2026 to 30 Nov 2026 (IST)" in text
    assert "Generated: 01 Dec 2026 06:00 IST" in text
    assert "Invoices issued" in text
    assert "Rs. 1,180.50" in text
    assert "Agent and admin actions" in text
    assert "agent:a1 POST /service-control/unblock/{user_id}" in text
    assert render_compliance_pdf(report) == pdf  # same report, same bytes


def test_a_report_made_before_the_month_ended_says_it_is_partial() -> None:
    report = compile_report(sample_month(), NOVEMBER, IN_NOVEMBER + timedelta(days=1))

    assert not report.complete
    assert "partial" in pdf_text(render_compliance_pdf(report))


# --- the service ------------------------------------------------------------------------


class ListTrail:
    def __init__(self, month: list[AuditRecord]) -> None:
        self.month = month
        self.asked: list[tuple[datetime, datetime]] = []

    def between(self, start: datetime, end: datetime) -> list[AuditRecord]:
        self.asked.append((start, end))
        return self.month


class Documents:
    def __init__(self) -> None:
        self.stored: dict[str, tuple[bytes, str]] = {}

    def put(self, key: str, body: bytes, content_type: str) -> str:
        self.stored[key] = (body, content_type)
        return f"s3://reports/{key}"


def test_the_service_stores_the_csv_and_the_pdf_under_the_months_keys() -> None:
    trail, documents = ListTrail(sample_month()), Documents()
    reports = ComplianceReports(
        trail=trail,
        documents=documents,
        clock=FixedClock(GENERATED),
        render_pdf=render_compliance_pdf,
    )

    written = reports.write(NOVEMBER)

    assert trail.asked == [(NOVEMBER.start, NOVEMBER.end)]
    assert written.csv_key == "compliance/2026-11/compliance-2026-11.csv"
    assert written.pdf_key == "compliance/2026-11/compliance-2026-11.pdf"
    assert written.csv_uri == "s3://reports/compliance/2026-11/compliance-2026-11.csv"
    body, content_type = documents.stored[written.csv_key]
    assert (body, content_type) == (render_csv(written.report), "text/csv; charset=utf-8")
    pdf, pdf_type = documents.stored[written.pdf_key]
    assert pdf.startswith(b"%PDF-")
    assert pdf_type == "application/pdf"
    assert written.report.invoices_issued.amount_paise == 118_050


def test_a_month_that_has_not_started_is_refused() -> None:
    reports = ComplianceReports(
        trail=ListTrail([]),
        documents=Documents(),
        clock=FixedClock(IN_NOVEMBER),
        render_pdf=render_compliance_pdf,
    )

    with pytest.raises(InvalidMonth, match="2026-12 has not started yet"):
        reports.write(ReportMonth(2026, 12))

"""The monthly compliance report: what the audit trail says happened in one IST
calendar month, counted, and written as a CSV plus a PDF summary.

Counting is pure (:func:`compile_report`): records in, a :class:`ComplianceReport`
out. It reads only what :func:`shared.audit.record_of_event` keeps of an event
(codes and ``*_paise`` amounts in ``after``), counts a record once however many
times its event was announced (the audit id is the event's id), and lists every
known reason, method and outcome, zero or not, so months compare row by row.

Staff actions are the records of staff calls (source ``api``: one per
state-changing request by an agent or an admin, whatever its answer); the domain
events those calls cause are counted in their own sections, not again here.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, computed_field

from shared.audit import AuditRecord
from shared.clock import IST, Clock, to_ist
from shared.errors import InvalidRequest
from shared.models import SubscriberType
from shared.money import PAISE_PER_RUPEE
from shared.payments import PaymentMethod
from shared.service_control import BlockReason, DisconnectReason
from shared.services.payments import RECONCILED_OUTCOMES

STAFF_SOURCE = "api"  # shared.staff_actions.SOURCE: the records of staff calls
# A ServiceBlocked that applies no reason holds the line for dues before a disconnection.
HOLD = "PENDING_DISCONNECT"
ESCALATION_KINDS = ("activation", "disconnection", "payment")
CSV_HEADER = ("section", "metric", "dimension", "value")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}
_MONTH = re.compile(r"^(?P<year>\d{4})-(?P<month>\d{2})$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet would evaluate
MONTHS_PER_YEAR = 12


class InvalidMonth(InvalidRequest):
    code = "INVALID_MONTH"


@dataclass(frozen=True, order=True)
class ReportMonth:
    """An IST calendar month: [1st 00:00 IST, next 1st 00:00 IST)."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> ReportMonth:
        match = _MONTH.match(text.strip())
        if match is None or not 1 <= int(match["month"]) <= MONTHS_PER_YEAR:
            raise InvalidMonth(f"month must be YYYY-MM (e.g. 2026-11), not {text!r}")
        return cls(int(match["year"]), int(match["month"]))

    @classmethod
    def containing(cls, moment: datetime) -> ReportMonth:
        local = to_ist(moment)
        return cls(local.year, local.month)

    @classmethod
    def before(cls, moment: datetime) -> ReportMonth:
        """The month that ended last: a run on the 1st reports the month before."""
        return cls.containing(moment).previous()

    def previous(self) -> ReportMonth:
        return ReportMonth(self.year - 1, 12) if self.month == 1 else self._shift(-1)

    def next(self) -> ReportMonth:
        return ReportMonth(self.year + 1, 1) if self.month == MONTHS_PER_YEAR else self._shift(1)

    def _shift(self, months: int) -> ReportMonth:
        return ReportMonth(self.year, self.month + months)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=IST)

    @property
    def end(self) -> datetime:
        return self.next().start


# --- the report ----------------------------------------------------------------------


class Totals(BaseModel):
    """How many, and how much money."""

    model_config = ConfigDict(frozen=True)

    count: int = 0
    amount_paise: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_rupees(self) -> str:
        return rupees(self.amount_paise)


class InvoiceTotals(Totals):
    tax_paise: int = 0


class StaffActivity(BaseModel):
    """One agent's or admin's state-changing calls."""

    model_config = ConfigDict(frozen=True)

    role: str
    calls: int
    refused: int  # answered 4xx or 5xx: attempted, nothing changed
    by_action: dict[str, int]


class ComplianceReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    month: str
    period_start: datetime
    period_end: datetime
    generated_at: datetime
    complete: bool  # generated after the month ended
    records: int  # distinct audit records of the month
    activations: dict[str, int]  # by subscriber type
    kyc_rejections: int
    escalations: dict[str, int]  # activation / disconnection / payment
    blocks_by_reason: dict[str, int]
    unblocks_by_reason: dict[str, int]
    disconnection_requests_by_reason: dict[str, int]
    disconnections_by_reason: dict[str, int]
    invoices_issued: InvoiceTotals
    credit_notes: Totals
    payments_succeeded: Totals
    payments_by_method: dict[str, Totals]  # succeeded ones
    payments_failed: Totals
    refunds: Totals
    reconciliations_by_outcome: dict[str, int]
    staff_actions: dict[str, StaffActivity]  # by actor, e.g. "agent:a1"


def rupees(paise: int) -> str:
    """``118050`` -> ``1180.50``: plain digits for a spreadsheet (no grouping, no symbol)."""
    sign = "-" if paise < 0 else ""
    whole, rest = divmod(abs(paise), PAISE_PER_RUPEE)
    return f"{sign}{whole}.{rest:02d}"


# --- counting --------------------------------------------------------------------------


def _zeros(names: Iterable[str]) -> Counter[str]:
    return Counter(dict.fromkeys(names, 0))


class _Tally:
    """The running counts while the month's records stream past."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.activations = _zeros(t.value for t in SubscriberType)
        self.kyc_rejections = 0
        self.escalations = _zeros(ESCALATION_KINDS)
        self.blocks = _zeros([*(r.value for r in BlockReason), HOLD])
        self.unblocks = _zeros(r.value for r in BlockReason)
        self.requests = _zeros(r.value for r in DisconnectReason)
        self.disconnections = _zeros(r.value for r in DisconnectReason)
        self.money: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # name -> count, paise
        self.invoice_tax_paise = 0
        self.methods: dict[str, list[int]] = {m.value: [0, 0] for m in PaymentMethod}
        self.reconciliations = _zeros(sorted(RECONCILED_OUTCOMES))
        self.staff: dict[str, Counter[str]] = defaultdict(Counter)
        self.refused: Counter[str] = Counter()

    def add(self, record: AuditRecord) -> None:
        if record.audit_id in self.seen:
            return  # the same event announced again (a retry): one change
        self.seen.add(record.audit_id)
        if record.source == STAFF_SOURCE:
            self._staff(record)
            return
        count = _COUNTERS.get(record.action)
        if count is not None:
            count(self, record)

    def _staff(self, record: AuditRecord) -> None:
        self.staff[record.actor][record.action] += 1
        if int(record.after.get("http_status", 0)) >= 400:
            self.refused[record.actor] += 1

    def add_money(self, name: str, record: AuditRecord, field: str = "amount_paise") -> None:
        totals = self.money[name]
        totals[0] += 1
        totals[1] += _paise(record, field)

    def report(self, month: ReportMonth, generated_at: datetime) -> ComplianceReport:
        invoices = self.money["invoices"]
        return ComplianceReport(
            month=month.label,
            period_start=month.start,
            period_end=month.end,
            generated_at=to_ist(generated_at).replace(microsecond=0),
            complete=generated_at >= month.end,
            records=len(self.seen),
            activations=_sorted(self.activations),
            kyc_rejections=self.kyc_rejections,
            escalations=dict(self.escalations),
            blocks_by_reason=_sorted(self.blocks),
            unblocks_by_reason=_sorted(self.unblocks),
            disconnection_requests_by_reason=_sorted(self.requests),
            disconnections_by_reason=_sorted(self.disconnections),
            invoices_issued=InvoiceTotals(
                count=invoices[0], amount_paise=invoices[1], tax_paise=self.invoice_tax_paise
            ),
            credit_notes=self._totals("credit_notes"),
            payments_succeeded=self._totals("payments_succeeded"),
            payments_by_method={
                method: Totals(count=count, amount_paise=paise)
                for method, (count, paise) in sorted(self.methods.items())
            },
            payments_failed=self._totals("payments_failed"),
            refunds=self._totals("refunds"),
            reconciliations_by_outcome=_sorted(self.reconciliations),
            staff_actions={actor: self._activity(actor) for actor in sorted(self.staff)},
        )

    def _totals(self, name: str) -> Totals:
        count, paise = self.money[name]
        return Totals(count=count, amount_paise=paise)

    def _activity(self, actor: str) -> StaffActivity:
        actions = self.staff[actor]
        return StaffActivity(
            role=actor.partition(":")[0],
            calls=sum(actions.values()),
            refused=self.refused[actor],
            by_action=_sorted(actions),
        )


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _paise(record: AuditRecord, field: str = "amount_paise") -> int:
    value = record.after.get(field, 0)
    return value if isinstance(value, int) else 0


def _codes(value: Any) -> list[str]:
    """A reason field as a list of codes (one code, a list, or nothing)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _activated(tally: _Tally, record: AuditRecord) -> None:
    tally.activations[str(record.after.get("subscriber_type", "unknown"))] += 1


def _kyc_rejected(tally: _Tally, _record: AuditRecord) -> None:
    tally.kyc_rejections += 1


def _escalated(kind: str) -> Callable[[_Tally, AuditRecord], None]:
    def count(tally: _Tally, _record: AuditRecord) -> None:
        tally.escalations[kind] += 1

    return count


def _blocked(tally: _Tally, record: AuditRecord) -> None:
    applied = _codes(record.after.get("applied"))
    tally.blocks.update(applied or [str(record.after.get("status", HOLD))])


def _unblocked(tally: _Tally, record: AuditRecord) -> None:
    tally.unblocks.update(_codes(record.after.get("lifted")))


def _disconnection_requested(tally: _Tally, record: AuditRecord) -> None:
    tally.requests.update(_codes(record.after.get("reason")))


def _disconnected(tally: _Tally, record: AuditRecord) -> None:
    tally.disconnections.update(_codes(record.after.get("reason")))


def _invoice_issued(tally: _Tally, record: AuditRecord) -> None:
    tally.add_money("invoices", record, "total_paise")
    tally.invoice_tax_paise += _paise(record, "tax_paise")


def _money(name: str) -> Callable[[_Tally, AuditRecord], None]:
    def count(tally: _Tally, record: AuditRecord) -> None:
        tally.add_money(name, record)

    return count


def _payment_succeeded(tally: _Tally, record: AuditRecord) -> None:
    tally.add_money("payments_succeeded", record)
    by_method = tally.methods.setdefault(str(record.after.get("method", "unknown")), [0, 0])
    by_method[0] += 1
    by_method[1] += _paise(record)


def _reconciled(tally: _Tally, record: AuditRecord) -> None:
    outcome = str(record.after.get("outcome", "unknown"))
    tally.reconciliations[outcome] += 1
    if outcome == "escalated":
        tally.escalations["payment"] += 1


_COUNTERS: dict[str, Callable[[_Tally, AuditRecord], None]] = {
    "SubscriberActivated": _activated,
    "KycRejected": _kyc_rejected,
    "ActivationEscalated": _escalated("activation"),
    "DisconnectionEscalated": _escalated("disconnection"),
    "ServiceBlocked": _blocked,
    "ServiceUnblocked": _unblocked,
    "DisconnectionRequested": _disconnection_requested,
    "SubscriberDisconnected": _disconnected,
    "InvoiceIssued": _invoice_issued,
    "CreditNoteIssued": _money("credit_notes"),
    "PaymentSucceeded": _payment_succeeded,
    "PaymentFailed": _money("payments_failed"),
    "PaymentRefunded": _money("refunds"),
    "PaymentReconciled": _reconciled,
}


def compile_report(
    records: Iterable[AuditRecord], month: ReportMonth, generated_at: datetime
) -> ComplianceReport:
    """The month's counts from its records (those outside the month are ignored)."""
    tally = _Tally()
    for record in records:
        if month.start <= record.occurred_at < month.end:
            tally.add(record)
    return tally.report(month, generated_at)


# --- rendering -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    section: str
    metric: str
    dimension: str
    value: str


def _count_rows(section: str, metric: str, counts: dict[str, int]) -> Iterator[Row]:
    for dimension, count in counts.items():
        yield Row(section, metric, dimension, str(count))


def _totals_rows(section: str, totals: Totals, dimension: str = "") -> Iterator[Row]:
    yield Row(section, "count", dimension, str(totals.count))
    yield Row(section, "amount_paise", dimension, str(totals.amount_paise))
    yield Row(section, "amount_rupees", dimension, totals.amount_rupees)


def report_rows(report: ComplianceReport) -> list[Row]:
    """The report as ``section, metric, dimension, value`` rows, in a fixed order."""
    invoices = report.invoices_issued
    rows = [
        Row("report", "month", "", report.month),
        Row("report", "period_start", "", report.period_start.isoformat()),
        Row("report", "period_end", "", report.period_end.isoformat()),
        Row("report", "generated_at", "", report.generated_at.isoformat()),
        Row("report", "complete", "", str(report.complete).lower()),
        Row("report", "records", "", str(report.records)),
        *_count_rows("activations", "count", report.activations),
        Row("kyc_rejections", "count", "", str(report.kyc_rejections)),
        *_count_rows("escalations", "count", report.escalations),
        *_count_rows("blocks", "by_reason", report.blocks_by_reason),
        *_count_rows("unblocks", "by_reason", report.unblocks_by_reason),
        *_count_rows(
            "disconnection_requests", "by_reason", report.disconnection_requests_by_reason
        ),
        *_count_rows("disconnections", "by_reason", report.disconnections_by_reason),
        *_totals_rows("invoices_issued", invoices),
        Row("invoices_issued", "tax_paise", "", str(invoices.tax_paise)),
        Row("invoices_issued", "tax_rupees", "", rupees(invoices.tax_paise)),
        *_totals_rows("credit_notes", report.credit_notes),
        *_totals_rows("payments_succeeded", report.payments_succeeded),
        *(
            row
            for method, totals in report.payments_by_method.items()
            for row in _totals_rows("payments_by_method", totals, method)
        ),
        *_totals_rows("payments_failed", report.payments_failed),
        *_totals_rows("refunds", report.refunds),
        *_count_rows("reconciliations", "by_outcome", report.reconciliations_by_outcome),
    ]
    for actor, activity in report.staff_actions.items():
        rows += [
            Row("staff_actions", "calls", actor, str(activity.calls)),
            Row("staff_actions", "refused", actor, str(activity.refused)),
            *_count_rows(
                "staff_actions",
                "calls_by_action",
                {f"{actor}|{action}": n for action, n in activity.by_action.items()},
            ),
        ]
    return rows


def _cell(text: str) -> str:
    """A text cell a spreadsheet shows as text, never runs as a formula."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def render_csv(report: ComplianceReport) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in report_rows(report):
        writer.writerow((row.section, row.metric, _cell(row.dimension), row.value))
    return out.getvalue().encode("utf-8")


# --- writing it ------------------------------------------------------------------------


class RecordSource(Protocol):
    def between(self, start: datetime, end: datetime) -> Iterable[AuditRecord]:
        """Every audit record of ``[start, end)`` (:class:`AuditTrail`)."""
        ...


class ReportDocuments(Protocol):
    def put(self, key: str, body: bytes, content_type: str) -> str:
        """Store the document under ``key`` (replacing it); its location (a URI)."""
        ...


def report_key(month: ReportMonth, extension: str) -> str:
    return f"compliance/{month.label}/compliance-{month.label}.{extension}"


class WrittenReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    month: str
    csv_key: str
    pdf_key: str
    csv_uri: str
    pdf_uri: str
    report: ComplianceReport


PdfRenderer = Callable[[ComplianceReport], bytes]


class ComplianceReports:
    """Compiles a month's report from the audit trail and stores its two documents.
    A rerun replaces them (the bucket keeps versions) with the counts of the trail
    as it is then."""

    def __init__(
        self,
        *,
        trail: RecordSource,
        documents: ReportDocuments,
        clock: Clock,
        render_pdf: PdfRenderer,
    ) -> None:
        self._trail = trail
        self._documents = documents
        self._clock = clock
        self._render_pdf = render_pdf

    def write(self, month: ReportMonth) -> WrittenReport:
        now = self._clock.now()
        if month.start > now:
            raise InvalidMonth(f"{month.label} has not started yet")
        records = self._trail.between(month.start, month.end)
        report = compile_report(records, month, now)
        csv_key, pdf_key = report_key(month, "csv"), report_key(month, "pdf")
        csv_uri = self._documents.put(csv_key, render_csv(report), CONTENT_TYPES["csv"])
        pdf_uri = self._documents.put(pdf_key, self._render_pdf(report), CONTENT_TYPES["pdf"])
        return WrittenReport(
            month=month.label,
            csv_key=csv_key,
            pdf_key=pdf_key,
            csv_uri=csv_uri,
            pdf_uri=pdf_uri,
            report=report,
        )

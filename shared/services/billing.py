"""Billing: bill runs, invoice issue (exactly once), credit notes, the overdue and
prepaid-expiry sweeps, and the off-cycle final invoice.

The arithmetic is :mod:`shared.billing` (pure); this service gathers its inputs
through ports and stores what it returns:

- :class:`BillingStore`: the subscriber, plan periods, billing account (carried
  credit, pending credit notes), the FY invoice counter, invoices, sweep indexes;
- :class:`CycleUsageSource`: closes the cycle in usage rating (later CDRs become
  late usage) and reads its overage plus the late usage of earlier cycles;
- :class:`InvoiceDocuments`: the PDF store; :class:`TaskQueue`: the fan-out;
- :class:`~shared.events.EventPublisher`, :class:`~shared.clock.Clock`.

Exactly once: the invoice id is deterministic per subscriber and cycle
(``INV-{user}-{cycle}``). Issue = read the FY counter n, then ONE transaction:
put the invoice if absent, set the counter to n+1 if it is still n, write the
billing account if its version is unchanged (carry cleared/set, credit notes
consumed) and mark the late-usage items billed if still pending. A rerun or a
redelivered message finds the invoice and stops; a racing worker loses the put.
Numbers are therefore consecutive without gaps: a number is taken only by the
transaction that stores its invoice.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import Field

from shared.billing import (
    BilledSubscriber,
    CarryForward,
    CreditNote,
    Invoice,
    LateUsageItem,
    LineKind,
    build_invoice,
    invoice_id_for,
)
from shared.clock import IST, Clock, isoformat, to_ist
from shared.cycles import BillCycle, cycle_containing
from shared.errors import (
    ActivePlanExists,
    Conflict,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidRequest,
    NotFound,
    PlanNotAllowed,
    SubscriberNotActive,
)
from shared.events import DomainEvent, EventPublisher
from shared.invoice_numbers import financial_year, invoice_number_for
from shared.models import (
    Frozen,
    Plan,
    RenewalRule,
    Subscriber,
    SubscriberStatus,
    SubscriberType,
    Subscription,
)
from shared.rating import UsageBalance

logger = Logger(child=True)

SOURCE = "billing"
# Statuses a bill run invoices (a final invoice is issued whatever the status). A line
# PENDING_DISCONNECT had its final invoice at the request: rental stopped there.
BILLABLE = frozenset({SubscriberStatus.ACTIVE, SubscriberStatus.TEMP_BLOCKED})
CHARGE_KINDS = frozenset(
    {
        LineKind.RENTAL,
        LineKind.OVERAGE_DATA,
        LineKind.OVERAGE_VOICE,
        LineKind.OVERAGE_SMS,
        LineKind.LATE_USAGE,
        LineKind.ONE_TIME,
    }
)
ISSUE_ATTEMPTS = 5  # recomputations after a concurrent change to the billing account
COUNTER_ATTEMPTS = 50  # re-reads of the FY counter when other invoices took the number
# A transaction holds at most 100 items: invoice, counter, account, late items.
MAX_LATE_ITEMS_PER_INVOICE = 90
_INVOICE_ID = re.compile(r"^INV-(?P<user_id>[A-Za-z0-9_-]{1,64})-(?P<label>\d{4}-\d{2}-\d{2})$")


# --- errors ------------------------------------------------------------------------


class InvoiceNotFound(NotFound):
    code = "INVOICE_NOT_FOUND"


class CreditExceedsInvoice(Conflict):
    code = "CREDIT_EXCEEDS_INVOICE"


class InvoiceNotCreditable(Conflict):
    code = "INVOICE_NOT_CREDITABLE"


class InvoiceNotPayable(Conflict):
    """Paid, void, or the amount is more than what is still owed."""

    code = "INVOICE_NOT_PAYABLE"


class InvoiceAlreadyIssued(Exception):
    """The invoice's conditional put failed: another attempt stored it."""


class CounterMoved(Exception):
    """The FY counter is no longer the value read: another invoice took the number."""


class AccountChanged(Exception):
    """The billing account (credit notes, carry) changed since it was read."""


class InvoiceRace(Exception):
    """Another worker is issuing this invoice right now: retry the message later
    (by then the winner has published it, or the retry finishes its publication)."""


# --- records ---------------------------------------------------------------------


class InvoiceStatus(StrEnum):
    ISSUED = "ISSUED"
    PAID = "PAID"
    OVERDUE = "OVERDUE"
    VOID = "VOID"


UNPAID = frozenset({InvoiceStatus.ISSUED, InvoiceStatus.OVERDUE})


class HistoryEntry(Frozen):
    at: datetime
    event: str = Field(
        description="ISSUED, CREDIT_NOTE, OVERDUE, OVERDUE_NOTICE, PART_PAYMENT, PAID, VOID"
    )
    detail: str = ""
    amount_paise: int | None = None


class IssuedCreditNote(CreditNote):
    issued_at: datetime
    issued_by: str


class InvoiceRecord(Frozen):
    """An issued invoice with what happened to it since."""

    invoice: Invoice
    status: InvoiceStatus
    history: tuple[HistoryEntry, ...] = ()
    credit_notes: tuple[IssuedCreditNote, ...] = ()
    published: bool = False  # PDF stored and InvoiceIssued sent
    overdue_notified: bool = False  # the notice is claimed: nobody else sends it
    overdue_notice_published: bool = False  # and InvoiceOverdue reached the bus
    pdf_key: str | None = None
    paid_paise: int = Field(default=0, ge=0, description="Payments applied so far")

    @property
    def invoice_id(self) -> str:
        return self.invoice.invoice_id

    @property
    def credited_paise(self) -> int:
        return sum(note.amount_paise for note in self.credit_notes)

    @property
    def outstanding_paise(self) -> int:
        return outstanding_paise(self.status, self.invoice.total_paise, self.paid_paise)


def outstanding_paise(status: InvoiceStatus, total_paise: int, paid_paise: int) -> int:
    """What is still owed on an invoice: nothing once paid or void. A credit note
    does not reduce it: it is a CREDIT line on the next invoice (shared.billing)."""
    if status not in UNPAID:
        return 0
    return max(total_paise - paid_paise, 0)


class BillingAccount(Frozen):
    """``USER#<id>/BILLING``: what the next invoice takes over. ``version`` 0: absent."""

    carry: CarryForward = CarryForward()
    pending_credit_notes: tuple[CreditNote, ...] = ()
    version: int = 0

    @property
    def is_empty(self) -> bool:
        return self.carry.is_empty and not self.pending_credit_notes


class PendingLateUsage(Frozen):
    """A late-usage item not yet on an invoice, with its key (SK) for marking it billed."""

    sort_key: str
    item: LateUsageItem


class CycleUsageSnapshot(Frozen):
    balance: UsageBalance | None = None
    late: tuple[PendingLateUsage, ...] = ()


class BillingInputs(Frozen):
    subscriber: Subscriber | None
    periods: tuple[Subscription, ...] = ()
    account: BillingAccount = BillingAccount()
    counter: int = Field(default=0, description="Last invoice sequence of the FY")
    existing: InvoiceRecord | None = None


class Outcome(StrEnum):
    ISSUED = "ISSUED"
    ALREADY_ISSUED = "ALREADY_ISSUED"
    PUBLISHED = "PUBLISHED"  # found stored but unpublished: publication finished now
    NOTHING_TO_BILL = "NOTHING_TO_BILL"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class IssueResult:
    outcome: Outcome
    invoice_id: str
    record: InvoiceRecord | None = None


# --- ports -------------------------------------------------------------------------


class BillingStore(Protocol):
    def load_for_billing(
        self, user_id: str, invoice_id: str, period: str, fy: str
    ) -> BillingInputs:
        """Profile + plan history (one query), account, counter and invoice (one batch read)."""
        ...

    def subscriber(self, user_id: str) -> Subscriber | None: ...

    def read_counter(self, fy: str) -> int: ...

    def issue(
        self,
        record: InvoiceRecord,
        *,
        counter_was: int,
        account: BillingAccount,
        account_version: int,
        late_keys: Sequence[str],
    ) -> None:
        """The issue transaction (module docstring). Raises InvoiceAlreadyIssued,
        CounterMoved or AccountChanged and writes nothing."""
        ...

    def mark_published(self, record: InvoiceRecord, pdf_key: str) -> None: ...

    def get_invoice(self, invoice_id: str) -> InvoiceRecord:
        """Raises InvoiceNotFound."""
        ...

    def list_invoices(self, user_id: str, limit: int) -> list[InvoiceRecord]:
        """Newest first."""
        ...

    def add_credit_note(self, record: InvoiceRecord, note: IssuedCreditNote) -> None:
        """Atomically: on the invoice (if its credits are still what ``record`` shows)
        and into the subscriber's pending credit notes. Raises AccountChanged."""
        ...

    def mark_overdue(self, record: InvoiceRecord, at: datetime) -> bool:
        """ISSUED -> OVERDUE; False if it was no longer ISSUED."""
        ...

    def claim_overdue_notice(self, record: InvoiceRecord, at: datetime) -> bool:
        """Once per invoice: True for the one caller that may send InvoiceOverdue."""
        ...

    def mark_overdue_notice_published(self, record: InvoiceRecord) -> None:
        """InvoiceOverdue reached the bus: a retry of the task need not send it again."""
        ...

    def cycle_subscribers(self, cycle_day: int, shard: int) -> Iterable[str]: ...

    def unpaid_due_on(self, due: date, shard: int) -> Iterable[str]:
        """Invoice ids of unpaid invoices due on ``due`` (the due-date index)."""
        ...

    def expiring_on(self, day: date, shard: int) -> Iterable[tuple[str, str]]:
        """(user_id, subscription_id) of prepaid plans expiring on ``day`` (IST)."""
        ...

    def release_expired(self, user_id: str, subscription_id: str) -> bool:
        """Take the plan out of the expiry index, once, marked unannounced; False if
        already done or replaced."""
        ...

    def expiry_unannounced(self, user_id: str, subscription_id: str) -> bool:
        """Whether this plan was released and PlanExpired is still to go out."""
        ...

    def mark_expiry_announced(self, user_id: str, subscription_id: str) -> None: ...


class CycleUsageSource(Protocol):
    def close_cycle_and_read(self, subscriber: Subscriber, cycle: BillCycle) -> CycleUsageSnapshot:
        """Mark the cycle closed in rating (idempotent) and read its usage, plus
        the late usage of earlier cycles not yet invoiced."""
        ...


class InvoiceDocuments(Protocol):
    def put(self, invoice: Invoice) -> str:
        """Render and store the PDF; its key (the same invoice: the same key and bytes)."""
        ...

    def get(self, key: str) -> bytes: ...


class TaskQueue(Protocol):
    def send(self, messages: Sequence[dict[str, Any]]) -> int: ...


class PlanCatalog(Protocol):
    def get(self, plan_id: str) -> Plan: ...

    def list(self) -> list[Plan]: ...


class ActivePlans(Protocol):
    def get_active(self, user_id: str) -> Subscription | None: ...


class Subscribing(Protocol):
    def subscribe(self, user_id: str, plan_id: str) -> Any: ...


# --- pure helpers ------------------------------------------------------------------


def ist_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), IST)


def cycle_days_billed_on(day: date) -> list[int]:
    """Bill-cycle days whose cycle ends at 00:00 IST on ``day``: the day itself,
    plus 29-31 on a short month's last day (cycle day 31 bills on 30 April)."""
    last = calendar.monthrange(day.year, day.month)[1]
    return [day.day, *range(day.day + 1, 32)] if day.day == last else [day.day]


def cycle_ending_on(cycle_day: int, bill_date: date) -> BillCycle | None:
    """The cycle of ``cycle_day`` that ends at 00:00 IST on ``bill_date`` (None if none does)."""
    end = ist_midnight(bill_date)
    cycle = cycle_containing(cycle_day, end - timedelta(microseconds=1))
    return cycle if cycle.end == end else None


def parse_invoice_id(invoice_id: str) -> tuple[str, str]:
    """``INV-{user_id}-{YYYY-MM-DD}`` -> (user_id, cycle label); InvoiceNotFound if malformed."""
    match = _INVOICE_ID.fullmatch(invoice_id)
    if match is None:
        raise InvoiceNotFound(f"no invoice {invoice_id!r}")
    return match["user_id"], match["label"]


def has_charges(invoice: Invoice) -> bool:
    return any(line.kind in CHARGE_KINDS and line.amount_paise for line in invoice.lines)


def pdf_path(invoice_id: str) -> str:
    return f"/invoices/{invoice_id}/pdf"


# --- the service ---------------------------------------------------------------------


@dataclass(frozen=True)
class BillingConfig:
    operator_state: str = "KA"
    due_days: int = 15
    grace_days: int = 7


class BillingService:
    def __init__(
        self,
        *,
        store: BillingStore,
        usage: CycleUsageSource,
        documents: InvoiceDocuments,
        events: EventPublisher,
        clock: Clock,
        catalog: PlanCatalog,
        config: BillingConfig = BillingConfig(),
    ) -> None:
        self._store = store
        self._usage = usage
        self._documents = documents
        self._events = events
        self._clock = clock
        self._catalog = catalog
        self._config = config
        self._plan_names: dict[str, str] | None = None

    # --- issue ---------------------------------------------------------------

    def issue_cycle_invoice(self, user_id: str, cycle_day: int, bill_date: date) -> IssueResult:
        """The bill run's unit of work: one subscriber's invoice for the cycle ending
        at 00:00 IST on ``bill_date``. Safe to repeat and to race."""
        cycle = cycle_ending_on(cycle_day, bill_date)
        if cycle is None:
            raise ValueError(f"no cycle of day {cycle_day} ends on {bill_date}")
        return self._issue(user_id, cycle, until=None, cycle_day=cycle_day)

    def final_invoice(self, user_id: str, until: datetime | None = None) -> IssueResult:
        """Off-cycle final invoice up to ``until`` (default now), e.g. at disconnection.

        It is the invoice of the current cycle (same id), so the cycle's bill run
        later finds it and issues nothing more; rental stops at ``until``.
        """
        cut_off = until or self._clock.now()
        subscriber = self._store.subscriber(user_id)
        if subscriber is None:
            raise NotFound(f"no subscriber {user_id!r}")
        cycle = cycle_containing(subscriber.bill_cycle_day, cut_off)
        return self._issue(user_id, cycle, until=cut_off, cycle_day=None)

    def _issue(
        self, user_id: str, cycle: BillCycle, *, until: datetime | None, cycle_day: int | None
    ) -> IssueResult:
        invoice_id = invoice_id_for(user_id, cycle)
        fy = financial_year(to_ist(until or cycle.end).date())
        for _ in range(ISSUE_ATTEMPTS):
            inputs = self._store.load_for_billing(user_id, invoice_id, cycle.label, fy)
            if inputs.existing is not None:
                return self._finish(inputs.existing)
            subscriber = inputs.subscriber
            if subscriber is None or subscriber.subscriber_type is not SubscriberType.POSTPAID:
                return IssueResult(Outcome.SKIPPED, invoice_id)
            if until is None and (
                subscriber.status not in BILLABLE or subscriber.bill_cycle_day != cycle_day
            ):
                return IssueResult(Outcome.SKIPPED, invoice_id)
            usage = self._usage.close_cycle_and_read(subscriber, cycle)
            late = usage.late[:MAX_LATE_ITEMS_PER_INVOICE]
            account = inputs.account
            draft = build_invoice(
                subscriber=BilledSubscriber.of(subscriber),
                cycle=cycle,
                operator_state=self._config.operator_state,
                periods=inputs.periods,
                usage=usage.balance,
                late_usage=[pending.item for pending in late],
                credit_notes=account.pending_credit_notes,
                brought_forward=account.carry if not account.carry.is_empty else None,
                plan_names=self._names(),
                due_days=self._config.due_days,
                until=until,
            )
            if not has_charges(draft):
                return IssueResult(Outcome.NOTHING_TO_BILL, invoice_id)
            next_account = BillingAccount(carry=draft.carried_forward, version=account.version)
            try:
                record = self._store_numbered(
                    draft, inputs.counter, fy, next_account, account.version, late
                )
            except AccountChanged:
                continue  # a credit note arrived meanwhile: compute again with it
            return self._finish(record, issued_now=True)
        raise AccountChanged(f"{invoice_id}: the billing account kept changing")

    def _store_numbered(  # noqa: PLR0917 - one caller; every argument distinct
        self,
        draft: Invoice,
        counter: int,
        fy: str,
        account: BillingAccount,
        account_version: int,
        late: Sequence[PendingLateUsage],
    ) -> InvoiceRecord:
        for _ in range(COUNTER_ATTEMPTS):
            numbered = draft.with_number(invoice_number_for(draft.bill_date, counter + 1))
            record = InvoiceRecord(
                invoice=numbered,
                status=InvoiceStatus.ISSUED,
                history=(
                    HistoryEntry(
                        at=self._clock.now(),
                        event="ISSUED",
                        detail=numbered.invoice_number or "",
                        amount_paise=numbered.total_paise,
                    ),
                ),
            )
            try:
                self._store.issue(
                    record,
                    counter_was=counter,
                    account=account,
                    account_version=account_version,
                    late_keys=[pending.sort_key for pending in late],
                )
            except CounterMoved:
                counter = self._store.read_counter(fy)
                continue
            except InvoiceAlreadyIssued:
                raise InvoiceRace(f"{draft.invoice_id} is being issued by another worker") from None
            return record
        raise CounterMoved(f"{draft.invoice_id}: no invoice number after {COUNTER_ATTEMPTS} tries")

    def _finish(self, record: InvoiceRecord, *, issued_now: bool = False) -> IssueResult:
        """Store the PDF and announce the invoice, unless that was done already."""
        if record.published:
            return IssueResult(Outcome.ALREADY_ISSUED, record.invoice_id, record)
        key = self._documents.put(record.invoice)
        invoice = record.invoice
        self._events.publish(
            [
                DomainEvent(
                    detail_type="InvoiceIssued",
                    source=SOURCE,
                    occurred_at=self._clock.now(),
                    # A retry before mark_published announces again: the same event.
                    event_id=f"InvoiceIssued-{invoice.invoice_id}",
                    correlation_id=invoice.invoice_id,
                    detail={
                        "user_id": invoice.subscriber.user_id,
                        "invoice_id": invoice.invoice_id,
                        "invoice_number": invoice.invoice_number,
                        "bill_date": invoice.bill_date.isoformat(),
                        "due_date": invoice.due_date.isoformat(),
                        "period_start": isoformat(invoice.period_start),
                        "period_end": isoformat(invoice.period_end),
                        "total_paise": invoice.total_paise,
                        "tax_paise": invoice.tax_paise,
                        "currency": invoice.currency,
                        "link": pdf_path(invoice.invoice_id),
                    },
                )
            ]
        )
        self._store.mark_published(record, key)
        published = record.model_copy(update={"published": True, "pdf_key": key})
        outcome = Outcome.ISSUED if issued_now else Outcome.PUBLISHED
        return IssueResult(outcome, record.invoice_id, published)

    def _names(self) -> dict[str, str]:
        if self._plan_names is None:
            self._plan_names = {plan.plan_id: plan.name for plan in self._catalog.list()}
        return self._plan_names

    # --- reads ---------------------------------------------------------------

    def invoice(self, invoice_id: str) -> InvoiceRecord:
        parse_invoice_id(invoice_id)
        return self._store.get_invoice(invoice_id)

    def invoices_of(self, user_id: str, limit: int = 24) -> list[InvoiceRecord]:
        return self._store.list_invoices(user_id, limit)

    def pdf(self, record: InvoiceRecord) -> bytes:
        """The stored PDF (rendered and stored now if publication has not happened yet)."""
        key = record.pdf_key or self._documents.put(record.invoice)
        return self._documents.get(key)

    # --- credit notes ----------------------------------------------------------

    def issue_credit_note(
        self,
        invoice_id: str,
        amount_paise: int,
        reason: str,
        issued_by: str,
        request_token: str | None = None,
    ) -> IssuedCreditNote:
        """Against an issued invoice: it lands on the subscriber's next invoice
        (reducing its taxable value) and in this invoice's history.

        ``request_token`` names the request (web.Idempotency.request_token): the note
        takes its id from it, so a retry of a request that committed and then failed
        (its answer lost; the idempotency record is dropped when an attempt raises)
        returns that note instead of crediting again, and one with another amount or
        reason is refused (IdempotencyKeyReused)."""
        if amount_paise <= 0:
            raise InvalidRequest("amount_paise must be positive")
        credit_note_id = f"CN-{(request_token or uuid.uuid4().hex)[:12].upper()}"
        for _ in range(ISSUE_ATTEMPTS):
            record = self.invoice(invoice_id)
            issued = [n for n in record.credit_notes if n.credit_note_id == credit_note_id]
            if issued:
                note = issued[0]
                if (note.amount_paise, note.reason) != (amount_paise, reason):
                    raise IdempotencyKeyReused("this key issued a credit note with another body")
                # Announced again: the attempt that issued it may have died before that.
                self._announce_credit_note(record, note)
                return note
            if record.status is InvoiceStatus.VOID:
                raise InvoiceNotCreditable(f"{invoice_id} is void")
            room = record.invoice.taxable_value_paise - record.credited_paise
            if amount_paise > room:
                raise CreditExceedsInvoice(
                    f"credit notes may reverse at most the taxable value; {room} paise remain"
                )
            note = IssuedCreditNote(
                credit_note_id=credit_note_id,
                against_invoice_id=invoice_id,
                amount_paise=amount_paise,
                reason=reason,
                issued_at=self._clock.now(),
                issued_by=issued_by,
            )
            try:
                self._store.add_credit_note(record, note)
            except AccountChanged:
                continue
            self._announce_credit_note(record, note)
            return note
        raise Conflict("the invoice kept changing; try again")

    def _announce_credit_note(self, record: InvoiceRecord, note: IssuedCreditNote) -> None:
        self._events.publish(
            [
                DomainEvent(
                    detail_type="CreditNoteIssued",
                    source=SOURCE,
                    occurred_at=note.issued_at,
                    # Announced again by a retry: the same id, so the audit keeps one.
                    event_id=f"CreditNoteIssued-{note.credit_note_id}",
                    correlation_id=note.against_invoice_id,
                    detail={
                        "user_id": record.invoice.subscriber.user_id,
                        "invoice_id": note.against_invoice_id,
                        "credit_note_id": note.credit_note_id,
                        "amount_paise": note.amount_paise,
                    },
                )
            ]
        )

    # --- overdue -------------------------------------------------------------

    def process_overdue(self, invoice_id: str) -> list[str]:
        """ISSUED -> OVERDUE after the due date; InvoiceOverdue once, after the grace."""
        now = self._clock.now()
        record = self._store.get_invoice(invoice_id)
        invoice = record.invoice
        done: list[str] = []
        if record.status not in UNPAID or now < invoice.due_at:
            return done
        if record.status is InvoiceStatus.ISSUED and self._store.mark_overdue(record, now):
            done.append("OVERDUE")
        notice_at = invoice.due_at + timedelta(days=self._config.grace_days)
        if now < notice_at or record.overdue_notice_published:
            return done
        # Claimed by an attempt that died before the bus had the event (the task
        # came back): send it now. Otherwise only the one that claims it sends it.
        if (
            record.overdue_notified
            or self._store.claim_overdue_notice(record, now)
            or self._claimed_but_unsent(invoice_id)
        ):
            self._events.publish(
                [
                    DomainEvent(
                        detail_type="InvoiceOverdue",
                        source=SOURCE,
                        occurred_at=now,
                        correlation_id=invoice_id,
                        detail={
                            "user_id": invoice.subscriber.user_id,
                            "invoice_id": invoice_id,
                            "invoice_number": invoice.invoice_number,
                            "due_date": invoice.due_date.isoformat(),
                            "total_paise": invoice.total_paise,
                            "grace_days": self._config.grace_days,
                        },
                    )
                ]
            )
            self._store.mark_overdue_notice_published(record)
            done.append("NOTIFIED")
        return done

    def _claimed_but_unsent(self, invoice_id: str) -> bool:
        """A refused claim may be this attempt's own: its write applied, the answer
        was lost and the SDK's retry found the flag set. Unsent, the notice goes
        out now (at least once; a racing claimant may send it too), or the
        subscriber who does not pay would never be blocked."""
        record = self._store.get_invoice(invoice_id)
        return (
            record.status in UNPAID
            and record.overdue_notified
            and not record.overdue_notice_published
        )


# --- sweeps: schedules -> index queries -> one message per unit of work --------------


class Sweeps:
    """The daily schedules: for one IST day (:func:`shared.sweeps.run_daily_sweep`
    decides which, and catches missed ones up a day at a time), query a sharded
    index (never a scan) and fan out one message per subscriber / invoice / plan
    to the billing queue."""

    def __init__(
        self, *, store: BillingStore, queue: TaskQueue, shards: int, grace_days: int = 7
    ) -> None:
        self._store = store
        self._queue = queue
        self._shards = shards
        self._grace_days = grace_days

    def bill_run(self, bill_date: date) -> dict[str, Any]:
        cycle_days = cycle_days_billed_on(bill_date)
        messages = [
            {"task": "invoice", "user_id": user_id, "cycle_day": day, "bill_date": str(bill_date)}
            for day in cycle_days
            for shard in range(self._shards)
            for user_id in self._store.cycle_subscribers(day, shard)
        ]
        sent = self._queue.send(messages)
        return {"cycle_days": sorted(cycle_days), "messages": sent}

    def overdue_sweep(self, day: date) -> dict[str, Any]:
        """Invoices due the day before ``day`` turn OVERDUE; those due the grace
        period before that get their notice."""
        newest = day - timedelta(days=1)
        dates = sorted({newest - timedelta(days=self._grace_days), newest})
        messages = [
            {"task": "overdue", "invoice_id": invoice_id}
            for due in dates
            for shard in range(self._shards)
            for invoice_id in self._store.unpaid_due_on(due, shard)
        ]
        sent = self._queue.send(messages)
        return {"due_dates": [str(d) for d in dates], "messages": sent}

    def expiry_sweep(self, day: date) -> dict[str, Any]:
        """Plans whose validity ended the day before ``day`` (all past by its
        00:00 IST), and those ending on the day itself: one at 00:00 IST has just
        ended, a later one is skipped now and taken by the next day's run."""
        messages = [
            {"task": "expire", "user_id": user_id, "subscription_id": subscription_id}
            for expiry_date in (day - timedelta(days=1), day)
            for shard in range(self._shards)
            for user_id, subscription_id in self._store.expiring_on(expiry_date, shard)
        ]
        return {"messages": self._queue.send(messages)}


class ExpiryOutcome(StrEnum):
    RENEWED = "RENEWED"
    EXPIRED = "EXPIRED"
    SKIPPED = "SKIPPED"


class PlanExpiry:
    """One prepaid plan past its validity: renew it from the wallet where the plan's
    renewal rule allows and the wallet covers it, else ``PlanExpired`` (once)."""

    def __init__(
        self,
        *,
        store: BillingStore,
        plans: ActivePlans,
        catalog: PlanCatalog,
        subscriptions: Subscribing,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._store = store
        self._plans = plans
        self._catalog = catalog
        self._subscriptions = subscriptions
        self._events = events
        self._clock = clock

    def expire(self, user_id: str, subscription_id: str) -> ExpiryOutcome:
        now = self._clock.now()
        active = self._plans.get_active(user_id)
        if (
            active is None
            or active.subscription_id != subscription_id
            or active.valid_until is None
            or active.valid_until > now
        ):
            return ExpiryOutcome.SKIPPED
        plan = self._catalog.get(active.plan_id)
        reason = "MANUAL_RECHARGE"
        if plan.renewal_rule is RenewalRule.AUTO_RENEW_FROM_WALLET and plan.active:
            try:
                self._subscriptions.subscribe(user_id, plan.plan_id)
            except ActivePlanExists:
                return ExpiryOutcome.SKIPPED  # renewed or replaced meanwhile
            except InsufficientBalance:
                reason = "INSUFFICIENT_BALANCE"
            except (SubscriberNotActive, PlanNotAllowed) as error:
                reason = error.code
            else:
                return ExpiryOutcome.RENEWED
        if not self._store.release_expired(
            user_id, subscription_id
        ) and not self._store.expiry_unannounced(user_id, subscription_id):
            # Refused, and announced: done before. Refused yet unannounced: this
            # task's own release (its answer lost) or a run that died before the
            # event; without the event the line would never be blocked.
            return ExpiryOutcome.SKIPPED
        self._events.publish(
            [
                DomainEvent(
                    detail_type="PlanExpired",
                    source=SOURCE,
                    occurred_at=now,
                    correlation_id=subscription_id,
                    detail={
                        "user_id": user_id,
                        "subscription_id": subscription_id,
                        "plan_id": active.plan_id,
                        "valid_until": isoformat(active.valid_until),
                        "reason": reason,
                    },
                )
            ]
        )
        self._store.mark_expiry_announced(user_id, subscription_id)
        return ExpiryOutcome.EXPIRED

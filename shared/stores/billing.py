"""Billing's items in the single table, and the adapters behind the ports of
:mod:`shared.services.billing` (DynamoDB, S3 for the PDFs, SQS for the fan-out,
usage rating's state for the cycle's overage).

| item | PK | SK | GSI1 (PK / SK) |
|---|---|---|---|
| invoice | ``USER#<id>`` | ``INV#<cycle>#<invoice_id>`` | ``DUE#<due date>#<shard>`` / id (1) |
| billing account | ``USER#<id>`` | ``BILLING`` | |
| FY invoice counter | ``INVOICE_SEQ#<fy>`` | ``COUNTER`` | |
| prepaid plan (db.py) | ``USER#<id>`` | ``SUB#ACTIVE`` | ``EXPIRES#<IST date>#<shard>`` (2) |

(1) while unpaid and before its overdue notice; (2) until renewed or expired.
Payments (issue 8) add to the invoice's ``paid_paise`` in their own transaction
(:func:`invoice_payment`); the one that settles it makes it PAID.

Requests per invoice of a bill run: one Query (profile + plan history: the SK
range ``PROFILE``..``SUB#~``), one BatchGetItem (account, counter, invoice), the
rating state's GetItem and its conditional Put (closing the cycle), one Query
for pending late usage, the TransactWriteItems, and the UpdateItem that marks
the invoice published: 7 (``make bench-billing`` counts them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from shared.billing import CarryForward, CreditNote, Invoice, LateUsageItem, OperatorDetails
from shared.cycles import BillCycle
from shared.db import (
    ACTIVE_SUBSCRIPTION_SK,
    GSI1,
    GSI2,
    ActiveSubscriptionItem,
    InGsi1,
    Item,
    SubscriberItem,
    SubscriptionPeriodItem,
    conditional_update,
    connection,
    current_table,
    hash_shard,
    user_pk,
)
from shared.models import Subscriber, Subscription
from shared.rating import UsageType
from shared.services.billing import (
    UNPAID,
    AccountChanged,
    BillingAccount,
    BillingInputs,
    CounterMoved,
    CycleUsageSnapshot,
    HistoryEntry,
    InvoiceAlreadyIssued,
    InvoiceNotFound,
    InvoiceNotPayable,
    InvoiceRecord,
    InvoiceStatus,
    IssuedCreditNote,
    PendingLateUsage,
    outstanding_paise,
    parse_invoice_id,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from shared.stores.usage import DynamoRatingStore

BILLING_SK = "BILLING"
COUNTER_SK = "COUNTER"
PROFILE_SK = "PROFILE"
HISTORY_END = "SUB#~"  # past every SUB#... key: PROFILE..SUB#~ = profile + plan history
LATE_PENDING = "PENDING_INVOICE"
LATE_INVOICED = "INVOICED"
SEND_BATCH_MAX = 10
BATCH_GET_ATTEMPTS = 5

_HISTORY = TypeAdapter(tuple[HistoryEntry, ...])
_NOTES = TypeAdapter(tuple[IssuedCreditNote, ...])
_PENDING = TypeAdapter(tuple[CreditNote, ...])


def invoice_sk(period: str, invoice_id: str) -> str:
    return f"INV#{period}#{invoice_id}"


def counter_pk(fy: str) -> str:
    return f"INVOICE_SEQ#{fy}"


def due_index_pk(due: date, user_id: str) -> str:
    return f"DUE#{due.isoformat()}#{hash_shard(user_id)}"


class InvoiceItem(InGsi1):
    invoice_id = UnicodeAttribute()
    invoice_number = UnicodeAttribute()
    user_id = UnicodeAttribute()
    status = UnicodeAttribute()
    bill_date = UnicodeAttribute()
    due_date = UnicodeAttribute()
    total_paise = NumberAttribute()
    document = UnicodeAttribute()  # the Invoice as JSON: what the PDF shows, forever
    history = UnicodeAttribute(default="[]")
    credit_notes = UnicodeAttribute(default="[]")
    credited_paise = NumberAttribute(default=0)
    paid_paise = NumberAttribute(default=0)  # payments applied (issue 8)
    published = BooleanAttribute(default=False)
    overdue_notified = BooleanAttribute(default=False)
    overdue_notice_published = BooleanAttribute(default=False)
    pdf_key = UnicodeAttribute(null=True)

    def to_record(self) -> InvoiceRecord:
        return InvoiceRecord(
            invoice=Invoice.model_validate_json(self.document),
            status=InvoiceStatus(self.status),
            history=_HISTORY.validate_json(self.history),
            credit_notes=_NOTES.validate_json(self.credit_notes),
            published=bool(self.published),
            overdue_notified=bool(self.overdue_notified),
            overdue_notice_published=bool(self.overdue_notice_published),
            pdf_key=self.pdf_key,
            paid_paise=int(self.paid_paise or 0),
        )


class BillingAccountItem(Item):
    carry_credit_note_paise = NumberAttribute(default=0)
    carry_credit_paise = NumberAttribute(default=0)
    pending_credit_notes = UnicodeAttribute(default="[]")
    version = NumberAttribute(default=0)

    def to_domain(self) -> BillingAccount:
        return BillingAccount(
            carry=CarryForward(
                credit_note_paise=int(self.carry_credit_note_paise),
                credit_paise=int(self.carry_credit_paise),
            ),
            pending_credit_notes=_PENDING.validate_json(self.pending_credit_notes),
            version=int(self.version),
        )


class InvoiceCounterItem(Item):
    last_sequence = NumberAttribute(default=0)


class LateUsageMark(Item):
    """The billing-owned attributes of usage rating's late-usage items."""

    status = UnicodeAttribute(null=True)
    invoice_id = UnicodeAttribute(null=True)


def _invoice_item(record: InvoiceRecord) -> InvoiceItem:
    invoice = record.invoice
    user_id = invoice.subscriber.user_id
    item = InvoiceItem(
        pk=user_pk(user_id),
        sk=invoice_sk(_period(invoice), invoice.invoice_id),
        entity="INVOICE",
        invoice_id=invoice.invoice_id,
        invoice_number=invoice.invoice_number or "",
        user_id=user_id,
        status=record.status.value,
        bill_date=invoice.bill_date.isoformat(),
        due_date=invoice.due_date.isoformat(),
        total_paise=invoice.total_paise,
        document=invoice.model_dump_json(),
        history=_HISTORY.dump_json(record.history).decode(),
        credit_notes=_NOTES.dump_json(record.credit_notes).decode(),
        credited_paise=record.credited_paise,
        published=record.published,
        overdue_notified=record.overdue_notified,
        overdue_notice_published=record.overdue_notice_published,
        pdf_key=record.pdf_key,
        paid_paise=record.paid_paise,
    )
    if record.status in UNPAID and not record.overdue_notified:
        item.gsi1pk = due_index_pk(invoice.due_date, user_id)
        item.gsi1sk = invoice.invoice_id
    return item


def _period(invoice: Invoice) -> str:
    return parse_invoice_id(invoice.invoice_id)[1]


def _key(record: InvoiceRecord) -> tuple[str, str]:
    invoice = record.invoice
    return user_pk(invoice.subscriber.user_id), invoice_sk(_period(invoice), invoice.invoice_id)


def _account_item(user_id: str, account: BillingAccount, version: int) -> BillingAccountItem:
    return BillingAccountItem(
        pk=user_pk(user_id),
        sk=BILLING_SK,
        entity="BILLING_ACCOUNT",
        carry_credit_note_paise=account.carry.credit_note_paise,
        carry_credit_paise=account.carry.credit_paise,
        pending_credit_notes=_PENDING.dump_json(account.pending_credit_notes).decode(),
        version=version,
    )


def _account_unchanged(version: int) -> Any:
    if version == 0:
        return BillingAccountItem.pk.does_not_exist()
    return BillingAccountItem.version == version


def _history_json(record: InvoiceRecord, entry: HistoryEntry) -> str:
    return _HISTORY.dump_json((*record.history, entry)).decode()


# --- payments (issue 8): the invoice's side of a payment's transaction ----------------

# What applying a payment reads: never the document (every line of the invoice).
_PAYMENT_ATTRIBUTES = ["status", "total_paise", "credited_paise", "paid_paise", "history"]


@dataclass(frozen=True)
class InvoicePayment:
    """The update a payment makes to its invoice, for the payment's own
    TransactWriteItems: ``paid_paise`` grows, the invoice is PAID (and leaves the
    due-date index) when nothing remains, and its history records the payment.
    The condition is the invoice as read (still unpaid, its history unchanged: a
    payment, credit note or overdue mark that landed meanwhile cancels the
    transaction, and the caller reads again)."""

    item: InvoiceItem
    actions: list[Action]
    condition: Condition
    settles: bool
    outstanding_after: int


def invoice_payment(
    user_id: str, invoice_id: str, *, payment_id: str, amount_paise: int, at: datetime
) -> InvoicePayment:
    """Raises InvoiceNotFound, or InvoiceNotPayable when the invoice is no longer
    unpaid or owes less than ``amount_paise``."""
    owner, period = parse_invoice_id(invoice_id)
    if owner != user_id:
        raise InvoiceNotFound(f"no invoice {invoice_id!r}")
    key = (user_pk(user_id), invoice_sk(period, invoice_id))
    try:
        current = InvoiceItem.get(*key, consistent_read=True, attributes_to_get=_PAYMENT_ATTRIBUTES)
    except InvoiceItem.DoesNotExist:
        raise InvoiceNotFound(f"no invoice {invoice_id!r}") from None
    status = InvoiceStatus(current.status)
    paid = int(current.paid_paise or 0)
    owed = outstanding_paise(status, int(current.total_paise), paid)
    if amount_paise > owed:
        raise InvoiceNotPayable(
            f"{invoice_id} owes {owed} paise; a payment of {amount_paise} paise does not fit",
            details={"outstanding_paise": owed},
        )
    remaining = owed - amount_paise
    entry = HistoryEntry(
        at=at,
        event="PART_PAYMENT" if remaining else "PAID",
        detail=f"{payment_id}; {remaining} paise outstanding",
        amount_paise=amount_paise,
    )
    history = _HISTORY.validate_json(current.history)
    actions: list[Action] = [
        InvoiceItem.paid_paise.set(paid + amount_paise),
        InvoiceItem.history.set(_HISTORY.dump_json((*history, entry)).decode()),
    ]
    if not remaining:
        actions += [
            InvoiceItem.status.set(InvoiceStatus.PAID.value),
            InvoiceItem.gsi1pk.remove(),
            InvoiceItem.gsi1sk.remove(),
        ]
    unchanged: Condition = (InvoiceItem.status == status.value) & (
        InvoiceItem.history == current.history
    )
    return InvoicePayment(
        item=InvoiceItem(*key),
        actions=actions,
        condition=unchanged,
        settles=not remaining,
        outstanding_after=remaining,
    )


def _failed(error: TransactWriteError) -> list[bool]:
    return [
        reason is not None and reason.code == "ConditionalCheckFailed"
        for reason in error.cancellation_reasons
    ]


class DynamoBillingStore:
    """Implements :class:`shared.services.billing.BillingStore`."""

    def __init__(self) -> None:
        self._client: Any = connection().client

    @property
    def _table(self) -> str:
        return current_table()[0]

    # --- issue ------------------------------------------------------------------

    def subscriber(self, user_id: str) -> Subscriber | None:
        try:
            return SubscriberItem.get(user_pk(user_id), PROFILE_SK).to_domain()
        except SubscriberItem.DoesNotExist:
            return None

    def load_for_billing(
        self, user_id: str, invoice_id: str, period: str, fy: str
    ) -> BillingInputs:
        subscriber, periods = self._profile_and_history(user_id)
        keys = [(user_pk(user_id), BILLING_SK), (counter_pk(fy), COUNTER_SK)]
        keys.append((user_pk(user_id), invoice_sk(period, invoice_id)))
        found = self._batch_get(keys)
        account_raw = found.get(keys[0])
        counter_raw = found.get(keys[1])
        invoice_raw = found.get(keys[2])
        return BillingInputs(
            subscriber=subscriber,
            periods=tuple(periods),
            account=(
                BillingAccountItem.from_raw_data(account_raw).to_domain()
                if account_raw
                else BillingAccount()
            ),
            counter=int(InvoiceCounterItem.from_raw_data(counter_raw).last_sequence)
            if counter_raw
            else 0,
            existing=InvoiceItem.from_raw_data(invoice_raw).to_record() if invoice_raw else None,
        )

    def _profile_and_history(self, user_id: str) -> tuple[Subscriber | None, list[Subscription]]:
        subscriber = None
        periods = []
        for raw in self._query(
            KeyConditionExpression="PK = :pk AND SK BETWEEN :first AND :last",
            ExpressionAttributeValues={
                ":pk": {"S": user_pk(user_id)},
                ":first": {"S": PROFILE_SK},
                ":last": {"S": HISTORY_END},
            },
            ConsistentRead=True,
        ):
            sort_key = raw["SK"]["S"]
            if sort_key == PROFILE_SK:
                subscriber = SubscriberItem.from_raw_data(raw).to_domain()
            elif sort_key.startswith("SUB#") and sort_key != ACTIVE_SUBSCRIPTION_SK:
                periods.append(SubscriptionPeriodItem.from_raw_data(raw).to_domain())
        return subscriber, periods

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        start: dict[str, Any] | None = None
        while True:
            page = self._client.query(
                TableName=self._table, **kwargs, **({"ExclusiveStartKey": start} if start else {})
            )
            yield from page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _batch_get(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        pending = [{"PK": {"S": pk}, "SK": {"S": sk}} for pk, sk in keys]
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for attempt in range(BATCH_GET_ATTEMPTS):
            response = self._client.batch_get_item(
                RequestItems={self._table: {"Keys": pending, "ConsistentRead": True}}
            )
            for raw in response.get("Responses", {}).get(self._table, []):
                found[(raw["PK"]["S"], raw["SK"]["S"])] = raw
            pending = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
            if not pending:
                return found
            time.sleep(0.05 * 2**attempt)
        raise RuntimeError(f"{len(pending)} key(s) still unprocessed by BatchGetItem")

    def read_counter(self, fy: str) -> int:
        try:
            item = InvoiceCounterItem.get(counter_pk(fy), COUNTER_SK, consistent_read=True)
        except InvoiceCounterItem.DoesNotExist:
            return 0
        return int(item.last_sequence)

    def issue(
        self,
        record: InvoiceRecord,
        *,
        counter_was: int,
        account: BillingAccount,
        account_version: int,
        late_keys: Sequence[str],
    ) -> None:
        invoice = record.invoice
        assert invoice.invoice_number is not None, "number the invoice first"
        user_id = invoice.subscriber.user_id
        fy = invoice.invoice_number.split("/")[1]
        writes_account = account_version > 0 or not account.is_empty
        try:
            with TransactWrite(connection=connection()) as tx:
                # Puts first, then updates (PynamoDB's order): invoice, account, counter, late.
                tx.save(_invoice_item(record), condition=InvoiceItem.pk.does_not_exist())
                if writes_account:
                    tx.save(
                        _account_item(user_id, account, account_version + 1),
                        condition=_account_unchanged(account_version),
                    )
                counter = InvoiceCounterItem(pk=counter_pk(fy), sk=COUNTER_SK)
                unchanged = (
                    InvoiceCounterItem.last_sequence == counter_was
                    if counter_was
                    else InvoiceCounterItem.pk.does_not_exist()
                )
                tx.update(
                    counter,
                    actions=[
                        InvoiceCounterItem.entity.set("INVOICE_COUNTER"),
                        InvoiceCounterItem.last_sequence.set(counter_was + 1),
                    ],
                    condition=unchanged,
                )
                for sort_key in late_keys:
                    tx.update(
                        LateUsageMark(pk=user_pk(user_id), sk=sort_key),
                        actions=[
                            LateUsageMark.status.set(LATE_INVOICED),
                            LateUsageMark.invoice_id.set(invoice.invoice_id),
                        ],
                        condition=LateUsageMark.status == LATE_PENDING,
                    )
        except TransactWriteError as error:
            failed = _failed(error)
            if failed and failed[0]:
                raise InvoiceAlreadyIssued(invoice.invoice_id) from error
            counter_index = 2 if writes_account else 1
            if writes_account and len(failed) > 1 and failed[1]:
                raise AccountChanged(user_id) from error
            if len(failed) > counter_index and failed[counter_index]:
                raise CounterMoved(fy) from error
            if any(failed[counter_index + 1 :]):
                raise AccountChanged(f"{user_id}: late usage was billed meanwhile") from error
            # Cancelled by a concurrent transaction on the counter: take a fresh number.
            raise CounterMoved(fy) from error

    def mark_published(self, record: InvoiceRecord, pdf_key: str) -> None:
        pk, sk = _key(record)
        InvoiceItem(pk=pk, sk=sk).update(
            actions=[InvoiceItem.published.set(True), InvoiceItem.pdf_key.set(pdf_key)],
            condition=InvoiceItem.pk.exists(),
        )

    # --- reads ------------------------------------------------------------------

    def get_invoice(self, invoice_id: str) -> InvoiceRecord:
        user_id, period = parse_invoice_id(invoice_id)
        try:
            item = InvoiceItem.get(user_pk(user_id), invoice_sk(period, invoice_id))
        except InvoiceItem.DoesNotExist:
            raise InvoiceNotFound(f"no invoice {invoice_id!r}") from None
        return item.to_record()

    def list_invoices(self, user_id: str, limit: int) -> list[InvoiceRecord]:
        query = InvoiceItem.query(
            user_pk(user_id),
            InvoiceItem.sk.startswith("INV#"),
            scan_index_forward=False,  # cycle labels sort by date: newest first
            limit=limit,
        )
        return [item.to_record() for item in query]

    # --- credit notes, overdue ----------------------------------------------------

    def add_credit_note(self, record: InvoiceRecord, note: IssuedCreditNote) -> None:
        user_id = record.invoice.subscriber.user_id
        try:
            account_item = BillingAccountItem.get(
                user_pk(user_id), BILLING_SK, consistent_read=True
            )
            account = account_item.to_domain()
        except BillingAccountItem.DoesNotExist:
            account = BillingAccount()
        pending = CreditNote.model_validate(note.model_dump(include=set(CreditNote.model_fields)))
        updated = account.model_copy(
            update={"pending_credit_notes": (*account.pending_credit_notes, pending)}
        )
        entry = HistoryEntry(
            at=note.issued_at,
            event="CREDIT_NOTE",
            detail=f"{note.credit_note_id}: {note.reason}",
            amount_paise=note.amount_paise,
        )
        pk, sk = _key(record)
        try:
            with TransactWrite(connection=connection()) as tx:
                tx.save(
                    _account_item(user_id, updated, account.version + 1),
                    condition=_account_unchanged(account.version),
                )
                tx.update(
                    InvoiceItem(pk=pk, sk=sk),
                    actions=[
                        InvoiceItem.credit_notes.set(
                            _NOTES.dump_json((*record.credit_notes, note)).decode()
                        ),
                        InvoiceItem.credited_paise.set(record.credited_paise + note.amount_paise),
                        InvoiceItem.history.set(_history_json(record, entry)),
                    ],
                    condition=(InvoiceItem.credited_paise == record.credited_paise)
                    & (InvoiceItem.history == _HISTORY.dump_json(record.history).decode()),
                )
        except TransactWriteError as error:
            raise AccountChanged(user_id) from error

    def mark_overdue(self, record: InvoiceRecord, at: datetime) -> bool:
        entry = HistoryEntry(at=at, event="OVERDUE", detail="unpaid after the due date")
        return self._conditional_update(
            record,
            [
                InvoiceItem.status.set(InvoiceStatus.OVERDUE.value),
                InvoiceItem.history.set(_history_json(record, entry)),
            ],
            InvoiceItem.status == InvoiceStatus.ISSUED.value,
        )

    def claim_overdue_notice(self, record: InvoiceRecord, at: datetime) -> bool:
        """Once: the flag flips from false; the invoice leaves the due-date index
        (nothing more for the sweep to do) and the history records the notice."""
        current = self.get_invoice(record.invoice_id)  # the history may have grown
        entry = HistoryEntry(at=at, event="OVERDUE_NOTICE", detail="InvoiceOverdue sent")
        return self._conditional_update(
            current,
            [
                InvoiceItem.overdue_notified.set(True),
                InvoiceItem.history.set(_history_json(current, entry)),
                InvoiceItem.gsi1pk.remove(),
                InvoiceItem.gsi1sk.remove(),
            ],
            (InvoiceItem.overdue_notified == False)  # noqa: E712 - a DynamoDB condition
            & InvoiceItem.status.is_in(*(status.value for status in UNPAID)),
        )

    def mark_overdue_notice_published(self, record: InvoiceRecord) -> None:
        pk, sk = _key(record)
        InvoiceItem(pk=pk, sk=sk).update(
            actions=[InvoiceItem.overdue_notice_published.set(True)],
            condition=InvoiceItem.pk.exists(),
        )

    def _conditional_update(
        self, record: InvoiceRecord, actions: list[Any], condition: Any
    ) -> bool:
        pk, sk = _key(record)
        return conditional_update(InvoiceItem(pk=pk, sk=sk), actions, condition)

    # --- sweep indexes ----------------------------------------------------------

    def cycle_subscribers(self, cycle_day: int, shard: int) -> Iterable[str]:
        for raw in self._query(
            IndexName=GSI2,
            KeyConditionExpression="GSI2PK = :pk",
            ExpressionAttributeValues={":pk": {"S": f"CYCLE#{cycle_day:02d}#{shard}"}},
            ProjectionExpression="user_id",
        ):
            yield raw["user_id"]["S"]

    def unpaid_due_on(self, due: date, shard: int) -> Iterable[str]:
        for raw in self._query(
            IndexName=GSI1,
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues={":pk": {"S": f"DUE#{due.isoformat()}#{shard}"}},
            ProjectionExpression="invoice_id",
        ):
            yield raw["invoice_id"]["S"]

    def expiring_on(self, day: date, shard: int) -> Iterable[tuple[str, str]]:
        for raw in self._query(
            IndexName=GSI1,
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues={":pk": {"S": f"EXPIRES#{day.isoformat()}#{shard}"}},
            ProjectionExpression="user_id, subscription_id",
        ):
            yield raw["user_id"]["S"], raw["subscription_id"]["S"]

    def release_expired(self, user_id: str, subscription_id: str) -> bool:
        item = ActiveSubscriptionItem(pk=user_pk(user_id), sk=ACTIVE_SUBSCRIPTION_SK)
        return conditional_update(
            item,
            [
                ActiveSubscriptionItem.gsi1pk.remove(),
                ActiveSubscriptionItem.gsi1sk.remove(),
                ActiveSubscriptionItem.expiry_unannounced.set(True),
            ],
            (ActiveSubscriptionItem.subscription_id == subscription_id)
            & ActiveSubscriptionItem.gsi1pk.exists(),
        )

    def expiry_unannounced(self, user_id: str, subscription_id: str) -> bool:
        try:
            item = ActiveSubscriptionItem.get(
                user_pk(user_id), ACTIVE_SUBSCRIPTION_SK, consistent_read=True
            )
        except ActiveSubscriptionItem.DoesNotExist:
            return False
        return item.subscription_id == subscription_id and bool(item.expiry_unannounced)

    def mark_expiry_announced(self, user_id: str, subscription_id: str) -> None:
        item = ActiveSubscriptionItem(pk=user_pk(user_id), sk=ACTIVE_SUBSCRIPTION_SK)
        # A plan bought meanwhile replaced the item (and the flag): nothing to clear.
        conditional_update(
            item,
            [ActiveSubscriptionItem.expiry_unannounced.remove()],
            ActiveSubscriptionItem.subscription_id == subscription_id,
        )


# --- usage rating's cycle state -----------------------------------------------------


class RatingCycleUsage:
    """Implements :class:`shared.services.billing.CycleUsageSource` on usage rating's
    state item (shared.stores.usage: ``MSISDN#<msisdn>/RATING``, one item per line
    holding each cycle's counters and its ``closed`` marker) and its late-usage
    items (``USER#<id>/LATE#<cycle>#<hash>``, status PENDING_INVOICE).

    Closing = set ``closed`` on the cycle with a conditional put on the state's
    version (rating writes the same item under the same rule, so neither loses
    the other's change); from then on rating turns CDRs of that cycle into late
    usage, so the balance read here is final. A cycle the state does not know yet
    (no usage so far) is added closed, so its late CDRs are not lost either.
    """

    attempts = 10

    def __init__(self) -> None:
        self._rating: DynamoRatingStore | None = None  # the usage module's, on first use

    def close_cycle_and_read(self, subscriber: Subscriber, cycle: BillCycle) -> CycleUsageSnapshot:
        # Imported here: the usage module is another team's and loads only when used.
        from shared.services.usage import CycleUsage  # noqa: PLC0415
        from shared.stores.usage import DynamoRatingStore  # noqa: PLC0415

        if self._rating is None:  # one per container: it remembers the plan snapshots
            self._rating = DynamoRatingStore()
        store = self._rating
        balance = None
        for _ in range(self.attempts):
            state = store.load_state(subscriber.msisdn)
            if state is None:
                break  # nothing was ever rated for this line
            usage = state.cycles.get(cycle.label)
            if usage is None and cycle.start >= state.latest().end:
                usage = CycleUsage(
                    label=cycle.label, start=cycle.start, end=cycle.end, plan=state.latest().plan
                )
                state.cycles[cycle.label] = usage
            elif usage is None:
                break  # older than what rating keeps: its CDRs are refused anyway
            elif usage.closed:
                balance = usage.balance
                break
            usage.closed = True
            expected = state.version
            state.version += 1
            if store.put_state(state, expected):
                balance = usage.balance
                break
        else:
            raise RuntimeError(f"could not close cycle {cycle.label} of {subscriber.user_id}")
        return CycleUsageSnapshot(balance=balance, late=tuple(self._pending_late(subscriber)))

    @staticmethod
    def _pending_late(subscriber: Subscriber) -> Iterator[PendingLateUsage]:
        from shared.stores.usage import LateUsageItem as RatedLateItem  # noqa: PLC0415

        query = RatedLateItem.query(
            user_pk(subscriber.user_id),
            RatedLateItem.sk.startswith("LATE#"),
            filter_condition=RatedLateItem.status == LATE_PENDING,
            consistent_read=True,
        )
        for item in query:
            yield PendingLateUsage(
                sort_key=item.sk,
                item=LateUsageItem(
                    cycle_label=item.cycle,
                    usage_type=UsageType(item.usage_type),
                    charge_paise=int(item.charge_paise),
                ),
            )


class NoUsage:
    """A CycleUsageSource for lines without usage rating (tests, benches): no overage,
    no late usage."""

    def close_cycle_and_read(self, subscriber: Subscriber, cycle: BillCycle) -> CycleUsageSnapshot:
        del subscriber, cycle
        return CycleUsageSnapshot()


# --- S3 and SQS -------------------------------------------------------------------


class S3InvoiceDocuments:
    """PDFs in a private, encrypted bucket, keyed by invoice id: the rendering is
    deterministic, so a repeated put writes the same bytes under the same key."""

    def __init__(self, client: S3Client, bucket: str, operator: OperatorDetails) -> None:
        self._client = client
        self._bucket = bucket
        self._operator = operator

    def put(self, invoice: Invoice) -> str:
        # Here, not at the top: reportlab is a tenth of a second of every cold start,
        # and only the bill run's workers render.
        from shared.invoice_pdf import render_invoice_pdf  # noqa: PLC0415

        key = f"invoices/{invoice.subscriber.user_id}/{invoice.invoice_id}.pdf"
        self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=render_invoice_pdf(invoice, self._operator),
            ContentType="application/pdf",
        )
        return key

    def get(self, key: str) -> bytes:
        return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()


class SqsTaskQueue:
    """Ten messages per SendMessageBatch; rejected entries are sent again, and what
    is still rejected raises (the run is retried; the workers are idempotent)."""

    attempts = 3

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, messages: Sequence[dict[str, Any]]) -> int:
        for start in range(0, len(messages), SEND_BATCH_MAX):
            pending: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(index), "MessageBody": json.dumps(message)}
                for index, message in enumerate(messages[start : start + SEND_BATCH_MAX])
            ]
            for _ in range(self.attempts):
                response = self._client.send_message_batch(
                    QueueUrl=self._queue_url, Entries=pending
                )
                failed = {entry["Id"] for entry in response.get("Failed", [])}
                pending = [entry for entry in pending if entry["Id"] in failed]
                if not pending:
                    break
            if pending:
                raise RuntimeError(f"{len(pending)} message(s) rejected by SQS")
        return len(messages)


@lru_cache(maxsize=1)
def operator_details() -> OperatorDetails:
    from shared.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    return OperatorDetails(
        name=settings.operator_name,
        gstin=settings.operator_gstin,
        address=tuple(settings.operator_address.split("|")),
        state=settings.operator_state,
        upi_id=settings.operator_upi_id,
        payment_url=settings.operator_payment_url,
        support=settings.operator_support or None,
    )

"""Payments' items in the single table and the adapter behind
:class:`shared.services.payments.PaymentStore`.

| item | PK | SK | notes |
|---|---|---|---|
| payment | ``USER#<id>`` | ``PAY#<payment_id>`` | GSI1 (1), GSI2 (2) |
| payment id lookup | ``PAYMENT#<payment_id>`` | ``PAYMENT`` | ``user_id`` |
| AutoPay mandate | ``USER#<id>`` | ``AUTOPAY`` | token, enabled |
| AutoPay retries | ``USER#<id>`` | ``AUTOPAYRETRY#<invoice_id>`` | GSI1 (3) |

(1) ``PAYOPEN#<shard>`` / ``<created_at>#<payment_id>`` while the janitor must
look at it (the service decides: ``watch``); the creation time first, so the
janitor reads only payments older than its threshold. (2) ``PAYTXN#<txn_id>`` /
``PAY`` once the gateway's transaction id is known (the webhook's lookup).
(3) ``AUTOPAYDUE#<IST date>#<shard>`` / ``<due_at>#<invoice_id>`` while an
attempt is scheduled.

The payment item holds the whole record as JSON (``record``) plus the attributes
its conditions and indexes need. Every change appends to the history, so its
length (``entries``) with the status is the payment's version: a write is
conditional on both being what the writer read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import cast

from pynamodb.attributes import (
    BooleanAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import PutError
from pynamodb.expressions.condition import Condition

from shared.clock import isoformat, to_ist
from shared.db import (
    CONDITION_FAILED,
    GSI2PK,
    GSI2SK,
    Gsi2,
    InGsi1,
    Item,
    _apply_wallet_delta,
    _transaction,
    hash_shard,
    user_pk,
)
from shared.errors import ConcurrentModification
from shared.payments import Payment, PaymentPurpose
from shared.services.billing import InvoiceNotFound, InvoiceNotPayable
from shared.services.payments import (
    AutopayMandate,
    AutopayRetry,
    PaymentExists,
    PaymentNotFound,
    StalePayment,
)
from shared.stores.billing import invoice_payment

PAYMENT_PREFIX = "PAY#"
LOOKUP_SK = "PAYMENT"
TXN_SK = "PAY"
AUTOPAY_SK = "AUTOPAY"
RETRY_PREFIX = "AUTOPAYRETRY#"


def payment_sk(payment_id: str) -> str:
    return f"{PAYMENT_PREFIX}{payment_id}"


def lookup_pk(payment_id: str) -> str:
    return f"PAYMENT#{payment_id}"


def open_index_pk(user_id: str) -> str:
    return f"PAYOPEN#{hash_shard(user_id)}"


def txn_index_pk(txn_id: str) -> str:
    return f"PAYTXN#{txn_id}"


def retry_sk(invoice_id: str) -> str:
    return f"{RETRY_PREFIX}{invoice_id}"


def due_index_pk(due_at: datetime, user_id: str) -> str:
    return f"AUTOPAYDUE#{to_ist(due_at).date().isoformat()}#{hash_shard(user_id)}"


# --- items ----------------------------------------------------------------------------


class PaymentItem(InGsi1):
    gsi2 = Gsi2()
    gsi2pk = UnicodeAttribute(attr_name=GSI2PK, null=True)
    gsi2sk = UnicodeAttribute(attr_name=GSI2SK, null=True)
    payment_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    status = UnicodeAttribute()
    purpose = UnicodeAttribute()
    amount_paise = NumberAttribute()
    gateway_txn_id = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    entries = NumberAttribute()  # len(history): with the status, the version
    record = UnicodeAttribute()  # the Payment as JSON

    def to_domain(self) -> Payment:
        return Payment.model_validate_json(self.record)


class PaymentLookupItem(Item):
    user_id = UnicodeAttribute()


class AutopayItem(Item):
    user_id = UnicodeAttribute()
    enabled = BooleanAttribute()
    mandate_token = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class AutopayRetryItem(InGsi1):
    user_id = UnicodeAttribute()
    invoice_id = UnicodeAttribute()
    first_failed_at = UTCDateTimeAttribute()
    failed_attempts = NumberAttribute()
    next_attempt = NumberAttribute(null=True)
    due_at = UTCDateTimeAttribute(null=True)
    reminded_at = UTCDateTimeAttribute(null=True)
    closed = UnicodeAttribute(null=True)
    version = NumberAttribute()

    def to_domain(self) -> AutopayRetry:
        return AutopayRetry(
            user_id=self.user_id,
            invoice_id=self.invoice_id,
            first_failed_at=self.first_failed_at,
            failed_attempts=int(self.failed_attempts),
            next_attempt=None if self.next_attempt is None else int(self.next_attempt),
            due_at=self.due_at,
            reminded_at=self.reminded_at,
            closed=self.closed,
            version=int(self.version),
        )


def _payment_item(payment: Payment, *, watch: bool) -> PaymentItem:
    item = PaymentItem(
        user_pk(payment.user_id),
        payment_sk(payment.payment_id),
        entity="PAYMENT",
        payment_id=payment.payment_id,
        user_id=payment.user_id,
        status=payment.status.value,
        purpose=payment.purpose.value,
        amount_paise=payment.amount_paise,
        gateway_txn_id=payment.gateway_txn_id,
        created_at=payment.created_at,
        entries=len(payment.history),
        record=payment.model_dump_json(),
    )
    if watch:
        item.gsi1pk = open_index_pk(payment.user_id)
        item.gsi1sk = f"{isoformat(payment.created_at)}#{payment.payment_id}"
    if payment.gateway_txn_id:
        item.gsi2pk = txn_index_pk(payment.gateway_txn_id)
        item.gsi2sk = TXN_SK
    return item


def _unchanged(before: Payment) -> Condition:
    same: Condition = (PaymentItem.status == before.status.value) & (
        PaymentItem.entries == len(before.history)
    )
    return same


def _conditional_failed(error: PutError) -> bool:
    return error.cause_response_code == CONDITION_FAILED


# --- the store ------------------------------------------------------------------------


class DynamoPaymentStore:
    """Implements :class:`shared.services.payments.PaymentStore`."""

    def create(self, payment: Payment) -> None:
        lookup = PaymentLookupItem(
            lookup_pk(payment.payment_id), LOOKUP_SK, entity="PAYMENT_ID", user_id=payment.user_id
        )
        exists = PaymentExists(f"payment {payment.payment_id} exists")
        with _transaction(slot_error=exists, debits_wallet=False, item_errors={1: exists}) as tx:
            tx.save(_payment_item(payment, watch=True), condition=PaymentItem.pk.does_not_exist())
            tx.save(lookup, condition=PaymentLookupItem.pk.does_not_exist())

    def get(self, payment_id: str) -> Payment:
        try:
            lookup = PaymentLookupItem.get(lookup_pk(payment_id), LOOKUP_SK, consistent_read=True)
        except PaymentLookupItem.DoesNotExist:
            raise PaymentNotFound(f"no payment {payment_id!r}") from None
        return self._get(lookup.user_id, payment_id)

    @staticmethod
    def _get(user_id: str, payment_id: str) -> Payment:
        try:
            item = PaymentItem.get(user_pk(user_id), payment_sk(payment_id), consistent_read=True)
        except PaymentItem.DoesNotExist:
            raise PaymentNotFound(f"no payment {payment_id!r}") from None
        return item.to_domain()

    def find_by_txn(self, txn_id: str) -> Payment | None:
        for found in PaymentItem.gsi2.query(
            txn_index_pk(txn_id), attributes_to_get=["user_id", "payment_id"], limit=1
        ):
            item = cast(PaymentItem, found)
            return self._get(item.user_id, item.payment_id)  # the index lags: read the item
        return None

    def save(self, before: Payment, after: Payment, *, watch: bool) -> None:
        try:
            _payment_item(after, watch=watch).save(condition=_unchanged(before))
        except PutError as error:
            if _conditional_failed(error):
                raise StalePayment(f"payment {before.payment_id} changed meanwhile") from None
            raise

    def apply(self, before: Payment, after: Payment) -> None:
        stale = StalePayment(f"payment {before.payment_id} changed meanwhile")
        item = _payment_item(after, watch=True)  # until the service has announced it
        try:
            if after.purpose is PaymentPurpose.INVOICE:
                self._apply_to_invoice(before, after, item, stale)
            else:
                with _transaction(slot_error=stale, debits_wallet=False) as tx:
                    tx.save(item, condition=_unchanged(before))
                    _apply_wallet_delta(tx, after.user_id, after.applied_paise)
        except ConcurrentModification:
            raise stale from None  # another transaction on the same items: read again

    @staticmethod
    def _apply_to_invoice(
        before: Payment, after: Payment, item: PaymentItem, stale: StalePayment
    ) -> None:
        assert after.invoice_id is not None
        try:
            invoice = invoice_payment(
                after.user_id,
                after.invoice_id,
                payment_id=after.payment_id,
                amount_paise=after.applied_paise,
                at=after.history[-1].at,
            )
        except (InvoiceNotFound, InvoiceNotPayable) as error:
            # Not payable: unless this payment moved meanwhile (a twin delivery
            # applied it), which the caller must learn first.
            if DynamoPaymentStore._get(before.user_id, before.payment_id) != before:
                raise stale from None
            if isinstance(error, InvoiceNotFound):
                raise InvoiceNotPayable(f"{after.invoice_id} is gone") from None
            raise
        # Puts before updates (PynamoDB's order): the payment is item 0, the invoice 1.
        changed = StalePayment(f"invoice {after.invoice_id} changed meanwhile")
        with _transaction(slot_error=stale, debits_wallet=False, item_errors={1: changed}) as tx:
            tx.save(item, condition=_unchanged(before))
            tx.update(invoice.item, actions=invoice.actions, condition=invoice.condition)

    def open_payments(self, shard: int, created_before: datetime) -> Iterator[Payment]:
        for found in PaymentItem.gsi1.query(
            f"PAYOPEN#{shard}", PaymentItem.gsi1sk < isoformat(created_before)
        ):
            yield cast(PaymentItem, found).to_domain()

    # --- AutoPay ----------------------------------------------------------------------

    def get_mandate(self, user_id: str) -> AutopayMandate | None:
        try:
            item = AutopayItem.get(user_pk(user_id), AUTOPAY_SK, consistent_read=True)
        except AutopayItem.DoesNotExist:
            return None
        return AutopayMandate(
            user_id=item.user_id,
            enabled=bool(item.enabled),
            mandate_token=item.mandate_token,
            created_at=item.created_at,
            updated_at=item.updated_at,
        )

    def put_mandate(self, mandate: AutopayMandate) -> None:
        AutopayItem(
            user_pk(mandate.user_id),
            AUTOPAY_SK,
            entity="AUTOPAY",
            user_id=mandate.user_id,
            enabled=mandate.enabled,
            mandate_token=mandate.mandate_token,
            created_at=mandate.created_at,
            updated_at=mandate.updated_at,
        ).save()

    def get_retry(self, user_id: str, invoice_id: str) -> AutopayRetry | None:
        try:
            item = AutopayRetryItem.get(
                user_pk(user_id), retry_sk(invoice_id), consistent_read=True
            )
        except AutopayRetryItem.DoesNotExist:
            return None
        return item.to_domain()

    def save_retry(self, retry: AutopayRetry) -> bool:
        item = AutopayRetryItem(
            user_pk(retry.user_id),
            retry_sk(retry.invoice_id),
            entity="AUTOPAY_RETRY",
            user_id=retry.user_id,
            invoice_id=retry.invoice_id,
            first_failed_at=retry.first_failed_at,
            failed_attempts=retry.failed_attempts,
            next_attempt=retry.next_attempt,
            due_at=retry.due_at,
            reminded_at=retry.reminded_at,
            closed=retry.closed,
            version=retry.version + 1,
        )
        if retry.next_attempt is not None and retry.due_at is not None and not retry.closed:
            item.gsi1pk = due_index_pk(retry.due_at, retry.user_id)
            item.gsi1sk = f"{isoformat(retry.due_at)}#{retry.invoice_id}"
        unchanged: Condition = (
            AutopayRetryItem.version == retry.version
            if retry.version
            else AutopayRetryItem.pk.does_not_exist()
        )
        try:
            item.save(condition=unchanged)
        except PutError as error:
            if _conditional_failed(error):
                return False
            raise
        return True

    def retries_due(self, day: date, shard: int) -> Iterable[tuple[str, str]]:
        for found in AutopayRetryItem.gsi1.query(
            f"AUTOPAYDUE#{day.isoformat()}#{shard}", attributes_to_get=["user_id", "invoice_id"]
        ):
            item = cast(AutopayRetryItem, found)
            yield item.user_id, item.invoice_id

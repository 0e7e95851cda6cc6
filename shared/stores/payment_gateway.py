"""The payment gateway simulator's ledger in the single table: the
:class:`shared.payment_gateway.GatewayLedger` the simulator writes when it runs
locally or in a test stage. These items are the simulated gateway's own books,
not the system's: a real gateway keeps them on its side, and nothing but the
simulator reads them.

| item | PK | SK |
|---|---|---|
| transaction | ``GWSIM#<txn_id>`` | ``GWSIM`` |
| merchant reference -> transaction | ``GWSIMREF#<merchant_reference>`` | ``GWSIMREF`` |
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute

from shared.db import Item, _transaction
from shared.payment_gateway import (
    GatewayStatus,
    GatewayTransaction,
    ReferenceInUse,
)
from shared.payments import PaymentMethod

TXN_SK = "GWSIM"
REF_SK = "GWSIMREF"


def txn_pk(txn_id: str) -> str:
    return f"GWSIM#{txn_id}"


def ref_pk(merchant_reference: str) -> str:
    return f"GWSIMREF#{merchant_reference}"


class GatewaySimTxnItem(Item):
    txn_id = UnicodeAttribute()
    merchant_reference = UnicodeAttribute()
    amount_paise = NumberAttribute()
    status = UnicodeAttribute()
    captured_paise = NumberAttribute()
    refunded_paise = NumberAttribute(default=0)
    reported_status = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    method = UnicodeAttribute(null=True)
    refund_id = UnicodeAttribute(null=True)

    def to_domain(self) -> GatewayTransaction:
        return GatewayTransaction(
            txn_id=self.txn_id,
            merchant_reference=self.merchant_reference,
            amount_paise=int(self.amount_paise),
            status=GatewayStatus(self.status),
            captured_paise=int(self.captured_paise),
            refunded_paise=int(self.refunded_paise),
            reported_status=GatewayStatus(self.reported_status),
            created_at=self.created_at,
            method=PaymentMethod(self.method) if self.method else None,
            refund_id=self.refund_id,
        )


class GatewaySimRefItem(Item):
    txn_id = UnicodeAttribute()


class DynamoGatewayLedger:
    """Implements :class:`shared.payment_gateway.GatewayLedger`: the reference entry
    is claimed in the same transaction as the transaction's write, so two charges of
    one reference cannot both record a transaction."""

    def put(self, txn: GatewayTransaction) -> None:
        reference = GatewaySimRefItem(
            ref_pk(txn.merchant_reference), REF_SK, entity="GWSIMREF", txn_id=txn.txn_id
        )
        record = GatewaySimTxnItem(
            txn_pk(txn.txn_id),
            TXN_SK,
            entity="GWSIM",
            txn_id=txn.txn_id,
            merchant_reference=txn.merchant_reference,
            amount_paise=txn.amount_paise,
            status=txn.status.value,
            captured_paise=txn.captured_paise,
            refunded_paise=txn.refunded_paise,
            reported_status=txn.reported_status.value,
            created_at=txn.created_at,
            method=txn.method.value if txn.method else None,
            refund_id=txn.refund_id,
        )
        free = GatewaySimRefItem.pk.does_not_exist() | (GatewaySimRefItem.txn_id == txn.txn_id)
        taken = ReferenceInUse(txn.merchant_reference)
        with _transaction(slot_error=taken, debits_wallet=False) as tx:
            tx.save(reference, condition=free)
            tx.save(record)

    def get(self, txn_id: str) -> GatewayTransaction | None:
        try:
            item = GatewaySimTxnItem.get(txn_pk(txn_id), TXN_SK, consistent_read=True)
        except GatewaySimTxnItem.DoesNotExist:
            return None
        return item.to_domain()

    def find(self, merchant_reference: str) -> GatewayTransaction | None:
        try:
            reference = GatewaySimRefItem.get(
                ref_pk(merchant_reference), REF_SK, consistent_read=True
            )
        except GatewaySimRefItem.DoesNotExist:
            return None
        return self.get(reference.txn_id)

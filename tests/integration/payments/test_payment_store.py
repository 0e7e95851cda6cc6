"""The payment store on moto: the payment and its id lookup, the conditions that
make a stale write fail, the ONE transaction that applies a payment (to an
invoice only while it owes that much, or to the wallet), the janitor's and the
webhook's indexes, AutoPay's items; the plan extension's transaction; and the
service over these adapters for the main paths."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from shared import db
from shared.clock import IST, FixedClock
from shared.errors import ConcurrentModification, InsufficientBalance
from shared.events import InMemoryEventPublisher
from shared.models import SubscriberType
from shared.payment_gateway import InMemoryGatewayLedger, InMemoryWebhookOutbox, SimulatedGateway
from shared.payments import Payment, PaymentEntry, PaymentMethod, PaymentPurpose, PaymentStatus
from shared.services.billing import InvoiceNotPayable, InvoiceStatus
from shared.services.payments import (
    AutopayMandate,
    AutopayRetry,
    PaymentExists,
    PaymentNotFound,
    PaymentRequest,
    PaymentService,
    StalePayment,
)
from shared.services.subscriptions import ChangeType, SubscriptionService
from shared.simulation import GatewayKnobs, SimulatorKnobs, StaticKnobs
from shared.stores import payments as payment_store
from shared.stores.billing import InvoiceItem, due_index_pk, invoice_sk
from shared.stores.payments import DynamoPaymentStore, open_index_pk
from shared.stores.service_control import DynamoFacts
from tests.integration.conftest import T0, Aws, MakeSubscriber
from tests.unit.activation.fakes import FakeEscalations, FakeNotifier
from tests.unit.payments.fakes import OWNER

S = PaymentStatus
USER = "u1"
LABEL = "2026-11-01"
INVOICE = f"INV-{USER}-{LABEL}"
DUE = date(2026, 11, 16)


@pytest.fixture
def payments(aws: Aws) -> DynamoPaymentStore:
    return DynamoPaymentStore()


def put_invoice(user_id: str = USER, total_paise: int = 70_682) -> str:
    """An issued invoice as billing stores it: in the due-date index."""
    invoice_id = f"INV-{user_id}-{LABEL}"
    InvoiceItem(
        db.user_pk(user_id),
        invoice_sk(LABEL, invoice_id),
        entity="INVOICE",
        invoice_id=invoice_id,
        invoice_number=f"TB/2026-27/{user_id}",
        user_id=user_id,
        status=InvoiceStatus.ISSUED.value,
        bill_date=LABEL,
        due_date=DUE.isoformat(),
        total_paise=total_paise,
        document="{}",
        gsi1pk=due_index_pk(DUE, user_id),
        gsi1sk=invoice_id,
    ).save()
    return invoice_id


def invoice_item(invoice_id: str = INVOICE, user_id: str = USER) -> InvoiceItem:
    return InvoiceItem.get(db.user_pk(user_id), invoice_sk(LABEL, invoice_id), consistent_read=True)


def new_payment(
    payment_id: str = "PAY-00000000000000000001",
    *,
    user_id: str = USER,
    purpose: PaymentPurpose = PaymentPurpose.INVOICE,
    amount: int = 70_682,
    at: datetime = T0,
) -> Payment:
    return Payment(
        payment_id=payment_id,
        user_id=user_id,
        purpose=purpose,
        invoice_id=INVOICE if purpose is PaymentPurpose.INVOICE else None,
        amount_paise=amount,
        method=PaymentMethod.UPI,
        method_display="as***@okhdfc",
        gateway_token="asha@okhdfc",
        status=S.PENDING,
        created_at=at,
        history=(PaymentEntry(at=at, status=S.PENDING, detail="by subscriber:u1"),),
    )


def captured(payment: Payment, txn_id: str = "TXN-1") -> Payment:
    return payment.with_status(
        S.SUCCEEDED,
        T0 + timedelta(minutes=1),
        "captured",
        applied_paise=payment.amount_paise,
        payment_date=T0,
        gateway_txn_id=txn_id,
    )


def index_keys(aws: Aws, pk: str, sk: str) -> tuple[str | None, str | None]:
    item = aws.dynamodb.get_item(
        TableName=aws.table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}}, ConsistentRead=True
    )["Item"]
    return item.get(db.GSI1PK, {}).get("S"), item.get(db.GSI2PK, {}).get("S")


# --- the payment record ----------------------------------------------------------------


def test_a_payment_is_stored_with_its_id_lookup_and_found_by_transaction(
    aws: Aws, payments: DynamoPaymentStore
) -> None:
    payment = new_payment()
    payments.create(payment)

    assert payments.get(payment.payment_id) == payment
    assert aws.sort_keys(f"PAYMENT#{payment.payment_id}") == ["PAYMENT"]
    with pytest.raises(PaymentExists):
        payments.create(payment)
    with pytest.raises(PaymentNotFound):
        payments.get("PAY-99999999999999999999")
    assert payments.find_by_txn("TXN-1") is None

    with_txn = payment.model_copy(update={"gateway_txn_id": "TXN-1"})
    payments.save(payment, with_txn, watch=True)

    assert payments.find_by_txn("TXN-1") == with_txn
    assert index_keys(aws, db.user_pk(USER), f"PAY#{payment.payment_id}") == (
        f"PAYOPEN#{db.hash_shard(USER)}",
        "PAYTXN#TXN-1",
    )


def test_a_write_based_on_a_stale_read_is_refused(payments: DynamoPaymentStore) -> None:
    payment = new_payment()
    payments.create(payment)
    first = payment.with_status(S.RECONCILING, T0, "no answer")
    payments.save(payment, first, watch=True)

    with pytest.raises(StalePayment):
        payments.save(payment, payment.with_status(S.FAILED, T0, "declined"), watch=True)
    assert payments.get(payment.payment_id) == first


# --- applying ------------------------------------------------------------------------


def test_applying_a_payment_twice_fails_the_second_and_pays_once(
    aws: Aws, payments: DynamoPaymentStore
) -> None:
    put_invoice()
    payment = new_payment()
    payments.create(payment)

    payments.apply(payment, captured(payment))
    with pytest.raises(StalePayment):
        payments.apply(payment, captured(payment))

    item = invoice_item()
    assert (item.status, int(item.paid_paise)) == ("PAID", 70_682)
    assert (item.gsi1pk, item.gsi1sk) == (None, None)  # out of the due-date index
    assert [entry["event"] for entry in json.loads(item.history)] == ["PAID"]
    assert payments.get(payment.payment_id).status is S.SUCCEEDED
    # Still watched: the janitor announces it should the service die before it does.
    assert index_keys(aws, db.user_pk(USER), f"PAY#{payment.payment_id}")[0] == open_index_pk(USER)


def test_a_part_payment_keeps_the_invoice_due_and_too_much_is_refused(
    payments: DynamoPaymentStore,
) -> None:
    put_invoice()
    part = new_payment(amount=30_000)
    payments.create(part)
    payments.apply(part, captured(part))

    item = invoice_item()
    assert (item.status, int(item.paid_paise)) == ("ISSUED", 30_000)
    assert item.gsi1pk == due_index_pk(DUE, USER)
    assert '"PART_PAYMENT"' in item.history

    too_much = new_payment("PAY-00000000000000000002", amount=40_683)
    payments.create(too_much)
    with pytest.raises(InvoiceNotPayable):
        payments.apply(too_much, captured(too_much, "TXN-2"))

    assert payments.get(too_much.payment_id) == too_much  # nothing written
    assert int(invoice_item().paid_paise) == 30_000
    assert DynamoFacts().invoice(USER, INVOICE).outstanding_paise == 40_682  # type: ignore[union-attr]


def test_an_invoice_changed_between_read_and_commit_cancels_the_application(
    payments: DynamoPaymentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_invoice()
    payment = new_payment()
    payments.create(payment)
    read_then_changed = payment_store.invoice_payment

    def racing(*args: Any, **kwargs: Any) -> Any:
        prepared = read_then_changed(*args, **kwargs)
        invoice_item().update(actions=[InvoiceItem.history.set('[{"note": "a credit note"}]')])
        return prepared

    monkeypatch.setattr(payment_store, "invoice_payment", racing)

    with pytest.raises(StalePayment):
        payments.apply(payment, captured(payment))

    assert payments.get(payment.payment_id) == payment
    assert int(invoice_item().paid_paise) == 0


def test_a_top_up_is_credited_to_the_wallet_in_the_same_transaction(
    payments: DynamoPaymentStore, store: db.DynamoSubscriptionStore
) -> None:
    store.credit_wallet(USER, 1_000)
    payment = new_payment(purpose=PaymentPurpose.TOPUP, amount=50_000)
    payments.create(payment)

    payments.apply(payment, captured(payment))
    with pytest.raises(StalePayment):
        payments.apply(payment, captured(payment))

    assert store.wallet_balance(USER) == 51_000


# --- the indexes ---------------------------------------------------------------------


def test_the_janitor_sees_watched_payments_older_than_its_threshold(
    payments: DynamoPaymentStore,
) -> None:
    users = ["u1", "u2", "u3", "u4"]
    made = {
        user: new_payment(f"PAY-0000000000000000000{n}", user_id=user, at=T0 - timedelta(minutes=n))
        for n, user in enumerate(users, start=1)
    }
    for payment in made.values():
        payments.create(payment)
    settled = made["u4"]
    payments.save(settled, settled.with_status(S.FAILED, T0, "declined"), watch=False)

    cutoff = T0 - timedelta(minutes=1, seconds=30)  # u1's is younger than that
    seen = {
        p.payment_id
        for shard in range(db.CYCLE_SHARDS)
        for p in payments.open_payments(shard, cutoff)
    }

    assert seen == {made["u2"].payment_id, made["u3"].payment_id}
    assert list(payments.open_payments(db.hash_shard("u2"), cutoff)) == [made["u2"]]


def test_autopay_mandates_and_retry_records(payments: DynamoPaymentStore) -> None:
    assert payments.get_mandate(USER) is None
    mandate = AutopayMandate(
        user_id=USER, enabled=True, mandate_token="mandate_0001", created_at=T0, updated_at=T0
    )
    payments.put_mandate(mandate)
    assert payments.get_mandate(USER) == mandate

    due = datetime(2026, 11, 26, 10, 0, tzinfo=IST)
    retry = AutopayRetry(
        user_id=USER,
        invoice_id=INVOICE,
        first_failed_at=T0,
        failed_attempts=1,
        next_attempt=2,
        due_at=due,
    )
    assert payments.save_retry(retry)
    assert not payments.save_retry(retry)  # a second writer from the same read loses
    stored = payments.get_retry(USER, INVOICE)
    assert stored == retry.model_copy(update={"version": 1})
    shard = db.hash_shard(USER)
    assert list(payments.retries_due(date(2026, 11, 26), shard)) == [(USER, INVOICE)]
    assert list(payments.retries_due(date(2026, 11, 25), shard)) == []

    assert stored is not None
    assert payments.save_retry(stored.model_copy(update={"closed": "PAID"}))
    assert list(payments.retries_due(date(2026, 11, 26), shard)) == []


# --- the plan extension -----------------------------------------------------------------


@pytest.fixture
def subscriptions(seeded: Aws, store: db.DynamoSubscriptionStore) -> SubscriptionService:
    return SubscriptionService(
        db.DynamoPlanCatalog(), store, InMemoryEventPublisher(), FixedClock(T0)
    )


def test_buying_the_active_plan_again_extends_it_in_one_transaction(
    aws: Aws,
    store: db.DynamoSubscriptionStore,
    subscriptions: SubscriptionService,
    make_subscriber: MakeSubscriber,
) -> None:
    make_subscriber("p1", SubscriberType.PREPAID, wallet_paise=29_900 * 2 + 100)
    subscriptions.recharge("p1", "PRE_SMART_299")

    result = subscriptions.recharge("p1", "PRE_SMART_299")

    assert result.change_type is ChangeType.EXTENDED
    active = store.get_active("p1")
    assert active is not None
    assert (active.started_at, active.valid_until) == (T0, T0 + timedelta(days=56))
    assert active.price_paise == 59_800
    assert [(p.started_at, p.valid_until) for p in store.history("p1")] == [
        (T0, T0 + timedelta(days=28)),
        (T0 + timedelta(days=28), T0 + timedelta(days=56)),
    ]
    assert store.wallet_balance("p1") == 100
    expiry_index = index_keys(aws, db.user_pk("p1"), db.ACTIVE_SUBSCRIPTION_SK)[0]
    assert expiry_index == db.expiry_index_pk(T0 + timedelta(days=56), "p1")

    with pytest.raises(InsufficientBalance):
        subscriptions.recharge("p1", "PRE_SMART_299")
    with pytest.raises(ConcurrentModification):  # extended meanwhile by someone else
        store.extend(
            old=active.model_copy(update={"valid_until": T0 + timedelta(days=28)}),
            extended=active,
            period=store.history("p1")[-1].model_copy(update={"subscription_id": "other"}),
            wallet_debit_paise=0,
        )
    assert store.get_active("p1") == active
    assert store.wallet_balance("p1") == 100


# --- the service over these adapters ------------------------------------------------------


def test_the_service_over_dynamodb_pays_once_and_the_janitor_finds_a_lost_webhook(
    aws: Aws,
    seeded: Aws,
    store: db.DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
) -> None:
    make_subscriber(USER, SubscriberType.POSTPAID)
    put_invoice()
    clock = FixedClock(T0)
    outbox = InMemoryWebhookOutbox()
    gateway = SimulatedGateway(
        InMemoryGatewayLedger(),
        outbox,
        StaticKnobs(SimulatorKnobs(gateway=GatewayKnobs(webhook_delay_seconds=0))),
        clock,
        random.Random(3),
    )
    events = InMemoryEventPublisher()
    service = PaymentService(
        store=DynamoPaymentStore(),
        gateway=gateway,
        invoices=DynamoFacts(store),
        plans=db.DynamoPlanCatalog(),
        subscribers=store,
        subscriptions=SubscriptionService(db.DynamoPlanCatalog(), store, events, clock),
        events=events,
        notifier=FakeNotifier(),
        ops=FakeEscalations(),
        clock=clock,
    )

    def pay(vpa: str, amount: int) -> Payment:
        request = PaymentRequest(
            user_id=USER,
            invoice_id=INVOICE,
            amount_paise=amount,
            method=PaymentMethod.UPI,
            vpa=vpa,
        )
        return service.create(OWNER, request)

    first = pay("asha@okhdfc", 30_000)
    [body] = outbox.drain()
    assert [service.on_webhook(dict(body)) for _ in range(3)] == [
        "applied",
        "duplicate",
        "duplicate",
    ]
    assert service.get(OWNER, first.payment_id).status is S.SUCCEEDED

    rest = pay("nowebhook@okhdfc", 40_682)
    assert outbox.drain() == []
    clock.advance(timedelta(minutes=16))
    assert service.reconcile(clock.now()) == {"checked": 1, "outcomes": {"applied": 1}}

    assert service.get(OWNER, rest.payment_id).status is S.SUCCEEDED
    item = invoice_item()
    assert (item.status, int(item.paid_paise)) == ("PAID", 70_682)
    assert [e.detail["amount_paise"] for e in events.of_type("PaymentSucceeded")] == [
        30_000,
        40_682,
    ]
    assert service.reconcile(clock.now())["checked"] == 0

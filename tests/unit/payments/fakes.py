"""In-memory fakes of the payment service's ports, and a wired world.

``InMemoryPaymentStore`` enforces the DynamoDB adapter's rules: a write commits
only while the payment is as the writer read it (status and history length),
and ``apply`` is all or nothing: the payment SUCCEEDED plus the money on the
invoice (only while it still owes that much) or in the wallet. The wallet is the
subscription store's, so plans bought after a recharge debit the same balance.

The gateway is the real simulator (``SimulatedGateway`` over its in-memory
ledger and outbox); ``script`` overrides the scenario of the next charges so a
test can make the same mandate fail twice and then succeed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.auth import Principal, Role
from shared.catalog import seed_plans
from shared.clock import IST, FixedClock
from shared.db import hash_shard
from shared.errors import ConcurrentModification
from shared.events import InMemoryEventPublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.payment_gateway import (
    GatewayTransaction,
    InMemoryGatewayLedger,
    InMemoryWebhookOutbox,
    SimulatedGateway,
)
from shared.payments import Payment, PaymentMethod, PaymentPurpose
from shared.services.billing import InvoiceNotPayable, InvoiceStatus, outstanding_paise
from shared.services.payments import (
    AutopayMandate,
    AutopayRetry,
    PaymentConfig,
    PaymentExists,
    PaymentNotFound,
    PaymentService,
    StalePayment,
)
from shared.services.service_control import InvoiceFact
from shared.services.subscriptions import SubscriptionService
from shared.simulation import GatewayKnobs, SimulatorKnobs, StaticKnobs
from tests.fakes import InMemoryPlanCatalog, InMemorySubscriptionStore
from tests.unit.activation.fakes import FakeEscalations, FakeNotifier

# A Wednesday, 15:30 IST.
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
POSTPAID_USER = "u1"
PREPAID_USER = "u2"
OWNER = Principal(POSTPAID_USER, frozenset({Role.SUBSCRIBER}))
PREPAID_OWNER = Principal(PREPAID_USER, frozenset({Role.SUBSCRIBER}))
OTHER_SUBSCRIBER = Principal("u9", frozenset({Role.SUBSCRIBER}))
AGENT = Principal("agent-7", frozenset({Role.AGENT}))
ADMIN = Principal("admin-1", frozenset({Role.ADMIN}))
INVOICE = "INV-u1-2026-11-01"

Hook = Callable[[], object]


# --- billing's invoices --------------------------------------------------------------


@dataclass
class FakeInvoice:
    user_id: str
    total_paise: int
    paid_paise: int = 0
    status: InvoiceStatus = InvoiceStatus.ISSUED
    history: list[tuple[str, int]] = field(default_factory=list)  # (event, amount)

    @property
    def outstanding(self) -> int:
        return outstanding_paise(self.status, self.total_paise, self.paid_paise)


class FakeInvoices:
    """The InvoiceReader port, and the invoices the store's apply credits."""

    def __init__(self) -> None:
        self.invoices: dict[str, FakeInvoice] = {}

    def add(
        self, invoice_id: str = INVOICE, total_paise: int = 70_682, user_id: str = POSTPAID_USER
    ) -> str:
        self.invoices[invoice_id] = FakeInvoice(user_id, total_paise)
        return invoice_id

    def invoice(self, user_id: str, invoice_id: str) -> InvoiceFact | None:
        found = self.invoices.get(invoice_id)
        if found is None or found.user_id != user_id:
            return None
        return InvoiceFact(
            invoice_id=invoice_id,
            bill_date=date(2026, 11, 1),
            unpaid=found.status in {InvoiceStatus.ISSUED, InvoiceStatus.OVERDUE},
            overdue_notified=False,
            outstanding_paise=found.outstanding,
        )

    def pay_elsewhere(self, invoice_id: str = INVOICE) -> None:
        """Settled by a payment this service did not take (cash at a store)."""
        found = self.invoices[invoice_id]
        found.paid_paise = found.total_paise
        found.status = InvoiceStatus.PAID

    def apply(self, invoice_id: str, amount_paise: int) -> None:
        found = self.invoices[invoice_id]
        if amount_paise > found.outstanding:
            raise InvoiceNotPayable(f"{invoice_id} owes {found.outstanding} paise")
        found.paid_paise += amount_paise
        if not found.outstanding:
            found.status = InvoiceStatus.PAID
        found.history.append(("PART_PAYMENT" if found.outstanding else "PAID", amount_paise))

    def total_paid(self) -> int:
        return sum(invoice.paid_paise for invoice in self.invoices.values())


# --- subscriptions with the extension -----------------------------------------------------


class ExtendingSubscriptionStore(InMemorySubscriptionStore):
    """tests.fakes' store plus ``extend`` under the DynamoDB adapter's rules."""

    def extend(
        self,
        *,
        old: Subscription,
        extended: Subscription,
        period: Subscription,
        wallet_debit_paise: int,
    ) -> None:
        current = self.active.get(old.user_id)
        if current is None or current != old:
            raise ConcurrentModification("the active plan changed meanwhile; try again")
        self._check_new_period(period)
        self._check_wallet(old.user_id, -wallet_debit_paise)
        self.active[old.user_id] = extended
        self.periods.setdefault(old.user_id, {})[period.subscription_id] = period
        self._apply_wallet(old.user_id, -wallet_debit_paise)
        self.commits += 1


# --- the payment store -----------------------------------------------------------------


class InMemoryPaymentStore:
    def __init__(self, invoices: FakeInvoices, wallets: InMemorySubscriptionStore) -> None:
        self.invoices = invoices
        self.wallets = wallets
        self.payments: dict[str, Payment] = {}
        self.watched: set[str] = set()
        self.mandates: dict[str, AutopayMandate] = {}
        self.retries: dict[tuple[str, str], AutopayRetry] = {}
        self.wallet_credits = 0
        # One-shot hooks: run just before a write commits (a concurrent change).
        self.before_apply: Hook | None = None
        self.before_save: Hook | None = None

    def create(self, payment: Payment) -> None:
        if payment.payment_id in self.payments:
            raise PaymentExists(payment.payment_id)
        self.payments[payment.payment_id] = payment
        self.watched.add(payment.payment_id)

    def get(self, payment_id: str) -> Payment:
        try:
            return self.payments[payment_id]
        except KeyError:
            raise PaymentNotFound(f"no payment {payment_id!r}") from None

    def find_by_txn(self, txn_id: str) -> Payment | None:
        return next((p for p in self.payments.values() if p.gateway_txn_id == txn_id), None)

    def _check(self, before: Payment) -> None:
        stored = self.payments.get(before.payment_id)
        if (
            stored is None
            or stored.status is not before.status
            or len(stored.history) != len(before.history)
        ):
            raise StalePayment(before.payment_id)

    def save(self, before: Payment, after: Payment, *, watch: bool) -> None:
        hook, self.before_save = self.before_save, None
        if hook is not None:
            hook()
        self._check(before)
        self.payments[after.payment_id] = after
        if watch:
            self.watched.add(after.payment_id)
        else:
            self.watched.discard(after.payment_id)

    def apply(self, before: Payment, after: Payment) -> None:
        hook, self.before_apply = self.before_apply, None
        if hook is not None:
            hook()
        self._check(before)
        if after.purpose is PaymentPurpose.INVOICE:
            assert after.invoice_id is not None
            self.invoices.apply(after.invoice_id, after.applied_paise)  # raises: nothing done
        else:
            self.wallets.credit_wallet(after.user_id, after.applied_paise)
            self.wallet_credits += after.applied_paise
        self.payments[after.payment_id] = after
        self.watched.add(after.payment_id)  # until the service has announced it

    def open_payments(self, shard: int, created_before: datetime) -> Iterator[Payment]:
        for payment_id in sorted(self.watched):
            payment = self.payments[payment_id]
            if hash_shard(payment.user_id) == shard and payment.created_at < created_before:
                yield payment

    def get_mandate(self, user_id: str) -> AutopayMandate | None:
        return self.mandates.get(user_id)

    def put_mandate(self, mandate: AutopayMandate) -> None:
        self.mandates[mandate.user_id] = mandate

    def get_retry(self, user_id: str, invoice_id: str) -> AutopayRetry | None:
        return self.retries.get((user_id, invoice_id))

    def save_retry(self, retry: AutopayRetry) -> bool:
        key = (retry.user_id, retry.invoice_id)
        stored = self.retries.get(key)
        if (stored.version if stored else 0) != retry.version:
            return False
        self.retries[key] = retry.model_copy(update={"version": retry.version + 1})
        return True

    def retries_due(self, day: date, shard: int) -> Iterator[tuple[str, str]]:
        for (user_id, invoice_id), retry in sorted(self.retries.items()):
            scheduled = retry.next_attempt is not None and retry.due_at is not None
            if scheduled and not retry.closed and hash_shard(user_id) == shard:
                assert retry.due_at is not None
                if retry.due_at.astimezone(IST).date() == day:
                    yield user_id, invoice_id


# --- the gateway --------------------------------------------------------------------------


class ScriptedGateway(SimulatedGateway):
    """The simulator, with the scenario of the next charges scripted by the test
    (``capture``, ``decline``, ``timeout``, ``nowebhook``, ``debitfail``)."""

    def __init__(self, clock: FixedClock, knobs: GatewayKnobs | None = None, seed: int = 7) -> None:
        self.ledger = InMemoryGatewayLedger()
        self.outbox = InMemoryWebhookOutbox()
        self.script: list[str] = []
        self.refund_failures = 0  # the next refund calls that fail (a gateway outage)
        self.refund_failure_rate = 0.0  # and then, at random (seeded)
        self._refund_dice = random.Random(seed)
        super().__init__(
            self.ledger,
            self.outbox,
            StaticKnobs(SimulatorKnobs(gateway=knobs or GatewayKnobs(webhook_delay_seconds=0))),
            clock,
            random.Random(seed),
        )

    def charge(
        self, merchant_reference: str, amount_paise: int, method: PaymentMethod, token: str
    ) -> str:
        if self.script and self.ledger.find(merchant_reference) is None:
            scenario = self.script.pop(0)
            token = f"{scenario}@okhdfc" if method is PaymentMethod.UPI else f"tok_{scenario}"
        return super().charge(merchant_reference, amount_paise, method, token)

    def refund(self, txn_id: str, amount_paise: int) -> str:
        outage = self._refund_dice.random() < self.refund_failure_rate
        if self.refund_failures or outage:
            self.refund_failures = max(self.refund_failures - 1, 0)
            raise ConnectionError("the gateway's refund API is down (simulated)")
        return super().refund(txn_id, amount_paise)

    def transaction_of(self, payment_id: str) -> GatewayTransaction:
        found = self.ledger.find(payment_id)
        assert found is not None, f"the gateway has nothing for {payment_id}"
        return found

    def captured(self) -> int:
        return sum(txn.captured_paise for txn in self.ledger.transactions.values())

    def refunded(self) -> int:
        return sum(txn.refunded_paise for txn in self.ledger.transactions.values())


# --- the world ------------------------------------------------------------------------------


def subscriber(
    user_id: str,
    subscriber_type: SubscriberType,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
) -> Subscriber:
    digits = f"{sum(user_id.encode()) * 7919 % 10**9:09d}"
    return Subscriber(
        user_id=user_id,
        msisdn=f"9{digits}",
        subscriber_type=subscriber_type,
        state="KA",
        status=status,
        bill_cycle_day=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        name="Asha Rao",
        email=f"{user_id}@example.in",
    )


@dataclass
class World:
    clock: FixedClock
    invoices: FakeInvoices
    subscriptions_store: ExtendingSubscriptionStore
    catalog: InMemoryPlanCatalog
    subscriptions: SubscriptionService
    store: InMemoryPaymentStore
    gateway: ScriptedGateway
    events: InMemoryEventPublisher
    notifier: FakeNotifier
    ops: FakeEscalations
    service: PaymentService
    config: PaymentConfig

    def deliver(self, times: int = 1) -> list[str]:
        """Post every queued webhook ``times`` times (a gateway that repeats itself)."""
        outcomes = []
        for body in self.gateway.outbox.drain():
            outcomes += [self.service.on_webhook(dict(body)) for _ in range(times)]
        return outcomes

    def janitor(self, after: timedelta) -> dict[str, Any]:
        """Let ``after`` pass, then run the janitor."""
        self.clock.advance(after)
        return self.service.reconcile(self.clock.now())

    def payment(self, payment_id: str) -> Payment:
        return self.store.get(payment_id)

    def detail(self, detail_type: str, index: int = -1) -> dict[str, Any]:
        return self.events.of_type(detail_type)[index].detail

    def wallet(self, user_id: str = PREPAID_USER) -> int:
        return self.subscriptions_store.wallet_balance(user_id)

    def plan_debits(self) -> int:
        return sum(e.detail["wallet_debit_paise"] for e in self.events.of_type("PlanChanged"))

    def applied(self) -> int:
        """Money applied: to invoices, and to wallets (whether still there or spent
        on plans since)."""
        wallets = sum(self.subscriptions_store.wallets.values())
        return self.invoices.total_paid() + wallets + self.plan_debits()


def make_world(
    *,
    knobs: GatewayKnobs | None = None,
    seed: int = 7,
    config: PaymentConfig | None = None,
    plans_overrides: dict[str, dict[str, Any]] | None = None,
) -> World:
    clock = FixedClock(T0)
    invoices = FakeInvoices()
    subscriptions_store = ExtendingSubscriptionStore()
    subscriptions_store.put_subscriber(subscriber(POSTPAID_USER, SubscriberType.POSTPAID))
    subscriptions_store.put_subscriber(subscriber(PREPAID_USER, SubscriberType.PREPAID))
    plans = [
        plan.model_copy(update=(plans_overrides or {}).get(plan.plan_id, {}))
        for plan in seed_plans()
    ]
    catalog = InMemoryPlanCatalog(plans)
    events = InMemoryEventPublisher()
    subscriptions = SubscriptionService(catalog, subscriptions_store, events, clock)
    store = InMemoryPaymentStore(invoices, subscriptions_store)
    gateway = ScriptedGateway(clock, knobs, seed)
    notifier = FakeNotifier()
    ops = FakeEscalations()
    config = config or PaymentConfig()
    service = PaymentService(
        store=store,
        gateway=gateway,
        invoices=invoices,
        plans=catalog,
        subscribers=subscriptions_store,
        subscriptions=subscriptions,
        events=events,
        notifier=notifier,
        ops=ops,
        clock=clock,
        config=config,
    )
    return World(
        clock=clock,
        invoices=invoices,
        subscriptions_store=subscriptions_store,
        catalog=catalog,
        subscriptions=subscriptions,
        store=store,
        gateway=gateway,
        events=events,
        notifier=notifier,
        ops=ops,
        service=service,
        config=config,
    )

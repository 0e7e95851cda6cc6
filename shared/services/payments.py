"""Payments: invoice payments and prepaid recharges through the gateway, the
webhook that completes them, the reconciliation janitor, and AutoPay.

A payment is stored PENDING before the gateway is asked to charge it, so every
charge the gateway may hold has a record here (its ``merchant_reference`` is
the payment id). The outcome arrives asynchronously:

- the signed webhook (:meth:`PaymentService.on_webhook`), found by the gateway
  transaction id (GSI2) or, before that id is stored, by the merchant reference;
- or the janitor (:meth:`PaymentService.reconcile`), which asks the gateway about
  every payment still open ``janitor_after_seconds`` after its creation.

Money rule: every paisa the gateway captured ends applied xor refunded. Applying
is ONE transaction that moves the payment to SUCCEEDED (conditional on the
payment being exactly as read) and credits the invoice (conditional on it still
owing that much) or the wallet; a payment that cannot be applied (the invoice
was paid meanwhile) or that was captured after it was reported FAILED ("debited
but reported failed") is refunded. A payment stays in the janitor's index
(GSI1 ``PAYOPEN#<shard>``) while its money may still move: PENDING,
RECONCILING, SUCCEEDED with a refund due, and FAILED until
``resolve_within_seconds`` after its creation, so a late capture is found and
refunded. One still PENDING at the gateway after that is escalated to ops.

A recharge credits the wallet in the payment's transaction, then buys the plan
from the wallet (:meth:`SubscriptionService.recharge`, its own transaction): the
plan step runs at most once; if it fails the amount stays in the wallet and the
payment's history says why.

AutoPay (postpaid): on InvoiceIssued the registered mandate is charged (attempt
1). A failed attempt schedules the next one, at 10:00 IST on the first failure's
IST day + 1 (attempt 2) and + 3 (attempt 3) (``PaymentConfig.autopay_retry_days``).
After attempt 3 fails the subscriber gets ONE reminder by SMS and email (claimed
on the retry record before it is sent). A successful attempt, or the invoice
settled any other way, stops the attempts. AutoPay payments have deterministic
ids per invoice and attempt, so a redelivered event or sweep message never
charges twice.

Events go on the bus after the change they describe has committed:
PaymentSucceeded, PaymentFailed, PaymentRefunded. An applied payment stays in the
janitor's index until PaymentSucceeded is out: should the run that applied it
end first (a crash, a timeout), its retry finds a duplicate, and the janitor
announces it then (the subscriber's block is lifted on that event).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import Field, ValidationError

from shared.auth import STAFF, Principal, Role, actor_of, require_owner_or
from shared.clock import IST, Clock, isoformat, to_ist
from shared.errors import (
    ConcurrentModification,
    Conflict,
    DomainError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PlanNotAllowed,
    SubscriberNotActive,
)
from shared.events import DomainEvent, EventPublisher
from shared.models import Frozen, Plan, PositiveInt, Subscriber, SubscriberType
from shared.money import format_inr
from shared.notifications import Notifier, render
from shared.payment_gateway import (
    GatewayStatus,
    GatewayTimeout,
    GatewayTransaction,
    PaymentGateway,
)
from shared.payments import (
    PAYMENT_ID,
    GatewayWebhook,
    Payment,
    PaymentEntry,
    PaymentMethod,
    PaymentPurpose,
    PaymentStatus,
    ensure_no_card_data,
    method_display,
    new_payment_id,
    normalize_vpa,
)
from shared.services.billing import InvoiceNotFound, InvoiceNotPayable
from shared.services.service_control import InvoiceFact
from shared.services.subscriptions import CAN_CHANGE_PLANS, ChangeType, PlanChangeResult
from shared.validation import msisdn_to_e164

logger = Logger(child=True)

SOURCE = "payments"
SAVE_ATTEMPTS = 5  # re-reads after a concurrent change to the same payment
OPEN = frozenset({PaymentStatus.PENDING, PaymentStatus.RECONCILING})
ESCALATED = "ESCALATED"
# A gateway token as clients send it: an opaque id, never a card number (the card
# data guard runs first).
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{5,127}")
_MANDATE = re.compile(r"mandate_[A-Za-z0-9_-]{4,120}")


# --- errors -------------------------------------------------------------------------


class PaymentNotFound(NotFound):
    code = "PAYMENT_NOT_FOUND"


class InvalidPaymentMethod(InvalidRequest):
    code = "INVALID_PAYMENT_METHOD"


class InvalidAmount(InvalidRequest):
    code = "INVALID_AMOUNT"


class AmountExceedsOutstanding(Conflict):
    code = "AMOUNT_EXCEEDS_OUTSTANDING"


class TopupNotAllowed(Conflict):
    code = "TOPUP_NOT_ALLOWED"


class InvalidMandate(InvalidRequest):
    code = "INVALID_MANDATE_TOKEN"


class AutopayNotAvailable(Conflict):
    code = "AUTOPAY_NOT_AVAILABLE"


class StalePayment(Exception):
    """The payment (or the invoice it pays) changed since it was read."""


class PaymentExists(Exception):
    """A payment with this id is stored already."""


# --- requests, records ------------------------------------------------------------------


class PaymentRequest(Frozen):
    """POST /payments. ``invoice_id`` pays an invoice (``amount_paise`` defaults to
    what is outstanding; less is a part payment); ``plan_id`` buys a prepaid plan
    (its price); neither is a wallet top-up of ``amount_paise``."""

    user_id: str
    method: PaymentMethod
    invoice_id: str | None = None
    plan_id: str | None = None
    amount_paise: PositiveInt | None = None
    vpa: str | None = Field(default=None, description="UPI only: name@bank")
    token: str | None = Field(default=None, description="CARD / WALLET: the gateway's token")

    @property
    def purpose(self) -> PaymentPurpose:
        if self.invoice_id is not None:
            return PaymentPurpose.INVOICE
        if self.plan_id is not None:
            return PaymentPurpose.RECHARGE
        return PaymentPurpose.TOPUP


class PaymentView(Frozen):
    """What GET /payments/{id} shows: the payment without the raw VPA or token."""

    payment_id: str
    user_id: str
    purpose: PaymentPurpose
    invoice_id: str | None
    plan_id: str | None
    amount_paise: int
    method: PaymentMethod
    method_display: str
    status: PaymentStatus
    transaction_id: str | None
    created_at: datetime
    payment_date: datetime | None
    applied_paise: int
    refunded_paise: int
    refund_id: str | None
    autopay_attempt: int | None
    history: tuple[PaymentEntry, ...]

    @classmethod
    def of(cls, payment: Payment) -> PaymentView:
        fields = payment.model_dump(exclude={"gateway_token", "gateway_txn_id"})
        return cls(**fields, transaction_id=payment.gateway_txn_id)


class AutopayMandate(Frozen):
    """``USER#<id>/AUTOPAY``: the registered mandate (none while disabled)."""

    user_id: str
    enabled: bool
    mandate_token: str | None
    created_at: datetime
    updated_at: datetime


class AutopayStatus(Frozen):
    user_id: str
    enabled: bool
    mandate: str | None = Field(description="The mandate token, masked")
    updated_at: datetime


class AutopayRetry(Frozen):
    """``USER#<id>/AUTOPAYRETRY#<invoice_id>``: the failed AutoPay attempts of one
    invoice and the next one, if any. ``version`` is the store's lock (0: new)."""

    user_id: str
    invoice_id: str
    first_failed_at: datetime
    failed_attempts: int = Field(ge=1, description="The last attempt that failed")
    next_attempt: int | None = None
    due_at: datetime | None = None
    reminded_at: datetime | None = None
    closed: str | None = Field(default=None, description="Why no attempt follows")
    version: int = 0


# --- ports ------------------------------------------------------------------------------


class PaymentStore(Protocol):
    def create(self, payment: Payment) -> None:
        """The payment (in the janitor's index) and its id lookup. Raises PaymentExists."""
        ...

    def get(self, payment_id: str) -> Payment:
        """Consistent read. Raises PaymentNotFound."""
        ...

    def find_by_txn(self, txn_id: str) -> Payment | None: ...

    def save(self, before: Payment, after: Payment, *, watch: bool) -> None:
        """Store ``after`` if the payment is still ``before`` (status and history
        length); in the janitor's index iff ``watch``. Raises StalePayment."""
        ...

    def apply(self, before: Payment, after: Payment) -> None:
        """ONE transaction: ``after`` (SUCCEEDED, still in the janitor's index until
        the service announces it) if the payment is still ``before``, and
        ``after.applied_paise`` credited where its purpose says: the invoice's
        ``paid_paise`` (PAID when nothing remains) or the wallet. Raises
        StalePayment (the payment or the invoice changed: read again) or
        InvoiceNotPayable (the invoice owes less than that now, and the payment
        is still ``before``)."""
        ...

    def open_payments(self, shard: int, created_before: datetime) -> Iterable[Payment]:
        """Payments in the janitor's index created before ``created_before``."""
        ...

    def get_mandate(self, user_id: str) -> AutopayMandate | None: ...

    def put_mandate(self, mandate: AutopayMandate) -> None: ...

    def get_retry(self, user_id: str, invoice_id: str) -> AutopayRetry | None: ...

    def save_retry(self, retry: AutopayRetry) -> bool:
        """Store ``retry`` (its version + 1) if the stored version is still
        ``retry.version``; in the due index while an attempt is scheduled.
        False when it changed meanwhile."""
        ...

    def retries_due(self, day: date, shard: int) -> Iterable[tuple[str, str]]:
        """(user_id, invoice_id) of AutoPay attempts scheduled on this IST day."""
        ...


class InvoiceReader(Protocol):
    """Billing's invoices as facts (shared.stores.service_control.DynamoFacts)."""

    def invoice(self, user_id: str, invoice_id: str) -> InvoiceFact | None: ...


class PlanCatalog(Protocol):
    def get(self, plan_id: str) -> Plan: ...


class Subscribers(Protocol):
    def get_subscriber(self, user_id: str) -> Subscriber: ...


class Subscribing(Protocol):
    def recharge(self, user_id: str, plan_id: str) -> PlanChangeResult:
        """Buy the plan from the wallet: start it, change to it, or extend / restart
        it when it is the active plan (SubscriptionService.recharge)."""
        ...


class OpsQueue(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class PaymentConfig:
    janitor_after_seconds: int = 900
    resolve_within_seconds: int = 7200
    # AutoPay: attempt n+2 at ``autopay_retry_at`` IST, this many days after the
    # IST day of the first failure: attempt 2 the next day, attempt 3 three days on.
    autopay_retry_days: tuple[int, ...] = (1, 3)
    autopay_retry_at: time = time(10, 0)
    topup_min_paise: int = 1_000  # ₹10
    topup_max_paise: int = 1_000_000  # ₹10,000
    shards: int = 8  # shared.db.CYCLE_SHARDS: the index shards the store writes

    @property
    def autopay_attempts(self) -> int:
        return 1 + len(self.autopay_retry_days)


def autopay_payment_id(invoice_id: str, attempt: int) -> str:
    """The same id for the same attempt on the same invoice, however often asked."""
    return keyed_payment_id(hashlib.sha256(f"autopay:{invoice_id}:{attempt}".encode()).hexdigest())


def keyed_payment_id(token: str) -> str:
    """The payment id a hex token names (``PAY-`` and its first 20 digits)."""
    return f"PAY-{token[:20].upper()}"


# What the janitor's resolution changed (the rest: settled, pending, watching).
RECONCILED_OUTCOMES = frozenset({"applied", "failed", "refunded", "escalated", "closed"})


class PaymentService:
    def __init__(
        self,
        *,
        store: PaymentStore,
        gateway: PaymentGateway,
        invoices: InvoiceReader,
        plans: PlanCatalog,
        subscribers: Subscribers,
        subscriptions: Subscribing,
        events: EventPublisher,
        notifier: Notifier,
        ops: OpsQueue,
        clock: Clock,
        config: PaymentConfig = PaymentConfig(),
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._invoices = invoices
        self._plans = plans
        self._subscribers = subscribers
        self._subscriptions = subscriptions
        self._events = events
        self._notifier = notifier
        self._ops = ops
        self._clock = clock
        self._config = config

    # --- API ---------------------------------------------------------------------------

    def create(
        self, principal: Principal, request: PaymentRequest, request_token: str | None = None
    ) -> Payment:
        """A payment, sent to the gateway. ``request_token`` names the request
        (web.Idempotency.request_token): the payment takes its id from it, so a retry
        of a request that committed and then failed (its answer lost; the idempotency
        record is dropped when an attempt raises) finds that payment instead of
        charging again, and one with another body is refused (IdempotencyKeyReused)."""
        require_owner_or(principal, request.user_id, staff={Role.AGENT})
        ensure_no_card_data(request.model_dump(mode="json"))
        method, token = _method_and_token(request)
        payment_id = keyed_payment_id(request_token) if request_token else new_payment_id()
        if request_token and (made := self._made_already(payment_id, request, token)):
            return made  # before the checks: the invoice it paid may be paid by now
        subscriber = self._subscribers.get_subscriber(request.user_id)
        purpose, amount = self._purpose_and_amount(subscriber, request)
        now = self._clock.now()
        payment = Payment(
            payment_id=payment_id,
            user_id=request.user_id,
            purpose=purpose,
            invoice_id=request.invoice_id if purpose is PaymentPurpose.INVOICE else None,
            plan_id=request.plan_id if purpose is PaymentPurpose.RECHARGE else None,
            amount_paise=amount,
            method=method,
            method_display=method_display(method, token),
            gateway_token=token,
            status=PaymentStatus.PENDING,
            created_at=now,
            history=(
                PaymentEntry(
                    at=now, status=PaymentStatus.PENDING, detail=f"by {actor_of(principal)}"
                ),
            ),
        )
        try:
            self._store.create(payment)
        except PaymentExists:  # the same request's retry, concurrently
            return self._resumed(self._store.get(payment_id), request, token)
        return self._charge(payment)

    def _made_already(self, payment_id: str, request: PaymentRequest, token: str) -> Payment | None:
        try:
            payment = self._store.get(payment_id)
        except PaymentNotFound:
            return None  # the first attempt of the request (or one that made nothing)
        return self._resumed(payment, request, token)

    def _resumed(self, payment: Payment, request: PaymentRequest, token: str) -> Payment:
        """A payment an earlier attempt of the request made, if it is this request's:
        sent to the gateway now if that attempt died before (a repeated reference
        gets its first transaction)."""
        asked = (request.user_id, request.invoice_id, request.plan_id, request.method, token)
        made = (
            payment.user_id,
            payment.invoice_id,
            payment.plan_id,
            payment.method,
            payment.gateway_token,
        )
        amount = request.amount_paise
        if asked != made or (amount is not None and amount != payment.amount_paise):
            raise IdempotencyKeyReused("this key made a payment with another body")
        if payment.status is PaymentStatus.PENDING and payment.gateway_txn_id is None:
            return self._charge(payment)
        return payment

    def get(self, principal: Principal, payment_id: str) -> Payment:
        if not PAYMENT_ID.fullmatch(payment_id):
            raise PaymentNotFound(f"no payment {payment_id!r}")
        payment = self._store.get(payment_id)
        require_owner_or(principal, payment.user_id, staff=STAFF)
        return payment

    # --- the gateway's reports -------------------------------------------------------------

    def on_webhook(self, body: dict[str, Any]) -> str:
        """A report whose signature the handler verified. Idempotent: a report the
        payment already reflects answers "duplicate" and changes nothing."""
        try:
            report = GatewayWebhook.model_validate(body)
        except ValidationError:
            # Not echoed: whatever the body holds stays out of the answer and the logs.
            raise InvalidRequest("the body is not a gateway report") from None
        payment = self._store.find_by_txn(report.txn_id)
        if payment is None and PAYMENT_ID.fullmatch(report.merchant_reference):
            try:
                payment = self._store.get(report.merchant_reference)
            except PaymentNotFound:
                payment = None
        if payment is None:
            raise PaymentNotFound(f"no payment for transaction {report.txn_id}")
        if payment.gateway_txn_id not in {None, report.txn_id}:
            logger.error(
                "webhook for another transaction of a payment",
                extra={"payment_id": payment.payment_id, "txn_id": report.txn_id},
            )
            return "ignored: the payment has another transaction"
        if report.status == GatewayStatus.CAPTURED.value:
            return self._captured(
                payment, report.txn_id, report.amount_paise, report.occurred_at, "webhook"
            )
        return self._failed(payment, report.txn_id, "the gateway reported a failure")

    # --- the janitor ------------------------------------------------------------------------

    def reconcile(self, now: datetime) -> dict[str, Any]:
        """Every payment open ``janitor_after_seconds`` after its creation: ask the
        gateway and resolve it (:meth:`resolve`). One failing does not stop the run."""
        cutoff = now - timedelta(seconds=self._config.janitor_after_seconds)
        outcomes: Counter[str] = Counter()
        for shard in range(self._config.shards):
            for payment in self._store.open_payments(shard, cutoff):
                try:
                    outcome = self.resolve(payment)
                except Exception:
                    logger.exception("payment not resolved", extra={"id": payment.payment_id})
                    outcome = "error"
                outcomes[outcome.partition(":")[0]] += 1
        return {"checked": sum(outcomes.values()), "outcomes": dict(outcomes)}

    def resolve(self, payment: Payment) -> str:
        """Settle a payment by what the gateway says, announcing a reconciliation
        (what no webhook resolved) as PaymentReconciled."""
        outcome = self._resolve(payment)
        kind = outcome.partition(":")[0]
        if kind in RECONCILED_OUTCOMES:
            self._publish(
                payment,
                "PaymentReconciled",
                {
                    "user_id": payment.user_id,
                    "payment_id": payment.payment_id,
                    "purpose": payment.purpose.value,
                    "invoice_id": payment.invoice_id,
                    "amount_paise": payment.amount_paise,
                    "outcome": kind,
                },
                qualifier=kind,  # escalated first, applied later: two reconciliations
            )
        return outcome

    def _resolve(self, payment: Payment) -> str:
        current = self._store.get(payment.payment_id)
        if current.status is PaymentStatus.REFUNDED:
            self._unwatch(current, None)
            return "settled"
        if current.status is PaymentStatus.SUCCEEDED and not _refund_due(current):
            # Applied, and still watched: the run that applied it ended before
            # announcing it (a crash, a lost answer). Its retry, if any, found a
            # duplicate; the subscriber's block and AutoPay wait for the event.
            self._announce_success(current)
            self._unwatch(current, None)
            return "announced"
        txn = (
            self._gateway.status(current.gateway_txn_id)
            if current.gateway_txn_id
            else self._gateway.find(current.payment_id)
        )
        if current.status is PaymentStatus.SUCCEEDED:  # captured, nothing applied
            amount = txn.captured_paise if txn else current.amount_paise
            return self._refund(current, amount, "nothing left to apply it to")
        if current.status is PaymentStatus.FAILED:
            return self._recheck_failed(current, txn)
        return self._resolve_open(current, txn)

    def _resolve_open(self, current: Payment, txn: GatewayTransaction | None) -> str:
        """A PENDING or RECONCILING payment, by what the gateway says."""
        if txn is None:
            return self._failed(current, None, "the gateway has no transaction for it")
        if txn.status is GatewayStatus.CAPTURED:
            return self._captured(
                current, txn.txn_id, txn.captured_paise, txn.created_at, "gateway status"
            )
        if txn.status is GatewayStatus.FAILED:
            return self._failed(current, txn.txn_id, "the gateway's status is FAILED")
        if txn.status is GatewayStatus.PENDING and not self._overdue(current):
            return "pending at the gateway"
        return self._escalate(current, txn, f"the gateway's status is {txn.status.value}")

    def _recheck_failed(self, payment: Payment, txn: GatewayTransaction | None) -> str:
        """A FAILED payment, watched for a capture that comes after all."""
        if txn is not None and txn.captured_paise > 0:
            refund = payment.model_copy(update={"gateway_txn_id": txn.txn_id})
            return self._refund(refund, txn.captured_paise, "captured after it failed")
        self._autopay_after_failure(payment)  # done already unless a crash cut it short
        if not self._overdue(payment):
            return "failed: watching"
        if txn is not None and txn.status is GatewayStatus.PENDING:
            return self._escalate(payment, txn, "failed here, still PENDING at the gateway")
        self._unwatch(payment, "checked at the gateway: nothing captured")
        return "closed"

    # --- AutoPay --------------------------------------------------------------------------

    def set_autopay(
        self, principal: Principal, user_id: str, enabled: bool, mandate_token: str | None = None
    ) -> AutopayStatus:
        if Role.SUBSCRIBER not in principal.roles or principal.subject != user_id:
            raise Forbidden("only the subscriber may register or remove their AutoPay")
        subscriber = self._subscribers.get_subscriber(user_id)
        if subscriber.subscriber_type is not SubscriberType.POSTPAID:
            raise AutopayNotAvailable("AutoPay pays postpaid bills; prepaid lines recharge")
        token = None
        if enabled:
            if mandate_token is None:
                raise InvalidMandate("enabling AutoPay needs a mandate_token")
            ensure_no_card_data(mandate_token)
            if not _MANDATE.fullmatch(mandate_token):
                raise InvalidMandate("not a gateway mandate token (mandate_...)")
            token = mandate_token
        now = self._clock.now()
        existing = self._store.get_mandate(user_id)
        mandate = AutopayMandate(
            user_id=user_id,
            enabled=enabled,
            mandate_token=token,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
        self._store.put_mandate(mandate)
        return _autopay_status(mandate)

    def autopay(self, principal: Principal, user_id: str) -> AutopayStatus | None:
        require_owner_or(principal, user_id)
        mandate = self._store.get_mandate(user_id)
        return _autopay_status(mandate) if mandate else None

    def on_invoice_issued(self, user_id: str, invoice_id: str, total_paise: int) -> str:
        """Attempt 1 of AutoPay, if the subscriber has a mandate."""
        mandate = self._store.get_mandate(user_id)
        if mandate is None or not mandate.enabled or mandate.mandate_token is None:
            return "no AutoPay"
        del total_paise  # what is owed now counts (a credit note may have come first)
        return self._autopay_charge(user_id, invoice_id, 1, mandate.mandate_token)

    def autopay_retries_due(self, day: date) -> list[dict[str, str]]:
        """The sweep: one message per attempt scheduled on ``day`` (IST;
        :func:`shared.sweeps.run_daily_sweep` decides which); :meth:`retry_autopay`
        takes each."""
        return [
            {"task": "autopay_retry", "user_id": user_id, "invoice_id": invoice_id}
            for shard in range(self._config.shards)
            for user_id, invoice_id in self._store.retries_due(day, shard)
        ]

    def retry_autopay(self, user_id: str, invoice_id: str) -> str:
        retry = self._store.get_retry(user_id, invoice_id)
        if retry is None or retry.closed or retry.next_attempt is None or retry.due_at is None:
            return "nothing scheduled"
        if retry.due_at > self._clock.now():
            return "not due yet"
        mandate = self._store.get_mandate(user_id)
        if mandate is None or not mandate.enabled or mandate.mandate_token is None:
            self._close_retries(user_id, invoice_id, "AUTOPAY_DISABLED")
            return "AutoPay disabled"
        outcome = self._autopay_charge(
            user_id, invoice_id, retry.next_attempt, mandate.mandate_token
        )
        # Off the due index (a later sweep finds nothing); a failure schedules the next.
        self._store.save_retry(retry.model_copy(update={"next_attempt": None, "due_at": None}))
        return outcome

    def _autopay_charge(self, user_id: str, invoice_id: str, attempt: int, token: str) -> str:
        fact = self._invoices.invoice(user_id, invoice_id)
        if fact is None or not fact.unpaid or fact.outstanding_paise <= 0:
            self._close_retries(user_id, invoice_id, "INVOICE_SETTLED")
            return "invoice settled"
        payment_id = autopay_payment_id(invoice_id, attempt)
        now = self._clock.now()
        payment = Payment(
            payment_id=payment_id,
            user_id=user_id,
            purpose=PaymentPurpose.INVOICE,
            invoice_id=invoice_id,
            amount_paise=fact.outstanding_paise,
            method=PaymentMethod.MANDATE,
            method_display=method_display(PaymentMethod.MANDATE, token),
            gateway_token=token,
            status=PaymentStatus.PENDING,
            created_at=now,
            autopay_attempt=attempt,
            history=(
                PaymentEntry(
                    at=now, status=PaymentStatus.PENDING, detail=f"AutoPay attempt {attempt}"
                ),
            ),
        )
        try:
            self._store.create(payment)
        except PaymentExists:
            existing = self._store.get(payment_id)
            return f"attempt {attempt} made already: {existing.status.value}"
        charged = self._charge(payment)
        return f"attempt {attempt}: {charged.status.value}"

    def _autopay_after_failure(self, payment: Payment) -> None:
        """Schedule the next attempt, or remind once after the last one. Safe to
        repeat: a failure already recorded changes nothing."""
        attempt, invoice_id = payment.autopay_attempt, payment.invoice_id
        if attempt is None or invoice_id is None:
            return
        for _ in range(SAVE_ATTEMPTS):
            retry = self._store.get_retry(payment.user_id, invoice_id)
            if retry is not None and (retry.closed or retry.failed_attempts >= attempt):
                if retry.closed == "EXHAUSTED" and retry.reminded_at is None:
                    self._remind(retry)
                return
            first_failed = retry.first_failed_at if retry else _failed_at(payment)
            last = attempt >= self._config.autopay_attempts
            update = {
                "failed_attempts": attempt,
                "next_attempt": None if last else attempt + 1,
                "due_at": None if last else self._retry_due(first_failed, attempt + 1),
                "closed": "EXHAUSTED" if last else None,
            }
            after = (
                retry.model_copy(update=update)
                if retry
                else AutopayRetry(
                    user_id=payment.user_id,
                    invoice_id=invoice_id,
                    first_failed_at=first_failed,
                    **update,
                )
            )
            if self._store.save_retry(after):
                if last:
                    self._remind(after.model_copy(update={"version": after.version + 1}))
                return
        raise ConcurrentModification(f"the AutoPay retries of {invoice_id} kept changing")

    def _retry_due(self, first_failed_at: datetime, attempt: int) -> datetime:
        """The attempt's day, counted from the first failure, at the retry time; or
        the next retry time if that has passed (a failure recorded late, its
        payment having hung): the day's sweep has run and would not see it."""
        days = self._config.autopay_retry_days[attempt - 2]
        day = to_ist(first_failed_at).date() + timedelta(days=days)
        planned = datetime.combine(day, self._config.autopay_retry_at, IST)
        return max(planned, self._next_retry_time())

    def _next_retry_time(self) -> datetime:
        now = to_ist(self._clock.now())
        today = datetime.combine(now.date(), self._config.autopay_retry_at, IST)
        return today if now < today else today + timedelta(days=1)

    def _remind(self, retry: AutopayRetry) -> None:
        """Once per invoice: claimed on the retry record, then sent."""
        fact = self._invoices.invoice(retry.user_id, retry.invoice_id)
        if fact is None or not fact.unpaid:
            return
        claimed = retry.model_copy(update={"reminded_at": self._clock.now()})
        if not self._store.save_retry(claimed):
            return  # changed meanwhile: whoever changed it decides (it re-reads)
        self._notify(
            retry.user_id,
            "autopay_failed",
            {"invoice": retry.invoice_id, "amount": format_inr(fact.outstanding_paise)},
        )

    def _close_retries(self, user_id: str, invoice_id: str, reason: str) -> None:
        for _ in range(SAVE_ATTEMPTS):
            retry = self._store.get_retry(user_id, invoice_id)
            if retry is None or retry.closed:
                return
            closed = retry.model_copy(
                update={"closed": reason, "next_attempt": None, "due_at": None}
            )
            if self._store.save_retry(closed):
                return

    # --- charging ------------------------------------------------------------------------

    def _charge(self, payment: Payment) -> Payment:
        assert payment.gateway_token is not None
        try:
            txn_id = self._gateway.charge(
                payment.payment_id, payment.amount_paise, payment.method, payment.gateway_token
            )
        except Exception as error:
            # A timeout, or any failure of the call: the gateway may hold the charge
            # or not. The webhook or the janitor's lookup tells.
            if not isinstance(error, GatewayTimeout):
                logger.warning(
                    "charge call failed", extra={"id": payment.payment_id}, exc_info=True
                )
            detail = "no answer from the gateway; to be looked up"
            return self._update(
                payment,
                lambda p: (
                    p.with_status(PaymentStatus.RECONCILING, self._clock.now(), detail)
                    if p.status is PaymentStatus.PENDING
                    else None
                ),
            )
        return self._update(
            payment,
            lambda p: (
                _noted(p, self._clock.now(), f"sent to the gateway as {txn_id}", txn_id)
                if p.gateway_txn_id is None
                else None
            ),
        )

    def _captured(
        self,
        payment: Payment,
        txn_id: str,
        captured_paise: int,
        captured_at: datetime,
        via: str,
    ) -> str:
        current = payment
        for _ in range(SAVE_ATTEMPTS):
            settled = self._settle_capture(current, txn_id, captured_paise)
            if settled is not None:
                return settled
            now = self._clock.now()
            applied = current.with_status(
                PaymentStatus.SUCCEEDED,
                now,
                f"captured ({via}), applied to the {_target(current)}",
                payment_date=captured_at,
                applied_paise=captured_paise,
                gateway_txn_id=txn_id,
            )
            try:
                self._store.apply(current, applied)
            except StalePayment:
                current = self._store.get(current.payment_id)
                continue
            except InvoiceNotPayable:
                # Paid meanwhile by another payment: SUCCEEDED with nothing applied
                # (still watched: the refund is due), then refunded.
                unapplied = current.with_status(
                    PaymentStatus.SUCCEEDED,
                    now,
                    f"captured ({via}); the invoice was settled meanwhile: refund due",
                    payment_date=captured_at,
                    gateway_txn_id=txn_id,
                )
                try:
                    self._store.save(current, unapplied, watch=True)
                except StalePayment:
                    current = self._store.get(current.payment_id)
                    continue
                return self._refund(unapplied, captured_paise, "the invoice was settled meanwhile")
            self._after_success(applied)
            return "applied"
        raise ConcurrentModification(f"payment {payment.payment_id} kept changing")

    def _settle_capture(self, current: Payment, txn_id: str, captured_paise: int) -> str | None:
        """A capture that is not to be applied: a repeat, a refund, a mismatch.
        None when the payment is open and the capture is to be applied."""
        if current.status is PaymentStatus.REFUNDED:
            return "duplicate"
        if current.status is PaymentStatus.SUCCEEDED:
            if _refund_due(current):
                return self._refund(current, captured_paise, "nothing left to apply it to")
            return "duplicate"
        if captured_paise != current.amount_paise:
            txn = self._gateway.status(txn_id)
            return self._escalate(current, txn, f"captured {captured_paise} paise")
        if current.status is PaymentStatus.FAILED:
            refund = current.model_copy(update={"gateway_txn_id": txn_id})
            return self._refund(refund, captured_paise, "captured after it failed")
        return None

    def _failed(self, payment: Payment, txn_id: str | None, reason: str) -> str:
        current = payment
        for _ in range(SAVE_ATTEMPTS):
            if current.status in {PaymentStatus.FAILED, PaymentStatus.REFUNDED}:
                return "duplicate"
            if current.status is PaymentStatus.SUCCEEDED:
                logger.warning("failure reported for a captured payment", extra={"id": txn_id})
                return "ignored: the capture was applied"
            changes = {"gateway_txn_id": txn_id} if txn_id else {}
            failed = current.with_status(PaymentStatus.FAILED, self._clock.now(), reason, **changes)
            try:
                self._store.save(current, failed, watch=True)
            except StalePayment:
                current = self._store.get(current.payment_id)
                continue
            self._publish(
                failed,
                "PaymentFailed",
                {
                    "user_id": failed.user_id,
                    "payment_id": failed.payment_id,
                    "purpose": failed.purpose.value,
                    "invoice_id": failed.invoice_id,
                    "plan_id": failed.plan_id,
                    "amount_paise": failed.amount_paise,
                    "autopay_attempt": failed.autopay_attempt,
                    "reason": reason,
                },
            )
            self._autopay_after_failure(failed)
            return "failed"
        raise ConcurrentModification(f"payment {payment.payment_id} kept changing")

    def _refund(self, payment: Payment, amount_paise: int, reason: str) -> str:
        """Give captured money back: the gateway's refund is idempotent per
        transaction, so a repeat after a crash refunds nothing twice."""
        txn_id = payment.gateway_txn_id
        assert txn_id is not None, "only a captured payment is refunded"
        try:
            refund_id = self._gateway.refund(txn_id, amount_paise)
        except Exception:
            # Still watched (FAILED, or SUCCEEDED with nothing applied): the janitor retries.
            logger.warning("refund not made yet", extra={"id": payment.payment_id}, exc_info=True)
            return "refund pending"
        detail = f"refunded {amount_paise} paise ({refund_id}): {reason}"
        refunded = self._update(
            payment,
            lambda p: (
                p.with_status(
                    PaymentStatus.REFUNDED,
                    self._clock.now(),
                    detail,
                    refunded_paise=amount_paise,
                    refund_id=refund_id,
                    gateway_txn_id=txn_id,
                )
                if p.status is not PaymentStatus.REFUNDED
                else None
            ),
        )
        self._publish(
            refunded,
            "PaymentRefunded",
            {
                "user_id": refunded.user_id,
                "payment_id": refunded.payment_id,
                "purpose": refunded.purpose.value,
                "invoice_id": refunded.invoice_id,
                "amount_paise": amount_paise,
                "refund_id": refund_id,
                "reason": reason,
            },
        )
        return "refunded"

    def _escalate(self, payment: Payment, txn: GatewayTransaction | None, detail: str) -> str:
        if any(entry.detail.startswith(ESCALATED) for entry in payment.history):
            return "escalated earlier"
        now = self._clock.now()
        age = int((now - payment.created_at).total_seconds())
        self._ops.send(
            {
                "kind": "PaymentEscalated",
                "payment_id": payment.payment_id,
                "user_id": payment.user_id,
                "purpose": payment.purpose.value,
                "invoice_id": payment.invoice_id,
                "plan_id": payment.plan_id,
                "amount_paise": payment.amount_paise,
                "status": payment.status.value,
                "transaction_id": payment.gateway_txn_id or (txn.txn_id if txn else None),
                "gateway_status": txn.status.value if txn else None,
                "age_seconds": age,
                "created_at": isoformat(payment.created_at),
                "escalated_at": isoformat(now),
                "detail": detail,
                "runbook": "Look the transaction up in the gateway's console. Captured: let "
                "the janitor apply it (or refund it if the payment FAILED). Never captured: "
                "nothing to do; the payment fails once the gateway says so.",
            }
        )
        entry = f"{ESCALATED}: {detail}"

        def escalated(p: Payment) -> Payment:
            if p.status is PaymentStatus.PENDING:
                return p.with_status(PaymentStatus.RECONCILING, now, entry)
            return _noted(p, now, entry, p.gateway_txn_id)

        self._update(payment, escalated)
        return "escalated"

    # --- after a successful application -----------------------------------------------

    def _after_success(self, payment: Payment) -> None:
        self._announce_success(payment)
        self._unwatch(payment, None)  # announced: the janitor has nothing left to do
        if payment.purpose is PaymentPurpose.RECHARGE:
            self._start_plan(payment)  # after the unwatch: the janitor never starts a plan

    def _announce_success(self, payment: Payment) -> None:
        """PaymentSucceeded (its id fixed per payment) and the AutoPay retries
        closed: repeatable, so the janitor repeats them for a payment applied by
        a run that ended before announcing it (apply() leaves it watched)."""
        self._publish(
            payment,
            "PaymentSucceeded",
            {
                "user_id": payment.user_id,
                "payment_id": payment.payment_id,
                "purpose": payment.purpose.value,
                "invoice_id": payment.invoice_id,
                "plan_id": payment.plan_id,
                "amount_paise": payment.amount_paise,
                "method": payment.method.value,
                "autopay_attempt": payment.autopay_attempt,
            },
        )
        if payment.purpose is not PaymentPurpose.RECHARGE and payment.invoice_id is not None:
            fact = self._invoices.invoice(payment.user_id, payment.invoice_id)
            if payment.autopay_attempt is not None or fact is None or not fact.unpaid:
                self._close_retries(payment.user_id, payment.invoice_id, "PAID")

    def _start_plan(self, payment: Payment) -> None:
        """At most once: a failure leaves the amount in the wallet, and says so."""
        assert payment.plan_id is not None
        try:
            result = self._subscriptions.recharge(payment.user_id, payment.plan_id)
        except Exception as error:
            # Not retried (a second purchase could follow a first that committed
            # unseen): the money is in the wallet, and the history says so.
            code = error.code if isinstance(error, DomainError) else "ERROR"
            logger.warning("recharge kept in the wallet", extra={"code": code}, exc_info=True)
            self._note(payment, f"plan not started ({code}); the amount is in the wallet")
            return
        until = isoformat(result.valid_until) if result.valid_until else "-"
        self._note(payment, f"plan {result.change_type.value}: valid until {until}")
        if result.change_type is ChangeType.EXTENDED and result.valid_until is not None:
            plan = self._plans.get(payment.plan_id)
            self._notify(
                payment.user_id,
                "recharge_extended",
                {
                    "plan": plan.name,
                    "amount": format_inr(payment.amount_paise),
                    "starts": _ist_text(result.effective_at),
                    "valid_until": _ist_text(result.valid_until),
                },
                line=True,
            )

    # --- helpers -------------------------------------------------------------------------

    def _purpose_and_amount(
        self, subscriber: Subscriber, request: PaymentRequest
    ) -> tuple[PaymentPurpose, int]:
        if request.invoice_id is not None and request.plan_id is not None:
            raise InvalidRequest("name an invoice_id or a plan_id, not both")
        purpose = request.purpose
        if purpose is PaymentPurpose.INVOICE:
            assert request.invoice_id is not None
            return purpose, self._invoice_amount(request.user_id, request.invoice_id, request)
        if subscriber.subscriber_type is not SubscriberType.PREPAID:
            raise (
                PlanNotAllowed("postpaid lines do not buy prepaid plans")
                if purpose is PaymentPurpose.RECHARGE
                else TopupNotAllowed("the wallet is prepaid; postpaid lines pay their invoices")
            )
        if subscriber.status not in CAN_CHANGE_PLANS:
            raise SubscriberNotActive(f"the line is {subscriber.status.value}")
        if purpose is PaymentPurpose.RECHARGE:
            assert request.plan_id is not None
            plan = self._plans.get(request.plan_id)
            if not plan.active or plan.type is not SubscriberType.PREPAID:
                raise PlanNotAllowed(f"plan {plan.plan_id} cannot be bought as a recharge")
            if request.amount_paise not in {None, plan.price_paise}:
                raise InvalidAmount(f"{plan.plan_id} costs {plan.price_paise} paise")
            return purpose, plan.price_paise
        amount = request.amount_paise
        low, high = self._config.topup_min_paise, self._config.topup_max_paise
        if amount is None or not low <= amount <= high:
            raise InvalidAmount(f"a top-up is between {low} and {high} paise")
        return purpose, amount

    def _invoice_amount(self, user_id: str, invoice_id: str, request: PaymentRequest) -> int:
        fact = self._invoices.invoice(user_id, invoice_id)
        if fact is None:
            raise InvoiceNotFound(f"no invoice {invoice_id!r} for {user_id}")
        if not fact.unpaid or fact.outstanding_paise <= 0:
            raise InvoiceNotPayable(f"{invoice_id} is settled: nothing to pay")
        amount = request.amount_paise or fact.outstanding_paise
        if amount > fact.outstanding_paise:
            raise AmountExceedsOutstanding(
                f"{invoice_id} owes {fact.outstanding_paise} paise; pay at most that",
                details={"outstanding_paise": fact.outstanding_paise},
            )
        return amount

    def _update(self, payment: Payment, step: Callable[[Payment], Payment | None]) -> Payment:
        """Apply ``step`` to the payment as stored, re-reading after a concurrent
        change; ``step`` returns None when there is nothing (left) to do."""
        current = payment
        for _ in range(SAVE_ATTEMPTS):
            after = step(current)
            if after is None:
                return current
            try:
                self._store.save(current, after, watch=_watched(after))
            except StalePayment:
                current = self._store.get(payment.payment_id)
                continue
            return after
        raise ConcurrentModification(f"payment {payment.payment_id} kept changing")

    def _note(self, payment: Payment, detail: str) -> None:
        now = self._clock.now()
        self._update(payment, lambda p: _noted(p, now, detail, p.gateway_txn_id))

    def _unwatch(self, payment: Payment, detail: str | None) -> None:
        now = self._clock.now()
        after = _noted(payment, now, detail, payment.gateway_txn_id) if detail else payment
        with contextlib.suppress(StalePayment):  # changed meanwhile: the next run looks again
            self._store.save(payment, after, watch=False)

    def _overdue(self, payment: Payment) -> bool:
        """Past the time by which every payment must be resolved."""
        limit = timedelta(seconds=self._config.resolve_within_seconds)
        return self._clock.now() - payment.created_at >= limit

    def _publish(
        self, payment: Payment, kind: str, detail: dict[str, Any], qualifier: str = ""
    ) -> None:
        self._events.publish(
            [
                DomainEvent(
                    detail_type=kind,
                    source=SOURCE,
                    occurred_at=self._clock.now(),
                    # The same change announced twice (a retry) carries the same id.
                    event_id="-".join(filter(None, (kind, payment.payment_id, qualifier))),
                    correlation_id=payment.payment_id,
                    detail=detail,
                )
            ]
        )

    def _notify(
        self, user_id: str, template: str, values: dict[str, str], *, line: bool = False
    ) -> None:
        """SMS (to the line itself when ``line``, else to the contact number, then
        the line) and email. A failure is logged, never raised."""
        try:
            subscriber = self._subscribers.get_subscriber(user_id)
            message = render(template, {"name": subscriber.name or "Customer", **values})
            number = subscriber.msisdn if line else (subscriber.phone or subscriber.msisdn)
            self._notifier.send_sms(msisdn_to_e164(number), message.sms)
            if subscriber.email:
                self._notifier.send_email(
                    subscriber.email, message.email_subject, message.email_body
                )
        except Exception:
            logger.warning("notification not sent", extra={"template": template}, exc_info=True)


# --- pure helpers ---------------------------------------------------------------------


def _method_and_token(request: PaymentRequest) -> tuple[PaymentMethod, str]:
    method = request.method
    if method is PaymentMethod.MANDATE:
        raise InvalidPaymentMethod("MANDATE charges are made by AutoPay only")
    if method is PaymentMethod.UPI:
        if request.token is not None or not request.vpa:
            raise InvalidPaymentMethod("UPI takes a vpa (name@bank) and no token")
        return method, normalize_vpa(request.vpa)
    if request.vpa is not None or not request.token:
        raise InvalidPaymentMethod(f"{method.value} takes the gateway's token and no vpa")
    if not _TOKEN.fullmatch(request.token):
        raise InvalidPaymentMethod("not a gateway token")
    return method, request.token


def _watched(payment: Payment) -> bool:
    """Whether the janitor must look at it: its money may still move."""
    return payment.status in OPEN or payment.status is PaymentStatus.FAILED or _refund_due(payment)


def _refund_due(payment: Payment) -> bool:
    return (
        payment.status is PaymentStatus.SUCCEEDED
        and payment.applied_paise == 0
        and payment.refunded_paise == 0
    )


def _noted(payment: Payment, at: datetime, detail: str, txn_id: str | None) -> Payment:
    """The payment with a history entry that does not change its status."""
    entry = PaymentEntry(at=at, status=payment.status, detail=detail)
    return payment.model_copy(
        update={"history": (*payment.history, entry), "gateway_txn_id": txn_id}
    )


def _failed_at(payment: Payment) -> datetime:
    failed = [e.at for e in payment.history if e.status is PaymentStatus.FAILED]
    return failed[0] if failed else payment.created_at


def _target(payment: Payment) -> str:
    if payment.purpose is PaymentPurpose.INVOICE:
        return f"invoice {payment.invoice_id}"
    return "wallet"


def _ist_text(moment: datetime) -> str:
    return to_ist(moment).strftime("%d %b %Y, %I:%M %p IST")


def _autopay_status(mandate: AutopayMandate) -> AutopayStatus:
    token = mandate.mandate_token
    return AutopayStatus(
        user_id=mandate.user_id,
        enabled=mandate.enabled,
        mandate=method_display(PaymentMethod.MANDATE, token) if token else None,
        updated_at=mandate.updated_at,
    )

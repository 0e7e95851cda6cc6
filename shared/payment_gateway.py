"""The payment gateway port and its local simulator.

A real gateway completes a charge asynchronously: the charge call answers with
a transaction id, and the outcome arrives later as a signed webhook
(:func:`shared.payments.sign_webhook`). Its status query by transaction id is
the truth when the webhook is late, lost or wrong.

The simulator behaves that way. It keeps its transactions in a
:class:`GatewayLedger` (DynamoDB locally: shared/stores/payment_gateway.py) and
queues each webhook in a :class:`WebhookOutbox` with a delay; whatever drains
the outbox signs and posts the body with :func:`deliver_webhook`.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from pydantic import AwareDatetime, field_validator, model_validator

from shared.clock import Clock, isoformat
from shared.models import Frozen, NonNegativeInt, PositiveInt
from shared.payments import (
    SIGNATURE_HEADER,
    PaymentMethod,
    ensure_no_card_data,
    normalize_vpa,
    sign_webhook,
)
from shared.simulation import KnobSource, Outcome


class GatewayStatus(StrEnum):
    PENDING = "PENDING"
    CAPTURED = "CAPTURED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"  # every captured paisa went back


class GatewayTransaction(Frozen):
    txn_id: str
    merchant_reference: str  # our payment_id
    amount_paise: PositiveInt
    status: GatewayStatus
    captured_paise: NonNegativeInt
    refunded_paise: NonNegativeInt = 0
    # What the webhook says or will say: FAILED for "debited but reported failed".
    reported_status: GatewayStatus
    created_at: AwareDatetime
    method: PaymentMethod | None = None
    refund_id: str | None = None  # one refund per transaction

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _money_adds_up(self) -> GatewayTransaction:
        if not self.refunded_paise <= self.captured_paise <= self.amount_paise:
            raise ValueError("refunded <= captured <= amount does not hold")
        return self


class GatewayTimeout(Exception):
    """The charge call got no answer: the gateway may or may not have the
    transaction (look it up with ``find``)."""


class ReferenceInUse(Exception):
    """A ledger already holds another transaction for this merchant reference."""


class PaymentGateway(Protocol):
    def charge(
        self, merchant_reference: str, amount_paise: int, method: PaymentMethod, token: str
    ) -> str:
        """Start a charge; the transaction id. Idempotent on ``merchant_reference``
        (a repeat returns the first transaction's id). Raises GatewayTimeout."""
        ...

    def status(self, txn_id: str) -> GatewayTransaction | None: ...

    def find(self, merchant_reference: str) -> GatewayTransaction | None:
        """The transaction for a merchant reference (after a timeout), if any."""
        ...

    def refund(self, txn_id: str, amount_paise: int) -> str:
        """Give back captured money; the refund id. One refund per transaction: a
        repeat returns the first refund's id and refunds nothing more. Raises
        ValueError for an unknown transaction or more than is left to refund."""
        ...


class GatewayLedger(Protocol):
    """Where the simulator keeps its transactions."""

    def put(self, txn: GatewayTransaction) -> None:
        """Store (or replace) a transaction and its merchant-reference entry.
        Raises ReferenceInUse when the reference belongs to another transaction."""
        ...

    def get(self, txn_id: str) -> GatewayTransaction | None: ...

    def find(self, merchant_reference: str) -> GatewayTransaction | None: ...


class WebhookOutbox(Protocol):
    def send(self, body: dict[str, Any], delay_seconds: int) -> None:
        """Deliver ``body`` to the webhook endpoint after ``delay_seconds``."""
        ...


class InMemoryGatewayLedger:
    def __init__(self) -> None:
        self.transactions: dict[str, GatewayTransaction] = {}
        self._references: dict[str, str] = {}

    def put(self, txn: GatewayTransaction) -> None:
        owner = self._references.setdefault(txn.merchant_reference, txn.txn_id)
        if owner != txn.txn_id:
            raise ReferenceInUse(txn.merchant_reference)
        self.transactions[txn.txn_id] = txn

    def get(self, txn_id: str) -> GatewayTransaction | None:
        return self.transactions.get(txn_id)

    def find(self, merchant_reference: str) -> GatewayTransaction | None:
        txn_id = self._references.get(merchant_reference)
        return None if txn_id is None else self.transactions.get(txn_id)


class QueuedWebhook(NamedTuple):
    body: dict[str, Any]
    delay_seconds: int


class InMemoryWebhookOutbox:
    """Keeps what would be sent; a test delivers it when it chooses."""

    def __init__(self) -> None:
        self.sent: list[QueuedWebhook] = []

    def send(self, body: dict[str, Any], delay_seconds: int) -> None:
        self.sent.append(QueuedWebhook(body, delay_seconds))

    def drain(self) -> list[dict[str, Any]]:
        """The bodies queued so far, oldest first; the outbox is empty afterwards."""
        bodies = [queued.body for queued in self.sent]
        self.sent.clear()
        return bodies


def deliver_webhook(
    secret: bytes, body: dict[str, Any], now: datetime
) -> tuple[bytes, dict[str, str]]:
    """The raw body (compact JSON, sorted keys) and the headers the gateway posts."""
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    headers = {SIGNATURE_HEADER: sign_webhook(secret, raw, now), "Content-Type": "application/json"}
    return raw, headers


class Scenario(StrEnum):
    """What a token asks the simulator for: it contains the value."""

    DECLINE = "decline"  # FAILED, the webhook says FAILED
    TIMEOUT = "timeout"  # CAPTURED, the charge call times out, the webhook comes
    NOWEBHOOK = "nowebhook"  # CAPTURED, no webhook ever
    DEBITFAIL = "debitfail"  # CAPTURED, the webhook says FAILED
    CAPTURE = "capture"  # the default: CAPTURED, the webhook says so


def scenario_for(method: PaymentMethod, token: str) -> Scenario:
    """The scenario a token scripts: the local part of a UPI VPA, or the card /
    wallet / mandate token, containing ``decline``, ``timeout``, ``nowebhook`` or
    ``debitfail`` (checked in that order); anything else is captured."""
    if not token.strip():
        raise ValueError("a charge needs a token")
    ensure_no_card_data(token)  # a real gateway's token API would refuse a card number too
    scripted = normalize_vpa(token).partition("@")[0] if method is PaymentMethod.UPI else token
    scripted = scripted.lower()
    for scenario in (Scenario.DECLINE, Scenario.TIMEOUT, Scenario.NOWEBHOOK, Scenario.DEBITFAIL):
        if scenario.value in scripted:
            return scenario
    return Scenario.CAPTURE


def _reference_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20].upper()}"


class SimulatedGateway:
    """Behaves like a payment gateway: scripted by the token (:func:`scenario_for`),
    and by the knobs' ``gateway`` section (random declines, calls that fail before
    or after the capture, debits reported as failures, lost webhooks, the
    webhook's delay) drawn from ``rng`` (seed it to replay a run).

    Transactions are recorded in their final state at charge time; the webhook
    follows after the delay. Not safe against two concurrent refunds of one
    transaction (the ledger's write is last-writer-wins); payments serialize those.
    """

    def __init__(
        self,
        store: GatewayLedger,
        outbox: WebhookOutbox,
        knobs: KnobSource,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._ledger = store
        self._outbox = outbox
        self._knobs = knobs
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - dice

    def charge(
        self, merchant_reference: str, amount_paise: int, method: PaymentMethod, token: str
    ) -> str:
        if amount_paise <= 0:
            raise ValueError("a charge must be positive")
        existing = self._ledger.find(merchant_reference)
        if existing is not None:
            return self._repeat(existing, amount_paise)
        scenario = scenario_for(method, token)
        knobs = self._knobs.current().gateway
        # Every draw happens on every charge, so a seeded run replays whatever the outcome.
        outcome = Outcome(knobs, self._rng)
        debit_fails = self._rng.random() < knobs.debit_fail_rate
        webhook_lost = self._rng.random() < knobs.lost_webhook_rate
        outcome.wait()
        if outcome.transient:
            raise GatewayTimeout("the gateway did not answer (simulated, nothing recorded)")

        declined = scenario is Scenario.DECLINE or outcome.permanent
        reports_failure = declined or debit_fails or scenario is Scenario.DEBITFAIL
        now = self._clock.now()
        txn = GatewayTransaction(
            txn_id=_reference_id("TXN"),
            merchant_reference=merchant_reference,
            amount_paise=amount_paise,
            status=GatewayStatus.FAILED if declined else GatewayStatus.CAPTURED,
            captured_paise=0 if declined else amount_paise,
            reported_status=GatewayStatus.FAILED if reports_failure else GatewayStatus.CAPTURED,
            created_at=now,
            method=method,
        )
        try:
            self._ledger.put(txn)
        except ReferenceInUse:  # a concurrent charge of the same reference won
            winner = self._ledger.find(merchant_reference)
            if winner is None:
                raise
            return self._repeat(winner, amount_paise)

        if scenario is not Scenario.NOWEBHOOK and not webhook_lost:
            self._outbox.send(_webhook_body(txn, now), knobs.webhook_delay_seconds)
        if scenario is Scenario.TIMEOUT or outcome.timeout:
            raise GatewayTimeout("the gateway timed out (simulated, the transaction was recorded)")
        return txn.txn_id

    def status(self, txn_id: str) -> GatewayTransaction | None:
        return self._ledger.get(txn_id)

    def find(self, merchant_reference: str) -> GatewayTransaction | None:
        return self._ledger.find(merchant_reference)

    def refund(self, txn_id: str, amount_paise: int) -> str:
        if amount_paise <= 0:
            raise ValueError("a refund must be positive")
        txn = self._ledger.get(txn_id)
        if txn is None:
            raise ValueError(f"no transaction {txn_id}")
        if txn.refund_id is not None:
            return txn.refund_id
        if txn.captured_paise - txn.refunded_paise < amount_paise:
            raise ValueError(
                f"{txn_id} has {txn.captured_paise - txn.refunded_paise} paise left to refund, "
                f"not {amount_paise}"
            )
        refunded = txn.refunded_paise + amount_paise
        refund_id = _reference_id("RFND")
        full = refunded == txn.captured_paise
        self._ledger.put(
            GatewayTransaction.model_validate(
                {
                    **txn.model_dump(),
                    "refunded_paise": refunded,
                    "refund_id": refund_id,
                    "status": GatewayStatus.REFUNDED if full else txn.status,
                }
            )
        )
        return refund_id

    @staticmethod
    def _repeat(txn: GatewayTransaction, amount_paise: int) -> str:
        if txn.amount_paise != amount_paise:
            raise ValueError(
                f"merchant reference {txn.merchant_reference} was charged "
                f"{txn.amount_paise} paise, not {amount_paise}"
            )
        return txn.txn_id


def _webhook_body(txn: GatewayTransaction, now: datetime) -> dict[str, Any]:
    """The webhook (:class:`shared.payments.GatewayWebhook`) for a transaction."""
    return {
        "event_id": _reference_id("EVT"),
        "txn_id": txn.txn_id,
        "merchant_reference": txn.merchant_reference,
        "status": txn.reported_status.value,
        "amount_paise": txn.amount_paise,
        "occurred_at": isoformat(now),
    }

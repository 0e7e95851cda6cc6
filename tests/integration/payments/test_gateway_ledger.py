"""The gateway simulator's DynamoDB ledger on moto: the simulator's books survive
in the table, a merchant reference maps to one transaction, refunds stick."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from shared.clock import FixedClock
from shared.payment_gateway import (
    GatewayStatus,
    GatewayTimeout,
    InMemoryWebhookOutbox,
    ReferenceInUse,
    SimulatedGateway,
)
from shared.payments import PaymentMethod
from shared.simulation import StaticKnobs
from shared.stores.payment_gateway import DynamoGatewayLedger
from tests.integration.conftest import T0, Aws

REF = "PAY-0123456789ABCDEF0123"


@pytest.fixture
def ledger(aws: Aws) -> DynamoGatewayLedger:
    return DynamoGatewayLedger()


def simulator(ledger: DynamoGatewayLedger, outbox: InMemoryWebhookOutbox) -> SimulatedGateway:
    """A fresh simulator each time, as each Lambda invocation builds one."""
    return SimulatedGateway(ledger, outbox, StaticKnobs(), FixedClock(T0), rng=random.Random(1))


def test_a_charge_is_kept_under_its_id_and_its_reference(
    aws: Aws, ledger: DynamoGatewayLedger
) -> None:
    outbox = InMemoryWebhookOutbox()
    txn_id = simulator(ledger, outbox).charge(REF, 70_682, PaymentMethod.UPI, "debitfail@okhdfc")

    assert aws.sort_keys(f"GWSIM#{txn_id}") == ["GWSIM"]
    assert aws.sort_keys(f"GWSIMREF#{REF}") == ["GWSIMREF"]
    txn = simulator(ledger, outbox).status(txn_id)
    assert txn is not None
    assert txn == simulator(ledger, outbox).find(REF)
    assert (txn.status, txn.captured_paise, txn.reported_status) == (
        GatewayStatus.CAPTURED,
        70_682,
        GatewayStatus.FAILED,
    )
    assert (txn.created_at, txn.method, txn.refund_id) == (T0, PaymentMethod.UPI, None)


def test_nothing_is_found_for_unknown_ids(ledger: DynamoGatewayLedger) -> None:
    assert ledger.get("TXN-NOPE") is None
    assert ledger.find("PAY-NOPE") is None


def test_a_repeat_after_a_timeout_finds_the_stored_transaction(
    ledger: DynamoGatewayLedger,
) -> None:
    outbox = InMemoryWebhookOutbox()
    with pytest.raises(GatewayTimeout):
        simulator(ledger, outbox).charge(REF, 500, PaymentMethod.CARD, "tok_timeout_1")

    found = ledger.find(REF)
    assert found is not None
    assert simulator(ledger, outbox).charge(REF, 500, PaymentMethod.CARD, "tok_timeout_1") == (
        found.txn_id
    )
    assert len(outbox.sent) == 1


def test_a_reference_belongs_to_one_transaction(ledger: DynamoGatewayLedger) -> None:
    simulator(ledger, InMemoryWebhookOutbox()).charge(REF, 500, PaymentMethod.UPI, "a1@okhdfc")
    first = ledger.find(REF)
    assert first is not None
    rival = first.model_copy(update={"txn_id": "TXN-RIVAL", "created_at": T0 + timedelta(1)})

    with pytest.raises(ReferenceInUse):
        ledger.put(rival)

    assert ledger.get("TXN-RIVAL") is None  # the transaction is not written either
    assert ledger.find(REF) == first


def test_a_refund_is_stored_and_not_repeated(ledger: DynamoGatewayLedger) -> None:
    outbox = InMemoryWebhookOutbox()
    txn_id = simulator(ledger, outbox).charge(REF, 70_682, PaymentMethod.UPI, "debitfail@okhdfc")

    refund_id = simulator(ledger, outbox).refund(txn_id, 70_682)
    again = simulator(ledger, outbox).refund(txn_id, 70_682)

    assert again == refund_id
    txn = ledger.get(txn_id)
    assert txn is not None
    assert (txn.status, txn.refunded_paise, txn.refund_id) == (
        GatewayStatus.REFUNDED,
        70_682,
        refund_id,
    )

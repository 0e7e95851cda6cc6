"""PaymentService against in-memory ports and the gateway simulator: creating
payments, the webhook (duplicates, failures, late captures), the janitor,
recharges (extend / restart), AutoPay with its retry schedule, and the money
invariant over randomized runs with gateway faults."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clock import IST
from shared.errors import (
    DomainError,
    Forbidden,
    InvalidRequest,
    PlanNotAllowed,
    SubscriberNotActive,
)
from shared.models import RepeatPurchase, SubscriberStatus
from shared.payment_gateway import GatewayStatus, GatewayTransaction
from shared.payments import (
    CardDataRejected,
    InvalidVpa,
    Payment,
    PaymentMethod,
    PaymentStatus,
)
from shared.services.billing import InvoiceNotFound, InvoiceNotPayable, InvoiceStatus
from shared.services.payments import (
    AmountExceedsOutstanding,
    AutopayNotAvailable,
    InvalidAmount,
    InvalidMandate,
    InvalidPaymentMethod,
    PaymentNotFound,
    PaymentRequest,
    PaymentView,
    TopupNotAllowed,
    autopay_payment_id,
)
from shared.services.subscriptions import ChangeType
from shared.simulation import GatewayKnobs
from shared.sweeps import run_daily_sweep
from tests.fakes import InMemorySweepCheckpoints
from tests.unit.payments.fakes import (
    ADMIN,
    AGENT,
    INVOICE,
    OTHER_SUBSCRIBER,
    OWNER,
    POSTPAID_USER,
    PREPAID_OWNER,
    PREPAID_USER,
    T0,
    World,
    make_world,
)

S = PaymentStatus
JANITOR = timedelta(minutes=16)  # past janitor_after_seconds (15 min)
TWO_HOURS = timedelta(hours=2)
MANDATE = "mandate_hdfc_0001"


@pytest.fixture
def world() -> World:
    w = make_world()
    w.invoices.add()
    return w


def pay_invoice(world: World, amount: int | None = None, **overrides: Any) -> Payment:
    fields: dict[str, Any] = {
        "user_id": POSTPAID_USER,
        "invoice_id": INVOICE,
        "method": PaymentMethod.UPI,
        "vpa": "asha@okhdfc",
        "amount_paise": amount,
        **overrides,
    }
    return world.service.create(OWNER, PaymentRequest(**fields))


def recharge(world: World, plan_id: str = "PRE_SMART_299") -> Payment:
    request = PaymentRequest(
        user_id=PREPAID_USER, plan_id=plan_id, method=PaymentMethod.CARD, token="tok_visa_4242"
    )
    return world.service.create(PREPAID_OWNER, request)


def top_up(world: World, amount: int = 50_000) -> Payment:
    request = PaymentRequest(
        user_id=PREPAID_USER, amount_paise=amount, method=PaymentMethod.WALLET, token="wal_paytm_77"
    )
    return world.service.create(PREPAID_OWNER, request)


def history(payment: Payment) -> list[tuple[str, str]]:
    return [(entry.status.value, entry.detail) for entry in payment.history]


def outstanding(world: World, invoice_id: str = INVOICE) -> int:
    return world.invoices.invoices[invoice_id].outstanding


# --- creating a payment ----------------------------------------------------------------


def test_a_payment_is_pending_with_the_gateways_transaction_until_the_outcome_arrives(
    world: World,
) -> None:
    payment = pay_invoice(world)

    assert payment.status is S.PENDING
    assert payment.amount_paise == 70_682  # what is outstanding, by default
    assert payment.gateway_txn_id == world.gateway.transaction_of(payment.payment_id).txn_id
    assert payment.method_display == "as***@okhdfc"
    assert world.payment(payment.payment_id) == payment
    assert outstanding(world) == 70_682  # nothing applied before the gateway reports
    assert world.events.events == []


def test_the_webhook_pays_the_invoice_and_announces_it(world: World) -> None:
    payment = pay_invoice(world)

    assert world.deliver() == ["applied"]

    stored = world.payment(payment.payment_id)
    assert stored.status is S.SUCCEEDED
    assert stored.applied_paise == 70_682
    assert stored.payment_date == T0
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.PAID
    assert world.detail("PaymentSucceeded") == {
        "user_id": POSTPAID_USER,
        "payment_id": payment.payment_id,
        "purpose": "INVOICE",
        "invoice_id": INVOICE,
        "plan_id": None,
        "amount_paise": 70_682,
        "method": "UPI",
        "autopay_attempt": None,
    }
    assert [s for s, _ in history(stored)] == ["PENDING", "PENDING", "SUCCEEDED"]


def test_a_subscriber_pays_only_their_own_bills_and_an_agent_pays_any(world: World) -> None:
    request = PaymentRequest(
        user_id=POSTPAID_USER, invoice_id=INVOICE, method=PaymentMethod.UPI, vpa="a1@okhdfc"
    )
    with pytest.raises(Forbidden):
        world.service.create(OTHER_SUBSCRIBER, request)
    with pytest.raises(Forbidden):  # API.md: owner or agent
        world.service.create(ADMIN, request)

    assert world.service.create(AGENT, request).history[0].detail == "by agent:agent-7"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"method": PaymentMethod.UPI}, InvalidPaymentMethod),
        ({"method": PaymentMethod.UPI, "vpa": "not-a-vpa"}, InvalidVpa),
        (
            {"method": PaymentMethod.UPI, "vpa": "a@okhdfc", "token": "tok_x12345"},
            InvalidPaymentMethod,
        ),
        ({"method": PaymentMethod.CARD}, InvalidPaymentMethod),
        ({"method": PaymentMethod.CARD, "token": "tok x"}, InvalidPaymentMethod),
        (
            {"method": PaymentMethod.WALLET, "token": "wal_123456", "vpa": "a@b"},
            InvalidPaymentMethod,
        ),
        ({"method": PaymentMethod.MANDATE, "token": MANDATE}, InvalidPaymentMethod),
        ({"method": PaymentMethod.CARD, "token": "4111 1111 1111 1111"}, CardDataRejected),
        ({"method": PaymentMethod.CARD, "token": "tok_4111111111111111"}, CardDataRejected),
    ],
)
def test_method_details_are_gateway_tokens_or_a_vpa_and_nothing_else(
    world: World, fields: dict[str, Any], error: type[DomainError]
) -> None:
    with pytest.raises(error) as raised:
        world.service.create(
            OWNER, PaymentRequest(user_id=POSTPAID_USER, invoice_id=INVOICE, **fields)
        )

    assert raised.value.status == 422
    assert "4111" not in raised.value.message
    assert world.store.payments == {}
    assert world.gateway.ledger.transactions == {}  # nothing reached the gateway


def test_part_of_an_invoice_can_be_paid_and_then_the_rest(world: World) -> None:
    first = pay_invoice(world, 30_000)
    world.deliver()

    assert world.payment(first.payment_id).status is S.SUCCEEDED
    assert outstanding(world) == 40_682
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.ISSUED

    rest = pay_invoice(world)  # the default is now what remains
    world.deliver()

    assert rest.amount_paise == 40_682
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.PAID
    assert world.invoices.invoices[INVOICE].history == [
        ("PART_PAYMENT", 30_000),
        ("PAID", 40_682),
    ]


def test_paying_more_than_is_owed_is_refused_before_any_money_moves(world: World) -> None:
    with pytest.raises(AmountExceedsOutstanding) as raised:
        pay_invoice(world, 70_683)

    assert raised.value.status == 409
    assert raised.value.details == {"outstanding_paise": 70_682}
    assert world.gateway.ledger.transactions == {}


def test_a_paid_an_unknown_or_someone_elses_invoice_cannot_be_paid(world: World) -> None:
    world.invoices.add("INV-u3-2026-11-01", user_id="u3")
    with pytest.raises(InvoiceNotFound):
        pay_invoice(world, invoice_id="INV-u3-2026-11-01")
    with pytest.raises(InvoiceNotFound):
        pay_invoice(world, invoice_id="INV-u1-2026-10-01")
    world.invoices.pay_elsewhere()
    with pytest.raises(InvoiceNotPayable):
        pay_invoice(world)


def test_recharges_and_top_ups_are_for_live_prepaid_lines(world: World) -> None:
    with pytest.raises(PlanNotAllowed):
        recharge(world, "POST_PLUS_599")
    with pytest.raises(InvalidAmount):
        world.service.create(
            PREPAID_OWNER,
            PaymentRequest(
                user_id=PREPAID_USER,
                plan_id="PRE_SMART_299",
                amount_paise=100,
                method=PaymentMethod.CARD,
                token="tok_visa_4242",
            ),
        )
    with pytest.raises(InvalidAmount):
        top_up(world, 999)  # below ₹10
    with pytest.raises(InvalidAmount):
        top_up(world, 1_000_001)
    with pytest.raises(TopupNotAllowed):
        world.service.create(
            OWNER,
            PaymentRequest(
                user_id=POSTPAID_USER, amount_paise=5_000, method=PaymentMethod.UPI, vpa="a1@ok"
            ),
        )
    with pytest.raises(InvalidRequest):
        world.service.create(
            OWNER,
            PaymentRequest(
                user_id=POSTPAID_USER,
                invoice_id=INVOICE,
                plan_id="PRE_SMART_299",
                method=PaymentMethod.UPI,
                vpa="a1@okhdfc",
            ),
        )
    world.subscriptions_store.subscribers[PREPAID_USER] = world.subscriptions_store.subscribers[
        PREPAID_USER
    ].model_copy(update={"status": SubscriberStatus.PENDING_DISCONNECT})
    with pytest.raises(SubscriberNotActive):
        top_up(world)
    assert world.gateway.ledger.transactions == {}


def test_a_charge_that_times_out_is_reconciling_and_the_webhook_completes_it(
    world: World,
) -> None:
    world.gateway.script = ["timeout"]

    payment = pay_invoice(world)

    assert payment.status is S.RECONCILING
    assert payment.gateway_txn_id is None  # the answer was lost
    assert world.deliver() == ["applied"]  # found by its merchant reference
    stored = world.payment(payment.payment_id)
    assert stored.status is S.SUCCEEDED
    assert stored.gateway_txn_id == world.gateway.transaction_of(payment.payment_id).txn_id


# --- the webhook -------------------------------------------------------------------------


def test_the_same_webhook_three_times_applies_the_payment_once(world: World) -> None:
    payment = pay_invoice(world, 20_000)

    assert world.deliver(times=3) == ["applied", "duplicate", "duplicate"]

    assert outstanding(world) == 50_682
    assert len(world.events.of_type("PaymentSucceeded")) == 1
    assert len(world.payment(payment.payment_id).history) == 3


def test_a_webhook_racing_the_charges_answer_is_applied_once(world: World) -> None:
    """The webhook lands before create() has stored the transaction id."""
    world.gateway.script = ["capture"]
    original = world.gateway.charge

    def charge_then_webhook(*args: Any) -> str:
        txn_id = original(*args)
        world.deliver()
        return txn_id

    world.gateway.charge = charge_then_webhook  # type: ignore[method-assign]

    payment = pay_invoice(world)

    assert payment.status is S.SUCCEEDED
    assert payment.gateway_txn_id is not None
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.PAID
    assert len(world.events.of_type("PaymentSucceeded")) == 1


def test_a_decline_fails_the_payment_and_says_so(world: World) -> None:
    world.gateway.script = ["decline"]
    payment = pay_invoice(world)

    assert world.deliver(times=2) == ["failed", "duplicate"]

    stored = world.payment(payment.payment_id)
    assert stored.status is S.FAILED
    assert outstanding(world) == 70_682
    assert world.detail("PaymentFailed") == {
        "user_id": POSTPAID_USER,
        "payment_id": payment.payment_id,
        "purpose": "INVOICE",
        "invoice_id": INVOICE,
        "plan_id": None,
        "amount_paise": 70_682,
        "autopay_attempt": None,
        "reason": "the gateway reported a failure",
    }
    # The janitor double-checks it while a late capture is possible, then lets go.
    assert world.janitor(JANITOR)["outcomes"] == {"failed": 1}
    assert world.janitor(TWO_HOURS)["outcomes"] == {"closed": 1}
    assert world.janitor(JANITOR)["checked"] == 0
    assert world.gateway.refunded() == 0


def test_debited_but_reported_failed_is_refunded_within_two_hours_and_never_applied(
    world: World,
) -> None:
    world.gateway.script = ["debitfail"]
    payment = pay_invoice(world)

    assert world.deliver() == ["failed"]
    assert world.janitor(JANITOR)["outcomes"] == {"refunded": 1}

    stored = world.payment(payment.payment_id)
    assert stored.status is S.REFUNDED
    assert stored.refunded_paise == 70_682
    assert stored.applied_paise == 0
    assert world.clock.now() - stored.created_at < TWO_HOURS
    assert outstanding(world) == 70_682  # never applied
    assert world.gateway.refunded() == world.gateway.captured() == 70_682
    assert world.events.of_type("PaymentSucceeded") == []
    assert world.detail("PaymentRefunded")["amount_paise"] == 70_682
    # Settled: the janitor leaves it alone from now on.
    assert world.janitor(JANITOR)["checked"] == 0


def test_a_capture_reported_after_the_failure_is_refunded_at_once(world: World) -> None:
    world.gateway.script = ["debitfail"]
    payment = pay_invoice(world)
    world.deliver()
    capture = {
        "event_id": "EVT-LATE",
        "txn_id": payment.gateway_txn_id,
        "merchant_reference": payment.payment_id,
        "status": "CAPTURED",
        "amount_paise": payment.amount_paise,
        "occurred_at": "2026-11-25T10:05:00+00:00",
    }

    assert world.service.on_webhook(capture) == "refunded"
    assert world.service.on_webhook(capture) == "duplicate"
    assert world.payment(payment.payment_id).status is S.REFUNDED
    assert outstanding(world) == 70_682


def test_a_failure_reported_after_the_capture_was_applied_changes_nothing(world: World) -> None:
    payment = pay_invoice(world)
    world.deliver()
    failure = {
        "event_id": "EVT-LATE",
        "txn_id": payment.gateway_txn_id,
        "merchant_reference": payment.payment_id,
        "status": "FAILED",
        "amount_paise": payment.amount_paise,
        "occurred_at": "2026-11-25T10:05:00+00:00",
    }

    assert world.service.on_webhook(failure).startswith("ignored")
    assert world.payment(payment.payment_id).status is S.SUCCEEDED


def test_a_payment_whose_invoice_was_paid_meanwhile_is_refunded_not_applied(
    world: World,
) -> None:
    first = pay_invoice(world)
    second = pay_invoice(world)  # both started while the invoice was unpaid

    assert world.deliver() == ["applied", "refunded"]

    assert world.payment(first.payment_id).status is S.SUCCEEDED
    loser = world.payment(second.payment_id)
    assert loser.status is S.REFUNDED
    assert (loser.applied_paise, loser.refunded_paise) == (0, 70_682)
    assert [s for s, _ in history(loser)] == ["PENDING", "PENDING", "SUCCEEDED", "REFUNDED"]
    assert world.invoices.invoices[INVOICE].paid_paise == 70_682
    assert world.gateway.refunded() == 70_682
    assert len(world.events.of_type("PaymentSucceeded")) == 1


def test_a_refund_the_gateway_cannot_make_now_is_made_by_the_janitor(world: World) -> None:
    pay_invoice(world)
    second = pay_invoice(world)
    world.gateway.refund_failures = 1

    assert world.deliver() == ["applied", "refund pending"]
    assert world.payment(second.payment_id).status is S.SUCCEEDED  # refund due, watched

    assert world.janitor(JANITOR)["outcomes"] == {"refunded": 1}
    assert world.payment(second.payment_id).status is S.REFUNDED
    assert world.gateway.refunded() == 70_682


def test_two_deliveries_racing_each_other_apply_once(world: World) -> None:
    payment = pay_invoice(world)
    body = world.gateway.outbox.drain()[0]
    # The twin commits between this delivery's read and its write.
    world.store.before_apply = lambda: world.service.on_webhook(dict(body))

    assert world.service.on_webhook(dict(body)) == "duplicate"
    assert world.payment(payment.payment_id).status is S.SUCCEEDED
    assert world.invoices.invoices[INVOICE].paid_paise == 70_682
    assert world.gateway.refunded() == 0


def test_a_webhook_for_an_unknown_payment_or_with_a_bad_body_changes_nothing(
    world: World,
) -> None:
    with pytest.raises(PaymentNotFound):
        world.service.on_webhook(
            {
                "event_id": "E1",
                "txn_id": "TXN-NOPE",
                "merchant_reference": "PAY-00000000000000000000",
                "status": "CAPTURED",
                "amount_paise": 100,
                "occurred_at": "2026-11-25T10:00:00+00:00",
            }
        )
    with pytest.raises(InvalidRequest) as raised:
        world.service.on_webhook({"txn_id": "4111111111111111"})
    assert "4111" not in raised.value.message


# --- the janitor -------------------------------------------------------------------------


def test_a_webhook_that_never_arrives_is_resolved_by_the_janitor(world: World) -> None:
    world.gateway.script = ["nowebhook"]
    payment = pay_invoice(world)
    world.deliver()

    assert world.janitor(timedelta(minutes=10))["checked"] == 0  # too early to ask
    assert world.janitor(timedelta(minutes=6))["outcomes"] == {"applied": 1}

    stored = world.payment(payment.payment_id)
    assert stored.status is S.SUCCEEDED
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.PAID
    assert "gateway status" in stored.history[-1].detail
    assert world.janitor(JANITOR)["checked"] == 0  # out of the index


def test_a_charge_the_gateway_never_recorded_fails_after_the_threshold(world: World) -> None:
    w = make_world(knobs=GatewayKnobs(transient_failure_rate=1.0, webhook_delay_seconds=0))
    w.invoices.add()
    payment = pay_invoice(w)
    assert payment.status is S.RECONCILING

    assert w.janitor(JANITOR)["outcomes"] == {"failed": 1}
    assert w.payment(payment.payment_id).status is S.FAILED
    assert w.gateway.captured() == 0


def test_a_payment_still_pending_at_the_gateway_after_two_hours_goes_to_ops_once(
    world: World,
) -> None:
    payment = pay_invoice(world)
    world.gateway.outbox.drain()  # the webhook is lost
    txn = world.gateway.transaction_of(payment.payment_id)
    world.gateway.ledger.put(
        GatewayTransaction.model_validate(
            {**txn.model_dump(), "status": GatewayStatus.PENDING, "captured_paise": 0}
        )
    )

    assert world.janitor(JANITOR)["outcomes"] == {"pending at the gateway": 1}
    assert world.janitor(TWO_HOURS)["outcomes"] == {"escalated": 1}
    assert world.janitor(JANITOR)["outcomes"] == {"escalated earlier": 1}

    [message] = world.ops.messages
    assert message["payment_id"] == payment.payment_id
    assert message["user_id"] == POSTPAID_USER
    assert message["amount_paise"] == 70_682
    assert message["transaction_id"] == txn.txn_id
    assert message["age_seconds"] == int((JANITOR + TWO_HOURS).total_seconds())
    stored = world.payment(payment.payment_id)
    assert stored.status is S.RECONCILING
    assert stored.history[-1].detail.startswith("ESCALATED")

    # The gateway captures it at last: the janitor applies it.
    world.gateway.ledger.put(txn)
    assert world.janitor(JANITOR)["outcomes"] == {"applied": 1}
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.PAID


# --- recharges and top-ups ----------------------------------------------------------------


def test_a_top_up_credits_the_wallet(world: World) -> None:
    payment = top_up(world, 50_000)
    world.deliver()

    assert world.wallet() == 50_000
    assert world.detail("PaymentSucceeded")["purpose"] == "TOPUP"
    assert world.payment(payment.payment_id).applied_paise == 50_000


def test_a_recharge_without_a_plan_starts_the_plan_from_the_wallet(world: World) -> None:
    payment = recharge(world)
    world.deliver()

    active = world.subscriptions_store.active[PREPAID_USER]
    assert active.plan_id == "PRE_SMART_299"
    assert active.valid_until == T0 + timedelta(days=28)
    assert world.wallet() == 0  # credited, then spent on the plan
    assert world.payment(payment.payment_id).history[-1].detail.startswith("plan SUBSCRIBE")
    assert world.notifier.sms == []


def test_the_same_plan_bought_again_extends_it_after_the_current_period(
    world: World,
) -> None:
    recharge(world)
    world.deliver()
    world.clock.advance(timedelta(days=10))

    second = recharge(world)
    world.deliver()

    active = world.subscriptions_store.active[PREPAID_USER]
    assert active.started_at == T0  # the current period goes on
    assert active.valid_until == T0 + timedelta(days=56)
    assert active.price_paise == 59_800
    extension = world.subscriptions_store.history(PREPAID_USER)[-1]
    assert (extension.started_at, extension.valid_until) == (
        T0 + timedelta(days=28),
        T0 + timedelta(days=56),
    )
    changed = world.detail("PlanChanged")
    assert changed["change_type"] == "EXTENDED"
    assert changed["wallet_debit_paise"] == 29_900
    assert world.wallet() == 0
    assert world.payment(second.payment_id).history[-1].detail.startswith("plan EXTENDED")
    [(number, sms)] = world.notifier.sms
    assert number == "+91" + world.subscriptions_store.subscribers[PREPAID_USER].msisdn
    assert "20 Jan 2027" in sms  # T0 + 56 days, in IST
    [(to, subject, _)] = world.notifier.emails
    assert to == f"{PREPAID_USER}@example.in"
    assert "extended" in subject


def test_an_extended_plan_changed_later_credits_the_unused_part_of_both_periods(
    world: World,
) -> None:
    recharge(world)
    world.deliver()
    recharge(world)
    world.deliver()
    world.clock.advance(timedelta(days=14))  # a quarter of the 56 days used
    world.subscriptions_store.credit_wallet(PREPAID_USER, 71_900)

    result = world.subscriptions.change_plan(PREPAID_USER, "PRE_VALUE_719")

    assert result.proration[0].amount_paise == -(59_800 * 3 // 4)


def test_a_plan_set_to_restart_starts_again_now(world: World) -> None:
    w = make_world(plans_overrides={"PRE_SMART_299": {"repeat_purchase": RepeatPurchase.RESTART}})
    recharge(w)
    w.deliver()
    w.clock.advance(timedelta(days=14))

    recharge(w)
    w.deliver()

    active = w.subscriptions_store.active[PREPAID_USER]
    assert (active.started_at, active.valid_until) == (
        w.clock.now(),
        w.clock.now() + timedelta(days=28),
    )
    assert w.detail("PlanChanged")["change_type"] == ChangeType.RESTARTED.value
    assert w.wallet() == 29_900 // 2  # the unused half came back to the wallet
    assert w.notifier.sms == []


def test_a_recharge_whose_plan_cannot_start_keeps_the_money_in_the_wallet(
    world: World,
) -> None:
    payment = recharge(world)
    # The line was suspended between the payment and its capture.
    world.subscriptions_store.subscribers[PREPAID_USER] = world.subscriptions_store.subscribers[
        PREPAID_USER
    ].model_copy(update={"status": SubscriberStatus.PENDING})

    assert world.deliver() == ["applied"]

    assert world.wallet() == 29_900
    assert PREPAID_USER not in world.subscriptions_store.active
    assert "SUBSCRIBER_NOT_ACTIVE" in world.payment(payment.payment_id).history[-1].detail


# --- reading -------------------------------------------------------------------------------


def test_a_payment_is_visible_to_its_owner_and_staff_only(world: World) -> None:
    payment = pay_invoice(world)

    for principal in (OWNER, AGENT, ADMIN):
        assert world.service.get(principal, payment.payment_id) == payment
    with pytest.raises(Forbidden):
        world.service.get(OTHER_SUBSCRIBER, payment.payment_id)
    with pytest.raises(PaymentNotFound):
        world.service.get(OWNER, "PAY-FFFFFFFFFFFFFFFFFFFF")
    with pytest.raises(PaymentNotFound):
        world.service.get(OWNER, "../etc")
    view = PaymentView.of(payment).model_dump()
    assert "asha@okhdfc" not in str(view)
    assert view["transaction_id"] == payment.gateway_txn_id


# --- AutoPay -------------------------------------------------------------------------------


def enable_autopay(world: World, token: str = MANDATE) -> None:
    world.service.set_autopay(OWNER, POSTPAID_USER, True, token)


def autopay_world() -> World:
    w = make_world()
    w.invoices.add()
    enable_autopay(w)
    return w


def run_sweep(world: World, at: datetime) -> list[str]:
    """The daily sweep at ``at``: every message it sends, taken."""
    world.clock.advance(at - world.clock.now())
    messages = world.service.autopay_retries_due(at.astimezone(IST).date())
    return [world.service.retry_autopay(m["user_id"], m["invoice_id"]) for m in messages]


def ist(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 11, day, hour, 0, tzinfo=IST)


def test_autopay_is_set_up_by_the_subscriber_alone_with_a_mandate_token(world: World) -> None:
    status = world.service.set_autopay(OWNER, POSTPAID_USER, True, "mandate_hdfc_0001")
    assert status.enabled
    assert status.mandate == "mandate_…0001"

    with pytest.raises(Forbidden):
        world.service.set_autopay(AGENT, POSTPAID_USER, True, MANDATE)
    with pytest.raises(Forbidden):
        world.service.set_autopay(OTHER_SUBSCRIBER, POSTPAID_USER, True, MANDATE)
    for bad in (None, "tok_visa_4242", "mandate_", "mandate_4111111111111111"):
        with pytest.raises((InvalidMandate, CardDataRejected)):
            world.service.set_autopay(OWNER, POSTPAID_USER, True, bad)
    with pytest.raises(AutopayNotAvailable):
        world.service.set_autopay(PREPAID_OWNER, PREPAID_USER, True, MANDATE)

    off = world.service.set_autopay(OWNER, POSTPAID_USER, False)
    assert (off.enabled, off.mandate) == (False, None)
    assert world.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682) == "no AutoPay"
    assert world.gateway.ledger.transactions == {}


def test_autopay_pays_a_new_invoice_once_however_often_the_event_comes(world: World) -> None:
    enable_autopay(world)

    world.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    again = world.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    world.deliver()

    assert again.startswith("attempt 1 made already")
    assert len(world.gateway.ledger.transactions) == 1
    payment = world.payment(autopay_payment_id(INVOICE, 1))
    assert (payment.status, payment.method, payment.autopay_attempt) == (
        S.SUCCEEDED,
        PaymentMethod.MANDATE,
        1,
    )
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.PAID
    assert world.detail("PaymentSucceeded")["autopay_attempt"] == 1


def test_autopay_failing_twice_then_succeeding_pays_the_bill_without_a_reminder() -> None:
    w = autopay_world()
    w.gateway.script = ["decline", "decline", "capture"]

    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)  # 25 Nov, 15:30 IST
    w.deliver()
    retry = w.store.get_retry(POSTPAID_USER, INVOICE)
    assert retry is not None
    assert (retry.next_attempt, retry.due_at) == (2, ist(26))

    assert run_sweep(w, ist(26, 9)) == ["not due yet"]
    assert run_sweep(w, ist(26)) == ["attempt 2: PENDING"]
    w.deliver()
    retry = w.store.get_retry(POSTPAID_USER, INVOICE)
    assert retry is not None
    assert (retry.next_attempt, retry.due_at) == (3, ist(28))  # first failure + 3 days

    assert run_sweep(w, ist(27)) == []
    assert run_sweep(w, ist(28)) == ["attempt 3: PENDING"]
    assert w.deliver() == ["applied"]

    assert w.invoices.invoices[INVOICE].status is InvoiceStatus.PAID
    assert [w.payment(autopay_payment_id(INVOICE, n)).status for n in (1, 2, 3)] == [
        S.FAILED,
        S.FAILED,
        S.SUCCEEDED,
    ]
    assert w.notifier.sms == []
    assert w.notifier.emails == []
    assert run_sweep(w, ist(29)) == []  # nothing more is scheduled


def test_a_failure_recorded_after_the_next_attempts_day_schedules_it_for_the_next_sweep() -> None:
    w = autopay_world()
    w.gateway.script = ["decline", "decline", "capture"]
    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)  # 25 Nov
    w.deliver()
    assert run_sweep(w, ist(26)) == ["attempt 2: PENDING"]

    # Attempt 2's decline is only known on the 28th at 11:00, after that day's sweep
    # (10:00), the day attempt 3 was planned for: it goes to the 29th's.
    w.clock.advance(ist(28, 11) - w.clock.now())
    w.deliver()

    retry = w.store.get_retry(POSTPAID_USER, INVOICE)
    assert retry is not None
    assert (retry.next_attempt, retry.due_at) == (3, ist(29))
    assert run_sweep(w, ist(29)) == ["attempt 3: PENDING"]


def test_autopay_failing_three_times_retries_exactly_twice_then_reminds_once() -> None:
    w = autopay_world()
    w.gateway.script = ["decline", "decline", "decline", "capture", "capture"]

    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    w.deliver()
    sweeps = {}
    for day in range(26, 30):
        sweeps[day] = run_sweep(w, ist(day))
        w.deliver()
    # Redelivered: the last failure's webhook, the invoice event, the janitor's checks.
    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    w.janitor(JANITOR)
    w.janitor(TWO_HOURS)
    sweeps[30] = run_sweep(w, ist(30))

    charges = sorted(w.gateway.ledger.transactions.values(), key=lambda t: t.created_at)
    assert [t.created_at for t in charges] == [T0, ist(26), ist(28)]  # 1 + exactly 2 retries
    assert sweeps == {
        26: ["attempt 2: PENDING"],
        27: [],
        28: ["attempt 3: PENDING"],
        29: [],
        30: [],
    }
    [(number, sms)] = w.notifier.sms
    assert number == "+91" + w.subscriptions_store.subscribers[POSTPAID_USER].msisdn
    assert "₹706.82" in sms
    assert INVOICE in sms
    [(to, subject, body)] = w.notifier.emails
    assert to == f"{POSTPAID_USER}@example.in"
    assert "₹706.82" in subject
    assert INVOICE in body
    assert outstanding(w) == 70_682


def test_a_bill_paid_by_other_means_stops_the_autopay_retries() -> None:
    w = autopay_world()
    w.gateway.script = ["decline"]
    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    w.deliver()

    pay_invoice(w)
    w.deliver()

    retry = w.store.get_retry(POSTPAID_USER, INVOICE)
    assert retry is not None
    assert retry.closed == "PAID"
    assert run_sweep(w, ist(26)) == []
    assert run_sweep(w, ist(28)) == []
    assert len(w.gateway.ledger.transactions) == 2
    assert w.notifier.sms == []


def test_a_bill_settled_outside_payments_stops_the_retry_when_it_comes_due() -> None:
    w = autopay_world()
    w.gateway.script = ["decline"]
    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    w.deliver()
    w.invoices.pay_elsewhere()

    assert run_sweep(w, ist(26)) == ["invoice settled"]
    assert len(w.gateway.ledger.transactions) == 1
    assert run_sweep(w, ist(28)) == []


def test_turning_autopay_off_stops_the_retries() -> None:
    w = autopay_world()
    w.gateway.script = ["decline"]
    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    w.deliver()
    w.service.set_autopay(OWNER, POSTPAID_USER, False)

    assert run_sweep(w, ist(26)) == ["AutoPay disabled"]
    assert run_sweep(w, ist(28)) == []
    assert len(w.gateway.ledger.transactions) == 1


def test_autopay_attempts_the_amount_still_owed() -> None:
    w = autopay_world()
    pay_invoice(w, 10_682)
    w.deliver()

    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    w.deliver()

    assert w.payment(autopay_payment_id(INVOICE, 1)).amount_paise == 60_000
    assert w.invoices.invoices[INVOICE].status is InvoiceStatus.PAID


def test_a_sweep_missed_for_a_day_is_caught_up_by_the_next() -> None:
    w = autopay_world()
    w.gateway.script = ["decline", "capture"]
    w.service.on_invoice_issued(POSTPAID_USER, INVOICE, 70_682)
    w.deliver()

    # The 25th's run was the last: the 26th's never happened.
    checkpoints = InMemorySweepCheckpoints({"autopay_retries": date(2026, 11, 25)})
    w.clock.advance(ist(27) - w.clock.now())

    run = run_daily_sweep(
        checkpoints,
        "autopay_retries",
        date(2026, 11, 27),
        lambda day: {"messages": w.service.autopay_retries_due(day)},
    )

    assert run["days"] == ["2026-11-26", "2026-11-27"]
    outcomes = [w.service.retry_autopay(m["user_id"], m["invoice_id"]) for m in run["messages"]]
    assert outcomes == ["attempt 2: PENDING"]
    w.deliver()
    assert w.invoices.invoices[INVOICE].status is InvoiceStatus.PAID


# --- the invariant over randomized runs ----------------------------------------------------

SCENARIOS = ["capture", "decline", "timeout", "nowebhook", "debitfail"]
RATE = st.sampled_from([0.0, 0.2])

payment_plans = st.lists(
    st.tuples(
        st.sampled_from(["invoice", "invoice", "part", "topup", "recharge"]),
        st.sampled_from(SCENARIOS),
        st.integers(min_value=0, max_value=3),  # times the webhook is delivered
    ),
    min_size=1,
    max_size=12,
)
gateway_knobs = st.builds(
    GatewayKnobs,
    permanent_failure_rate=RATE,
    timeout_rate=RATE,
    transient_failure_rate=st.sampled_from([0.0, 0.1]),
    debit_fail_rate=RATE,
    lost_webhook_rate=st.sampled_from([0.0, 0.3]),
    webhook_delay_seconds=st.just(0),
)


def start_payment(w: World, kind: str) -> Payment | None:
    try:
        if kind == "invoice":
            return pay_invoice(w)
        if kind == "part":
            return pay_invoice(w, 30_000)
        if kind == "topup":
            return top_up(w, 20_000)
        return recharge(w)
    except (InvoiceNotPayable, AmountExceedsOutstanding):
        return None  # the invoice was paid (or nearly) by the payments before


def post(w: World, webhooks: list[tuple[dict[str, Any], int]]) -> None:
    for body, times in webhooks:
        for _ in range(times):
            w.service.on_webhook(dict(body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=payment_plans,
    knobs=gateway_knobs,
    seed=st.integers(min_value=0, max_value=10_000),
    refund_outages=st.sampled_from([0.0, 0.5]),
    janitor_minutes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
)
def test_every_captured_rupee_ends_applied_or_refunded_never_both(
    plans: list[tuple[str, str, int]],
    knobs: GatewayKnobs,
    seed: int,
    refund_outages: float,
    janitor_minutes: list[int],
) -> None:
    w = make_world(knobs=knobs, seed=seed)
    w.gateway.refund_failure_rate = refund_outages  # the janitor redoes failed refunds
    w.invoices.add(total_paise=90_000)
    created: list[Payment] = []
    held: list[tuple[dict[str, Any], int]] = []
    for kind, scenario, deliveries in plans:
        w.gateway.script = [scenario]
        payment = start_payment(w, kind)
        created += [payment] if payment else []
        held += [(body, deliveries) for body in w.gateway.outbox.drain()]
        # Some reports arrive at once, some later, each as often as the gateway repeats it.
        if deliveries % 2:
            post(w, held)
            held = []
        w.clock.advance(timedelta(minutes=1))
    post(w, held)
    for minutes in janitor_minutes:
        w.janitor(timedelta(minutes=minutes))
    w.gateway.refund_failure_rate = 0.0  # the refund API is back
    w.janitor(TWO_HOURS)  # every payment is 2 h old now
    w.janitor(JANITOR)

    assert w.applied() + w.gateway.refunded() == w.gateway.captured()
    assert w.invoices.total_paid() <= 90_000
    for payment in created:
        stored = w.payment(payment.payment_id)
        txn = w.gateway.ledger.find(payment.payment_id)
        captured = txn.captured_paise if txn else 0
        assert stored.status in {S.SUCCEEDED, S.FAILED, S.REFUNDED}, history(stored)
        assert stored.applied_paise + stored.refunded_paise == captured, history(stored)
        assert not (stored.applied_paise and stored.refunded_paise)
    assert w.ops.messages == []  # the simulator never leaves a charge PENDING
    assert w.store.watched == set()


def test_a_payment_applied_by_a_run_that_died_before_announcing_it_is_announced_by_the_janitor(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invoice is paid but PaymentSucceeded never went out (the worker crashed
    at PutEvents): the webhook's retry finds a duplicate; the janitor announces it,
    so service control lifts the block and AutoPay stops."""
    payment = pay_invoice(world)
    publish = world.events.publish

    def crash_at_put_events(events: Any) -> None:
        monkeypatch.setattr(world.events, "publish", publish)  # the worker's successor
        raise ConnectionError("the worker died at PutEvents")

    monkeypatch.setattr(world.events, "publish", crash_at_put_events)
    [webhook] = world.gateway.outbox.drain()
    with pytest.raises(ConnectionError):
        world.service.on_webhook(dict(webhook))
    assert world.invoices.invoices[INVOICE].status is InvoiceStatus.PAID
    assert world.service.on_webhook(dict(webhook)) == "duplicate"  # the gateway's retry
    assert world.events.of_type("PaymentSucceeded") == []

    assert world.janitor(JANITOR)["outcomes"] == {"announced": 1}

    [announced] = world.events.of_type("PaymentSucceeded")
    assert announced.detail["payment_id"] == payment.payment_id
    assert world.events.of_type("PaymentReconciled") == []  # nothing was reconciled
    assert world.janitor(JANITOR)["checked"] == 0  # out of the index once announced

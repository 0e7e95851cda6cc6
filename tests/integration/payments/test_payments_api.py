"""Payments through the real handlers on moto (issue 8's acceptance): the API
(functions/payments/handler.py) with API Gateway proxy events, the simulator's
webhooks taken off the outbox queue and delivered by the delivery function's own
signing (functions/payments/webhooks.py), and the janitor's schedule handler.

The handlers build everything from the real wiring; the test sets only the
environment a deployment would (queues, the webhook secret, the simulator's knobs)
and the clock every handler reads."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
import pytest

from functions.activation import wiring as activation_wiring
from functions.billing import wiring as billing_wiring
from functions.payments import handler as pay_api
from functions.payments import schedule as pay_schedule
from functions.payments import webhooks as pay_webhooks
from functions.payments import wiring as pay_wiring
from shared import db
from shared.catalog import seed_plans
from shared.clock import FixedClock
from shared.models import SubscriberStatus, SubscriberType
from shared.payment_gateway import deliver_webhook
from shared.payments import SIGNATURE_HEADER, sign_webhook
from shared.services.billing import InvoiceStatus
from shared.settings import get_settings
from shared.stores.billing import InvoiceItem
from shared.stores.payments import DynamoPaymentStore
from tests.apigw import ACCOUNT, Caller, HttpResult, api_event, lambda_context, parse_response
from tests.integration.conftest import REGION, Aws, MakeSubscriber
from tests.integration.service_control.conftest import put_invoice

SECRET_ID = "tbcss-test-gateway-webhook"
SECRET = "whsec-test-0123456789"
KNOBS = "/tbcss/test/payments-simulator-knobs"
QUEUES = {
    "PAYMENTS_QUEUE_URL": "tbcss-test-payments",
    "PAYMENTS_OPS_QUEUE_URL": "tbcss-test-payments-ops",
    "WEBHOOK_OUTBOX_QUEUE_URL": "tbcss-test-webhook-outbox",
}


def queue_url(name: str) -> str:
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"


OUTBOX = queue_url(QUEUES["WEBHOOK_OUTBOX_QUEUE_URL"])
OWNER = Caller("u1")
LABEL = "2026-10-01"
INVOICE_TOTAL = 70_682


# --- card-like numbers ---------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_complete(prefix: str) -> str:
    """``prefix`` + the check digit that makes it pass Luhn."""
    return next(prefix + str(d) for d in range(10) if luhn_ok(prefix + str(d)))


VISA = "4111111111111111"
MASTERCARD = "5500005555555559"
RUPAY = luhn_complete("652112345678901")  # 16 digits, RuPay range
assert all(luhn_ok(n) for n in (VISA, MASTERCARD, RUPAY))
CARDS = [
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    MASTERCARD,
    " ".join(RUPAY[i : i + 4] for i in range(0, 16, 4)),
]
CVV = "737"


def digit_forms(card: str) -> set[str]:
    digits = re.sub(r"\D", "", card)
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return {digits, " ".join(groups), "-".join(groups), card}


FORBIDDEN = set().union(*(digit_forms(card) for card in CARDS))


# --- the system ----------------------------------------------------------------------


@dataclass
class System:
    aws: Aws
    clock: FixedClock
    ssm: Any
    secrets: Any

    def call(
        self,
        method: str,
        template: str,
        who: Caller | None,
        *,
        body: Any = None,
        raw_body: str | None = None,
        key: str | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> HttpResult:
        event = api_event(
            method,
            template.format(**params),
            resource=template,
            caller=who,
            body=body,
            raw_body=raw_body,
            idempotency_key=key,
            query=query,
            headers=headers,
            path_parameters=params or None,
        )
        return parse_response(pay_api.handler(event, lambda_context("tbcss-test-payments-api")))

    def pay(self, body: dict[str, Any], *, key: str = "k-1", who: Caller = OWNER) -> HttpResult:
        return self.call("POST", "/payments", who, body=body, key=key)

    def payment(self, payment_id: str) -> dict[str, Any]:
        result = self.call("GET", "/payments/{payment_id}", OWNER, payment_id=payment_id)
        assert result.status == 200, result.body
        view: dict[str, Any] = result.body
        return view

    def post_webhook(self, raw: bytes, signature: str | None) -> HttpResult:
        headers = {SIGNATURE_HEADER: signature} if signature is not None else {}
        return self.call("POST", "/payments/webhook", None, raw_body=raw.decode(), headers=headers)

    def outbox(self) -> list[dict[str, Any]]:
        """The simulator's queued webhooks (removed from the queue)."""
        bodies: list[dict[str, Any]] = []
        while batch := self.aws.sqs.receive_message(
            QueueUrl=OUTBOX, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in batch:
                bodies.append(json.loads(message["Body"]))
                self.aws.sqs.delete_message(QueueUrl=OUTBOX, ReceiptHandle=message["ReceiptHandle"])
        return bodies

    def deliver(self, body: dict[str, Any]) -> HttpResult:
        """Signed as the delivery function signs it, now."""
        raw, headers = deliver_webhook(SECRET.encode(), body, self.clock.now())
        return self.post_webhook(raw, headers[SIGNATURE_HEADER])

    def janitor(self) -> dict[str, Any]:
        result: dict[str, Any] = pay_schedule.handler(
            {"sweep": "reconcile"}, lambda_context("tbcss-test-payments-schedule")
        )
        return result

    def events(self, detail_type: str) -> list[dict[str, Any]]:
        return [e for e in self.aws.published() if e["detail-type"] == detail_type]

    def invoice(self, user_id: str = "u1") -> InvoiceItem:
        item: InvoiceItem = InvoiceItem.get(
            db.user_pk(user_id), f"INV#{LABEL}#INV-{user_id}-{LABEL}", consistent_read=True
        )
        return item

    def wallet(self, user_id: str = "u1") -> int:
        return db.DynamoSubscriptionStore().wallet_balance(user_id)


@pytest.fixture(scope="module")
def container(handler_clock: FixedClock) -> Iterator[tuple[Any, Any]]:
    """One Lambda container: the environment the payments functions read once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIMULATOR_KNOBS_PARAMETER", KNOBS)
        patch.setenv("PAYMENT_WEBHOOK_SECRET_ID", SECRET_ID)
        for variable, name in QUEUES.items():
            patch.setenv(variable, queue_url(name))
        for module in (pay_wiring, pay_api, pay_webhooks, pay_schedule, billing_wiring):
            patch.setattr(module, "system_clock", lambda: handler_clock)
        _clear_wiring()
        yield (
            boto3.client("ssm", region_name=REGION),
            boto3.client("secretsmanager", region_name=REGION),
        )
    _clear_wiring()


def _clear_wiring() -> None:
    get_settings.cache_clear()
    for module in (pay_wiring, pay_webhooks, billing_wiring, activation_wiring):
        for value in vars(module).values():
            if getattr(value, "__module__", "") == module.__name__ and hasattr(
                value, "cache_clear"
            ):
                value.cache_clear()


@pytest.fixture
def system(aws: Aws, clock: FixedClock, container: tuple[Any, Any]) -> System:
    ssm, secrets = container
    db.DynamoPlanCatalog().save_all(seed_plans())
    aws.tap("payments")
    for name in QUEUES.values():
        assert aws.sqs.create_queue(QueueName=name)["QueueUrl"] == queue_url(name)
    # No delay: moto holds a delayed message for real seconds.
    knobs = {"gateway": {"webhook_delay_seconds": 0}}
    ssm.put_parameter(Name=KNOBS, Value=json.dumps(knobs), Type="String")
    secrets.create_secret(Name=SECRET_ID, SecretString=SECRET)
    return System(aws, clock, ssm, secrets)


@pytest.fixture
def postpaid(system: System, make_subscriber: MakeSubscriber) -> str:
    """u1, postpaid, owing an issued invoice."""
    make_subscriber("u1", SubscriberType.POSTPAID)
    return put_invoice("u1", LABEL, total_paise=INVOICE_TOTAL)


def accepted(result: HttpResult) -> str:
    assert result.status == 202, result.body
    assert result.body["status"] == "PENDING"
    payment_id: str = result.body["payment_id"]
    return payment_id


# --- 1. card data never gets in --------------------------------------------------------


def _payment_body(invoice_id: str) -> dict[str, Any]:
    return {"user_id": "u1", "method": "UPI", "invoice_id": invoice_id, "vpa": "asha@okhdfc"}


def _with(body: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    return {**body, field: value}


def _everything(system: System) -> str:
    """The table, every queue (peeked, not consumed) as one string."""
    dumped = [json.dumps(system.aws.dynamodb.scan(TableName=system.aws.table_name)["Items"])]
    for url in system.aws.sqs.list_queues().get("QueueUrls", []):
        messages = system.aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
        ).get("Messages", [])
        dumped += [m["Body"] for m in messages]
    return "\n".join(dumped)


Logs = Callable[[], str]


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Logs:
    """Everything logged so far: stdout, and every record with all its attributes
    (the structured ``extra`` fields included, which ``caplog.text`` leaves out)."""
    caplog.set_level(logging.DEBUG)

    def captured() -> str:
        records = [json.dumps(vars(record), default=str) for record in caplog.records]
        assert records, "nothing was logged: the capture does not see the handlers' logs"
        return "\n".join([capsys.readouterr().out, *records])

    return captured


def assert_nowhere(text: str) -> None:
    leaked = sorted(form for form in FORBIDDEN if form in text)
    assert not leaked, f"card digits leaked: {leaked}"


CARD_VALUES: list[Any] = [
    *CARDS,
    int(VISA),
    f"my card {CARDS[0]} exp 12/29",
    {"nested": {"deeper": [CARDS[1]]}},
]


@pytest.mark.parametrize("card", CARD_VALUES, ids=lambda v: str(v)[:24])
@pytest.mark.parametrize(
    "field", ["user_id", "method", "invoice_id", "plan_id", "amount_paise", "vpa", "token", "extra"]
)
def test_post_payments_rejects_card_numbers_in_any_field_and_keeps_none(
    system: System,
    postpaid: str,
    card: Any,
    field: str,
    logs: Logs,
) -> None:
    result = system.pay(_with(_payment_body(postpaid), field, card))

    assert (result.status, result.error_code) == (422, "CARD_DATA_REJECTED"), result.body
    assert_nowhere(json.dumps(result.body))
    assert_nowhere(_everything(system))
    assert_nowhere(logs())
    assert not [k for k in system.aws.sort_keys(db.user_pk("u1")) if k.startswith("PAY#")]


@pytest.mark.parametrize(
    "body", [{"cvv": CVV}, {"card": {"cvc": CVV}}, {"token": "tok_x", "CVV2": 123}]
)
def test_a_security_code_field_is_rejected(
    system: System, postpaid: str, body: dict[str, Any]
) -> None:
    result = system.pay({**_payment_body(postpaid), "method": "CARD", **body})

    assert (result.status, result.error_code) == (422, "CARD_DATA_REJECTED"), result.body
    assert CVV not in json.dumps(result.body)
    assert not [k for k in system.aws.sort_keys(db.user_pk("u1")) if k.startswith("PAY#")]


@pytest.mark.parametrize("card", CARDS)
def test_raw_text_query_path_and_other_endpoints_reject_card_numbers(
    system: System,
    postpaid: str,
    card: str,
    logs: Logs,
) -> None:
    answers = [
        system.call("POST", "/payments", OWNER, raw_body=f"card={card}", key="k-raw"),
        system.call(
            "POST", "/payments", OWNER, body=_payment_body(postpaid), key="k-q", query={"c": card}
        ),
        system.call("POST", "/payments", OWNER, body=_payment_body(postpaid), key=card),
        system.call("GET", "/payments/{payment_id}", OWNER, payment_id=card),
        system.call(
            "POST",
            "/users/{user_id}/autopay",
            OWNER,
            body={"enabled": True, "mandate_token": card},
            key="k-a",
            user_id="u1",
        ),
        system.call(
            "POST",
            "/users/{user_id}/autopay",
            OWNER,
            body={"enabled": True, "x": {"pan": 1}},
            key="k-b",
            user_id="u1",
        ),
        system.call(
            "POST",
            "/users/{user_id}/autopay",
            OWNER,
            body={"enabled": True},
            key="k-c",
            user_id=re.sub(r"\D", "", card),
        ),
    ]
    rejected = [answers[i] for i in (0, 1, 4, 5, 6)]
    assert [a.error_code for a in rejected] == ["CARD_DATA_REJECTED"] * 5, [
        a.body for a in rejected
    ]
    # The Idempotency-Key is no field of the request: it is only ever stored hashed.
    assert answers[2].status == 202, answers[2].body
    # A malformed payment id is a validation error that does not repeat it.
    assert (answers[3].status, answers[3].error_code) == (422, "VALIDATION_ERROR")
    for answer in answers:
        assert_nowhere(json.dumps(answer.body))
    assert_nowhere(_everything(system))
    assert_nowhere(logs())


@pytest.mark.parametrize("card", CARDS)
def test_the_webhook_with_card_numbers_is_rejected_signed_or_not(
    system: System, card: str, logs: Logs
) -> None:
    body = {"event_id": "e1", "txn_id": card, "merchant_reference": card, "status": "CAPTURED"}
    raw, headers = deliver_webhook(SECRET.encode(), body, system.clock.now())

    unsigned = system.post_webhook(raw, None)
    signed = system.post_webhook(raw, headers[SIGNATURE_HEADER])

    assert unsigned.status in (401, 422)
    assert (signed.status, signed.error_code) == (422, "CARD_DATA_REJECTED")
    for answer in (signed, unsigned):
        assert_nowhere(json.dumps(answer.body))
    assert_nowhere(_everything(system))
    assert_nowhere(logs())


# --- 2. a bad signature changes nothing --------------------------------------------------


def test_a_badly_signed_webhook_is_401_and_changes_nothing(system: System, postpaid: str) -> None:
    payment_id = accepted(system.pay(_payment_body(postpaid)))
    [webhook] = system.outbox()
    raw, headers = deliver_webhook(SECRET.encode(), webhook, system.clock.now())
    good = headers[SIGNATURE_HEADER]
    tampered = raw.replace(b'"CAPTURED"', b'"FAILED"')
    assert tampered != raw

    answers = [
        system.post_webhook(tampered, good),
        system.post_webhook(raw, sign_webhook(b"not-the-secret", raw, system.clock.now())),
        system.post_webhook(
            raw, sign_webhook(SECRET.encode(), raw, system.clock.now() - timedelta(minutes=6))
        ),
        system.post_webhook(raw, None),
        system.post_webhook(raw, "t=1,v1=zz"),
    ]

    assert [(a.status, a.error_code) for a in answers] == [(401, "BAD_SIGNATURE")] * 5
    assert system.payment(payment_id)["status"] == "PENDING"
    invoice = system.invoice()
    assert (invoice.status, invoice.paid_paise) == (InvoiceStatus.ISSUED.value, 0)
    assert system.events("PaymentSucceeded") == system.events("PaymentFailed") == []


# --- 3. the same webhook three times --------------------------------------------------------


def test_the_same_webhook_three_times_pays_the_invoice_once(system: System, postpaid: str) -> None:
    payment_id = accepted(system.pay(_payment_body(postpaid)))
    [webhook] = system.outbox()

    answers = [system.deliver(webhook) for _ in range(3)]

    assert [a.status for a in answers] == [200, 200, 200], [a.body for a in answers]
    assert system.payment(payment_id)["status"] == "SUCCEEDED"
    invoice = system.invoice()
    assert (invoice.status, invoice.paid_paise) == (InvoiceStatus.PAID.value, INVOICE_TOTAL)
    assert len(system.events("PaymentSucceeded")) == 1


def test_the_same_top_up_webhook_three_times_credits_the_wallet_once(
    system: System, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", SubscriberType.PREPAID, wallet_paise=1_000)
    body = {"user_id": "u1", "method": "WALLET", "token": "tok_wallet_ab12", "amount_paise": 50_000}
    payment_id = accepted(system.pay(body))
    [webhook] = system.outbox()

    for _ in range(3):
        assert system.deliver(webhook).status == 200

    assert system.wallet() == 51_000
    assert system.payment(payment_id)["applied_paise"] == 50_000
    assert len(system.events("PaymentSucceeded")) == 1


def test_a_payment_retried_after_its_attempt_failed_past_the_charge_charges_once(
    system: System, postpaid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = DynamoPaymentStore.save
    calls = {"n": 0}

    def lost_once(store: DynamoPaymentStore, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the charge went out; noting it fails: the attempt raises
            raise ConnectionError("DynamoDB unreachable")
        save(store, *args, **kwargs)

    monkeypatch.setattr(DynamoPaymentStore, "save", lost_once)
    body = _payment_body(postpaid)
    with pytest.raises(ConnectionError):
        system.pay(body, key="k-retried")
    reused = system.pay({**body, "vpa": "someone@okaxis"}, key="k-retried")
    assert (reused.status, reused.error_code) == (422, "IDEMPOTENCY_KEY_REUSED")
    payment_id = accepted(system.pay(body, key="k-retried"))

    for webhook in system.outbox():
        assert system.deliver(webhook).status == 200
    assert system.payment(payment_id)["status"] == "SUCCEEDED"
    invoice = system.invoice()
    assert (invoice.status, invoice.paid_paise) == (InvoiceStatus.PAID.value, INVOICE_TOTAL)
    paid = [e["detail"]["payment_id"] for e in system.events("PaymentSucceeded")]
    assert paid == [payment_id]
    assert system.events("PaymentRefunded") == []


# --- 4. the webhook never comes: the janitor -------------------------------------------------


def test_without_a_webhook_the_janitor_applies_the_payment(system: System, postpaid: str) -> None:
    payment_id = accepted(system.pay({**_payment_body(postpaid), "vpa": "nowebhook@okhdfc"}))
    assert system.outbox() == []

    system.janitor()  # too early: the payment is left alone
    assert system.payment(payment_id)["status"] == "PENDING"
    system.clock.advance(timedelta(minutes=16))
    system.janitor()

    assert system.payment(payment_id)["status"] == "SUCCEEDED"
    assert system.invoice().status == InvoiceStatus.PAID.value
    assert len(system.events("PaymentSucceeded")) == 1


# --- 5. debited but reported failed ---------------------------------------------------------


def test_debited_but_reported_failed_ends_refunded_within_two_hours(
    system: System, postpaid: str
) -> None:
    payment_id = accepted(system.pay({**_payment_body(postpaid), "vpa": "debitfail@okhdfc"}))
    [webhook] = system.outbox()
    assert webhook["status"] == "FAILED"
    assert system.deliver(webhook).status == 200

    for _ in range(8):  # every 15 minutes, two hours
        system.clock.advance(timedelta(minutes=15))
        system.janitor()

    view = system.payment(payment_id)
    invoice = system.invoice()
    applied = invoice.paid_paise
    assert view["status"] in ("REFUNDED", "SUCCEEDED")
    assert applied + view["refunded_paise"] == INVOICE_TOTAL  # applied xor refunded
    assert (view["status"] == "REFUNDED") == (applied == 0)
    txn = pay_wiring.gateway().status(view["transaction_id"])
    assert txn is not None
    assert txn.refunded_paise == view["refunded_paise"]
    if view["status"] == "REFUNDED":
        assert invoice.status == InvoiceStatus.ISSUED.value
        assert txn.refunded_paise == INVOICE_TOTAL
        assert system.events("PaymentSucceeded") == []


# --- 6. the overdue, blocked subscriber pays -------------------------------------------------


def test_an_overdue_blocked_subscriber_pays_and_payment_succeeded_goes_on_the_bus(
    system: System, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", SubscriberType.POSTPAID, status=SubscriberStatus.TEMP_BLOCKED)
    invoice_id = put_invoice("u1", LABEL, InvoiceStatus.OVERDUE, total_paise=INVOICE_TOTAL)

    payment_id = accepted(system.pay(_payment_body(invoice_id)))
    [webhook] = system.outbox()
    assert system.deliver(webhook).status == 200

    assert system.invoice().status == InvoiceStatus.PAID.value
    [event] = system.events("PaymentSucceeded")
    assert event["detail"]["payment_id"] == payment_id
    assert event["detail"]["user_id"] == "u1"
    assert event["detail"].get("invoice_id") == invoice_id

"""Personal data never reaches a log line in plaintext, through the real handlers
on moto: a SIM activation carrying an Aadhaar or a PAN, a phone number, an
e-mail and an ICCID, and a UPI payment carrying a VPA.

Each handler runs as deployed with Powertools' event logging on
(POWERTOOLS_LOGGER_LOG_EVENT, the switch an operator flips to debug), so the
whole request, personal data included, goes through the logger; the test reads
the lines the Lambda would print."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from functions.activation import handler as activation_api
from functions.activation import wiring as activation_wiring
from functions.billing import wiring as billing_wiring
from functions.payments import handler as payments_api
from functions.payments import wiring as payments_wiring
from shared.models import SubscriberType
from shared.settings import get_settings
from tests.activation_data import activation_body
from tests.apigw import Caller, HttpResult, api_event, lambda_context, parse_response
from tests.integration.conftest import REGION, Aws, MakeSubscriber
from tests.pii import capture_lines, plaintext_pii

AGENT = Caller("agent-7", "agent")
OWNER = Caller("u1")
VPA = "asha.rao@okhdfc"
WALLET_TOKEN = "wlt-9f8e7d6c5b4a3210"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _clear_wiring() -> None:
    """The wirings build their services once per container: rebuild from this env."""
    get_settings.cache_clear()
    for module in (activation_wiring, billing_wiring, payments_wiring):
        for value in vars(module).values():
            if getattr(value, "__module__", "") == module.__name__ and hasattr(
                value, "cache_clear"
            ):
                value.cache_clear()


@pytest.fixture
def deployment(seeded: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """What activation and payments read from their environment, in moto."""
    kms = boto3.client("kms", region_name=REGION)
    secrets = boto3.client("secretsmanager", region_name=REGION)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    pepper = secrets.create_secret(Name="tbcss-test-kyc-pepper", SecretString="p" * 32)
    machine = sfn.create_state_machine(
        name="tbcss-test-activation",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=f"arn:aws:iam::123456789012:role/{uuid.uuid4().hex}",
    )
    outbox = seeded.sqs.create_queue(QueueName="tbcss-test-log-masking-outbox")["QueueUrl"]
    monkeypatch.setenv("KYC_KEY_ID", kms.create_key()["KeyMetadata"]["KeyId"])
    monkeypatch.setenv("KYC_PEPPER_SECRET_ID", pepper["ARN"])
    monkeypatch.setenv("ACTIVATION_STATE_MACHINE_ARN", machine["stateMachineArn"])
    monkeypatch.setenv("WEBHOOK_OUTBOX_QUEUE_URL", outbox)
    _clear_wiring()
    yield seeded
    monkeypatch.undo()
    _clear_wiring()


def with_event_logging(module: Any) -> Handler:
    """The module's handler as deployed with POWERTOOLS_LOGGER_LOG_EVENT=true."""
    logged: Handler = module.logger.inject_lambda_context(log_event=True)(module.handler)
    return logged


def call(module: Any, method: str, path: str, who: Caller, body: dict[str, Any]) -> HttpResult:
    event = api_event(method, path, caller=who, body=body, idempotency_key=uuid.uuid4().hex)
    return parse_response(with_event_logging(module)(event, lambda_context("tbcss-test")))


def test_activation_requests_leave_no_kyc_number_phone_email_or_iccid_in_the_logs(
    deployment: Aws,
) -> None:
    bodies = [activation_body(), activation_body(kyc_type="PAN")]
    with capture_lines(activation_api.logger, level="INFO") as lines:
        for body in bodies:
            result = call(activation_api, "POST", "/activate-sim", AGENT, body)
            assert result.status == 202, result.body

    text = "\n".join(lines)
    known = [
        value
        for body in bodies
        for value in (body["msisdn"], body["email"], body["iccid"], body["kyc"]["number"])
    ]
    assert plaintext_pii(text, known) == []
    # The requests were logged, masked: support still sees whose they were.
    events = [json.loads(line)["message"] for line in lines if '"httpMethod"' in line]
    assert len(events) == len(bodies)
    for body in bodies:
        assert f"******{body['msisdn'][-4:]}" in text
        assert f"{body['email'][0]}***@example.in" in text
    assert text.count('"activation accepted"') == len(bodies)


def test_payments_leave_no_vpa_or_gateway_token_in_the_logs(
    deployment: Aws, make_subscriber: MakeSubscriber
) -> None:
    subscriber = make_subscriber("u1", SubscriberType.PREPAID)
    recharge = {"user_id": "u1", "plan_id": "PRE_SMART_299"}
    bodies = [
        {**recharge, "method": "UPI", "vpa": VPA},
        {**recharge, "method": "WALLET", "token": WALLET_TOKEN},  # opaque: no tok_ prefix
    ]
    with capture_lines(payments_api.logger, level="INFO") as lines:
        for body in bodies:
            result = call(payments_api, "POST", "/payments", OWNER, body)
            assert result.status == 202, result.body

    text = "\n".join(lines)
    assert plaintext_pii(text, [VPA, WALLET_TOKEN, subscriber.msisdn]) == []
    # The requests were logged, masked.
    assert "as***@okhdfc" in text
    assert f"{'*' * 16}{WALLET_TOKEN[-4:]}" in text
    assert text.count('"payment created"') == len(bodies)

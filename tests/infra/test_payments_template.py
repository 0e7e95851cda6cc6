"""CDK assertions on the payments module (infra/payments.py): the routes (the
webhook without the authorizer), the InvoiceIssued rule and its queue, the
schedules, the gateway simulator's webhook outbox and delivery, the webhook
secret and what each function may do."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest

from infra.payments import EVENT_SOURCES, EVENT_TYPES
from infra.stack import TbCssStack
from tests.infra.conftest import REGION, STAGE
from tests.infra.test_stack_template import (
    Resources,
    _actions,
    _resources,
    _routes,
    _statements_of,
    _walk,
    function_named,
    of_type,
)

API = "functions.payments.handler.handler"
WORKER = "functions.payments.worker.handler"
SCHEDULE = "functions.payments.schedule.handler"
WEBHOOKS = "functions.payments.webhooks.handler"
SECRET_NAME = f"tbcss-{STAGE}/payment-gateway-webhook-secret"


def _queue(resources: Resources, prefix: str) -> tuple[str, str]:
    """The logical ids of a queue and of its DLQ."""
    queues = of_type(resources, "AWS::SQS::Queue")
    (queue,) = [n for n in queues if n.startswith(prefix) and not n.startswith(f"{prefix}Dlq")]
    (dlq,) = [n for n in queues if n.startswith(f"{prefix}Dlq")]
    return queue, dlq


def _variables(resources: Resources, handler: str) -> dict[str, Any]:
    found: dict[str, Any] = function_named(resources, handler)[1]["Environment"]["Variables"]
    return found


def _may(resources: Resources, handler: str, action: str) -> bool:
    return any(
        action in _actions(s) and s.get("Effect", "Allow") == "Allow"
        for s in _statements_of(resources, handler)
    )


# --- routes --------------------------------------------------------------------------

AUTHORIZED_ROUTES = (
    "POST /payments",
    "GET /payments/{payment_id}",
    "POST /users/{user_id}/autopay",
)


def test_payment_routes_go_to_the_api_function_behind_the_authorizer(
    resources: Resources,
) -> None:
    api_name, _ = function_named(resources, API)
    (authorizer,) = of_type(resources, "AWS::ApiGateway::Authorizer")
    routes = _routes(resources)
    for route in AUTHORIZED_ROUTES:
        assert routes[route]["AuthorizationType"] == "CUSTOM", route
        assert routes[route]["AuthorizerId"] == {"Ref": authorizer}, route
        assert {"Fn::GetAtt": [api_name, "Arn"]} in _walk(routes[route]["Integration"]), route


def test_the_webhook_route_has_no_authorizer_the_gateway_signs_instead(
    resources: Resources,
) -> None:
    api_name, _ = function_named(resources, API)
    webhook = _routes(resources)["POST /payments/webhook"]
    assert webhook["AuthorizationType"] == "NONE"
    assert "AuthorizerId" not in webhook
    assert {"Fn::GetAtt": [api_name, "Arn"]} in _walk(webhook["Integration"])
    # The signature is checked against this secret, by name.
    assert _variables(resources, API)["PAYMENT_WEBHOOK_SECRET_ID"] == SECRET_NAME


# --- events in, schedules ----------------------------------------------------------------


def test_new_invoices_reach_the_payments_queue_for_autopay(resources: Resources) -> None:
    queue, dlq = _queue(resources, "PaymentsQueue")
    (name, rule) = next(
        (n, r) for n, r in resources.items() if n.startswith("PaymentsAutoPayInvoices")
    )
    props = rule["Properties"]
    assert props["EventPattern"] == {"source": EVENT_SOURCES, "detail-type": EVENT_TYPES}
    assert (EVENT_SOURCES, EVENT_TYPES) == (["tbcss.billing"], ["InvoiceIssued"])
    # The bus by its literal name, after the bus exists: moto cannot deploy a Ref here.
    assert props["EventBusName"] == f"tbcss-{STAGE}-events"
    (bus,) = of_type(resources, "AWS::Events::EventBus")
    assert bus in rule["DependsOn"], name
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [dlq, "Arn"]}


def test_the_janitor_runs_every_15_minutes_and_autopay_retries_at_10_ist(
    resources: Resources,
) -> None:
    schedule_name, _ = function_named(resources, SCHEDULE)
    rules = {
        json.loads(rule["Targets"][0]["Input"])["sweep"]: rule["ScheduleExpression"]
        for rule in of_type(resources, "AWS::Events::Rule").values()
        if rule.get("ScheduleExpression")
        and rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [schedule_name, "Arn"]}
    }
    # 10:00 IST is 04:30 UTC.
    assert rules == {"reconcile": "rate(15 minutes)", "autopay_retries": "cron(30 4 * * ? *)"}


@pytest.mark.parametrize(
    ("prefix", "consumer"), [("PaymentsQueue", WORKER), ("PaymentsWebhookOutbox", WEBHOOKS)]
)
def test_each_queue_redrives_to_a_dlq_and_its_consumer_reports_partial_failures(
    resources: Resources, prefix: str, consumer: str
) -> None:
    queue_name, dlq_name = _queue(resources, prefix)
    queues = of_type(resources, "AWS::SQS::Queue")
    queue = queues[queue_name]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_name, "Arn"]},
        "maxReceiveCount": 5,
    }
    (key,) = of_type(resources, "AWS::KMS::Key")
    assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    assert queues[dlq_name]["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    consumer_name, function = function_named(resources, consumer)
    assert queue["VisibilityTimeout"] == 6 * function["Timeout"]
    (mapping,) = [
        m
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if m["FunctionName"] == {"Ref": consumer_name}
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue_name, "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_ops_queue_is_encrypted_under_the_data_key(resources: Resources) -> None:
    (ops,) = [q for n, q in of_type(resources, "AWS::SQS::Queue").items() if "PaymentsOps" in n]
    (key,) = of_type(resources, "AWS::KMS::Key")
    assert ops["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    assert ops["MessageRetentionPeriod"] == 14 * 86400


# --- the secret and the simulator ------------------------------------------------------------


def test_the_webhook_secret_is_named_literally_and_encrypted_under_the_data_key(
    resources: Resources,
) -> None:
    (secret,) = [
        props
        for name, props in of_type(resources, "AWS::SecretsManager::Secret").items()
        if name.startswith("Payments")
    ]
    # A literal name: the local runtime creates the secrets moto's CloudFormation skips.
    assert secret["Name"] == SECRET_NAME
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    (key,) = of_type(resources, "AWS::KMS::Key")
    assert secret["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}


def test_the_simulator_delivers_its_webhooks_to_the_api_function(resources: Resources) -> None:
    api_name, _ = function_named(resources, API)
    outbox, _ = _queue(resources, "PaymentsWebhookOutbox")
    webhooks = _variables(resources, WEBHOOKS)
    assert webhooks["PAYMENTS_API_FUNCTION_NAME"] == {"Ref": api_name}
    assert webhooks["PAYMENT_WEBHOOK_SECRET_ID"] == SECRET_NAME
    # Whatever charges (the API, AutoPay's worker) queues its webhooks there.
    for handler in (API, WORKER):
        variables = _variables(resources, handler)
        assert variables["WEBHOOK_OUTBOX_QUEUE_URL"] == {"Ref": outbox}, handler
        assert variables["PAYMENT_GATEWAY"] == "simulator", handler
        assert "SIMULATOR_KNOBS_PARAMETER" in variables, handler
    (invoke,) = [
        s for s in _statements_of(resources, WEBHOOKS) if "lambda:InvokeFunction" in _actions(s)
    ]
    assert {"Fn::GetAtt": [api_name, "Arn"]} in _resources(invoke)


def test_an_unknown_gateway_is_refused_at_synth() -> None:
    app = cdk.App(context={"payment_gateway": "acme-pay"})
    with pytest.raises(ValueError, match="acme-pay"):
        TbCssStack(app, "T", stage=STAGE, env=cdk.Environment(region=REGION))


# --- least privilege -----------------------------------------------------------------------


def test_only_the_api_and_the_simulator_read_the_webhook_secret(resources: Resources) -> None:
    """The API verifies signatures; the delivery function signs them, because it
    plays the gateway (which holds the same secret). Nothing else reads it."""
    for handler in (API, WEBHOOKS):
        (statement,) = [
            s
            for s in _statements_of(resources, handler)
            if "secretsmanager:GetSecretValue" in _actions(s)
        ]
        (arn,) = _resources(statement)
        text = "".join(p if isinstance(p, str) else "<token>" for p in arn["Fn::Join"][1])
        assert text.endswith(f":secret:{SECRET_NAME}-??????"), handler
        (decrypt,) = [
            s
            for s in _statements_of(resources, handler)
            if _actions(s) == ["kms:Decrypt"] and "Condition" in s
        ]
        via = decrypt["Condition"]["StringEquals"]["kms:ViaService"]
        assert via == f"secretsmanager.{REGION}.amazonaws.com", handler
    for handler in (WORKER, SCHEDULE):
        assert not _may(resources, handler, "secretsmanager:GetSecretValue"), handler


def test_the_webhook_delivery_touches_no_data(resources: Resources) -> None:
    for statement in _statements_of(resources, WEBHOOKS):
        for action in _actions(statement):
            assert not action.startswith(("dynamodb:", "events:", "sns:", "ses:")), action


@pytest.mark.parametrize(
    ("handler", "allowed"),
    [
        # Charges (the simulator's knobs and outbox), webhooks (secret, escalation of
        # a mismatched capture, the notices after a recharge or a last AutoPay failure).
        (
            API,
            {"dynamodb:PutItem", "ssm:GetParameter", "secretsmanager:GetSecretValue"}
            | {"sqs:SendMessage", "sns:Publish", "ses:SendEmail"},
        ),
        (WORKER, {"dynamodb:PutItem", "ssm:GetParameter", "sqs:SendMessage"}),  # AutoPay charges
        # The janitor (escalations, reminders) and the AutoPay retries' fan-out.
        (SCHEDULE, {"dynamodb:PutItem", "sqs:SendMessage", "sns:Publish", "ses:SendEmail"}),
        (WEBHOOKS, {"secretsmanager:GetSecretValue", "lambda:InvokeFunction"}),
    ],
)
def test_functions_hold_only_the_permissions_they_use(
    resources: Resources, handler: str, allowed: set[str]
) -> None:
    sensitive = {
        "dynamodb:PutItem",
        "ssm:GetParameter",
        "secretsmanager:GetSecretValue",
        "sqs:SendMessage",
        "sns:Publish",
        "ses:SendEmail",
        "lambda:InvokeFunction",
        "states:StartExecution",
    }
    held = {action for action in sensitive if _may(resources, handler, action)}
    assert held == allowed


@pytest.mark.parametrize(
    ("prefix", "senders"),
    [
        ("PaymentsWebhookOutbox", {API, WORKER}),
        ("PaymentsQueue", {SCHEDULE}),
        ("PaymentsOpsQueue", {API, SCHEDULE}),
    ],
)
def test_who_sends_to_each_queue(resources: Resources, prefix: str, senders: set[str]) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    (queue,) = [n for n in queues if n.startswith(prefix) and "Dlq" not in n]
    arn = {"Fn::GetAtt": [queue, "Arn"]}
    sending = {
        handler
        for handler in (API, WORKER, SCHEDULE, WEBHOOKS)
        if any(
            "sqs:SendMessage" in _actions(s) and arn in _resources(s)
            for s in _statements_of(resources, handler)
        )
    }
    assert sending == senders

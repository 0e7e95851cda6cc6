"""CDK assertions on the service-control module (infra/service_control.py): the
event rule and its queue, the worker, the disconnection workflow, the routes,
the inactivity schedule and what each function may do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.activation import ActivationTimings
from infra.service_control import EVENT_SOURCES, EVENT_TYPES
from tests.infra.conftest import STAGE
from tests.infra.test_activation_template import _definition
from tests.infra.test_stack_template import (
    Resources,
    _actions,
    _resources,
    _routes,
    _statements_of,
    function_named,
    of_type,
)

API = "functions.service_control.handler.handler"
WORKER = "functions.service_control.worker.handler"
TASKS = "functions.service_control.tasks.handler"
SCHEDULE = "functions.service_control.schedule.handler"


def _queue_names(resources: Resources) -> tuple[str, str]:
    queues = of_type(resources, "AWS::SQS::Queue")
    (queue,) = [n for n in queues if n.startswith("ServiceControlQueue") and "Dlq" not in n]
    (dlq,) = [n for n in queues if n.startswith("ServiceControlQueueDlq")]
    return queue, dlq


def test_the_rule_sends_the_events_service_control_reacts_to_into_its_queue(
    resources: Resources,
) -> None:
    queue, dlq = _queue_names(resources)
    (name, rule) = next(
        (n, r) for n, r in resources.items() if n.startswith("ServiceControlReactions")
    )
    props = rule["Properties"]
    assert props["EventPattern"] == {"source": EVENT_SOURCES, "detail-type": EVENT_TYPES}
    assert set(EVENT_TYPES) == {
        "InvoiceOverdue",
        "PlanExpired",
        "QuotaExhausted",
        "PlanChanged",
        "PaymentSucceeded",
    }
    assert set(EVENT_SOURCES) == {"tbcss.billing", "tbcss.usage", "tbcss.plans", "tbcss.payments"}
    # The bus by its literal name, after the bus exists: moto cannot deploy a Ref here.
    assert props["EventBusName"] == f"tbcss-{STAGE}-events"
    (bus,) = of_type(resources, "AWS::Events::EventBus")
    assert bus in rule["DependsOn"], name
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [dlq, "Arn"]}


def test_the_queue_redrives_to_a_dlq_and_the_worker_reports_partial_failures(
    resources: Resources,
) -> None:
    queue_name, dlq_name = _queue_names(resources)
    queues = of_type(resources, "AWS::SQS::Queue")
    queue = queues[queue_name]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_name, "Arn"]},
        "maxReceiveCount": 5,
    }
    (key,) = of_type(resources, "AWS::KMS::Key")
    assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    assert queues[dlq_name]["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    worker_name, worker = function_named(resources, WORKER)
    assert queue["VisibilityTimeout"] == 6 * worker["Timeout"]
    (mapping,) = [
        m
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if m["FunctionName"] == {"Ref": worker_name}
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue_name, "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_disconnection_workflow_has_its_steps_branches_and_retries(
    resources: Resources,
) -> None:
    definition = _definition(resources, "ServiceControl")
    states = definition["States"]
    assert definition["QueryLanguage"] == "JSONPath"
    assert definition["StartAt"] == "Resumed"
    # A resume (dues paid) goes straight to the dues check; a new one bills first.
    (resumed,) = states["Resumed"]["Choices"]
    assert resumed == {"Variable": "$.resume", "IsPresent": True, "Next": "CheckDues"}
    assert states["Resumed"]["Default"] == "FinalBill"
    assert states["FinalBill"]["Next"] == "CheckDues"
    assert states["CheckDues"]["ResultPath"] == "$.dues"
    branches = {c["StringEquals"]: c["Next"] for c in states["DuesDecision"]["Choices"]}
    assert branches == {"AWAIT_DUES": "AwaitDues", "PROCEED": "Deprovision"}
    assert {c["Variable"] for c in states["DuesDecision"]["Choices"]} == {"$.dues.decision"}
    assert states["AwaitDues"]["Next"] == "AwaitingDues"
    assert states["AwaitingDues"]["Type"] == "Succeed"

    # First match wins: a permanent refusal to the catch at once, a transient one
    # backed off, a crashed worker retried (the order is safe to repeat).
    *_, permanent, transient, worker = states["Deprovision"]["Retry"]
    assert permanent == {"ErrorEquals": ["NetworkPermanentError"], "MaxAttempts": 0}
    assert worker["ErrorEquals"] == ["States.ALL"]
    defaults = ActivationTimings()
    assert transient["ErrorEquals"] == ["NetworkTransientError"]
    assert transient["MaxAttempts"] == defaults.deprovision_attempts - 1 == 5  # 6 in all
    assert transient["BackoffRate"] == defaults.provision_backoff_rate > 1
    assert transient["IntervalSeconds"] == defaults.provision_interval_seconds
    assert states["Deprovision"]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Escalate"}
    ]
    assert states["Deprovision"]["Next"] == "Complete"
    assert states["Complete"]["Next"] == "Notify"
    assert states["Escalate"]["Parameters"]["error.$"] == "$.error"
    assert states["Escalate"]["Next"] == "Escalated"
    assert states["Escalated"]["Type"] == "Fail"
    # A failed notice does not undo a disconnection.
    assert [c["Next"] for c in states["Notify"]["Catch"]] == ["Disconnected"]
    assert states["Notify"]["Next"] == "Disconnected"
    assert states["Disconnected"]["Type"] == "Succeed"

    tasks = {
        "FinalBill": "final_bill",
        "CheckDues": "check_dues",
        "AwaitDues": "await_dues",
        "Deprovision": "deprovision",
        "Complete": "complete",
        "Notify": "notify",
        "Escalate": "escalate",
    }
    for state, task in tasks.items():
        assert states[state]["Parameters"]["task"] == task, state
        assert states[state]["Parameters"]["disconnection_id.$"] == "$.disconnection_id", state
        if state != "CheckDues":
            assert states[state]["ResultPath"] is None, state  # the input stays as it was


def test_the_workflow_invokes_only_the_tasks_function(resources: Resources) -> None:
    tasks_name, _ = function_named(resources, TASKS)
    (machine,) = [
        props
        for name, props in of_type(resources, "AWS::StepFunctions::StateMachine").items()
        if name.startswith("ServiceControl")
    ]
    functions = {
        part["Fn::GetAtt"][0]
        for part in machine["DefinitionString"]["Fn::Join"][1]
        if isinstance(part, dict) and "Fn::GetAtt" in part
    }
    assert functions == {tasks_name}


ROUTES = (
    "POST /service-control/block/{user_id}",
    "POST /service-control/unblock/{user_id}",
    "GET /service-control/status/{user_id}",
    "POST /service-control/disconnect/{user_id}",
    "GET /service-control/disconnections/{disconnection_id}",
    "POST /service-control/otp/{user_id}",
    "POST /service-control/otp/{user_id}/verify",
    "POST /users/{user_id}/sim-replacement",
)


def test_the_routes_go_to_the_api_function_behind_the_authorizer(resources: Resources) -> None:
    api_name, _ = function_named(resources, API)
    (authorizer,) = of_type(resources, "AWS::ApiGateway::Authorizer")
    routes = _routes(resources)
    for route in ROUTES:
        assert routes[route]["AuthorizationType"] == "CUSTOM", route
        assert routes[route]["AuthorizerId"] == {"Ref": authorizer}, route
        assert json.dumps({"Fn::GetAtt": [api_name, "Arn"]}) in json.dumps(routes[route]), route


def test_the_inactivity_sweep_runs_daily_at_ist_midnight(resources: Resources) -> None:
    schedule_name, _ = function_named(resources, SCHEDULE)
    (rule,) = [
        r
        for r in of_type(resources, "AWS::Events::Rule").values()
        if any(t["Arn"] == {"Fn::GetAtt": [schedule_name, "Arn"]} for t in r["Targets"])
    ]
    assert rule["ScheduleExpression"] == "cron(30 18 * * ? *)"
    assert json.loads(rule["Targets"][0]["Input"]) == {"sweep": "inactivity"}


def test_each_function_is_configured_with_what_it_uses(resources: Resources) -> None:
    queue, _ = _queue_names(resources)
    (machine,) = [
        n for n in of_type(resources, "AWS::StepFunctions::StateMachine") if "ServiceControl" in n
    ]
    (bucket,) = [n for n in of_type(resources, "AWS::S3::Bucket") if n.startswith("Billing")]

    def variables(handler: str) -> dict[str, Any]:
        found: dict[str, Any] = function_named(resources, handler)[1]["Environment"]["Variables"]
        return found

    for handler in (API, WORKER):
        assert variables(handler)["DISCONNECTION_STATE_MACHINE_ARN"] == {"Ref": machine}
    assert variables(TASKS)["INVOICE_BUCKET_NAME"] == {"Ref": bucket}
    assert variables(SCHEDULE)["SERVICE_CONTROL_QUEUE_URL"] == {"Ref": queue}
    for handler in (API, WORKER, TASKS):
        prefix = variables(handler)["SIMULATOR_LINES_PARAMETER_PREFIX"]
        assert prefix == f"/tbcss/{STAGE}/simulator/lines", handler
        assert "SIMULATOR_KNOBS_PARAMETER" in variables(handler), handler
    assert "SIMULATOR_KNOBS_PARAMETER" not in variables(SCHEDULE)  # it never reaches the network


def _may(resources: Resources, handler: str, action: str) -> bool:
    return any(action in _actions(s) for s in _statements_of(resources, handler))


@pytest.mark.parametrize(
    ("handler", "allowed"),
    [
        # The OTP goes by SMS (or email) from the API; the workflow notifies.
        # The API queues a network sync the HLR refused, to be retried.
        (API, {"sns:Publish", "ses:SendEmail", "states:StartExecution", "sqs:SendMessage"}),
        (WORKER, {"states:StartExecution"}),  # resumes parked and starts inactive ones
        (TASKS, {"sns:Publish", "ses:SendEmail", "s3:PutObject"}),
        (SCHEDULE, {"sqs:SendMessage"}),
    ],
)
def test_functions_hold_only_the_permissions_they_use(
    resources: Resources, handler: str, allowed: set[str]
) -> None:
    sensitive = {
        "sns:Publish",
        "ses:SendEmail",
        "states:StartExecution",
        "s3:PutObject",
        "sqs:SendMessage",
        "dynamodb:PutItem",
    }
    if handler != SCHEDULE:
        allowed = allowed | {"dynamodb:PutItem"}
    held = {action for action in sensitive if _may(resources, handler, action)}
    assert held == allowed


def test_only_the_schedule_sends_to_the_queue_and_only_the_worker_reads_it(
    resources: Resources,
) -> None:
    queue, _ = _queue_names(resources)
    arn = {"Fn::GetAtt": [queue, "Arn"]}
    for handler, action in ((SCHEDULE, "sqs:SendMessage"), (WORKER, "sqs:ReceiveMessage")):
        (statement,) = [s for s in _statements_of(resources, handler) if action in _actions(s)]
        assert _resources(statement) == [arn]
    for handler in (API, TASKS):
        assert not _may(resources, handler, "sqs:ReceiveMessage"), handler


def test_email_only_from_the_sender_identity(resources: Resources) -> None:
    for handler in (API, TASKS):
        (statement,) = [
            s for s in _statements_of(resources, handler) if "ses:SendEmail" in _actions(s)
        ]
        (arn,) = _resources(statement)
        text = "".join(p if isinstance(p, str) else "<token>" for p in arn["Fn::Join"][1])
        assert text.endswith(":identity/no-reply@tbcss.example.in"), handler

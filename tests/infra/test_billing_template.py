"""CDK assertions on the billing module (infra/billing.py)."""

from __future__ import annotations

from tests.infra.test_stack_template import (
    Resources,
    _actions,
    _routes,
    _statements_of,
    function_named,
    of_type,
)

WORKER = "functions.billing.worker.handler"
SCHEDULES = "functions.billing.schedule.handler"
WRITE_ACTIONS = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
}


def test_the_daily_schedules_fire_at_ist_midnight_with_their_sweep(resources: Resources) -> None:
    schedules_name, _ = function_named(resources, SCHEDULES)
    rules = [
        rule
        for rule in of_type(resources, "AWS::Events::Rule").values()
        if rule.get("ScheduleExpression")
        and any(t["Arn"] == {"Fn::GetAtt": [schedules_name, "Arn"]} for t in rule["Targets"])
    ]
    assert {rule["ScheduleExpression"] for rule in rules} == {"cron(30 18 * * ? *)"}
    sweeps = sorted(rule["Targets"][0]["Input"] for rule in rules)
    assert sweeps == ['{"sweep":"bill_run"}', '{"sweep":"expiry"}', '{"sweep":"overdue"}']


def test_the_worker_reads_its_queue_with_partial_failures_and_a_dlq(resources: Resources) -> None:
    worker_name, worker = function_named(resources, WORKER)
    (mapping,) = [
        m
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if m["FunctionName"] == {"Ref": worker_name}
    ]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "BillingTasks" in str(mapping["EventSourceArn"])
    queues = of_type(resources, "AWS::SQS::Queue")
    (tasks,) = [
        q for name, q in queues.items() if name.startswith("BillingTasks") and "Dlq" not in name
    ]
    assert "BillingTasksDlq" in str(tasks["RedrivePolicy"]["deadLetterTargetArn"])
    assert tasks["VisibilityTimeout"] >= 6 * worker["Timeout"]


def test_the_invoice_bucket_is_private_and_kms_encrypted(resources: Resources) -> None:
    (bucket,) = [
        b for name, b in of_type(resources, "AWS::S3::Bucket").items() if "Invoices" in name
    ]
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_invoice_routes_are_authorized_and_pdfs_are_binary(resources: Resources) -> None:
    routes = _routes(resources)
    for route in (
        "GET /users/{user_id}/invoices",
        "GET /invoices/{invoice_id}",
        "GET /invoices/{invoice_id}/pdf",
        "POST /invoices/{invoice_id}/credit-notes",
    ):
        assert routes[route]["AuthorizationType"] == "CUSTOM", route
    (api,) = of_type(resources, "AWS::ApiGateway::RestApi").values()
    assert "application/pdf" in api["BinaryMediaTypes"]


def test_the_daily_sweeps_may_move_only_their_checkpoints(resources: Resources) -> None:
    for handler in (SCHEDULES, "functions.service_control.schedule.handler"):
        writes = [
            statement
            for statement in _statements_of(resources, handler)
            if any(action in WRITE_ACTIONS for action in _actions(statement))
        ]
        (checkpoints,) = writes
        assert _actions(checkpoints) == ["dynamodb:GetItem", "dynamodb:UpdateItem"], handler
        leading = checkpoints["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        assert leading == ["SWEEP#*"], handler

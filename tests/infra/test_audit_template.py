"""CDK assertions on the audit module (infra/audit.py): every module's events
reach the audit queue, no IAM role of the stack can change or delete an audit
record (only the audit worker may put one), GET /audit sits behind the
authorizer, and the compliance report runs monthly."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import shared.services.billing
import shared.services.disconnection
import shared.services.payments
import shared.services.service_control
import shared.services.sim_care
import shared.staff_actions
from shared.events import EVENT_SOURCE_PREFIX
from tests.infra.test_stack_template import (
    Resources,
    _actions,
    _routes,
    _walk,
    function_named,
    of_type,
    role_statements,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER = "functions.audit.worker.handler"
API = "functions.audit.handler.handler"
REPORT = "functions.audit.report.handler"
AUDIT_KEYS = {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": ["AUDIT*"]}}
TAMPERING = {
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
}
PUTTING = {"dynamodb:PutItem", "dynamodb:PartiQLInsert"}


# --- every source reaches the audit queue ----------------------------------------------


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """The module's top-level ``NAME = "text"`` constants."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def published_sources() -> dict[str, set[str]]:
    """``source -> files``: the ``source=`` of every DomainEvent the code builds,
    a literal or a module constant. Anything else fails: name it here."""
    sources: dict[str, set[str]] = {}
    for path in sorted([*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/**/*.py")]):
        tree = ast.parse(path.read_text(), filename=str(path))
        constants = _module_strings(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _called(node) == "DomainEvent"):
                continue
            for keyword in node.keywords:
                if keyword.arg != "source":
                    continue
                value = keyword.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    source = value.value
                elif isinstance(value, ast.Name) and value.id in constants:
                    source = constants[value.id]
                else:
                    raise AssertionError(f"{path}:{node.lineno}: a source the test cannot read")
                sources.setdefault(source, set()).add(str(path.relative_to(ROOT)))
    return sources


def _called(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _audit_rule(resources: Resources) -> dict[str, Any]:
    (rule,) = [
        props
        for name, props in of_type(resources, "AWS::Events::Rule").items()
        if name.startswith("AuditEveryEvent")
    ]
    return rule


def test_the_code_is_read_for_every_module_that_publishes() -> None:
    found = published_sources()

    assert set(found) >= {
        shared.services.billing.SOURCE,
        shared.services.payments.SOURCE,
        shared.services.service_control.SOURCE,
        shared.services.sim_care.SOURCE,
        shared.services.disconnection.SOURCE,
        shared.staff_actions.SOURCE,
        "plans",
        "usage",
        "activation",
    }


def test_the_audit_rule_takes_every_event_of_every_source_the_code_publishes(
    resources: Resources,
) -> None:
    pattern = _audit_rule(resources)["EventPattern"]

    missing = {
        source: files
        for source, files in published_sources().items()
        if EVENT_SOURCE_PREFIX + source not in pattern["source"]
    }
    assert missing == {}, "events these modules publish would never be audited"
    assert set(pattern) == {"source"}  # every detail-type


def test_the_audit_rule_feeds_the_audit_queue_with_a_dlq_and_the_worker_reports_failures(
    resources: Resources,
) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    (queue,) = [n for n in queues if n.startswith("AuditQueue") and "Dlq" not in n]
    (dlq,) = [n for n in queues if n.startswith("AuditQueueDlq")]
    (target,) = _audit_rule(resources)["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [dlq, "Arn"]}
    assert queues[queue]["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}

    worker, _ = function_named(resources, WORKER)
    (mapping,) = [
        m
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if m["FunctionName"] == {"Ref": worker}
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


# --- records are immutable -------------------------------------------------------------------


def _denied_on_audit_items(statements: list[dict[str, Any]]) -> set[str]:
    denied: set[str] = set()
    for statement in statements:
        if statement["Effect"] == "Deny" and statement.get("Condition") == AUDIT_KEYS:
            assert statement["Resource"] == "*"
            denied |= set(_actions(statement))
    return denied


def _role_of(resources: Resources, handler: str) -> str:
    _, function = function_named(resources, handler)
    role: str = function["Role"]["Fn::GetAtt"][0]
    return role


def test_every_role_of_the_stack_is_denied_changing_or_deleting_audit_records(
    resources: Resources,
) -> None:
    roles = of_type(resources, "AWS::IAM::Role")
    assert len(roles) > 10  # the functions', the workflows', the API's...

    for role in roles:
        denied = _denied_on_audit_items(role_statements(resources, role))
        assert denied >= TAMPERING, role


def test_only_the_audit_worker_may_put_audit_records(resources: Resources) -> None:
    worker = _role_of(resources, WORKER)

    for role in of_type(resources, "AWS::IAM::Role"):
        denied = _denied_on_audit_items(role_statements(resources, role))
        if role == worker:
            assert not denied & PUTTING
        else:
            assert denied >= PUTTING, role


def test_the_audit_worker_may_put_and_read_audit_items_only(resources: Resources) -> None:
    (table,) = of_type(resources, "AWS::DynamoDB::Table")
    on_the_table = [
        statement
        for statement in role_statements(resources, _role_of(resources, WORKER))
        if statement["Effect"] == "Allow"
        and any(action.startswith("dynamodb:") for action in _actions(statement))
    ]

    (grant,) = on_the_table
    assert set(_actions(grant)) == {"dynamodb:PutItem", "dynamodb:GetItem"}
    assert {"Fn::GetAtt": [table, "Arn"]} in _walk(grant["Resource"])
    leading = grant["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    assert leading in ("AUDIT*", ["AUDIT*"])


@pytest.mark.parametrize("handler", [API, REPORT])
def test_the_readers_of_the_trail_may_not_write_to_the_table(
    resources: Resources, handler: str
) -> None:
    for statement in role_statements(resources, _role_of(resources, handler)):
        if statement["Effect"] != "Allow":
            continue
        writes = {a for a in _actions(statement) if a in TAMPERING | PUTTING or a == "dynamodb:*"}
        assert writes == set(), handler


# --- the API and the monthly report ---------------------------------------------------------------


def test_get_audit_is_behind_the_authorizer_and_served_by_the_audit_function(
    resources: Resources,
) -> None:
    (authorizer,) = of_type(resources, "AWS::ApiGateway::Authorizer")
    api, _ = function_named(resources, API)

    route = _routes(resources)["GET /audit"]

    assert route["AuthorizationType"] == "CUSTOM"
    assert route["AuthorizerId"] == {"Ref": authorizer}
    assert {"Fn::GetAtt": [api, "Arn"]} in _walk(route["Integration"]["Uri"])


def test_the_compliance_report_runs_at_six_in_the_morning_ist_on_the_first(
    resources: Resources,
) -> None:
    report, _ = function_named(resources, REPORT)
    (rule,) = [
        props
        for props in of_type(resources, "AWS::Events::Rule").values()
        if any(t["Arn"] == {"Fn::GetAtt": [report, "Arn"]} for t in props.get("Targets", []))
    ]

    assert rule["ScheduleExpression"] == "cron(30 0 1 * ? *)"  # 00:30 UTC = 06:00 IST
    assert rule["State"] == "ENABLED"

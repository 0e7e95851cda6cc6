"""Everything the template declares exists in moto after the deploy."""

from __future__ import annotations

import json
from typing import Any

from infra.local.deploy import Deployment, moto_template


def resources_of(deployment: Deployment, kind: str) -> list[str]:
    return [
        logical_id
        for logical_id, resource in deployment.template["Resources"].items()
        if resource["Type"] == kind
    ]


def test_every_table_exists(aws: Any, deployment: Deployment) -> None:
    for logical_id in resources_of(deployment, "AWS::DynamoDB::Table"):
        name = deployment.tables[logical_id]
        assert aws("dynamodb").describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"


def test_every_stream_exists(aws: Any, deployment: Deployment) -> None:
    logical_ids = resources_of(deployment, "AWS::Kinesis::Stream")
    assert logical_ids
    for logical_id in logical_ids:
        name = deployment.streams[logical_id]
        summary = aws("kinesis").describe_stream_summary(StreamName=name)
        assert summary["StreamDescriptionSummary"]["StreamName"] == name


def test_every_queue_exists(aws: Any, deployment: Deployment) -> None:
    logical_ids = resources_of(deployment, "AWS::SQS::Queue")
    assert len(logical_ids) == 3
    for logical_id in logical_ids:
        url = deployment.queues[logical_id]
        attributes = aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        assert attributes["Attributes"]["QueueArn"].endswith(url.rsplit("/", 1)[-1])


def test_every_bus_and_rule_exists(aws: Any, deployment: Deployment) -> None:
    events = aws("events")
    for logical_id in resources_of(deployment, "AWS::Events::EventBus"):
        assert events.describe_event_bus(Name=deployment.buses[logical_id])["Name"] == "fixture-bus"
    assert len(deployment.rules) == len(resources_of(deployment, "AWS::Events::Rule")) == 2
    for rule in deployment.rules:
        described = events.describe_rule(Name=rule.name, EventBusName=rule.bus_name)
        assert described["Name"] == rule.name


def test_every_state_machine_exists(aws: Any, deployment: Deployment) -> None:
    logical_ids = resources_of(deployment, "AWS::StepFunctions::StateMachine")
    assert logical_ids
    for logical_id in logical_ids:
        arn = deployment.state_machines[logical_id]
        assert (
            aws("stepfunctions").describe_state_machine(stateMachineArn=arn)["status"] == "ACTIVE"
        )


def test_functions_resolve_environment_and_code(deployment: Deployment) -> None:
    echo = next(f for f in deployment.functions.values() if f.logical_id.startswith("Echo"))

    assert echo.environment["TABLE_NAME"] == next(iter(deployment.tables.values()))
    assert echo.handler == "handlers.echo"
    assert echo.code_dir is not None
    assert echo.timeout_seconds == 5


def test_event_source_mappings_are_described_and_disabled_in_moto(
    aws: Any, deployment: Deployment
) -> None:
    kinds = {m.source_kind: m for m in deployment.event_source_mappings}
    kinesis = kinds["kinesis"]
    assert kinesis.batch_size == 50
    assert kinesis.bisect_on_error is True
    assert kinesis.maximum_retry_attempts == 2
    assert kinesis.report_batch_item_failures is True
    assert kinds["sqs"].source_url in deployment.queues.values()
    for mapping in aws("lambda").list_event_source_mappings()["EventSourceMappings"]:
        assert mapping["State"] != "Enabled"


def test_put_events_works_with_a_lambda_target_rule(aws: Any, deployment: Deployment) -> None:
    inbox = next(url for url in deployment.queues.values() if "Inbox" in url)
    entry = {
        "Source": "fixture.orders",
        "DetailType": "t",
        "Detail": "{}",
        "EventBusName": "fixture-bus",
    }

    result = aws("events").put_events(Entries=[entry])
    messages = aws("sqs").receive_message(QueueUrl=inbox, WaitTimeSeconds=1)

    assert result["FailedEntryCount"] == 0
    assert json.loads(messages["Messages"][0]["Body"])["source"] == "fixture.orders"


def test_rule_targets_keep_the_lambda_in_the_deployment_only(deployment: Deployment) -> None:
    order_rule = next(r for r in deployment.rules if r.event_pattern)
    deployed = moto_template(deployment.template)["Resources"][order_rule.logical_id]

    assert {":lambda:" in t.arn for t in order_rule.targets} == {True, False}
    assert len(deployed["Properties"]["Targets"]) == 1


def test_differences_are_listed(deployment: Deployment) -> None:
    assert any("authorizer" in note for note in deployment.differences)
    assert any("event source mappings" in note for note in deployment.differences)

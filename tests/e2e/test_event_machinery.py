"""Streams, workflows, schedules and pattern rules on the local runtime, proven
on the fixture stack until the modules that own such resources exist. The
fixture's echo handler records every call in its table."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from tests.e2e.conftest import LocalSystem, wait_for


def recorded_events(system: LocalSystem) -> list[dict[str, Any]]:
    (table,) = system.info["tables"]
    items = system.aws("dynamodb").scan(TableName=table)["Items"]
    return [json.loads(item["event"]["S"]) for item in items]


def test_a_kinesis_record_reaches_its_handler(fixture_system: LocalSystem) -> None:
    (stream,) = fixture_system.info["streams"]
    marker = uuid.uuid4().hex
    fixture_system.aws("kinesis").put_record(
        StreamName=stream, Data=json.dumps({"marker": marker}).encode(), PartitionKey="p"
    )

    def delivered() -> bool:
        return any(
            json.loads(base64.b64decode(record["kinesis"]["data"])) == {"marker": marker}
            for event in recorded_events(fixture_system)
            for record in event.get("Records", [])
            if "kinesis" in record
        )

    wait_for(delivered, what="the Kinesis record at the echo handler")


def test_a_state_machine_runs_the_real_handler(fixture_system: LocalSystem) -> None:
    sfn = fixture_system.aws("stepfunctions")
    (machine,) = fixture_system.info["state_machines"]
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"order": 42}))

    def finished() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        return described if described["status"] != "RUNNING" else None

    described = wait_for(finished, what="the execution to end")
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["event"] == {"order": 42}


def test_advancing_the_clock_fires_a_schedule(fixture_system: LocalSystem) -> None:
    output = fixture_system.cli("local", "clock", "advance", "--days", "1")
    assert "ok" in output

    def scheduled() -> list[dict[str, Any]]:
        return [e for e in recorded_events(fixture_system) if e.get("source") == "aws.events"]

    events = wait_for(scheduled, what="the daily rule's event at the handler")
    assert events[0]["detail-type"] == "Scheduled Event"


def test_a_pattern_rule_delivers_to_its_lambda_and_queue(fixture_system: LocalSystem) -> None:
    marker = uuid.uuid4().hex
    fixture_system.aws("events").put_events(
        Entries=[
            {
                "EventBusName": "fixture-bus",
                "Source": "fixture.orders",
                "DetailType": "OrderPlaced",
                "Detail": json.dumps({"marker": marker}),
            }
        ]
    )

    def at_the_handler() -> bool:
        return any(
            e.get("detail", {}).get("marker") == marker for e in recorded_events(fixture_system)
        )

    wait_for(at_the_handler, what="the event at the rule's Lambda target")
    inbox = next(url for url in fixture_system.info["queues"] if "Inbox" in url)
    messages = fixture_system.aws("sqs").receive_message(QueueUrl=inbox, WaitTimeSeconds=5)
    assert any(marker in m["Body"] for m in messages.get("Messages", []))

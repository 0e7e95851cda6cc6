"""The SQS poller against moto: event shape, deletes on success, partial batch
failures, redelivery after handler errors and redrive to the DLQ."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.contracts import InvocationResult
from infra.local.meter import local_session
from infra.local.pollers import EventSourcePollers, SqsPoller
from tests.local.events.conftest import FAST
from tests.local.events.support import (
    ACCOUNT,
    REGION,
    FakeInvoker,
    deployment,
    handler_error,
    item_failures,
    mapping,
)


def _queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def _counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def _bodies(payload: dict[str, Any]) -> list[str]:
    return [record["body"] for record in payload["Records"]]


@pytest.fixture
def started() -> Iterator[list[EventSourcePollers]]:
    running: list[EventSourcePollers] = []
    yield running
    for pollers in running:
        pollers.stop()


def _start(
    started: list[EventSourcePollers], spec: Any, invoker: FakeInvoker
) -> EventSourcePollers:
    pollers = EventSourcePollers(
        deployment(mappings=[spec]), invoker, endpoint_url=None, region=REGION, settings=FAST
    )
    started.append(pollers)
    pollers.start()
    return pollers


def test_success_deletes_the_batch_and_the_event_has_lambdas_shape(
    aws: dict[str, Any], started: list[EventSourcePollers]
) -> None:
    sqs = aws["sqs"]
    url, arn = _queue(sqs, "billing-jobs")
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody='{"user_id": "u-1"}',
        MessageAttributes={"cycle": {"DataType": "String", "StringValue": "2026-12"}},
    )
    for index in range(4):
        sqs.send_message(QueueUrl=url, MessageBody=f"job-{index}")
    invoker = FakeInvoker()

    pollers = _start(started, mapping(arn, batch_size=10, source_url=url), invoker)

    assert pollers.drain(10)
    assert _counts(sqs, url) == (0, 0)
    calls = invoker.snapshot()
    assert sorted(b for call in calls for b in _bodies(call.payload)) == sorted(
        ['{"user_id": "u-1"}', "job-0", "job-1", "job-2", "job-3"]
    )
    record = next(
        r for call in calls for r in call.payload["Records"] if r["messageId"] == sent["MessageId"]
    )
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["awsRegion"] == REGION
    assert record["receiptHandle"]
    assert record["md5OfBody"] == sent["MD5OfMessageBody"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert "SentTimestamp" in record["attributes"]
    assert record["messageAttributes"]["cycle"] == {
        "stringValue": "2026-12",
        "binaryValue": None,
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }


def test_batch_size_limits_records_per_invocation(
    aws: dict[str, Any], started: list[EventSourcePollers]
) -> None:
    sqs = aws["sqs"]
    url, arn = _queue(sqs, "small-batches")
    for index in range(7):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{index}")
    invoker = FakeInvoker()

    pollers = _start(started, mapping(arn, batch_size=3), invoker)

    assert pollers.drain(10)
    sizes = [len(call.payload["Records"]) for call in invoker.snapshot()]
    assert sum(sizes) == 7
    assert max(sizes) <= 3


def test_handler_error_deletes_nothing_and_the_message_comes_back(
    aws: dict[str, Any], started: list[EventSourcePollers]
) -> None:
    sqs = aws["sqs"]
    url, arn = _queue(sqs, "retry-me", VisibilityTimeout="1")
    sqs.send_message(QueueUrl=url, MessageBody="flaky")
    answers = iter([handler_error("downstream timeout")])
    invoker = FakeInvoker(lambda _n, _p: next(answers, InvocationResult(None)))

    pollers = _start(started, mapping(arn), invoker)

    assert pollers.drain(10)
    receive_counts = [
        call.payload["Records"][0]["attributes"]["ApproximateReceiveCount"]
        for call in invoker.snapshot()
    ]
    assert receive_counts == ["1", "2"]
    assert _counts(sqs, url) == (0, 0)


def test_partial_failure_keeps_only_failed_messages_which_redrive_to_the_dlq(
    aws: dict[str, Any], started: list[EventSourcePollers]
) -> None:
    sqs = aws["sqs"]
    dlq_url, dlq_arn = _queue(sqs, "usage-dlq")
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url, arn = _queue(sqs, "usage", VisibilityTimeout="1", RedrivePolicy=redrive)
    for body in ("good-1", "poison", "good-2"):
        sqs.send_message(QueueUrl=url, MessageBody=body)

    def fail_poison(_name: str, payload: dict[str, Any]) -> InvocationResult:
        failed = [r["messageId"] for r in payload["Records"] if r["body"] == "poison"]
        return item_failures(failed)

    invoker = FakeInvoker(fail_poison)
    began = time.monotonic()
    pollers = _start(started, mapping(arn, report=True), invoker)

    assert pollers.drain(15)
    assert time.monotonic() - began < 10
    delivered = [b for call in invoker.snapshot() for b in _bodies(call.payload)]
    assert sorted(delivered) == ["good-1", "good-2", "poison", "poison"]  # maxReceiveCount 2
    assert _counts(sqs, url) == (0, 0)
    in_dlq = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert [message["Body"] for message in in_dlq] == ["poison"]


def test_report_batch_item_failures_off_ignores_the_report(
    aws: dict[str, Any], started: list[EventSourcePollers]
) -> None:
    sqs = aws["sqs"]
    url, arn = _queue(sqs, "no-report", VisibilityTimeout="1")
    sqs.send_message(QueueUrl=url, MessageBody="m")
    invoker = FakeInvoker(lambda _n, payload: item_failures([payload["Records"][0]["messageId"]]))

    pollers = _start(started, mapping(arn, report=False), invoker)

    assert pollers.drain(10)
    assert len(invoker.snapshot()) == 1
    assert _counts(sqs, url) == (0, 0)


def test_drain_waits_for_work_a_handler_hands_to_another_queue(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Default long polls: a drain looks at the queues itself. The first queue's
    # batch is deleted (its counters zero) a while before its poller counts the
    # work done; the message its handler sent on must not be missed meanwhile.
    sqs = aws["sqs"]
    first_url, first_arn = _queue(sqs, "first")
    second_url, second_arn = _queue(sqs, "second")
    finished: list[str] = []

    def behaviour(function_name: str, payload: Any) -> InvocationResult:
        time.sleep(0.2)
        for body in _bodies(payload):
            if function_name == "tbcss-First":
                sqs.send_message(QueueUrl=second_url, MessageBody=f"after {body}")
            else:
                finished.append(body)
        return InvocationResult(payload=None)

    settle = SqsPoller._settle

    def slow_to_count(poller: SqsPoller, *args: Any) -> None:
        settle(poller, *args)
        if poller.source_name == "first":
            time.sleep(0.5)

    monkeypatch.setattr(SqsPoller, "_settle", slow_to_count)
    specs = [
        mapping(first_arn, function_name="tbcss-First", batch_size=1),
        mapping(second_arn, function_name="tbcss-Second", batch_size=1),
    ]
    invoker = FakeInvoker(behaviour=behaviour)
    pollers = EventSourcePollers(
        deployment(mappings=specs), invoker, endpoint_url=None, region=REGION
    )
    pollers.start()
    try:
        for round_number in range(2):
            sqs.send_message(QueueUrl=first_url, MessageBody=f"job-{round_number}")
            time.sleep(0.1)  # the first handler is at work when the drain begins
            assert pollers.drain(20)
            assert finished == [f"after job-{n}" for n in range(round_number + 1)]
    finally:
        pollers.stop()


def test_stop_is_prompt_with_the_default_long_poll(aws: dict[str, Any]) -> None:
    _url, arn = _queue(aws["sqs"], "idle")
    pollers = EventSourcePollers(
        deployment(mappings=[mapping(arn)]), FakeInvoker(), endpoint_url=None, region=REGION
    )
    pollers.start()
    time.sleep(0.2)

    began = time.monotonic()
    pollers.stop()

    assert time.monotonic() - began < 2.0


def test_disabled_and_unsupported_mappings_are_not_polled(aws: dict[str, Any]) -> None:
    _url, arn = _queue(aws["sqs"], "off")
    disabled = mapping(arn).__class__(**{**mapping(arn).__dict__, "enabled": False})
    stream = mapping(f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t/stream/2026")
    pollers = EventSourcePollers(
        deployment(mappings=[disabled, stream]), FakeInvoker(), endpoint_url=None, region=REGION
    )
    assert pollers.mapping_ids == []
    assert pollers.drain(1)


def test_local_sessions_need_no_configured_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    credentials = local_session("http://127.0.0.1:5000").get_credentials()

    assert credentials is not None
    assert credentials.access_key == "local"

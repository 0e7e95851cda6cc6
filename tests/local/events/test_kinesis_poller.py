"""The Kinesis poller against moto: batching, the event shape, checkpoints on
partial failure, bisection, retries and the on-failure destination."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.contracts import InvocationResult
from infra.local.pollers import EventSourcePollers
from tests.local.events.conftest import FAST
from tests.local.events.support import (
    REGION,
    FakeInvoker,
    deployment,
    handler_error,
    item_failures,
    mapping,
)


def _stream(kinesis: Any, name: str = "cdrs") -> str:
    kinesis.create_stream(StreamName=name, ShardCount=1)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    return str(summary["StreamARN"])


def _put(kinesis: Any, arn: str, values: list[str]) -> dict[str, str]:
    """Put records in order; returns value -> sequence number."""
    sequences = {}
    for value in values:
        put = kinesis.put_record(StreamARN=arn, Data=value.encode(), PartitionKey="msisdn-1")
        sequences[value] = put["SequenceNumber"]
    return sequences


def _values(payload: dict[str, Any]) -> list[str]:
    return [base64.b64decode(r["kinesis"]["data"]).decode() for r in payload["Records"]]


@pytest.fixture
def run_pollers() -> Iterator[list[EventSourcePollers]]:
    started: list[EventSourcePollers] = []
    yield started
    for pollers in started:
        pollers.stop()


def _start(run_pollers: list[EventSourcePollers], spec: Any, invoker: FakeInvoker) -> Any:
    pollers = EventSourcePollers(
        deployment(mappings=[spec]), invoker, endpoint_url=None, region=REGION, settings=FAST
    )
    run_pollers.append(pollers)
    pollers.start()
    return pollers


def test_25_records_batch_size_10_arrive_in_3_invocations_exactly_once(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    arn = _stream(aws["kinesis"])
    values = [f"cdr-{i:02d}" for i in range(25)]
    sequences = _put(aws["kinesis"], arn, values)
    invoker = FakeInvoker()

    pollers = _start(run_pollers, mapping(arn, batch_size=10), invoker)

    assert pollers.drain(10)
    calls = invoker.snapshot()
    assert [len(call.payload["Records"]) for call in calls] == [10, 10, 5]
    assert [v for call in calls for v in _values(call.payload)] == values
    assert {call.function_name for call in calls} == {"tbcss-Consumer"}
    record = calls[0].payload["Records"][0]
    assert record["eventSource"] == "aws:kinesis"
    assert record["eventName"] == "aws:kinesis:record"
    assert record["eventVersion"] == "1.0"
    assert record["eventSourceARN"] == arn
    assert record["awsRegion"] == REGION
    assert record["eventID"] == f"shardId-000000000000:{sequences['cdr-00']}"
    assert record["invokeIdentityArn"].startswith("arn:aws:iam::123456789012:role/")
    assert record["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert record["kinesis"]["partitionKey"] == "msisdn-1"
    assert record["kinesis"]["sequenceNumber"] == sequences["cdr-00"]
    arrival = record["kinesis"]["approximateArrivalTimestamp"]
    assert isinstance(arrival, float)
    assert abs(arrival - time.time()) < 60


def test_a_batch_stops_short_of_lambdas_6_mb_payload_limit(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    # 900 KB records are 1.2 MB each in the event (base64): five fit in 6 MB, six do not.
    arn = _stream(aws["kinesis"])
    values = [f"{i:02d}" + "x" * 900 * 1024 for i in range(12)]
    _put(aws["kinesis"], arn, values)
    invoker = FakeInvoker()

    pollers = _start(run_pollers, mapping(arn, batch_size=100, window=1), invoker)

    assert pollers.drain(20)
    calls = invoker.snapshot()
    assert [v for call in calls for v in _values(call.payload)] == values
    assert max(len(call.payload["Records"]) for call in calls) == 5
    assert all(len(json.dumps(call.payload)) <= 6 * 1024 * 1024 for call in calls)


def test_latest_starting_position_skips_records_put_before_start(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    arn = _stream(aws["kinesis"])
    _put(aws["kinesis"], arn, ["old"])
    invoker = FakeInvoker()
    pollers = _start(run_pollers, mapping(arn, starting_position="LATEST"), invoker)
    assert pollers.drain(5)

    _put(aws["kinesis"], arn, ["new"])

    assert pollers.drain(5)
    assert [v for call in invoker.snapshot() for v in _values(call.payload)] == ["new"]


def test_partial_failure_resumes_at_the_failed_sequence_number(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    arn = _stream(aws["kinesis"])
    values = [f"cdr-{i:02d}" for i in range(12)]
    sequences = _put(aws["kinesis"], arn, values)
    failed_once: list[str] = []

    def fail_cdr_04_once(_name: str, payload: Any) -> InvocationResult:
        if "cdr-04" in _values(payload) and not failed_once:
            failed_once.append("cdr-04")
            # The handler reports 04 and 06: Kinesis resumes at the lowest.
            return item_failures([sequences["cdr-06"], sequences["cdr-04"]])
        return InvocationResult(payload={"batchItemFailures": []})

    invoker = FakeInvoker(fail_cdr_04_once)
    pollers = _start(run_pollers, mapping(arn, batch_size=10, report=True), invoker)

    assert pollers.drain(10)
    batches = [_values(call.payload) for call in invoker.snapshot()]
    assert batches == [values[0:10], values[4:10], values[10:12]]
    delivered = [v for batch in batches for v in batch]
    assert all(delivered.count(v) == 1 for v in values[:4])  # checkpointed, never again


def test_unknown_item_identifier_fails_the_whole_batch(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    arn = _stream(aws["kinesis"])
    _put(aws["kinesis"], arn, ["a", "b"])
    answers = iter([item_failures(["no-such-sequence"])])
    invoker = FakeInvoker(lambda _n, _p: next(answers, InvocationResult(payload=None)))

    pollers = _start(run_pollers, mapping(arn, report=True), invoker)

    assert pollers.drain(10)
    assert [_values(call.payload) for call in invoker.snapshot()] == [["a", "b"], ["a", "b"]]


def test_poison_record_bisects_then_lands_on_the_failure_queue_and_the_shard_moves_on(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    sqs = aws["sqs"]
    failures_url = sqs.create_queue(QueueName="cdr-failures")["QueueUrl"]
    failures_arn = f"arn:aws:sqs:{REGION}:123456789012:cdr-failures"
    arn = _stream(aws["kinesis"])
    values = [f"cdr-{i:02d}" for i in range(10)]
    sequences = _put(aws["kinesis"], arn, values)

    def poison(_name: str, payload: Any) -> InvocationResult:
        return handler_error("bad CDR") if "cdr-03" in _values(payload) else InvocationResult(None)

    invoker = FakeInvoker(poison)
    spec = mapping(arn, batch_size=10, bisect=True, retries=2, on_failure=failures_arn)
    pollers = _start(run_pollers, spec, invoker)
    assert pollers.drain(10)
    _put(aws["kinesis"], arn, ["cdr-later"])
    assert pollers.drain(10)

    batches = [_values(call.payload) for call in invoker.snapshot()]
    # [0-9] fails -> halves; [0-4] fails -> halves; [0,1] ok; [2,3,4] fails with
    # both retries spent -> given up; [5-9] ok; later records keep flowing.
    assert batches == [
        values,
        values[0:5],
        values[0:2],
        values[2:5],
        values[5:10],
        ["cdr-later"],
    ]
    messages = sqs.receive_message(QueueUrl=failures_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    failure = json.loads(messages[0]["Body"])
    assert failure["KinesisBatchInfo"] == {
        "shardId": "shardId-000000000000",
        "startSequenceNumber": sequences["cdr-02"],
        "endSequenceNumber": sequences["cdr-04"],
        "approximateArrivalOfFirstRecord": failure["KinesisBatchInfo"][
            "approximateArrivalOfFirstRecord"
        ],
        "approximateArrivalOfLastRecord": failure["KinesisBatchInfo"][
            "approximateArrivalOfLastRecord"
        ],
        "batchSize": 3,
        "streamArn": arn,
    }
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 3
    assert failure["requestContext"]["functionArn"].endswith(":function:tbcss-Consumer")
    assert failure["responseContext"]["functionError"] == "Unhandled"
    assert failure["KinesisBatchInfo"]["approximateArrivalOfFirstRecord"].endswith("Z")


def test_without_bisect_a_failing_batch_is_retried_whole_then_given_up(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers], caplog: pytest.LogCaptureFixture
) -> None:
    arn = _stream(aws["kinesis"])
    _put(aws["kinesis"], arn, ["x", "y"])
    invoker = FakeInvoker(lambda _n, _p: handler_error())

    pollers = _start(run_pollers, mapping(arn, retries=1), invoker)

    assert pollers.drain(10)
    assert [_values(call.payload) for call in invoker.snapshot()] == [["x", "y"], ["x", "y"]]
    assert "giving up on 2 record(s)" in caplog.text
    assert "no on-failure destination" in caplog.text


def test_window_waits_to_fill_a_batch(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    arn = _stream(aws["kinesis"])
    invoker = FakeInvoker()
    pollers = _start(
        run_pollers, mapping(arn, batch_size=100, window=1, starting_position="LATEST"), invoker
    )
    assert pollers.drain(5)

    _put(aws["kinesis"], arn, ["a"])
    time.sleep(0.3)
    _put(aws["kinesis"], arn, ["b", "c"])

    assert pollers.drain(5)
    assert [_values(call.payload) for call in invoker.snapshot()] == [["a", "b", "c"]]


def test_an_invoker_that_raises_does_not_kill_the_poller_nor_lose_records(
    aws: dict[str, Any], run_pollers: list[EventSourcePollers]
) -> None:
    arn = _stream(aws["kinesis"])
    _put(aws["kinesis"], arn, ["a", "b"])
    raised: list[bool] = []

    def crash_once(_name: str, _payload: Any) -> InvocationResult:
        if not raised:
            raised.append(True)
            raise ConnectionError("worker pipe closed")
        return InvocationResult(None)

    invoker = FakeInvoker(crash_once)
    pollers = _start(run_pollers, mapping(arn), invoker)

    assert pollers.drain(10)
    assert [_values(call.payload) for call in invoker.snapshot()] == [["a", "b"], ["a", "b"]]

"""The usage meter: requests as the moto shim sees them (synthetic WSGI
requests), and a known sequence of calls through the running runtime."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.test import EnvironBuilder

from infra.local.deploy import Deployment
from infra.local.meter import (
    RUNTIME_APP_ID,
    UsageMeter,
    UsageSnapshot,
    local_client,
    runtime_client_config,
)
from infra.local.runtime import LocalRuntime
from tests.local.conftest import function_named

REGION = "ap-south-1"
DEADLINE_SECONDS = 30


def environ(
    service: str,
    *,
    method: str = "POST",
    path: str = "/",
    target: str | None = None,
    body: Any = None,
    query: str = "",
    user_agent: str = "Boto3/1.44 md/Botocore#1.44",
    signed: bool = True,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    all_headers = {"User-Agent": user_agent, **(headers or {})}
    if signed:
        all_headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential=local/20261101/{REGION}/{service}/aws4_request, "
            "SignedHeaders=host, Signature=0"
        )
    if target:
        all_headers["X-Amz-Target"] = target
    data = json.dumps(body).encode() if body is not None else b""
    builder = EnvironBuilder(
        method=method, path=path, query_string=query, headers=all_headers, data=data
    )
    return builder.get_environ()


def metered(
    meter: UsageMeter, env: dict[str, Any], status: str = "200 OK", response: Any = None
) -> None:
    """One request through the meter, answered with ``status`` and ``response``."""
    call = meter.observe(env)
    assert call is not None
    call.capture(lambda *_: None)(status, [])
    body = json.dumps(response).encode() if response is not None else b""
    assert b"".join(call.finish([body])) == body  # the response passes unchanged


def usage(meter: UsageMeter) -> dict[str, Any]:
    return meter.snapshot().to_dict()


# --- synthetic requests ------------------------------------------------------------


COPY = {"x-amz-copy-source": "invoices/a.pdf"}


@pytest.mark.parametrize(
    ("request_line", "headers", "operation", "tier"),
    [
        ("PUT /invoices/2026/11/a.pdf", {}, "PutObject", "s3_tier1_requests"),
        ("PUT /invoices/b.pdf", COPY, "CopyObject", "s3_tier1_requests"),
        ("GET /invoices?list-type=2&prefix=2026", {}, "ListObjectsV2", "s3_tier1_requests"),
        ("GET /invoices/a.pdf", {}, "GetObject", "s3_tier2_requests"),
        ("HEAD /invoices/a.pdf", {}, "HeadObject", "s3_tier2_requests"),
        ("GET /invoices?location", {}, "GetBucketLocation", "s3_tier2_requests"),
        ("DELETE /invoices/a.pdf", {}, "DeleteObject", None),  # free
    ],
)
def test_s3_requests_by_tier(
    request_line: str, headers: dict[str, str], operation: str, tier: str | None
) -> None:
    method, _, target = request_line.partition(" ")
    path, _, query = target.partition("?")
    meter = UsageMeter()

    metered(meter, environ("s3", method=method, path=path, query=query, headers=headers))

    counted = usage(meter)
    assert counted["requests"] == {"s3": {operation: 1}}
    billed = {name: value for name, value in counted["units"].items() if value}
    assert billed == ({tier: 1} if tier else {})


def test_a_presigned_url_is_metered_by_its_query_credential() -> None:
    credential = f"local%2F20261101%2F{REGION}%2Fs3%2Faws4_request"
    env = environ(
        "s3",
        method="GET",
        path="/invoices/a.pdf",
        query=f"X-Amz-Credential={credential}&X-Amz-Signature=0",
        signed=False,
    )
    meter = UsageMeter()

    metered(meter, env)

    assert usage(meter)["requests"] == {"s3": {"GetObject": 1}}
    assert usage(meter)["units"]["s3_tier2_requests"] == 1


def test_sqs_bills_each_call_per_64_kb_of_messages() -> None:
    entries = [{"Id": str(n), "MessageBody": "x" * 40_000} for n in range(2)]
    meter = UsageMeter()

    metered(meter, environ("sqs", target="AmazonSQS.SendMessageBatch", body={"Entries": entries}))
    metered(meter, environ("sqs", target="AmazonSQS.DeleteMessage", body={"QueueUrl": "q"}))
    received = {"Messages": [{"Body": "y" * 70_000}]}
    metered(meter, environ("sqs", target="AmazonSQS.ReceiveMessage", body={}), response=received)

    counted = usage(meter)
    assert counted["requests"]["sqs"] == {
        "SendMessageBatch": 1,
        "DeleteMessage": 1,
        "ReceiveMessage": 1,
    }
    assert counted["units"]["sqs_requests"] == 2 + 1 + 2  # 80 KB, nothing, 70 KB


def test_kinesis_and_eventbridge_puts() -> None:
    meter = UsageMeter()
    records = [{"Data": "eA==", "PartitionKey": "p"}] * 3
    entries = [{"Source": "tbcss.usage", "DetailType": "UsageRated", "Detail": "{}"}] * 2

    metered(
        meter,
        environ("kinesis", target="Kinesis_20131202.PutRecords", body={"Records": records}),
    )
    metered(meter, environ("events", target="AWSEvents.PutEvents", body={"Entries": entries}))
    failed = environ("events", target="AWSEvents.PutEvents", body={"Entries": entries})
    metered(meter, failed, status="400 Bad Request", response={"__type": "ValidationException"})

    counted = usage(meter)
    assert counted["units"]["kinesis_put_payload_units"] == 3
    assert counted["units"]["eventbridge_events"] == 2  # the failed request put nothing
    assert counted["requests"]["events"] == {"PutEvents": 2}


def test_the_runtimes_own_requests_are_counted_but_not_billed() -> None:
    meter = UsageMeter()
    agent = f"Boto3/1.44 {RUNTIME_APP_ID}"

    metered(meter, environ("sqs", target="AmazonSQS.ReceiveMessage", user_agent=agent, body={}))
    metered(meter, environ("sqs", target="AmazonSQS.ReceiveMessage", body={}))

    counted = usage(meter)
    assert counted["requests"] == {"sqs": {"ReceiveMessage": 2}}
    assert counted["unbilled_requests"] == {"sqs": {"ReceiveMessage": 1}}
    assert counted["units"]["sqs_requests"] == 1


def test_the_runtime_client_config_carries_the_marker() -> None:
    assert RUNTIME_APP_ID in (runtime_client_config().user_agent_extra or "")


def test_operations_from_the_query_protocol_and_rest_paths() -> None:
    meter = UsageMeter()
    form = EnvironBuilder(
        method="POST",
        path="/",
        data="Action=Publish&TopicArn=t&Message=otp",
        content_type="application/x-www-form-urlencoded",
        headers=environ_headers("sns"),
    ).get_environ()

    metered(meter, form)
    metered(meter, environ("lambda", path="/2015-03-31/functions/fn/invocations", body={}))

    assert usage(meter)["requests"] == {"sns": {"Publish": 1}, "lambda": {"Invoke": 1}}


def environ_headers(service: str) -> dict[str, str]:
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=local/20261101/{REGION}/{service}/"
        "aws4_request, SignedHeaders=host, Signature=0",
    }


@pytest.mark.parametrize(("method", "path"), [("POST", "/moto-api/config"), ("GET", "/_tbcss/sms")])
def test_moto_and_shim_endpoints_are_not_aws_requests(method: str, path: str) -> None:
    assert UsageMeter().observe(environ("s3", method=method, path=path)) is None


def test_snapshots_subtract_and_serialize() -> None:
    meter = UsageMeter()
    meter.record_invocation("rating", 1024, 0.25)
    before = meter.snapshot()
    meter.record_invocation("rating", 1024, 0.5)
    meter.record_invocation("billing", 512, 0.0015)
    meter.record_api_request("GET /plans", billed=True)
    meter.record_api_request("GET (no route)", billed=False)
    meter.record_transitions(3)

    phase = (meter.snapshot() - before).to_dict()

    assert phase["units"] == {
        "dynamodb_read_request_units": 0.0,
        "dynamodb_write_request_units": 0.0,
        "lambda_requests": 2,
        "lambda_gb_seconds": (500 * 1024 + 2 * 512) / 1024 / 1000,
        "kinesis_put_payload_units": 0,
        "sqs_requests": 0,
        "eventbridge_events": 0,
        "stepfunctions_state_transitions": 3,
        "s3_tier1_requests": 0,
        "s3_tier2_requests": 0,
        "apigateway_requests": 1,
    }
    assert phase["requests"] == {"apigateway": {"GET /plans": 1, "GET (no route)": 1}}
    assert phase["unbilled_requests"] == {"apigateway": {"GET (no route)": 1}}
    assert phase["lambda_functions"] == {
        "billing": {"invocations": 1, "gb_seconds": 2 * 512 / 1024 / 1000},
        "rating": {"invocations": 1, "gb_seconds": 500 * 1024 / 1024 / 1000},
    }
    assert json.loads(json.dumps(phase)) == phase
    assert (before - before).to_dict()["requests"] == {}
    assert UsageSnapshot().units()["lambda_requests"] == 0


# --- through the running runtime -----------------------------------------------------


@pytest.fixture
def table(deployment: Deployment) -> str:
    return str(next(iter(deployment.tables.values())))


def test_a_known_sequence_of_calls_is_metered_exactly(
    runtime: LocalRuntime, aws: Any, table: str, deployment: Deployment
) -> None:
    dynamodb = aws("dynamodb")
    key = {"PK": {"S": f"METER#{uuid.uuid4().hex[:8]}"}}  # 2 + 14 bytes
    item = {**key, "blob": {"S": "x" * 1500}}  # + 4 + 1500: 1,520 bytes, 2 KB
    before = runtime.meter.snapshot()

    dynamodb.put_item(TableName=table, Item=item)  # 2 WRU
    dynamodb.get_item(TableName=table, Key=key)  # 0.5 RRU
    dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)  # 1 RRU
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        # A failed condition is billed as a write of the item as it is: 2 WRU.
        dynamodb.put_item(
            TableName=table, Item=item, ConditionExpression="attribute_not_exists(PK)"
        )
    dynamodb.update_item(  # grows the item to 1,520 + 4 + 600 bytes: 3 WRU
        TableName=table,
        Key=key,
        UpdateExpression="SET more = :m",
        ExpressionAttributeValues={":m": {"S": "y" * 600}},
    )
    dynamodb.get_item(TableName=table, Key={"PK": {"S": "METER#none"}})  # a miss: 0.5 RRU
    response = requests.get(f"{runtime.api_url}/public", timeout=30)

    phase = (runtime.meter.snapshot() - before).to_dict()
    assert response.status_code == 200
    assert phase["requests"]["dynamodb"] == {"PutItem": 2, "GetItem": 3, "UpdateItem": 1}
    assert phase["requests"]["apigateway"] == {"GET /public": 1}
    api_function = function_named(deployment, "ApiFn")
    assert phase["lambda_functions"][api_function]["invocations"] == 1
    units = phase["units"]
    assert units["dynamodb_write_request_units"] == 2 + 2 + 3
    assert units["dynamodb_read_request_units"] == 0.5 + 1 + 0.5
    assert units["apigateway_requests"] == 1
    assert units["lambda_requests"] == 1
    memory_mb = deployment.function(api_function).memory_mb
    assert units["lambda_gb_seconds"] > 0
    mb_ms = round(units["lambda_gb_seconds"] * 1024 * 1000)
    assert mb_ms % memory_mb == 0  # whole milliseconds at the function's memory


def test_a_resent_transaction_is_billed_as_reads_of_its_items(
    runtime: LocalRuntime, aws: Any, table: str
) -> None:
    """DynamoDB answers a resend (same ClientRequestToken) without writing: it
    bills transactional reads of the items instead."""
    dynamodb = aws("dynamodb")
    item = {"PK": {"S": f"METER#{uuid.uuid4().hex[:8]}"}, "blob": {"S": "x" * 1500}}
    transaction = {"TransactItems": [{"Put": {"TableName": table, "Item": item}}]}
    token = uuid.uuid4().hex
    dynamodb.transact_write_items(**transaction, ClientRequestToken=token)
    before = runtime.meter.snapshot()

    dynamodb.transact_write_items(**transaction, ClientRequestToken=token)

    units = (runtime.meter.snapshot() - before).to_dict()["units"]
    assert units["dynamodb_write_request_units"] == 0
    assert units["dynamodb_read_request_units"] == 2  # one item of 2 KB: 1 unit, doubled


def test_the_runtimes_own_clients_are_not_billed(
    runtime: LocalRuntime, deployment: Deployment, table: str
) -> None:
    observer = local_client("dynamodb", runtime.endpoint_url, deployment.region)
    before = runtime.meter.snapshot()

    observer.get_item(TableName=table, Key={"PK": {"S": "METER#observer"}})

    phase = (runtime.meter.snapshot() - before).to_dict()
    assert phase["unbilled_requests"]["dynamodb"] == {"GetItem": 1}
    assert phase["units"]["dynamodb_read_request_units"] == 0


def test_the_pollers_requests_are_counted_but_not_billed(runtime: LocalRuntime) -> None:
    """The fixture's Kinesis poller reads its stream all the time, as a mapping does."""
    before = runtime.meter.snapshot()
    deadline = time.monotonic() + DEADLINE_SECONDS
    phase = (runtime.meter.snapshot() - before).to_dict()
    while "GetRecords" not in phase["requests"].get("kinesis", {}):
        assert time.monotonic() < deadline, "no GetRecords from the Kinesis poller"
        time.sleep(0.1)
        phase = (runtime.meter.snapshot() - before).to_dict()

    assert phase["unbilled_requests"]["kinesis"] == phase["requests"]["kinesis"]
    assert phase["units"]["kinesis_put_payload_units"] == 0


@pytest.fixture
def retrying_machine(aws: Any, deployment: Deployment) -> Iterator[str]:
    """A one-task workflow calling the failing fixture function, retried twice."""
    boom = deployment.function(function_named(deployment, "Boom"))
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": boom.arn, "Payload": {"why": "metering"}},
                "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2}],
                "End": True,
            }
        },
    }
    sfn = aws("stepfunctions")
    arn: str = sfn.create_state_machine(
        name=f"meter-retries-{uuid.uuid4().hex[:6]}",
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::{deployment.account}:role/meter",
    )["stateMachineArn"]
    yield arn
    sfn.delete_state_machine(stateMachineArn=arn)


def test_state_transitions_count_states_entered_and_retries(
    runtime: LocalRuntime, aws: Any, deployment: Deployment, retrying_machine: str
) -> None:
    sfn = aws("stepfunctions")
    (flow,) = deployment.state_machines.values()
    before = runtime.meter.snapshot()

    succeeded = _run(sfn, flow, {"order": 1})  # one Task state, no retry
    failed = _run(sfn, retrying_machine, {})  # one Task state, two retries

    phase = (runtime.meter.snapshot() - before).to_dict()
    assert (succeeded, failed) == ("SUCCEEDED", "FAILED")
    assert phase["units"]["stepfunctions_state_transitions"] == 1 + (1 + 2)
    assert phase["units"]["lambda_requests"] == 1 + 3  # each attempt is an invocation
    assert phase["requests"]["lambda"] == {"Invoke": 4}  # the interpreter calls Lambda's API


def _run(sfn: Any, machine: str, payload: Any) -> str:
    # Named: moto's executions without a name all share one ARN (".../None").
    execution = sfn.start_execution(
        stateMachineArn=machine, name=uuid.uuid4().hex, input=json.dumps(payload)
    )
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        status: str = sfn.describe_execution(executionArn=execution["executionArn"])["status"]
        if status != "RUNNING":
            return status
        time.sleep(0.1)
    raise AssertionError(f"execution still running after {DEADLINE_SECONDS} s")

"""moto with infra/local/moto_speedups.py installed (the runtime's server has
them): transactions stay all-or-nothing, queries answer as DynamoDB does."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local import moto_speedups
from infra.local.deploy import Deployment
from infra.local.meter import local_client
from infra.local.runtime import LocalRuntime
from tests.local.conftest import function_named

PARTITIONS = 3
ITEMS_PER_PARTITION = 7
WRITERS = 4
PUTS_PER_WRITER = 4
RECORDS_PER_PUT = 500  # PutRecords' limit: each put appends for a while


def _create_table(dynamodb: Any, *, sort_key: bool) -> str:
    name = f"speedups-{uuid.uuid4().hex[:8]}"
    keys = [("PK", "HASH"), *([("SK", "RANGE")] if sort_key else [])]
    attributes = [name for name, _ in keys] + (["G", "GS"] if sort_key else [])
    index = {
        "IndexName": "ByG",
        "KeySchema": [
            {"AttributeName": "G", "KeyType": "HASH"},
            {"AttributeName": "GS", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": kind} for key, kind in keys],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        BillingMode="PAY_PER_REQUEST",
        **({"GlobalSecondaryIndexes": [index]} if sort_key else {}),
    )
    return name


@pytest.fixture(params=[False, True], ids=["hash key", "hash and sort key"])
def table(request: pytest.FixtureRequest, aws: Any) -> Iterator[tuple[str, bool]]:
    dynamodb = aws("dynamodb")
    name = _create_table(dynamodb, sort_key=request.param)
    yield name, request.param
    dynamodb.delete_table(TableName=name)


def _key(sort_key: bool, partition: str, sort: str = "s") -> dict[str, Any]:
    return {"PK": {"S": partition}, **({"SK": {"S": sort}} if sort_key else {})}


def _everything(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["PK"]["S"], item.get("SK", {}).get("S", "")))


def test_a_cancelled_transaction_leaves_every_item_as_it_was(
    aws: Any, table: tuple[str, bool]
) -> None:
    dynamodb = aws("dynamodb")
    name, sort_key = table
    for partition in ("kept", "updated", "deleted"):
        dynamodb.put_item(TableName=name, Item={**_key(sort_key, partition), "v": {"N": "1"}})
    before = _everything(dynamodb, name)

    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": name, "Item": {**_key(sort_key, "new"), "v": {"N": "2"}}}},
                {
                    "Update": {
                        "TableName": name,
                        "Key": _key(sort_key, "updated"),
                        "UpdateExpression": "SET v = :v, extra = :v",
                        "ExpressionAttributeValues": {":v": {"N": "9"}},
                    }
                },
                {"Delete": {"TableName": name, "Key": _key(sort_key, "deleted")}},
                {
                    "ConditionCheck": {
                        "TableName": name,
                        "Key": _key(sort_key, "kept"),
                        "ConditionExpression": "v = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
            ]
        )

    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _everything(dynamodb, name) == before


def test_a_successful_transaction_writes_every_item(aws: Any, table: tuple[str, bool]) -> None:
    dynamodb = aws("dynamodb")
    name, sort_key = table
    dynamodb.put_item(TableName=name, Item={**_key(sort_key, "updated"), "v": {"N": "1"}})
    dynamodb.put_item(TableName=name, Item={**_key(sort_key, "deleted"), "v": {"N": "1"}})

    dynamodb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": name, "Item": {**_key(sort_key, "new"), "v": {"N": "2"}}}},
            {
                "Update": {
                    "TableName": name,
                    "Key": _key(sort_key, "updated"),
                    "UpdateExpression": "SET v = :v",
                    "ExpressionAttributeValues": {":v": {"N": "9"}},
                }
            },
            {"Delete": {"TableName": name, "Key": _key(sort_key, "deleted")}},
        ]
    )

    assert [(item["PK"]["S"], item["v"]["N"]) for item in _everything(dynamodb, name)] == [
        ("new", "2"),
        ("updated", "9"),
    ]


def test_transactions_conflicting_with_themselves_change_nothing(
    aws: Any, table: tuple[str, bool]
) -> None:
    dynamodb = aws("dynamodb")
    name, sort_key = table
    put = {"Put": {"TableName": name, "Item": {**_key(sort_key, "twice"), "v": {"N": "1"}}}}

    with pytest.raises(ClientError):  # two actions on one item: refused as a whole
        dynamodb.transact_write_items(TransactItems=[put, put])

    assert _everything(dynamodb, name) == []


@pytest.fixture
def indexed_table(aws: Any) -> Iterator[str]:
    """Partitions p0..p2 of 7 items each; the index groups them by parity, sorted by GS."""
    dynamodb = aws("dynamodb")
    name = _create_table(dynamodb, sort_key=True)
    for p in range(PARTITIONS):
        for n in range(ITEMS_PER_PARTITION):
            item = {
                "PK": {"S": f"p{p}"},
                "SK": {"S": f"s{ITEMS_PER_PARTITION - n:02d}"},  # written out of order
                "G": {"S": f"g{n % 2}"},
                "GS": {"S": f"{(n * 7 + p) % 5}"},  # ties: moto orders them by the table key
            }
            dynamodb.put_item(TableName=name, Item=item)
    yield name
    dynamodb.delete_table(TableName=name)


def test_a_table_query_reads_the_partition_in_sort_key_order(aws: Any, indexed_table: str) -> None:
    dynamodb = aws("dynamodb")

    forward = dynamodb.query(
        TableName=indexed_table,
        KeyConditionExpression="PK = :p AND SK > :after",
        ExpressionAttributeValues={":p": {"S": "p1"}, ":after": {"S": "s03"}},
    )["Items"]
    backward = dynamodb.query(
        TableName=indexed_table,
        KeyConditionExpression="PK = :p",
        ExpressionAttributeValues={":p": {"S": "p2"}},
        ScanIndexForward=False,
        Limit=2,
    )["Items"]

    assert [item["SK"]["S"] for item in forward] == ["s04", "s05", "s06", "s07"]
    assert [(item["PK"]["S"], item["SK"]["S"]) for item in backward] == [
        ("p2", "s07"),
        ("p2", "s06"),
    ]


def test_an_index_query_pages_through_its_partition_in_index_order(
    aws: Any, indexed_table: str
) -> None:
    dynamodb = aws("dynamodb")
    everything = _everything(dynamodb, indexed_table)
    expected = sorted(
        (item["GS"]["S"], item["PK"]["S"], item["SK"]["S"])
        for item in everything
        if item["G"]["S"] == "g1"
    )

    found: list[tuple[str, str]] = []
    start: dict[str, Any] | None = None
    while True:
        page = dynamodb.query(
            TableName=indexed_table,
            IndexName="ByG",
            KeyConditionExpression="G = :g",
            ExpressionAttributeValues={":g": {"S": "g1"}},
            Limit=4,
            **({"ExclusiveStartKey": start} if start else {}),
        )
        found += [(item["PK"]["S"], item["SK"]["S"]) for item in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if start is None:
            break

    assert found == [(pk, sk) for _, pk, sk in expected]
    assert len(found) == PARTITIONS * (ITEMS_PER_PARTITION // 2)


def _index_keys(dynamodb: Any, table: str, group: str) -> list[tuple[str, str]]:
    items = dynamodb.query(
        TableName=table,
        IndexName="ByG",
        KeyConditionExpression="G = :g",
        ExpressionAttributeValues={":g": {"S": group}},
    )["Items"]
    return sorted((item["PK"]["S"], item["SK"]["S"]) for item in items)


def test_an_index_query_sees_every_kind_of_write_since_the_last_one(
    aws: Any, indexed_table: str
) -> None:
    """The speedup groups the items by the index key once and keeps that until a
    write: each write below must show in the very next query."""
    dynamodb = aws("dynamodb")
    before = _index_keys(dynamodb, indexed_table, "g1")
    assert _index_keys(dynamodb, indexed_table, "g1") == before  # answered from the grouping

    new = {"PK": {"S": "p9"}, "SK": {"S": "s01"}, "G": {"S": "g1"}, "GS": {"S": "0"}}
    dynamodb.put_item(TableName=indexed_table, Item=new)
    assert _index_keys(dynamodb, indexed_table, "g1") == sorted([*before, ("p9", "s01")])

    moved = {"PK": {"S": "p9"}, "SK": {"S": "s01"}}
    dynamodb.update_item(
        TableName=indexed_table,
        Key=moved,
        UpdateExpression="SET G = :g",
        ExpressionAttributeValues={":g": {"S": "g7"}},
    )
    assert _index_keys(dynamodb, indexed_table, "g1") == before
    assert _index_keys(dynamodb, indexed_table, "g7") == [("p9", "s01")]

    dynamodb.transact_write_items(
        TransactItems=[
            {"Delete": {"TableName": indexed_table, "Key": moved}},
            {"Put": {"TableName": indexed_table, "Item": {**new, "SK": {"S": "s02"}}}},
        ]
    )
    assert _index_keys(dynamodb, indexed_table, "g7") == []
    assert _index_keys(dynamodb, indexed_table, "g1") == sorted([*before, ("p9", "s02")])

    dynamodb.delete_item(TableName=indexed_table, Key={"PK": {"S": "p9"}, "SK": {"S": "s02"}})
    assert _index_keys(dynamodb, indexed_table, "g1") == before


def test_a_disabled_kinesis_mapping_runs_nothing_in_moto(aws: Any, deployment: Deployment) -> None:
    """moto would try Docker for each record (and log the failure in the function's
    log group); the runtime's poller is what delivers the records."""
    stream = next(iter(deployment.streams.values()))
    echo = function_named(deployment, "Echo")

    aws("kinesis").put_record(StreamName=stream, Data=b'{"speedups": 1}', PartitionKey="p")

    logs = aws("logs")
    try:
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{echo}")["events"]
    except logs.exceptions.ResourceNotFoundException:
        events = []
    assert not [event for event in events if "docker" in event["message"]]


def test_concurrent_puts_and_reads_of_one_shard_lose_nothing_and_never_fail(
    runtime: LocalRuntime, deployment: Deployment
) -> None:
    """moto's shard is not thread-safe, and its server is: reads walking the shard
    while puts append failed with a 500, and racing puts could share a number."""
    stream = f"speedups-{uuid.uuid4().hex[:8]}"
    once = Config(retries={"total_max_attempts": 1})  # a 500 must show, not be retried
    kinesis = local_client("kinesis", runtime.endpoint_url, deployment.region, config=once)
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    done = threading.Event()
    errors: list[Exception] = []

    def put(writer: int) -> None:
        client = local_client("kinesis", runtime.endpoint_url, deployment.region, config=once)
        for put in range(PUTS_PER_WRITER):
            records = [
                {"Data": f"{writer}-{put}-{number}".encode(), "PartitionKey": "p"}
                for number in range(RECORDS_PER_PUT)
            ]
            assert client.put_records(StreamName=stream, Records=records)["FailedRecordCount"] == 0

    def read() -> None:
        client = local_client("kinesis", runtime.endpoint_url, deployment.region, config=once)
        shard = client.describe_stream(StreamName=stream)["StreamDescription"]["Shards"][0]
        while not done.is_set():
            iterator = client.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            try:
                client.get_records(ShardIterator=iterator, Limit=10_000)
            except ClientError as error:
                errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    with ThreadPoolExecutor(WRITERS) as writers:
        list(writers.map(put, range(WRITERS)))
    done.set()
    reader.join()

    stored = _every_record(kinesis, stream)
    assert errors == []
    expected = [
        f"{writer}-{put}-{number}"
        for writer in range(WRITERS)
        for put in range(PUTS_PER_WRITER)
        for number in range(RECORDS_PER_PUT)
    ]
    assert sorted(stored) == sorted(expected)
    kinesis.delete_stream(StreamName=stream)


def _every_record(kinesis: Any, stream: str) -> list[str]:
    shard = kinesis.describe_stream(StreamName=stream)["StreamDescription"]["Shards"][0]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]
    return [record["Data"].decode() for record in records]


def test_sqs_reads_the_same_clock_as_moto(runtime: LocalRuntime) -> None:
    """Installed while the runtime runs: message visibility and delays keep their times."""
    import moto.sqs.models as sqs_models  # noqa: PLC0415 - loaded by the runtime's moto
    from moto.core.utils import unix_time_millis  # noqa: PLC0415

    moment = datetime(2026, 11, 26, 4, 1, 2, 345_000)  # naive UTC, as moto's are

    assert runtime.moto.shim is not None
    assert sqs_models.unix_time_millis is not unix_time_millis
    assert sqs_models.unix_time_millis(moment) == unix_time_millis(moment)
    assert abs(sqs_models.unix_time_millis() - unix_time_millis()) < 50


def test_an_input_transformer_reads_each_event_with_its_remembered_paths(aws: Any) -> None:
    """The compiled JSONPath expressions are shared by events; their values are not."""
    events, sqs = aws("events"), aws("sqs")
    name = f"speedups-{uuid.uuid4().hex[:8]}"
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    events.create_event_bus(Name=name)  # the deployment's rules are on the default bus
    events.put_rule(Name=name, EventBusName=name, EventPattern=json.dumps({"source": [name]}))
    transformer = {"InputPathsMap": {"who": "$.detail.who"}, "InputTemplate": '"<who> paid"'}
    target = {"Id": "queue", "Arn": arn["Attributes"]["QueueArn"], "InputTransformer": transformer}
    events.put_targets(Rule=name, EventBusName=name, Targets=[target])
    try:
        for who in ("asha", "ravi", "meera"):
            detail = json.dumps({"who": who})
            entry = {"EventBusName": name, "Source": name, "DetailType": "Paid", "Detail": detail}
            events.put_events(Entries=[entry])

        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        assert sorted(json.loads(m["Body"]) for m in messages) == [
            "asha paid",
            "meera paid",
            "ravi paid",
        ]
    finally:
        events.remove_targets(Rule=name, EventBusName=name, Ids=["queue"])
        events.delete_rule(Name=name, EventBusName=name)
        events.delete_event_bus(Name=name)
        sqs.delete_queue(QueueUrl=queue)


@dataclass
class _Value:
    value: str
    type: str = "S"


@dataclass
class _FakeItem:
    attrs: dict[str, _Value]


@dataclass
class _FakeTable:
    """moto's Table as the index reads it: hash key -> item (no sort key)."""

    items: dict[str, _FakeItem] = field(default_factory=dict)
    range_key_attr: None = None


def test_a_grouping_made_while_a_write_is_under_way_is_not_used_after_it() -> None:
    writes = moto_speedups._Writes()
    index = moto_speedups._IndexCache(writes)
    table = _FakeTable({"a": _FakeItem({"G": _Value("g1")})})
    wanted = [("G", _Value("g1"))]
    seen: list[int] = []

    def write_during_query() -> None:
        # The write is in flight while the query groups: the grouping must not outlive it.
        seen.append(len(index.candidates(table, wanted)))
        table.items["b"] = _FakeItem({"G": _Value("g1")})

    writes.counted(write_during_query)()

    assert seen == [1]
    assert len(index.candidates(table, wanted)) == 2  # grouped afresh after the write
    table.items["c"] = _FakeItem({"G": _Value("g1")})  # uncounted: a kept grouping shows
    assert len(index.candidates(table, wanted)) == 2

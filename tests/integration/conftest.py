"""moto fixtures: the table exactly as the CDK stack defines it, the event bus
routed to an SQS queue (so tests can read what was published), the seeded plan
catalog, and a client that calls the real plans handler with API Gateway events."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws  # before the handlers: moto must hook botocore first
from moto.core.botocore_stubber import BotocoreStubber

from functions.plans import handler as plans_handler
from shared import db
from shared.catalog import seed_plans
from shared.clock import FixedClock
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.settings import get_settings
from tests.apigw import Caller, HttpResult, api_event, lambda_context, parse_response

REGION = "ap-south-1"
# A Wednesday afternoon in IST; every test starts here unless it moves the clock.
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@dataclass
class Aws:
    dynamodb: Any
    events: Any
    sqs: Any
    table_name: str
    bus_name: str
    queue_url: str

    def tap(self, module: str) -> None:
        """Route the bus's events from ``tbcss.<module>`` to the tap queue (``published``)."""
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        rule = f"tap-{module}"
        self.events.put_rule(
            Name=rule,
            EventBusName=self.bus_name,
            EventPattern=json.dumps({"source": [f"tbcss.{module}"]}),
        )
        self.events.put_targets(
            Rule=rule, EventBusName=self.bus_name, Targets=[{"Id": "tap", "Arn": queue_arn}]
        )

    def published(self) -> list[dict[str, Any]]:
        """Every event delivered to the bus so far (drains the queue)."""
        return [json.loads(record["body"]) for record in self.drain(self.queue_url)]

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message on the queue (removed from it), as Lambda's SQS records."""
        records: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in batch:
                records.append(sqs_record(message["MessageId"], message["Body"]))
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return records

    def items(self, pk: str) -> list[dict[str, Any]]:
        response = self.dynamodb.query(
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ConsistentRead=True,
        )
        items: list[dict[str, Any]] = response["Items"]
        return items

    def sort_keys(self, pk: str) -> list[str]:
        return [item["SK"]["S"] for item in self.items(pk)]


def sqs_record(message_id: str, body: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1764064800000",
            "SenderId": "AIDA",
            "ApproximateFirstReceiveTimestamp": "1764064800000",
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:tbcss-test-queue",
        "awsRegion": REGION,
    }


def redelivered(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    records: list[dict[str, Any]],
    function_name: str,
) -> list[str]:
    """One invocation of an SQS worker over the records: the message ids SQS will
    deliver again (all of them when every record failed and the invocation did)."""
    try:
        result = handler({"Records": records}, lambda_context(function_name))
    except BatchProcessingError:
        return [record["messageId"] for record in records]
    return [failure["itemIdentifier"] for failure in result.get("batchItemFailures", [])]


def create_table(client: Any, name: str) -> None:
    """The table as infra/platform.py declares it (tests/infra checks that side)."""
    string = "S"
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": attr, "AttributeType": string}
            for attr in (db.PK, db.SK, db.GSI1PK, db.GSI1SK, db.GSI2PK, db.GSI2SK)
        ],
        KeySchema=[
            {"AttributeName": db.PK, "KeyType": "HASH"},
            {"AttributeName": db.SK, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": pk, "KeyType": "HASH"},
                    {"AttributeName": sk, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, pk, sk in ((db.GSI1, db.GSI1PK, db.GSI1SK), (db.GSI2, db.GSI2PK, db.GSI2SK))
        ],
    )
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": db.TTL_ATTRIBUTE},
    )


@dataclass(frozen=True)
class Clients:
    dynamodb: Any
    events: Any
    sqs: Any


@pytest.fixture(scope="session")
def clients() -> Clients:
    """Created once: a botocore client costs ~70 ms, and moto's hook serves it
    inside every later ``mock_aws`` (each of which starts from empty state)."""
    db.bind_table(get_settings().table_name, REGION)
    return Clients(
        *(boto3.client(name, region_name=REGION) for name in ("dynamodb", "events", "sqs"))
    )


@pytest.fixture
def aws(clients: Clients) -> Iterator[Aws]:
    """Fresh, empty AWS for each test: the table, the bus and a queue tapping the bus."""
    settings = get_settings()
    with mock_aws():
        create_table(clients.dynamodb, settings.table_name)
        clients.events.create_event_bus(Name=settings.event_bus_name)
        queue_url = clients.sqs.create_queue(QueueName="tbcss-test-events-tap")["QueueUrl"]
        tapped = Aws(
            clients.dynamodb,
            clients.events,
            clients.sqs,
            settings.table_name,
            settings.event_bus_name,
            queue_url,
        )
        tapped.tap("plans")
        yield tapped


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """One AWS request at a time, as a real service applies each one atomically:
    moto in-process does not lock, so threads racing on one item could both pass
    a condition that DynamoDB would let only one of them pass."""
    lock = threading.Lock()
    serve = BotocoreStubber.__call__

    def serialized(self: BotocoreStubber, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return serve(self, *args, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", serialized)


@pytest.fixture
def seeded(aws: Aws) -> Aws:
    """The table with the seed plan catalog in it."""
    db.DynamoPlanCatalog().save_all(seed_plans())
    return aws


@pytest.fixture
def store(aws: Aws) -> db.DynamoSubscriptionStore:
    return db.DynamoSubscriptionStore()


@pytest.fixture(scope="session")
def handler_clock() -> Iterator[FixedClock]:
    """The clock the plans handler sees. Its service factory is cached, so the
    clock is installed once and each test only sets the time."""
    fixed = FixedClock(T0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plans_handler, "system_clock", lambda: fixed)
        plans_handler.subscriptions.cache_clear()
        yield fixed
    plans_handler.subscriptions.cache_clear()


@pytest.fixture
def clock(handler_clock: FixedClock) -> FixedClock:
    handler_clock.advance(T0 - handler_clock.now())
    return handler_clock


MakeSubscriber = Callable[..., Subscriber]


@pytest.fixture
def make_subscriber(store: db.DynamoSubscriptionStore) -> MakeSubscriber:
    def make(
        user_id: str,
        subscriber_type: SubscriberType = SubscriberType.PREPAID,
        *,
        wallet_paise: int = 0,
        bill_cycle_day: int = 1,
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
    ) -> Subscriber:
        digits = f"{sum(user_id.encode()) * 7919 % 10**9:09d}"
        subscriber = Subscriber(
            user_id=user_id,
            msisdn=f"9{digits}",
            subscriber_type=subscriber_type,
            state="KA",
            status=status,
            bill_cycle_day=bill_cycle_day,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        store.put_subscriber(subscriber)
        if wallet_paise:
            store.credit_wallet(user_id, wallet_paise)
        return subscriber

    return make


class Api:
    """Calls the real plans handler the way API Gateway would."""

    def __init__(self) -> None:
        self.context = lambda_context("tbcss-test-plans")

    def call(self, method: str, path: str, **kwargs: Any) -> HttpResult:
        return parse_response(
            plans_handler.handler(api_event(method, path, **kwargs), self.context)
        )

    def post(
        self,
        path: str,
        body: Any,
        *,
        as_user: str | Caller | None,
        key: str | None = None,
        **kw: Any,
    ) -> HttpResult:
        caller = Caller(as_user) if isinstance(as_user, str) else as_user
        return self.call("POST", path, body=body, caller=caller, idempotency_key=key, **kw)

    def get(self, path: str, *, as_user: str | Caller | None = "reader", **kw: Any) -> HttpResult:
        caller = Caller(as_user) if isinstance(as_user, str) else as_user
        return self.call("GET", path, caller=caller, **kw)


@pytest.fixture
def api(seeded: Aws, clock: FixedClock) -> Api:
    return Api()


class ConflictingTransactions:
    """DynamoDB cancels the next ``times`` TransactWriteItems for a concurrent
    transaction (TransactionConflict on the first item), as it does under load."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.cancelled = 0
        self.sent = 0  # every TransactWriteItems, cancelled or not

    def __call__(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        self.sent += 1
        if not self.left:
            return None
        self.left -= 1
        self.cancelled += 1
        items = json.loads(params["body"])["TransactItems"]  # the serialized request
        reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing"}]
        reasons += [{"Code": "None"} for _ in items[1:]]
        cancelled = {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": reasons,
            "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {}},
        }
        return SimpleNamespace(status_code=400, headers={}), cancelled


@pytest.fixture
def conflicts(aws: Aws) -> Iterator[Callable[[int], ConflictingTransactions]]:
    # Any: botocore's stubs type handlers as returning None; a before-call handler
    # that returns a response stands in for the call, as the hook does.
    events: Any = db.connection().client.meta.events
    installed: list[ConflictingTransactions] = []

    def install(times: int) -> ConflictingTransactions:
        hook = ConflictingTransactions(times)
        events.register("before-call.dynamodb.TransactWriteItems", hook)
        installed.append(hook)
        return hook

    yield install
    for hook in installed:
        events.unregister("before-call.dynamodb.TransactWriteItems", hook)

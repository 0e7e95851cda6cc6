"""Usage rating against moto: the real rating handler with real adapters (the
table, an anomaly queue, the bus tapped into a queue), a fixed clock, and
helpers that build Kinesis events and subscribers with an active plan."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from functions.usage import handler as usage_api
from functions.usage import rating as rating_handler
from shared import db
from shared.clock import FixedClock
from shared.events import EventBridgePublisher, InMemoryEventPublisher
from shared.models import SubscriberType
from shared.queues import SqsAnomalySink
from shared.services.subscriptions import SubscriptionService
from shared.services.usage import RatingService
from shared.services.usage_report import UsageReport, UsageReports
from shared.stores.usage import DynamoRatingStore
from tests.apigw import lambda_context
from tests.integration.conftest import T0, Aws, MakeSubscriber

_sequence = itertools.count(1)


def kinesis_event(records: list[dict[str, Any] | str]) -> dict[str, Any]:
    """What Lambda hands the rating function: one record per CDR (dict) or raw text."""
    event_records = []
    for record in records:
        data = record if isinstance(record, str) else json.dumps(record)
        sequence = f"{next(_sequence):056d}"
        event_records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "p",
                    "sequenceNumber": sequence,
                    "data": base64.b64encode(data.encode()).decode(),
                    "approximateArrivalTimestamp": 1764064800.0,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{sequence}",
                "eventName": "aws:kinesis:record",
                "awsRegion": "ap-south-1",
                "eventSourceARN": "arn:aws:kinesis:ap-south-1:123456789012:stream/cdrs",
            }
        )
    return {"Records": event_records}


def cdr(
    msisdn: str,
    usage_type: str = "VOICE",
    quantity: int = 60,
    *,
    record_id: str | None = None,
    source: str = "MSC-1",
    at: datetime = T0 + timedelta(minutes=5),
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record_id": record_id or f"r{next(_sequence)}",
        "source": source,
        "msisdn": msisdn,
        "usage_type": usage_type,
        "started_at": at.isoformat(),
    }
    if usage_type == "DATA":
        record |= {"bytes_up": quantity // 4, "bytes_down": quantity - quantity // 4}
    elif usage_type == "VOICE":
        record["duration_seconds"] = quantity
    else:
        record["count"] = quantity
    return record


@dataclass
class Rating:
    """Calls the real rating handler; reads what it wrote and sent."""

    aws: Aws
    anomaly_queue_url: str
    clock: FixedClock
    containers: list[RatingService]
    new_service: Callable[[], RatingService]

    def restart(self) -> None:
        """A new Lambda container: nothing remembered in memory (after a crash)."""
        self.containers.append(self.new_service())

    def send(self, records: list[dict[str, Any] | str]) -> dict[str, Any]:
        return self.deliver(kinesis_event(records))

    def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = rating_handler.handler(event, lambda_context("tbcss-test-rating"))
        return result

    def report(self, user_id: str) -> UsageReport:
        return UsageReports(DynamoRatingStore(), self.clock).report(user_id)

    def anomalies(self) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            batch = self.aws.sqs.receive_message(
                QueueUrl=self.anomaly_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return seen
            for message in batch:
                seen.append(json.loads(message["Body"]))
                self.aws.sqs.delete_message(
                    QueueUrl=self.anomaly_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    def wallet(self, user_id: str) -> int:
        return db.DynamoSubscriptionStore().wallet_balance(user_id)


@pytest.fixture
def rating(seeded: Aws, clock: FixedClock) -> Iterator[Rating]:
    queue_url = seeded.sqs.create_queue(QueueName="tbcss-test-anomalies")["QueueUrl"]
    seeded.tap("usage")

    def new_service() -> RatingService:
        return RatingService(
            DynamoRatingStore(),
            SqsAnomalySink(seeded.sqs, queue_url),
            EventBridgePublisher(seeded.events, seeded.bus_name),
            clock,
        )

    containers = [new_service()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rating_handler, "service", lambda: containers[-1])
        patch.setattr(usage_api, "reports", lambda: UsageReports(DynamoRatingStore(), clock))
        yield Rating(seeded, queue_url, clock, containers, new_service)


Subscribe = Callable[..., str]


@pytest.fixture
def subscribed(make_subscriber: MakeSubscriber, clock: FixedClock) -> Subscribe:
    """A subscriber on a plan (started now); returns the MSISDN."""
    plans = SubscriptionService(
        db.DynamoPlanCatalog(), db.DynamoSubscriptionStore(), InMemoryEventPublisher(), clock
    )

    def subscribe(user_id: str, plan_id: str = "POST_BASIC_399", *, wallet_paise: int = 0) -> str:
        prepaid = plan_id.startswith("PRE")
        kind = SubscriberType.PREPAID if prepaid else SubscriberType.POSTPAID
        subscriber = make_subscriber(user_id, kind, wallet_paise=wallet_paise)
        plans.subscribe(user_id, plan_id)
        return subscriber.msisdn

    return subscribe

"""Usage rating end to end: 20,000 CDRs for 1,000 subscribers through the REAL
rating handler (functions.usage.rating) against in-process moto.

Prints CDRs/s, DynamoDB requests per 1,000 CDRs by operation (counted with a
botocore ``before-parameter-build`` event hook on every client), write capacity units per
CDR (COMPUTED from the written items' sizes by DynamoDB's rules: 1 WCU per KB,
doubled in transactions; moto does not report consumed capacity), and the pure
engine's CDRs/s on one core (bench/rating_engine.py's workload).

The first batches also build each subscriber's rating state (extra reads once
per subscriber per cycle); the steady-state line leaves that warm-up out.
``BENCH_CDRS``, ``BENCH_SUBSCRIBERS``, ``BENCH_BATCH`` override the sizes.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

os.environ.update(
    {
        "AWS_REGION": "ap-south-1",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "TABLE_NAME": "tbcss-bench",
        "EVENT_BUS_NAME": "tbcss-bench-events",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3
import botocore.session
from moto import mock_aws

from bench import rating_engine
from bench.results import Figure, write_results
from functions.usage import rating as rating_handler
from infra.local import moto_speedups
from shared import db
from shared.catalog import seed_plans
from shared.clock import FixedClock
from shared.events import EventBridgePublisher
from shared.models import Plan, SubscriberType
from shared.queues import SqsAnomalySink
from shared.rating import Cdr, rate_batch
from shared.services.usage import RatingService
from shared.stores.usage import DynamoRatingStore
from tests.integration.conftest import create_table

CDRS = int(os.environ.get("BENCH_CDRS", "20000"))
SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "1000"))
# Issue 5's figure: batches of 1,000; the deployed mapping (infra/usage.py
# RATING_BATCH_SIZE) takes up to 10,000, which only lowers requests per CDR.
BATCH = int(os.environ.get("BENCH_BATCH", "1000"))
DUPLICATE_RATE = 0.01
RESEND_WINDOW = 300  # a re-sent record repeats one of the last few hundred
UNKNOWN_RATE = 0.001
SEED = 20261125
NOW = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)  # rating_engine's CDRs start 2025-03-01 04:30 UTC
REGION = "ap-south-1"
TRANSACTION_WCU_FACTOR = 2
KB = 1024


class RequestCounter:
    """A botocore ``before-parameter-build`` hook (one per API call, with its
    parameters) on every client created while counting."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.write_units = 0

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.service_model.service_name != "dynamodb":
            return
        self.calls[model.name] += 1
        if model.name == "TransactWriteItems":
            self.write_units += sum(_transact_item_wcu(item) for item in params["TransactItems"])
        elif model.name in ("PutItem", "UpdateItem"):
            self.write_units += 1

    def reset(self) -> None:
        self.calls.clear()
        self.write_units = 0

    def register(self, events: Any) -> None:
        """Hook into one new client's event emitter (subclasses add hooks)."""
        events.register("before-parameter-build", self)

    @contextmanager
    def installed(self) -> Iterator[None]:
        original = botocore.session.Session.create_client

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            self.register(client.meta.events)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            botocore.session.Session.create_client = original  # type: ignore[method-assign]


def _transact_item_wcu(item: dict[str, Any]) -> int:
    (operation,) = item.values()
    if "Item" not in operation:
        return TRANSACTION_WCU_FACTOR  # a wallet update or check: a small item
    return TRANSACTION_WCU_FACTOR * math.ceil(_item_bytes(operation["Item"]) / KB)


def _item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (numbers ~ digits / 2 + 1)."""
    size = 0
    for name, value in item.items():
        ((kind, raw),) = value.items()
        size += len(name.encode())
        size += len(raw) // 2 + 1 if kind == "N" else len(str(raw).encode())
    return size


def create_resources() -> tuple[str, str]:
    create_table(boto3.client("dynamodb", region_name=REGION), os.environ["TABLE_NAME"])
    boto3.client("events", region_name=REGION).create_event_bus(Name=os.environ["EVENT_BUS_NAME"])
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="bench-anomalies")
    return os.environ["TABLE_NAME"], queue["QueueUrl"]


def seed_subscribers(rng: random.Random) -> list[str]:
    """Profiles, MSISDN index, active plans and wallets, written in batches."""
    plans = seed_plans()
    db.DynamoPlanCatalog().save_all(plans)
    msisdns = []
    started = NOW - timedelta(days=3)
    with db.Item.batch_write() as batch:
        for index in range(SUBSCRIBERS):
            user_id, msisdn = f"u{index:05d}", f"9{index:09d}"
            plan: Plan = rng.choice(plans)
            prepaid = plan.type is SubscriberType.PREPAID
            for item in _subscriber_items(
                user_id, msisdn, plan, started=started, prepaid=prepaid, rng=rng
            ):
                batch.save(item)
            msisdns.append(msisdn)
    return msisdns


def _subscriber_items(
    user_id: str, msisdn: str, plan: Plan, *, started: datetime, prepaid: bool, rng: random.Random
) -> list[db.Item]:
    from shared.models import Subscriber, SubscriberStatus, Subscription  # noqa: PLC0415

    subscriber = Subscriber(
        user_id=user_id,
        msisdn=msisdn,
        subscriber_type=plan.type,
        state="KA",
        status=SubscriberStatus.ACTIVE,
        created_at=started,
    )
    subscription = Subscription(
        subscription_id=f"s-{user_id}",
        user_id=user_id,
        plan_id=plan.plan_id,
        plan_type=plan.type,
        price_paise=plan.price_paise,
        started_at=started,
        valid_until=started + timedelta(days=plan.validity_days) if prepaid else None,
    )
    profile = db.SubscriberItem.from_domain(subscriber)
    profile.version = 1
    items: list[db.Item] = [
        profile,
        db.MsisdnItem(pk=f"MSISDN#{msisdn}", sk="MSISDN", entity="MSISDN", user_id=user_id),
        db.DynamoSubscriptionStore._active_item(subscription),
    ]
    if prepaid:
        wallet = rng.randrange(0, 50_000)
        items.append(
            db.WalletItem(
                pk=db.user_pk(user_id), sk="WALLET", entity="WALLET", balance_paise=wallet
            )
        )
    return items


def feed(rng: random.Random, msisdns: list[str]) -> list[bytes]:
    records: list[bytes] = []
    for index in range(CDRS):
        msisdn = msisdns[rng.randrange(len(msisdns))]
        if rng.random() < UNKNOWN_RATE:
            msisdn = f"60{rng.randrange(10**8):08d}"
        record = rating_engine.feed_record(rng, index, msisdn)
        records.append(json.dumps(record).encode())
        if rng.random() < DUPLICATE_RATE:  # the network re-sends a recent record
            records.append(records[max(0, len(records) - rng.randint(1, RESEND_WINDOW))])
    return records


def kinesis_events(records: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for start in range(0, len(records), BATCH):
        events.append(
            {
                "Records": [
                    {
                        "kinesis": {
                            "sequenceNumber": f"{start + i:056d}",
                            "partitionKey": "p",
                            "data": base64.b64encode(data).decode(),
                        },
                        "eventID": f"shardId-000000000000:{start + i:056d}",
                        "eventSource": "aws:kinesis",
                    }
                    for i, data in enumerate(records[start : start + BATCH])
                ]
            }
        )
    return events


class _Context:
    function_name = "bench-rating"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:bench-rating"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def run_handler(counter: RequestCounter) -> list[Figure]:
    rng = random.Random(SEED)
    with counter.installed(), moto_speedups.installed(), mock_aws():
        table, queue_url = create_resources()
        db.bind_table(table, REGION)
        msisdns = seed_subscribers(rng)
        records = feed(rng, msisdns)
        events = kinesis_events(records)
        service = RatingService(
            DynamoRatingStore(),
            SqsAnomalySink(boto3.client("sqs", region_name=REGION), queue_url),
            EventBridgePublisher(
                boto3.client("events", region_name=REGION), os.environ["EVENT_BUS_NAME"]
            ),
            FixedClock(NOW),
        )
        rating_handler.service = lambda: service  # type: ignore[assignment]
        counter.reset()
        failures = 0
        warm_calls: Counter[str] = Counter()
        warm_wcu = 0
        warm_records = 0
        started = time.perf_counter()
        for number, event in enumerate(events):
            if number == len(events) // 2:  # every state exists by now: steady state from here
                warm_calls, warm_wcu = Counter(counter.calls), counter.write_units
                warm_records = number * BATCH
            result = rating_handler.handler(event, _Context())  # type: ignore[arg-type]
            failures += len(result["batchItemFailures"])
        seconds = time.perf_counter() - started
    return report(len(records), seconds, failures, counter, warm_calls, warm_wcu, warm_records)


def report(  # noqa: PLR0917 - one line per figure printed
    records: int,
    seconds: float,
    failures: int,
    counter: RequestCounter,
    warm_calls: Counter[str],
    warm_wcu: int,
    warm_records: int,
) -> list[Figure]:
    total = sum(counter.calls.values())
    steady = total - sum(warm_calls.values())
    steady_records = records - warm_records
    print(
        f"usage rating: {records:,} records ({CDRS:,} CDRs + duplicates) for "
        f"{SUBSCRIBERS:,} subscribers, batches of {BATCH}, real handler, in-process moto"
    )
    print(f"  throughput                  : {records / seconds:>10,.0f} CDRs/s ({seconds:.1f} s)")
    print(f"  records reported as failed  : {failures:>10,}")
    print(f"  DynamoDB requests / 1k CDRs : {1000 * total / records:>10.1f} (whole run)")
    print(f"                                {1000 * steady / steady_records:>10.1f} (steady state)")
    for operation, count in counter.calls.most_common():
        print(f"    {operation:<26}: {1000 * count / records:>10.1f}")
    print(f"  WCU per CDR (computed)      : {counter.write_units / records:>10.2f} (whole run)")
    steady_wcu = (counter.write_units - warm_wcu) / steady_records
    print(f"                                {steady_wcu:>10.2f} (steady state)")
    return [
        Figure("throughput, real handler on in-process moto", records / seconds, "CDRs/s"),
        Figure("DynamoDB requests per 1,000 CDRs, whole run", 1000 * total / records, "requests"),
        Figure(
            "DynamoDB requests per 1,000 CDRs, steady state",
            1000 * steady / steady_records,
            "requests",
        ),
        Figure("WCU per CDR (computed), steady state", steady_wcu, "WCU"),
        Figure("records reported as failed", failures, "records"),
    ]


def engine_throughput() -> Figure:
    rng = random.Random(rating_engine.SEED)
    plans_by_user, balances, msisdns = rating_engine.subscribers(rng)
    user_ids = list(plans_by_user)
    owners = [rng.randrange(len(user_ids)) for _ in range(rating_engine.CDRS)]
    batch = [
        (
            user_ids[owner],
            Cdr.model_validate(rating_engine.feed_record(rng, i, msisdns[owner])),
        )
        for i, owner in enumerate(owners)
    ]
    seconds = rating_engine.median_seconds(lambda: rate_batch(plans_by_user, balances, batch))
    print(
        f"  pure engine, one core, no I/O: {len(batch) / seconds:>10,.0f} CDRs/s "
        f"({len(batch):,} CDRs, median of {rating_engine.RUNS})"
    )
    return Figure("pure engine, one core, no I/O", len(batch) / seconds, "CDRs/s")


def main() -> None:
    figures = run_handler(RequestCounter())
    figures.append(engine_throughput())
    parameters: dict[str, object] = {
        "cdrs": CDRS,
        "subscribers": SUBSCRIBERS,
        "batch": BATCH,
        "engine_cdrs": rating_engine.CDRS,
    }
    write_results("rating", parameters, figures)


if __name__ == "__main__":
    main()

"""Bill run end to end: invoices for 2,000 postpaid subscribers through the REAL
schedule and worker handlers (functions.billing) against in-process moto.

The subscribers (bill-cycle day 1, a plan since mid-cycle, a rating state with
usage beyond the voice quota) are seeded with batch writes; then the bill run
queries the cycle index and fans out to the billing queue, and the worker
issues every invoice (PDF to S3, InvoiceIssued on the bus). Prints invoices per
second (inside the worker handler, and overall with moto's SQS receives, which
are O(queue length) each in moto) and DynamoDB requests per invoice by
operation, counted with a botocore ``before-parameter-build`` event hook on
every client. ``BENCH_SUBSCRIBERS``
overrides the size.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime
from typing import Any

os.environ.update(
    {
        "AWS_REGION": "ap-south-1",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "TABLE_NAME": "tbcss-bench",
        "EVENT_BUS_NAME": "tbcss-bench-events",
        "INVOICE_BUCKET_NAME": "tbcss-bench-invoices",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3
from moto import mock_aws

from bench.rating import RequestCounter
from bench.results import Figure, write_results
from functions.billing import schedule as billing_schedule
from functions.billing import wiring
from functions.billing import worker as billing_worker
from infra.local import moto_speedups
from shared import db
from shared.catalog import seed_plans
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.rating import UsageBalance
from shared.services.usage import RatingSources, build_state
from shared.settings import get_settings
from shared.stores.usage import DynamoRatingStore, to_item
from tests.apigw import lambda_context
from tests.integration.conftest import create_table

REGION = "ap-south-1"
SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "2000"))
BILL_DATE = date(2026, 12, 1)
PLAN_START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
TARGET_REQUESTS_PER_INVOICE = 8


def seed(count: int) -> None:
    db.bind_table(os.environ["TABLE_NAME"], REGION)
    catalog = {plan.plan_id: plan for plan in seed_plans()}
    db.DynamoPlanCatalog().save_all(catalog.values())
    plan = catalog["POST_BASIC_399"]
    rating = DynamoRatingStore()  # writes the plan's snapshot once
    with db.SubscriberItem.batch_write() as batch:
        for n in range(count):
            user_id = f"bench-{n:05d}"
            subscriber = Subscriber(
                user_id=user_id,
                msisdn=f"98{n:08d}",
                subscriber_type=SubscriberType.POSTPAID,
                state="KA" if n % 4 else "MH",  # a quarter inter-state: IGST
                status=SubscriberStatus.ACTIVE,
                bill_cycle_day=1,
                created_at=PLAN_START,
                name=f"Subscriber {n}",
            )
            subscription = Subscription(
                subscription_id=f"sub-{n:05d}",
                user_id=user_id,
                plan_id=plan.plan_id,
                plan_type=SubscriberType.POSTPAID,
                price_paise=plan.price_paise,
                started_at=PLAN_START,
                valid_until=None,
            )
            store = db.DynamoSubscriptionStore
            batch.save(db.SubscriberItem.from_domain(subscriber))
            batch.save(store._active_item(subscription))  # bench seeding
            batch.save(store._period_item(subscription))
            state = build_state(
                subscriber.msisdn, RatingSources(subscriber, subscription, plan, wallet_paise=0)
            )
            assert state is not None
            usage = state.latest()
            usage.balance = UsageBalance(used_voice_seconds=63_000, overage_voice_paise=2_500)
            state.version = 1
            rating.save_plan_snapshots([state])
            batch.save(to_item(state))


def main() -> None:
    with moto_speedups.installed(), mock_aws():
        create_table(boto3.client("dynamodb", region_name=REGION), os.environ["TABLE_NAME"])
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(
            Bucket=os.environ["INVOICE_BUCKET_NAME"],
            CreateBucketConfiguration={"LocationConstraint": "ap-south-1"},
        )
        boto3.client("events", region_name=REGION).create_event_bus(
            Name=os.environ["EVENT_BUS_NAME"]
        )
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="tbcss-bench-billing")["QueueUrl"]
        os.environ["BILLING_QUEUE_URL"] = queue_url
        started = time.perf_counter()
        seed(SUBSCRIBERS)
        print(f"seeded {SUBSCRIBERS} postpaid subscribers in {time.perf_counter() - started:.1f} s")

        counter = RequestCounter()
        get_settings.cache_clear()  # BILLING_QUEUE_URL is known only now
        with counter.installed():
            for factory in (
                wiring.events,
                wiring.store,
                wiring.catalog,
                wiring.billing,
                wiring.sweeps,
            ):
                factory.cache_clear()
            db.bind_table(os.environ["TABLE_NAME"], REGION)  # fresh clients: counted
            started = time.perf_counter()
            run = billing_schedule.handler(
                {"sweep": "bill_run", "date": BILL_DATE.isoformat()}, lambda_context("schedules")
            )
            fan_out = time.perf_counter() - started
            run_requests = sum(counter.calls.values())
            counter.calls.clear()
            issued = 0
            work_started = time.perf_counter()
            in_worker = 0.0
            while True:
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
                    "Messages", []
                )
                if not messages:
                    break
                records = [_record(m) for m in messages]
                handler_started = time.perf_counter()
                result = billing_worker.handler({"Records": records}, lambda_context("worker"))
                in_worker += time.perf_counter() - handler_started
                failures = result.get("batchItemFailures", [])
                if failures:
                    raise SystemExit(f"worker failures: {failures[:3]}")
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
                issued += len(messages)
            elapsed = time.perf_counter() - work_started
        per_invoice = sum(counter.calls.values()) / max(1, issued)
        print(
            f"bill run: {run['messages']} messages fanned out in {fan_out:.2f} s "
            f"({run_requests} DynamoDB queries for {SUBSCRIBERS} subscribers)"
        )
        print(
            f"invoices issued: {issued}: {issued / in_worker:.0f} invoices/s in the worker "
            f"({in_worker:.1f} s); {issued / elapsed:.0f}/s counting moto's SQS receives "
            f"({elapsed:.1f} s: moto scans the whole queue on every ReceiveMessage)"
        )
        target = TARGET_REQUESTS_PER_INVOICE
        print(f"DynamoDB requests per invoice: {per_invoice:.2f} (target <= {target})")
        for operation, calls in sorted(counter.calls.items()):
            print(f"  {operation:<20} {calls / max(1, issued):.2f}")
        write_results(
            "billing",
            {"subscribers": SUBSCRIBERS, "bill_date": BILL_DATE.isoformat()},
            [
                Figure("invoices per second in the worker handler", issued / in_worker, "inv/s"),
                Figure("invoices per second with moto's SQS receives", issued / elapsed, "inv/s"),
                Figure("DynamoDB requests per invoice", per_invoice, "requests"),
                Figure("bill run fan-out", fan_out, "s"),
            ],
        )
        if per_invoice > TARGET_REQUESTS_PER_INVOICE:
            raise SystemExit("over the request budget")


def _record(message: Any) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:tbcss-bench-billing",
        "awsRegion": REGION,
    }


if __name__ == "__main__":
    main()

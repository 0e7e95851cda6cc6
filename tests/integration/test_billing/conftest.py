"""Billing against moto: the real worker, schedule and API handlers with real
adapters (table, S3 bucket, billing queue, the bus tapped into a queue) and a
fixed clock; helpers to subscribe postpaid/prepaid lines and drain the queue."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import boto3
import pytest

from functions.billing import handler as billing_api
from functions.billing import schedule as billing_schedule
from functions.billing import worker as billing_worker
from shared import db
from shared.clock import FixedClock
from shared.db import CYCLE_SHARDS
from shared.events import EventBridgePublisher, InMemoryEventPublisher
from shared.models import SubscriberType
from shared.services.billing import BillingConfig, BillingService, PlanExpiry, Sweeps
from shared.services.subscriptions import SubscriptionService
from shared.stores.billing import (
    DynamoBillingStore,
    RatingCycleUsage,
    S3InvoiceDocuments,
    SqsTaskQueue,
    operator_details,
)
from tests.apigw import Caller, HttpResult, api_event, lambda_context, parse_response
from tests.integration.conftest import REGION, Aws, MakeSubscriber
from tests.integration.usage.conftest import rating  # noqa: F401 - the fixture, reused

BUCKET = "tbcss-test-invoices"


@dataclass
class Billing:
    aws: Aws
    s3: Any
    queue_url: str
    clock: FixedClock
    service: BillingService
    sweeps: Sweeps
    expiry: PlanExpiry
    plans: SubscriptionService
    _seen: list[dict[str, Any]] = field(default_factory=list)

    # --- schedules and the worker ------------------------------------------------

    def schedule(self, sweep: str, day: date) -> dict[str, Any]:
        """A run by hand of ``day``'s sweep."""
        return self._run_schedule({"sweep": sweep, "date": day.isoformat()})

    def scheduled(self, sweep: str) -> dict[str, Any]:
        """The sweep as its rule fires it at the clock's moment: for that IST day
        and those missed since its checkpoint."""
        return self._run_schedule({"sweep": sweep, "time": self.clock.now().isoformat()})

    def _run_schedule(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = billing_schedule.handler(event, lambda_context("schedules"))
        return result

    def receive(self) -> list[dict[str, Any]]:
        """Every message on the billing queue (removed from it), as SQS records."""
        return self.aws.drain(self.queue_url)

    def work(self, records: list[dict[str, Any]]) -> list[str]:
        """Runs the worker over the records, ten per invocation; failed message ids."""
        failed: list[str] = []
        for start in range(0, len(records), 10):
            event = {"Records": records[start : start + 10]}
            result = billing_worker.handler(event, lambda_context("worker"))
            failed += [f["itemIdentifier"] for f in result.get("batchItemFailures", [])]
        return failed

    def drain(self) -> list[str]:
        return self.work(self.receive())

    # --- reading back -----------------------------------------------------------

    def events(self, detail_type: str) -> list[dict[str, Any]]:
        return [e for e in self.published if e["detail-type"] == detail_type]

    @property
    def published(self) -> list[dict[str, Any]]:
        self._seen += self.aws.published()
        return self._seen

    def api(
        self, method: str, path: str, resource: str, who: Caller, **kwargs: Any
    ) -> dict[str, Any]:
        event = api_event(method, path, resource=resource, caller=who, **kwargs)
        response: dict[str, Any] = billing_api.handler(event, lambda_context("billing-api"))
        return response

    def get(self, path: str, resource: str, who: Caller) -> HttpResult:
        return parse_response(self.api("GET", path, resource, who))


@pytest.fixture
def billing(seeded: Aws, clock: FixedClock) -> Iterator[Billing]:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    queue_url = seeded.sqs.create_queue(QueueName="tbcss-test-billing-tasks")["QueueUrl"]
    seeded.tap("billing")
    events = EventBridgePublisher(seeded.events, seeded.bus_name)
    store = DynamoBillingStore()
    catalog = db.DynamoPlanCatalog()
    subscriptions = db.DynamoSubscriptionStore()
    plans = SubscriptionService(catalog, subscriptions, InMemoryEventPublisher(), clock)
    service = BillingService(
        store=store,
        usage=RatingCycleUsage(),
        documents=S3InvoiceDocuments(s3, BUCKET, operator_details()),
        events=events,
        clock=clock,
        catalog=catalog,
        config=BillingConfig(operator_state="KA", due_days=15, grace_days=7),
    )
    sweeps = Sweeps(
        store=store, queue=SqsTaskQueue(seeded.sqs, queue_url), shards=CYCLE_SHARDS, grace_days=7
    )
    expiry = PlanExpiry(
        store=store,
        plans=subscriptions,
        catalog=catalog,
        subscriptions=SubscriptionService(catalog, subscriptions, events, clock),
        events=events,
        clock=clock,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(billing_worker, "billing", lambda: service)
        patch.setattr(billing_worker, "plan_expiry", lambda: expiry)
        patch.setattr(billing_api, "billing", lambda: service)
        patch.setattr(billing_schedule, "sweeps", lambda: sweeps)
        state = Billing(seeded, s3, queue_url, clock, service, sweeps, expiry, plans)
        yield state


@pytest.fixture
def postpaid(make_subscriber: MakeSubscriber, billing: Billing) -> Any:
    """A postpaid line (bill-cycle day 1) on a plan started now; returns the MSISDN."""

    def make(user_id: str, plan_id: str = "POST_PLUS_599", *, day: int = 1) -> str:
        subscriber = make_subscriber(user_id, SubscriberType.POSTPAID, bill_cycle_day=day)
        billing.plans.subscribe(user_id, plan_id)
        return subscriber.msisdn

    return make


def at_ist(year: int, month: int, day: int, hour: int = 0) -> datetime:
    from shared.clock import IST  # noqa: PLC0415

    return datetime(year, month, day, hour, tzinfo=IST)

"""Builds the billing services from settings, once per container (the API, the
worker and the schedules share them)."""

from __future__ import annotations

from functools import lru_cache

import boto3

from shared.clock import system_clock
from shared.db import CYCLE_SHARDS, DynamoPlanCatalog, DynamoSubscriptionStore
from shared.events import EventBridgePublisher
from shared.services.billing import BillingConfig, BillingService, PlanExpiry, Sweeps
from shared.services.subscriptions import SubscriptionService
from shared.settings import get_settings
from shared.stores.billing import (
    DynamoBillingStore,
    RatingCycleUsage,
    S3InvoiceDocuments,
    SqsTaskQueue,
    operator_details,
)
from shared.stores.sweeps import DynamoSweepCheckpoints


@lru_cache(maxsize=1)
def events() -> EventBridgePublisher:
    return EventBridgePublisher(boto3.client("events"), get_settings().event_bus_name)


@lru_cache(maxsize=1)
def store() -> DynamoBillingStore:
    return DynamoBillingStore()


@lru_cache(maxsize=1)
def catalog() -> DynamoPlanCatalog:
    return DynamoPlanCatalog()


@lru_cache(maxsize=1)
def billing() -> BillingService:
    settings = get_settings()
    return BillingService(
        store=store(),
        usage=RatingCycleUsage(),
        documents=S3InvoiceDocuments(
            boto3.client("s3"), settings.invoice_bucket_name, operator_details()
        ),
        events=events(),
        clock=system_clock(),
        catalog=catalog(),
        config=BillingConfig(
            operator_state=settings.operator_state,
            due_days=settings.invoice_due_days,
            grace_days=settings.overdue_grace_days,
        ),
    )


@lru_cache(maxsize=1)
def checkpoints() -> DynamoSweepCheckpoints:
    return DynamoSweepCheckpoints()


@lru_cache(maxsize=1)
def sweeps() -> Sweeps:
    settings = get_settings()
    return Sweeps(
        store=store(),
        queue=SqsTaskQueue(boto3.client("sqs"), settings.billing_queue_url),
        shards=CYCLE_SHARDS,
        grace_days=settings.overdue_grace_days,
    )


@lru_cache(maxsize=1)
def plan_expiry() -> PlanExpiry:
    subscriptions = DynamoSubscriptionStore()
    return PlanExpiry(
        store=store(),
        plans=subscriptions,
        catalog=catalog(),
        subscriptions=SubscriptionService(catalog(), subscriptions, events(), system_clock()),
        events=events(),
        clock=system_clock(),
    )

"""Builds the payment service from settings, once per container: the API, the
worker and the schedules share it; the webhook delivery function needs only the
secret and the API function's name.

The simulator knobs, the event publisher and the billing catalog come from the
activation and billing wirings (one construction of each)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3

from functions.activation.wiring import SIMULATOR, knobs
from functions.billing.wiring import catalog, events
from shared.activation_adapters import load_pepper
from shared.clock import system_clock
from shared.db import CYCLE_SHARDS, DynamoSubscriptionStore
from shared.notifications import AwsNotifier
from shared.payment_gateway import PaymentGateway, SimulatedGateway
from shared.queues import SqsWebhookOutbox
from shared.services.payments import PaymentConfig, PaymentService
from shared.services.subscriptions import SubscriptionService
from shared.settings import get_settings
from shared.stores.billing import SqsTaskQueue
from shared.stores.payment_gateway import DynamoGatewayLedger
from shared.stores.payments import DynamoPaymentStore
from shared.stores.service_control import DynamoFacts


class SqsOpsQueue:
    """The ops queue for payments the janitor could not resolve: one message each
    (implements :class:`shared.services.payments.OpsQueue`)."""

    def __init__(self, queue: SqsTaskQueue) -> None:
        self._queue = queue

    def send(self, message: dict[str, Any]) -> None:
        self._queue.send([message])


def gateway() -> PaymentGateway:
    """Only the simulator exists yet; a real gateway's adapter plugs in here."""
    settings = get_settings()
    if settings.payment_gateway != SIMULATOR:
        raise ValueError(f"unknown payment gateway {settings.payment_gateway!r}")
    outbox = SqsWebhookOutbox(boto3.client("sqs"), settings.webhook_outbox_queue_url)
    return SimulatedGateway(DynamoGatewayLedger(), outbox, knobs(), system_clock())


@lru_cache(maxsize=1)
def payments() -> PaymentService:
    settings = get_settings()
    subscriptions = DynamoSubscriptionStore()
    sqs = boto3.client("sqs")
    return PaymentService(
        store=DynamoPaymentStore(),
        gateway=gateway(),
        invoices=DynamoFacts(),
        plans=catalog(),
        subscribers=subscriptions,
        subscriptions=SubscriptionService(catalog(), subscriptions, events(), system_clock()),
        events=events(),
        notifier=AwsNotifier(
            boto3.client("sns"), boto3.client("ses"), settings.notification_sender
        ),
        ops=SqsOpsQueue(SqsTaskQueue(sqs, settings.payments_ops_queue_url)),
        clock=system_clock(),
        config=PaymentConfig(shards=CYCLE_SHARDS),
    )


def task_queue() -> SqsTaskQueue:
    """The payments queue, for the AutoPay retry sweep's fan-out."""
    return SqsTaskQueue(boto3.client("sqs"), get_settings().payments_queue_url)


@lru_cache(maxsize=1)
def webhook_secret() -> bytes:
    """The gateway's webhook secret, read once per container."""
    return load_pepper(boto3.client("secretsmanager"), get_settings().payment_webhook_secret_id)

"""SQS adapters: the anomaly review queue of usage rating and the payment gateway
simulator's webhook outbox."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from shared.services.usage import Anomaly

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

logger = Logger(child=True)
SEND_BATCH_MAX = 10  # SendMessageBatch's limit
MAX_RECORD_CHARS = 16_000  # a record beyond this is itself the anomaly; keep its head


class SqsAnomalySink:
    """Sends each anomaly as one message, ten per request. A rejected entry raises:
    the batch is then retried, since an anomaly must never be lost."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, anomalies: Sequence[Anomaly], detected_at: datetime) -> None:
        for start in range(0, len(anomalies), SEND_BATCH_MAX):
            chunk = anomalies[start : start + SEND_BATCH_MAX]
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(index), "MessageBody": _body(anomaly, detected_at)}
                for index, anomaly in enumerate(chunk)
            ]
            response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            failed = response.get("Failed", [])
            if failed:
                raise RuntimeError(f"{len(failed)} anomaly message(s) rejected: {failed[:3]}")
        logger.info("anomalies sent for review", extra={"count": len(anomalies)})


def _body(anomaly: Anomaly, detected_at: datetime) -> str:
    body = anomaly.body(detected_at)
    body["record"] = str(body["record"])[:MAX_RECORD_CHARS]
    return json.dumps(body)


class SqsWebhookOutbox:
    """Implements :class:`shared.payment_gateway.WebhookOutbox`: one message per
    webhook, held back ``delay_seconds`` by SQS (its maximum is 900 s) before the
    delivery function (functions/payments/webhooks.py) can receive it."""

    max_delay_seconds = 900

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, body: dict[str, Any], delay_seconds: int) -> None:
        self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=json.dumps(body, sort_keys=True),
            DelaySeconds=min(max(delay_seconds, 0), self.max_delay_seconds),
        )

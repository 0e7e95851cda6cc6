"""Usage rating: the consumer of the CDR Kinesis stream.

Thin: it decodes the batch, hands it WHOLE to the rating service (one read of
each subscriber's state, transactions of up to 100 items; see
shared.services.usage), then lets Powertools' batch processor turn the records
the service could not write into ``batchItemFailures``. The record handler only
looks the outcome up: request economy needs batch-level work, and the partial
failure report needs per-record answers.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.clock import system_clock
from shared.events import EventBridgePublisher
from shared.logs import service_logger
from shared.queues import SqsAnomalySink
from shared.services.usage import InboundRecord, RatingService
from shared.settings import get_settings
from shared.stores.usage import DynamoRatingStore

logger = service_logger()
processor = BatchProcessor(event_type=EventType.KinesisDataStreams)


class RecordNotRated(Exception):
    """Its charge is not written yet: Lambda redelivers it (its marker makes that safe)."""


@lru_cache(maxsize=1)
def service() -> RatingService:
    settings = get_settings()
    return RatingService(
        DynamoRatingStore(),
        SqsAnomalySink(boto3.client("sqs"), settings.anomaly_queue_url),
        EventBridgePublisher(boto3.client("events"), settings.event_bus_name),
        system_clock(),
    )


def inbound(event: dict[str, Any]) -> list[InboundRecord]:
    return [
        InboundRecord(
            sequence_number=record["kinesis"]["sequenceNumber"],
            event_id=record.get("eventID", record["kinesis"]["sequenceNumber"]),
            data=base64.b64decode(record["kinesis"]["data"]),
        )
        for record in event.get("Records", [])
    ]


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = service().rate_records(inbound(event))
    failed = set(outcome.failed)
    logger.info(
        "batch rated",
        extra={
            "records": len(event.get("Records", [])),
            "rated": outcome.rated,
            "duplicates": outcome.duplicates,
            "late": outcome.late,
            "anomalies": outcome.anomalies,
            "failed": len(failed),
            "commit_rounds": outcome.transactions,
        },
    )

    def record_handler(record: KinesisStreamRecord) -> None:
        if record.kinesis.sequence_number in failed:
            raise RecordNotRated(record.kinesis.sequence_number)

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )

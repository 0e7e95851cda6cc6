"""Billing worker: the consumer of the billing queue (SQS, partial batch failures).

One message = one unit of work from a schedule's fan-out:
``{"task": "invoice", "user_id", "cycle_day", "bill_date"}``,
``{"task": "overdue", "invoice_id"}`` or
``{"task": "expire", "user_id", "subscription_id"}``.
Every task is idempotent, so SQS's at-least-once delivery is harmless; a failed
message is retried after the visibility timeout and lands in the DLQ after the
queue's maxReceiveCount.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.billing.wiring import billing, plan_expiry
from shared.logs import service_logger

logger = service_logger()
processor = BatchProcessor(event_type=EventType.SQS)


def run_task(message: dict[str, Any]) -> str:
    task = message.get("task")
    if task == "invoice":
        result = billing().issue_cycle_invoice(
            str(message["user_id"]),
            int(message["cycle_day"]),
            date.fromisoformat(str(message["bill_date"])),
        )
        return f"{result.invoice_id}: {result.outcome.value}"
    if task == "overdue":
        invoice_id = str(message["invoice_id"])
        return f"{invoice_id}: {','.join(billing().process_overdue(invoice_id)) or 'no change'}"
    if task == "expire":
        outcome = plan_expiry().expire(str(message["user_id"]), str(message["subscription_id"]))
        return f"{message['user_id']}: {outcome.value}"
    raise ValueError(f"unknown task {task!r}")


def record_handler(record: SQSRecord) -> str:
    outcome = run_task(json.loads(record.body))
    logger.info("task done", extra={"outcome": outcome, "message_id": record.message_id})
    return outcome


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)

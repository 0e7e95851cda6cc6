"""Payments worker: the consumer of the payments queue (SQS, partial batch failures).

The queue carries two kinds of message:

- InvoiceIssued, delivered by the EventBridge rule of infra/payments.py (the body
  is the EventBridge event): AutoPay's first attempt on the invoice;
- ``{"task": "autopay_retry", "user_id", "invoice_id"}`` from the daily AutoPay
  sweep's fan-out (functions/payments/schedule.py).

Both are idempotent (an AutoPay attempt has a fixed payment id per invoice and
attempt), so redelivery is harmless; a failed message is retried after the
visibility timeout and lands in the DLQ after the queue's maxReceiveCount.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.payments.wiring import payments
from shared.logs import service_logger
from shared.sqs_worker import QueueWorker

logger = service_logger()

INVOICE_ISSUED = "InvoiceIssued"
AUTOPAY_RETRY = "autopay_retry"


def react(event: dict[str, Any]) -> str:
    kind = str(event.get("detail-type", ""))
    if kind != INVOICE_ISSUED:
        logger.warning("event ignored: no reaction", extra={"detail_type": kind})
        return f"ignored {kind}"
    detail = event.get("detail") or {}
    outcome = payments().on_invoice_issued(
        str(detail["user_id"]), str(detail["invoice_id"]), int(detail["total_paise"])
    )
    return f"{kind} {detail['invoice_id']}: {outcome}"


def run_task(message: dict[str, Any]) -> str:
    task = message.get("task")
    if task == AUTOPAY_RETRY:
        invoice_id = str(message["invoice_id"])
        return (
            f"{task} {invoice_id}: {payments().retry_autopay(str(message['user_id']), invoice_id)}"
        )
    raise ValueError(f"unknown task {task!r}")


worker = QueueWorker(run_task=run_task, react=react)
record_handler = worker.record_handler


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return worker.handle(event, context)

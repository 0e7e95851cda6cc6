"""Audit consumer: every domain event on the bus (the audit rule of
infra/audit.py delivers them through the audit queue) becomes one audit record.

Appending is idempotent on the event id, so a redelivery is harmless; a message
that fails is retried by SQS and lands in the DLQ after the queue's
maxReceiveCount, never dropped."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.audit.wiring import trail
from shared.logs import service_logger
from shared.sqs_worker import QueueWorker

logger = service_logger()


def _no_tasks(message: dict[str, Any]) -> str:
    raise ValueError(f"the audit queue carries events only, not task {message.get('task')!r}")


worker = QueueWorker(run_task=_no_tasks, react=lambda event: trail().record_event(event))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return worker.handle(event, context)

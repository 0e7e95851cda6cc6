"""One way for a module's worker to consume a queue that carries both domain
events (EventBridge envelopes from a bus rule) and task messages (``{"task": ...}``
from its own fan-out), reporting partial batch failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(child=True)

Route = Callable[[dict[str, Any]], str]


class QueueWorker:
    """``run_task`` takes task messages, ``react`` EventBridge events; each returns
    an outcome line for the log. A failing message is logged with its cause (the
    batch processor reports only its id) and goes back to the queue."""

    def __init__(self, *, run_task: Route, react: Route) -> None:
        self._run_task = run_task
        self._react = react
        self._processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(self, record: SQSRecord) -> str:
        message = json.loads(record.body)
        user_id = message.get("user_id") or (message.get("detail") or {}).get("user_id")
        where = {"user_id": user_id, "message_id": record.message_id}
        try:
            outcome = self._run_task(message) if "task" in message else self._react(message)
        except Exception:
            logger.exception("message failed; SQS retries it", extra=where)
            raise
        logger.info("message done", extra={"outcome": outcome, **where})
        return outcome

    def handle(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        response = process_partial_response(
            event=event,
            record_handler=self.record_handler,
            processor=self._processor,
            context=context,
        )
        return dict(response)

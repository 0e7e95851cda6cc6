"""Service-control worker: the consumer of the service-control queue (SQS,
partial batch failures).

The queue carries two kinds of message:

- domain events, delivered by the EventBridge rule of infra/service_control.py
  (the body is the EventBridge event: ``detail-type``, ``source``, ``id``,
  ``time``, ``detail``): InvoiceOverdue, PlanExpired, QuotaExhausted,
  PlanChanged, PaymentSucceeded;
- tasks: ``{"task": "inactivity", "user_id"}`` from the daily sweep's fan-out and
  ``{"task": "sync", "user_id"}`` (bring the network's barring in step again).

Every reaction re-reads the facts and is idempotent, so redelivery is harmless;
a failed message is retried after the visibility timeout and lands in the DLQ
after the queue's maxReceiveCount. An event of a kind this worker does not
react to is logged and acknowledged: it is not poison, just not ours.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.service_control.wiring import disconnections, service_control
from shared.logs import service_logger
from shared.sqs_worker import QueueWorker

logger = service_logger()

TOP_UP = "TOPUP"
EXTENDED = "EXTENDED"  # a repeat purchase queued after the current period (payments)

Reaction = Callable[[dict[str, Any], str], str]


def _moment(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _payment_succeeded(detail: dict[str, Any], event_id: str) -> str:
    user_id = str(detail["user_id"])
    top_up = detail.get("purpose") == TOP_UP
    lifted = service_control().on_payment_succeeded(
        user_id, event_id, top_up=top_up, occurred_at=_moment(detail["occurred_at"])
    )
    # The same payment may clear the dues a parked disconnection waits for.
    resumed = disconnections().on_payment_succeeded(user_id)
    return f"{lifted}; {resumed}"


REACTIONS: dict[str, Reaction] = {
    "InvoiceOverdue": lambda detail, event_id: service_control().on_invoice_overdue(
        str(detail["user_id"]), str(detail["invoice_id"]), event_id
    ),
    "PlanExpired": lambda detail, event_id: service_control().on_plan_expired(
        str(detail["user_id"]),
        str(detail["subscription_id"]),
        _moment(detail["valid_until"]),
        event_id,
    ),
    "QuotaExhausted": lambda detail, event_id: service_control().on_quota_exhausted(
        str(detail["user_id"]), str(detail["usage_type"]), _moment(detail["occurred_at"]), event_id
    ),
    "PlanChanged": lambda detail, event_id: service_control().on_plan_changed(
        str(detail["user_id"]),
        event_id,
        _moment(detail["occurred_at"]),
        new_quota_now=detail.get("change_type") != EXTENDED,
    ),
    "PaymentSucceeded": _payment_succeeded,
}


def react(event: dict[str, Any]) -> str:
    kind = str(event.get("detail-type", ""))
    reaction = REACTIONS.get(kind)
    if reaction is None:
        logger.warning("event ignored: no reaction", extra={"detail_type": kind})
        return f"ignored {kind}"
    detail: dict[str, Any] = dict(event.get("detail") or {})
    # The publisher's own id: the same across its PutEvents retries, unlike EventBridge's.
    event_id = str(detail.get("event_id") or event.get("id") or "")
    # Events that name no time use the bus's (second precision, like occurred_at).
    detail.setdefault("occurred_at", event.get("time"))
    return f"{kind}: {reaction(detail, event_id)}"


def run_task(message: dict[str, Any]) -> str:
    task = message.get("task")
    user_id = str(message["user_id"])
    if task == "inactivity":
        return f"inactivity: {disconnections().disconnect_if_inactive(user_id)}"
    if task == "sync":
        in_sync = service_control().sync_network(user_id)
        return f"sync: {'in sync' if in_sync else 'still changing'}"
    raise ValueError(f"unknown task {task!r}")


worker = QueueWorker(run_task=run_task, react=react)
record_handler = worker.record_handler


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return worker.handle(event, context)

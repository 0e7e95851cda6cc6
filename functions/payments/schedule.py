"""Payments' schedules (EventBridge rules):

- ``{"sweep": "reconcile"}`` every 15 minutes: the janitor. Every payment still
  open 15 minutes after its creation is looked up at the gateway and resolved
  (applied, failed or refunded), or escalated to ops once it is 2 hours old.
- ``{"sweep": "autopay_retries"}`` at 10:00 IST: the AutoPay attempts scheduled
  for the day (and the days since the last run, should one have been missed), one
  SQS message each to the payments worker. ``"date": "YYYY-MM-DD"`` runs a given
  IST day by hand; the days are decided as for billing's sweeps
  (:func:`functions.billing.schedule.run_scheduled_sweep`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.billing.schedule import run_scheduled_sweep
from functions.payments.wiring import payments, task_queue
from shared.clock import system_clock
from shared.logs import service_logger

logger = service_logger()
RECONCILE = "reconcile"
AUTOPAY_RETRIES = "autopay_retries"


def queue_autopay_retries(day: date) -> dict[str, Any]:
    return {"queued": task_queue().send(payments().autopay_retries_due(day))}


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    sweep = event.get("sweep")
    if sweep == RECONCILE:
        result = payments().reconcile(system_clock().now())
    elif sweep == AUTOPAY_RETRIES:
        result = run_scheduled_sweep(event, sweep, queue_autopay_retries)
    else:
        raise ValueError(f"unknown sweep {sweep!r}")
    logger.info("sweep done", extra={"sweep": sweep, **result})
    return {"sweep": sweep, **result}

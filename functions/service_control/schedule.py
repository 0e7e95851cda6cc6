"""The daily inactivity sweep (an EventBridge rule at 00:00 IST): lines whose
inactivity clock (blocked for an unpaid bill or an expired plan) started more
than ``INACTIVITY_DAYS`` ago, one SQS message each to the service-control
worker, which disconnects those still inactive.

Input: ``{"sweep": "inactivity"}`` (the rule's constant input), optionally
``"date": "YYYY-MM-DD"`` to run a given IST day by hand; the days are decided as
for billing's sweeps (:func:`functions.billing.schedule.run_scheduled_sweep`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.billing.schedule import run_scheduled_sweep
from functions.service_control.wiring import disconnections, task_queue
from shared.logs import service_logger

logger = service_logger()
SWEEP = "inactivity"


def queue_inactive_lines(day: date) -> dict[str, Any]:
    return disconnections().inactivity_sweep(day, task_queue())


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    sweep = event.get("sweep", SWEEP)
    if sweep != SWEEP:
        raise ValueError(f"unknown sweep {sweep!r}")
    result = run_scheduled_sweep(event, SWEEP, queue_inactive_lines)
    logger.info("sweep done", extra={"sweep": sweep, **result})
    return {"sweep": sweep, **result}

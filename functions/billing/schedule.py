"""Billing's daily schedules (EventBridge rules at 00:00 IST): the bill run, the
overdue sweep and the prepaid expiry sweep. Each queries a sharded index and fans
out one SQS message per unit of work to the billing worker.

Input: ``{"sweep": "bill_run" | "overdue" | "expiry"}`` (the rules' constant
input), optionally ``"date": "YYYY-MM-DD"`` to run a given IST day by hand
(``tbcss bill run --date``) or ``"time"`` (an event time). Otherwise the day is
the clock's IST day, a few minutes early counting as the next day (the rule fires
at 00:00 IST; a retry later that day still runs the same day).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.billing.wiring import sweeps
from shared.clock import system_clock, to_ist
from shared.logs import service_logger

logger = service_logger()
_EARLY_TOLERANCE = timedelta(minutes=5)


def run_day(event: dict[str, Any]) -> date:
    if event.get("date"):
        return date.fromisoformat(str(event["date"]))
    if event.get("time"):
        moment = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    else:
        moment = system_clock().now()
    # 18:30 UTC is 00:00 IST of the next day; a few seconds early still means that day.
    return to_ist(moment + _EARLY_TOLERANCE).date()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    day = run_day(event)
    sweep = event.get("sweep", "bill_run")
    if sweep == "bill_run":
        result = sweeps().bill_run(day)
    elif sweep == "overdue":
        result = sweeps().overdue_sweep(day)
    elif sweep == "expiry":
        result = sweeps().expiry_sweep(day)
    else:
        raise ValueError(f"unknown sweep {sweep!r}")
    logger.info("sweep done", extra={"sweep": sweep, **result})
    return {"sweep": sweep, **result}

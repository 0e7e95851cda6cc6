"""Billing's daily schedules (EventBridge rules at 00:00 IST): the bill run, the
overdue sweep and the prepaid expiry sweep. Each queries a sharded index and fans
out one SQS message per unit of work to the billing worker.

Input: ``{"sweep": "bill_run" | "overdue" | "expiry"}`` (the rules' constant
input), optionally ``"date": "YYYY-MM-DD"`` to run just that IST day by hand
(``tbcss bill run --date``) or ``"time"`` (an event time). Otherwise the day is
the clock's IST day, a few minutes early counting as the next day (the rule fires
at 00:00 IST; a retry later that day still runs the same day), and the run also
covers the days missed since the sweep's checkpoint (:mod:`shared.sweeps`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.billing.wiring import checkpoints, sweeps
from shared.clock import system_clock, to_ist
from shared.logs import service_logger
from shared.sweeps import run_daily_sweep

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


def run_scheduled_sweep(
    event: dict[str, Any], name: str, sweep_day: Callable[[date], dict[str, Any]]
) -> dict[str, Any]:
    """The day of :func:`run_day` and those missed before it; a run for a given
    date (by hand) sweeps just that day. Every module's daily sweeps go this way."""
    by_hand = bool(event.get("date"))
    return run_daily_sweep(checkpoints(), name, run_day(event), sweep_day, by_hand=by_hand)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    sweep = event.get("sweep", "bill_run")
    sweep_day = {
        "bill_run": sweeps().bill_run,
        "overdue": sweeps().overdue_sweep,
        "expiry": sweeps().expiry_sweep,
    }.get(sweep)
    if sweep_day is None:
        raise ValueError(f"unknown sweep {sweep!r}")
    result = run_scheduled_sweep(event, sweep, sweep_day)
    logger.info("sweep done", extra={"sweep": sweep, **result})
    return {"sweep": sweep, **result}

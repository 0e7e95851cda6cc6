"""The monthly compliance report (issue 9): CSV + PDF summary to the reports bucket.

Input: the monthly rule's scheduled event (00:30 UTC on the 1st = 06:00 IST): the
IST month before its ``time`` (a retry later that day reports the same month);
``{"month": "YYYY-MM"}`` for that month (``tbcss report monthly``); nothing: the
month before now. Returns where the documents went and the counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.audit.wiring import compliance_reports
from shared.clock import system_clock
from shared.logs import service_logger
from shared.services.compliance_report import ReportMonth

logger = service_logger()


def requested_month(event: dict[str, Any]) -> ReportMonth:
    if event.get("month") is not None:
        return ReportMonth.parse(str(event["month"]))
    if event.get("time"):
        return ReportMonth.before(datetime.fromisoformat(str(event["time"])))
    return ReportMonth.before(system_clock().now())


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    written = compliance_reports().write(requested_month(event))
    logger.info(
        "compliance report written",
        extra={"month": written.month, "csv": written.csv_uri, "pdf": written.pdf_uri},
    )
    return written.model_dump(mode="json")

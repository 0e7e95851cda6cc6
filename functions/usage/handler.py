"""Usage module API: GET /users/{user_id}/usage (owner, agent, admin).

Thin: routing and validation here (the authorization matrix, checked before the
handler runs, lets only the owner, agents and admins in); the report is built by
shared.services.usage_report from the rating state.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.clock import system_clock
from shared.logs import service_logger
from shared.services.usage_report import UsageReport, UsageReports
from shared.stores.usage import DynamoRatingStore
from shared.web import create_resolver, documented

logger = service_logger()
app = create_resolver()

USER_ID = r"^[A-Za-z0-9_-]{1,64}$"


@lru_cache(maxsize=1)
def reports() -> UsageReports:
    return UsageReports(DynamoRatingStore(), system_clock())


@app.get(
    "/users/<user_id>/usage",
    summary="Current cycle usage: used and remaining per type, overage, daily breakdown",
    responses=documented(200, "Usage of the current cycle", UsageReport, 401, 403, 404, 409),
)
def get_usage(user_id: Annotated[str, Path(pattern=USER_ID)]) -> UsageReport:
    return reports().report(user_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

"""Audit API: GET /audit, the trail of every state change (admins only).

Thin: query validation (who may call it: shared.authorization); the reading lives in
shared.services.audit. Records are read in time order, a page at a time: while
a response has ``next_cursor`` there may be more (the last page can be empty,
as DynamoDB's paging is), fetched by passing it back with the same filters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.audit.wiring import trail
from shared.clock import system_clock
from shared.logs import service_logger
from shared.services.audit import MAX_PAGE, AuditPage, AuditQuery, query_window
from shared.web import create_resolver, documented

logger = service_logger()
app = create_resolver()

ID = r"^[A-Za-z0-9_-]{1,64}$"
ACTOR = r"^[a-z]+:[A-Za-z0-9_:.-]{1,80}$"
CURSOR = r"^[A-Za-z0-9_-]{1,2048}$"


@app.get(
    "/audit",
    summary="Audit records in time order, by subscriber, actor and time range (admin)",
    description=(
        "`from` defaults to 7 days before `to`, `to` to now; the range may span at most "
        "92 days. Pass `next_cursor` back as `cursor`, with the same filters, for the next page."
    ),
    responses=documented(200, "A page of audit records", AuditPage, 401, 403),
)
def list_audit(
    *,
    user_id: Annotated[str | None, Query(pattern=ID)] = None,
    actor: Annotated[
        str | None, Query(pattern=ACTOR, description="e.g. agent:a1 or system:billing")
    ] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR)] = None,
) -> AuditPage:
    start, end = query_window(start, end, system_clock().now())
    query = AuditQuery(
        start=start,
        end=end,
        user_id=user_id,
        actor=actor,
        limit=limit,
        cursor=cursor,
    )
    return trail().search(query)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

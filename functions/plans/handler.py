"""Plans module API: the catalog, subscribing and changing plans.

Thin: routing, validation and the owner check of the body's user_id here (the
authorization matrix, shared.authorization, is checked before the handler runs);
the rules live in shared.services.subscriptions.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

import boto3
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import Role, require_owner_or
from shared.clock import isoformat, system_clock
from shared.db import DynamoPlanCatalog, DynamoSubscriptionStore
from shared.events import EventBridgePublisher
from shared.logs import service_logger
from shared.models import Plan, SubscriberType
from shared.services.subscriptions import PlanChangeResult, SubscriptionService
from shared.settings import get_settings
from shared.web import Idempotency, IdempotencyKey, caller, create_resolver, documented

logger = service_logger()
app = create_resolver()
idempotency = Idempotency("plans")

USER_ID = r"^[A-Za-z0-9_-]{1,64}$"
PLAN_ID = r"^[A-Z0-9][A-Z0-9_-]{1,39}$"
PLAN_CHANGERS = frozenset({Role.AGENT})  # besides the owner (API.md)


class PlanChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, Field(pattern=USER_ID)]
    plan_id: Annotated[str, Field(pattern=PLAN_ID)]
    effective_at: datetime | None = Field(
        default=None, description="Optional; must be now (changes are never backdated)"
    )


class Catalog(BaseModel):
    plans: list[Plan]


class Health(BaseModel):
    status: str
    time: datetime


@lru_cache(maxsize=1)
def catalog() -> DynamoPlanCatalog:
    return DynamoPlanCatalog()


@lru_cache(maxsize=1)
def subscriptions() -> SubscriptionService:
    events = EventBridgePublisher(boto3.client("events"), get_settings().event_bus_name)
    return SubscriptionService(catalog(), DynamoSubscriptionStore(), events, system_clock())


@app.get(
    "/health",
    summary="Liveness (no auth)",
    responses=documented(200, "Alive", Health),
)
def health() -> dict[str, Any]:
    return {"status": "ok", "time": isoformat(system_clock().now())}


@app.get(
    "/plans",
    summary="The plan catalog",
    responses=documented(200, "Plans on sale", Catalog, 401, 403),
)
def list_plans(
    type: Annotated[SubscriberType | None, Query(description="Only prepaid or postpaid")] = None,
) -> Catalog:
    plans = [p for p in catalog().list() if p.active and (type is None or p.type is type)]
    return Catalog(plans=plans)


@app.get(
    "/plans/<plan_id>",
    summary="One plan",
    responses=documented(200, "The plan", Plan, 401, 403, 404),
)
def get_plan(plan_id: Annotated[str, Path(pattern=PLAN_ID)]) -> Plan:
    return catalog().get(plan_id)


@app.post(
    "/subscribe",
    summary="Start a plan now (409 if one is active)",
    responses=documented(201, "Plan started", PlanChangeResult, 401, 402, 403, 404, 409, 415),
)
def subscribe(
    body: PlanChangeRequest, idempotency_key: IdempotencyKey = None
) -> Response[PlanChangeResult]:
    require_owner_or(caller(app), body.user_id, PLAN_CHANGERS)

    def action() -> tuple[int, PlanChangeResult]:
        return 201, subscriptions().subscribe(body.user_id, body.plan_id, body.effective_at)

    return idempotency.run(app, body, action)  # type: ignore[return-value]


@app.post(
    "/upgrade",
    summary="Change the active plan now, with proration",
    responses=documented(200, "Plan changed", PlanChangeResult, 401, 402, 403, 404, 409, 415),
)
def upgrade(
    body: PlanChangeRequest, idempotency_key: IdempotencyKey = None
) -> Response[PlanChangeResult]:
    require_owner_or(caller(app), body.user_id, PLAN_CHANGERS)

    def action() -> tuple[int, PlanChangeResult]:
        return 200, subscriptions().change_plan(body.user_id, body.plan_id, body.effective_at)

    return idempotency.run(app, body, action)  # type: ignore[return-value]


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register(context)
    return app.resolve(event, context)

"""Every state-changing call by an agent or an admin, announced on the bus for the
audit trail, whatever its outcome (a refused unblock is worth knowing too).

What is announced: who, which route and method, the path's ids, the HTTP status
and the API request id. Never the body: it may hold personal data, and the
domain events of whatever changed carry the change itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import boto3

from shared.audit import ACTION_EVENT
from shared.auth import STAFF, Principal, actor_of
from shared.events import DomainEvent, EventBridgePublisher, EventPublisher
from shared.settings import get_settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SOURCE = "api"


def staff_action(
    event: Mapping[str, Any],
    principal: Principal,
    status: int,
    at: datetime,
    answered_user: str | None = None,
) -> DomainEvent | None:
    """The announcement of one API call, or None when it is a read or not staff's.
    The subscriber concerned: the path's ``user_id``, else the one the answer names."""
    method = str(event.get("httpMethod", "")).upper()
    if method in READ_METHODS or not principal.has_any(STAFF):
        return None
    path = event.get("pathParameters") or {}
    request_id = (event.get("requestContext") or {}).get("requestId")
    return DomainEvent(
        detail_type=ACTION_EVENT,
        source=SOURCE,
        occurred_at=at,
        correlation_id=request_id,
        detail={
            "actor": actor_of(principal),
            "action": f"{method} {event.get('resource', '')}",
            "http_status": status,
            **({"user_id": answered_user} if answered_user else {}),
            **{name: str(value) for name, value in path.items() if name.endswith("_id")},
        },
    )


@lru_cache(maxsize=1)
def bus() -> EventPublisher:
    return EventBridgePublisher(boto3.client("events"), get_settings().event_bus_name)

"""Builders shared by the billing tests."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.clock import IST
from shared.models import SubscriberType, Subscription


def ist(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=IST).astimezone(UTC)


def period(
    price_paise: int,
    started_at: datetime,
    ended_at: datetime | None = None,
    *,
    plan_id: str = "POST_PLUS_599",
    plan_type: SubscriberType = SubscriberType.POSTPAID,
    subscription_id: str | None = None,
) -> Subscription:
    return Subscription(
        subscription_id=subscription_id or f"sub-{started_at.timestamp()}",
        user_id="u1",
        plan_id=plan_id,
        plan_type=plan_type,
        price_paise=price_paise,
        started_at=started_at,
        valid_until=None,
        ended_at=ended_at,
    )

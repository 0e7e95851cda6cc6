"""Rating state across a prepaid extension: a repeat purchase queued after the
current period (payments' EXTEND) keeps the subscription id and moves the expiry;
usage after the old expiry must rate against a fresh quota, not be refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.catalog import seed_plans
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.services.usage import RatingSources, build_state, needs_refresh, place, refresh_state

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PLAN = next(plan for plan in seed_plans() if plan.plan_id == "PRE_SMART_299")
SUBSCRIBER = Subscriber(
    user_id="u1",
    msisdn="9876500001",
    subscriber_type=SubscriberType.PREPAID,
    state="KA",
    status=SubscriberStatus.ACTIVE,
    created_at=T0,
)


def _sources(valid_days: int) -> RatingSources:
    subscription = Subscription(
        subscription_id="sub-1",
        user_id="u1",
        plan_id=PLAN.plan_id,
        plan_type=SubscriberType.PREPAID,
        price_paise=PLAN.price_paise,
        started_at=T0,
        valid_until=T0 + timedelta(days=valid_days),
    )
    return RatingSources(SUBSCRIBER, subscription, PLAN, wallet_paise=0)


def test_usage_after_the_old_expiry_counts_in_the_extension_with_a_fresh_quota() -> None:
    state = build_state("9876500001", _sources(28))
    assert state is not None
    old_expiry = T0 + timedelta(days=28)
    assert place(state, old_expiry + timedelta(days=1)) is None  # before the extension
    assert needs_refresh(state, old_expiry + timedelta(days=1))

    extended = refresh_state(state, _sources(56))

    later = place(extended, old_expiry + timedelta(days=1))
    assert later is not None
    assert (later.start, later.end) == (old_expiry, T0 + timedelta(days=56))
    assert (later.balance.used_data_bytes, later.balance.used_voice_seconds) == (0, 0)
    assert later.plan.data_bytes == PLAN.data_bytes  # the plan's whole quota again
    current = place(extended, T0 + timedelta(days=10))
    assert current is not None
    assert current.start == T0
    assert not current.closed  # the current period runs on to its end
    assert not needs_refresh(extended, old_expiry + timedelta(days=1))


def test_refreshing_with_the_same_expiry_changes_nothing() -> None:
    state = build_state("9876500001", _sources(28))
    assert state is not None

    again = refresh_state(state, _sources(28))

    assert set(again.cycles) == set(state.cycles)

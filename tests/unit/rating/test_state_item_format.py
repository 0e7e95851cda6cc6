"""The rating state's stored form (shared/stores/usage.py), without a table: what
goes in comes back, to the microsecond and the counter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.models import SubscriberType, Subscription
from shared.rating import UsageBalance
from shared.services.usage import RatingSources, RatingState, build_state, place
from shared.stores.usage import BALANCE_KEYS, from_item, plan_snapshots, to_item
from tests.unit.rating.test_rating_state import PLAN, SUBSCRIBER

# A purchase's own moment: prepaid periods start and end mid-second.
BOUGHT = datetime(2026, 11, 25, 10, 0, 7, 654_321, tzinfo=UTC)


def prepaid_state() -> RatingState:
    subscription = Subscription(
        subscription_id="sub-1",
        user_id=SUBSCRIBER.user_id,
        plan_id=PLAN.plan_id,
        plan_type=SubscriberType.PREPAID,
        price_paise=PLAN.price_paise,
        started_at=BOUGHT,
        valid_until=BOUGHT + timedelta(days=28),
    )
    state = build_state(SUBSCRIBER.msisdn, RatingSources(SUBSCRIBER, subscription, PLAN, 0))
    assert state is not None
    return state


def round_trip(state: RatingState) -> RatingState:
    return from_item(to_item(state), plan_snapshots(state))


def test_every_balance_counter_but_the_wallet_has_its_own_stored_name() -> None:
    counters = set(UsageBalance.model_fields) - {"wallet_paise"}

    assert set(BALANCE_KEYS) == counters
    assert len(set(BALANCE_KEYS.values())) == len(BALANCE_KEYS)


def test_a_cdr_just_before_a_prepaid_expiry_still_finds_its_period_after_a_reload() -> None:
    expiry = BOUGHT + timedelta(days=28)

    reloaded = round_trip(prepaid_state())

    (period,) = reloaded.cycles.values()
    assert (period.start, period.end) == (BOUGHT, expiry)
    assert place(reloaded, expiry - timedelta(milliseconds=300)) is period
    assert place(reloaded, expiry) is None


def test_counters_and_day_columns_come_back_as_they_went_in() -> None:
    state = prepaid_state()
    (period,) = state.cycles.values()
    period.balance = UsageBalance(used_sms=3, overage_voice_paise=250, voice_exhausted=True)
    period.daily = {"2026-11-25": [0, 0, 1], "2026-11-27": [10_240, 60, 2]}

    (reloaded,) = round_trip(state).cycles.values()

    assert reloaded.balance == period.balance
    assert reloaded.daily == period.daily


def test_a_state_whose_plan_snapshot_is_missing_says_which_one() -> None:
    item = to_item(prepaid_state())

    with pytest.raises(LookupError, match="MSISDN#9876500001"):
        from_item(item, {})

"""SubscriptionService rules against in-memory ports (tests/fakes.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.catalog import seed_plans
from shared.clock import FixedClock
from shared.errors import (
    ActivePlanExists,
    BackdatedChange,
    ConcurrentModification,
    InsufficientBalance,
    InvalidRequest,
    NoActivePlan,
    PlanNotAllowed,
    PlanNotFound,
    SamePlan,
    SubscriberNotActive,
    UserNotFound,
)
from shared.events import InMemoryEventPublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.services.subscriptions import ChangeType, SubscriptionService
from tests.fakes import InMemoryPlanCatalog, InMemorySubscriptionStore

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PREPAID, POSTPAID = SubscriberType.PREPAID, SubscriberType.POSTPAID


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def store() -> InMemorySubscriptionStore:
    return InMemorySubscriptionStore()


@pytest.fixture
def events() -> InMemoryEventPublisher:
    return InMemoryEventPublisher()


@pytest.fixture
def catalog() -> InMemoryPlanCatalog:
    plans = seed_plans()
    retired = next(p for p in plans if p.plan_id == "PRE_DATA_49").model_copy(
        update={"plan_id": "PRE_RETIRED_99", "active": False}
    )
    return InMemoryPlanCatalog([*plans, retired])


@pytest.fixture
def service(
    catalog: InMemoryPlanCatalog,
    store: InMemorySubscriptionStore,
    events: InMemoryEventPublisher,
    clock: FixedClock,
) -> SubscriptionService:
    return SubscriptionService(catalog, store, events, clock)


AddSubscriber = Callable[..., Subscriber]


@pytest.fixture
def add_subscriber(store: InMemorySubscriptionStore) -> AddSubscriber:
    def add(
        user_id: str = "u1",
        subscriber_type: SubscriberType = PREPAID,
        *,
        wallet_paise: int = 0,
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
        bill_cycle_day: int = 1,
    ) -> Subscriber:
        subscriber = Subscriber(
            user_id=user_id,
            msisdn="919800000001",
            subscriber_type=subscriber_type,
            state="KA",
            status=status,
            bill_cycle_day=bill_cycle_day,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        store.put_subscriber(subscriber)
        if wallet_paise:
            store.credit_wallet(user_id, wallet_paise)
        return subscriber

    return add


def snapshot(store: InMemorySubscriptionStore, user_id: str) -> tuple[object, ...]:
    return (store.get_active(user_id), store.history(user_id), store.wallet_balance(user_id))


# --- subscribe -------------------------------------------------------------------


def test_prepaid_subscribe_debits_the_wallet_and_starts_the_plan(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    events: InMemoryEventPublisher,
    add_subscriber: AddSubscriber,
) -> None:
    add_subscriber(wallet_paise=50_000)
    result = service.subscribe("u1", "PRE_SMART_299")

    assert result.change_type is ChangeType.SUBSCRIBE
    assert result.effective_at == T0
    assert result.valid_until == T0 + timedelta(days=28)
    assert result.wallet_debit_paise == result.net_amount_paise == 29_900
    assert [line.amount_paise for line in result.proration] == [29_900]
    assert not result.billed_on_invoice
    assert store.wallet_balance("u1") == 50_000 - 29_900
    active = store.get_active("u1")
    assert active is not None
    assert (active.plan_id, active.subscription_id) == ("PRE_SMART_299", result.subscription_id)
    assert [s.subscription_id for s in store.history("u1")] == [result.subscription_id]
    assert len(events.of_type("PlanChanged")) == 1


def test_postpaid_subscribe_bills_the_rest_of_the_cycle_on_the_invoice(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    add_subscriber: AddSubscriber,
    clock: FixedClock,
) -> None:
    add_subscriber("p1", POSTPAID, bill_cycle_day=1)  # no wallet needed
    clock.advance(datetime(2026, 11, 15, 18, 30, tzinfo=UTC) - T0)  # 16 Nov 00:00 IST
    result = service.subscribe("p1", "POST_BASIC_399")

    assert result.valid_until is None
    assert result.billed_on_invoice
    assert result.wallet_debit_paise == 0
    # 16 Nov .. 1 Dec 00:00 IST = 15 of 30 days: 39900 * 15 / 30 = 19950
    assert [line.amount_paise for line in result.proration] == [19_950]
    assert store.wallet_balance("p1") == 0


def test_second_subscribe_is_refused_and_changes_nothing(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    events: InMemoryEventPublisher,
    add_subscriber: AddSubscriber,
) -> None:
    add_subscriber(wallet_paise=200_000)
    service.subscribe("u1", "PRE_SMART_299")
    before = snapshot(store, "u1")

    with pytest.raises(ActivePlanExists):
        service.subscribe("u1", "PRE_VALUE_719")

    assert snapshot(store, "u1") == before
    assert len(events.events) == 1


def test_postpaid_plan_never_expires_so_second_subscribe_is_refused_later(
    service: SubscriptionService, add_subscriber: AddSubscriber, clock: FixedClock
) -> None:
    add_subscriber("p1", POSTPAID)
    service.subscribe("p1", "POST_BASIC_399")
    clock.advance(timedelta(days=400))
    with pytest.raises(ActivePlanExists):
        service.subscribe("p1", "POST_PLUS_599")


def test_expired_prepaid_plan_can_be_replaced_by_a_new_subscribe(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    add_subscriber: AddSubscriber,
    clock: FixedClock,
) -> None:
    add_subscriber(wallet_paise=100_000)
    service.subscribe("u1", "PRE_SMART_299")
    clock.advance(timedelta(days=27, hours=23))
    with pytest.raises(ActivePlanExists):  # one hour of validity left
        service.subscribe("u1", "PRE_SMART_299")
    clock.advance(timedelta(hours=1))  # exactly at expiry
    result = service.subscribe("u1", "PRE_SMART_299")
    assert result.previous_plan_id is None
    assert store.wallet_balance("u1") == 100_000 - 2 * 29_900
    assert len(store.history("u1")) == 2


@pytest.mark.parametrize(
    ("subscriber_type", "plan_id"),
    [(PREPAID, "POST_BASIC_399"), (POSTPAID, "PRE_SMART_299")],
)
def test_plan_must_match_the_subscriber_type(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    add_subscriber: AddSubscriber,
    subscriber_type: SubscriberType,
    plan_id: str,
) -> None:
    add_subscriber("u1", subscriber_type, wallet_paise=100_000)
    with pytest.raises(PlanNotAllowed):
        service.subscribe("u1", plan_id)
    assert store.get_active("u1") is None
    assert store.wallet_balance("u1") == 100_000


def test_retired_plans_are_not_sold(
    service: SubscriptionService, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=100_000)
    with pytest.raises(PlanNotAllowed, match="no longer sold"):
        service.subscribe("u1", "PRE_RETIRED_99")


def test_unknown_plan_and_unknown_user(
    service: SubscriptionService, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=100_000)
    with pytest.raises(PlanNotFound):
        service.subscribe("u1", "PRE_NOPE_1")
    with pytest.raises(UserNotFound):
        service.subscribe("ghost", "PRE_SMART_299")


@pytest.mark.parametrize(
    "status",
    [
        SubscriberStatus.PENDING,
        SubscriberStatus.PENDING_DISCONNECT,
        SubscriberStatus.PERMANENT_DISCONNECTED,
    ],
)
def test_only_live_subscribers_change_plans(
    service: SubscriptionService, add_subscriber: AddSubscriber, status: SubscriberStatus
) -> None:
    add_subscriber(wallet_paise=100_000, status=status)
    with pytest.raises(SubscriberNotActive):
        service.subscribe("u1", "PRE_SMART_299")


def test_temporarily_blocked_subscriber_may_still_recharge(
    service: SubscriptionService, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=100_000, status=SubscriberStatus.TEMP_BLOCKED)
    assert service.subscribe("u1", "PRE_SMART_299").plan_id == "PRE_SMART_299"


def test_insufficient_wallet_changes_nothing(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    events: InMemoryEventPublisher,
    add_subscriber: AddSubscriber,
) -> None:
    add_subscriber(wallet_paise=29_899)  # one paisa short
    with pytest.raises(InsufficientBalance):
        service.subscribe("u1", "PRE_SMART_299")
    assert store.get_active("u1") is None
    assert store.history("u1") == []
    assert store.wallet_balance("u1") == 29_899
    assert events.events == []


def test_wallet_exactly_covering_the_price_is_enough(
    service: SubscriptionService, store: InMemorySubscriptionStore, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=29_900)
    service.subscribe("u1", "PRE_SMART_299")
    assert store.wallet_balance("u1") == 0


# --- effective_at --------------------------------------------------------------


def test_backdated_change_is_refused(
    service: SubscriptionService, store: InMemorySubscriptionStore, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=100_000)
    with pytest.raises(BackdatedChange):
        service.subscribe("u1", "PRE_SMART_299", effective_at=T0 - timedelta(days=1))
    assert store.get_active("u1") is None
    assert store.wallet_balance("u1") == 100_000


def test_backdated_upgrade_is_refused(
    service: SubscriptionService, store: InMemorySubscriptionStore, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=200_000)
    service.subscribe("u1", "PRE_SMART_299")
    before = snapshot(store, "u1")
    with pytest.raises(BackdatedChange):
        service.change_plan("u1", "PRE_VALUE_719", effective_at=T0 - timedelta(minutes=5))
    assert snapshot(store, "u1") == before


def test_scheduled_and_naive_effective_at_are_invalid(
    service: SubscriptionService, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=100_000)
    with pytest.raises(InvalidRequest, match="scheduling"):
        service.subscribe("u1", "PRE_SMART_299", effective_at=T0 + timedelta(days=1))
    with pytest.raises(InvalidRequest, match="offset"):
        service.subscribe("u1", "PRE_SMART_299", effective_at=T0.replace(tzinfo=None))


def test_client_clock_skew_is_tolerated_and_the_server_time_is_used(
    service: SubscriptionService, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=100_000)
    result = service.subscribe("u1", "PRE_SMART_299", effective_at=T0 - timedelta(seconds=30))
    assert result.effective_at == T0


# --- change_plan ---------------------------------------------------------------


def test_change_without_an_active_plan(
    service: SubscriptionService, add_subscriber: AddSubscriber, clock: FixedClock
) -> None:
    add_subscriber(wallet_paise=100_000)
    with pytest.raises(NoActivePlan):
        service.change_plan("u1", "PRE_VALUE_719")
    service.subscribe("u1", "PRE_DATA_49")
    clock.advance(timedelta(days=7))  # expired
    with pytest.raises(NoActivePlan):
        service.change_plan("u1", "PRE_SMART_299")


def test_change_to_the_same_plan(
    service: SubscriptionService, add_subscriber: AddSubscriber
) -> None:
    add_subscriber(wallet_paise=100_000)
    service.subscribe("u1", "PRE_SMART_299")
    with pytest.raises(SamePlan):
        service.change_plan("u1", "PRE_SMART_299")


def test_upgrade_closes_the_old_period_and_opens_the_new(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    add_subscriber: AddSubscriber,
    clock: FixedClock,
) -> None:
    add_subscriber(wallet_paise=200_000)
    first = service.subscribe("u1", "PRE_SMART_299")
    clock.advance(timedelta(days=3))
    second = service.change_plan("u1", "PRE_VALUE_719")

    old_period, new_period = store.history("u1")
    assert old_period.subscription_id == first.subscription_id
    assert old_period.ended_at == T0 + timedelta(days=3)
    assert new_period.subscription_id == second.subscription_id
    assert new_period.ended_at is None
    active = store.get_active("u1")
    assert active is not None
    assert active.subscription_id == second.subscription_id
    assert second.previous_plan_id == "PRE_SMART_299"


def test_upgrade_with_insufficient_wallet_keeps_the_old_plan(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    events: InMemoryEventPublisher,
    add_subscriber: AddSubscriber,
    clock: FixedClock,
) -> None:
    add_subscriber(wallet_paise=29_900)
    first = service.subscribe("u1", "PRE_SMART_299")  # wallet now 0
    clock.advance(timedelta(days=1))
    before = snapshot(store, "u1")
    with pytest.raises(InsufficientBalance):
        service.change_plan("u1", "PRE_VALUE_719")
    assert snapshot(store, "u1") == before
    active = store.get_active("u1")
    assert active is not None
    assert active.subscription_id == first.subscription_id
    assert len(events.events) == 1


def test_prepaid_downgrade_credits_the_unused_value_to_the_wallet(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    add_subscriber: AddSubscriber,
    clock: FixedClock,
) -> None:
    add_subscriber(wallet_paise=71_900)
    service.subscribe("u1", "PRE_VALUE_719")  # wallet 0
    clock.advance(timedelta(days=42))  # half of 84 days used
    result = service.change_plan("u1", "PRE_DATA_49")
    # credit = 71900 * 42 / 84 = 35950; purchase 4900; net -31050 (a credit)
    assert [line.amount_paise for line in result.proration] == [-35_950, 4_900]
    assert result.change_type is ChangeType.DOWNGRADE
    assert result.wallet_debit_paise == result.net_amount_paise == -31_050
    assert store.wallet_balance("u1") == 31_050


def test_the_service_reports_a_lost_race(
    service: SubscriptionService,
    store: InMemorySubscriptionStore,
    add_subscriber: AddSubscriber,
    clock: FixedClock,
) -> None:
    """Between reading the active plan and writing, someone else changed it."""
    add_subscriber(wallet_paise=500_000)
    service.subscribe("u1", "PRE_SMART_299")
    stale = store.get_active("u1")
    clock.advance(timedelta(days=1))
    service.change_plan("u1", "PRE_VALUE_719")
    store_view = store.get_active

    def stale_read(user_id: str) -> Subscription | None:
        return stale if user_id == "u1" else store_view(user_id)

    store.get_active = stale_read  # type: ignore[method-assign]
    before = (store.active["u1"], store.history("u1"), store.wallet_balance("u1"))
    with pytest.raises(ConcurrentModification):
        service.change_plan("u1", "PRE_ANNUAL_2999")
    assert (store.active["u1"], store.history("u1"), store.wallet_balance("u1")) == before


# --- the PlanChanged event -------------------------------------------------------


def test_plan_changed_event_describes_the_change(
    service: SubscriptionService,
    events: InMemoryEventPublisher,
    add_subscriber: AddSubscriber,
    clock: FixedClock,
) -> None:
    add_subscriber(wallet_paise=200_000)
    first = service.subscribe("u1", "PRE_SMART_299")
    clock.advance(timedelta(days=10))
    second = service.change_plan("u1", "PRE_VALUE_719")

    subscribed, upgraded = events.of_type("PlanChanged")
    assert subscribed.source == "plans"
    assert subscribed.detail["change_type"] == "SUBSCRIBE"
    assert subscribed.detail["previous_plan_id"] is None
    assert upgraded.occurred_at == T0 + timedelta(days=10)
    assert upgraded.detail == {
        "user_id": "u1",
        "subscriber_type": "prepaid",
        "change_type": "UPGRADE",
        "plan_id": "PRE_VALUE_719",
        "previous_plan_id": "PRE_SMART_299",
        "subscription_id": second.subscription_id,
        "valid_until": (T0 + timedelta(days=94)).isoformat(),
        "net_amount_paise": 52_679,
        "wallet_debit_paise": 52_679,
    }
    assert upgraded.detail["subscription_id"] != first.subscription_id
    envelope = upgraded.envelope()
    assert envelope["occurred_at"] == "2026-12-05T10:00:00+00:00"
    assert envelope["event_id"] == upgraded.event_id


def test_no_event_when_the_change_is_refused(
    service: SubscriptionService, events: InMemoryEventPublisher, add_subscriber: AddSubscriber
) -> None:
    add_subscriber("p1", POSTPAID)
    with pytest.raises(PlanNotAllowed):
        service.subscribe("p1", "PRE_SMART_299")
    with pytest.raises(NoActivePlan):
        service.change_plan("p1", "POST_PLUS_599")
    assert events.events == []

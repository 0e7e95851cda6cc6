"""Hand-computed proration examples (exact paise), through the service with fakes.

The same prepaid and postpaid examples run through the HTTP handler in
tests/integration/test_plans_api.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.catalog import seed_plans
from shared.clock import IST, FixedClock
from shared.events import InMemoryEventPublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.services.subscriptions import ChangeType, SubscriptionService
from tests.fakes import InMemoryPlanCatalog, InMemorySubscriptionStore


def ist(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=IST)


class World:
    def __init__(self, start: datetime) -> None:
        self.clock = FixedClock(start)
        self.store = InMemorySubscriptionStore()
        self.catalog = InMemoryPlanCatalog(seed_plans())
        self.service = SubscriptionService(
            self.catalog, self.store, InMemoryEventPublisher(), self.clock
        )

    def subscriber(
        self, kind: SubscriberType, *, wallet_paise: int = 0, bill_cycle_day: int = 1
    ) -> str:
        self.store.put_subscriber(
            Subscriber(
                user_id="u1",
                msisdn="919800000001",
                subscriber_type=kind,
                state="KA",
                status=SubscriberStatus.ACTIVE,
                bill_cycle_day=bill_cycle_day,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        if wallet_paise:
            self.store.credit_wallet("u1", wallet_paise)
        return "u1"

    def move_to(self, moment: datetime) -> None:
        self.clock.advance(moment - self.clock.now())


def test_prepaid_upgrade_after_10_of_28_days() -> None:
    """PRE_SMART_299 (29900 paise, 28 days) bought at T, upgraded to PRE_VALUE_719
    (71900 paise, 84 days) exactly 10 days later.

    unused credit = 29900 * 18 days / 28 days = 19221.43 -> 19221 (half-up)
                    (to the second: 29900 * 1,555,200 / 2,419,200, same value)
    wallet debit  = 71900 - 19221 = 52679
    wallet        = 100000 - 29900 - 52679 = 17421
    new validity  = 84 days from the upgrade
    """
    t = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    world = World(t)
    user = world.subscriber(SubscriberType.PREPAID, wallet_paise=100_000)
    world.service.subscribe(user, "PRE_SMART_299")
    world.move_to(t + timedelta(days=10))

    result = world.service.change_plan(user, "PRE_VALUE_719")

    credit, purchase = result.proration
    assert (credit.plan_id, credit.amount_paise) == ("PRE_SMART_299", -19_221)
    assert (credit.period_start, credit.period_end) == (
        t + timedelta(days=10),
        t + timedelta(days=28),
    )
    assert (purchase.plan_id, purchase.amount_paise) == ("PRE_VALUE_719", 71_900)
    assert result.net_amount_paise == 52_679
    assert result.wallet_debit_paise == 52_679
    assert result.change_type is ChangeType.UPGRADE
    assert result.valid_until == t + timedelta(days=10 + 84)
    assert world.store.wallet_balance(user) == 17_421


def test_postpaid_upgrade_mid_cycle() -> None:
    """bill_cycle_day 1, on POST_BASIC_399 (39900) since before the cycle, upgrades to
    POST_PLUS_599 (59900) at 2026-11-16 00:00 IST.

    cycle    = 2026-11-01 00:00 IST .. 2026-12-01 00:00 IST = 30 days = 2,592,000 s
    old line = 39900 * 15 / 30 = 19950   (1 Nov .. 16 Nov)
    new line = 59900 * 15 / 30 = 29950   (16 Nov .. 1 Dec)
    nothing leaves a wallet: both lines go on the next invoice
    """
    world = World(ist(2026, 10, 20))
    user = world.subscriber(SubscriberType.POSTPAID, bill_cycle_day=1)
    world.service.subscribe(user, "POST_BASIC_399")
    world.move_to(ist(2026, 11, 16))

    result = world.service.change_plan(user, "POST_PLUS_599")

    old, new = result.proration
    assert (old.plan_id, old.amount_paise) == ("POST_BASIC_399", 19_950)
    assert (old.period_start, old.period_end) == (ist(2026, 11, 1), ist(2026, 11, 16))
    assert (new.plan_id, new.amount_paise) == ("POST_PLUS_599", 29_950)
    assert (new.period_start, new.period_end) == (ist(2026, 11, 16), ist(2026, 12, 1))
    assert result.net_amount_paise == 49_900
    assert result.wallet_debit_paise == 0
    assert result.billed_on_invoice
    assert result.valid_until is None


@pytest.mark.parametrize(
    ("upgrade_at", "old_paise", "new_paise"),
    [
        # 6 h into a 30-day cycle (720 h):
        #   old = 39900 * 6 / 720   = 332.5    -> 333   (exactly half: rounds up)
        #   new = 59900 * 714 / 720 = 59400.83 -> 59401
        (ist(2026, 11, 1, 6), 333, 59_401),
        # 7 of 30 days:
        #   old = 39900 * 7 / 30  = 9310 exactly
        #   new = 59900 * 23 / 30 = 45923.33 -> 45923
        (ist(2026, 11, 8), 9_310, 45_923),
        # December, a 31-day cycle, 10 days in:
        #   old = 39900 * 10 / 31 = 12870.97 -> 12871
        #   new = 59900 * 21 / 31 = 40577.42 -> 40577
        (ist(2026, 12, 11), 12_871, 40_577),
        # February 2027, a 28-day cycle, 14 days in:
        #   old = 39900 * 14 / 28 = 19950, new = 59900 * 14 / 28 = 29950
        (ist(2027, 2, 15), 19_950, 29_950),
    ],
)
def test_postpaid_upgrade_rounds_each_line_half_up(
    upgrade_at: datetime, old_paise: int, new_paise: int
) -> None:
    world = World(ist(2026, 10, 20))
    user = world.subscriber(SubscriberType.POSTPAID, bill_cycle_day=1)
    world.service.subscribe(user, "POST_BASIC_399")
    world.move_to(upgrade_at)

    result = world.service.change_plan(user, "POST_PLUS_599")

    assert [line.amount_paise for line in result.proration] == [old_paise, new_paise]
    # the total is the sum of the rounded lines, never re-rounded
    assert result.net_amount_paise == old_paise + new_paise


def test_postpaid_old_line_starts_at_the_plan_start_within_the_cycle() -> None:
    """Subscribed 5 Nov, upgraded 20 Nov (bill day 1, 30-day cycle).

    old = 39900 * 15 / 30 = 19950 (5 Nov .. 20 Nov), new = 59900 * 11 / 30 = 21963.33 -> 21963
    """
    world = World(ist(2026, 11, 5))
    user = world.subscriber(SubscriberType.POSTPAID, bill_cycle_day=1)
    world.service.subscribe(user, "POST_BASIC_399")
    world.move_to(ist(2026, 11, 20))

    old, new = world.service.change_plan(user, "POST_PLUS_599").proration

    assert (old.period_start, old.amount_paise) == (ist(2026, 11, 5), 19_950)
    assert new.amount_paise == 21_963


def test_prepaid_credit_is_prorated_to_the_second() -> None:
    """PRE_DATA_49 (4900 paise, 7 days = 604,800 s) upgraded with 2,160 s left.

    credit = 4900 * 2160 / 604800 = 17.5 -> 18 (half-up); debit = 29900 - 18 = 29882
    """
    t = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    world = World(t)
    user = world.subscriber(SubscriberType.PREPAID, wallet_paise=50_000)
    world.service.subscribe(user, "PRE_DATA_49")
    world.move_to(t + timedelta(days=7) - timedelta(seconds=2_160))

    result = world.service.change_plan(user, "PRE_SMART_299")

    assert [line.amount_paise for line in result.proration] == [-18, 29_900]
    assert result.wallet_debit_paise == 29_882
    assert world.store.wallet_balance(user) == 50_000 - 4_900 - 29_882


def test_postpaid_old_line_uses_the_price_the_plan_was_bought_at() -> None:
    """The catalog raises POST_BASIC_399 to 449 mid-cycle; the subscriber's first half
    of November is still billed at 399: 39900 * 15 / 30 = 19950."""
    world = World(ist(2026, 10, 20))
    user = world.subscriber(SubscriberType.POSTPAID, bill_cycle_day=1)
    world.service.subscribe(user, "POST_BASIC_399")
    basic = world.catalog.get("POST_BASIC_399")
    world.catalog.put(basic.model_copy(update={"price_paise": 44_900}))
    world.move_to(ist(2026, 11, 16))

    old, _ = world.service.change_plan(user, "POST_PLUS_599").proration

    assert old.amount_paise == 19_950

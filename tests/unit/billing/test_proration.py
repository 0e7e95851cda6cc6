"""Rental proration to the second: hand-computed examples per month length and
February cycle days, agreement with the subscriptions service, and properties."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.billing import InvoiceLine, LineKind, bill_date_for, rental_lines
from shared.catalog import seed_plans
from shared.clock import FixedClock
from shared.cycles import BillCycle, cycle_containing
from shared.events import InMemoryEventPublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.services.subscriptions import SubscriptionService
from tests.fakes import InMemoryPlanCatalog, InMemorySubscriptionStore
from tests.unit.billing.builders import ist, period

DAY = 86_400


def reference_share(price: int, seconds: int, whole: int) -> int:
    """Independent of shared.money: exact fraction, then half-up."""
    exact = Fraction(price * seconds, whole)
    return int(exact + Fraction(1, 2)) if exact >= 0 else -int(-exact + Fraction(1, 2))


def billed_seconds(line: InvoiceLine) -> int:
    assert line.period_start is not None
    assert line.period_end is not None
    return int((line.period_end - line.period_start).total_seconds())


def total(lines: list[InvoiceLine]) -> int:
    return sum(line.amount_paise for line in lines)


# --- hand-computed examples ----------------------------------------------------------

HAND_EXAMPLES = [
    # (label, cycle day, a moment in the cycle, change at,
    #  old price, new price, old paise, new paise)
    # Feb 2027 (28 days): 10 days of 599 -> 59900*10/28 = 21392.857 -> 21393;
    # 18 days of 1499 -> 149900*18/28 = 96364.286 -> 96364.
    ("28-day Feb 2027", 1, ist(2027, 2, 5), ist(2027, 2, 11), 59900, 149900, 21393, 96364),
    # Feb 2028 (29 days, leap): 14 days of 599 -> 59900*14/29 = 28917.241 -> 28917;
    # 15 days of 1499 -> 149900*15/29 = 77534.483 -> 77534.
    ("29-day Feb 2028", 1, ist(2028, 2, 5), ist(2028, 2, 15), 59900, 149900, 28917, 77534),
    # Apr 2026 (30 days): 9.5 days of 399 -> 39900*9.5/30 = 12635 exactly;
    # 20.5 days of 599 -> 59900*20.5/30 = 40931.667 -> 40932.
    ("30-day Apr 2026", 1, ist(2026, 4, 5), ist(2026, 4, 10, 12), 39900, 59900, 12635, 40932),
    # Jan 2027 (31 days): 15 days of 399 -> 39900*15/31 = 19306.452 -> 19306;
    # 16 days of 599 -> 59900*16/31 = 30916.129 -> 30916.
    ("31-day Jan 2027", 1, ist(2027, 1, 5), ist(2027, 1, 16), 39900, 59900, 19306, 30916),
    # Exactly half a paisa rounds up: 35 paise * 14/28 = 17.5 -> 18 on both halves
    # (the two lines sum to 36: the n/2 rounding allowance of the property below).
    ("half paisa, Feb 2027", 1, ist(2027, 2, 5), ist(2027, 2, 15), 35, 35, 18, 18),
]


@pytest.mark.parametrize("example", HAND_EXAMPLES, ids=[example[0] for example in HAND_EXAMPLES])
def test_hand_computed_plan_change(
    example: tuple[str, int, datetime, datetime, int, int, int, int],
) -> None:
    _, day, inside, change, old_price, new_price, old_paise, new_paise = example
    cycle = cycle_containing(day, inside)
    periods = [
        period(old_price, cycle.start - timedelta(days=40), change, plan_id="OLD"),
        period(new_price, change, plan_id="NEW"),
    ]
    lines = rental_lines(periods, cycle)
    assert [(line.plan_id, line.amount_paise) for line in lines] == [
        ("OLD", old_paise),
        ("NEW", new_paise),
    ]
    assert lines[0].period_start == cycle.start
    assert lines[1].period_end == cycle.end


@pytest.mark.parametrize(
    ("inside", "days"),
    [
        (ist(2027, 2, 10), 28),
        (ist(2028, 2, 10), 29),
        (ist(2026, 4, 10), 30),
        (ist(2027, 1, 10), 31),
    ],
)
def test_a_whole_cycle_bills_exactly_the_price(inside: datetime, days: int) -> None:
    cycle = cycle_containing(1, inside)
    assert cycle.seconds == days * DAY
    [line] = rental_lines([period(59900, cycle.start - timedelta(days=3))], cycle)
    assert line.amount_paise == 59900
    assert line.kind is LineKind.RENTAL
    assert line.quantity == f"{days}d of {days}d"
    assert line.taxable


# Cycle days 29-31 in February clamp to the month's last day (shared.cycles).
FEBRUARY_CYCLES = [
    # (cycle day, moment, first IST day, bill date = next cycle start, days)
    (29, ist(2027, 2, 10), "2027-01-29", "2027-02-28", 30),
    (29, ist(2027, 2, 28, 12), "2027-02-28", "2027-03-29", 29),
    (30, ist(2027, 2, 10), "2027-01-30", "2027-02-28", 29),
    (30, ist(2027, 2, 28, 12), "2027-02-28", "2027-03-30", 30),
    (31, ist(2027, 2, 10), "2027-01-31", "2027-02-28", 28),
    (31, ist(2027, 2, 28, 12), "2027-02-28", "2027-03-31", 31),
    (29, ist(2028, 2, 10), "2028-01-29", "2028-02-29", 31),
    (29, ist(2028, 2, 29, 12), "2028-02-29", "2028-03-29", 29),
    (30, ist(2028, 2, 10), "2028-01-30", "2028-02-29", 30),
    (30, ist(2028, 2, 29, 12), "2028-02-29", "2028-03-30", 30),
    (31, ist(2028, 2, 10), "2028-01-31", "2028-02-29", 29),
    (31, ist(2028, 2, 29, 12), "2028-02-29", "2028-03-31", 31),
]


@pytest.mark.parametrize(("day", "moment", "first", "bill_date", "days"), FEBRUARY_CYCLES)
def test_cycle_days_29_to_31_in_february(
    day: int, moment: datetime, first: str, bill_date: str, days: int
) -> None:
    cycle = cycle_containing(day, moment)
    assert cycle.label == first
    assert bill_date_for(cycle).isoformat() == bill_date
    assert cycle.seconds == days * DAY
    # Whole cycle: the price. Split at an odd second: each part by hand (exact fraction).
    assert total(rental_lines([period(39900, cycle.start)], cycle)) == 39900
    split = cycle.start + timedelta(days=days // 2, seconds=12_345)
    before = (days // 2) * DAY + 12_345
    lines = rental_lines([period(39900, cycle.start, split), period(59900, split)], cycle)
    assert [line.amount_paise for line in lines] == [
        reference_share(39900, before, days * DAY),
        reference_share(59900, days * DAY - before, days * DAY),
    ]


def test_periods_outside_the_cycle_and_prepaid_periods_are_not_billed() -> None:
    cycle = cycle_containing(1, ist(2026, 4, 10))
    periods = [
        period(39900, cycle.start - timedelta(days=60), cycle.start),  # ended as cycle began
        period(59900, cycle.end),  # starts next cycle
        period(29900, cycle.start, plan_type=SubscriberType.PREPAID, plan_id="PRE_SMART_299"),
    ]
    assert rental_lines(periods, cycle) == []


def test_final_invoice_bills_until_the_cutoff_at_the_cycle_rate() -> None:
    cycle = cycle_containing(1, ist(2026, 4, 10))  # 30 days
    [line] = rental_lines([period(59900, cycle.start)], cycle, until=ist(2026, 4, 11))
    assert line.amount_paise == 19967  # 59900 * 10/30 = 19966.67 -> 19967
    assert line.period_end == ist(2026, 4, 11)
    assert bill_date_for(cycle, ist(2026, 4, 11, 15)).isoformat() == "2026-04-11"


# --- agreement with the subscriptions service ---------------------------------------


def test_rental_lines_repeat_what_the_subscriptions_service_showed() -> None:
    """Two postpaid changes in one cycle, at instants with microseconds: every
    closed period bills exactly the 'until' line shown at its change, the last
    open period exactly the 'from' line of the last change."""
    store = InMemorySubscriptionStore()
    clock = FixedClock(ist(2026, 3, 20, 9))
    service = SubscriptionService(
        InMemoryPlanCatalog(seed_plans()), store, InMemoryEventPublisher(), clock
    )
    store.put_subscriber(
        Subscriber(
            user_id="u1",
            msisdn="9800000001",
            subscriber_type=SubscriberType.POSTPAID,
            state="KA",
            status=SubscriberStatus.ACTIVE,
            bill_cycle_day=5,
            created_at=ist(2026, 3, 1),
        )
    )
    service.subscribe("u1", "POST_BASIC_399")  # previous cycle
    clock.advance(ist(2026, 4, 12, 17, 3, second=7) - clock.now() + timedelta(microseconds=654_321))
    first = service.change_plan("u1", "POST_PLUS_599")
    clock.advance(timedelta(days=9, hours=5, seconds=41, microseconds=500_000))
    second = service.change_plan("u1", "POST_BUSINESS_1499")

    cycle = cycle_containing(5, clock.now())
    billed = rental_lines(store.history("u1"), cycle)
    shown = [first.proration[0], second.proration[0], second.proration[1]]
    assert [(line.plan_id, line.amount_paise) for line in billed] == [
        (line.plan_id, line.amount_paise) for line in shown
    ]
    assert [line.period_start for line in billed] == [line.period_start for line in shown]


# --- properties ----------------------------------------------------------------------

CYCLES = [
    cycle_containing(day, moment)
    for day, moment in [
        (1, ist(2027, 2, 10)),  # 28 days
        (1, ist(2028, 2, 10)),  # 29 days, leap year
        (1, ist(2026, 4, 10)),  # 30 days
        (1, ist(2027, 1, 10)),  # 31 days
        (31, ist(2028, 2, 10)),  # cycle day 31 clamped in a leap February
        (29, ist(2027, 2, 28, 12)),  # cycle day 29 from a non-leap February
    ]
]


@st.composite
def split_cycles(draw: st.DrawFn) -> tuple[BillCycle, list[int]]:
    """A cycle and 0..8 distinct cut points (seconds after its start) inside it."""
    cycle = draw(st.sampled_from(CYCLES))
    cuts = draw(st.lists(st.integers(1, cycle.seconds - 1), max_size=8, unique=True))
    return cycle, sorted(cuts)


def periods_for(cycle: BillCycle, cuts: list[int], prices: list[int]) -> list[Subscription]:
    bounds = [cycle.start - timedelta(days=3)]
    bounds += [cycle.start + timedelta(seconds=cut) for cut in cuts]
    ends: list[datetime | None] = [*bounds[1:], None]
    return [
        period(price, start, end, plan_id=f"P{index}", subscription_id=f"s{index}")
        for index, (price, start, end) in enumerate(zip(prices, bounds, ends, strict=True))
    ]


@settings(max_examples=300, deadline=None)
@given(split_cycles(), st.integers(1, 10_000_000))
def test_one_price_split_any_way_sums_to_the_price_within_rounding(
    split: tuple[BillCycle, list[int]], price: int
) -> None:
    """n lines, each rounded half-up by at most half a paisa either way:
    P - (n-1)//2 <= sum <= P + n//2, and each line is the exact-fraction reference."""
    cycle, cuts = split
    lines = rental_lines(periods_for(cycle, cuts, [price] * (len(cuts) + 1)), cycle)
    n = len(lines)
    assert n == len(cuts) + 1
    assert price - (n - 1) // 2 <= total(lines) <= price + n // 2
    edges = [0, *cuts, cycle.seconds]
    expected = [
        reference_share(price, end - start, cycle.seconds) for start, end in pairwise(edges)
    ]
    assert [line.amount_paise for line in lines] == expected


@settings(max_examples=300, deadline=None)
@given(split_cycles(), st.data())
def test_any_plan_change_sequence_bills_at_most_one_full_rental(
    split: tuple[BillCycle, list[int]], data: st.DataObject
) -> None:
    """Whatever the plans, the rental never exceeds the dearest plan's full price
    (plus the n/2 paise rounding allowance) nor falls below the cheapest's."""
    cycle, cuts = split
    prices = data.draw(st.lists(st.integers(1, 500_000), min_size=len(cuts) + 1,
                                max_size=len(cuts) + 1))  # fmt: skip
    lines = rental_lines(periods_for(cycle, cuts, prices), cycle)
    n = len(lines)
    assert min(prices) - (n - 1) // 2 <= total(lines) <= max(prices) + n // 2
    assert sum(billed_seconds(line) for line in lines) == cycle.seconds

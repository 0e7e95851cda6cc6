"""Bill cycles (shared.cycles): start at 00:00 IST on the bill-cycle day, clamped
to the month's last day in shorter months."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.clock import IST
from shared.cycles import cycle_containing

DAY = 86_400


def ist(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=IST)


def test_november_cycle_for_day_1() -> None:
    cycle = cycle_containing(1, ist(2026, 11, 16))
    assert cycle.start == ist(2026, 11, 1)
    assert cycle.end == ist(2026, 12, 1)
    assert cycle.seconds == 30 * DAY == 2_592_000
    assert cycle.label == "2026-11-01"
    # UTC inside: 00:00 IST is 18:30 UTC the day before
    assert cycle.start.utcoffset() == timedelta(0)
    assert cycle.start == datetime(2026, 10, 31, 18, 30, tzinfo=UTC)


def test_cycle_starts_exactly_at_midnight_ist() -> None:
    midnight = ist(2026, 11, 1)
    assert cycle_containing(1, midnight).start == midnight
    one_second_before = midnight - timedelta(seconds=1)
    assert cycle_containing(1, one_second_before).end == midnight
    assert cycle_containing(1, one_second_before).start == ist(2026, 10, 1)


def test_the_ist_date_decides_not_the_utc_date() -> None:
    # 19:00 UTC on 31 Oct is 00:30 IST on 1 Nov: already the November cycle
    assert cycle_containing(1, datetime(2026, 10, 31, 19, 0, tzinfo=UTC)).label == "2026-11-01"
    # 18:00 UTC on 31 Oct is 23:30 IST on 31 Oct: still October
    assert cycle_containing(1, datetime(2026, 10, 31, 18, 0, tzinfo=UTC)).label == "2026-10-01"


@pytest.mark.parametrize(
    ("day", "at", "start", "end", "days"),
    [
        # day 1 across month lengths
        (1, ist(2026, 2, 10), ist(2026, 2, 1), ist(2026, 3, 1), 28),
        (1, ist(2028, 2, 10), ist(2028, 2, 1), ist(2028, 3, 1), 29),  # leap year
        (1, ist(2026, 12, 31, 23, 59), ist(2026, 12, 1), ist(2027, 1, 1), 31),
        # day 15: the cycle straddles months
        (15, ist(2026, 3, 10), ist(2026, 2, 15), ist(2026, 3, 15), 28),
        (15, ist(2026, 3, 15), ist(2026, 3, 15), ist(2026, 4, 15), 31),
        (15, ist(2027, 1, 5), ist(2026, 12, 15), ist(2027, 1, 15), 31),  # across the year end
        # day 29: February of a common year clamps to the 28th
        (29, ist(2027, 2, 10), ist(2027, 1, 29), ist(2027, 2, 28), 30),
        (29, ist(2027, 2, 28), ist(2027, 2, 28), ist(2027, 3, 29), 29),
        (29, ist(2028, 2, 29), ist(2028, 2, 29), ist(2028, 3, 29), 29),  # leap: the 29th exists
        (29, ist(2028, 2, 28), ist(2028, 1, 29), ist(2028, 2, 29), 31),
        # day 30
        (30, ist(2026, 2, 28), ist(2026, 2, 28), ist(2026, 3, 30), 30),
        (30, ist(2026, 2, 27), ist(2026, 1, 30), ist(2026, 2, 28), 29),
        (30, ist(2026, 4, 30), ist(2026, 4, 30), ist(2026, 5, 30), 30),
        (30, ist(2028, 2, 29), ist(2028, 2, 29), ist(2028, 3, 30), 30),
        # day 31: short months clamp to their last day
        (31, ist(2026, 4, 15), ist(2026, 3, 31), ist(2026, 4, 30), 30),
        (31, ist(2026, 4, 30), ist(2026, 4, 30), ist(2026, 5, 31), 31),
        (31, ist(2026, 6, 30, 12), ist(2026, 6, 30), ist(2026, 7, 31), 31),
        (31, ist(2027, 2, 28), ist(2027, 2, 28), ist(2027, 3, 31), 31),
        (31, ist(2028, 2, 29), ist(2028, 2, 29), ist(2028, 3, 31), 31),
        (31, ist(2028, 2, 28), ist(2028, 1, 31), ist(2028, 2, 29), 29),
        (31, ist(2026, 12, 31), ist(2026, 12, 31), ist(2027, 1, 31), 31),
    ],
)
def test_cycle_containing(
    day: int, at: datetime, start: datetime, end: datetime, days: int
) -> None:
    cycle = cycle_containing(day, at)
    assert (cycle.start, cycle.end) == (start, end)
    assert cycle.seconds == days * DAY
    assert cycle.label == start.date().isoformat()


@pytest.mark.parametrize("day", [0, 32, -1])
def test_bill_cycle_day_must_be_1_to_31(day: int) -> None:
    with pytest.raises(ValueError, match="bill_cycle_day"):
        cycle_containing(day, ist(2026, 11, 16))


moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)
cycle_days = st.integers(min_value=1, max_value=31)


@given(cycle_days, moments)
def test_at_is_inside_its_cycle_which_starts_at_ist_midnight(day: int, at: datetime) -> None:
    cycle = cycle_containing(day, at)
    assert cycle.start <= at < cycle.end
    local_start = cycle.start.astimezone(IST)
    assert (local_start.hour, local_start.minute, local_start.second) == (0, 0, 0)
    last_day = calendar.monthrange(local_start.year, local_start.month)[1]
    assert local_start.day == min(day, last_day)  # the bill day, clamped in short months
    assert 28 * DAY <= cycle.seconds <= 31 * DAY


@given(cycle_days, moments)
def test_consecutive_cycles_tile_time(day: int, at: datetime) -> None:
    cycle = cycle_containing(day, at)
    following = cycle_containing(day, cycle.end)
    previous = cycle_containing(day, cycle.start - timedelta(microseconds=1))
    assert following.start == cycle.end  # no gap, no overlap
    assert previous.end == cycle.start
    assert cycle_containing(day, cycle.start) == cycle
    assert cycle_containing(day, cycle.end - timedelta(microseconds=1)) == cycle

"""Schedule expressions: AWS's six-field cron and rate(), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.local.scheduler import parse_schedule

ANCHOR = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)  # a Tuesday


def _fire(expression: str, days: int, start: datetime = ANCHOR) -> list[str]:
    schedule = parse_schedule(expression, anchor=start)
    moments = schedule.occurrences(start, start + timedelta(days=days))
    return [moment.strftime("%Y-%m-%d %H:%M %a") for moment in moments]


def test_steps_ranges_and_weekday_names() -> None:
    fired = _fire("cron(0/20 8-9 ? * MON-FRI *)", 7)
    assert fired[:6] == [
        "2030-01-01 08:00 Tue",
        "2030-01-01 08:20 Tue",
        "2030-01-01 08:40 Tue",
        "2030-01-01 09:00 Tue",
        "2030-01-01 09:20 Tue",
        "2030-01-01 09:40 Tue",
    ]
    assert len(fired) == 5 * 6  # weekdays only: Jan 4-5 2030 are Sat, Sun


def test_lists_month_names_and_years() -> None:
    assert _fire("cron(15 10 1,15 JAN,MAR ? 2030)", 365) == [
        "2030-01-01 10:15 Tue",
        "2030-01-15 10:15 Tue",
        "2030-03-01 10:15 Fri",
        "2030-03-15 10:15 Fri",
    ]


def test_nth_and_last_weekday_of_month() -> None:
    assert _fire("cron(0 12 ? * 2#1 *)", 70) == [  # first Monday
        "2030-01-07 12:00 Mon",
        "2030-02-04 12:00 Mon",
        "2030-03-04 12:00 Mon",
    ]
    assert _fire("cron(0 12 ? * 6L *)", 60) == [  # last Friday
        "2030-01-25 12:00 Fri",
        "2030-02-22 12:00 Fri",
    ]


def test_nearest_weekday_and_last_weekday_of_month() -> None:
    # 2030-06-15 is a Saturday -> Friday 14th; 2030-06-30 is a Sunday -> LW is Friday 28th.
    june = datetime(2030, 6, 1, tzinfo=UTC)
    assert _fire("cron(0 9 15W * ? *)", 29, june) == ["2030-06-14 09:00 Fri"]
    assert _fire("cron(0 9 LW * ? *)", 29, june) == ["2030-06-28 09:00 Fri"]
    # 2030-06-01 is a Saturday: 1W may not leave the month -> Monday 3rd.
    assert _fire("cron(0 9 1W * ? *)", 29, june - timedelta(minutes=1)) == ["2030-06-03 09:00 Mon"]


def test_rate_counts_from_the_anchor_and_excludes_it() -> None:
    assert _fire("rate(6 hours)", 1) == [
        "2030-01-01 06:00 Tue",
        "2030-01-01 12:00 Tue",
        "2030-01-01 18:00 Tue",
        "2030-01-02 00:00 Wed",
    ]
    schedule = parse_schedule("rate(1 day)", anchor=ANCHOR)
    later = ANCHOR + timedelta(days=10, hours=5)
    assert list(schedule.occurrences(later, later + timedelta(days=1))) == [
        ANCHOR + timedelta(days=11)
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 3 * * * *)",  # both day fields
        "cron(0 3 * *)",
        "cron(61 3 * * ? *)",
        "rate(0 minutes)",
        "rate(1 week)",
        "at(2030-01-01T00:00:00)",
    ],
)
def test_unsupported_or_invalid_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any explanation will do
        parse_schedule(expression, anchor=ANCHOR)

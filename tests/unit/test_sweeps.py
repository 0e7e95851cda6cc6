"""The daily sweeps' checkpoints (shared/sweeps.py): which days a run covers, and
when its checkpoint moves."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from shared.sweeps import CATCH_UP_LIMIT_DAYS, days_to_sweep, run_daily_sweep
from tests.fakes import InMemorySweepCheckpoints

TODAY = date(2026, 12, 10)


def days_back(*backs: int) -> list[date]:
    return [TODAY - timedelta(days=back) for back in backs]


@pytest.mark.parametrize(
    ("last_done", "expected"),
    [
        (None, days_back(0)),  # the first run: nothing came before it
        (TODAY - timedelta(days=1), days_back(0)),  # an ordinary day
        (TODAY - timedelta(days=3), days_back(2, 1, 0)),  # two runs missed
        (TODAY, days_back(0)),  # a retry of today's run
        (TODAY + timedelta(days=2), days_back(0)),  # the clock was set back
    ],
)
def test_a_run_covers_the_days_since_its_checkpoint(
    last_done: date | None, expected: list[date]
) -> None:
    assert days_to_sweep(TODAY, last_done) == expected


def test_a_long_outage_is_caught_up_only_to_the_limit() -> None:
    days = days_to_sweep(TODAY, TODAY - timedelta(days=30))
    assert days == days_back(*range(CATCH_UP_LIMIT_DAYS, -1, -1))


def sweep_recording(swept: list[date]) -> Any:
    def sweep(day: date) -> dict[str, Any]:
        swept.append(day)
        return {"messages": 1}

    return sweep


def test_the_checkpoint_moves_after_the_sweep_and_the_next_day_sweeps_one_day() -> None:
    checkpoints = InMemorySweepCheckpoints({"overdue": TODAY - timedelta(days=3)})
    swept: list[date] = []

    first = run_daily_sweep(checkpoints, "overdue", TODAY, sweep_recording(swept))
    second = run_daily_sweep(
        checkpoints, "overdue", TODAY + timedelta(days=1), sweep_recording(swept)
    )

    assert first == {
        "date": "2026-12-10",
        "days": ["2026-12-08", "2026-12-09", "2026-12-10"],
        "messages": 3,
    }
    assert second["days"] == ["2026-12-11"]
    assert checkpoints.last_done("overdue") == TODAY + timedelta(days=1)
    assert checkpoints.last_done("expiry") is None  # each sweep keeps its own


def test_a_run_failing_part_way_keeps_the_days_it_finished_and_its_retry_goes_on() -> None:
    checkpoints = InMemorySweepCheckpoints({"bill_run": TODAY - timedelta(days=3)})
    swept: list[date] = []

    def queue_down_on_the_second_day(day: date) -> dict[str, Any]:
        if day == TODAY - timedelta(days=1):
            raise ConnectionError("the queue is down")
        swept.append(day)
        return {"messages": 1}

    with pytest.raises(ConnectionError):
        run_daily_sweep(checkpoints, "bill_run", TODAY, queue_down_on_the_second_day)
    assert checkpoints.last_done("bill_run") == TODAY - timedelta(days=2)
    retry = run_daily_sweep(checkpoints, "bill_run", TODAY, sweep_recording(swept))

    assert retry["days"] == ["2026-12-09", "2026-12-10"]
    assert swept == [TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY]
    assert checkpoints.last_done("bill_run") == TODAY


def test_a_run_by_hand_sweeps_just_its_day_and_leaves_the_checkpoint() -> None:
    checkpoints = InMemorySweepCheckpoints({"bill_run": TODAY - timedelta(days=5)})
    swept: list[date] = []

    result = run_daily_sweep(checkpoints, "bill_run", TODAY, sweep_recording(swept), by_hand=True)

    assert swept == [TODAY]
    assert result["days"] == ["2026-12-10"]
    assert checkpoints.last_done("bill_run") == TODAY - timedelta(days=5)

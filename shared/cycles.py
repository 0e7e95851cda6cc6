"""Bill cycles. A postpaid subscriber's cycle starts at 00:00 IST on their
bill-cycle day; in months shorter than that day, on the month's last day
(cycle day 31 -> 30 April, 28/29 February)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.clock import IST, to_ist


@dataclass(frozen=True)
class BillCycle:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    @property
    def label(self) -> str:
        """``YYYY-MM-DD`` of the cycle's first day in IST, used in keys."""
        return to_ist(self.start).date().isoformat()


def cycle_start_in_month(year: int, month: int, bill_cycle_day: int) -> datetime:
    last_day = calendar.monthrange(year, month)[1]
    return datetime(year, month, min(bill_cycle_day, last_day), tzinfo=IST).astimezone(UTC)


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def cycle_containing(bill_cycle_day: int, at: datetime) -> BillCycle:
    if not 1 <= bill_cycle_day <= 31:
        raise ValueError("bill_cycle_day must be 1..31")
    local = to_ist(at)
    year, month = local.year, local.month
    start = cycle_start_in_month(year, month, bill_cycle_day)
    if at < start:
        year, month = _shift_month(year, month, -1)
        start = cycle_start_in_month(year, month, bill_cycle_day)
    next_year, next_month = _shift_month(year, month, 1)
    return BillCycle(start, cycle_start_in_month(next_year, next_month, bill_cycle_day))

"""The one source of time. UTC inside; Asia/Kolkata for what people see.

In AWS the clock is the system clock. The local runtime moves time forward
(``tbcss local clock advance``) by handing every invocation an offset, which
:func:`apply_offset` installs before the handler runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """Wall-clock time plus an offset (zero everywhere but the local runtime)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class FixedClock:
    """A clock for tests: stands still until told to move."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        self._at += delta


_system_clock = SystemClock()


def system_clock() -> SystemClock:
    """The process-wide clock handlers use."""
    return _system_clock


def apply_offset(seconds: float) -> None:
    """Local runtime only: shift the process-wide clock."""
    _system_clock.offset = timedelta(seconds=seconds)


def to_ist(moment: datetime) -> datetime:
    return moment.astimezone(IST)


def isoformat(moment: datetime) -> str:
    """ISO-8601 with offset, second precision, in UTC: ``2026-11-25T10:00:00+00:00``."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()

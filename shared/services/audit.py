"""The audit trail: records appended once, read back by subscriber, actor or time.

Records live in one partition per UTC day and are also indexed by the
subscriber concerned and by the actor, each in time order, so every query is a
range read of one partition (or of consecutive day partitions), never a scan.
A page's cursor names the partition it stopped in and the last key read there.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel

from shared.audit import AuditRecord, record_of_event
from shared.errors import InvalidRequest

MAX_RANGE = timedelta(days=92)  # a quarter: the widest window one query may read
MAX_PAGE = 200
DEFAULT_WINDOW = timedelta(days=7)
YEARS = (2000, 2999)  # what a record's time may be: the keys are 4-digit years


class Partition(StrEnum):
    DAY = "day"
    USER = "user"
    ACTOR = "actor"


@dataclass(frozen=True)
class Window:
    """One partition and the key range of a query within it."""

    partition: Partition
    value: str  # the day (ISO date), the user id or the actor
    start: datetime
    end: datetime


class AuditStore(Protocol):
    def append(self, record: AuditRecord) -> bool:
        """Write the record unless it is there; whether it was written."""
        ...

    def read(
        self, window: Window, limit: int, after: dict[str, str] | None
    ) -> tuple[list[AuditRecord], dict[str, str] | None]:
        """Up to ``limit`` records of the window in time order, from after the key
        ``after``; with the last key read while more may follow."""
        ...


class AuditQuery(BaseModel):
    start: datetime
    end: datetime
    user_id: str | None = None
    actor: str | None = None
    limit: int = 50
    cursor: str | None = None


class AuditPage(BaseModel):
    records: list[AuditRecord]
    next_cursor: str | None


class InvalidCursor(InvalidRequest):
    code = "INVALID_CURSOR"


class AuditTrail:
    def __init__(self, store: AuditStore) -> None:
        self._store = store

    def record_event(self, envelope: dict[str, Any]) -> str:
        """Append the record of one bus event; a redelivery changes nothing."""
        record = record_of_event(envelope)
        return "recorded" if self._store.append(record) else "already recorded"

    def search(self, query: AuditQuery) -> AuditPage:
        _check_range(query.start, query.end)
        windows = list(_windows(query))
        position = _decode(query.cursor, windows) if query.cursor else (0, None)
        records: list[AuditRecord] = []
        index, after = position
        while index < len(windows) and len(records) < query.limit:
            page, after = self._store.read(windows[index], query.limit - len(records), after)
            records.extend(r for r in page if _matches(r, query))
            if after is None:
                index += 1
        more = index < len(windows)
        return AuditPage(
            records=records, next_cursor=_encode(windows[index], after) if more else None
        )

    def between(self, start: datetime, end: datetime) -> Iterator[AuditRecord]:
        """Every record of ``[start, end)`` in time order (reports)."""
        for window in _day_windows(start, end):
            after: dict[str, str] | None = None
            while True:
                page, after = self._store.read(window, MAX_PAGE, after)
                yield from (r for r in page if start <= r.occurred_at < end)
                if after is None:
                    break


def query_window(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """A query's ``[start, end)``: ``end`` defaults to now, ``start`` to a week
    before ``end``. Each given bound is checked first: a year far from ours would
    overflow on the way to UTC (a 500 for bad input)."""
    for moment in (start, end):
        if moment is not None:
            _check_moment(moment)
    end = end or now
    return start or end - DEFAULT_WINDOW, end


def _check_moment(moment: datetime) -> None:
    if moment.tzinfo is None:
        raise InvalidRequest("from and to need a time zone (e.g. 2026-11-01T00:00:00+05:30)")
    if not YEARS[0] <= moment.year <= YEARS[1]:
        raise InvalidRequest(f"from and to must lie in the years {YEARS[0]}-{YEARS[1]}")


def _check_range(start: datetime, end: datetime) -> None:
    _check_moment(start)
    _check_moment(end)
    if end <= start:
        raise InvalidRequest("to must be after from")
    if end - start > MAX_RANGE:
        raise InvalidRequest(f"the range may span at most {MAX_RANGE.days} days")


def _windows(query: AuditQuery) -> Iterator[Window]:
    if query.user_id is not None:
        yield Window(Partition.USER, query.user_id, query.start, query.end)
    elif query.actor is not None:
        yield Window(Partition.ACTOR, query.actor, query.start, query.end)
    else:
        yield from _day_windows(query.start, query.end)


def _day_windows(start: datetime, end: datetime) -> Iterator[Window]:
    day = start.astimezone(UTC).date()
    last = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    while day <= last:
        yield Window(Partition.DAY, day.isoformat(), start, end)
        day += timedelta(days=1)


def _matches(record: AuditRecord, query: AuditQuery) -> bool:
    """The second filter when both a user and an actor are given."""
    return query.actor is None or record.actor == query.actor


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


# --- cursors: where a page stopped --------------------------------------------------


def _encode(window: Window, after: dict[str, str] | None) -> str:
    position = {"p": window.partition.value, "v": window.value, "k": after}
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, windows: list[Window]) -> tuple[int, dict[str, str] | None]:
    """The window index and key to resume from; the cursor must belong to this query."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        partition, value, after = Partition(position["p"]), position["v"], position["k"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidCursor("the cursor is not one this API returned") from None
    for index, window in enumerate(windows):
        if window.partition is partition and window.value == value:
            if after is None or _is_key(after):
                return index, after
            break
    raise InvalidCursor("the cursor belongs to another query")


def _is_key(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )

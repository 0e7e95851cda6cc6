"""Billing's daily sweeps (shared/services/billing.py Sweeps): which index
partitions a swept day queries, and one message per unit of work found."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from shared.services.billing import Sweeps

SHARDS = 2


class IndexQueries:
    """The three sweep indexes, each answering one id on a day it was given."""

    def __init__(self, hits: dict[date, str]) -> None:
        self.hits = hits
        self.queried: list[tuple[str, date, int]] = []

    def _hit(self, index: str, day: date, shard: int) -> list[str]:
        self.queried.append((index, day, shard))
        return [self.hits[day]] if day in self.hits and shard == 0 else []

    def cycle_subscribers(self, cycle_day: int, shard: int) -> Iterable[str]:
        return self._hit("cycle", date(2026, 12, cycle_day), shard)

    def unpaid_due_on(self, due: date, shard: int) -> Iterable[str]:
        return self._hit("due", due, shard)

    def expiring_on(self, day: date, shard: int) -> Iterable[tuple[str, str]]:
        return [(user, f"sub-{user}") for user in self._hit("expires", day, shard)]


class Queue:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, messages: Sequence[dict[str, Any]]) -> int:
        self.messages += messages
        return len(messages)


def sweeps(index: IndexQueries, queue: Queue) -> Sweeps:
    return Sweeps(store=index, queue=queue, shards=SHARDS, grace_days=7)  # type: ignore[arg-type]


def days_queried(index: IndexQueries) -> list[date]:
    assert all(shards == list(range(SHARDS)) for shards in _shards_per_day(index).values())
    return sorted(_shards_per_day(index))


def _shards_per_day(index: IndexQueries) -> dict[date, list[int]]:
    per_day: dict[date, list[int]] = {}
    for _, day, shard in index.queried:
        per_day.setdefault(day, []).append(shard)
    return per_day


def test_overdue_takes_the_invoices_due_the_day_before_and_a_grace_period_earlier() -> None:
    index = IndexQueries({date(2026, 12, 9): "INV-a", date(2026, 12, 2): "INV-b"})
    queue = Queue()

    result = sweeps(index, queue).overdue_sweep(date(2026, 12, 10))

    assert days_queried(index) == [date(2026, 12, 2), date(2026, 12, 9)]
    assert queue.messages == [
        {"task": "overdue", "invoice_id": "INV-b"},
        {"task": "overdue", "invoice_id": "INV-a"},
    ]
    assert result["messages"] == 2


def test_the_expiry_sweep_takes_plans_ended_the_day_before_and_on_the_day() -> None:
    index = IndexQueries({date(2026, 12, 9): "ended-yesterday", date(2026, 12, 10): "ends-today"})
    queue = Queue()

    sweeps(index, queue).expiry_sweep(date(2026, 12, 10))

    assert days_queried(index) == [date(2026, 12, 9), date(2026, 12, 10)]
    assert [m["user_id"] for m in queue.messages] == ["ended-yesterday", "ends-today"]


def test_a_short_months_last_day_bills_the_cycles_of_the_days_it_lacks() -> None:
    index = IndexQueries({date(2026, 12, 28): "cycle-28", date(2026, 12, 30): "cycle-30"})
    queue = Queue()

    result = sweeps(index, queue).bill_run(date(2027, 2, 28))

    assert queue.messages == [
        {"task": "invoice", "user_id": "cycle-28", "cycle_day": 28, "bill_date": "2027-02-28"},
        {"task": "invoice", "user_id": "cycle-30", "cycle_day": 30, "bill_date": "2027-02-28"},
    ]
    assert result["cycle_days"] == [28, 29, 30, 31]

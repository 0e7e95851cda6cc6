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


def test_overdue_takes_the_invoices_due_before_each_swept_day_and_a_grace_period_earlier() -> None:
    index = IndexQueries({date(2026, 12, 9): "INV-a", date(2026, 12, 2): "INV-b"})
    queue = Queue()

    result = sweeps(index, queue).overdue_sweep([date(2026, 12, 10), date(2026, 12, 11)])

    assert days_queried(index) == [
        date(2026, 12, 2),
        date(2026, 12, 3),
        date(2026, 12, 9),
        date(2026, 12, 10),
    ]
    assert queue.messages == [
        {"task": "overdue", "invoice_id": "INV-b"},
        {"task": "overdue", "invoice_id": "INV-a"},
    ]
    assert result["messages"] == 2


def test_the_expiry_sweep_takes_plans_ended_the_day_before_and_on_the_day() -> None:
    index = IndexQueries({date(2026, 12, 9): "ended-yesterday", date(2026, 12, 10): "ends-today"})
    queue = Queue()

    sweeps(index, queue).expiry_sweep([date(2026, 12, 10)])

    assert days_queried(index) == [date(2026, 12, 9), date(2026, 12, 10)]
    assert [m["user_id"] for m in queue.messages] == ["ended-yesterday", "ends-today"]


def test_a_bill_run_of_two_days_bills_each_days_cycles_with_its_own_bill_date() -> None:
    index = IndexQueries({date(2026, 12, 5): "cycle-5", date(2026, 12, 6): "cycle-6"})
    queue = Queue()

    result = sweeps(index, queue).bill_run([date(2026, 12, 5), date(2026, 12, 6)])

    assert queue.messages == [
        {"task": "invoice", "user_id": "cycle-5", "cycle_day": 5, "bill_date": "2026-12-05"},
        {"task": "invoice", "user_id": "cycle-6", "cycle_day": 6, "bill_date": "2026-12-06"},
    ]
    assert result["cycle_days"] == [5, 6]

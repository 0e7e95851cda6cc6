"""Daily sweeps remember the last IST day they finished (a checkpoint).

The bill run, the overdue and prepaid-expiry sweeps, AutoPay's retries and the
inactivity sweep each query every shard of an index for the days they cover. A
run covers the days since its checkpoint, so an ordinary day costs one day's
queries, and days missed in an outage are caught up (up to
:data:`CATCH_UP_LIMIT_DAYS`). The tasks they fan out are idempotent, so a
repeated day (a retried run, a run by hand) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, Protocol

# An outage longer than this is caught up by runs by hand for the days before it.
CATCH_UP_LIMIT_DAYS = 7


class SweepCheckpoints(Protocol):
    def last_done(self, sweep: str) -> date | None: ...

    def mark_done(self, sweep: str, day: date) -> None:
        """Record ``day`` as finished; a checkpoint never moves back."""
        ...


def days_to_sweep(today: date, last_done: date | None) -> list[date]:
    """Oldest first: the days after the checkpoint up to ``today``; just ``today``
    on the first run (nothing came before it) or when it was already done."""
    if last_done is None:
        return [today]
    oldest = today - timedelta(days=CATCH_UP_LIMIT_DAYS)
    start = max(min(today, last_done + timedelta(days=1)), oldest)
    return [start + timedelta(days=n) for n in range((today - start).days + 1)]


def run_daily_sweep(
    checkpoints: SweepCheckpoints,
    name: str,
    today: date,
    sweep: Callable[[list[date]], dict[str, Any]],
    *,
    by_hand: bool = False,
) -> dict[str, Any]:
    """Sweep the days due, then move the checkpoint: a run that fails before the
    end leaves it, and its retry covers the same days. A run by hand sweeps just
    its day and leaves the checkpoint to the schedule."""
    days = [today] if by_hand else days_to_sweep(today, checkpoints.last_done(name))
    result = sweep(days)
    if not by_hand:
        checkpoints.mark_done(name, today)
    return {"date": str(today), "days": [str(day) for day in days], **result}

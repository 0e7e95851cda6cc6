"""Daily sweeps remember the last IST day they finished (a checkpoint).

The bill run, the overdue and prepaid-expiry sweeps, AutoPay's retries and the
inactivity sweep each query every shard of an index for the days they cover. A
run covers the days since its checkpoint, oldest first, moving the checkpoint
after each: an ordinary day costs one day's queries, and days missed in an
outage are caught up (up to :data:`CATCH_UP_LIMIT_DAYS` missed days; older
ones are logged for runs by hand). The tasks they fan out are idempotent, so a
repeated day (a retried run, a run by hand) changes nothing.

The rule this rests on: an index entry is written before the run of the day
that reads it. Entries dated in the past would never be read again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, Protocol

from aws_lambda_powertools import Logger

logger = Logger(child=True)

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
    sweep: Callable[[date], dict[str, Any]],
    *,
    by_hand: bool = False,
) -> dict[str, Any]:
    """Sweep the days due one at a time, moving the checkpoint after each: a run
    that fails part way keeps what it finished, and its retry goes on from there.
    A run by hand sweeps just its day and leaves the checkpoint to the schedule."""
    if by_hand:
        return {"date": str(today), "days": [str(today)], **sweep(today)}
    last_done = checkpoints.last_done(name)
    days = days_to_sweep(today, last_done)
    if last_done is not None and last_done + timedelta(days=1) < days[0]:
        skipped = {
            "from": str(last_done + timedelta(days=1)),
            "to": str(days[0] - timedelta(days=1)),
        }
        logger.warning(
            "sweep missed more days than it catches up: run these by hand",
            extra={"sweep": name, **skipped},
        )
    results = []
    for day in days:
        results.append(sweep(day))
        checkpoints.mark_done(name, day)
    return {"date": str(today), "days": [str(day) for day in days], **_combined(results)}


def _combined(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The days' results as one: counts added, lists joined (each value once)."""
    combined: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            if isinstance(value, list):
                seen = combined.setdefault(key, [])
                seen += [item for item in value if item not in seen]
            else:
                combined[key] = combined.get(key, 0) + value
    return combined

"""The daily sweeps' checkpoints (:mod:`shared.sweeps`) in the single table.

| item | PK | SK | notes |
|---|---|---|---|
| sweep checkpoint | ``SWEEP#<sweep>`` | ``CHECKPOINT`` | ``last_done``: an IST date |

A run reads its checkpoint (one GetItem) and moves it (one conditional
UpdateItem), in place of the look-back's queries of every shard.
"""

from __future__ import annotations

from datetime import date

from pynamodb.attributes import UnicodeAttribute

from shared.db import Item, conditional_update

SWEEP_KEY_PREFIX = "SWEEP#"
CHECKPOINT_SK = "CHECKPOINT"


def sweep_pk(sweep: str) -> str:
    return f"{SWEEP_KEY_PREFIX}{sweep}"


class SweepCheckpointItem(Item):
    last_done = UnicodeAttribute()  # ISO date: later days sort after earlier ones


class DynamoSweepCheckpoints:
    """Implements :class:`shared.sweeps.SweepCheckpoints`."""

    def last_done(self, sweep: str) -> date | None:
        try:
            item = SweepCheckpointItem.get(sweep_pk(sweep), CHECKPOINT_SK, consistent_read=True)
        except SweepCheckpointItem.DoesNotExist:
            return None
        return date.fromisoformat(item.last_done)

    def mark_done(self, sweep: str, day: date) -> None:
        # A checkpoint already past ``day`` (a slower run of an earlier day) stays.
        conditional_update(
            SweepCheckpointItem(sweep_pk(sweep), CHECKPOINT_SK),
            [
                SweepCheckpointItem.entity.set("SWEEP_CHECKPOINT"),
                SweepCheckpointItem.last_done.set(day.isoformat()),
            ],
            SweepCheckpointItem.last_done.does_not_exist()
            | (SweepCheckpointItem.last_done < day.isoformat()),
        )

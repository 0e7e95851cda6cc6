"""The daily sweeps' checkpoints in the table (moto): read back, never moved back."""

from __future__ import annotations

from datetime import date

from shared.stores.sweeps import DynamoSweepCheckpoints
from tests.integration.conftest import Aws


def test_a_checkpoint_is_read_back_and_only_moves_forward(aws: Aws) -> None:
    checkpoints = DynamoSweepCheckpoints()
    assert checkpoints.last_done("overdue") is None

    checkpoints.mark_done("overdue", date(2026, 12, 10))
    checkpoints.mark_done("overdue", date(2026, 12, 8))  # an older run finishing late
    checkpoints.mark_done("expiry", date(2026, 12, 1))

    assert checkpoints.last_done("overdue") == date(2026, 12, 10)
    assert checkpoints.last_done("expiry") == date(2026, 12, 1)
    checkpoints.mark_done("overdue", date(2026, 12, 11))
    assert checkpoints.last_done("overdue") == date(2026, 12, 11)

"""The billing and service-control timers are checked where they are read: a
function whose environment names an impossible number of days fails at start,
not on the first bill (the CDK synth checks the same limits, infra/platform.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings


@pytest.mark.parametrize(
    ("variable", "days"),
    [
        ("INVOICE_DUE_DAYS", "-1"),
        ("OVERDUE_GRACE_DAYS", "0"),
        ("INACTIVITY_DAYS", "0"),
        ("MSISDN_COOLING_OFF_DAYS", "-30"),
    ],
)
def test_a_timer_below_its_minimum_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, days: str
) -> None:
    monkeypatch.setenv(variable, days)

    with pytest.raises(ValidationError, match=variable.lower()):
        Settings()


def test_a_bill_may_fall_due_on_its_bill_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOICE_DUE_DAYS", "0")

    assert Settings().invoice_due_days == 0

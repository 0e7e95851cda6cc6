"""The billing and service-control timers (infra/platform.py TIMERS): one CDK
context value per deployment, in every function's environment, checked at synth."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.platform import TIMERS
from shared.settings import Settings
from tests.infra.conftest import build_stack
from tests.infra.test_stack_template import Resources, function_named, of_type

# The functions that build a BillingService, Sweeps or Disconnections from the timers.
BILLING = ("worker", "schedule", "handler")
SERVICE_CONTROL = ("worker", "schedule", "handler", "tasks")
USERS = [f"functions.billing.{entry}.handler" for entry in BILLING] + [
    f"functions.service_control.{entry}.handler" for entry in SERVICE_CONTROL
]

# As `-c` hands them (strings) and as RuntimeOptions.context or cdk.json may (ints);
# a zero-day due date is allowed, and must not fall back to the default.
CONTEXT = {
    "invoice_due_days": "0",
    "overdue_grace_days": 2,
    "inactivity_days": "10",
    "msisdn_cooling_off_days": 30,
}


def _timers(resources: Resources, handler: str) -> dict[str, Any]:
    variables = function_named(resources, handler)[1]["Environment"]["Variables"]
    return {name.upper(): variables.get(name.upper()) for name in TIMERS}


def _handlers(resources: Resources) -> list[str]:
    handlers = [fn["Handler"] for fn in of_type(resources, "AWS::Lambda::Function").values()]
    assert set(USERS) <= set(handlers)
    return handlers


@pytest.fixture(scope="module")
def configured() -> Resources:
    resources: Resources = Template.from_stack(build_stack(CONTEXT)).to_json()["Resources"]
    return resources


def test_every_function_gets_the_timers_from_the_context(configured: Resources) -> None:
    expected = {
        "INVOICE_DUE_DAYS": "0",
        "OVERDUE_GRACE_DAYS": "2",
        "INACTIVITY_DAYS": "10",
        "MSISDN_COOLING_OFF_DAYS": "30",
    }
    for handler in _handlers(configured):
        assert _timers(configured, handler) == expected, handler


def test_without_context_every_function_gets_the_settings_defaults(resources: Resources) -> None:
    defaults = {name.upper(): str(Settings.model_fields[name].default) for name in TIMERS}
    assert defaults == {
        "INVOICE_DUE_DAYS": "15",
        "OVERDUE_GRACE_DAYS": "7",
        "INACTIVITY_DAYS": "90",
        "MSISDN_COOLING_OFF_DAYS": "90",
    }
    for handler in _handlers(resources):
        assert _timers(resources, handler) == defaults, handler


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("invoice_due_days", "-1"),
        ("invoice_due_days", "fifteen"),
        ("overdue_grace_days", "0"),
        ("overdue_grace_days", True),
        ("inactivity_days", 0),
        ("inactivity_days", ""),
        ("msisdn_cooling_off_days", "1.5"),
        ("msisdn_cooling_off_days", 1.5),
    ],
)
def test_a_bad_timer_fails_the_synth_naming_the_key_and_the_value(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}")):
        build_stack({key: value})

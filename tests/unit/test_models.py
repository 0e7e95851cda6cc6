"""Domain model validation (shared.models) and the seed catalog (shared.catalog)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.catalog import seed_plans
from shared.models import Plan, RenewalRule, Subscriber, SubscriberType


def plan_data(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "plan_id": "PRE_TEST_199",
        "name": "Test 199",
        "type": "prepaid",
        "price_paise": 19900,
        "price_includes_gst": True,
        "validity_days": 28,
        "data_bytes": 1024,
        "voice_seconds": None,
        "sms": 100,
        "overage": {
            "data_paise_per_pulse": 50,
            "data_pulse_bytes": 1048576,
            "voice_paise_per_pulse": 1,
            "voice_pulse_seconds": 1,
            "sms_paise_each": 100,
        },
        "renewal_rule": "MANUAL_RECHARGE",
    }
    return {**base, **overrides}


def test_a_valid_prepaid_plan() -> None:
    plan = Plan.model_validate(plan_data())
    assert plan.type is SubscriberType.PREPAID
    assert plan.voice_seconds is None  # unlimited
    assert plan.active


@pytest.mark.parametrize(
    ("plan_type", "rule"),
    [
        ("postpaid", "MANUAL_RECHARGE"),
        ("postpaid", "AUTO_RENEW_FROM_WALLET"),
        ("prepaid", "MONTHLY_BILL_CYCLE"),
    ],
)
def test_renewal_rule_must_fit_the_plan_type(plan_type: str, rule: str) -> None:
    with pytest.raises(ValidationError, match="renew"):
        Plan.model_validate(plan_data(type=plan_type, renewal_rule=rule))


@pytest.mark.parametrize(
    "overrides",
    [
        {"price_paise": 0},
        {"price_paise": -100},
        {"price_paise": 199.5},  # money is integer paise, never a fraction
        {"validity_days": 0},
        {"data_bytes": -1},
        {"sms": -1},
        {"plan_id": "pre_lowercase"},
        {"plan_id": "X"},
        {"plan_id": "HAS SPACE"},
        {"type": "hybrid"},
        {"renewal_rule": "WHENEVER"},
        {"surprise": True},  # unknown fields are rejected, not ignored
        {"overage": {"data_paise_per_pulse": 1}},
    ],
)
def test_invalid_plans_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Plan.model_validate(plan_data(**overrides))


def test_plans_are_immutable() -> None:
    plan = Plan.model_validate(plan_data())
    with pytest.raises(ValidationError):
        plan.price_paise = 1  # type: ignore[misc]


@pytest.mark.parametrize("day", [0, 32])
def test_subscriber_bill_cycle_day_is_1_to_31(day: int) -> None:
    with pytest.raises(ValidationError):
        Subscriber(
            user_id="u1",
            msisdn="919800000001",
            subscriber_type=SubscriberType.POSTPAID,
            state="KA",
            status="ACTIVE",
            bill_cycle_day=day,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )


# --- the seed catalog ---------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> dict[str, Plan]:
    return {plan.plan_id: plan for plan in seed_plans()}


def test_seed_catalog_offers_both_kinds(catalog: dict[str, Plan]) -> None:
    prepaid = [p for p in catalog.values() if p.type is SubscriberType.PREPAID and p.active]
    postpaid = [p for p in catalog.values() if p.type is SubscriberType.POSTPAID and p.active]
    assert len(prepaid) >= 3
    assert len(postpaid) >= 3


def test_seed_plan_ids_are_unique() -> None:
    ids = [plan.plan_id for plan in seed_plans()]
    assert len(ids) == len(set(ids))


def test_seed_plans_follow_the_tariff_conventions(catalog: dict[str, Plan]) -> None:
    for plan in catalog.values():
        if plan.type is SubscriberType.POSTPAID:
            assert plan.renewal_rule is RenewalRule.MONTHLY_BILL_CYCLE
            assert not plan.price_includes_gst, plan.plan_id  # rentals are billed plus GST
            assert plan.validity_days == 30
        else:
            assert plan.renewal_rule is not RenewalRule.MONTHLY_BILL_CYCLE
            assert plan.price_includes_gst, plan.plan_id  # prepaid MRPs include GST
        assert plan.overage.data_pulse_bytes in {10240, 1048576}
        assert plan.overage.voice_pulse_seconds in {1, 60}


@pytest.mark.parametrize(
    ("plan_id", "price_paise", "validity_days"),
    [
        ("PRE_SMART_299", 29900, 28),
        ("PRE_VALUE_719", 71900, 84),
        ("POST_BASIC_399", 39900, 30),
        ("POST_PLUS_599", 59900, 30),
    ],
)
def test_plans_the_proration_examples_rely_on(
    catalog: dict[str, Plan], plan_id: str, price_paise: int, validity_days: int
) -> None:
    plan = catalog[plan_id]
    assert (plan.price_paise, plan.validity_days) == (price_paise, validity_days)

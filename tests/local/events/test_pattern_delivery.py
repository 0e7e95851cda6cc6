"""Pattern rules whose targets moto cannot reach: matching and delivery."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from infra.local.clock import LocalClock
from infra.local.deploy import RuleSpec, TargetSpec
from infra.local.scheduler import PatternDelivery, pattern_matches
from tests.local.events.support import ACCOUNT, REGION, FakeInvoker, deployment, function

EVENT = {
    "source": "tbcss.payments",
    "detail-type": "PaymentFailed",
    "detail": {"user_id": "u-42", "amount_paise": 49900, "reasons": ["card", "limit"]},
}


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ({"source": ["tbcss.payments"]}, True),
        ({"source": ["tbcss.billing"]}, False),
        ({"detail": {"user_id": [{"prefix": "u-"}]}}, True),
        ({"detail": {"user_id": [{"suffix": "-7"}]}}, False),
        ({"detail-type": [{"equals-ignore-case": "paymentfailed"}]}, True),
        ({"detail-type": [{"wildcard": "Payment*"}]}, True),
        ({"detail": {"amount_paise": [{"numeric": [">", 0, "<=", 49900]}]}}, True),
        ({"detail": {"amount_paise": [{"numeric": [">", 50000]}]}}, False),
        ({"detail": {"reasons": ["limit"]}}, True),  # any element of an array
        ({"detail": {"coupon": [{"exists": False}]}}, True),
        ({"detail": {"coupon": [{"exists": True}]}}, False),
        ({"source": [{"anything-but": ["tbcss.billing"]}]}, True),
        ({"$or": [{"source": ["x"]}, {"detail-type": ["PaymentFailed"]}]}, True),
    ],
)
def test_event_pattern_matching(pattern: dict[str, Any], matches: bool) -> None:
    assert pattern_matches(pattern, EVENT) is matches


def test_lambda_targets_of_matching_rules_are_invoked_moto_targets_left_to_moto() -> None:
    blocker = function("ServiceControlFunction")
    audit = function("AuditFunction")
    rules = [
        RuleSpec(
            logical_id="OnPaymentFailed",
            name="OnPaymentFailed",
            bus_name="tbcss-dev-events",
            event_pattern={"source": ["tbcss.payments"], "detail-type": ["PaymentFailed"]},
            schedule_expression=None,
            enabled=True,
            targets=[
                TargetSpec(id="fn", arn=blocker.arn),
                TargetSpec(id="q", arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:audit-queue"),
            ],
        ),
        RuleSpec(
            logical_id="OnActivated",
            name="OnActivated",
            bus_name="tbcss-dev-events",
            event_pattern={"detail-type": ["SubscriberActivated"]},
            schedule_expression=None,
            enabled=True,
            targets=[TargetSpec(id="fn", arn=audit.arn)],
        ),
    ]
    invoker = FakeInvoker()
    delivery = PatternDelivery(
        deployment(rules=rules, functions=[blocker, audit]),
        invoker,
        LocalClock(),
        endpoint_url=None,
        region=REGION,
        invocation="RequestResponse",
    )

    lines = delivery.deliver(
        [
            {
                "EventBusName": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/tbcss-dev-events",
                "Source": "tbcss.payments",
                "DetailType": "PaymentFailed",
                "Detail": json.dumps({"user_id": "u-42"}),
            },
            {
                "EventBusName": "other-bus",
                "Source": "tbcss.payments",
                "DetailType": "PaymentFailed",
            },
        ]
    )

    assert lines == ["PaymentFailed rule OnPaymentFailed -> ServiceControlFunction ok"]
    (call,) = invoker.snapshot()
    assert call.function_name == blocker.name
    assert call.payload["detail"] == {"user_id": "u-42"}
    assert call.payload["source"] == "tbcss.payments"
    assert (
        abs(
            time.mktime(time.strptime(call.payload["time"], "%Y-%m-%dT%H:%M:%SZ"))
            - time.mktime(time.gmtime())
        )
        < 60
    )
    assert sorted(delivery.rule_names) == ["OnActivated", "OnPaymentFailed"]

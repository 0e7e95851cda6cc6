"""The table's capacity mode (infra/platform.py): on-demand unless the CDK context
asks for provisioned capacity, which then follows the load by auto scaling on the
table and on every index, reads and writes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk.assertions import Template

from bench import cost
from infra.platform import PROVISIONED_MIN_UNITS, PROVISIONED_TARGET_UTILIZATION
from tests.infra.conftest import build_stack
from tests.infra.test_stack_template import Resources, of_type

INDEXES = ("GSI1", "GSI2")


@pytest.fixture(scope="module")
def provisioned() -> Resources:
    context = {"table_capacity": "provisioned", "table_max_capacity_units": "900"}
    resources: Resources = Template.from_stack(build_stack(context)).to_json()["Resources"]
    return resources


def _table(resources: Resources) -> dict[str, Any]:
    (table,) = of_type(resources, "AWS::DynamoDB::Table").values()
    return table


def test_by_default_the_table_is_on_demand_with_no_auto_scaling(resources: Resources) -> None:
    table = _table(resources)
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in table
    assert of_type(resources, "AWS::ApplicationAutoScaling::ScalableTarget") == {}


def test_provisioned_capacity_starts_low_on_the_table_and_every_index(
    provisioned: Resources,
) -> None:
    table = _table(provisioned)
    start = {
        "ReadCapacityUnits": PROVISIONED_MIN_UNITS,
        "WriteCapacityUnits": PROVISIONED_MIN_UNITS,
    }
    assert table.get("BillingMode", "PROVISIONED") == "PROVISIONED"
    assert table["ProvisionedThroughput"] == start
    indexes = {i["IndexName"]: i["ProvisionedThroughput"] for i in table["GlobalSecondaryIndexes"]}
    assert indexes == dict.fromkeys(INDEXES, start)


def test_auto_scaling_keeps_reads_and_writes_of_table_and_indexes_at_the_target(
    provisioned: Resources,
) -> None:
    targets = of_type(provisioned, "AWS::ApplicationAutoScaling::ScalableTarget")
    scaled = sorted(
        (str(t["ScalableDimension"]), str(t["ResourceId"]), t["MinCapacity"], t["MaxCapacity"])
        for t in targets.values()
    )
    dimensions = [dimension for dimension, *_ in scaled]
    assert dimensions == sorted(
        [f"dynamodb:table:{kind}CapacityUnits" for kind in ("Read", "Write")]
        + [f"dynamodb:index:{kind}CapacityUnits" for kind in ("Read", "Write") for _ in INDEXES]
    )
    assert {(low, high) for *_, low, high in scaled} == {(PROVISIONED_MIN_UNITS, 900)}
    # The cost model's monthly floor of a provisioned table counts the same minimum.
    assert PROVISIONED_MIN_UNITS == cost.PROVISIONED_MIN_UNITS
    assert len(targets) == 2 * cost.TABLE_AND_INDEXES
    index_targets = [resource for dimension, resource, *_ in scaled if ":index:" in dimension]
    for index in INDEXES:
        assert sum(f"/index/{index}" in resource for resource in index_targets) == 2

    policies = of_type(provisioned, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    utilizations = [p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policies]
    assert utilizations == [PROVISIONED_TARGET_UTILIZATION] * len(targets)
    # The cost model prices a provisioned table at this very utilization.
    assert utilizations[0] == round(cost.PROVISIONED_UTILIZATION * 100)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("table_capacity", "reserved"),
        ("table_capacity", "PAY_PER_REQUEST"),
        ("table_max_capacity_units", "4"),
        ("table_max_capacity_units", "lots"),
    ],
)
def test_a_bad_capacity_setting_fails_the_synth_naming_the_key_and_the_value(
    key: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}")):
        build_stack({key: value})

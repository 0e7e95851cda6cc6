"""Which PutItems an idempotency claim's owner marks, and with what token."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from shared.idempotency_claims import CLAIM_OWNER_ATTRIBUTE, ClaimOwner


@pytest.fixture
def owner() -> ClaimOwner:
    client = boto3.client("dynamodb", region_name="ap-south-1")  # never called here
    return ClaimOwner(DynamoDBPersistenceLayer(table_name="t", boto3_client=client))


def _claim() -> dict[str, Any]:
    return {
        "TableName": "t",
        "Item": {"id": {"S": "k"}, "status": {"S": "INPROGRESS"}},
        "ConditionExpression": "attribute_not_exists(#id)",
        "ExpressionAttributeNames": {"#id": "id"},
    }


def _token(params: dict[str, Any]) -> str:
    return str(params["Item"][CLAIM_OWNER_ATTRIBUTE]["S"])


def test_a_claim_inside_an_attempt_carries_its_token_and_keeps_the_condition(
    owner: ClaimOwner,
) -> None:
    claim = _claim()
    with owner.attempt():
        owner.mark_claim(claim)

    assert claim["ConditionExpression"].startswith("(attribute_not_exists(#id)) OR ")
    assert claim["ExpressionAttributeNames"]["#id"] == "id"
    assert claim["ExpressionAttributeValues"][":claim_owner"] == {"S": _token(claim)}


def test_each_attempt_has_a_token_of_its_own(owner: ClaimOwner) -> None:
    first, second = _claim(), _claim()
    with owner.attempt():
        owner.mark_claim(first)
    with owner.attempt():
        owner.mark_claim(second)

    assert _token(first) != _token(second)


def test_nothing_is_marked_outside_an_attempt_nor_an_unconditional_write(
    owner: ClaimOwner,
) -> None:
    outside = _claim()
    owner.mark_claim(outside)
    unconditional = {"TableName": "t", "Item": {"id": {"S": "k"}}}
    with owner.attempt():
        owner.mark_claim(unconditional)

    assert outside == _claim()
    assert unconditional == {"TableName": "t", "Item": {"id": {"S": "k"}}}

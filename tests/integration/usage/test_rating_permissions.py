"""moto does not enforce IAM, so nothing else would notice: every DynamoDB call
the rating function makes must be an action its role grants (infra/usage.py)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.client import BaseClient

from infra.usage import RATING_TABLE_ACTIONS
from shared.stores.usage import DynamoRatingStore
from tests.integration.usage.conftest import Rating, Subscribe, cdr

# Checked per item by IAM: a transaction needs the actions of its items (Put,
# Update, ConditionCheck), which the role grants one by one.
PER_ITEM = frozenset({"TransactWriteItems"})


@pytest.fixture
def dynamodb_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    make_api_call = BaseClient._make_api_call

    def recorded(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            calls.append(operation)
        return make_api_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recorded)
    return calls


def test_every_table_call_of_rating_is_one_its_role_allows(
    rating: Rating, subscribed: Subscribe, dynamodb_calls: list[str]
) -> None:
    postpaid = subscribed("ivy")
    prepaid = subscribed("jon", "PRE_DATA_49", wallet_paise=4900 + 100)
    rating.send([cdr(postpaid, "SMS", 1)])
    state = DynamoRatingStore().load_state(postpaid)
    assert state is not None
    closed = state.copy()
    closed.latest().closed = True  # billing's doing, not rating's: not recorded
    closed.version += 1
    assert DynamoRatingStore().put_state(closed, expected_version=state.version)
    dynamodb_calls.clear()

    rating.restart()  # a new container: plan snapshots read and written again
    first = cdr(prepaid, "VOICE", 60)
    rating.send([first, first, cdr(postpaid, "SMS", 1), cdr("9000000001", "SMS", 1)])
    rating.send([first, cdr(prepaid, "VOICE", 70)])

    operations = set(dynamodb_calls)
    assert {"BatchGetItem", "PutItem", "TransactWriteItems", "UpdateItem"} <= operations
    needed = {f"dynamodb:{operation}" for operation in operations - PER_ITEM}
    assert needed <= set(RATING_TABLE_ACTIONS)

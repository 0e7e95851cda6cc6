"""The subscription store's atomic rules, checked on the DynamoDB store (moto)
and on the in-memory fake the unit tests use, so the fake cannot drift."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pynamodb.exceptions import TransactWriteError

from shared import db
from shared.errors import (
    ActivePlanExists,
    ConcurrentModification,
    InsufficientBalance,
    UserNotFound,
)
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from tests.fakes import InMemorySubscriptionStore
from tests.integration.conftest import Aws, ConflictingTransactions

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["dynamodb", "in-memory"])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "dynamodb":
        request.getfixturevalue("aws")
        return db.DynamoSubscriptionStore()
    return InMemorySubscriptionStore()


def subscriber(
    store: Any, user_id: str = "u1", kind: SubscriberType = SubscriberType.PREPAID
) -> None:
    store.put_subscriber(
        Subscriber(
            user_id=user_id,
            msisdn=f"91980000{sum(user_id.encode()):04d}",
            subscriber_type=kind,
            state="KA",
            status=SubscriberStatus.ACTIVE,
            bill_cycle_day=5,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )


def period(
    plan_id: str, at: datetime, *, days: int | None = 28, price: int = 29_900
) -> Subscription:
    prepaid = days is not None
    return Subscription(
        subscription_id=uuid.uuid4().hex,
        user_id="u1",
        plan_id=plan_id,
        plan_type=SubscriberType.PREPAID if prepaid else SubscriberType.POSTPAID,
        price_paise=price,
        started_at=at,
        valid_until=at + timedelta(days=days) if days is not None else None,
    )


def state(store: Any) -> tuple[Any, ...]:
    return (store.get_active("u1"), store.history("u1"), store.wallet_balance("u1"))


def test_start_claims_the_free_slot_and_debits(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 50_000)
    first = period("PRE_SMART_299", T)
    store.start(first, wallet_debit_paise=29_900)
    assert store.get_active("u1") == first
    assert store.history("u1") == [first]
    assert store.wallet_balance("u1") == 20_100


def test_start_on_an_occupied_slot_changes_nothing(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 100_000)
    store.start(period("PRE_SMART_299", T), wallet_debit_paise=29_900)
    before = state(store)
    with pytest.raises(ActivePlanExists):
        store.start(period("PRE_VALUE_719", T + timedelta(days=27)), wallet_debit_paise=71_900)
    assert state(store) == before


def test_start_replaces_an_expired_prepaid_plan(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 100_000)
    store.start(period("PRE_SMART_299", T), wallet_debit_paise=29_900)
    renewal = period("PRE_SMART_299", T + timedelta(days=28))
    store.start(renewal, wallet_debit_paise=29_900)
    assert store.get_active("u1") == renewal
    assert len(store.history("u1")) == 2
    assert store.wallet_balance("u1") == 100_000 - 2 * 29_900


def test_a_postpaid_plan_is_never_replaced_by_start(store: Any) -> None:
    subscriber(store, kind=SubscriberType.POSTPAID)
    store.start(period("POST_BASIC_399", T, days=None, price=39_900), wallet_debit_paise=0)
    assert store.get_active("u1").valid_until is None
    with pytest.raises(ActivePlanExists):
        store.start(
            period("POST_PLUS_599", T + timedelta(days=3650), days=None), wallet_debit_paise=0
        )


def test_start_beyond_the_wallet_changes_nothing(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 29_899)
    with pytest.raises(InsufficientBalance):
        store.start(period("PRE_SMART_299", T), wallet_debit_paise=29_900)
    assert state(store) == (None, [], 29_899)


def test_change_replaces_the_plan_closes_the_period_and_applies_the_delta(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 100_000)
    old = period("PRE_SMART_299", T)
    store.start(old, wallet_debit_paise=29_900)
    new = period("PRE_VALUE_719", T + timedelta(days=10), days=84, price=71_900)

    store.change(old=old, new=new, wallet_delta_paise=-52_679)

    assert store.get_active("u1") == new
    closed, opened = store.history("u1")
    assert closed.subscription_id == old.subscription_id
    assert closed.ended_at == new.started_at
    assert opened == new
    assert store.wallet_balance("u1") == 100_000 - 29_900 - 52_679


def test_change_can_credit_the_wallet(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 71_900)
    old = period("PRE_VALUE_719", T, days=84, price=71_900)
    store.start(old, wallet_debit_paise=71_900)
    store.change(old=old, new=period("PRE_DATA_49", T, days=7), wallet_delta_paise=31_050)
    assert store.wallet_balance("u1") == 31_050


def test_change_from_a_plan_no_longer_active_changes_nothing(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 500_000)
    old = period("PRE_SMART_299", T)
    store.start(old, wallet_debit_paise=29_900)
    winner = period("PRE_VALUE_719", T + timedelta(days=1), days=84)
    store.change(old=old, new=winner, wallet_delta_paise=-50_000)
    before = state(store)

    with pytest.raises(ConcurrentModification):
        store.change(old=old, new=period("PRE_ANNUAL_2999", T), wallet_delta_paise=-200_000)

    assert state(store) == before


def test_change_beyond_the_wallet_changes_nothing(store: Any) -> None:
    subscriber(store)
    store.credit_wallet("u1", 29_900)
    old = period("PRE_SMART_299", T)
    store.start(old, wallet_debit_paise=29_900)
    before = state(store)
    with pytest.raises(InsufficientBalance):
        store.change(old=old, new=period("PRE_VALUE_719", T), wallet_delta_paise=-1)
    assert state(store) == before


def test_unknown_subscriber(store: Any) -> None:
    with pytest.raises(UserNotFound):
        store.get_subscriber("ghost")
    assert store.get_active("ghost") is None
    assert store.wallet_balance("ghost") == 0


# --- DynamoDB-only details ---------------------------------------------------------


def test_postpaid_profiles_are_on_the_bill_cycle_sweep_index(aws: Aws) -> None:
    store = db.DynamoSubscriptionStore()
    subscriber(store, "post-1", SubscriberType.POSTPAID)
    subscriber(store, "pre-1", SubscriberType.PREPAID)
    shard = db.hash_shard("post-1")
    found = aws.dynamodb.query(
        TableName=aws.table_name,
        IndexName=db.GSI2,
        KeyConditionExpression="GSI2PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CYCLE#05#{shard}"}},
    )["Items"]
    assert [item["PK"]["S"] for item in found] == ["USER#post-1"]
    profile = {item["SK"]["S"]: item for item in aws.items("USER#pre-1")}["PROFILE"]
    assert "GSI2PK" not in profile  # prepaid lines have no bill cycle


def test_a_profile_and_its_msisdn_are_written_once(aws: Aws) -> None:
    store = db.DynamoSubscriptionStore()
    subscriber(store, "u1")
    with pytest.raises(TransactWriteError):
        subscriber(store, "u1")
    assert aws.sort_keys("USER#u1") == ["PROFILE"]
    assert store.get_subscriber("u1").user_id == "u1"


# --- DynamoDB only: a transaction cancelled by a concurrent one -----------------------


def test_a_start_cancelled_by_a_concurrent_transaction_is_sent_again(
    aws: Aws, conflicts: Callable[[int], ConflictingTransactions]
) -> None:
    store = db.DynamoSubscriptionStore()
    subscriber(store)
    store.credit_wallet("u1", 50_000)
    plan = period("PRE_299", T)
    hook = conflicts(db.CONFLICT_ATTEMPTS - 1)

    store.start(plan, wallet_debit_paise=29_900)

    assert hook.cancelled == db.CONFLICT_ATTEMPTS - 1
    assert store.get_active("u1") == plan
    assert store.wallet_balance("u1") == 20_100  # debited once


def test_a_start_that_keeps_meeting_conflicts_changes_nothing(
    aws: Aws, conflicts: Callable[[int], ConflictingTransactions]
) -> None:
    store = db.DynamoSubscriptionStore()
    subscriber(store)
    store.credit_wallet("u1", 50_000)
    before = state(store)
    conflicts(db.CONFLICT_ATTEMPTS)

    with pytest.raises(ConcurrentModification):
        store.start(period("PRE_299", T), wallet_debit_paise=29_900)

    assert state(store) == before

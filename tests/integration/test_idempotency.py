"""Idempotency-Key on state-changing POSTs (API.md): a repeat returns the first
response and changes nothing more; the same key with another body is refused."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Literal

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import ReadTimeoutError

from functions.plans import handler as plans_handler
from shared.clock import FixedClock
from shared.db import DynamoSubscriptionStore
from shared.idempotency_claims import CLAIM_OWNER_ATTRIBUTE
from tests.apigw import Caller
from tests.integration.conftest import Api, Aws, MakeSubscriber

SMART = {"user_id": "u1", "plan_id": "PRE_SMART_299"}


def test_repeated_subscribe_returns_the_first_response_and_changes_nothing_more(
    api: Api, aws: Aws, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)

    first = api.post("/subscribe", SMART, as_user="u1", key="retry-me")
    second = api.post("/subscribe", SMART, as_user="u1", key="retry-me")

    assert first.status == second.status == 201
    assert second.body == first.body
    assert len(store.history("u1")) == 1
    assert store.wallet_balance("u1") == 100_000 - 29_900  # debited once
    assert [e["detail-type"] for e in aws.published()] == ["PlanChanged"]


def test_a_retry_later_still_gets_the_first_response(
    api: Api, clock: FixedClock, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    first = api.post("/subscribe", SMART, as_user="u1", key="k1")
    clock.advance(timedelta(hours=1))
    assert api.post("/subscribe", SMART, as_user="u1", key="k1").body == first.body


def test_repeated_upgrade_is_applied_once(
    api: Api,
    aws: Aws,
    clock: FixedClock,
    store: DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
) -> None:
    make_subscriber("u1", wallet_paise=200_000)
    api.post("/subscribe", SMART, as_user="u1", key="sub-1")
    clock.advance(timedelta(days=10))
    upgrade = {"user_id": "u1", "plan_id": "PRE_VALUE_719"}

    results = [api.post("/upgrade", upgrade, as_user="u1", key="up-1") for _ in range(3)]

    assert {r.status for r in results} == {200}
    assert results[1].body == results[0].body == results[2].body
    assert len(store.history("u1")) == 2
    assert store.wallet_balance("u1") == 200_000 - 29_900 - 52_679
    assert [e["detail"]["change_type"] for e in aws.published()] == ["SUBSCRIBE", "UPGRADE"]


def test_same_key_with_another_body_is_422(
    api: Api, aws: Aws, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=200_000)
    first = api.post("/subscribe", SMART, as_user="u1", key="k1")
    aws.published()

    other = {"user_id": "u1", "plan_id": "PRE_VALUE_719"}
    result = api.post("/subscribe", other, as_user="u1", key="k1")

    assert result.status == 422
    assert result.error_code == "IDEMPOTENCY_KEY_REUSED"
    active = store.get_active("u1")
    assert active is not None
    assert active.subscription_id == first.body["subscription_id"]
    assert store.wallet_balance("u1") == 200_000 - 29_900
    assert aws.published() == []


def test_a_failed_request_is_not_remembered(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    """A refused purchase can be retried with the same key once the wallet is topped up."""
    make_subscriber("u1", wallet_paise=10_000)
    refused = api.post("/subscribe", SMART, as_user="u1", key="k1")
    assert refused.error_code == "INSUFFICIENT_BALANCE"

    store.credit_wallet("u1", 50_000)
    retried = api.post("/subscribe", SMART, as_user="u1", key="k1")

    assert retried.status == 201
    assert store.wallet_balance("u1") == 60_000 - 29_900


def test_keys_are_scoped_to_the_caller(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    """Two users who happen to pick the same key do not see each other's response."""
    make_subscriber("u1", wallet_paise=100_000)
    make_subscriber("u2", wallet_paise=100_000)
    one = api.post("/subscribe", SMART, as_user="u1", key="shared")
    two = api.post(
        "/subscribe", {"user_id": "u2", "plan_id": "PRE_SMART_299"}, as_user="u2", key="shared"
    )
    assert one.status == two.status == 201
    assert two.body["user_id"] == "u2"
    assert store.get_active("u2") is not None


def test_keys_are_scoped_to_the_route(
    api: Api, clock: FixedClock, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=200_000)
    api.post("/subscribe", SMART, as_user="u1", key="k1")
    clock.advance(timedelta(days=1))
    result = api.post(
        "/upgrade", {"user_id": "u1", "plan_id": "PRE_VALUE_719"}, as_user="u1", key="k1"
    )
    assert result.status == 200
    assert result.body["change_type"] == "UPGRADE"


def test_requests_without_a_key_are_not_deduplicated(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    assert api.post("/subscribe", SMART, as_user="u1").status == 201
    assert api.post("/subscribe", SMART, as_user="u1").error_code == "ACTIVE_PLAN_EXISTS"


def test_an_overlong_key_is_bad_input(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    result = api.post("/subscribe", SMART, as_user=Caller("u1"), key="k" * 256)
    assert result.status == 422
    assert result.error_code == "VALIDATION_ERROR"
    assert store.get_active("u1") is None


Mishap = Literal["lost_answer", "late_copy", "other_attempt"]


class ClaimRace:
    """The next claim of a key (the conditional PutItem of its record) meets a mishap
    on its way to DynamoDB:
    - ``lost_answer``: DynamoDB applies it and the answer is lost: the SDK resends it;
    - ``late_copy``: it is held up (the SDK resends it) and arrives later, when the
      test delivers it (``deliver_late_copy``);
    - ``other_attempt``: another attempt's claim of the key lands just before it."""

    def __init__(self, mishap: Mishap) -> None:
        self.mishap = mishap
        self.happened = False
        self._held: dict[str, Any] = {}
        self._direct = boto3.client("dynamodb")  # the same moto table, no hooks

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> None:
        if self.happened:
            return
        self.happened = True
        claim = json.loads(request.body)
        if self.mishap == "late_copy":
            self._held = claim
            raise ReadTimeoutError(endpoint_url=request.url)
        if self.mishap == "other_attempt":
            claim["Item"][CLAIM_OWNER_ATTRIBUTE] = {"S": "another attempt"}
        self._direct.put_item(**claim)
        if self.mishap == "lost_answer":
            raise ReadTimeoutError(endpoint_url=request.url)

    def deliver_late_copy(self) -> bool:
        """Whether DynamoDB took the held-up copy."""
        try:
            self._direct.put_item(**self._held)
        except self._direct.exceptions.ConditionalCheckFailedException:
            return False
        return True


@pytest.fixture
def claim_race(aws: Aws) -> Iterator[Callable[[Mishap], ClaimRace]]:
    events = plans_handler.idempotency.records_client.meta.events
    installed: list[ClaimRace] = []

    def install(mishap: Mishap) -> ClaimRace:
        race = ClaimRace(mishap)
        # Before moto's own before-send handler, whose answer ends the asking.
        events.register_first("before-send.dynamodb.PutItem", race)
        installed.append(race)
        return race

    yield install
    for race in installed:
        events.unregister("before-send.dynamodb.PutItem", race)


def test_a_claim_applied_with_its_answer_lost_is_still_the_requests_own(
    api: Api,
    store: DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
    claim_race: Callable[[Mishap], ClaimRace],
) -> None:
    """The SDK's resend finds the request's own claim: the purchase goes on at once,
    not refused as "in progress" (to every retry too) until the claim expired."""
    make_subscriber("u1", wallet_paise=100_000)
    race = claim_race("lost_answer")

    first = api.post("/subscribe", SMART, as_user="u1", key="k1")

    assert race.happened
    assert first.status == 201, first.body
    assert api.post("/subscribe", SMART, as_user="u1", key="k1").body == first.body
    assert store.wallet_balance("u1") == 100_000 - 29_900  # debited once


def test_a_key_claimed_by_another_attempt_is_in_progress(
    api: Api,
    store: DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
    claim_race: Callable[[Mishap], ClaimRace],
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    race = claim_race("other_attempt")

    second = api.post("/subscribe", SMART, as_user="u1", key="k1")

    assert race.happened
    assert second.status == 409
    assert second.error_code == "IDEMPOTENCY_IN_PROGRESS"
    assert store.wallet_balance("u1") == 100_000  # the other attempt's to make


def test_a_late_copy_of_a_claim_does_not_undo_the_stored_answer(
    api: Api,
    store: DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
    claim_race: Callable[[Mishap], ClaimRace],
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    race = claim_race("late_copy")
    first = api.post("/subscribe", SMART, as_user="u1", key="k1")

    assert first.status == 201, first.body
    assert not race.deliver_late_copy()  # the record is finished: not a claim any more
    assert api.post("/subscribe", SMART, as_user="u1", key="k1").body == first.body
    assert store.wallet_balance("u1") == 100_000 - 29_900

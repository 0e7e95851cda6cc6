"""The plans API through the real handler (functions.plans.handler) against moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest

from shared.catalog import seed_plans
from shared.clock import IST, FixedClock
from shared.db import DynamoSubscriptionStore
from shared.models import SubscriberType
from tests.apigw import Caller
from tests.integration.conftest import T0, Api, Aws, MakeSubscriber

PREPAID, POSTPAID = SubscriberType.PREPAID, SubscriberType.POSTPAID
AGENT = Caller("agent-1", "agent")


def subscribe(api: Api, user: str, plan: str, *, as_user: str | Caller | None = None) -> Any:
    return api.post("/subscribe", {"user_id": user, "plan_id": plan}, as_user=as_user or user)


def assert_error(result: Any, status: int, code: str) -> None:
    assert result.status == status, result.body
    assert result.error_code == code, result.body
    assert isinstance(result.body["error"]["message"], str)
    assert result.body["error"]["message"]


# --- health and catalog ---------------------------------------------------------


def test_health_needs_no_auth(api: Api, clock: FixedClock) -> None:
    result = api.get("/health", as_user=None)
    assert result.status == 200
    assert result.body == {"status": "ok", "time": "2026-11-25T10:00:00+00:00"}


def test_list_plans_returns_the_seeded_catalog(api: Api) -> None:
    result = api.get("/plans")
    assert result.status == 200
    assert result.headers.get("Content-Type") == "application/json"
    listed = {plan["plan_id"]: plan for plan in result.body["plans"]}
    assert set(listed) == {plan.plan_id for plan in seed_plans()}
    smart = listed["PRE_SMART_299"]
    assert smart["type"] == "prepaid"
    assert smart["price_paise"] == 29_900
    assert smart["validity_days"] == 28
    assert smart["voice_seconds"] is None  # unlimited survives the round trip
    assert smart["renewal_rule"] == "MANUAL_RECHARGE"
    assert listed["PRE_DATA_49"]["voice_seconds"] == 0
    assert listed["POST_BASIC_399"]["overage"]["voice_pulse_seconds"] == 60


def test_list_plans_is_cheapest_first_within_each_type(api: Api) -> None:
    plans = api.get("/plans").body["plans"]
    for kind in ("prepaid", "postpaid"):
        prices = [p["price_paise"] for p in plans if p["type"] == kind]
        assert prices == sorted(prices)


@pytest.mark.parametrize("kind", ["postpaid", "prepaid"])
def test_list_plans_filters_by_type(api: Api, kind: str) -> None:
    result = api.get("/plans", query={"type": kind})
    assert result.status == 200
    types = {plan["type"] for plan in result.body["plans"]}
    assert types == {kind}
    assert len(result.body["plans"]) >= 3


def test_list_plans_with_an_unknown_type_is_bad_input(api: Api) -> None:
    assert_error(api.get("/plans", query={"type": "hybrid"}), 422, "VALIDATION_ERROR")


def test_get_one_plan(api: Api) -> None:
    result = api.get(
        "/plans/POST_PLUS_599",
        resource="/plans/{plan_id}",
        path_parameters={"plan_id": "POST_PLUS_599"},
    )
    assert result.status == 200
    assert result.body["plan_id"] == "POST_PLUS_599"
    assert result.body["price_paise"] == 59_900
    assert result.body["renewal_rule"] == "MONTHLY_BILL_CYCLE"


def test_get_unknown_plan_is_404(api: Api) -> None:
    result = api.get(
        "/plans/PRE_NOPE_1", resource="/plans/{plan_id}", path_parameters={"plan_id": "PRE_NOPE_1"}
    )
    assert_error(result, 404, "PLAN_NOT_FOUND")


def test_get_plan_with_a_malformed_id_is_bad_input(api: Api) -> None:
    result = api.get(
        "/plans/pre_lowercase",
        resource="/plans/{plan_id}",
        path_parameters={"plan_id": "pre_lowercase"},
    )
    assert_error(result, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/plans"), ("GET", "/plans/PRE_SMART_299"), ("POST", "/subscribe")]
)
def test_no_authorizer_context_is_401(api: Api, method: str, path: str) -> None:
    body = {"user_id": "u1", "plan_id": "PRE_SMART_299"} if method == "POST" else None
    result = api.call(method, path, body=body, caller=None)
    assert_error(result, 401, "UNAUTHORIZED")


def test_unknown_route_is_404_with_the_error_shape(api: Api) -> None:
    assert_error(api.get("/nowhere"), 404, "NOT_FOUND")


# --- subscribe -------------------------------------------------------------------


def test_subscribe_starts_the_plan_and_debits_the_wallet(
    api: Api, aws: Aws, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=50_000)
    result = subscribe(api, "u1", "PRE_SMART_299")

    assert result.status == 201
    assert result.body["plan_id"] == "PRE_SMART_299"
    assert result.body["change_type"] == "SUBSCRIBE"
    assert result.body["wallet_debit_paise"] == 29_900
    assert datetime.fromisoformat(result.body["valid_until"]) == T0 + timedelta(days=28)
    assert store.wallet_balance("u1") == 20_100
    active = store.get_active("u1")
    assert active is not None
    assert active.subscription_id == result.body["subscription_id"]
    assert [s.plan_id for s in store.history("u1")] == ["PRE_SMART_299"]
    (event,) = aws.published()
    assert event["source"] == "tbcss.plans"
    assert event["detail-type"] == "PlanChanged"
    assert event["detail"]["subscription_id"] == result.body["subscription_id"]
    assert event["detail"]["wallet_debit_paise"] == 29_900


def test_second_subscribe_is_409_active_plan_exists(
    api: Api, aws: Aws, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=200_000)
    assert subscribe(api, "u1", "PRE_SMART_299").status == 201
    aws.published()

    result = subscribe(api, "u1", "PRE_VALUE_719")

    assert_error(result, 409, "ACTIVE_PLAN_EXISTS")
    active = store.get_active("u1")
    assert active is not None
    assert active.plan_id == "PRE_SMART_299"
    assert store.wallet_balance("u1") == 200_000 - 29_900
    assert len(store.history("u1")) == 1
    assert aws.published() == []


def test_postpaid_second_subscribe_is_409_even_much_later(
    api: Api, clock: FixedClock, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("p1", POSTPAID)
    assert subscribe(api, "p1", "POST_BASIC_399").status == 201
    clock.advance(timedelta(days=90))
    assert_error(subscribe(api, "p1", "POST_PLUS_599"), 409, "ACTIVE_PLAN_EXISTS")


def test_expired_prepaid_plan_can_be_bought_again(
    api: Api, clock: FixedClock, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    assert subscribe(api, "u1", "PRE_DATA_49").status == 201
    clock.advance(timedelta(days=7))
    assert subscribe(api, "u1", "PRE_DATA_49").status == 201
    assert store.wallet_balance("u1") == 100_000 - 2 * 4_900


def test_insufficient_wallet_is_402_and_nothing_changes(
    api: Api, aws: Aws, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=29_899)

    result = subscribe(api, "u1", "PRE_SMART_299")

    assert_error(result, 402, "INSUFFICIENT_BALANCE")
    assert "SUB#ACTIVE" not in aws.sort_keys("USER#u1")
    assert store.history("u1") == []
    assert store.wallet_balance("u1") == 29_899
    assert aws.published() == []


def test_no_wallet_at_all_is_402(api: Api, aws: Aws, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1")
    assert_error(subscribe(api, "u1", "PRE_DATA_49"), 402, "INSUFFICIENT_BALANCE")
    assert aws.sort_keys("USER#u1") == ["PROFILE"]


def test_subscriber_acting_on_another_account_is_403(
    api: Api, aws: Aws, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("victim", wallet_paise=100_000)
    make_subscriber("mallory", wallet_paise=100_000)

    result = subscribe(api, "victim", "PRE_SMART_299", as_user="mallory")

    assert_error(result, 403, "FORBIDDEN")
    assert store.get_active("victim") is None
    assert store.wallet_balance("victim") == 100_000
    assert aws.published() == []


def test_agent_may_subscribe_on_behalf_of_a_subscriber(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    assert subscribe(api, "u1", "PRE_SMART_299", as_user=AGENT).status == 201
    assert store.get_active("u1") is not None


def test_admin_is_not_among_who_may_change_plans(api: Api, make_subscriber: MakeSubscriber) -> None:
    """API.md: /subscribe and /upgrade are for the owner or an agent."""
    make_subscriber("u1", wallet_paise=100_000)
    result = subscribe(api, "u1", "PRE_SMART_299", as_user=Caller("admin-1", "admin"))
    assert_error(result, 403, "FORBIDDEN")


def test_caller_without_a_known_role_is_403(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    result = subscribe(api, "u1", "PRE_SMART_299", as_user=Caller("u1", ""))
    assert_error(result, 403, "FORBIDDEN")


def test_unknown_user_is_404(api: Api) -> None:
    assert_error(subscribe(api, "ghost", "PRE_SMART_299", as_user=AGENT), 404, "USER_NOT_FOUND")


def test_unknown_plan_is_404(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    assert_error(subscribe(api, "u1", "PRE_NOPE_1"), 404, "PLAN_NOT_FOUND")


def test_plan_of_the_other_kind_is_409(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("p1", POSTPAID)
    assert_error(subscribe(api, "p1", "PRE_SMART_299"), 409, "PLAN_NOT_ALLOWED")


def test_backdated_subscribe_is_refused(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    body = {
        "user_id": "u1",
        "plan_id": "PRE_SMART_299",
        "effective_at": (T0 - timedelta(days=2)).isoformat(),
    }
    assert_error(api.post("/subscribe", body, as_user="u1"), 422, "BACKDATED_CHANGE")


VALID = {"user_id": "u1", "plan_id": "PRE_SMART_299"}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"body": {"user_id": "u1"}}, id="missing-plan_id"),
        pytest.param({"body": {"plan_id": "PRE_SMART_299"}}, id="missing-user_id"),
        pytest.param({"body": {"user_id": "u1", "plan_id": 299}}, id="plan_id-not-a-string"),
        pytest.param({"body": {"user_id": ["u1"], "plan_id": "PRE_SMART_299"}}, id="user_id-list"),
        pytest.param({"body": {"user_id": "u1", "plan_id": "pre_smart"}}, id="plan_id-pattern"),
        pytest.param({"body": {"user_id": "u/../1", "plan_id": "PRE_SMART_299"}}, id="user_id-pat"),
        pytest.param({"body": {**VALID, "discount_paise": 29900}}, id="unknown-field"),
        pytest.param({"body": {**VALID, "effective_at": "yesterday"}}, id="bad-timestamp"),
        pytest.param({"body": ["u1", "PRE_SMART_299"]}, id="array-body"),
        pytest.param({"body": "u1"}, id="string-body"),
        pytest.param({"raw_body": '{"user_id": "u1", "plan_id": '}, id="invalid-json"),
        pytest.param({}, id="no-body"),
    ],
)
@pytest.mark.parametrize("path", ["/subscribe", "/upgrade"])
def test_bad_input_is_4xx_with_the_error_shape(
    api: Api,
    aws: Aws,
    make_subscriber: MakeSubscriber,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    result = api.call("POST", path, caller=Caller("u1"), idempotency_key="k-bad", **kwargs)
    assert_error(result, 422, "VALIDATION_ERROR")
    assert aws.sort_keys("USER#u1") == ["PROFILE", "WALLET"]


def test_validation_errors_name_the_field(api: Api) -> None:
    result = api.post("/subscribe", {"user_id": "u1", "plan_id": "bad"}, as_user="u1")
    assert_error(result, 422, "VALIDATION_ERROR")
    assert "plan_id" in result.body["error"]["message"]


# --- upgrade: the hand-computed examples through HTTP -------------------------------


def test_prepaid_upgrade_proration(
    api: Api,
    aws: Aws,
    clock: FixedClock,
    store: DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
) -> None:
    """PRE_SMART_299 (29900, 28 d) at T, PRE_VALUE_719 (71900, 84 d) at T + 10 d.

    credit = round_half_up(29900 * 18 / 28) = round_half_up(19221.43) = 19221
    debit  = 71900 - 19221 = 52679; wallet 100000 - 29900 - 52679 = 17421
    """
    make_subscriber("u1", wallet_paise=100_000)
    first = subscribe(api, "u1", "PRE_SMART_299")
    clock.advance(timedelta(days=10))

    result = api.post("/upgrade", {"user_id": "u1", "plan_id": "PRE_VALUE_719"}, as_user="u1")

    assert result.status == 200, result.body
    body = result.body
    assert [(line["plan_id"], line["amount_paise"]) for line in body["proration"]] == [
        ("PRE_SMART_299", -19_221),
        ("PRE_VALUE_719", 71_900),
    ]
    assert body["net_amount_paise"] == 52_679
    assert body["wallet_debit_paise"] == 52_679
    assert body["change_type"] == "UPGRADE"
    assert body["previous_plan_id"] == "PRE_SMART_299"
    assert datetime.fromisoformat(body["valid_until"]) == T0 + timedelta(days=10 + 84)
    assert store.wallet_balance("u1") == 17_421

    old, new = store.history("u1")
    assert old.subscription_id == first.body["subscription_id"]
    assert old.ended_at == T0 + timedelta(days=10)
    assert (new.plan_id, new.ended_at) == ("PRE_VALUE_719", None)
    active = store.get_active("u1")
    assert active is not None
    assert active.subscription_id == body["subscription_id"]
    events = aws.published()
    assert [e["detail"]["change_type"] for e in events] == ["SUBSCRIBE", "UPGRADE"]
    assert events[1]["detail"]["net_amount_paise"] == 52_679


def test_postpaid_upgrade_proration(
    api: Api, clock: FixedClock, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    """Bill day 1, POST_BASIC_399 since October, POST_PLUS_599 at 2026-11-16 00:00 IST.

    cycle 2026-11-01 .. 2026-12-01 IST = 2,592,000 s
    old = 39900 * 15 / 30 = 19950, new = 59900 * 15 / 30 = 29950
    """
    clock.advance(datetime(2026, 10, 20, tzinfo=IST) - clock.now())
    make_subscriber("p1", POSTPAID, bill_cycle_day=1)
    assert subscribe(api, "p1", "POST_BASIC_399").status == 201
    clock.advance(datetime(2026, 11, 16, tzinfo=IST) - clock.now())

    result = api.post("/upgrade", {"user_id": "p1", "plan_id": "POST_PLUS_599"}, as_user="p1")

    assert result.status == 200, result.body
    old, new = result.body["proration"]
    assert (old["plan_id"], old["amount_paise"]) == ("POST_BASIC_399", 19_950)
    assert datetime.fromisoformat(old["period_start"]) == datetime(2026, 11, 1, tzinfo=IST)
    assert (new["plan_id"], new["amount_paise"]) == ("POST_PLUS_599", 29_950)
    assert datetime.fromisoformat(new["period_end"]) == datetime(2026, 12, 1, tzinfo=IST)
    assert result.body["net_amount_paise"] == 49_900
    assert result.body["wallet_debit_paise"] == 0
    assert result.body["billed_on_invoice"] is True
    assert result.body["valid_until"] is None
    assert store.wallet_balance("p1") == 0
    active = store.get_active("p1")
    assert active is not None
    assert (active.plan_id, active.valid_until) == ("POST_PLUS_599", None)


def test_postpaid_upgrade_half_up_through_http(
    api: Api, clock: FixedClock, make_subscriber: MakeSubscriber
) -> None:
    """6 h into the 720 h November cycle: old = 39900 * 6 / 720 = 332.5 -> 333,
    new = 59900 * 714 / 720 = 59400.83 -> 59401."""
    clock.advance(datetime(2026, 10, 20, tzinfo=IST) - clock.now())
    make_subscriber("p1", POSTPAID, bill_cycle_day=1)
    subscribe(api, "p1", "POST_BASIC_399")
    clock.advance(datetime(2026, 11, 1, 6, tzinfo=IST) - clock.now())

    result = api.post("/upgrade", {"user_id": "p1", "plan_id": "POST_PLUS_599"}, as_user="p1")

    assert [line["amount_paise"] for line in result.body["proration"]] == [333, 59_401]


def test_upgrade_with_insufficient_wallet_is_402_and_keeps_the_old_plan(
    api: Api,
    aws: Aws,
    clock: FixedClock,
    store: DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
) -> None:
    make_subscriber("u1", wallet_paise=29_900)
    first = subscribe(api, "u1", "PRE_SMART_299")
    aws.published()
    clock.advance(timedelta(days=1))

    result = api.post("/upgrade", {"user_id": "u1", "plan_id": "PRE_VALUE_719"}, as_user="u1")

    assert_error(result, 402, "INSUFFICIENT_BALANCE")
    active = store.get_active("u1")
    assert active is not None
    assert active.subscription_id == first.body["subscription_id"]
    (period,) = store.history("u1")
    assert period.ended_at is None
    assert store.wallet_balance("u1") == 0
    assert aws.published() == []


def test_upgrade_without_an_active_plan_is_409(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    result = api.post("/upgrade", {"user_id": "u1", "plan_id": "PRE_VALUE_719"}, as_user="u1")
    assert_error(result, 409, "NO_ACTIVE_PLAN")


def test_upgrade_to_the_same_plan_is_409(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    subscribe(api, "u1", "PRE_SMART_299")
    result = api.post("/upgrade", {"user_id": "u1", "plan_id": "PRE_SMART_299"}, as_user="u1")
    assert_error(result, 409, "SAME_PLAN")


def test_upgrade_of_another_users_plan_is_403(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("victim", wallet_paise=200_000)
    subscribe(api, "victim", "PRE_SMART_299")
    result = api.post(
        "/upgrade", {"user_id": "victim", "plan_id": "PRE_VALUE_719"}, as_user="mallory"
    )
    assert_error(result, 403, "FORBIDDEN")
    active = store.get_active("victim")
    assert active is not None
    assert active.plan_id == "PRE_SMART_299"


def test_timestamps_carry_an_offset(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    body = subscribe(api, "u1", "PRE_SMART_299").body
    for stamp in (body["effective_at"], body["valid_until"]):
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert datetime.fromisoformat(body["effective_at"]) == T0.astimezone(UTC)


def test_warm_requests_create_no_new_aws_clients(
    api: Api, clock: FixedClock, make_subscriber: MakeSubscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A botocore client costs ~100 ms to create: a warm container reuses its clients."""
    make_subscriber("warm", wallet_paise=100_000)
    make_subscriber("u1", wallet_paise=200_000)
    subscribe(api, "warm", "PRE_SMART_299")  # the first request may create them
    clock.advance(timedelta(days=1))
    api.post("/upgrade", {"user_id": "warm", "plan_id": "PRE_VALUE_719"}, as_user="warm")
    created: list[str] = []
    create_client = botocore.session.Session.create_client

    def counting(self: botocore.session.Session, service_name: str, *args: Any, **kw: Any) -> Any:
        created.append(service_name)
        return create_client(self, service_name, *args, **kw)

    monkeypatch.setattr(botocore.session.Session, "create_client", counting)

    assert subscribe(api, "u1", "PRE_SMART_299").status == 201
    clock.advance(timedelta(days=1))
    upgrade = {"user_id": "u1", "plan_id": "PRE_VALUE_719"}
    assert api.post("/upgrade", upgrade, as_user="u1", key="k").status == 200

    assert created == []

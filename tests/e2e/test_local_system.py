"""The real stack on the local runtime, over HTTP, as a client calls it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from tests.e2e.conftest import LocalSystem


def test_health_needs_no_token(local_system: LocalSystem) -> None:
    response = local_system.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_catalog_with_a_token(local_system: LocalSystem) -> None:
    token = local_system.token("demo-prepaid", "subscriber")
    response = local_system.get("/plans", token)
    assert response.status_code == 200
    plans = {plan["plan_id"]: plan for plan in response.json()["plans"]}
    assert {"PRE_SMART_299", "POST_BASIC_399"} <= plans.keys()
    assert sum(p["type"] == "prepaid" for p in plans.values()) >= 3
    assert sum(p["type"] == "postpaid" for p in plans.values()) >= 3
    assert plans["PRE_SMART_299"]["price_paise"] == 29900


def test_no_token_or_a_forged_one_is_401(local_system: LocalSystem) -> None:
    for token in (None, "not-a-jwt"):
        response = local_system.get("/plans", token)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"


def test_subscribe_and_replay_with_the_same_key(local_system: LocalSystem) -> None:
    token = local_system.token("demo-postpaid", "subscriber")
    body = {"user_id": "demo-postpaid", "plan_id": "POST_BASIC_399"}
    key = str(uuid.uuid4())

    first = local_system.post("/subscribe", body, token, key)
    replay = local_system.post("/subscribe", body, token, key)
    other_key = local_system.post("/subscribe", body, token, str(uuid.uuid4()))

    assert first.status_code == 201, first.text
    assert first.json()["plan_id"] == "POST_BASIC_399"
    assert (replay.status_code, replay.json()) == (201, first.json())
    assert other_key.status_code == 409
    assert other_key.json()["error"]["code"] == "ACTIVE_PLAN_EXISTS"


def test_a_subscriber_cannot_subscribe_someone_else(local_system: LocalSystem) -> None:
    token = local_system.token("demo-prepaid", "subscriber")
    body = {"user_id": "demo-postpaid", "plan_id": "POST_PLUS_599"}
    response = local_system.post("/subscribe", body, token, str(uuid.uuid4()))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"


def test_swagger_and_openapi_are_served(local_system: LocalSystem) -> None:
    document = local_system.get("/openapi.json").json()
    assert {"/plans", "/plans/{plan_id}", "/subscribe", "/upgrade", "/health"} <= set(
        document["paths"]
    )
    swagger = local_system.get("/swagger")
    assert swagger.status_code == 200
    assert "swagger" in swagger.text.lower()


def test_clock_advance_moves_the_time_handlers_see(local_system: LocalSystem) -> None:
    before = datetime.fromisoformat(local_system.get("/health").json()["time"])
    local_system.cli("local", "clock", "advance", "--hours", "30")
    after = datetime.fromisoformat(local_system.get("/health").json()["time"])
    assert timedelta(hours=30) <= after - before < timedelta(hours=31)

"""What the HTTP edge (shared.web) answers to requests that are malformed before
any field is read: bodies that are not JSON or not UTF-8, and bad Idempotency-Keys.
Each was a 5xx or an undocumented answer that schemathesis found (tests/fuzz)."""

from __future__ import annotations

import base64
from typing import Any

from functions.plans import handler as plans_handler
from shared.db import DynamoSubscriptionStore
from tests.apigw import Caller, HttpResult, api_event, parse_response
from tests.integration.conftest import Api, MakeSubscriber

SMART = {"user_id": "u1", "plan_id": "PRE_SMART_299"}
JSON_TEXT = '{"user_id": "u1", "plan_id": "PRE_SMART_299"}'


def post_raw(api: Api, raw_body: str, content_type: str, **changes: Any) -> HttpResult:
    event = api_event(
        "POST",
        "/subscribe",
        raw_body=raw_body,
        caller=changes.pop("caller", Caller("u1")),
        headers={"Content-Type": content_type},
    )
    return parse_response(plans_handler.handler({**event, **changes}, api.context))


def assert_refused(result: HttpResult, status: int, code: str) -> None:
    assert result.status == status, result.body
    assert result.error_code == code, result.body
    assert result.body["error"]["message"]


def test_a_body_in_another_media_type_is_415_and_changes_nothing(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)

    for content_type, body in [
        ("text/plain", JSON_TEXT),
        ("application/x-www-form-urlencoded", "user_id=u1&plan_id=PRE_SMART_299"),
        ("multipart/form-data", JSON_TEXT),  # no boundary: Powertools raised, a 502
        ("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data\r\n\r\n--x--"),
    ]:
        result = post_raw(api, body, content_type)
        assert_refused(result, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert content_type.split(";")[0] in result.body["error"]["message"]

    assert store.get_active("u1") is None
    assert store.wallet_balance("u1") == 100_000


def test_json_with_a_charset_is_json(api: Api, make_subscriber: MakeSubscriber) -> None:
    make_subscriber("u1", wallet_paise=100_000)

    result = post_raw(api, JSON_TEXT, "application/json; charset=utf-8")

    assert result.status == 201, result.body


def test_a_body_that_is_not_utf8_is_422_not_a_crash(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)
    # The gateway base64-encodes a body that is not UTF-8 text.
    raw = base64.b64encode(b'{"user_id": "u1\xff\xfe"}').decode()

    result = post_raw(api, raw, "application/json", isBase64Encoded=True)

    assert_refused(result, 422, "VALIDATION_ERROR")
    assert "UTF-8" in result.body["error"]["message"]
    assert store.get_active("u1") is None


def test_a_caller_the_matrix_refuses_hears_403_before_anything_about_the_body(
    api: Api,
) -> None:
    result = post_raw(api, JSON_TEXT, "text/plain", caller=Caller("admin-1", "admin"))

    assert_refused(result, 403, "FORBIDDEN")


def test_an_empty_or_overlong_idempotency_key_is_422_and_changes_nothing(
    api: Api, store: DynamoSubscriptionStore, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("u1", wallet_paise=100_000)

    for key in ("", "k" * 256):
        result = api.post("/subscribe", SMART, as_user="u1", key=key)
        assert_refused(result, 422, "VALIDATION_ERROR")
        assert result.body["error"]["details"][0]["field"] == "idempotency-key"

    assert store.get_active("u1") is None
    assert api.post("/subscribe", SMART, as_user="u1", key="k" * 255).status == 201
